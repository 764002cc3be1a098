// Tests of the moe dialect's C++ API that the passes build on.

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

using namespace mlir;

namespace {

class DialectTest : public ::testing::Test {
protected:
  DialectTest() { context.loadDialect<moe::MoEDialect, func::FuncDialect>(); }

  template <typename OpTy> OpTy parseAndFind(StringRef source) {
    module = parseSourceString<ModuleOp>(source, &context);
    EXPECT_TRUE(module) << "failed to parse:\n" << source.str();
    OpTy found;
    module->walk([&](OpTy op) { found = op; });
    EXPECT_TRUE(found);
    return found;
  }

  MLIRContext context;
  OwningOpRef<ModuleOp> module;
};

TEST_F(DialectTest, StackedExpertParamNamesEachExpert) {
  auto param = parseAndFind<moe::ParamOp>(R"(
    func.func @f() -> tensor<8x4x2xf32> {
      %w = moe.param "model.layers.0.mlp.experts.{e}.up_proj.weight" : tensor<8x4x2xf32>
      return %w : tensor<8x4x2xf32>
    })");
  EXPECT_TRUE(param.isStackedExperts());
  EXPECT_EQ(param.getExpertName(0),
            "model.layers.0.mlp.experts.0.up_proj.weight");
  EXPECT_EQ(param.getExpertName(127),
            "model.layers.0.mlp.experts.127.up_proj.weight");
}

TEST_F(DialectTest, PlainParamKeepsItsName) {
  auto param = parseAndFind<moe::ParamOp>(R"(
    func.func @f() -> tensor<4xf32> {
      %w = moe.param "model.norm.weight" : tensor<4xf32>
      return %w : tensor<4xf32>
    })");
  EXPECT_FALSE(param.isStackedExperts());
  EXPECT_EQ(param.getExpertName(3), "model.norm.weight");
}

TEST_F(DialectTest, AttentionScaleDefaultsToInverseSqrtHeadDim) {
  auto attn = parseAndFind<moe::AttentionOp>(R"(
    func.func @f(%q: tensor<1x2x4x16xf32>, %k: tensor<1x2x2x16xf32>) -> tensor<1x2x4x16xf32> {
      %a = moe.attention %q, %k, %k {causal} : (tensor<1x2x4x16xf32>, tensor<1x2x2x16xf32>, tensor<1x2x2x16xf32>) -> tensor<1x2x4x16xf32>
      return %a : tensor<1x2x4x16xf32>
    })");
  EXPECT_DOUBLE_EQ(attn.getEffectiveScale(), 0.25);
  EXPECT_TRUE(attn.getCausal());
}

TEST_F(DialectTest, RouterAndExpertsReportExpertsAndTopK) {
  auto experts = parseAndFind<moe::ExpertsOp>(R"(
    func.func @f(%x: tensor<8x6xf32>, %g: tensor<4x6xf32>, %eg: tensor<4x10x6xf32>, %ed: tensor<4x6x10xf32>) -> tensor<8x6xf32> {
      %w, %i, %l = moe.router %x, %g softmax top 3 : (tensor<8x6xf32>, tensor<4x6xf32>) -> (tensor<8x3xf32>, tensor<8x3xi32>, tensor<8x4xf32>)
      %y = moe.experts %x, %w, %i, %eg, %eg, %ed : (tensor<8x6xf32>, tensor<8x3xf32>, tensor<8x3xi32>, tensor<4x10x6xf32>, tensor<4x10x6xf32>, tensor<4x6x10xf32>) -> tensor<8x6xf32>
      return %y : tensor<8x6xf32>
    })");
  EXPECT_EQ(experts.getNumExperts(), 4);
  EXPECT_EQ(experts.getTopK(), 3);
  auto router = experts.getWeights().getDefiningOp<moe::RouterOp>();
  ASSERT_TRUE(router);
  EXPECT_EQ(router.getNumExperts(), 4);
  EXPECT_EQ(router.getScoring(), moe::ScoreFunc::softmax);
  EXPECT_EQ(router.getNGroup(), 1);
}

TEST_F(DialectTest, MeshSizes) {
  auto mesh = moe::MeshAttr::get(&context, /*dp=*/2, /*cp=*/2, /*tp=*/2,
                                 /*ep=*/2, /*etp=*/2, /*sp=*/true);
  EXPECT_EQ(mesh.getWorldSize(), 8);
  EXPECT_EQ(mesh.getExpertDataParallelSize(), 2);
  EXPECT_TRUE(mesh.getSp());
  EXPECT_EQ(mesh.getEtp(), 2);
}

} // namespace
