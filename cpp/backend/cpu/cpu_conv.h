// The CPU convolution engines behind CpuBackend's conv primitives: oneDNN (f32, the default) and
// im2col + OpenBLAS GEMM (f64, and f32 where oneDNN declines a case or EMBER_CPU_CONV=im2col asks).
#pragma once
#include <cstdint>

#include "cpp/backend/backend.h"

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

// oneDNN (cpu_conv_dnnl.cpp). Each returns false, having done nothing, when oneDNN takes no such
// case (negative effective padding); the caller then runs im2col.
bool dnnl_conv_forward(const ConvGeometry& g, float* y, const float* x, const float* w, const float* bias);
bool dnnl_conv_backward_data(const ConvGeometry& g, float* dx, const float* dy, const float* w);
// db (when not null) = the bias gradient, in the same pass.
bool dnnl_conv_backward_weight(const ConvGeometry& g, float* dw, float* db, const float* dy, const float* x);

}  // namespace ember::cpu
