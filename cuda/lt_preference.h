// The search preference both cuBLASLt callers (cuda/blas.cpp, cuda/int8_gemm.cpp) give the heuristic.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <utility>

namespace ember::cuda {

// The workspace ember's pool hands out, and the operands' alignments (cuda::pointer_alignment; C and D
// are the same buffer). Returns the first status that is not success.
inline cublasStatus_t set_lt_preference(cublasLtMatmulPreference_t pref, uint64_t workspace_bytes, uint32_t align_a,
                                        uint32_t align_b, uint32_t align_d) {
  cublasStatus_t s =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                           sizeof(workspace_bytes));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
  for (const auto& [attr, value] : aligns)
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value));
  return s;
}

}  // namespace ember::cuda
