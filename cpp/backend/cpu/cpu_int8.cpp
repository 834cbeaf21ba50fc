// The int8 inference primitives on the CPU: plain loops over quant_math.h, the reference that the
// CUDA kernels (cuda/kernels/int8.cu, cuda/int8_gemm.cpp) are tested against. The CPU's fast int8
// inference is oneDNN's (cpp/nn/quant.cpp); these loops run ember::quant's device path on the CPU.
#include <algorithm>
#include <cstring>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/quant_math.h"

namespace ember {
namespace {

int8_t* bytes(const Tensor& t) { return reinterpret_cast<int8_t*>(t.impl()->data()); }

}  // namespace

void CpuBackend::int8_quantize(const Tensor& out, const Tensor& in, const Int8QuantizeParams& p) {
  const float* x = reinterpret_cast<const float*>(in.impl()->data());
  int8_t* q = bytes(out);
  const int32_t offset = math::int8_code_offset(p.is_unsigned);
  if (p.nhwc) {
    const int64_t n = in.size(0), c = in.size(1), hw = in.size(2) * in.size(3);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t s = 0; s < hw; ++s)
        for (int64_t k = 0; k < c; ++k)
          q[(b * hw + s) * c + k] =
              static_cast<int8_t>(math::int8_quantize(x[(b * c + k) * hw + s], p.inv_scale, p.is_unsigned) + offset);
    return;
  }
  const int64_t rows = out.size(0), ld = out.size(1), f = rows == 0 ? 0 : in.numel() / rows;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < ld; ++j)
      q[r * ld + j] =
          static_cast<int8_t>((j < f ? math::int8_quantize(x[r * f + j], p.inv_scale, p.is_unsigned) : 0) + offset);
}

void CpuBackend::int8_im2col(const Tensor& out, const Tensor& in, const Int8Im2colParams& p) {
  const int8_t* x = bytes(in);
  int8_t* col = bytes(out);
  const int64_t n = in.size(0), h = in.size(1), w = in.size(2), c = in.size(3);
  const int64_t kh = p.kernel[0], kw = p.kernel[1], k = kh * kw * c, ld = out.size(1);
  const auto zero = static_cast<int8_t>(p.zero_byte);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t oh = 0; oh < p.out_h; ++oh)
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        int8_t* row = col + ((b * p.out_h + oh) * p.out_w + ow) * ld;
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t ih = oh * p.stride[0] - p.padding[0] + i * p.dilation[0];
            const int64_t iw = ow * p.stride[1] - p.padding[1] + j * p.dilation[1];
            int8_t* dst = row + (i * kw + j) * c;
            if (ih < 0 || ih >= h || iw < 0 || iw >= w)
              std::memset(dst, zero, static_cast<size_t>(c));
            else
              std::memcpy(dst, x + ((b * h + ih) * w + iw) * c, static_cast<size_t>(c));
          }
        if (ld > k) std::memset(row + k, zero, static_cast<size_t>(ld - k));
      }
}

void CpuBackend::int8_gemm(const Tensor& out, const Tensor& a, const Tensor& w, const Int8GemmParams& p) {
  const int8_t* A = bytes(a);
  const int8_t* W = bytes(w);
  const int32_t* comp = reinterpret_cast<const int32_t*>(p.comp.impl()->data());
  const float* bias = reinterpret_cast<const float*>(p.bias_div.impl()->data());
  const float* scale = reinterpret_cast<const float*>(p.scale.impl()->data());
  const int64_t M = a.size(0), K = a.size(1);
  const bool to_codes = out.dtype() == DType::U8;
  const int64_t N = p.out_hw > 0 ? out.size(1) : out.size(out.dim() - 1);
  EMBER_CHECK(w.size(1) == K && N <= w.size(0) && p.comp.numel() >= N && p.bias_div.numel() >= N &&
                  p.scale.numel() >= N && out.numel() / std::max<int64_t>(N, 1) == M,
              "int8_gemm: inconsistent operands: a ", shape_str(a.shape()), ", w ", shape_str(w.shape()), ", out ",
              shape_str(out.shape()), ", per-channel vectors of ", p.comp.numel(), ", ", p.bias_div.numel(), ", ",
              p.scale.numel());
  const int32_t offset = math::int8_code_offset(p.out_unsigned);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < N; ++o) {
      int32_t acc = 0;  // exact: the caller bounds K so that no sum overflows int32
      for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(A[m * K + k]) * static_cast<int32_t>(W[o * K + k]);
      const float y = math::int8_dequantize(acc + comp[o], bias[o], scale[o], p.relu);
      if (to_codes) {
        bytes(out)[m * N + o] = static_cast<int8_t>(
            math::int8_saturate_round(y, math::int8_code_min(p.out_unsigned), math::int8_code_max(p.out_unsigned)) +
            offset);
      } else {
        float* dst = reinterpret_cast<float*>(out.impl()->data());
        if (p.out_hw > 0)
          dst[((m / p.out_hw) * N + o) * p.out_hw + m % p.out_hw] = y;
        else
          dst[m * N + o] = y;
      }
    }
}

void CpuBackend::int8_max_pool(const Tensor& out, const Tensor& in, int64_t kernel) {
  const int8_t* x = bytes(in);
  int8_t* y = bytes(out);
  const int64_t n = in.size(0), h = in.size(1), w = in.size(2), c = in.size(3);
  const int64_t oh = out.size(1), ow = out.size(2);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j)
        for (int64_t k = 0; k < c; ++k) {
          int8_t best = x[((b * h + i * kernel) * w + j * kernel) * c + k];
          for (int64_t u = 0; u < kernel; ++u)
            for (int64_t v = 0; v < kernel; ++v) {
              const int8_t e = x[((b * h + i * kernel + u) * w + j * kernel + v) * c + k];
              if (e > best) best = e;
            }
          y[((b * oh + i) * ow + j) * c + k] = best;
        }
}

}  // namespace ember
