// Op-table rows for pooling, normalisation and resampling, with their naive references: explicit
// pooling windows, normalisation by its formula, padding and resampling by their index rules, each
// a plain loop over host values written here (not through the ops under test).
#include <cmath>
#include <limits>

#include "cpp/backend/philox.h"
#include "ops/op_table.h"

namespace ember::test {
namespace {

using V = const std::vector<Tensor>&;

InputSpec in(Shape s, double lo = -1.0, double hi = 1.0) { return InputSpec{std::move(s), lo, hi}; }
// Distinct values (no ties: max pooling is differentiable there) with gaps far above the
// finite-difference step.
InputSpec distinct(Shape s) {
  return InputSpec{s, 0, 0, true, [s](DType dt) {
                     const int64_t n = shape_numel(s);
                     std::vector<double> v(static_cast<size_t>(n));
                     for (int64_t i = 0; i < n; ++i) v[i] = static_cast<double>((i * 53) % n) / n - 0.5;
                     return from_vector<double>(v, s).to(dt);
                   }};
}
// A fixed, non-differentiable buffer (running statistics) of `values`.
InputSpec buffer(std::vector<double> values) {
  const Shape s{static_cast<int64_t>(values.size())};
  return InputSpec{s, 0, 0, false, [values, s](DType dt) { return from_vector<double>(values, s).to(dt); }};
}

// ---- host arrays ----
struct H {
  Shape s;
  std::vector<double> v;
};
H host(const Tensor& t) { return {t.shape(), t.contiguous().to_vector<double>()}; }
Tensor tensor(const H& h) { return from_vector<double>(h.v, h.s); }

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// PyTorch's pooling output size, written out as its documentation states it.
int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  int64_t o = floor_div(in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0), s) + 1;
  if (ceil_mode && (o - 1) * s >= in + p) --o;
  return o;
}

struct PoolRef {
  Int2 k, s, p, d;
  bool ceil = false;
  bool max = true;
  bool include_pad = true;
  int64_t divisor = 0;
};

// Every output visits its kernel_size taps at o * stride - pad + i * dilation and keeps the ones
// inside the input.
H pool_ref(const H& x, const PoolRef& r) {
  const int64_t N = x.s[0], C = x.s[1], Hh = x.s[2], W = x.s[3];
  const int64_t oh = out_size(Hh, r.k[0], r.s[0], r.p[0], r.d[0], r.ceil);
  const int64_t ow = out_size(W, r.k[1], r.s[1], r.p[1], r.d[1], r.ceil);
  H y{{N, C, oh, ow}, {}};
  for (int64_t pl = 0; pl < N * C; ++pl)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        int64_t count = 0;
        for (int64_t a = 0; a < r.k[0]; ++a)
          for (int64_t b = 0; b < r.k[1]; ++b) {
            const int64_t h = i * r.s[0] - r.p[0] + a * r.d[0], w = j * r.s[1] - r.p[1] + b * r.d[1];
            if (h < 0 || h >= Hh || w < 0 || w >= W) continue;
            const double v = x.v[(pl * Hh + h) * W + w];
            best = std::max(best, v);
            sum += v;
            ++count;
          }
        if (r.max) {
          y.v.push_back(best);
          continue;
        }
        // count_include_pad: the window clipped to the padded input [-pad, in + pad).
        const int64_t hs = i * r.s[0] - r.p[0], ws = j * r.s[1] - r.p[1];
        const int64_t padded = (std::min(hs + r.k[0], Hh + r.p[0]) - hs) * (std::min(ws + r.k[1], W + r.p[1]) - ws);
        const int64_t div = r.divisor > 0 ? r.divisor : (r.include_pad ? padded : count);
        y.v.push_back(sum / static_cast<double>(div));
      }
  return y;
}

H adaptive_ref(const H& x, Int2 out, bool max) {
  const int64_t N = x.s[0], C = x.s[1], Hh = x.s[2], W = x.s[3];
  H y{{N, C, out[0], out[1]}, {}};
  for (int64_t pl = 0; pl < N * C; ++pl)
    for (int64_t i = 0; i < out[0]; ++i)
      for (int64_t j = 0; j < out[1]; ++j) {
        const int64_t h0 = static_cast<int64_t>(std::floor(static_cast<double>(i * Hh) / out[0]));
        const int64_t h1 = static_cast<int64_t>(std::ceil(static_cast<double>((i + 1) * Hh) / out[0]));
        const int64_t w0 = static_cast<int64_t>(std::floor(static_cast<double>(j * W) / out[1]));
        const int64_t w1 = static_cast<int64_t>(std::ceil(static_cast<double>((j + 1) * W) / out[1]));
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            best = std::max(best, x.v[(pl * Hh + h) * W + w]);
            sum += x.v[(pl * Hh + h) * W + w];
          }
        y.v.push_back(max ? best : sum / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
  return y;
}

// Normalises x viewed as [n, g, m]: each (n, g) slice of m values by its mean and biased variance,
// then scales element (n, c, s) by weight[c] and shifts by bias[c] (c = channel index, s inner).
H normalise_ref(const H& x, int64_t n, int64_t groups, int64_t c, int64_t s, const H* w, const H* b, double eps) {
  H y{x.s, std::vector<double>(x.v.size())};
  const int64_t m = (c / groups) * s;
  for (int64_t i = 0; i < n * groups; ++i) {
    double mu = 0, var = 0;
    for (int64_t k = 0; k < m; ++k) mu += x.v[i * m + k];
    mu /= m;
    for (int64_t k = 0; k < m; ++k) var += (x.v[i * m + k] - mu) * (x.v[i * m + k] - mu);
    var /= m;
    for (int64_t k = 0; k < m; ++k) {
      const int64_t at = i * m + k, ch = (at / s) % c;
      y.v[at] = (x.v[at] - mu) / std::sqrt(var + eps) * (w ? w->v[ch] : 1.0) + (b ? b->v[ch] : 0.0);
    }
  }
  return y;
}

// Batch norm: statistics per channel over the batch and the spatial dims (running stats given:
// those instead).
H batch_norm_ref(const H& x, const H* w, const H* b, const H* rm, const H* rv, double eps) {
  const int64_t n = x.s[0], c = x.s[1], s = static_cast<int64_t>(x.v.size()) / (n * c);
  H y{x.s, std::vector<double>(x.v.size())};
  for (int64_t ch = 0; ch < c; ++ch) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < s; ++k) mu += x.v[(i * c + ch) * s + k];
    mu /= n * s;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < s; ++k) var += std::pow(x.v[(i * c + ch) * s + k] - mu, 2);
    var /= n * s;
    if (rm) mu = rm->v[ch], var = rv->v[ch];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < s; ++k) {
        const int64_t at = (i * c + ch) * s + k;
        y.v[at] = (x.v[at] - mu) / std::sqrt(var + eps) * (w ? w->v[ch] : 1.0) + (b ? b->v[ch] : 0.0);
      }
  }
  return y;
}

// pad by explicit index rules over the last two dims: ({left, right, top, bottom}).
H pad_ref(const H& x, std::array<int64_t, 4> p, PadMode mode, double value) {
  const int64_t N = x.s[0], C = x.s[1], Hh = x.s[2], W = x.s[3];
  const int64_t oh = Hh + p[2] + p[3], ow = W + p[0] + p[1];
  H y{{N, C, oh, ow}, {}};
  auto map = [&](int64_t j, int64_t n) -> int64_t {
    if (mode == PadMode::Reflect) return j < 0 ? -j : (j >= n ? 2 * (n - 1) - j : j);
    if (mode == PadMode::Replicate) return std::clamp<int64_t>(j, 0, n - 1);
    return j;
  };
  for (int64_t pl = 0; pl < N * C; ++pl)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t h = map(i - p[2], Hh), w = map(j - p[0], W);
        y.v.push_back(h < 0 || h >= Hh || w < 0 || w >= W ? value : x.v[(pl * Hh + h) * W + w]);
      }
  return y;
}

// Bilinear by its 2-D formula: the four neighbours of the source point, weighted by area.
H bilinear_ref(const H& x, Int2 out, bool align_corners) {
  const int64_t N = x.s[0], C = x.s[1], Hh = x.s[2], W = x.s[3];
  auto src = [&](int64_t o, int64_t n, int64_t on) {
    if (align_corners) return on > 1 ? o * static_cast<double>(n - 1) / (on - 1) : 0.0;
    return std::max(0.0, (o + 0.5) * static_cast<double>(n) / on - 0.5);
  };
  H y{{N, C, out[0], out[1]}, {}};
  for (int64_t pl = 0; pl < N * C; ++pl)
    for (int64_t i = 0; i < out[0]; ++i)
      for (int64_t j = 0; j < out[1]; ++j) {
        const double sh = src(i, Hh, out[0]), sw = src(j, W, out[1]);
        const int64_t h0 = static_cast<int64_t>(sh), w0 = static_cast<int64_t>(sw);
        const int64_t h1 = std::min(h0 + 1, Hh - 1), w1 = std::min(w0 + 1, W - 1);
        const double lh = sh - h0, lw = sw - w0;
        auto at = [&](int64_t h, int64_t w) { return x.v[(pl * Hh + h) * W + w]; };
        y.v.push_back((1 - lh) * ((1 - lw) * at(h0, w0) + lw * at(h0, w1)) +
                      lh * ((1 - lw) * at(h1, w0) + lw * at(h1, w1)));
      }
  return y;
}

H nearest_ref(const H& x, Int2 out) {
  const int64_t N = x.s[0], C = x.s[1], Hh = x.s[2], W = x.s[3];
  H y{{N, C, out[0], out[1]}, {}};
  for (int64_t pl = 0; pl < N * C; ++pl)
    for (int64_t i = 0; i < out[0]; ++i)
      for (int64_t j = 0; j < out[1]; ++j) {
        const int64_t h = std::min<int64_t>(i * Hh / out[0], Hh - 1), w = std::min<int64_t>(j * W / out[1], W - 1);
        y.v.push_back(x.v[(pl * Hh + h) * W + w]);
      }
  return y;
}

using Ref = std::function<H(const std::vector<H>&)>;
using Fn = std::function<Tensor(V)>;

struct Row {
  OpRow row;
  Ref ref;
};

std::vector<Row> rows() {
  const PoolRef k2{{2, 2}, {2, 2}, {0, 0}, {1, 1}};
  const PoolRef k3s2p1d2{{3, 3}, {2, 2}, {1, 1}, {2, 2}};
  const PoolRef ceil3{{3, 2}, {2, 2}, {1, 1}, {1, 1}, true};
  const PoolRef asym{{3, 2}, {1, 2}, {1, 0}, {1, 2}};
  auto avg = [](PoolRef r, bool include_pad, int64_t divisor = 0) {
    r.max = false, r.include_pad = include_pad, r.divisor = divisor;
    return r;
  };
  auto max_args = [](const PoolRef& r) {
    return MaxPool2dArgs{.kernel_size = r.k, .stride = r.s, .padding = r.p, .dilation = r.d, .ceil_mode = r.ceil};
  };
  auto avg_args = [](const PoolRef& r) {
    return AvgPool2dArgs{.kernel_size = r.k,
                         .stride = r.s,
                         .padding = r.p,
                         .ceil_mode = r.ceil,
                         .count_include_pad = r.include_pad,
                         .divisor_override = r.divisor > 0 ? std::optional<int64_t>(r.divisor) : std::nullopt};
  };
  auto maxrow = [&](std::string name, Shape s, PoolRef r) {
    return Row{{name, {distinct(s)}, [a = max_args(r)](V x) { return max_pool2d(x[0], a); }},
               [r](const std::vector<H>& x) { return pool_ref(x[0], r); }};
  };
  auto avgrow = [&](std::string name, Shape s, PoolRef r) {
    return Row{{name, {in(s)}, [a = avg_args(r)](V x) { return avg_pool2d(x[0], a); }},
               [r](const std::vector<H>& x) { return pool_ref(x[0], r); }};
  };
  std::vector<Row> t = {
      maxrow("max_pool2d_2x2", {2, 3, 6, 6}, k2),
      maxrow("max_pool2d_stride_pad_dilation", {1, 2, 8, 7}, k3s2p1d2),
      maxrow("max_pool2d_ceil_mode", {1, 2, 6, 7}, ceil3),
      maxrow("max_pool2d_asymmetric", {1, 2, 6, 7}, asym),
      maxrow("max_pool2d_ceil_dilation", {1, 1, 9, 8}, PoolRef{{2, 3}, {2, 3}, {1, 1}, {2, 1}, true}),
      {{"max_pool2d_3d_input", {distinct({2, 5, 4})}, [](V x) { return max_pool2d(x[0], {.kernel_size = {2, 2}}); }},
       [](const std::vector<H>& x) {
         H y = pool_ref(H{{1, 2, 5, 4}, x[0].v}, PoolRef{{2, 2}, {2, 2}, {0, 0}, {1, 1}});
         y.s = {2, 2, 2};
         return y;
       }},
      avgrow("avg_pool2d_2x2", {2, 3, 6, 6}, avg(k2, true)),
      avgrow("avg_pool2d_pad_include", {1, 2, 7, 6}, avg(PoolRef{{3, 3}, {2, 2}, {1, 1}, {1, 1}}, true)),
      avgrow("avg_pool2d_pad_exclude", {1, 2, 7, 6}, avg(PoolRef{{3, 3}, {2, 2}, {1, 1}, {1, 1}}, false)),
      avgrow("avg_pool2d_ceil_include_pad", {1, 2, 6, 7}, avg(ceil3, true)),
      avgrow("avg_pool2d_ceil_exclude_pad", {1, 2, 6, 7}, avg(ceil3, false)),
      avgrow("avg_pool2d_divisor_override", {1, 2, 5, 5}, avg(PoolRef{{2, 3}, {1, 2}, {1, 1}, {1, 1}}, true, 4)),
      {{"adaptive_avg_pool2d", {in({2, 3, 7, 5})}, [](V x) { return adaptive_avg_pool2d(x[0], {3, 2}); }},
       [](const std::vector<H>& x) { return adaptive_ref(x[0], {3, 2}, false); }},
      {{"adaptive_avg_pool2d_global", {in({2, 3, 4, 5})}, [](V x) { return adaptive_avg_pool2d(x[0], {1, 1}); }},
       [](const std::vector<H>& x) { return adaptive_ref(x[0], {1, 1}, false); }},
      {{"adaptive_avg_pool2d_upsample", {in({1, 2, 3, 2})}, [](V x) { return adaptive_avg_pool2d(x[0], {4, 5}); }},
       [](const std::vector<H>& x) { return adaptive_ref(x[0], {4, 5}, false); }},
      {{"adaptive_max_pool2d", {distinct({1, 2, 7, 5})}, [](V x) { return adaptive_max_pool2d(x[0], {3, 4}); }},
       [](const std::vector<H>& x) { return adaptive_ref(x[0], {3, 4}, true); }},
      // Batch norm in training: fresh running statistics each call (their update has its own test).
      {{"batch_norm_train_affine", {in({4, 3, 3, 2}), in({3}, 0.5, 1.5), in({3})},
        [](V x) {
          Tensor rm = zeros({3}, x[0].dtype()), rv = ones({3}, x[0].dtype());
          return batch_norm(x[0], rm, rv, x[1], x[2], true, 0.1, 1e-5);
        }},
       [](const std::vector<H>& x) { return batch_norm_ref(x[0], &x[1], &x[2], nullptr, nullptr, 1e-5); }},
      {{"batch_norm_train_2d_plain", {in({5, 3})},
        [](V x) { return batch_norm(x[0], Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-3); }},
       [](const std::vector<H>& x) { return batch_norm_ref(x[0], nullptr, nullptr, nullptr, nullptr, 1e-3); }},
      {{"batch_norm_eval", {in({3, 3, 2, 2}), buffer({0.2, -0.1, 0.4}), buffer({0.5, 1.3, 0.8}), in({3}, 0.5, 1.5),
                            in({3})},
        [](V x) { return batch_norm(x[0], x[1], x[2], x[3], x[4], false, 0.1, 1e-5); }},
       [](const std::vector<H>& x) { return batch_norm_ref(x[0], &x[3], &x[4], &x[1], &x[2], 1e-5); }},
      {{"layer_norm_last_dim", {in({3, 4, 5}), in({5}, 0.5, 1.5), in({5})},
        [](V x) { return layer_norm(x[0], {5}, x[1], x[2]); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 12, 1, 5, 1, &x[1], &x[2], 1e-5); }},
      {{"layer_norm_two_dims", {in({2, 3, 4}), in({3, 4}, 0.5, 1.5), in({3, 4})},
        [](V x) { return layer_norm(x[0], {3, 4}, x[1], x[2], 1e-3); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 2, 1, 12, 1, &x[1], &x[2], 1e-3); }},
      {{"layer_norm_plain", {in({4, 6})}, [](V x) { return layer_norm(x[0], {6}); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 4, 1, 6, 1, nullptr, nullptr, 1e-5); }},
      {{"group_norm_affine", {in({2, 6, 3, 2}), in({6}, 0.5, 1.5), in({6})},
        [](V x) { return group_norm(x[0], 3, x[1], x[2]); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 2, 3, 6, 6, &x[1], &x[2], 1e-5); }},
      {{"group_norm_one_group_plain", {in({2, 4, 5})}, [](V x) { return group_norm(x[0], 1); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 2, 1, 4, 5, nullptr, nullptr, 1e-5); }},
      {{"group_norm_group_per_channel", {in({2, 3, 2, 3}), in({3}, 0.5, 1.5), in({3})},
        [](V x) { return group_norm(x[0], 3, x[1], x[2], 1e-4); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 2, 3, 3, 6, &x[1], &x[2], 1e-4); }},
      {{"instance_norm_affine", {in({2, 3, 4, 3}), in({3}, 0.5, 1.5), in({3})},
        [](V x) { return instance_norm(x[0], Tensor(), Tensor(), x[1], x[2]); }},
       [](const std::vector<H>& x) { return normalise_ref(x[0], 2, 3, 3, 12, &x[1], &x[2], 1e-5); }},
      {{"instance_norm_eval", {in({2, 3, 5}), buffer({0.1, 0.0, -0.3}), buffer({0.9, 1.1, 0.6})},
        [](V x) { return instance_norm(x[0], x[1], x[2], Tensor(), Tensor(), false); }},
       [](const std::vector<H>& x) { return batch_norm_ref(x[0], nullptr, nullptr, &x[1], &x[2], 1e-5); }},
      // Dropout2d with a fixed generator: the reference draws the same Philox numbers itself, one per
      // (sample, channel), and keeps the planes whose draw is below 1 - p.
      {{"dropout2d", {in({3, 4, 2, 2})},
        [](V x) {
          Generator g(5);
          return dropout2d(x[0], 0.5, true, &g);
        }},
       [](const std::vector<H>& x) {
         H y = x[0];
         for (size_t i = 0; i < y.v.size(); ++i)
           y.v[i] = philox::uniform(5, i / 4) < 0.5 ? y.v[i] / 0.5 : 0.0;
         return y;
       }},
      {{"pad_constant", {in({1, 2, 3, 4})}, [](V x) { return pad(x[0], {1, 2, 2, 0}, PadMode::Constant, 0.5); }},
       [](const std::vector<H>& x) { return pad_ref(x[0], {1, 2, 2, 0}, PadMode::Constant, 0.5); }},
      {{"pad_constant_crop", {in({1, 2, 4, 5})}, [](V x) { return pad(x[0], {-1, 2, 1, -2}); }},
       [](const std::vector<H>& x) {
         // Crop one column on the left and two rows at the bottom, then pad zeros.
         H c{{1, 2, 2, 4}, {}};
         for (int64_t pl = 0; pl < 2; ++pl)
           for (int64_t i = 0; i < 2; ++i)
             for (int64_t j = 1; j < 5; ++j) c.v.push_back(x[0].v[(pl * 4 + i) * 5 + j]);
         return pad_ref(c, {0, 2, 1, 0}, PadMode::Constant, 0.0);
       }},
      {{"pad_reflect", {in({2, 2, 4, 5})}, [](V x) { return pad(x[0], {2, 4, 3, 1}, PadMode::Reflect); }},
       [](const std::vector<H>& x) { return pad_ref(x[0], {2, 4, 3, 1}, PadMode::Reflect, 0); }},
      {{"pad_replicate", {in({1, 2, 3, 4})}, [](V x) { return pad(x[0], {3, 1, 0, 2}, PadMode::Replicate); }},
       [](const std::vector<H>& x) { return pad_ref(x[0], {3, 1, 0, 2}, PadMode::Replicate, 0); }},
      {{"interpolate_nearest", {in({1, 2, 3, 4})},
        [](V x) { return interpolate(x[0], {.size = Int2{7, 5}}); }},
       [](const std::vector<H>& x) { return nearest_ref(x[0], {7, 5}); }},
      {{"interpolate_bilinear", {in({1, 2, 3, 4})},
        [](V x) { return interpolate(x[0], {.size = Int2{5, 7}, .mode = InterpolateMode::Bilinear}); }},
       [](const std::vector<H>& x) { return bilinear_ref(x[0], {5, 7}, false); }},
      {{"interpolate_bilinear_align_corners", {in({1, 2, 4, 3})},
        [](V x) {
          return interpolate(x[0], {.size = Int2{3, 6}, .mode = InterpolateMode::Bilinear, .align_corners = true});
        }},
       [](const std::vector<H>& x) { return bilinear_ref(x[0], {3, 6}, true); }},
  };
  return t;
}

}  // namespace

std::vector<OpRow> poolnorm_op_rows() {
  std::vector<OpRow> r;
  for (Row& row : rows()) r.push_back(std::move(row.row));
  return r;
}

std::map<std::string, TensorRef> poolnorm_references() {
  std::map<std::string, TensorRef> m;
  for (Row& row : rows()) {
    m[row.row.name] = [ref = row.ref](const std::vector<Tensor>& xs) {
      std::vector<H> hs;
      for (const Tensor& x : xs) hs.push_back(host(x));
      return tensor(ref(hs));
    };
  }
  return m;
}

}  // namespace ember::test
