// CUDA backend: the conv primitives through cuDNN 9's convolution API (the handle is the device context's: cuda::dnn_handle in cuda/context.h).
//
// Each (direction, shape, geometry, dtype, device, determinism, TF32) gets a Plan: its tensor,
// filter and convolution descriptors and the algorithm cuDNN's heuristic (the _v7 queries: host
// only, nothing runs on the device and nothing synchronises) ranks first among those that fit
// the request. Plans are built once and kept for the process, so a steady training loop creates no
// descriptor and searches nothing; each call takes its workspace from the device's stream-ordered
// pool (cuda::Scratch) and queues the convolution on the compute stream.
//
// bf16/f16 (autocast's convolutions): tensors and filters in the 16-bit type, the convolution's
// compute type f32 (cuDNN's BFLOAT16_CONFIG / PSEUDO_HALF_CONFIG: f32 accumulation, one rounding of
// each output), tensor-core math; alpha/beta are floats. The bias is added, and its gradient summed
// in f32, by ember's own elementwise and reduction primitives (one rounding each), as PyTorch adds
// the bias after cuDNN's convolution; the plan cache is keyed by dtype like every other property.
//
// cuDNN pads symmetrically. ember's ConvParams pads each side on its own (padding="same" with an
// odd total; conv_transpose2d's output_padding computes fewer windows than the padding allows):
// where symmetric padding with pad_begin does not give the same windows, cuDNN runs on a
// zero-padded copy of the input holding exactly the rows and columns the windows read, with no
// padding of its own.

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/cuda_backend.h"
#include "cuda/nvtx.h"
#include "cuda/runtime.h"
#include "ember/cuda.h"

namespace ember {
namespace cuda {
namespace {
std::atomic<bool> g_deterministic{false};
}  // namespace

void set_deterministic_algorithms(bool deterministic) { g_deterministic.store(deterministic); }
bool deterministic_algorithms() { return g_deterministic.load(); }

}  // namespace cuda

namespace {

// Workspace cap for an algorithm; the heuristic's first choice rarely needs more than a few MiB.
constexpr size_t kMaxWorkspaceBytes = size_t(1) << 30;

enum class Dir : int64_t { Forward, Data, Filter };

const char* dir_name(Dir d) {
  switch (d) {
    case Dir::Forward: return "forward";
    case Dir::Data: return "backward data";
    case Dir::Filter: return "backward filter";
  }
  return "?";
}

// The convolution's sizes, read off the tensors (x-like [N, C_in, H, W], w, y-like [N, C_out, Ho, Wo]).
struct Geometry {
  int64_t n, c_in, h, w, c_out, kh, kw, h_out, w_out;
  ConvParams p;
  // What cuDNN sees: the input itself with symmetric padding pad[], or (padded_copy) a zero-padded
  // copy [N, C_in, hb, wb] of it with no padding.
  bool padded_copy = false;
  int64_t hb = 0, wb = 0;
  int64_t pad[2] = {0, 0};
};

Geometry geometry_of(const Tensor& x_like, const Tensor& w, const Tensor& y_like, const ConvParams& p) {
  Geometry g{x_like.size(0), x_like.size(1), x_like.size(2), x_like.size(3), w.size(0), w.size(2), w.size(3),
             y_like.size(2), y_like.size(3), p};
  const int64_t in[2] = {g.h, g.w}, out[2] = {g.h_out, g.w_out}, k[2] = {g.kh, g.kw};
  int64_t extent[2];
  bool symmetric = true;
  for (int d = 0; d < 2; ++d) {
    extent[d] = p.dilation[d] * (k[d] - 1) + 1;
    const int64_t span = in[d] + 2 * p.pad_begin[d] - extent[d];
    symmetric = symmetric && span >= 0 && span / p.stride[d] + 1 == out[d];
  }
  if (symmetric) {
    g.pad[0] = p.pad_begin[0];
    g.pad[1] = p.pad_begin[1];
  } else {
    g.padded_copy = true;
    g.hb = (g.h_out - 1) * p.stride[0] + extent[0];
    g.wb = (g.w_out - 1) * p.stride[1] + extent[1];
  }
  return g;
}

int as_int(int64_t v, const Geometry& g) {
  EMBER_CHECK(v >= 0 && v <= INT_MAX, "conv2d (cuda): a size of ", v, " is above 2^31 - 1, more than cuDNN takes (input [",
              g.n, ", ", g.c_in, ", ", g.h, ", ", g.w, "]); use a smaller batch or image");
  return static_cast<int>(v);
}

// The descriptors and chosen algorithm of one direction of one convolution (owned; destroyed only
// when building it failed, since a built plan stays in the cache for the process).
struct Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int algo = 0;
  size_t workspace = 0;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (x) (void)cudnnDestroyTensorDescriptor(x);
    if (y) (void)cudnnDestroyTensorDescriptor(y);
    if (bias) (void)cudnnDestroyTensorDescriptor(bias);
    if (w) (void)cudnnDestroyFilterDescriptor(w);
    if (conv) (void)cudnnDestroyConvolutionDescriptor(conv);
  }
};

std::string geometry_str(const Geometry& g) {
  const ConvParams& p = g.p;
  return detail::str_cat("input [", g.n, ", ", g.c_in, ", ", g.h, ", ", g.w, "], weight [", g.c_out, ", ",
                         g.c_in / p.groups, ", ", g.kh, ", ", g.kw, "], output [", g.n, ", ", g.c_out, ", ", g.h_out,
                         ", ", g.w_out, "], stride [", p.stride[0], ", ", p.stride[1], "], dilation [", p.dilation[0],
                         ", ", p.dilation[1], "], groups ", p.groups);
}

// The first of cuDNN's ranked algorithms that ran the heuristic successfully, is deterministic
// when that is asked for, and needs at most kMaxWorkspaceBytes.
template <class Perf>
int pick(const std::vector<Perf>& perf, int returned, bool deterministic, Dir dir, const Geometry& g) {
  for (int i = 0; i < returned; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC) &&
        perf[i].memory <= kMaxWorkspaceBytes)
      return static_cast<int>(perf[i].algo);
  throw Error(detail::str_cat("conv2d (cuda): cuDNN has no ", deterministic ? "deterministic " : "", dir_name(dir),
                              " algorithm for ", geometry_str(g),
                              deterministic ? "; allow non-deterministic ones (cuda::set_deterministic_algorithms(false))"
                                            : "; try another shape or the CPU"));
}

std::unique_ptr<Plan> build_plan(cudnnHandle_t h, Dir dir, const Geometry& g, DType dtype, bool bias,
                                 bool deterministic, bool tf32) {
  const bool lowp = dtype == DType::BF16 || dtype == DType::F16;
  const cudnnDataType_t dt = dtype == DType::F32    ? CUDNN_DATA_FLOAT
                             : dtype == DType::F64  ? CUDNN_DATA_DOUBLE
                             : dtype == DType::BF16 ? CUDNN_DATA_BFLOAT16
                                                    : CUDNN_DATA_HALF;
  // The convolution's compute (accumulation) type: f32 for f32 and the 16-bit types, f64 for f64.
  const cudnnDataType_t compute = dtype == DType::F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  const ConvParams& p = g.p;
  auto plan = std::make_unique<Plan>();
  const int64_t xh = g.padded_copy ? g.hb : g.h, xw = g.padded_copy ? g.wb : g.w;
  EMBER_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x));
  EMBER_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, dt, as_int(g.n, g), as_int(g.c_in, g),
                                               as_int(xh, g), as_int(xw, g)));
  EMBER_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->y));
  EMBER_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, dt, as_int(g.n, g), as_int(g.c_out, g),
                                               as_int(g.h_out, g), as_int(g.w_out, g)));
  EMBER_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->w));
  EMBER_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w, dt, CUDNN_TENSOR_NCHW, as_int(g.c_out, g),
                                               as_int(g.c_in / p.groups, g), as_int(g.kh, g), as_int(g.kw, g)));
  EMBER_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan->conv));
  EMBER_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->conv, as_int(g.pad[0], g), as_int(g.pad[1], g),
                                                    as_int(p.stride[0], g), as_int(p.stride[1], g),
                                                    as_int(p.dilation[0], g), as_int(p.dilation[1], g),
                                                    CUDNN_CROSS_CORRELATION, compute));
  EMBER_CUDNN_CHECK(cudnnSetConvolutionGroupCount(plan->conv, as_int(p.groups, g)));
  // As PyTorch: FMA-only kernels for f32 unless TF32 is allowed (cuda::set_allow_tf32); tensor
  // cores for bf16/f16.
  EMBER_CUDNN_CHECK(cudnnSetConvolutionMathType(
      plan->conv, lowp ? CUDNN_TENSOR_OP_MATH : (dt == CUDNN_DATA_FLOAT && !tf32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH)));
  if (bias && !lowp) {
    EMBER_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->bias));
    EMBER_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->bias, CUDNN_TENSOR_NCHW, dt, 1, as_int(g.c_out, g), 1, 1));
  }
  int on = 0, oc = 0, oh = 0, ow = 0;
  EMBER_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &on, &oc, &oh, &ow));
  EMBER_CHECK(on == g.n && oc == g.c_out && oh == g.h_out && ow == g.w_out, "conv2d (cuda): cuDNN computes output [",
              on, ", ", oc, ", ", oh, ", ", ow, "] for ", geometry_str(g), "; this is a bug in ember's conv geometry");
  int count = 0, returned = 0;
  switch (dir) {
    case Dir::Forward: {
      EMBER_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(count, 1)));
      EMBER_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, plan->x, plan->w, plan->conv, plan->y, count,
                                                               &returned, perf.data()));
      plan->algo = pick(perf, returned, deterministic, dir, g);
      EMBER_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(
          h, plan->x, plan->w, plan->conv, plan->y, static_cast<cudnnConvolutionFwdAlgo_t>(plan->algo), &plan->workspace));
      break;
    }
    case Dir::Data: {
      EMBER_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(std::max(count, 1)));
      EMBER_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, plan->w, plan->y, plan->conv, plan->x, count,
                                                                    &returned, perf.data()));
      plan->algo = pick(perf, returned, deterministic, dir, g);
      EMBER_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
          h, plan->w, plan->y, plan->conv, plan->x, static_cast<cudnnConvolutionBwdDataAlgo_t>(plan->algo),
          &plan->workspace));
      break;
    }
    case Dir::Filter: {
      EMBER_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<size_t>(std::max(count, 1)));
      EMBER_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, plan->x, plan->y, plan->conv, plan->w, count,
                                                                      &returned, perf.data()));
      plan->algo = pick(perf, returned, deterministic, dir, g);
      EMBER_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
          h, plan->x, plan->y, plan->conv, plan->w, static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan->algo),
          &plan->workspace));
      break;
    }
  }
  return plan;
}

using PlanKey = std::array<int64_t, 25>;

// The cached plan for this call (built on first use; never removed, so the pointer stays valid).
const Plan& plan_for(cudnnHandle_t h, Dir dir, const Geometry& g, DType dtype, int device, bool bias) {
  static std::mutex mutex;
  static std::map<PlanKey, std::unique_ptr<Plan>> cache;
  const bool deterministic = cuda::deterministic_algorithms(), tf32 = cuda::allow_tf32();
  const ConvParams& p = g.p;
  const PlanKey key{static_cast<int64_t>(dir), device, static_cast<int64_t>(dtype), deterministic, tf32, bias,
                    g.n, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.h_out, g.w_out, p.stride[0], p.stride[1],
                    p.pad_begin[0], p.pad_begin[1], p.pad_end[0], p.pad_end[1], p.dilation[0], p.dilation[1],
                    p.groups, 0};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, build_plan(h, dir, g, dtype, bias, deterministic, tf32)).first;
  return *it->second;
}

// alpha = 1, beta = 0 (and 1, for adding the bias) in the scaling type cuDNN reads for the dtype:
// double for f64, float for f32, bf16 and f16.
struct Scale {
  float f[2] = {1.0f, 0.0f};
  double d[2] = {1.0, 0.0};
  const void* one(DType dt) const { return dt != DType::F64 ? static_cast<const void*>(&f[0]) : &d[0]; }
  const void* zero(DType dt) const { return dt != DType::F64 ? static_cast<const void*>(&f[1]) : &d[1]; }
};

bool is_lowp(DType dt) { return dt == DType::BF16 || dt == DType::F16; }

void check_conv_args(const Tensor& t, const char* primitive) {
  EMBER_CHECK(t.device().is_cuda(), "cuda backend: ", primitive, " got a tensor on ", t.device().str(),
              "; every tensor of an op must be on the same CUDA device");
  EMBER_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64 || is_lowp(t.dtype()), "cuda backend: ", primitive,
              " takes f32, f64, bf16 or f16, got ", dtype_name(t.dtype()));
}

// [N, C, H, W] view of bias [C] (strides 0 except the channel's), for adding it to contiguous y.
Tensor bias_view(const Tensor& bias, const Tensor& y) {
  return make_view(bias, y.shape(), {0, bias.stride(0), 0, 0}, bias.offset());
}

// The [N, C, h, w] window of contiguous NCHW `t` starting at row r0, column c0 (a view).
Tensor window(const Tensor& t, int64_t r0, int64_t c0, int64_t h, int64_t w) {
  return make_view(t, {t.size(0), t.size(1), h, w}, t.strides(), t.offset() + r0 * t.stride(2) + c0 * t.stride(3));
}

// The rows/columns of the real input that the padded copy holds: input [0, eh) x [0, ew) sits at
// the copy's [pad_begin, pad_begin + eh) x [pad_begin, pad_begin + ew).
std::pair<int64_t, int64_t> held_extent(const Geometry& g) {
  return {std::min(g.h, g.hb - g.p.pad_begin[0]), std::min(g.w, g.wb - g.p.pad_begin[1])};
}

}  // namespace

// ---- convolution (conv primitives block) ----

void CudaBackend::conv2d_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                                 const ConvParams& p) {
  check_conv_args(y, "conv2d_forward");
  if (y.numel() == 0) return;
  const int dev = y.device().index;
  cuda::DeviceGuard guard(dev);
  cuda::NvtxRange range("ember::conv2d_forward");
  const Geometry g = geometry_of(x, w, y, p);
  Tensor xin = x;
  if (g.padded_copy) {
    xin = make_empty({g.n, g.c_in, g.hb, g.wb}, x.dtype(), x.device());
    fill(xin, 0.0);
    const auto [eh, ew] = held_extent(g);
    if (eh > 0 && ew > 0) copy(window(xin, p.pad_begin[0], p.pad_begin[1], eh, ew), window(x, 0, 0, eh, ew));
  }
  cudnnHandle_t h = cuda::dnn_handle(dev);
  const Plan& plan = plan_for(h, Dir::Forward, g, y.dtype(), dev, bias.defined());
  cuda::Scratch ws(plan.workspace, dev);
  const Scale s;
  const DType dt = y.dtype();
  EMBER_CUDNN_CHECK(cudnnConvolutionForward(h, s.one(dt), plan.x, xin.data_ptr(), plan.w, w.data_ptr(), plan.conv,
                                            static_cast<cudnnConvolutionFwdAlgo_t>(plan.algo), ws.as<void>(),
                                            plan.workspace, s.zero(dt), plan.y, y.data_ptr()));
  if (!bias.defined()) return;
  if (is_lowp(dt)) binary(BinaryOp::Add, y, y, bias_view(bias, y), {});  // computed in f32, rounded once
  else EMBER_CUDNN_CHECK(cudnnAddTensor(h, s.one(dt), plan.bias, bias.data_ptr(), s.one(dt), plan.y, y.data_ptr()));
}

void CudaBackend::conv2d_backward_data(const Tensor& dx, const Tensor& dy, const Tensor& w, const ConvParams& p) {
  check_conv_args(dx, "conv2d_backward_data");
  if (dx.numel() == 0) return;
  const int dev = dx.device().index;
  cuda::DeviceGuard guard(dev);
  cuda::NvtxRange range("ember::conv2d_backward_data");
  const Geometry g = geometry_of(dx, w, dy, p);
  Tensor dxc = g.padded_copy ? make_empty({g.n, g.c_in, g.hb, g.wb}, dx.dtype(), dx.device()) : dx;
  cudnnHandle_t h = cuda::dnn_handle(dev);
  const Plan& plan = plan_for(h, Dir::Data, g, dx.dtype(), dev, false);
  {
    cuda::Scratch ws(plan.workspace, dev);
    const Scale s;
    const DType dt = dx.dtype();
    EMBER_CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(dt), plan.w, w.data_ptr(), plan.y, dy.data_ptr(),
                                                   plan.conv, static_cast<cudnnConvolutionBwdDataAlgo_t>(plan.algo),
                                                   ws.as<void>(), plan.workspace, s.zero(dt), plan.x, dxc.data_ptr()));
  }
  if (!g.padded_copy) return;
  // Rows and columns of dx that no window reads get zero; the rest come from the copy's gradient.
  const auto [eh, ew] = held_extent(g);
  if (eh < g.h || ew < g.w || eh <= 0 || ew <= 0) fill(dx, 0.0);
  if (eh > 0 && ew > 0) copy(window(dx, 0, 0, eh, ew), window(dxc, p.pad_begin[0], p.pad_begin[1], eh, ew));
}

void CudaBackend::conv2d_backward_weight(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                                         const ConvParams& p) {
  check_conv_args(dw, "conv2d_backward_weight");
  if (dw.numel() == 0) return;
  const int dev = dw.device().index;
  cuda::DeviceGuard guard(dev);
  cuda::NvtxRange range("ember::conv2d_backward_weight");
  if (dy.numel() == 0) {
    fill(dw, 0.0);
    if (db.defined()) fill(db, 0.0);
    return;
  }
  const Geometry g = geometry_of(x, dw, dy, p);
  Tensor xin = x;
  if (g.padded_copy) {
    xin = make_empty({g.n, g.c_in, g.hb, g.wb}, x.dtype(), x.device());
    fill(xin, 0.0);
    const auto [eh, ew] = held_extent(g);
    if (eh > 0 && ew > 0) copy(window(xin, p.pad_begin[0], p.pad_begin[1], eh, ew), window(x, 0, 0, eh, ew));
  }
  cudnnHandle_t h = cuda::dnn_handle(dev);
  const Plan& plan = plan_for(h, Dir::Filter, g, dw.dtype(), dev, db.defined());
  cuda::Scratch ws(plan.workspace, dev);
  const Scale s;
  const DType dt = dw.dtype();
  EMBER_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, s.one(dt), plan.x, xin.data_ptr(), plan.y, dy.data_ptr(),
                                                   plan.conv, static_cast<cudnnConvolutionBwdFilterAlgo_t>(plan.algo),
                                                   ws.as<void>(), plan.workspace, s.zero(dt), plan.w, dw.data_ptr()));
  if (!db.defined()) return;
  if (is_lowp(dt)) {
    // db[c] = the sum of dy[:, c] in f32 (over H*W, then over N), rounded once into db.
    Tensor dy32 = make_empty(dy.shape(), DType::F32, dy.device());
    copy(dy32, dy);
    Tensor per_image = make_empty({g.n, g.c_out}, DType::F32, dy.device());
    reduce(ReduceOp::Sum, per_image, dy32, g.n * g.c_out, g.h_out * g.w_out, 1);
    Tensor db32 = make_empty({g.c_out}, DType::F32, dy.device());
    reduce(ReduceOp::Sum, db32, per_image, 1, g.n, g.c_out);
    copy(db, db32);
    return;
  }
  EMBER_CUDNN_CHECK(cudnnConvolutionBackwardBias(h, s.one(dt), plan.y, dy.data_ptr(), s.zero(dt), plan.bias,
                                                 db.data_ptr()));
}

// cuDNN's data and filter gradients read dy as it is: nothing to share, the two calls.
void CudaBackend::conv2d_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                                  const Tensor& x, const Tensor& w, const ConvParams& p) {
  conv2d_backward_data(dx, dy, w, p);
  conv2d_backward_weight(dw, db, dy, x, p);
}

// ---- end of the conv primitives block ----

}  // namespace ember
