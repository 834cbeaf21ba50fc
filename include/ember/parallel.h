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

// The CPU backend keeps freed blocks of 1 MiB to 32 MiB (up to the limit in all, 256 MiB by default; 0
// in sanitizer builds; the oldest go first when it is full) and reuses them for allocations of the
// same size, so a training loop's buffers are not returned to the kernel and faulted in again
// every step; larger blocks (evaluation-size batches) go back to the system when freed.
// The environment variable EMBER_CPU_CACHE_LIMIT (bytes) sets the limit the process
// starts with. cpu_empty_cache() frees them
// (an allocation that fails does so too before it gives up); a limit of 0 turns the cache off.
EMBER_API void set_cpu_cache_limit(size_t bytes);
EMBER_API size_t cpu_cache_limit();
EMBER_API size_t cpu_cached_bytes();
EMBER_API void cpu_empty_cache();

// The CPU allocator's figures (ember::cuda::memory_stats's for the host), all since the process
// started except where reset.
struct CpuMemoryStats {
  size_t allocated = 0;       // bytes in live blocks, as requested (tensors and the backend's scratch)
  size_t reserved = 0;        // bytes held from the system: live blocks rounded up to 64 bytes + the cache
  size_t cached = 0;          // bytes of freed blocks the cache keeps (cpu_cached_bytes())
  size_t peak_allocated = 0;  // high-water mark of `allocated` (since reset_cpu_peak_memory_stats())
  uint64_t num_allocs = 0;         // allocations
  uint64_t num_cache_hits = 0;     // of them, served by a cached block
  uint64_t num_cache_flushes = 0;  // times the whole cache was freed (cpu_empty_cache(), a lower limit,
                                   // an allocation that failed)
};
EMBER_API CpuMemoryStats cpu_memory_stats();
// Sets peak_allocated to the bytes allocated now.
EMBER_API void reset_cpu_peak_memory_stats();

}  // namespace ember
