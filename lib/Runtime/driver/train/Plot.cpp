//===- Plot.cpp - Loss curves as a PNG image ------------------------------===//

#include "driver/train/Plot.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <unistd.h>

namespace moe::driver {

namespace {

void appendBigEndian(std::string &out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out += static_cast<char>((value >> shift) & 0xff);
}

void appendChunk(std::string &out, const char type[4],
                 const std::string &data) {
  appendBigEndian(out, static_cast<uint32_t>(data.size()));
  std::string body = std::string(type, 4) + data;
  out += body;
  appendBigEndian(
      out, crc32(reinterpret_cast<const uint8_t *>(body.data()), body.size()));
}

struct Colour {
  uint8_t r, g, b;
};

const Colour kAxis{0, 0, 0}, kGrid{225, 225, 225}, kTrain{31, 119, 180},
    kValidation{255, 127, 14};

class Canvas {
public:
  Canvas(int width, int height)
      : width_(width), height_(height),
        pixels_(static_cast<size_t>(width) * height * 3, 255) {}

  void set(int x, int y, Colour c) {
    if (x < 0 || y < 0 || x >= width_ || y >= height_)
      return;
    uint8_t *p = &pixels_[(static_cast<size_t>(y) * width_ + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }

  /// Bresenham, `thickness` pixels wide (vertically and horizontally).
  void line(int x0, int y0, int x1, int y1, Colour c, int thickness = 1) {
    int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
      for (int i = 0; i < thickness; ++i)
        for (int j = 0; j < thickness; ++j)
          set(x0 + i - thickness / 2, y0 + j - thickness / 2, c);
      if (x0 == x1 && y0 == y1)
        break;
      int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  const std::vector<uint8_t> &pixels() const { return pixels_; }

private:
  int width_, height_;
  std::vector<uint8_t> pixels_;
};

void writeFileAtomically(const std::string &path, const std::string &bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE *f = std::fopen(tmp.c_str(), "wb");
  if (!f)
    throw std::runtime_error(path + ": cannot write the plot (" +
                             std::strerror(errno) + ")");
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write the plot (" +
                             std::strerror(errno) + ")");
  }
}

} // namespace

uint32_t crc32(const uint8_t *data, size_t size) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k)
        c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < size; ++i)
    c = table[(c ^ data[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t adler32(const uint8_t *data, size_t size) {
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < size; ++i) {
    a = (a + data[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

std::string encodePng(int width, int height, const std::vector<uint8_t> &rgb) {
  if (width < 1 || height < 1 ||
      rgb.size() != static_cast<size_t>(width) * height * 3)
    throw std::invalid_argument("encodePng: " + std::to_string(rgb.size()) +
                                " bytes for " + std::to_string(width) + "x" +
                                std::to_string(height) + " RGB pixels");
  // Scanlines, each led by filter type 0 (none).
  std::string raw;
  raw.reserve(static_cast<size_t>(height) * (width * 3 + 1));
  for (int y = 0; y < height; ++y) {
    raw += '\0';
    raw.append(reinterpret_cast<const char *>(&rgb[y * width * 3]),
               static_cast<size_t>(width) * 3);
  }
  // zlib: header (deflate, 32K window, no dictionary, fastest), stored
  // blocks of at most 65535 bytes, Adler-32 of the raw data.
  std::string zlib = {'\x78', '\x01'};
  for (size_t pos = 0; pos < raw.size() || pos == 0;) {
    size_t n = std::min<size_t>(65535, raw.size() - pos);
    bool last = pos + n == raw.size();
    zlib += static_cast<char>(last ? 1 : 0);
    zlib += static_cast<char>(n & 0xff);
    zlib += static_cast<char>(n >> 8);
    zlib += static_cast<char>(~n & 0xff);
    zlib += static_cast<char>((~n >> 8) & 0xff);
    zlib.append(raw, pos, n);
    pos += n;
    if (last)
      break;
  }
  appendBigEndian(
      zlib, adler32(reinterpret_cast<const uint8_t *>(raw.data()), raw.size()));

  std::string png = "\x89PNG\r\n\x1a\n";
  std::string header;
  appendBigEndian(header, static_cast<uint32_t>(width));
  appendBigEndian(header, static_cast<uint32_t>(height));
  header += {'\x08', '\x02', '\0', '\0', '\0'}; // 8-bit RGB, no interlace
  appendChunk(png, "IHDR", header);
  appendChunk(png, "IDAT", zlib);
  appendChunk(png, "IEND", "");
  return png;
}

void plotLossCurves(const std::string &path, const Curve &train,
                    const Curve &validation, int width, int height) {
  Canvas canvas(width, height);
  const int left = 50, right = width - 20, top = 20, bottom = height - 40;

  double xMax = 1, yMin = INFINITY, yMax = -INFINITY;
  for (const Curve *curve : {&train, &validation})
    for (auto [x, y] : *curve) {
      xMax = std::max(xMax, x);
      if (std::isfinite(y)) {
        yMin = std::min(yMin, y);
        yMax = std::max(yMax, y);
      }
    }
  if (!(yMin <= yMax)) {
    yMin = 0;
    yMax = 1;
  }
  double pad = std::max(0.05 * (yMax - yMin), 1e-6);
  yMin -= pad;
  yMax += pad;
  auto px = [&](double x) {
    return left + static_cast<int>(std::lround(x / xMax * (right - left)));
  };
  auto py = [&](double y) {
    return bottom - static_cast<int>(std::lround((y - yMin) / (yMax - yMin) *
                                                 (bottom - top)));
  };

  // Light grid lines and tick marks at fifths of each axis.
  for (int i = 0; i <= 5; ++i) {
    int x = left + i * (right - left) / 5, y = bottom - i * (bottom - top) / 5;
    canvas.line(x, top, x, bottom, kGrid);
    canvas.line(left, y, right, y, kGrid);
    canvas.line(x, bottom, x, bottom + 6, kAxis);
    canvas.line(left - 6, y, left, y, kAxis);
  }
  canvas.line(left, top, left, bottom, kAxis);
  canvas.line(left, bottom, right, bottom, kAxis);

  auto draw = [&](const Curve &curve, Colour colour) {
    for (size_t i = 0; i < curve.size(); ++i) {
      if (!std::isfinite(curve[i].second))
        continue;
      int x = px(curve[i].first), y = py(curve[i].second);
      if (i > 0 && std::isfinite(curve[i - 1].second))
        canvas.line(px(curve[i - 1].first), py(curve[i - 1].second), x, y,
                    colour, 2);
      else
        canvas.line(x, y, x, y, colour, 3);
    }
  };
  draw(train, kTrain);
  draw(validation, kValidation);

  // Legend, top right: train above, validation below.
  canvas.line(right - 60, top + 10, right - 20, top + 10, kTrain, 3);
  canvas.line(right - 60, top + 25, right - 20, top + 25, kValidation, 3);

  writeFileAtomically(path, encodePng(width, height, canvas.pixels()));
}

} // namespace moe::driver
