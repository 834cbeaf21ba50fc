// The convolution rows of the op table: conv2d with strides, explicit / same (odd and even totals) /
// valid padding, dilation, groups (depthwise too), 1x1 kernels and strided inputs;
// conv_transpose2d with output_padding, groups and dilation; conv1d. Their references are direct
// loops: conv2d and conv1d gather each output from its window, conv_transpose2d scatters each
// input into the output (a different loop from the library's, which runs conv2d's data gradient).
#include "ops/op_table_conv.h"

namespace ember::test {
namespace {

InputSpec in(Shape s, double lo = -1.0, double hi = 1.0) { return InputSpec{std::move(s), lo, hi}; }
using V = const std::vector<Tensor>&;

std::vector<double> host(const Tensor& t) { return t.contiguous().to_vector<double>(); }

struct Geo {
  Int2 stride{1, 1};
  Int2 pad_begin{0, 0};
  Int2 pad_end{0, 0};
  Int2 dilation{1, 1};
  int64_t groups = 1;
};

// PyTorch's padding="same": total dilation * (k - 1) per dim, half (rounded down) before.
Geo same(const Tensor& w, Int2 dilation, int64_t groups = 1) {
  Geo g;
  g.dilation = dilation;
  g.groups = groups;
  for (int d = 0; d < 2; ++d) {
    const int64_t total = dilation[d] * (w.size(2 + d) - 1);
    g.pad_begin[d] = total / 2;
    g.pad_end[d] = total - total / 2;
  }
  return g;
}

Geo sym(Int2 stride, Int2 pad, Int2 dilation = {1, 1}, int64_t groups = 1) { return {stride, pad, pad, dilation, groups}; }

// y[n, co, oh, ow] = b[co] + sum over ci of co's group, i, j of
//   x[n, ci, oh * s - pad_begin + i * d, ow * s - pad_begin + j * d] * w[co, ci - group start, i, j]
// (zero outside x), with H_out = (H + pad_begin + pad_end - d (k - 1) - 1) / s + 1.
Tensor conv2d_ref(const Tensor& xt, const Tensor& wt, const Tensor* bt, const Geo& g) {
  const std::vector<double> x = host(xt), w = host(wt), b = bt ? host(*bt) : std::vector<double>();
  const int64_t N = xt.size(0), C = xt.size(1), H = xt.size(2), W = xt.size(3);
  const int64_t CO = wt.size(0), CIG = wt.size(1), KH = wt.size(2), KW = wt.size(3);
  const int64_t COG = CO / g.groups;
  const int64_t HO = (H + g.pad_begin[0] + g.pad_end[0] - g.dilation[0] * (KH - 1) - 1) / g.stride[0] + 1;
  const int64_t WO = (W + g.pad_begin[1] + g.pad_end[1] - g.dilation[1] * (KW - 1) - 1) / g.stride[1] + 1;
  std::vector<double> y(static_cast<size_t>(N * CO * HO * WO));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < CO; ++co)
      for (int64_t oh = 0; oh < HO; ++oh)
        for (int64_t ow = 0; ow < WO; ++ow) {
          double s = bt ? b[co] : 0.0;
          for (int64_t c = 0; c < CIG; ++c)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t ih = oh * g.stride[0] - g.pad_begin[0] + i * g.dilation[0];
                const int64_t iw = ow * g.stride[1] - g.pad_begin[1] + j * g.dilation[1];
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t ci = (co / COG) * CIG + c;
                s += x[((n * C + ci) * H + ih) * W + iw] * w[((co * CIG + c) * KH + i) * KW + j];
              }
          y[((n * CO + co) * HO + oh) * WO + ow] = s;
        }
  return from_vector<double>(y, {N, CO, HO, WO});
}

// Each x[n, ci, ih, iw] adds x * w[ci, col, i, j] to y[n, group * C_out/g + col, ih * s - p + i * d,
// iw * s - p + j * d]; H_out = (H - 1) s - 2 p + d (k - 1) + output_padding + 1.
Tensor conv_transpose2d_ref(const Tensor& xt, const Tensor& wt, const Tensor* bt, Int2 stride, Int2 pad, Int2 out_pad,
                            Int2 dil, int64_t groups) {
  const std::vector<double> x = host(xt), w = host(wt), b = bt ? host(*bt) : std::vector<double>();
  const int64_t N = xt.size(0), C = xt.size(1), H = xt.size(2), W = xt.size(3);
  const int64_t COG = wt.size(1), KH = wt.size(2), KW = wt.size(3), CO = COG * groups, CIG = C / groups;
  const int64_t HO = (H - 1) * stride[0] - 2 * pad[0] + dil[0] * (KH - 1) + out_pad[0] + 1;
  const int64_t WO = (W - 1) * stride[1] - 2 * pad[1] + dil[1] * (KW - 1) + out_pad[1] + 1;
  std::vector<double> y(static_cast<size_t>(N * CO * HO * WO));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < CO; ++co)
      for (int64_t p = 0; p < HO * WO; ++p) y[(n * CO + co) * HO * WO + p] = bt ? b[co] : 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < C; ++ci)
      for (int64_t ih = 0; ih < H; ++ih)
        for (int64_t iw = 0; iw < W; ++iw)
          for (int64_t col = 0; col < COG; ++col)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t oh = ih * stride[0] - pad[0] + i * dil[0], ow = iw * stride[1] - pad[1] + j * dil[1];
                if (oh < 0 || oh >= HO || ow < 0 || ow >= WO) continue;
                const int64_t co = (ci / CIG) * COG + col;
                y[((n * CO + co) * HO + oh) * WO + ow] +=
                    x[((n * C + ci) * H + ih) * W + iw] * w[((ci * COG + col) * KH + i) * KW + j];
              }
  return from_vector<double>(y, {N, CO, HO, WO});
}

// conv1d as its own loop: y[n, co, o] = b[co] + sum x[n, ci, o * s - pb + k * d] w[co, c, k].
Tensor conv1d_ref(const Tensor& xt, const Tensor& wt, const Tensor* bt, int64_t stride, int64_t pb, int64_t pe,
                  int64_t dil, int64_t groups) {
  const std::vector<double> x = host(xt), w = host(wt), b = bt ? host(*bt) : std::vector<double>();
  const int64_t N = xt.size(0), C = xt.size(1), L = xt.size(2), CO = wt.size(0), CIG = wt.size(1), K = wt.size(2);
  const int64_t LO = (L + pb + pe - dil * (K - 1) - 1) / stride + 1, COG = CO / groups;
  std::vector<double> y(static_cast<size_t>(N * CO * LO));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < CO; ++co)
      for (int64_t o = 0; o < LO; ++o) {
        double s = bt ? b[co] : 0.0;
        for (int64_t c = 0; c < CIG; ++c)
          for (int64_t k = 0; k < K; ++k) {
            const int64_t l = o * stride - pb + k * dil;
            if (l >= 0 && l < L) s += x[(n * C + (co / COG) * CIG + c) * L + l] * w[(co * CIG + c) * K + k];
          }
        y[(n * CO + co) * LO + o] = s;
      }
  return from_vector<double>(y, {N, CO, LO});
}

}  // namespace

std::vector<OpRow> conv_op_rows() {
  return {
      {"conv2d", {in({2, 3, 5, 5}), in({4, 3, 3, 3}), in({4})}, [](V x) { return conv2d(x[0], x[1], x[2]); }},
      {"conv2d_stride_padding", {in({1, 2, 6, 5}), in({3, 2, 3, 2}), in({3})},
       [](V x) { return conv2d(x[0], x[1], x[2], {.stride = {2, 1}, .padding = {1, 2}}); }},
      {"conv2d_dilation_no_bias", {in({1, 2, 7, 6}), in({2, 2, 2, 3})},
       [](V x) { return conv2d(x[0], x[1], {}, {.padding = {1, 0}, .dilation = {2, 1}}); }},
      {"conv2d_groups_strided", {in({2, 4, 5, 5}), in({6, 2, 3, 3}), in({6})},
       [](V x) { return conv2d(x[0], x[1], x[2], {.stride = {2, 2}, .padding = {1, 1}, .groups = 2}); }},
      {"conv2d_depthwise", {in({1, 3, 6, 6}), in({3, 1, 3, 3}), in({3})},
       [](V x) { return conv2d(x[0], x[1], x[2], {.padding = {1, 1}, .groups = 3}); }},
      // Kernel 2 x 4: totals 1 and 3, both odd: one more row / column at the bottom / right.
      {"conv2d_same_odd", {in({1, 2, 5, 6}), in({2, 2, 2, 4}), in({2})},
       [](V x) { return conv2d(x[0], x[1], x[2], {.padding_mode = ConvPadding::Same}); }},
      // Kernel 3 x 2, dilation 2 x 1: totals 4 (even) and 1 (odd).
      {"conv2d_same_dilated", {in({2, 2, 5, 4}), in({3, 2, 3, 2})},
       [](V x) { return conv2d(x[0], x[1], {}, {.dilation = {2, 1}, .padding_mode = ConvPadding::Same}); }},
      {"conv2d_valid", {in({1, 2, 5, 4}), in({2, 2, 3, 3}), in({2})},
       [](V x) { return conv2d(x[0], x[1], x[2], {.padding_mode = ConvPadding::Valid}); }},
      {"conv2d_pointwise", {in({2, 3, 4, 4}), in({5, 3, 1, 1}), in({5})},
       [](V x) { return conv2d(x[0], x[1], x[2]); }},
      {"conv2d_pointwise_strided", {in({2, 3, 5, 5}), in({4, 3, 1, 1})},
       [](V x) { return conv2d(x[0], x[1], {}, {.stride = {2, 2}}); }},
      {"conv2d_transposed_input", {in({1, 2, 4, 5}), in({3, 2, 2, 2}), in({3})},
       [](V x) { return conv2d(x[0].transpose(2, 3), x[1], x[2], {.padding = {1, 0}}); }},
      {"conv_transpose2d", {in({2, 3, 3, 4}), in({3, 2, 3, 3}), in({2})},
       [](V x) { return conv_transpose2d(x[0], x[1], x[2]); }},
      {"conv_transpose2d_stride_output_padding", {in({1, 2, 3, 4}), in({2, 3, 3, 2}), in({3})},
       [](V x) {
         return conv_transpose2d(x[0], x[1], x[2], {.stride = {2, 3}, .padding = {1, 0}, .output_padding = {1, 2}});
       }},
      // output_padding 1 in H with stride 1 is allowed by dilation 2: the extra row is reached by no window.
      {"conv_transpose2d_groups_dilation", {in({1, 4, 3, 3}), in({4, 1, 2, 3}), in({2})},
       [](V x) {
         return conv_transpose2d(x[0], x[1], x[2],
                                 {.stride = {1, 2}, .padding = {1, 1}, .output_padding = {1, 1}, .dilation = {2, 1},
                                  .groups = 2});
       }},
      {"conv1d", {in({2, 3, 7}), in({4, 3, 3}), in({4})},
       [](V x) { return conv1d(x[0], x[1], x[2], {.stride = 2, .padding = 1}); }},
      {"conv1d_same_dilated_groups", {in({1, 4, 8}), in({4, 2, 4})},
       [](V x) { return conv1d(x[0], x[1], {}, {.dilation = 3, .groups = 2, .padding_mode = ConvPadding::Same}); }},
  };
}

std::map<std::string, TensorRef> conv_references() {
  return {
      {"conv2d", [](V x) { return conv2d_ref(x[0], x[1], &x[2], {}); }},
      {"conv2d_stride_padding", [](V x) { return conv2d_ref(x[0], x[1], &x[2], sym({2, 1}, {1, 2})); }},
      {"conv2d_dilation_no_bias", [](V x) { return conv2d_ref(x[0], x[1], nullptr, sym({1, 1}, {1, 0}, {2, 1})); }},
      {"conv2d_groups_strided", [](V x) { return conv2d_ref(x[0], x[1], &x[2], sym({2, 2}, {1, 1}, {1, 1}, 2)); }},
      {"conv2d_depthwise", [](V x) { return conv2d_ref(x[0], x[1], &x[2], sym({1, 1}, {1, 1}, {1, 1}, 3)); }},
      {"conv2d_same_odd", [](V x) {
         // totals 1 and 3: pad_begin {0, 1}, pad_end {1, 2}
         return conv2d_ref(x[0], x[1], &x[2], Geo{{1, 1}, {0, 1}, {1, 2}, {1, 1}, 1});
       }},
      {"conv2d_same_dilated", [](V x) { return conv2d_ref(x[0], x[1], nullptr, same(x[1], {2, 1})); }},
      {"conv2d_valid", [](V x) { return conv2d_ref(x[0], x[1], &x[2], {}); }},
      {"conv2d_pointwise", [](V x) { return conv2d_ref(x[0], x[1], &x[2], {}); }},
      {"conv2d_pointwise_strided", [](V x) { return conv2d_ref(x[0], x[1], nullptr, sym({2, 2}, {0, 0})); }},
      {"conv2d_transposed_input", [](V x) {
         // x [1, 2, 4, 5] read as [1, 2, 5, 4]: xt[n, c, i, j] = x[n, c, j, i]
         const std::vector<double> v = host(x[0]);
         std::vector<double> t(v.size());
         for (int64_t c = 0; c < 2; ++c)
           for (int64_t i = 0; i < 5; ++i)
             for (int64_t j = 0; j < 4; ++j) t[(c * 5 + i) * 4 + j] = v[(c * 4 + j) * 5 + i];
         return conv2d_ref(from_vector<double>(t, {1, 2, 5, 4}), x[1], &x[2], sym({1, 1}, {1, 0}));
       }},
      {"conv_transpose2d", [](V x) { return conv_transpose2d_ref(x[0], x[1], &x[2], {1, 1}, {0, 0}, {0, 0}, {1, 1}, 1); }},
      {"conv_transpose2d_stride_output_padding",
       [](V x) { return conv_transpose2d_ref(x[0], x[1], &x[2], {2, 3}, {1, 0}, {1, 2}, {1, 1}, 1); }},
      {"conv_transpose2d_groups_dilation",
       [](V x) { return conv_transpose2d_ref(x[0], x[1], &x[2], {1, 2}, {1, 1}, {1, 1}, {2, 1}, 2); }},
      {"conv1d", [](V x) { return conv1d_ref(x[0], x[1], &x[2], 2, 1, 1, 1, 1); }},
      // total 3 * 3 = 9 (odd): 4 before, 5 after
      {"conv1d_same_dilated_groups", [](V x) { return conv1d_ref(x[0], x[1], nullptr, 1, 4, 5, 3, 2); }},
  };
}

}  // namespace ember::test
