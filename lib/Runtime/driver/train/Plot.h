//===- Plot.h - Loss curves as a PNG image ----------------------*- C++ -*-===//
//
// `train --plot FILE.png` draws the training loss (every logged step) and the
// validation loss (every evaluation) as two coloured polylines on white, with
// axes, tick marks and a legend of two short line segments (train blue, val
// orange). No text: the metrics file has the numbers.
//
// The PNG encoder is minimal and self-contained: 8-bit RGB, filter 0 on every
// row, zlib stream of stored (uncompressed) deflate blocks, CRC-32 per chunk
// and Adler-32 over the image data.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_PLOT_H
#define MOE_LIB_RUNTIME_DRIVER_PLOT_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moe::driver {

/// CRC-32 (ISO-HDLC, as PNG and zlib use) of `size` bytes.
uint32_t crc32(const uint8_t *data, size_t size);
/// Adler-32 (zlib) of `size` bytes.
uint32_t adler32(const uint8_t *data, size_t size);

/// The bytes of a PNG file of `width` x `height` 8-bit RGB pixels, `rgb`
/// row-major (3 bytes per pixel).
std::string encodePng(int width, int height, const std::vector<uint8_t> &rgb);

/// (step, loss) points.
using Curve = std::vector<std::pair<double, double>>;

/// Draws the two curves and writes the PNG to `path` atomically (temporary
/// file and rename); throws std::runtime_error naming the file on failure.
void plotLossCurves(const std::string &path, const Curve &train,
                    const Curve &validation, int width = 640, int height = 400);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_PLOT_H
