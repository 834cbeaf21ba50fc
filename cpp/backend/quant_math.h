// The scalar arithmetic of ember's int8 inference (ember::quant), shared by the CPU reference loops
// of the int8 primitives (cpp/backend/cpu/cpu_int8.cpp) and the CUDA kernels (cuda/kernels/int8.cu).
// It is the arithmetic oneDNN's int8 primitives run on the CPU path (cpp/nn/quant.cpp), written out:
//   quantise:    q = saturate(round_half_even(x * inv_scale))            (oneDNN's scaled reorder)
//   dequantise:  y = (float(acc) + bias_div) * scale, then ReLU          (oneDNN's int8 output scales:
//                the bias, pre-divided by the accumulator's scale, is added before the scale)
//   requantise:  q = saturate(round_half_even(y))
// Each step is one IEEE f32 operation in a fixed order (no fused multiply-add: the CUDA file is
// compiled with -fmad=false), so the host and the device round alike.
#pragma once
#include <cmath>
#include <cstdint>

#include "cpp/backend/host_device.h"

namespace ember::math {

// An activation code's range: u8 [0, 255] or s8 [-128, 127].
EMBER_HOST_DEVICE int32_t int8_code_min(bool is_unsigned) { return is_unsigned ? 0 : -128; }
EMBER_HOST_DEVICE int32_t int8_code_max(bool is_unsigned) { return is_unsigned ? 255 : 127; }

// The stored byte of a code: device activations are s8 x s8 GEMM operands, so a u8 code q travels
// as q - 128 (and the GEMM adds 128 * sum_k w[o, k] back; int8_compensation). An s8 code as is.
EMBER_HOST_DEVICE int32_t int8_code_offset(bool is_unsigned) { return is_unsigned ? -128 : 0; }

// Saturates v to [lo, hi] in float (a NaN gives lo), then rounds half to even (rintf in the
// default rounding mode, as the CPU's cvtps2dq). Saturating first and rounding after equals
// rounding first, since the bounds are integers.
EMBER_HOST_DEVICE int32_t int8_saturate_round(float v, int32_t lo, int32_t hi) {
  const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
  if (!(v >= flo)) v = flo;
  if (v > fhi) v = fhi;
  return static_cast<int32_t>(rintf(v));
}

// The code of activation x under a per-tensor scale (inv_scale = 1.0f / scale, computed once in f32
// by the caller, as the CPU path's reorder takes it).
EMBER_HOST_DEVICE int32_t int8_quantize(float x, float inv_scale, bool is_unsigned) {
  return int8_saturate_round(x * inv_scale, int8_code_min(is_unsigned), int8_code_max(is_unsigned));
}

// The float value of an output channel's int32 accumulator (see the header comment), ReLU'd.
EMBER_HOST_DEVICE float int8_dequantize(int32_t acc, float bias_div, float scale, bool relu) {
  float y = static_cast<float>(acc) + bias_div;
  y = y * scale;
  if (relu && !(y > 0.0f)) y = 0.0f;
  return y;
}

}  // namespace ember::math
