// ember::cuda: device discovery and the CUDA memory pool's statistics.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ember/export.h"

namespace ember::cuda {

// False (quietly: no exception, nothing on stderr) without a GPU, a driver, or a CUDA build.
EMBER_API bool is_available();
EMBER_API int device_count();
// True when this libember.so was built with the CUDA backend.
EMBER_API bool is_compiled();

struct MemoryStats {
  size_t allocated = 0;       // bytes in live tensors
  size_t reserved = 0;        // bytes the pool holds from the driver (live + cached)
  size_t peak_allocated = 0;  // high-water mark of `allocated`
  uint64_t num_alloc_retries = 0;  // allocations that succeeded only after releasing the cache
  uint64_t num_allocs = 0;         // tensor allocations since the process started
  uint64_t num_cache_flushes = 0;  // times the pool's cache went back to the driver (empty_cache(), a retry)
};
EMBER_API MemoryStats memory_stats(int device = 0);
EMBER_API void reset_peak_memory_stats(int device = 0);
// Returns cached, unused blocks to the driver.
EMBER_API void empty_cache(int device = 0);
// Waits for all work queued on the device's compute stream.
EMBER_API void synchronize(int device = 0);

// What made the host touch a device since the process started (all devices together). A training
// loop whose data, permutation and optimizer state live on the device adds none of these per step.
struct TransferStats {
  uint64_t host_to_device_copies = 0;  // copies from host memory (uploads)
  uint64_t device_to_host_copies = 0;  // blocking reads: item(), to_vector(), .cpu(), ...
  uint64_t synchronizations = 0;       // synchronize(), empty_cache(), and waits for a staging buffer
};
EMBER_API TransferStats transfer_stats();

// What happens when the host is about to wait for a device (a blocking read or a synchronisation):
// Off (the default) lets it; Warn also prints one line naming the call on stderr; Error throws
// ember::Error instead, so a test or a debugging session finds the call that stalls a training loop.
enum class SyncDebugMode { Off, Warn, Error };
EMBER_API void set_sync_debug_mode(SyncDebugMode mode);
EMBER_API SyncDebugMode sync_debug_mode();

// TF32 tensor cores for f32 GEMMs and convolutions (off by default so results match the CPU
// reference closely; one switch for both, where PyTorch has torch.backends.cuda.matmul.allow_tf32
// and torch.backends.cudnn.allow_tf32).
EMBER_API void set_allow_tf32(bool allow);
EMBER_API bool allow_tf32();

// Deterministic algorithms only (PyTorch's torch.backends.cudnn.deterministic): cuDNN's
// convolutions pick among the algorithms that give bit-identical results from run to run (off by
// default: the fastest algorithm cuDNN's heuristic ranks first). Read when a convolution shape is
// first seen, and part of its cache key, so changing it takes effect at the next call.
EMBER_API void set_deterministic_algorithms(bool deterministic);
EMBER_API bool deterministic_algorithms();

}  // namespace ember::cuda
