// Tests of the mesh parser and rules shared by the compiler and the runtime.

#include "moe/Support/MeshShape.h"

#include <gtest/gtest.h>

using moe::axisName;
using moe::kDenseGridAxes;
using moe::kExpertGridAxes;
using moe::MeshAxis;
using moe::MeshShape;
using moe::parseAxis;

namespace {

MeshShape parseOk(const std::string &text) {
  std::string error;
  std::optional<MeshShape> mesh = MeshShape::parse(text, error);
  EXPECT_TRUE(mesh.has_value()) << text << ": " << error;
  return mesh.value_or(MeshShape{});
}

std::string parseError(const std::string &text) {
  std::string error;
  std::optional<MeshShape> mesh = MeshShape::parse(text, error);
  EXPECT_FALSE(mesh.has_value()) << text;
  return error;
}

TEST(MeshShape, ParsesAxesInAnyOrderWithDefaults) {
  MeshShape mesh = parseOk("ep=4,dp=2,cp=2");
  EXPECT_EQ(mesh.dp, 2);
  EXPECT_EQ(mesh.cp, 2);
  EXPECT_EQ(mesh.tp, 1);
  EXPECT_EQ(mesh.ep, 4);
  EXPECT_EQ(mesh.worldSize(), 4);
  EXPECT_EQ(mesh.expertDataParallelSize(), 1);
  EXPECT_EQ(mesh.str(), "dp=2,cp=2,tp=1,ep=4");
}

TEST(MeshShape, EmptyTextIsTheSingleRankMesh) {
  MeshShape mesh = parseOk("");
  EXPECT_EQ(mesh.worldSize(), 1);
  EXPECT_EQ(mesh.validate(1), "");
}

TEST(MeshShape, RoundTripsThroughStr) {
  MeshShape mesh = parseOk("dp=2,tp=2,ep=2");
  MeshShape again = parseOk(mesh.str());
  EXPECT_EQ(again.str(), mesh.str());
}

TEST(MeshShape, RejectsMalformedText) {
  EXPECT_NE(parseError("dp").find("not of the form axis=size or sp"),
            std::string::npos);
  EXPECT_NE(parseError("xp=2").find("unknown mesh axis 'xp'"),
            std::string::npos);
  EXPECT_NE(parseError("dp=2,dp=4").find("given twice"), std::string::npos);
  EXPECT_NE(parseError("dp=two").find("not an integer"), std::string::npos);
  EXPECT_NE(parseError("dp=").find("not an integer"), std::string::npos);
  EXPECT_NE(parseError("dp=2x").find("not an integer"), std::string::npos);
  EXPECT_NE(parseError("dp=2,").find("trailing ','"), std::string::npos);
  EXPECT_NE(parseError(",dp=2").find("not of the form"), std::string::npos);
  EXPECT_NE(parseError("dp=99999999999999999999").find("not an integer"),
            std::string::npos);
}

TEST(MeshShape, SequenceParallelismIsABareEntry) {
  MeshShape mesh = parseOk("dp=2,sp,tp=2");
  EXPECT_TRUE(mesh.sp);
  EXPECT_EQ(mesh.tp, 2);
  EXPECT_EQ(mesh.worldSize(), 4);
  EXPECT_EQ(mesh.str(), "dp=2,cp=1,tp=2,ep=1,sp");
  EXPECT_TRUE(parseOk(mesh.str()).sp);
  EXPECT_FALSE(parseOk("dp=2,tp=2").sp);
  EXPECT_EQ(mesh.validate(4), "");
  EXPECT_NE(parseError("tp=2,sp,sp").find("'sp' is given twice"),
            std::string::npos);
  EXPECT_NE(parseError("tp=2,sp=1").find("unknown mesh axis 'sp'"),
            std::string::npos);
  // Without tensor parallelism there is nothing to split the sequence over.
  EXPECT_NE(parseOk("dp=2,sp").validate().find("'sp' (sequence parallelism) "
                                               "needs tp > 1"),
            std::string::npos);
}

TEST(MeshShape, ExpertTensorParallelismIsAllOfTpOrNone) {
  MeshShape mesh = parseOk("dp=2,tp=2,ep=2,etp=2,sp");
  EXPECT_EQ(mesh.etp, 2);
  EXPECT_EQ(mesh.worldSize(), 4);
  EXPECT_EQ(mesh.validate(4), "");
  EXPECT_EQ(mesh.str(), "dp=2,cp=1,tp=2,ep=2,etp=2,sp");
  EXPECT_EQ(parseOk(mesh.str()).etp, 2);
  EXPECT_EQ(parseOk("tp=2").etp, 1);
  EXPECT_NE(parseError("tp=2,etp=2,etp=2").find("'etp' is given twice"),
            std::string::npos);
  EXPECT_NE(parseOk("tp=4,etp=2").validate().find("etp=2 must be 1 or tp=4"),
            std::string::npos);
  EXPECT_NE(parseOk("dp=2,etp=2").validate().find("must be 1 or tp=1"),
            std::string::npos);
}

TEST(MeshShape, ValidatesSizes) {
  EXPECT_NE(parseOk("tp=0").validate().find("'tp' must have a positive size"),
            std::string::npos);
  EXPECT_NE(parseOk("dp=-2").validate().find("'dp' must have a positive size"),
            std::string::npos);
}

TEST(MeshShape, ExpertParallelismBorrowsFromDataAndContext) {
  EXPECT_EQ(parseOk("dp=2,cp=2,ep=4").validate(), "");
  EXPECT_EQ(parseOk("dp=4,ep=2").validate(), "");
  // tp ranks cannot be borrowed: ep=4 needs dp*cp >= 4.
  EXPECT_NE(parseOk("dp=2,tp=2,ep=4").validate().find("must divide dp*cp=2"),
            std::string::npos);
  EXPECT_NE(parseOk("dp=6,ep=4").validate().find("must divide"),
            std::string::npos);
}

TEST(MeshShape, ChecksTheWorldSize) {
  MeshShape mesh = parseOk("dp=2,tp=2,ep=2");
  EXPECT_EQ(mesh.validate(4), "");
  EXPECT_EQ(mesh.validate(0), ""); // 0: not checked
  std::string error = mesh.validate(8);
  EXPECT_NE(error.find("spans dp*cp*tp=4 ranks, but the world has 8"),
            std::string::npos)
      << error;
}

} // namespace

TEST(MeshAxis, NamesParseAndSizes) {
  for (MeshAxis axis : {MeshAxis::DP, MeshAxis::CP, MeshAxis::TP, MeshAxis::EP,
                        MeshAxis::EDP})
    EXPECT_EQ(parseAxis(axisName(axis)), axis) << axisName(axis);
  EXPECT_STREQ(axisName(MeshAxis::EDP), "edp");
  EXPECT_FALSE(parseAxis("pp").has_value());
  EXPECT_FALSE(parseAxis("").has_value());
  EXPECT_FALSE(parseAxis("DP").has_value());

  MeshShape mesh{4, 2, 3, 4};
  EXPECT_EQ(mesh.size(MeshAxis::DP), 4);
  EXPECT_EQ(mesh.size(MeshAxis::CP), 2);
  EXPECT_EQ(mesh.size(MeshAxis::TP), 3);
  EXPECT_EQ(mesh.size(MeshAxis::EP), 4);
  EXPECT_EQ(mesh.size(MeshAxis::EDP), 2); // dp * cp / ep
  mesh.setSize(MeshAxis::TP, 1);
  EXPECT_EQ(mesh.tp, 1);
  mesh.setSize(MeshAxis::EDP, 7); // derived: ignored
  EXPECT_EQ(mesh.size(MeshAxis::EDP), 2);
  // The grids name their axes in grid order.
  EXPECT_STREQ(axisName(kDenseGridAxes[0]), "dp");
  EXPECT_STREQ(axisName(kExpertGridAxes[0]), "edp");
  EXPECT_STREQ(axisName(kExpertGridAxes[1]), "ep");
}
