// Row softmax / log-softmax forward and backward, and the fused cross-entropy forward (loss and
// logsumexp per row) and backward, each one kernel. A row with at most 1024 columns belongs to
// one warp (8 rows per block), a longer one to a block of 512 threads; a row's max and sums are
// all-reduced with shuffles (and shared memory across warps). f32 rows accumulate in float and
// f64 rows in double: the CPU sums in double, but float keeps a row's relative error near 1e-7
// for the row lengths of classifiers, well inside the f32 tolerance, at half the register cost.
#include <cmath>

#include "cpp/backend/elementwise_math.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"

namespace ember::cuda::kernels {
namespace {

constexpr int64_t kWarpRowMaxCols = 1024;
constexpr unsigned kRowsPerBlock = 8;
constexpr unsigned kBlockRowThreads = 512;

using math::exp_of;
using math::log_of;

struct MaxOp {
  // A NaN max is harmless: a NaN element makes the row's sum, and so every output, NaN anyway,
  // which is what the CPU reference produces.
  template <class A>
  __device__ A operator()(A a, A b) const {
    return b > a ? b : a;
  }
};
struct SumOp {
  template <class A>
  __device__ A operator()(A a, A b) const {
    return a + b;
  }
};

// The value of op over the row, in every thread of the row's group (a warp when blockDim.x is
// 32, else the whole block, whose blockDim.y is then 1 so the __syncthreads are uniform).
template <class A, class Op>
__device__ A row_allreduce(A v, Op op) {
  for (int d = 16; d > 0; d >>= 1) v = op(v, shfl_xor(v, d));
  if (blockDim.x == 32) return v;
  __shared__ A warp_vals[32];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the previous call's readers are done with warp_vals
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  v = warp_vals[0];
  for (unsigned w = 1; w < blockDim.x / 32; ++w) v = op(v, warp_vals[w]);
  return v;
}

__device__ __forceinline__ int64_t first_row() { return blockIdx.x * int64_t(blockDim.y) + threadIdx.y; }
__device__ __forceinline__ int64_t row_step() { return int64_t(gridDim.x) * blockDim.y; }

template <class T>
__device__ T row_max(const T* x, int64_t cols) {
  T m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = x[j] > m ? x[j] : m;
  return row_allreduce(m, MaxOp{});
}

template <class T, bool kLog>
__global__ void softmax_kernel(const T* in, T* out, int64_t rows, int64_t cols) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* x = in + r * cols;
    T* y = out + r * cols;
    const T m = row_max(x, cols);
    T s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += exp_of(x[j] - m);
    s = row_allreduce(s, SumOp{});
    if constexpr (kLog) {
      const T log_sum = log_of(s);
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[j] = math::log_softmax_element(x[j], m, log_sum);
    } else {
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[j] = exp_of(x[j] - m) / s;
    }
  }
}

template <class T, bool kLog>
__global__ void softmax_backward_kernel(const T* grad_out, const T* out, T* grad_in, int64_t rows, int64_t cols) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* g = grad_out + r * cols;
    const T* y = out + r * cols;
    T* gi = grad_in + r * cols;
    T s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += kLog ? g[j] : g[j] * y[j];
    s = row_allreduce(s, SumOp{});
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) gi[j] = kLog ? g[j] - exp_of(y[j]) * s : y[j] * (g[j] - s);
  }
}

// loss = (1 - s) (lse - x[label]) + s (lse - mean(x)), the cross-entropy against the target
// (1 - s) one-hot + s / C. The CPU throws for a label outside [0, C) that is not ignore_index;
// a kernel cannot, so that row's loss is NaN, which poisons the mean and any anomaly check.
template <class T>
__global__ void cross_entropy_forward_kernel(const T* logits, const int64_t* labels, int64_t label_stride, T* loss,
                                             T* lse, int64_t rows, int64_t C, int64_t ignore_index,
                                             double smoothing) {
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    const T* x = logits + r * C;
    const T m = row_max(x, C);
    T s = 0, xs = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      s += exp_of(x[j] - m);
      xs += x[j];
    }
    s = row_allreduce(s, SumOp{});
    xs = row_allreduce(xs, SumOp{});
    if (threadIdx.x != 0) continue;
    const double row_lse = static_cast<double>(m) + static_cast<double>(log_of(s));
    lse[r] = static_cast<T>(row_lse);
    const int64_t label = labels[r * label_stride];
    if (label == ignore_index) {
      loss[r] = T(0);
    } else if (label < 0 || label >= C) {
      loss[r] = static_cast<T>(NAN);
    } else {
      loss[r] = static_cast<T>((1.0 - smoothing) * (row_lse - static_cast<double>(x[label])) +
                               smoothing * (row_lse - static_cast<double>(xs) / static_cast<double>(C)));
    }
  }
}

// grad = (softmax(x) - target) * grad_loss[row] with softmax from the saved lse: one read of the
// logits and one write per element, no reduction.
template <class T>
__global__ void cross_entropy_backward_kernel(const T* logits, const T* grad_loss, int64_t grad_stride, const T* lse,
                                              int64_t lse_stride, const int64_t* labels, int64_t label_stride,
                                              T* grad, int64_t rows, int64_t C, int64_t ignore_index,
                                              double smoothing) {
  const T on = static_cast<T>(1.0 - smoothing), off = static_cast<T>(smoothing / static_cast<double>(C));
  for (int64_t r = first_row(); r < rows; r += row_step()) {
    T* gr = grad + r * C;
    const int64_t label = labels[r * label_stride];
    if (label == ignore_index) {
      for (int64_t j = threadIdx.x; j < C; j += blockDim.x) gr[j] = T(0);
      continue;
    }
    const T* x = logits + r * C;
    const T g = grad_loss[r * grad_stride], l = lse[r * lse_stride];
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const T target = (j == label ? on : T(0)) + off;
      gr[j] = (exp_of(x[j] - l) - target) * g;
    }
  }
}

struct RowLaunch {
  dim3 grid, block;
};

RowLaunch row_launch(int64_t rows, int64_t cols) {
  const int64_t sms = current_sm_count();
  if (cols <= kWarpRowMaxCols) {
    const int64_t blocks = std::min<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, sms * 32);
    return {dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1))), dim3(32, kRowsPerBlock)};
  }
  const int64_t blocks = std::min<int64_t>(rows, sms * 16);
  return {dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1))), dim3(kBlockRowThreads, 1)};
}

int64_t last_dim(const Tensor& t) { return t.size(t.dim() - 1); }

}  // namespace

void softmax(const Tensor& out, const Tensor& in, bool log, cudaStream_t stream) {
  const int64_t cols = last_dim(in), rows = cols == 0 ? 0 : in.numel() / cols;
  if (rows == 0) return;
  visit_floating(in.dtype(), "softmax", [&]<class T>() {
    const RowLaunch l = row_launch(rows, cols);
    if (log) softmax_kernel<T, true><<<l.grid, l.block, 0, stream>>>(ptr<const T>(in), ptr<T>(out), rows, cols);
    else softmax_kernel<T, false><<<l.grid, l.block, 0, stream>>>(ptr<const T>(in), ptr<T>(out), rows, cols);
    EMBER_CUDA_LAUNCH_CHECK("softmax_kernel");
  });
}

void softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log,
                      cudaStream_t stream) {
  const int64_t cols = last_dim(out), rows = cols == 0 ? 0 : out.numel() / cols;
  if (rows == 0) return;
  visit_floating(out.dtype(), "softmax_backward", [&]<class T>() {
    const RowLaunch l = row_launch(rows, cols);
    if (log)
      softmax_backward_kernel<T, true>
          <<<l.grid, l.block, 0, stream>>>(ptr<const T>(grad_out), ptr<const T>(out), ptr<T>(grad_in), rows, cols);
    else
      softmax_backward_kernel<T, false>
          <<<l.grid, l.block, 0, stream>>>(ptr<const T>(grad_out), ptr<const T>(out), ptr<T>(grad_in), rows, cols);
    EMBER_CUDA_LAUNCH_CHECK("softmax_backward_kernel");
  });
}

void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& labels,
                           const CrossEntropyOptions& o, cudaStream_t stream) {
  NvtxRange range("ember::cross_entropy_forward");
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0) return;
  visit_floating(logits.dtype(), "cross_entropy", [&]<class T>() {
    const RowLaunch l = row_launch(N, C);
    cross_entropy_forward_kernel<T><<<l.grid, l.block, 0, stream>>>(
        ptr<const T>(logits), ptr<const int64_t>(labels), vector_stride(labels), ptr<T>(loss), ptr<T>(lse), N, C,
        o.ignore_index, o.label_smoothing);
    EMBER_CUDA_LAUNCH_CHECK("cross_entropy_forward_kernel");
  });
}

void cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                            const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o,
                            cudaStream_t stream) {
  NvtxRange range("ember::cross_entropy_backward");
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0 || C == 0) return;
  visit_floating(logits.dtype(), "cross_entropy_backward", [&]<class T>() {
    const RowLaunch l = row_launch(N, C);
    cross_entropy_backward_kernel<T><<<l.grid, l.block, 0, stream>>>(
        ptr<const T>(logits), ptr<const T>(grad_loss), vector_stride(grad_loss), ptr<const T>(lse), vector_stride(lse),
        ptr<const int64_t>(labels), vector_stride(labels), ptr<T>(grad_logits), N, C, o.ignore_index,
        o.label_smoothing);
    EMBER_CUDA_LAUNCH_CHECK("cross_entropy_backward_kernel");
  });
}

}  // namespace ember::cuda::kernels
