// 2-D pooling: max (with indices), avg, adaptive avg and adaptive max, through the backend's one
// pool primitive (PoolParams) forward and backward. Output sizes follow PyTorch's rule, computed
// without overflow: floor((in + 2 pad - dilation (k - 1) - 1 [+ stride - 1 with ceil_mode]) /
// stride) + 1, less one when ceil_mode would start the last window past the input and its left
// padding.
#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;

namespace {

std::string int2_str(Int2 v) { return detail::str_cat("(", v[0], ", ", v[1], ")"); }

// x as [N, C, H, W] (a 3-D [C, H, W] input gains a batch of 1, removed again by the caller).
Tensor as_4d(const Tensor& x, const char* op) {
  ops::check_defined(x, op);
  ops::check_floating(x, op);
  EMBER_CHECK(x.dim() == 3 || x.dim() == 4, op, ": expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got shape ",
              shape_str(x.shape()));
  EMBER_CHECK(x.size(-1) > 0 && x.size(-2) > 0, op, ": input ", shape_str(x.shape()),
              " has an empty plane; height and width must be at least 1");
  return x.dim() == 3 ? x.unsqueeze(0) : x;
}

int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  using W = __int128;
  const W num = W(in) + 2 * W(p) - W(d) * (k - 1) - 1 + (ceil_mode ? W(s) - 1 : 0);
  W out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil_mode && out >= 1 && (out - 1) * s >= W(in) + p) --out;
  return out > W(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(out);
}

struct Geometry {
  PoolParams p;
  int64_t oh = 0, ow = 0;
};

Geometry regular_geometry(const Tensor& x, PoolKind kind, Int2 k, std::optional<Int2> stride_opt, Int2 pad,
                          Int2 dil, bool ceil_mode, const char* op) {
  const Int2 stride = stride_opt ? *stride_opt : k;
  for (int a = 0; a < 2; ++a) {
    EMBER_CHECK(k[a] > 0, op, ": kernel_size must be positive, got ", int2_str(k));
    EMBER_CHECK(stride[a] > 0, op, ": stride must be positive, got ", int2_str(stride));
    EMBER_CHECK(dil[a] > 0, op, ": dilation must be positive, got ", int2_str(dil));
    EMBER_CHECK(pad[a] >= 0 && pad[a] <= k[a] / 2, op, ": padding ", int2_str(pad),
                " must be non-negative and at most half the kernel size ", int2_str(k),
                "; use a larger kernel or less padding");
    // Bounds that keep every window computation far inside int64_t.
    EMBER_CHECK(k[a] <= (int64_t(1) << 31) && stride[a] <= (int64_t(1) << 31) && dil[a] <= (int64_t(1) << 31), op,
                ": kernel_size ", int2_str(k), ", stride ", int2_str(stride), " or dilation ", int2_str(dil),
                " is larger than 2^31");
  }
  Geometry g;
  g.p.kind = kind;
  for (int a = 0; a < 2; ++a) {
    g.p.kernel[a] = k[a];
    g.p.stride[a] = stride[a];
    g.p.padding[a] = pad[a];
    g.p.dilation[a] = dil[a];
  }
  const int64_t h = x.size(2), w = x.size(3);
  g.oh = pool_out_size(h, k[0], stride[0], pad[0], dil[0], ceil_mode);
  g.ow = pool_out_size(w, k[1], stride[1], pad[1], dil[1], ceil_mode);
  EMBER_CHECK(g.oh >= 1 && g.ow >= 1, op, ": input ", shape_str(x.shape()), " padded by ", int2_str(pad),
              " is too small for kernel_size ", int2_str(k), " with dilation ", int2_str(dil), " and stride ",
              int2_str(stride), ": the output would be ", g.oh, "x", g.ow,
              "; use a smaller kernel or dilation, more padding, or a larger input");
  return g;
}

Geometry adaptive_geometry(PoolKind kind, Int2 output_size, const char* op) {
  EMBER_CHECK(output_size[0] >= 1 && output_size[1] >= 1, op, ": output_size must be at least 1x1, got ",
              int2_str(output_size));
  Geometry g;
  g.p.kind = kind;
  g.p.adaptive = true;
  g.oh = output_size[0];
  g.ow = output_size[1];
  return g;
}

// Runs the pool primitive on x4 [N, C, H, W] and records its backward. Returns (out, indices);
// indices are defined for Max. bf16 / f16: the CPU backend pools them itself (f32 arithmetic per
// plane, each output rounded once); the CUDA kernels take f32/f64, so there the pool runs on an f32
// copy and its output is cast back (autograd through both casts) -- the same values: a max takes
// one of its inputs, and an average or a gradient sum is rounded once either way.
std::pair<Tensor, Tensor> run_pool(const char* name, const Tensor& x4, const Geometry& g) {
  if ((x4.dtype() == DType::BF16 || x4.dtype() == DType::F16) && !x4.device().is_cpu()) {
    auto [out, idx] = run_pool(name, x4.to(DType::F32), g);
    return {out.to(x4.dtype()), idx};
  }
  Tensor x = x4.detach().contiguous();
  Tensor out = make_empty({x.size(0), x.size(1), g.oh, g.ow}, x.dtype(), x.device());
  Tensor idx = g.p.kind == PoolKind::Max ? make_empty(out.shape(), DType::I64, x.device()) : Tensor();
  ops::backend_of(x).pool2d_forward(out, idx, x, g.p);
  if (!any_requires_grad({&x4})) return {out, idx};
  const Shape in_shape = x.shape();
  const PoolParams p = g.p;
  const Tensor saved_idx = idx;  // I64, never modified after this
  record(name, {x4}, {out}, [=](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
    const Tensor go = grads[0].contiguous();
    Tensor gi = make_empty(in_shape, go.dtype(), go.device());
    ops::backend_of(go).pool2d_backward(gi, go, saved_idx, p);
    return {gi};
  });
  return {out, idx};
}

std::pair<Tensor, Tensor> back_to_rank(std::pair<Tensor, Tensor> r, int64_t rank) {
  if (rank == 4) return r;
  return {r.first.squeeze(0), r.second.defined() ? r.second.squeeze(0) : Tensor()};
}

}  // namespace

std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x_in, const MaxPool2dArgs& args) {
  const Tensor x = ops::autocast_input(x_in, "max_pool2d");
  profile::Range range("max_pool2d");
  const Tensor x4 = as_4d(x, "max_pool2d");
  const Geometry g = regular_geometry(x4, PoolKind::Max, args.kernel_size, args.stride, args.padding, args.dilation,
                                      args.ceil_mode, "max_pool2d");
  return back_to_rank(run_pool("max_pool2d", x4, g), x.dim());
}

Tensor max_pool2d(const Tensor& x, const MaxPool2dArgs& args) { return max_pool2d_with_indices(x, args).first; }

Tensor avg_pool2d(const Tensor& x_in, const AvgPool2dArgs& args) {
  const Tensor x = ops::autocast_input(x_in, "avg_pool2d");
  profile::Range range("avg_pool2d");
  const Tensor x4 = as_4d(x, "avg_pool2d");
  EMBER_CHECK(!args.divisor_override || *args.divisor_override > 0,
              "avg_pool2d: divisor_override must be positive, got ", args.divisor_override.value_or(0));
  Geometry g = regular_geometry(x4, PoolKind::Avg, args.kernel_size, args.stride, args.padding, {1, 1},
                                args.ceil_mode, "avg_pool2d");
  g.p.count_include_pad = args.count_include_pad;
  g.p.divisor_override = args.divisor_override.value_or(0);
  return back_to_rank(run_pool("avg_pool2d", x4, g), x.dim()).first;
}

Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size) {
  profile::Range range("adaptive_avg_pool2d");
  const Tensor x4 = as_4d(x, "adaptive_avg_pool2d");
  const Geometry g = adaptive_geometry(PoolKind::Avg, output_size, "adaptive_avg_pool2d");
  return back_to_rank(run_pool("adaptive_avg_pool2d", x4, g), x.dim()).first;
}

std::pair<Tensor, Tensor> adaptive_max_pool2d_with_indices(const Tensor& x, Int2 output_size) {
  profile::Range range("adaptive_max_pool2d");
  const Tensor x4 = as_4d(x, "adaptive_max_pool2d");
  const Geometry g = adaptive_geometry(PoolKind::Max, output_size, "adaptive_max_pool2d");
  return back_to_rank(run_pool("adaptive_max_pool2d", x4, g), x.dim());
}

Tensor adaptive_max_pool2d(const Tensor& x, Int2 output_size) {
  return adaptive_max_pool2d_with_indices(x, output_size).first;
}

}  // namespace ember
