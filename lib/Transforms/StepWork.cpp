//===- StepWork.cpp - Count the work of one rank's program ----------------===//
//
// The arithmetic of each op follows the public shape of the computation,
// counting a multiply-add as two FLOPs:
// - a linear layer [M, K] x [N, K]^T: 2 M N K; the router and the dense and
//   shared-expert FFNs are linear layers over their weights;
// - the grouped SwiGLU expert FFN: 2 rows (gate + up + down elements) / E
//   for its E local experts;
// - attention over q [B, S, H, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv]:
//   2 B H S Sk (D + Dv), half of it under a causal mask;
// - a gradient op: twice its forward (the input and the weight gradients),
//   attention's two and a half times (its backward recomputes the scores);
// - anything else is bound by the bytes it moves.
//
//===----------------------------------------------------------------------===//

#include "moe/Transforms/StepWork.h"

#include "ShardingSpec.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Support/MeshShape.h"
#include "moe/Support/OptimizerShards.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::moe;
using ::moe::CollectiveKind;
using ::moe::CollectiveWork;
using ::moe::GroupAxis;
using ::moe::OpWork;
using ::moe::StepWork;

namespace {

double elements(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type || !type.hasStaticShape())
    return 0;
  return static_cast<double>(type.getNumElements());
}

/// Product of all dimensions but the last: the rows of a row-wise op.
double rows(Value v) {
  auto type = cast<RankedTensorType>(v.getType());
  double n = 1;
  for (int64_t d : type.getShape().drop_back())
    n *= static_cast<double>(d);
  return n;
}

double lastDim(Value v) {
  return static_cast<double>(
      cast<RankedTensorType>(v.getType()).getShape().back());
}

/// Counts one rank's work in one function.
class Counter {
public:
  Counter(ModuleOp module, bool bf16) : bf16(bf16) {
    if (auto mesh =
            module->getAttrOfType<MeshAttr>(MoEDialect::getMeshAttrName()))
      shape = {mesh.getDp(), mesh.getCp(), mesh.getTp(),
               mesh.getEp(), mesh.getSp(), mesh.getEtp()};
    if (auto stage = module->getAttrOfType<IntegerAttr>(
            MoEDialect::getZeroStageAttrName()))
      zeroStage = stage.getInt();
    work.bf16 = bf16;
  }

  StepWork count(func::FuncOp fn) {
    fn.walk([&](Operation *op) { countOp(op); });
    return std::move(work);
  }

private:
  /// Bytes of `v` in storage: floats at 2 or 4 bytes, integers at theirs.
  double bytes(Value v) const {
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type)
      return 0;
    Type elem = type.getElementType();
    double size = isa<FloatType>(elem) ? (bf16 ? 2 : 4)
                                       : (elem.getIntOrFloatBitWidth() + 7) / 8;
    return elements(v) * size;
  }

  double allBytes(Operation *op) const {
    double total = 0;
    for (Value v : op->getOperands())
      total += bytes(v);
    for (Value v : op->getResults())
      total += bytes(v);
    return total;
  }

  /// The rows the expert FFN computes for `permuted`: when it is a
  /// dispatch's receive buffer, the rows this rank sends (uniform routing
  /// receives as many as it sends), else its own rows.
  double routedRows(Value permuted) const {
    if (auto dispatch = permuted.getDefiningOp<DispatchOp>())
      return rows(dispatch.getPermuted());
    return rows(permuted);
  }

  /// The group of `axes` of grid `grid` in world ranks: both grids are laid
  /// out row-major over the ranks (tp fastest, see meshCoordinates).
  CollectiveWork collective(Operation *op, CollectiveKind kind, StringRef grid,
                            ArrayRef<int16_t> axes, double size) {
    CollectiveWork c;
    c.kind = kind;
    c.bytes = size;
    FailureOr<SmallVector<int64_t>> gridSizes = gridShape(op, grid);
    for (int16_t axis : axes) {
      if (!c.axes.empty())
        c.axes += ",";
      c.axes += meshAxisName(grid, axis).str();
      if (failed(gridSizes))
        continue;
      int64_t stride = 1;
      for (size_t d = axis + 1; d < gridSizes->size(); ++d)
        stride *= (*gridSizes)[d];
      c.group.push_back({(*gridSizes)[axis], stride});
    }
    return c;
  }

  void addOp(double flops, double byteCount) {
    work.ops.push_back({flops, byteCount, bf16});
  }

  /// 2 x rows x the elements of `weights`: a linear map through them.
  static double linearFlops(Value input, ValueRange weights) {
    double total = 0;
    for (Value w : weights)
      total += elements(w);
    return 2 * rows(input) * total;
  }

  static double attentionFlops(Value q, Value k, Value v, bool causal) {
    auto qs = cast<RankedTensorType>(q.getType()).getShape();
    auto ks = cast<RankedTensorType>(k.getType()).getShape();
    double flops = 2.0 * static_cast<double>(qs[0]) * qs[2] * qs[1] * ks[1] *
                   (static_cast<double>(qs[3]) + lastDim(v));
    return causal ? flops / 2 : flops;
  }

  void countParam(ParamOp param) {
    double n = elements(param.getResult());
    work.parameterElements += n;
    auto split = param->getAttrOfType<ArrayAttr>(kSplitAttr);
    std::vector<std::vector<std::string>> names;
    if (split)
      for (Attribute dim : split) {
        names.emplace_back();
        for (Attribute axis : cast<ArrayAttr>(dim))
          names.back().push_back(cast<StringAttr>(axis).getValue().str());
      }
    ::moe::ShardGroup group = ::moe::optimizerShardGroup(names);
    int64_t replicas = ::moe::shardGroupSize(group, shape);
    if (zeroStage != 1 || replicas <= 1) {
      work.optimizerElements += n;
      return;
    }
    // ZeRO stage 1: this rank updates its slice, then the driver gathers
    // the updated fp32 slices over the replicas: the dp x cp plane of a
    // dense weight, the edp group of an expert weight.
    work.optimizerElements += n / static_cast<double>(replicas);
    if (group == ::moe::ShardGroup::ExpertDataParallel) {
      work.collectives.push_back(collective(param, CollectiveKind::AllGather,
                                            kExpertGrid, {kEdpAxis}, 4 * n));
      return;
    }
    SmallVector<int16_t, 2> axes;
    if (shape.dp > 1)
      axes.push_back(kDpAxis);
    if (shape.cp > 1)
      axes.push_back(kCpAxis);
    work.collectives.push_back(
        collective(param, CollectiveKind::AllGather, kDenseGrid, axes, 4 * n));
  }

  void countOp(Operation *op) {
    // Views and bookkeeping move no data.
    if (isa<func::FuncOp, func::ReturnOp, tensor::ExpandShapeOp,
            tensor::CollapseShapeOp, shard::GridOp>(op) ||
        op->hasTrait<OpTrait::ConstantLike>())
      return;
    llvm::TypeSwitch<Operation *>(op)
        .Case([&](ParamOp p) { countParam(p); })
        .Case([&](shard::AllReduceOp c) {
          work.collectives.push_back(collective(op, CollectiveKind::AllReduce,
                                                c.getGrid(), c.getGridAxes(),
                                                bytes(c.getInput())));
        })
        .Case([&](shard::AllGatherOp c) {
          work.collectives.push_back(collective(op, CollectiveKind::AllGather,
                                                c.getGrid(), c.getGridAxes(),
                                                bytes(c.getResult())));
        })
        .Case([&](shard::ReduceScatterOp c) {
          work.collectives.push_back(
              collective(op, CollectiveKind::ReduceScatter, c.getGrid(),
                         c.getGridAxes(), bytes(c.getInput())));
        })
        .Case([&](shard::AllToAllOp c) {
          work.collectives.push_back(collective(op, CollectiveKind::AllToAll,
                                                c.getGrid(), c.getGridAxes(),
                                                bytes(c.getInput())));
        })
        // A slice of a replicated tensor: a local copy.
        .Case([&](shard::AllSliceOp c) { addOp(0, 2 * bytes(c.getResult())); })
        // The routed rows leave and come back: what this rank sends.
        .Case([&](DispatchOp d) {
          work.collectives.push_back(collective(op, CollectiveKind::AllToAll,
                                                d.getGrid(), d.getGridAxes(),
                                                bytes(d.getPermuted())));
        })
        .Case([&](CombineOp c) {
          work.collectives.push_back(collective(op, CollectiveKind::AllToAll,
                                                c.getGrid(), c.getGridAxes(),
                                                bytes(c.getResult())));
        })
        .Case([&](LinearOp l) {
          addOp(linearFlops(l.getInput(), l.getWeight()), allBytes(op));
        })
        .Case([&](LinearGradOp l) {
          addOp(2 * linearFlops(l.getInput(), l.getWeight()), allBytes(op));
        })
        .Case([&](MLPOp m) {
          addOp(linearFlops(m.getInput(), {m.getGateWeight(), m.getUpWeight(),
                                           m.getDownWeight()}),
                allBytes(op));
        })
        .Case([&](MLPGradOp m) {
          addOp(
              2 * linearFlops(m.getInput(), {m.getGateWeight(), m.getUpWeight(),
                                             m.getDownWeight()}),
              allBytes(op));
        })
        .Case([&](SharedExpertsOp s) {
          addOp(linearFlops(s.getInput(), s->getOperands().drop_front()),
                allBytes(op));
        })
        .Case([&](SharedExpertsGradOp s) {
          addOp(2 * linearFlops(s.getInput(), s->getOperands().drop_front(2)),
                allBytes(op));
        })
        .Case([&](RouterOp r) {
          addOp(linearFlops(r.getInput(), r.getGateWeight()), allBytes(op));
        })
        .Case([&](RouterGradOp r) {
          addOp(2 * linearFlops(r.getInput(), r.getGateWeight()), allBytes(op));
        })
        .Case([&](GroupedSwiGLUOp g) {
          countExperts(g.getPermuted(),
                       {g.getGateWeight(), g.getUpWeight(), g.getDownWeight()},
                       /*grad=*/false);
        })
        .Case([&](GroupedSwiGLUGradOp g) {
          countExperts(g.getPermuted(),
                       {g.getGateWeight(), g.getUpWeight(), g.getDownWeight()},
                       /*grad=*/true);
        })
        .Case([&](AttentionOp a) {
          addOp(attentionFlops(a.getQ(), a.getK(), a.getV(), a.getCausal()),
                allBytes(op));
        })
        .Case([&](AttentionGradOp a) {
          addOp(2.5 *
                    attentionFlops(a.getQ(), a.getK(), a.getV(), a.getCausal()),
                allBytes(op));
        })
        // A lookup reads the rows it returns, not the whole table.
        .Case([&](EmbeddingOp e) {
          addOp(0, bytes(e.getTokens()) + 2 * bytes(e.getResult()));
        })
        .Default([&](Operation *) { addOp(0, allBytes(op)); });
  }

  /// The grouped expert FFN over the routed rows of `permuted`: rows in and
  /// out (and their gradient), the weights (and theirs).
  void countExperts(Value permuted, ValueRange weights, bool grad) {
    double routed = routedRows(permuted);
    double perRow = 0, weightBytes = 0;
    auto experts = static_cast<double>(
        cast<RankedTensorType>(weights.front().getType()).getShape().front());
    for (Value w : weights) {
      perRow += elements(w) / experts;
      weightBytes += bytes(w);
    }
    double rowBytes =
        routed * lastDim(permuted) * (bf16 ? 2 : 4) * (grad ? 3 : 2);
    double flops = 2 * routed * perRow * (grad ? 2 : 1);
    addOp(flops, rowBytes + weightBytes * (grad ? 2 : 1));
  }

  bool bf16;
  ::moe::MeshShape shape;
  int64_t zeroStage = 0;
  StepWork work;
};

} // namespace

FailureOr<StepWork> mlir::moe::countStepWork(ModuleOp module, StringRef entry,
                                             bool bf16) {
  auto fn = module.lookupSymbol<func::FuncOp>(entry);
  if (!fn || fn.isExternal())
    return module.emitError("no function @")
           << entry << " to count the work of";
  return Counter(module, bf16).count(fn);
}

namespace mlir::moe {
#define GEN_PASS_DEF_PRINTSTEPWORK
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

namespace {

std::string number(double x) { return llvm::formatv("{0:F0}", x).str(); }

struct PrintStepWorkPass
    : public mlir::moe::impl::PrintStepWorkBase<PrintStepWorkPass> {
  using PrintStepWorkBase::PrintStepWorkBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (storage != "f32" && storage != "bf16") {
      module.emitError("unknown storage '") << storage << "'";
      return signalPassFailure();
    }
    const ::moe::HardwareProfile *profile = nullptr;
    if (!hardware.empty() &&
        !(profile = ::moe::findHardwareProfile(hardware))) {
      module.emitError("unknown hardware profile '") << hardware << "'";
      return signalPassFailure();
    }
    for (func::FuncOp fn : modelFunctions(module)) {
      FailureOr<StepWork> work =
          countStepWork(module, fn.getSymName(), storage == "bf16");
      if (failed(work))
        return signalPassFailure();
      double flops = 0, bytes = 0;
      for (const OpWork &op : work->ops) {
        flops += op.flops;
        bytes += op.bytes;
      }
      fn.emitRemark() << "@" << fn.getSymName() << ": " << work->ops.size()
                      << " ops, " << number(flops) << " flops, "
                      << number(bytes) << " bytes, optimizer "
                      << number(work->optimizerElements) << " elements";
      // One line per kind and axes, in order of first appearance.
      struct Sum {
        std::string key;
        int64_t count = 0, ranks = 1;
        double bytes = 0;
      };
      std::vector<Sum> sums;
      for (const CollectiveWork &c : work->collectives) {
        std::string key =
            std::string(::moe::collectiveName(c.kind)) + " " + c.axes;
        auto it =
            llvm::find_if(sums, [&](const Sum &s) { return s.key == key; });
        if (it == sums.end())
          it = sums.insert(sums.end(), Sum{key});
        it->count += 1;
        it->bytes += c.bytes;
        it->ranks = 1;
        for (const GroupAxis &axis : c.group)
          it->ranks *= axis.size;
      }
      for (const Sum &sum : sums)
        fn.emitRemark() << sum.key << ": " << sum.count << " x, " << sum.ranks
                        << " ranks, " << number(sum.bytes) << " bytes";
      if (!profile)
        continue;
      ::moe::StepTime t = ::moe::predictStepTime(*work, *profile);
      fn.emitRemark() << "time on " << profile->name << ": compute "
                      << ::moe::formatSeconds(t.compute) << ", memory "
                      << ::moe::formatSeconds(t.memory) << ", communication "
                      << ::moe::formatSeconds(t.communication) << ", optimizer "
                      << ::moe::formatSeconds(t.optimizer) << ", total "
                      << ::moe::formatSeconds(t.total) << "; dominant "
                      << t.dominant.name;
    }
  }
};

} // namespace
