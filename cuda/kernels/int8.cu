// ember::quant's int8 inference on the device: activation quantisation (NCHW f32 -> NHWC codes),
// im2col of codes, the GEMM's epilogue (int32 accumulator -> f32 or requantised codes) and the
// max-pool of codes. One thread per output element, grid-stride; the arithmetic is quant_math.h's,
// the same the CPU reference loops (cpp/backend/cpu/cpu_int8.cpp) run, and this file is compiled
// with -fmad=false so that no multiply and add fuse into an FMA the host would not round alike.
#include "cpp/backend/quant_math.h"
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"

namespace ember::cuda::kernels {
namespace {

__global__ void int8_quantize_nhwc_kernel(const float* x, int8_t* q, int64_t c, int64_t hw, float inv_scale,
                                          bool is_unsigned, int64_t total) {
  const int32_t offset = math::int8_code_offset(is_unsigned);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % c, s = (i / c) % hw, b = i / (c * hw);
    q[i] = static_cast<int8_t>(math::int8_quantize(x[(b * c + k) * hw + s], inv_scale, is_unsigned) + offset);
  }
}

__global__ void int8_quantize_rows_kernel(const float* x, int8_t* q, int64_t f, int64_t ld, float inv_scale,
                                          bool is_unsigned, int64_t total) {
  const int32_t offset = math::int8_code_offset(is_unsigned);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % ld, r = i / ld;
    q[i] = static_cast<int8_t>((j < f ? math::int8_quantize(x[r * f + j], inv_scale, is_unsigned) : 0) + offset);
  }
}

struct Im2colDims {
  int64_t h, w, c, ld;
};

__global__ void int8_im2col_kernel(const int8_t* x, int8_t* col, Int8Im2colParams p, Im2colDims d, int64_t total) {
  const int64_t k = p.kernel[0] * p.kernel[1] * d.c;
  const auto zero = static_cast<int8_t>(p.zero_byte);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % d.ld, row = i / d.ld;
    int8_t v = zero;
    if (j < k) {
      const int64_t ch = j % d.c, tap = j / d.c, tj = tap % p.kernel[1], ti = tap / p.kernel[1];
      const int64_t ow = row % p.out_w, oh = (row / p.out_w) % p.out_h, b = row / (p.out_w * p.out_h);
      const int64_t ih = oh * p.stride[0] - p.padding[0] + ti * p.dilation[0];
      const int64_t iw = ow * p.stride[1] - p.padding[1] + tj * p.dilation[1];
      if (ih >= 0 && ih < d.h && iw >= 0 && iw < d.w) v = x[((b * d.h + ih) * d.w + iw) * d.c + ch];
    }
    col[i] = v;
  }
}

// acc [M, n_pad] int32 (cuBLASLt's D, row m = one output pixel / sample).
__global__ void int8_epilogue_kernel(const int32_t* acc, int64_t n_pad, const int32_t* comp, const float* bias,
                                     const float* scale, bool relu, bool to_codes, bool out_unsigned, int64_t out_hw,
                                     void* out, int64_t n, int64_t total) {
  const int32_t offset = math::int8_code_offset(out_unsigned);
  const int32_t lo = math::int8_code_min(out_unsigned), hi = math::int8_code_max(out_unsigned);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i % n, m = i / n;
    const float y = math::int8_dequantize(acc[m * n_pad + o] + comp[o], bias[o], scale[o], relu);
    if (to_codes)
      static_cast<int8_t*>(out)[i] = static_cast<int8_t>(math::int8_saturate_round(y, lo, hi) + offset);
    else if (out_hw > 0)
      static_cast<float*>(out)[((m / out_hw) * n + o) * out_hw + m % out_hw] = y;
    else
      static_cast<float*>(out)[i] = y;
  }
}

__global__ void int8_max_pool_kernel(const int8_t* x, int8_t* y, int64_t h, int64_t w, int64_t c, int64_t oh,
                                     int64_t ow, int64_t kernel, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % c, j = (i / c) % ow, r = (i / (c * ow)) % oh, b = i / (c * ow * oh);
    const int8_t* base = x + ((b * h + r * kernel) * w + j * kernel) * c + k;
    int8_t best = base[0];
    for (int64_t u = 0; u < kernel; ++u)
      for (int64_t v = 0; v < kernel; ++v) {
        const int8_t e = base[(u * w + v) * c];
        if (e > best) best = e;
      }
    y[i] = best;
  }
}

}  // namespace

void int8_quantize(const Tensor& out, const Tensor& in, const Int8QuantizeParams& p, cudaStream_t stream) {
  NvtxRange range("ember::int8_quantize");
  const int64_t total = out.numel();
  if (total == 0) return;
  if (p.nhwc) {
    int8_quantize_nhwc_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
        ptr<const float>(in), ptr<int8_t>(out), in.size(1), in.size(2) * in.size(3), p.inv_scale, p.is_unsigned, total);
  } else {
    const int64_t rows = out.size(0);
    int8_quantize_rows_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
        ptr<const float>(in), ptr<int8_t>(out), in.numel() / rows, out.size(1), p.inv_scale, p.is_unsigned, total);
  }
  EMBER_CUDA_LAUNCH_CHECK("int8_quantize_kernel");
}

void int8_im2col(const Tensor& out, const Tensor& in, const Int8Im2colParams& p, cudaStream_t stream) {
  NvtxRange range("ember::int8_im2col");
  const int64_t total = out.numel();
  if (total == 0) return;
  int8_im2col_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
      ptr<const int8_t>(in), ptr<int8_t>(out), p, Im2colDims{in.size(1), in.size(2), in.size(3), out.size(1)}, total);
  EMBER_CUDA_LAUNCH_CHECK("int8_im2col_kernel");
}

void int8_epilogue(const Tensor& out, const Tensor& acc, const Int8GemmParams& p, cudaStream_t stream) {
  NvtxRange range("ember::int8_epilogue");
  const int64_t total = out.numel();
  if (total == 0) return;
  const int64_t n = p.out_hw > 0 ? out.size(1) : out.size(out.dim() - 1);
  int8_epilogue_kernel<<<blocks_for(total), kThreads, 0, stream>>>(
      ptr<const int32_t>(acc), acc.size(1), ptr<const int32_t>(p.comp), ptr<const float>(p.bias_div),
      ptr<const float>(p.scale), p.relu, out.dtype() == DType::U8, p.out_unsigned, p.out_hw, out.impl()->data(), n,
      total);
  EMBER_CUDA_LAUNCH_CHECK("int8_epilogue_kernel");
}

void int8_max_pool(const Tensor& out, const Tensor& in, int64_t kernel, cudaStream_t stream) {
  NvtxRange range("ember::int8_max_pool");
  const int64_t total = out.numel();
  if (total == 0) return;
  int8_max_pool_kernel<<<blocks_for(total), kThreads, 0, stream>>>(ptr<const int8_t>(in), ptr<int8_t>(out), in.size(1),
                                                                   in.size(2), in.size(3), out.size(1), out.size(2),
                                                                   kernel, total);
  EMBER_CUDA_LAUNCH_CHECK("int8_max_pool_kernel");
}

}  // namespace ember::cuda::kernels
