// The CPU convolution engines behind CpuBackend's conv primitives: oneDNN (f32, the default; bf16
// and f16 where it has kernels for them on this CPU, bf16 only where those are not the slower:
// cpu_gemm_lowp.h's bf16_kernels()) and im2col + OpenBLAS GEMM (f64, and f32 where
// oneDNN declines a case or EMBER_CPU_CONV=im2col asks). bf16/f16 cases oneDNN does not run are
// widened to f32, run as f32 and rounded once (cpu_conv.cpp).
#pragma once
#include <cstdint>

#include "cpp/backend/backend.h"
#include "ember/export.h"

namespace ember::cpu {

// A convolution's sizes as the engines read them off the tensors (see backend.h's conv block).
struct ConvGeometry {
  int64_t n = 0, c_in = 0, h = 0, w = 0;   // x
  int64_t c_out = 0, kh = 0, kw = 0;       // weight [c_out, c_in / groups, kh, kw]
  int64_t h_out = 0, w_out = 0;            // y
  ConvParams p;
};

ConvGeometry conv_geometry(const Tensor& x_like, const Tensor& w, const Tensor& y_like, const ConvParams& p);

// Which engine runs f32 convolutions: oneDNN unless the environment variable EMBER_CPU_CONV is
// "im2col" (read once; tools/bench/conv_layers.sh uses it to time both engines in one run).
bool f32_uses_onednn();

// oneDNN (cpu_conv_dnnl.cpp), for dt f32, bf16 or f16: every pointer is to elements of dt (bias
// and db too), contiguous NCHW / OIHW. Each returns false, having done nothing, when oneDNN takes no
// such case (negative effective padding; for bf16/f16 also no kernel on this CPU, or only oneDNN's
// reference loop); the caller then runs im2col (f32) or widens to f32 (bf16/f16).
bool dnnl_conv_forward(const ConvGeometry& g, DType dt, void* y, const void* x, const void* w, const void* bias);
bool dnnl_conv_backward_data(const ConvGeometry& g, DType dt, void* dx, const void* dy, const void* w);
// db (when not null) = the bias gradient, in the same pass.
bool dnnl_conv_backward_weight(const ConvGeometry& g, DType dt, void* dw, void* db, const void* dy, const void* x);
// Both gradients (dx, dw and db when not null) for one dy: the two primitives above, with dy
// converted to their layout once when both read it in the same one (16-bit NHWC always does).
bool dnnl_conv_backward(const ConvGeometry& g, DType dt, void* dx, void* dw, void* db, const void* dy, const void* x,
                        const void* w);
// Whether all three directions of this convolution run on oneDNN kernels in dt (not widened);
// builds and caches the primitives (for tests and benchmarks that say which path ran).
EMBER_API bool dnnl_conv_has_kernel(const ConvGeometry& g, DType dt, bool bias);

}  // namespace ember::cpu
