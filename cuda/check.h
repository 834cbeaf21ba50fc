// Checks for every CUDA runtime, cuBLAS(Lt) and cuDNN call and every kernel launch: a failure
// throws ember::Error naming the call, the library's error string, the file and the line.
#pragma once
#include <cuda_runtime_api.h>

#include "ember/error.h"

namespace ember::cuda {

// Builds the message and throws; kept out of line so the macros stay small at every call site.
[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_library_error(const char* library, int status, const char* status_text, const char* call,
                                      const char* file, int line);

}  // namespace ember::cuda

#define EMBER_CUDA_CHECK(call)                                                          \
  do {                                                                                  \
    const cudaError_t ember_status_ = (call);                                           \
    if (ember_status_ != cudaSuccess)                                                   \
      ::ember::cuda::throw_cuda_error(ember_status_, #call, __FILE__, __LINE__);        \
  } while (0)

// The cuBLAS and cuDNN macros name their library's types only when expanded, so this header does
// not pull cublas_api.h / cudnn.h into every kernel file.
#define EMBER_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                              \
    const cublasStatus_t ember_status_ = (call);                                                    \
    if (ember_status_ != CUBLAS_STATUS_SUCCESS)                                                     \
      ::ember::cuda::throw_library_error("cuBLAS", static_cast<int>(ember_status_),                 \
                                         cublasGetStatusString(ember_status_), #call, __FILE__, __LINE__); \
  } while (0)

#define EMBER_CUDNN_CHECK(call)                                                                     \
  do {                                                                                              \
    const cudnnStatus_t ember_status_ = (call);                                                     \
    if (ember_status_ != CUDNN_STATUS_SUCCESS)                                                      \
      ::ember::cuda::throw_library_error("cuDNN", static_cast<int>(ember_status_),                  \
                                         cudnnGetErrorString(ember_status_), #call, __FILE__, __LINE__); \
  } while (0)

// After every <<<...>>>: reports a bad launch configuration at once (cudaGetLastError also clears
// it, so the process keeps working). Faults inside the kernel surface at a later synchronizing call.
#define EMBER_CUDA_LAUNCH_CHECK(kernel_name)                                            \
  do {                                                                                  \
    const cudaError_t ember_status_ = cudaGetLastError();                               \
    if (ember_status_ != cudaSuccess)                                                   \
      ::ember::cuda::throw_cuda_error(ember_status_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)
