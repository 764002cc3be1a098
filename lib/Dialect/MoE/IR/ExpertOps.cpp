//===- ExpertOps.cpp - Verifiers of routing and the experts ---------------===//
//
// The router (and its canonicalization), routed experts, capacity drop,
// permute, grouped SwiGLU, unpermute, shared experts, the expert-parallel
// dispatch and combine, and their gradient ops.
//
//===----------------------------------------------------------------------===//

#include "VerifyUtils.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::detail;

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

int64_t RouterOp::getNumExperts() {
  return getGateWeight().getType().getShape()[0];
}

LogicalResult RouterOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectRank(*this, "gate_weight", getGateWeight(), 2,
                        "[experts, hidden]")))
    return failure();
  ArrayRef<int64_t> x = getInput().getType().getShape();
  int64_t experts = getNumExperts();
  if (failed(expectShape(*this, "gate_weight", getGateWeight(),
                         {experts, x.back()}, "[experts, hidden]")))
    return failure();

  int64_t topK = getTopK(), nGroup = getNGroup(), topKGroup = getTopkGroup();
  if (topK < 1)
    return emitOpError() << "expects top_k >= 1, but got " << topK;
  if (topK > experts)
    return emitOpError() << "expects top_k <= the number of experts ("
                         << experts << "), but got " << topK;
  if (nGroup < 1 || experts % nGroup != 0)
    return emitOpError() << "expects n_group to be a positive divisor of the "
                            "number of experts ("
                         << experts << "), but got " << nGroup;
  if (topKGroup < 1 || topKGroup > nGroup)
    return emitOpError() << "expects topk_group in [1, n_group = " << nGroup
                         << "], but got " << topKGroup;
  if (getGroupTop() != 1 && getGroupTop() != 2)
    return emitOpError() << "expects group_top 1 or 2 (a group's score: its "
                            "best selection score, or its two best summed), "
                            "but got "
                         << getGroupTop();
  int64_t eligible = topKGroup * (experts / nGroup);
  if (topK > eligible)
    return emitOpError() << "expects top_k <= the " << eligible
                         << " experts of the topk_group = " << topKGroup
                         << " kept groups, but got " << topK;
  if (getExpertBias() &&
      failed(expectShape(*this, "expert_bias", getExpertBias(), {experts},
                         "one bias per expert")))
    return failure();
  if (failed(expectPositive(*this, "route_scale",
                            getRouteScale().convertToDouble())))
    return failure();

  ArrayRef<int64_t> tokens = x.drop_back();
  if (failed(expectShape(*this, "weights", getWeights(),
                         withLastDim(tokens, topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "indices", getIndices(),
                         withLastDim(tokens, topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "logits", getLogits(),
                         withLastDim(tokens, experts),
                         "the input's token dimensions followed by experts")))
    return failure();
  if (!getLogits().getType().getElementType().isF32())
    return emitOpError() << "expects f32 logits, but got element type "
                         << getLogits().getType().getElementType();
  return success();
}

namespace {
/// Group-limited routing that keeps every group is plain top-k routing.
struct DropTrivialExpertGroups : OpRewritePattern<RouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RouterOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getNGroup() == 1 || op.getTopkGroup() != op.getNGroup())
      return failure();
    rewriter.modifyOpInPlace(op, [&] {
      op.setNGroup(1);
      op.setTopkGroup(1);
      op.setGroupTop(2);
    });
    return success();
  }
};
} // namespace

void RouterOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                           MLIRContext *context) {
  results.add<DropTrivialExpertGroups>(context);
}

int64_t ExpertsOp::getNumExperts() {
  return getGateWeight().getType().getShape()[0];
}

int64_t ExpertsOp::getTopK() {
  return getWeights().getType().getShape().back();
}

/// Checks stacked expert weights for tokens of width `hidden`: gate/up
/// [E, F, H] and down [E, H, F], with E and F taken from gate (already
/// checked to be rank 3).
static LogicalResult verifyStackedExpertWeights(Operation *op, Value gate,
                                                Value up, Value down,
                                                int64_t hidden) {
  ArrayRef<int64_t> shape = shapeOf(gate);
  int64_t experts = shape[0], inter = shape[1];
  if (failed(expectShape(op, "gate_weight", gate, {experts, inter, hidden},
                         "[experts, intermediate, hidden]")) ||
      failed(
          expectShape(op, "up_weight", up, shape, "the shape of gate_weight")))
    return failure();
  return expectShape(op, "down_weight", down, {experts, hidden, inter},
                     "[experts, hidden, intermediate]");
}

LogicalResult ExpertsOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectRank(*this, "gate_weight", getGateWeight(), 3,
                        "[experts, intermediate, hidden]")) ||
      failed(expectAtLeastRank1(*this, "weights", getWeights())))
    return failure();
  ArrayRef<int64_t> x = getInput().getType().getShape();
  int64_t experts = getNumExperts();
  if (failed(verifyStackedExpertWeights(*this, getGateWeight(), getUpWeight(),
                                        getDownWeight(), x.back())))
    return failure();
  int64_t topK = getTopK();
  if (failed(expectShape(*this, "weights", getWeights(),
                         withLastDim(x.drop_back(), topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "indices", getIndices(),
                         getWeights().getType().getShape(),
                         "the shape of weights")))
    return failure();
  if (topK > experts)
    return emitOpError() << "expects top_k (the last dimension of weights) <= "
                            "the number of experts ("
                         << experts << "), but got " << topK;
  if (std::optional<APFloat> cf = getCapacityFactor())
    if (failed(expectPositive(*this, "capacity_factor", cf->convertToDouble())))
      return failure();
  return expectSameType(*this, getResult(), getInput(), "input");
}

/// T * K for token dimensions `tokens` and top-k `topK`.
static int64_t slotCount(ArrayRef<int64_t> tokens, int64_t topK) {
  int64_t n = topK;
  for (int64_t d : tokens)
    n *= d;
  return n;
}

LogicalResult DropOverCapacityOp::verify() {
  if (failed(expectAtLeastRank1(*this, "indices", getIndices())))
    return failure();
  if (static_cast<int64_t>(getNumExperts()) < 1)
    return emitOpError() << "expects num_experts >= 1, but got "
                         << static_cast<int64_t>(getNumExperts());
  if (static_cast<int64_t>(getCapacity()) < 1)
    return emitOpError() << "expects capacity >= 1, but got "
                         << static_cast<int64_t>(getCapacity());
  return expectSameType(*this, getKept(), getIndices(), "indices");
}

LogicalResult PermuteOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectAtLeastRank1(*this, "indices", getIndices())))
    return failure();
  int64_t experts = static_cast<int64_t>(getNumExperts());
  if (experts < 1)
    return emitOpError() << "expects num_experts >= 1, but got " << experts;
  ArrayRef<int64_t> x = getInput().getType().getShape();
  ArrayRef<int64_t> indices = getIndices().getType().getShape();
  if (failed(expectShape(*this, "indices", getIndices(),
                         withLastDim(x.drop_back(), indices.back()),
                         "the input's token dimensions followed by top_k")))
    return failure();
  int64_t slots = slotCount(x.drop_back(), indices.back());
  if (failed(expectShape(*this, "permuted", getPermuted(), {slots, x.back()},
                         "[tokens * top_k, hidden]")) ||
      failed(expectShape(*this, "offsets", getOffsets(), {experts + 1},
                         "[num_experts + 1]")) ||
      failed(expectShape(*this, "row_to_slot", getRowToSlot(), {slots},
                         "[tokens * top_k]")))
    return failure();
  if (getPermuted().getType().getElementType() !=
      getInput().getType().getElementType())
    return emitOpError("expects permuted to have the element type of input");
  return success();
}

static LogicalResult verifyGroupedSwiGLU(Operation *op, Value permuted,
                                         Value offsets, Value gate, Value up,
                                         Value down, Value result) {
  if (failed(expectRank(op, "permuted", permuted, 2, "[rows, hidden]")) ||
      failed(expectRank(op, "gate_weight", gate, 3,
                        "[experts, intermediate, hidden]")))
    return failure();
  int64_t experts = shapeOf(gate)[0];
  if (failed(
          verifyStackedExpertWeights(op, gate, up, down, shapeOf(permuted)[1])))
    return failure();
  int64_t numOffsets = shapeOf(offsets)[0];
  if (experts < 1 || numOffsets < experts + 1 ||
      (numOffsets - 1) % experts != 0)
    return op->emitOpError()
           << "expects offsets of shape [segments * experts + 1] with "
              "segments >= 1 and "
           << experts << " experts, but got [" << numOffsets << "]";
  return expectSameType(op, result, permuted, "permuted");
}

LogicalResult GroupedSwiGLUOp::verify() {
  return verifyGroupedSwiGLU(*this, getPermuted(), getOffsets(),
                             getGateWeight(), getUpWeight(), getDownWeight(),
                             getResult());
}

static LogicalResult verifyUnpermute(Operation *op, Value expertOut,
                                     Value rowToSlot, Value weightsValue,
                                     Value result) {
  if (failed(expectRank(op, "expert_out", expertOut, 2, "[rows, hidden]")) ||
      failed(expectAtLeastRank1(op, "weights", weightsValue)))
    return failure();
  ArrayRef<int64_t> rows = shapeOf(expertOut);
  ArrayRef<int64_t> weights = shapeOf(weightsValue);
  int64_t slots = slotCount(weights.drop_back(), weights.back());
  if (rows[0] != slots)
    return op->emitOpError() << "expects expert_out to have one row per "
                                "token-slot of weights ("
                             << slots << "), but got " << rows[0];
  if (failed(expectShape(op, "row_to_slot", rowToSlot, {slots},
                         "[tokens * top_k]")) ||
      failed(expectShape(op, "result", result,
                         withLastDim(weights.drop_back(), rows[1]),
                         "the weights' token dimensions followed by hidden")))
    return failure();
  if (cast<ShapedType>(result.getType()).getElementType() !=
      cast<ShapedType>(expertOut.getType()).getElementType())
    return op->emitOpError("expects the result to have the element type of "
                           "expert_out");
  return success();
}

LogicalResult UnpermuteOp::verify() {
  return verifyUnpermute(*this, getExpertOut(), getRowToSlot(), getWeights(),
                         getResult());
}

LogicalResult SharedExpertsOp::verify() {
  if (failed(verifySwiGLU(*this, getInput(), getGateWeight(), getUpWeight(),
                          getDownWeight(), getResult())))
    return failure();
  if (getSharedGate())
    return expectShape(*this, "shared_gate", getSharedGate(),
                       {1, getInput().getType().getShape().back()},
                       "[1, hidden]");
  return success();
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

LogicalResult SharedExpertsGradOp::verify() {
  if (failed(verifySwiGLU(*this, getInput(), getGateWeight(), getUpWeight(),
                          getDownWeight(), getResultGrad())))
    return failure();
  if (static_cast<bool>(getSharedGate()) !=
      static_cast<bool>(getSharedGateGrad()))
    return emitOpError("expects shared_gate_grad exactly when shared_gate is "
                       "given");
  if (getSharedGate() &&
      (failed(expectShape(*this, "shared_gate", getSharedGate(),
                          {1, shapeOf(getInput()).back()}, "[1, hidden]")) ||
       failed(expectGradTypes(
           *this, {{getSharedGateGrad(), getSharedGate(), "shared_gate"}}))))
    return failure();
  return expectGradTypes(
      *this, {{getInputGrad(), getInput(), "input"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"},
              {getUpWeightGrad(), getUpWeight(), "up_weight"},
              {getDownWeightGrad(), getDownWeight(), "down_weight"}});
}

LogicalResult RouterGradOp::verify() {
  if (failed(expectAtLeastRank1(*this, "input", getInput())) ||
      failed(expectRank(*this, "gate_weight", getGateWeight(), 2,
                        "[experts, hidden]")) ||
      failed(expectAtLeastRank1(*this, "indices", getIndices())))
    return failure();
  ArrayRef<int64_t> x = shapeOf(getInput());
  int64_t experts = shapeOf(getGateWeight())[0];
  int64_t topK = shapeOf(getIndices()).back();
  ArrayRef<int64_t> tokens = x.drop_back();
  if (failed(expectShape(*this, "gate_weight", getGateWeight(),
                         {experts, x.back()}, "[experts, hidden]")) ||
      failed(expectShape(*this, "logits", getLogits(),
                         withLastDim(tokens, experts),
                         "the input's token dimensions followed by experts")) ||
      failed(expectShape(*this, "indices", getIndices(),
                         withLastDim(tokens, topK),
                         "the input's token dimensions followed by top_k")) ||
      failed(expectShape(*this, "weights_grad", getWeightsGrad(),
                         withLastDim(tokens, topK), "the shape of indices")) ||
      failed(expectPositive(*this, "route_scale",
                            getRouteScale().convertToDouble())))
    return failure();
  if (topK > experts)
    return emitOpError() << "expects top_k <= the number of experts ("
                         << experts << "), but got " << topK;
  if (getLogitsGrad() &&
      failed(
          expectGradTypes(*this, {{getLogitsGrad(), getLogits(), "logits"}})))
    return failure();
  return expectGradTypes(
      *this, {{getInputGrad(), getInput(), "input"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"}});
}

LogicalResult PermuteGradOp::verify() {
  if (failed(expectRank(*this, "permuted_grad", getPermutedGrad(), 2,
                        "[rows, hidden]")) ||
      failed(expectAtLeastRank1(*this, "input_grad", getInputGrad())))
    return failure();
  int64_t topK = static_cast<int64_t>(getTopK());
  if (topK < 1)
    return emitOpError() << "expects top_k >= 1, but got " << topK;
  ArrayRef<int64_t> input = shapeOf(getInputGrad());
  int64_t slots = slotCount(input.drop_back(), topK);
  if (failed(expectShape(*this, "permuted_grad", getPermutedGrad(),
                         {slots, input.back()},
                         "[tokens * top_k, hidden] of input_grad")))
    return failure();
  return expectShape(*this, "row_to_slot", getRowToSlot(), {slots},
                     "[tokens * top_k]");
}

LogicalResult UnpermuteGradOp::verify() {
  if (failed(verifyUnpermute(*this, getExpertOut(), getRowToSlot(),
                             getWeights(), getResultGrad())))
    return failure();
  return expectGradTypes(*this,
                         {{getExpertOutGrad(), getExpertOut(), "expert_out"},
                          {getWeightsGrad(), getWeights(), "weights"}});
}

LogicalResult GroupedSwiGLUGradOp::verify() {
  if (failed(verifyGroupedSwiGLU(*this, getPermuted(), getOffsets(),
                                 getGateWeight(), getUpWeight(),
                                 getDownWeight(), getResultGrad())))
    return failure();
  return expectGradTypes(
      *this, {{getPermutedGrad(), getPermuted(), "permuted"},
              {getGateWeightGrad(), getGateWeight(), "gate_weight"},
              {getUpWeightGrad(), getUpWeight(), "up_weight"},
              {getDownWeightGrad(), getDownWeight(), "down_weight"}});
}

//===----------------------------------------------------------------------===//
// Expert-parallel dispatch and combine
//===----------------------------------------------------------------------===//

/// Checks that `grid` names a shard.grid and `axes` are distinct axes of it
/// whose sizes multiply into a group size n dividing `experts`, and, with a
/// placement, that the [n * slots + 1] received offsets give every rank the
/// same number of slots, enough for all experts.
static LogicalResult verifyExpertGroup(Operation *op,
                                       SymbolTableCollection &symbols,
                                       FlatSymbolRefAttr grid,
                                       ArrayRef<int16_t> axes, int64_t experts,
                                       bool placed, int64_t receivedOffsets) {
  auto gridOp = symbols.lookupNearestSymbolFrom<shard::GridOp>(op, grid);
  if (!gridOp)
    return op->emitOpError() << "expects " << grid << " to name a shard.grid";
  ArrayRef<int64_t> shape = gridOp.getShape();
  int64_t size = 1;
  llvm::SmallDenseSet<int16_t> seen;
  for (int16_t axis : axes) {
    if (axis < 0 || axis >= static_cast<int64_t>(shape.size()))
      return op->emitOpError() << "grid axis " << axis << " is out of range "
                               << "for " << grid << " of rank " << shape.size();
    if (!seen.insert(axis).second)
      return op->emitOpError() << "repeats grid axis " << axis;
    size *= shape[axis];
  }
  if (experts % size != 0)
    return op->emitOpError() << experts << " experts do not split over the "
                             << size << " ranks of grid_axes";
  if (!placed)
    return success();
  int64_t slots = (receivedOffsets - 1) / size;
  if ((receivedOffsets - 1) % size != 0)
    return op->emitOpError()
           << "expects received_offsets of shape [ranks * slots + 1] for the "
           << size << " ranks of grid_axes, but got [" << receivedOffsets
           << "]";
  if (slots * size < experts)
    return op->emitOpError() << slots << " expert slots per rank on " << size
                             << " ranks cannot hold " << experts << " experts";
  return success();
}

/// Both ops move [rows, H] tensors (`rows` in, `other` out) whose experts are
/// given by [experts + 1] offsets, and received offsets of the same shape.
static LogicalResult verifyExpertExchange(Operation *op, StringRef what,
                                          Value rows, StringRef otherName,
                                          Value other, Value offsets,
                                          Value receivedOffsets, bool placed) {
  if (failed(expectRank(op, what, rows, 2, "[rows, hidden]")) ||
      failed(expectRank(op, otherName, other, 2, "[rows, hidden]")))
    return failure();
  if (shapeOf(rows)[1] != shapeOf(other)[1] ||
      cast<ShapedType>(rows.getType()).getElementType() !=
          cast<ShapedType>(other.getType()).getElementType())
    return op->emitOpError()
           << "expects " << otherName
           << " to have the hidden size and element type of " << what;
  if (shapeOf(offsets)[0] < 2)
    return op->emitOpError("expects offsets of shape [experts + 1] with at "
                           "least one expert");
  // With a placement the slots per rank set the size (verifyExpertGroup).
  if (placed)
    return success();
  return expectShape(op, "received_offsets", receivedOffsets, shapeOf(offsets),
                     "the shape of offsets");
}

LogicalResult DispatchOp::verify() {
  return verifyExpertExchange(*this, "permuted", getPermuted(), "received",
                              getReceived(), getOffsets(), getReceivedOffsets(),
                              getPlacement().has_value());
}

LogicalResult DispatchOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyExpertGroup(*this, symbolTable, getGridAttr(), getGridAxes(),
                           shapeOf(getOffsets())[0] - 1,
                           getPlacement().has_value(),
                           shapeOf(getReceivedOffsets())[0]);
}

LogicalResult CombineOp::verify() {
  return verifyExpertExchange(*this, "expert_out", getExpertOut(), "result",
                              getResult(), getOffsets(), getReceivedOffsets(),
                              getPlacement().has_value());
}

LogicalResult CombineOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  return verifyExpertGroup(*this, symbolTable, getGridAttr(), getGridAxes(),
                           shapeOf(getOffsets())[0] - 1,
                           getPlacement().has_value(),
                           shapeOf(getReceivedOffsets())[0]);
}

//===----------------------------------------------------------------------===//
// What the mesh must divide (MeshFitOpInterface)
//===----------------------------------------------------------------------===//

LogicalResult ExpertsOp::verifyFitsMesh(MeshAttr mesh) {
  if (!hasRank(getGateWeight(), 3))
    return success();
  bool ok = succeeded(expectDivisible(*this, "the number of experts",
                                      getNumExperts(), "ep", mesh.getEp()));
  // Expert tensor parallelism splits each expert's intermediate features.
  ok &= succeeded(expectDivisible(*this, "the expert intermediate size",
                                  getGateWeight().getType().getShape()[1],
                                  "etp", mesh.getEtp()));
  return success(ok);
}

LogicalResult SharedExpertsOp::verifyFitsMesh(MeshAttr mesh) {
  return expectFFNFitsMesh(*this, getGateWeight(),
                           "the shared-expert intermediate size", mesh);
}
