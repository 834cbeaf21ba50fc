// The arithmetic of pooling windows, normalisation and resampling, written once for the CPU loops,
// the CUDA kernels and the op layer (which computes resampling indices on the host).
#pragma once
#include <cmath>
#include <cstdint>

#include "cpp/backend/backend.h"
#include "cpp/backend/host_device.h"

namespace ember::math {

// The taps of one pooling window along one axis: input positions start, start + step, ... < end.
// The op layer's shape checks guarantee at least one tap (start < end).
struct PoolTaps {
  int64_t start, end, step;
};

// A regular window (PyTorch's max/avg pool): output position o covers o * stride - pad +
// i * dilation for i in [0, kernel), less the positions outside [0, in).
EMBER_HOST_DEVICE PoolTaps pool_taps(int64_t o, int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                     int64_t dilation) {
  int64_t start = o * stride - pad;
  const int64_t last = start + (kernel - 1) * dilation;
  if (start < 0) start += ((-start + dilation - 1) / dilation) * dilation;
  return {start, last + 1 < in ? last + 1 : in, dilation};
}

// An adaptive window (PyTorch's adaptive pools): [floor(o * in / out), ceil((o + 1) * in / out)).
EMBER_HOST_DEVICE PoolTaps adaptive_taps(int64_t o, int64_t in, int64_t out) {
  return {(o * in) / out, ((o + 1) * in + out - 1) / out, 1};
}

EMBER_HOST_DEVICE int64_t tap_count(PoolTaps t) { return t.end <= t.start ? 0 : (t.end - t.start + t.step - 1) / t.step; }

// avg_pool's window size counting the padding (count_include_pad): the window clipped to the
// padded input [-pad, in + pad), as PyTorch.
EMBER_HOST_DEVICE int64_t avg_window_with_pad(int64_t o, int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  const int64_t start = o * stride - pad;
  const int64_t end = start + kernel < in + pad ? start + kernel : in + pad;
  return end - start;
}

// The taps of output position o along `axis` (0 rows, 1 columns) of a pool with params p.
EMBER_HOST_DEVICE PoolTaps pool_axis_taps(const PoolParams& p, int axis, int64_t o, int64_t in, int64_t out) {
  if (p.adaptive) return adaptive_taps(o, in, out);
  return pool_taps(o, in, p.kernel[axis], p.stride[axis], p.padding[axis],
                   p.kind == PoolKind::Max ? p.dilation[axis] : 1);
}

// Avg's divisor of output (i, j) of an h x w plane, whose clipped windows are th and tw.
EMBER_HOST_DEVICE int64_t avg_pool_divisor(const PoolParams& p, int64_t h, int64_t w, int64_t i, int64_t j,
                                           PoolTaps th, PoolTaps tw) {
  if (!p.adaptive && p.divisor_override > 0) return p.divisor_override;
  if (!p.adaptive && p.count_include_pad)
    return avg_window_with_pad(i, h, p.kernel[0], p.stride[0], p.padding[0]) *
           avg_window_with_pad(j, w, p.kernel[1], p.stride[1], p.padding[1]);
  return tap_count(th) * tap_count(tw);
}

// max pool's comparison: a larger value or a NaN takes the window (PyTorch's rule, so a NaN
// propagates and the first of equal maxima keeps its index).
// (A non-short-circuit `|`, so that the CPU loop compiles to selects, not branches.)
template <class T>
EMBER_HOST_DEVICE bool max_pool_takes(T v, T best) {
  return (v > best) | (v != v);
}

// ---- normalisation: y = (x - mean) * rstd * weight + bias ----

// 1 / sqrt(biased variance + eps), in the variance's precision on both compilers (an unqualified
// sqrt of a float would be the C library's double one on the host).
EMBER_HOST_DEVICE float rstd_of(float biased_var, double eps) {
  return 1.0f / ::sqrtf(biased_var + static_cast<float>(eps));
}
EMBER_HOST_DEVICE double rstd_of(double biased_var, double eps) { return 1.0 / ::sqrt(biased_var + eps); }

// Running statistic update (PyTorch's batch norm): (1 - momentum) * r + momentum * stat.
template <class T>
EMBER_HOST_DEVICE T running_update(T r, T stat, double momentum) {
  return static_cast<T>((1.0 - momentum) * r + momentum * stat);
}

// The unbiased variance from the biased one over `count` values (count > 1: the op layer checks).
template <class T>
EMBER_HOST_DEVICE T unbiased_var(T biased, int64_t count) {
  return biased * static_cast<T>(count) / static_cast<T>(count - 1);
}

// d x of a normalisation over a group of m values, with gh = dy * weight, xh = (x - mean) * rstd,
// sum_gh = sum(gh) and sum_gh_xh = sum(gh * xh) over the group:
//   dx = rstd * (gh - sum_gh / m - xh * sum_gh_xh / m).
template <class T>
EMBER_HOST_DEVICE T norm_grad_input(T gh, T xh, T rstd, T mean_gh, T mean_gh_xh) {
  return rstd * (gh - mean_gh - xh * mean_gh_xh);
}

// ---- resampling ----

// The source coordinate of output position o along an axis resized from `in` to `out`
// (PyTorch's area_pixel_compute_source_index for bilinear). align_corners maps the corner
// pixels' centres onto each other; otherwise the pixel areas line up (half-pixel offsets,
// clamped at 0). `scale` is in / out, or the reciprocal of a given scale factor.
EMBER_HOST_DEVICE double bilinear_source(int64_t o, int64_t in, int64_t out, double scale, bool align_corners) {
  if (align_corners) return out > 1 ? static_cast<double>(o) * static_cast<double>(in - 1) / static_cast<double>(out - 1) : 0.0;
  const double src = scale * (static_cast<double>(o) + 0.5) - 0.5;
  return src < 0.0 ? 0.0 : src;
}

// The two source taps of a bilinear axis and the weight of the second one.
struct LinearTaps {
  int64_t i0, i1;
  double w1;
};
EMBER_HOST_DEVICE LinearTaps linear_taps(double src, int64_t in) {
  int64_t i0 = static_cast<int64_t>(src);
  if (i0 > in - 1) i0 = in - 1;
  const int64_t i1 = i0 + 1 < in ? i0 + 1 : i0;
  return {i0, i1, src - static_cast<double>(i0)};
}

// Nearest (PyTorch's legacy "nearest"): o when the sizes match, o / 2 when doubling, else
// floor(o * scale) clamped to in - 1, in float as PyTorch computes it (so the same pixel wins at a
// rounding edge). `scale` is in / out, or the reciprocal of a given scale factor.
EMBER_HOST_DEVICE int64_t nearest_source(int64_t o, int64_t in, int64_t out, float scale) {
  if (out == in) return o;
  if (out == 2 * in) return o >> 1;
  const int64_t i = static_cast<int64_t>(::floorf(static_cast<float>(o) * scale));
  return i < in - 1 ? i : in - 1;
}

}  // namespace ember::math
