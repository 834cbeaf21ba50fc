// The CUDA backend: backend.h's primitives on device-resident tensors (kernels in cuda/kernels,
// GEMM through cuBLASLt in cuda/blas.cpp), each queued on its device's compute stream.
#pragma once
#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"

namespace ember {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  bool supports(Primitive p) const override {
    return static_cast<int>(p) >= 0 && static_cast<int>(p) < kPrimitiveCount && kPrimitiveOnCuda[static_cast<int>(p)];
  }
  // The primitives of primitives.def marked ALL (a CPU_ONLY one keeps Backend's throwing default).
  // Their definitions: cuda_backend.cpp, GEMM in blas.cpp, the optimizer step in kernels/optim.cu
  // and the data pipeline (a permutation by CUB's radix sort of Philox keys, a batch gathered,
  // augmented and normalised by one kernel) in kernels/data.cu. One not defined is a link error.
#define EMBER_CUDA_OVERRIDE_ALL(RET, NAME, PARAMS) RET NAME PARAMS override;
#define EMBER_CUDA_OVERRIDE_CPU_ONLY(RET, NAME, PARAMS)
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) EMBER_CUDA_OVERRIDE_##BACKENDS(RET, NAME, PARAMS)
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
#undef EMBER_CUDA_OVERRIDE_ALL
#undef EMBER_CUDA_OVERRIDE_CPU_ONLY

 private:
  // The GEMM's epilogues done as separate kernels, for the cases cuBLASLt cannot fuse (blas.cpp).
  void gemm_epilogue_fallback(const Tensor& out, const Tensor& a, const GemmOptions& o, bool bias_relu,
                              bool bias_grad);
  // The ReLU mask's parts (BiasReluNanToZeroMask, DReluBiasGrad) as kernels, likewise.
  void relu_mask_fallback(const Tensor& out, const GemmOptions& o);
};

}  // namespace ember
