// The data pipeline's arithmetic, shared by the CPU loops (cpp/backend/cpu/cpu_data.cpp, the
// DataLoader's host thread) and the CUDA kernels (cuda/kernels/data.cu), so a batch is the same
// numbers on every device:
//   - the epoch permutation: index i gets the 64-bit key permutation_key(seed, base + i) and the
//     indices are sorted stably by key (a stable sort on the CPU, CUB's stable radix sort on CUDA);
//   - the augmentation: per sample one Philox block gives an angle, a shift and a scale, a second
//     (only when crop padding or flipping is on) the crop offsets and the flip, and each output
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

// One sample's warp. Output pixel q = (x, y) first mirrors when flipped, x' = flip ? cols - 1 - x : x,
// then reads source pixel R^-1 ((x', y) - centre - shift) / scale + centre: the image is scaled by
// `scale` and turned by R about its centre, then shifted, then mirrored left-right.
// (No member initializers: a kernel keeps one in __shared__ memory, which must be trivially constructible.)
struct Warp {
  double c, s;       // cos and sin of the angle
  double dx, dy;     // shift in pixels (right, down)
  double inv_scale;  // 1 / scale (exactly 1 unscaled, so the arithmetic is then the unscaled one's)
  bool flip;         // mirror left-right last
};

EMBER_HOST_DEVICE Warp make_warp(double degrees, double dx, double dy, double scale = 1.0, bool flip = false) {
  const double rad = degrees * (3.14159265358979323846 / 180.0);
  // cos(0) and sin(0) are exactly 1 and 0, so an unrotated shift by whole pixels copies pixels.
  return Warp{cos(rad), sin(rad), dx, dy, 1.0 / scale, flip};
}

// Second Philox stream of a sample (crop offsets, flip): the same counter under another key, so the
// first block's words, and with them every earlier augmentation, stay as they were.
constexpr uint64_t kAugmentExtraKey = 0x9E3779B97F4A7C15ull;

// A sample's random warp: angle uniform in [-max_degrees, max_degrees], dx and dy uniform in
// [-max_shift, max_shift] and scale uniform in [1 - max_scale, 1 + max_scale], from the four words of
// one Philox block (seed, counter). Random crop with padding P (pad every side with P zero pixels,
// crop rows x cols at offsets ox, oy uniform in {0, ..., 2P}) is the whole-pixel shift (P - ox,
// P - oy) added to dx, dy; the flip is a fair coin. Both come from the block (seed ^ kAugmentExtraKey,
// counter): ox = floor(u0 (2P + 1) / 2^32), oy likewise from u1, flip = u2 < 2^31.
EMBER_HOST_DEVICE Warp random_warp(uint64_t seed, uint64_t counter, double max_degrees, double max_shift,
                                   double max_scale = 0.0, int64_t crop_padding = 0, bool hflip = false) {
  const philox::U32x4 r = philox::philox4x32_10(seed, counter);
  const double k = 1.0 / 4294967296.0;
  double dx = (2.0 * (r.x[1] * k) - 1.0) * max_shift, dy = (2.0 * (r.x[2] * k) - 1.0) * max_shift;
  const double scale = max_scale > 0 ? 1.0 + (2.0 * (r.x[3] * k) - 1.0) * max_scale : 1.0;
  bool flip = false;
  if (crop_padding > 0 || hflip) {
    const philox::U32x4 e = philox::philox4x32_10(seed ^ kAugmentExtraKey, counter);
    if (crop_padding > 0) {
      const auto span = static_cast<uint64_t>(2 * crop_padding + 1);
      dx += static_cast<double>(crop_padding - static_cast<int64_t>((e.x[0] * span) >> 32));
      dy += static_cast<double>(crop_padding - static_cast<int64_t>((e.x[1] * span) >> 32));
    }
    flip = hflip && e.x[2] < 0x80000000u;
  }
  return make_warp((2.0 * (r.x[0] * k) - 1.0) * max_degrees, dx, dy, scale, flip);
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
  const double xm = w.flip ? static_cast<double>(cols - 1 - x) : static_cast<double>(x);
  const double ux = (xm - cx - w.dx) * w.inv_scale, uy = (static_cast<double>(y) - cy - w.dy) * w.inv_scale;
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
