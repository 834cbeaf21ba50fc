// The data pipeline's arithmetic, shared by the CPU loops (cpp/backend/cpu/cpu_data.cpp, the
// DataLoader's host thread) and the CUDA kernels (cuda/kernels/data.cu), so a batch is the same
// numbers on every device:
//   - the epoch permutation: index i gets the 64-bit key permutation_key(seed, base + i) and the
//     indices are sorted stably by key (a stable sort on the CPU, CUB's stable radix sort on CUDA);
//   - the augmentation: per sample one Philox block gives an angle and a shift, and each output
//     pixel is a bilinear sample of the source image rounded to u8 (zeros outside the image);
//   - the normalisation: float((v / 255 - mean) / std), computed in f64.
// The CUDA file is compiled with -fmad=false so the f64 arithmetic below rounds as the host's does.
#pragma once
#include <cmath>
#include <cstdint>

#include "cpp/backend/host_device.h"
#include "cpp/backend/philox.h"

namespace ember::data_math {

// 64 random bits of one Philox block: the sort key of one index of the permutation.
EMBER_HOST_DEVICE uint64_t permutation_key(uint64_t seed, uint64_t counter) {
  const philox::U32x4 r = philox::philox4x32_10(seed, counter);
  return (static_cast<uint64_t>(r.x[0]) << 32) | r.x[1];
}

// One sample's warp: output pixel q reads source pixel R^-1 (q - centre - shift) + centre.
// (No member initializers: a kernel keeps one in __shared__ memory, which must be trivially constructible.)
struct Warp {
  double c, s;    // cos and sin of the angle
  double dx, dy;  // shift in pixels (right, down)
};

EMBER_HOST_DEVICE Warp make_warp(double degrees, double dx, double dy) {
  const double rad = degrees * (3.14159265358979323846 / 180.0);
  // cos(0) and sin(0) are exactly 1 and 0, so an unrotated shift by whole pixels copies pixels.
  return Warp{cos(rad), sin(rad), dx, dy};
}

// A sample's random warp: angle uniform in [-max_degrees, max_degrees], dx and dy uniform in
// [-max_shift, max_shift], from the three first words of one Philox block.
EMBER_HOST_DEVICE Warp random_warp(uint64_t seed, uint64_t counter, double max_degrees, double max_shift) {
  const philox::U32x4 r = philox::philox4x32_10(seed, counter);
  const double k = 1.0 / 4294967296.0;
  return make_warp((2.0 * (r.x[0] * k) - 1.0) * max_degrees, (2.0 * (r.x[1] * k) - 1.0) * max_shift,
                   (2.0 * (r.x[2] * k) - 1.0) * max_shift);
}

EMBER_HOST_DEVICE double clamp_to(double v, double lo, double hi) { return v < lo ? lo : (v > hi ? hi : v); }

EMBER_HOST_DEVICE double pixel_or_zero(const uint8_t* src, int64_t rows, int64_t cols, int64_t y, int64_t x) {
  return (y >= 0 && y < rows && x >= 0 && x < cols) ? static_cast<double>(src[y * cols + x]) : 0.0;
}

// Output pixel (y, x) of the warped u8 image `src` [rows, cols]: bilinear, rounded half away from
// zero to u8. With y pointing down, R = [[c, s], [-s, c]] turns counter-clockwise on screen; its
// inverse maps an output pixel back to where it came from.
EMBER_HOST_DEVICE uint8_t warp_pixel(const uint8_t* src, int64_t rows, int64_t cols, int64_t y, int64_t x,
                                     const Warp& w) {
  const double cx = 0.5 * static_cast<double>(cols - 1), cy = 0.5 * static_cast<double>(rows - 1);
  const double ux = static_cast<double>(x) - cx - w.dx, uy = static_cast<double>(y) - cy - w.dy;
  // Clamped to just outside the image (where every tap reads 0) so the casts below stay in range.
  const double sx = clamp_to(w.c * ux - w.s * uy + cx, -2.0, static_cast<double>(cols) + 1.0);
  const double sy = clamp_to(w.s * ux + w.c * uy + cy, -2.0, static_cast<double>(rows) + 1.0);
  const double fx0 = floor(sx), fy0 = floor(sy);
  const double fx = sx - fx0, fy = sy - fy0;
  const auto x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
  const double v = (1 - fy) * ((1 - fx) * pixel_or_zero(src, rows, cols, y0, x0) +
                               fx * pixel_or_zero(src, rows, cols, y0, x0 + 1)) +
                   fy * ((1 - fx) * pixel_or_zero(src, rows, cols, y0 + 1, x0) +
                         fx * pixel_or_zero(src, rows, cols, y0 + 1, x0 + 1));
  // v is in [0, 255] up to rounding; +0.5 and truncation round half up, as lround does for v >= 0.
  return static_cast<uint8_t>(clamp_to(v, 0.0, 255.0) + 0.5);
}

// The network's input for a u8 pixel.
EMBER_HOST_DEVICE float normalize_pixel(uint8_t v, double mean, double std) {
  return static_cast<float>((static_cast<double>(v) / 255.0 - mean) / std);
}

}  // namespace ember::data_math
