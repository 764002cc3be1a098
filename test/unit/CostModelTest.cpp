// Tests of the step-time model against figures worked out by hand from the
// ring and roofline formulas the model states (CostModel.h).

#include "moe/Support/CostModel.h"

#include <gtest/gtest.h>

using namespace moe;

namespace {

/// A machine with round figures: 4 devices a node.
HardwareProfile roundMachine() {
  HardwareProfile p;
  p.name = "round";
  p.matmulFlopsF32 = 1e12;
  p.matmulFlopsBF16 = 4e12;
  p.memoryBandwidth = 1e11;
  p.opLatency = 1e-6;
  p.devicesPerNode = 4;
  p.intraNodeBandwidth = 1e10;
  p.intraNodeLatency = 2e-6;
  p.interNodeBandwidth = 1e9;
  p.interNodeLatency = 1e-5;
  p.memoryBytes = 1ULL << 30;
  return p;
}

TEST(CostModel, RanksOnNodeFollowTheStrides) {
  // tp (stride 1) of 2 inside a node of 4.
  EXPECT_EQ(groupRanksOnNode({{2, 1}}, 4), 2);
  // dp of 8 with tp = 2 underneath: ranks 0, 2, 4, ... 2 of them below 4.
  EXPECT_EQ(groupRanksOnNode({{8, 2}}, 4), 2);
  // dp x cp = 4 x 2 with strides 2 and 1: ranks 0..7, 4 on the node.
  EXPECT_EQ(groupRanksOnNode({{4, 2}, {2, 1}}, 4), 4);
  EXPECT_EQ(groupRanksOnNode({}, 4), 1);
}

TEST(CostModel, RingCollectivesInsideANode) {
  HardwareProfile hw = roundMachine();
  // All-reduce of 1 GB over 4 ranks on one node: 2 * 3/4 * 1e9 / 1e10 s
  // plus 2 * 3 steps of latency.
  CollectiveWork reduce{CollectiveKind::AllReduce, "tp", {{4, 1}}, 1e9};
  EXPECT_DOUBLE_EQ(collectiveSeconds(reduce, hw), 0.15 + 6 * 2e-6);
  // All-gather and reduce-scatter move half of that.
  CollectiveWork gather{CollectiveKind::AllGather, "tp", {{4, 1}}, 1e9};
  EXPECT_DOUBLE_EQ(collectiveSeconds(gather, hw), 0.075 + 3 * 2e-6);
  CollectiveWork scatter{CollectiveKind::ReduceScatter, "tp", {{4, 1}}, 1e9};
  EXPECT_DOUBLE_EQ(collectiveSeconds(scatter, hw), 0.075 + 3 * 2e-6);
  // A group of one rank moves nothing.
  CollectiveWork alone{CollectiveKind::AllReduce, "dp", {{1, 4}}, 1e9};
  EXPECT_EQ(collectiveSeconds(alone, hw), 0);
}

TEST(CostModel, RingsAcrossNodesRunAtTheNetworkRate) {
  HardwareProfile hw = roundMachine();
  // dp = 2 with stride 4: the two ranks are on different nodes.
  CollectiveWork reduce{CollectiveKind::AllReduce, "dp", {{2, 4}}, 1e9};
  EXPECT_DOUBLE_EQ(collectiveSeconds(reduce, hw), 2 * 0.5 * 1.0 + 2 * 1e-5);
}

TEST(CostModel, AllToAllSplitsItsBytesBetweenNodeAndNetwork) {
  HardwareProfile hw = roundMachine();
  // 8 ranks, 4 a node: 1.6 GB sent, 0.2 GB to each peer; 3 peers on the
  // node (0.6 GB at 1e10) and 4 across (0.8 GB at 1e9) go side by side.
  CollectiveWork a2a{CollectiveKind::AllToAll, "ep", {{8, 1}}, 1.6e9};
  EXPECT_DOUBLE_EQ(collectiveSeconds(a2a, hw), 0.8 + 1e-5);
  // Within one node only the node's links count.
  CollectiveWork local{CollectiveKind::AllToAll, "ep", {{4, 1}}, 1.6e9};
  EXPECT_DOUBLE_EQ(collectiveSeconds(local, hw), 1.2e9 / 1e10 + 2e-6);
}

TEST(CostModel, OpsTakeTheLongerOfArithmeticAndTraffic) {
  HardwareProfile hw = roundMachine();
  StepWork work;
  // 2e12 FLOP at 1e12 (2 s) beats 1e9 bytes at 1e11 (10 ms): compute.
  work.ops.push_back({2e12, 1e9, false});
  // The same op in bf16: 0.5 s of arithmetic.
  work.ops.push_back({2e12, 1e9, true});
  // 1e6 FLOP against 1e10 bytes: 0.1 s of memory traffic.
  work.ops.push_back({1e6, 1e10, false});
  StepTime t = predictStepTime(work, hw);
  EXPECT_DOUBLE_EQ(t.compute, 2.5);
  EXPECT_DOUBLE_EQ(t.memory, 0.1 + 3 * 1e-6);
  EXPECT_EQ(t.dominant.name, "compute");
  EXPECT_DOUBLE_EQ(t.total, t.compute + t.memory);
}

TEST(CostModel, OptimizerStreamsTheFp32State) {
  HardwareProfile hw = roundMachine();
  StepWork work;
  work.optimizerElements = 1e9;
  // 28 bytes an element (read w, g, m, v; write w, m, v) at 1e11 B/s.
  EXPECT_DOUBLE_EQ(predictStepTime(work, hw).optimizer, 0.28);
  work.bf16 = true; // plus the bf16 gradient read and weight written
  EXPECT_DOUBLE_EQ(predictStepTime(work, hw).optimizer, 0.32);
}

TEST(CostModel, CollectivesAreNamedAndTheLargestDominates) {
  HardwareProfile hw = roundMachine();
  StepWork work;
  work.ops.push_back({1e9, 1e6, false}); // 1 ms of compute
  work.collectives.push_back(
      {CollectiveKind::AllToAll, "ep", {{2, 1}}, 2e9}); // 0.1 s
  work.collectives.push_back(
      {CollectiveKind::AllToAll, "ep", {{2, 1}}, 2e9}); // 0.1 s more
  work.collectives.push_back(
      {CollectiveKind::AllReduce, "tp", {{2, 1}}, 1e8}); // 10 ms
  StepTime t = predictStepTime(work, hw);
  ASSERT_EQ(t.collectives.size(), 2u);
  EXPECT_EQ(t.collectives[0].name, "all_to_all ep");
  EXPECT_NEAR(t.collectives[0].seconds, 0.2 + 4e-6, 1e-12);
  EXPECT_EQ(t.collectives[1].name, "all_reduce tp");
  EXPECT_EQ(t.dominant.name, "all_to_all ep");
  EXPECT_NEAR(t.total, t.compute + t.memory + t.communication, 1e-15);
}

TEST(CostModel, BuiltinProfilesAreValid) {
  for (const char *name : {"h100", "h200", "cpu"}) {
    const HardwareProfile *p = findHardwareProfile(name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_EQ(validate(*p), "") << name;
  }
  EXPECT_EQ(findHardwareProfile("tpu"), nullptr);
  // The H200 has the H100's arithmetic with more, faster memory.
  EXPECT_GT(findHardwareProfile("h200")->memoryBytes,
            findHardwareProfile("h100")->memoryBytes);
}

TEST(CostModel, ValidateNamesTheBadField) {
  HardwareProfile p = roundMachine();
  p.memoryBandwidth = 0;
  EXPECT_EQ(validate(p), "memory_bandwidth must be a positive number");
  p = roundMachine();
  p.interNodeLatency = -1;
  EXPECT_EQ(validate(p),
            "inter_node_latency must be a number of seconds, 0 or more");
  p = roundMachine();
  p.devicesPerNode = 0;
  EXPECT_EQ(validate(p), "devices_per_node must be 1 or more");
}

TEST(CostModel, FormatsSeconds) {
  EXPECT_EQ(formatSeconds(1.25), "1.25 s");
  EXPECT_EQ(formatSeconds(0.31), "310 ms");
  EXPECT_EQ(formatSeconds(4.2e-5), "42.0 us");
}

} // namespace
