//===- Plot.h - Loss curves drawn by gnuplot --------------------*- C++ -*-===//
//
// `train --plot FILE.png` draws the training loss (every logged step) and the
// validation loss (every evaluation) with gnuplot (Debian's gnuplot-nox, run
// as a child process, nothing linked): numbered axes with labels, a legend
// naming both curves, and a title naming the model, the mesh and the batch.
// The script and its data go to gnuplot on a file beside the image; the PNG
// is written to a temporary file and renamed, so a reader never sees half a
// picture.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_PLOT_H
#define MOE_LIB_RUNTIME_DRIVER_PLOT_H

#include <string>
#include <utility>
#include <vector>

namespace moe::driver {

/// (step, loss) points.
using Curve = std::vector<std::pair<double, double>>;

/// The gnuplot script that draws `train` and `validation` (non-finite
/// losses left out) into the PNG `output`, `width` x `height` pixels.
std::string lossPlotScript(const std::string &output, const std::string &title,
                           const Curve &train, const Curve &validation,
                           int width = 800, int height = 500);

/// Why gnuplot cannot draw PNGs here (not installed, no pngcairo), or ""
/// when it can; asked once before a run so that --plot fails early.
std::string gnuplotProblem();

/// Draws the curves into `path` atomically; throws std::runtime_error naming
/// the file and gnuplot's own message on failure.
void plotLossCurves(const std::string &path, const std::string &title,
                    const Curve &train, const Curve &validation);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_PLOT_H
