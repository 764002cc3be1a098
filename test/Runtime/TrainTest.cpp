#include <gtest/gtest.h>
TEST(TrainTest, Placeholder) {}
