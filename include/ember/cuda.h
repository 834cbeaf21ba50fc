// ember::cuda: device discovery and the CUDA memory pool's statistics.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

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

// ---- CUDA graphs (cuda/graph.cpp) ----
//
// A Graph records the device work of one call of a function (typically a whole training step:
// forward, backward, optimizer) and replays it with one cudaGraphLaunch. Capture runs on the
// device's compute stream, where every ember op is queued, so nothing about an op changes under
// capture. The work recorded is NOT executed by capture(): call replay() to run it, also for the
// step that was captured.
//
// What capture needs from the code it records:
// - Run it once eagerly first (a warm-up step): cuBLASLt's algorithm choices, cuDNN's plans, the
//   optimizer's state buffers and the inputs' static tensors then exist before capture.
// - Inputs in tensors allocated before capture, rewritten in place before each replay (copy_);
//   the graph reads the same addresses every time.
// - No host wait (item(), to_vector(), .cpu(), synchronize()) and no host->device copy: each
//   throws ember::Error during capture, naming the call, and capture() rethrows it (the graph is
//   then empty and the work was not run).
// - Random draws (dropout, dropout2d, rand, randn, ...) are recorded as PyTorch records them: each
//   captured fill reads its generator's seed and counter base from device memory when it runs, plus
//   its fixed offset within the step, and the graph's last node advances that device counter by
//   every counter the step reserved. capture() leaves the host generator where it was before the
//   capture (nothing ran); replay() first writes the device state if the host generator moved
//   otherwise (eager draws, manual_seed), then advances the host generator by the step's count.
//   So replays draw fresh numbers, the same ones eager steps from the same seed would draw, and
//   eager draws after replays continue the sequence. The generators a captured step draws from
//   must outlive the Graph, and must not be reseeded during the capture.
// - The optimizer's per-step scalars: set Optimizer::set_capturable(true) and call
//   Optimizer::prepare_step() before capture and before every replay (see ember/optim.h); the step
//   counts and bias corrections are then advanced and computed inside the graph, and the options
//   (a scheduler's learning rate) read from device memory that prepare_step() rewrites when they
//   change.
// - Allocations during capture come from the graph's private pool (plain cudaMalloc'd blocks, reused
//   within the capture in stream order); those blocks, and any tensor freed during capture, stay
//   allocated until the Graph is destroyed, since every replay reads and writes them (a block whose
//   tensor outlives the graph goes with that tensor). Tensors made during capture (the loss, the
//   logits, the gradients) are the graph's outputs: each replay overwrites them in place.
// - One host thread queues work on the device while it captures (the capture is of the device's
//   one compute stream, and every allocation on the device meanwhile comes from the graph's pool).
class EMBER_API Graph {
 public:
  explicit Graph(int device = 0);
  ~Graph();  // waits for the device's queued work, then frees the graph and its pool
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Records the device work `record` queues on this device (it is not run). Throws ember::Error when
  // the graph already holds a capture, or when `record` does something capture cannot hold (the
  // error names it); the graph is then left empty.
  void capture(const std::function<void()>& record);
  // Queues one run of the captured work on the compute stream (asynchronous, like any op).
  void replay();
  bool captured() const;
  int device() const;
  // Bytes of the graph's private pool (the blocks allocated during capture).
  size_t pool_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True while a Graph captures on `device` (ops that cannot be captured check it to say why).
EMBER_API bool is_capturing(int device = 0);

}  // namespace ember::cuda
