// CPU backend settings: how many threads its libraries (oneDNN, OpenBLAS) use, and its cache of
// freed host blocks.
#pragma once
#include <cstddef>

#include "ember/export.h"

namespace ember {

// Sets the number of threads the CPU backend uses (>= 1): OpenMP's for oneDNN's f32 GEMMs and
// convolutions, OpenBLAS's for f64 GEMMs. OpenMP's count is per calling thread: the GEMM sets a
// calling thread's to this value itself; for the convolutions, call it from the thread that runs
// the ops.
EMBER_API void set_num_threads(int threads);
EMBER_API int get_num_threads();

// The CPU backend keeps freed blocks of 1 MiB or more (up to the limit in all, 256 MiB by default; 0
// in sanitizer builds; the oldest go first when it is full) and reuses them for allocations of the
// same size, so a training loop's buffers are not returned to the kernel and faulted in again
// every step. The environment variable EMBER_CPU_CACHE_LIMIT (bytes) sets the limit the process
// starts with. cpu_empty_cache() frees them
// (an allocation that fails does so too before it gives up); a limit of 0 turns the cache off.
EMBER_API void set_cpu_cache_limit(size_t bytes);
EMBER_API size_t cpu_cache_limit();
EMBER_API size_t cpu_cached_bytes();
EMBER_API void cpu_empty_cache();

}  // namespace ember
