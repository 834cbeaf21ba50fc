// The out-of-line halves of the check macros in check.h: the error messages.
#include "cuda/check.h"

#include <string>

namespace ember::cuda {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  // Clear a non-sticky error so the process can go on after catching this; a sticky one (a fault
  // inside a kernel) stays, and every later call reports it.
  (void)cudaGetLastError();
  throw Error(detail::str_cat("CUDA error: ", call, " failed with ", cudaGetErrorName(status), " (",
                              cudaGetErrorString(status), ") at ", file, ":", line,
                              ". Errors of earlier asynchronous work surface at the next CUDA call; rerun with "
                              "CUDA_LAUNCH_BLOCKING=1 (or compute-sanitizer) to find the kernel that failed"));
}

void throw_library_error(const char* library, int status, const char* status_text, const char* call, const char* file,
                         int line) {
  throw Error(detail::str_cat(library, " error: ", call, " failed with status ", status, " (",
                              status_text ? status_text : "unknown status", ") at ", file, ":", line));
}

}  // namespace ember::cuda
