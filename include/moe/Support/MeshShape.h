//===- MeshShape.h - parse and check a DP x CP x TP x EP mesh ---*- C++ -*-===//
//
// Plain C++ (no LLVM/MLIR) so the compiler, the runtime and the executable's
// command line share one parser and one set of rules for `--mesh`.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_SUPPORT_MESHSHAPE_H
#define MOE_SUPPORT_MESHSHAPE_H

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moe {

/// The axes a program is split over: the four axes of the device mesh and
/// the expert data-parallel axis they imply (the dp * cp / ep ranks that
/// hold the same experts). One vocabulary for the compiler (shardings, the
/// manifest) and the runtime (placement, checkpoints, traces).
enum class MeshAxis { DP, CP, TP, EP, EDP };

/// The four axes a mesh is given by, in the order "dp=..,cp=..,tp=..,ep=..".
inline constexpr MeshAxis kMeshAxes[] = {MeshAxis::DP, MeshAxis::CP,
                                         MeshAxis::TP, MeshAxis::EP};

/// "dp", "cp", "tp", "ep", "edp".
const char *axisName(MeshAxis axis);

/// The axis named `name` (any of axisName's), or nullopt.
std::optional<MeshAxis> parseAxis(std::string_view name);

/// The axes of the two device grids a partitioned program uses, in grid
/// order: the dense grid (dp, cp, tp), over which dense weights and
/// activations are split, and the expert grid (edp, ep, tp), over which
/// expert weights are; the rank layout behind both is MeshCoordinates'.
inline constexpr MeshAxis kDenseGridAxes[] = {MeshAxis::DP, MeshAxis::CP,
                                              MeshAxis::TP};
inline constexpr MeshAxis kExpertGridAxes[] = {MeshAxis::EDP, MeshAxis::EP,
                                               MeshAxis::TP};

/// Sizes of the four mesh axes. The world is dp * cp * tp ranks; ep borrows
/// its ranks from the dp * cp plane (see #moe.mesh in the dialect docs).
struct MeshShape {
  int64_t dp = 1;
  int64_t cp = 1;
  int64_t tp = 1;
  int64_t ep = 1;
  /// Sequence parallelism over tp (Megatron-Core's): between the
  /// tensor-parallel regions, the norms, residuals, router and experts see
  /// the sequence split over tp as well as cp, so the tp ranks of a token
  /// group each route and compute their own tokens instead of the same ones.
  bool sp = false;
  /// Expert tensor parallelism: 1 (the experts whole on every tp rank) or
  /// tp (each expert's FFN split over tp along its intermediate features,
  /// as the dense FFNs are; the tokens gathered over tp first).
  int64_t etp = 1;

  int64_t worldSize() const { return dp * cp * tp; }
  int64_t expertDataParallelSize() const { return dp * cp / ep; }
  /// The size of `axis` (edp: expertDataParallelSize()).
  int64_t size(MeshAxis axis) const;
  /// Sets the size of one of the four kMeshAxes (edp is derived: ignored).
  void setSize(MeshAxis axis, int64_t size);

  /// Parses "dp=2,cp=1,tp=2,ep=4": comma-separated axis=size pairs in any
  /// order, each axis at most once, omitted axes 1, the bare entry "sp"
  /// for sequence parallelism and "etp=N" for expert tensor parallelism;
  /// "" is the 1-rank mesh.
  /// Returns nullopt and sets `error` to one sentence on malformed text.
  static std::optional<MeshShape> parse(const std::string &text,
                                        std::string &error);

  /// Checks the mesh's own rules (positive sizes, ep divides dp * cp, sp
  /// only with tp > 1, etp 1 or tp) and,
  /// when `worldSize` > 0, that it spans exactly that many ranks. Returns ""
  /// when valid, else one sentence saying what is wrong.
  std::string validate(int64_t worldSize = 0) const;

  /// "dp=2,cp=1,tp=1,ep=2", then ",etp=N" when etp > 1 and ",sp" when
  /// sequence parallel.
  std::string str() const;
};

} // namespace moe

#endif // MOE_SUPPORT_MESHSHAPE_H
