// The CPU backend's bf16/f16 GEMM (cpu_gemm_lowp.cpp), called by CpuBackend::gemm for those dtypes.
#pragma once
#include "cpp/backend/backend.h"

namespace ember::cpu {

// CpuBackend::gemm's contract (backend.h) for bf16 or f16 out, a and b: products accumulate in f32
// and round once into out.
void gemm_lowp(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o);

}  // namespace ember::cpu
