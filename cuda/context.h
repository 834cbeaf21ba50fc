// cuda::DeviceContext: everything ember keeps for one CUDA device in one object (compute stream,
// memory pool and statistics, staging buffers, the device-check record, cuBLASLt/cuBLAS handles
// and workspace, the cuDNN handle), made once per device. Included by the cuda/ sources that use
// the libraries; kernels need only runtime.h.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda/runtime.h"
#include "ember/generator.h"

namespace ember::cuda {

inline constexpr int kMaxDevices = 64;
inline constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;

// Pinned host memory that host->device copies go through, so the caller's (pageable) buffer is
// free again as soon as it has been copied here, and the DMA runs asynchronously.
struct StagingSlot {
  void* host = nullptr;
  size_t capacity = 0;
  cudaEvent_t done = nullptr;  // recorded after the copy out of this slot
};

// cuBLASLt's chosen algorithm is cached per problem: a training loop repeats a handful of shapes,
// and the heuristic costs tens of microseconds (blas.cpp makes the key).
using GemmAlgoKey = std::array<int64_t, 19>;  // blas.cpp: ..., bias and aux alignments, aux ld

// The GEMM state of a device: the cuBLASLt and cuBLAS handles (cuBLAS's bound to the compute
// stream; cuBLASLt takes the stream per call) and the workspace they share.
struct GemmContext {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;  // kGemmWorkspaceBytes from the device's pool, held for good
  std::mutex algos_mutex;
  std::map<GemmAlgoKey, std::optional<cublasLtMatmulAlgo_t>> algos;  // nullopt: cuBLASLt has none
};

// A generator's Philox state on one device, [seed, counter base] (two u64 at `dev`), read by the
// random fills captured in CUDA graphs; `seed` and `offset` are what it holds once the queued work
// has run (valid when `known`), so a replay writes it only when the host generator moved otherwise
// (eager draws between replays, a reseed).
struct RngDeviceState {
  uint64_t* dev = nullptr;  // cudaMalloc'd on first capture, kept with the context
  uint64_t seed = 0;
  uint64_t offset = 0;
  bool known = false;
};

// A generator a capture's random fills drew from: its counters during capture ran from `base` (the
// first fill's) for `total` (every counter the captured step reserved), which each replay takes
// from the host generator and its last node adds to the device state.
struct CaptureRng {
  Generator* generator = nullptr;
  RngDeviceState* state = nullptr;
  uint64_t seed = 0;
  uint64_t base = 0;
  uint64_t total = 0;
};

// A Graph's private memory (cuda/graph.cpp). While a Graph captures on the device, every
// allocation there is served from `blocks` (cudaMalloc'd for this graph; a block freed during the
// capture is reused by a later allocation of the same size in the same capture, which is safe
// because the captured work is one stream's order), and every free of memory allocated before the
// capture is deferred. After capture the blocks are the graph's: the tensors made during capture
// may be freed by the host, but the blocks stay until the graph is destroyed, since each replay
// writes them again.
struct CapturePool {
  std::unordered_map<void*, size_t> blocks;          // every block of the graph, with its size
  std::unordered_set<void*> held;                    // the blocks a tensor still holds
  std::unordered_multimap<size_t, void*> reusable;   // blocks freed during capture, by size
  std::vector<void*> deferred;                       // pool memory freed during capture: freed with the graph
  size_t bytes = 0;                                  // sum of the blocks' sizes
  std::vector<CaptureRng> rng;                       // the generators its random fills drew from
};

// Made by device_context() on the device's first use and never destroyed: at process exit the CUDA
// runtime may already be unloading, and releasing streams, pools or handles then fails. The parts
// not every program needs (checks, GEMM handles, cuDNN handle) are made on first use by their
// accessor, once, under one lock; every accessor is thread-safe. The handles are bound to the one
// compute stream, so work on one device from several host threads is ordered by that stream.
class DeviceContext {
 public:
  explicit DeviceContext(int index);  // creates the stream and configures the pool
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  const int index;
  cudaStream_t stream = nullptr;  // the compute stream: every kernel, copy, GEMM and cuDNN call goes here
  cudaMemPool_t pool = nullptr;   // the device's default pool, with an infinite release threshold
  int sm_count = 0;
  size_t total_memory = 0;  // the device's memory in bytes

  // Memory statistics (ember/cuda.h's memory_stats).
  std::atomic<size_t> allocated{0};
  std::atomic<size_t> peak_allocated{0};
  std::atomic<uint64_t> num_alloc_retries{0};
  std::atomic<uint64_t> num_allocs{0};
  std::atomic<uint64_t> num_cache_flushes{0};

  // CUDA graphs (cuda/graph.cpp), under capture_mutex: the pool of the graph capturing now (null when
  // none), and the pools of every live graph, whose blocks device_free must leave alone.
  std::mutex capture_mutex;
  std::atomic<CapturePool*> capturing{nullptr};
  std::vector<CapturePool*> graph_pools;
  std::atomic<int> num_graph_pools{0};  // graph_pools' size, plus one while `orphans` holds blocks
  // Blocks of destroyed graphs that a tensor still held then: freed (cudaFree) when that tensor goes.
  CapturePool orphans;
  // Each generator's Philox state on this device, made by the first capture that draws from it
  // (node-based map: CaptureRng keeps pointers to its values). Keyed by address; a state is read
  // by value, so a new generator at a freed one's address only finds a value to overwrite.
  std::unordered_map<const Generator*, RngDeviceState> rng_states;

  // Host->device staging (runtime.cpp's copy_host_to_device), under staging_mutex.
  std::mutex staging_mutex;
  StagingSlot staging[2];
  int next_slot = 0;

  // The device-check record (Backend::check_index), made on the first check.
  const DeviceChecks& checks();
  // Whether a check record exists (without making one), for the host waits that look at it.
  DeviceChecks* checks_if_made() const { return checks_.load(std::memory_order_acquire); }
  // The GEMM handles and workspace, made on the first GEMM (throws OutOfMemory without room for
  // the workspace).
  GemmContext& gemm();
  // The cuDNN handle, bound to `stream`, made on the first call.
  cudnnHandle_t dnn_handle();

 private:
  std::mutex lazy_mutex_;  // makes checks_, gemm_ and dnn_ once
  std::atomic<DeviceChecks*> checks_{nullptr};
  std::atomic<GemmContext*> gemm_{nullptr};
  std::atomic<cudnnHandle_t> dnn_{nullptr};
};

// The device's context, made on first use (thread-safe). Throws ember::Error when `index` names
// no device.
DeviceContext& device_context(int index);
// The context if it was made, else nullptr; never throws (for noexcept paths such as frees).
DeviceContext* find_device_context(int index) noexcept;

// The graph pool's side of device_allocate and device_free (cuda/graph.cpp), called only while the
// context has a capturing pool (allocate) or any graph pool (free). capture_free returns false when
// `ptr` is none of the graphs' and no capture is running: the caller frees it as usual.
void* capture_allocate(DeviceContext& s, size_t nbytes);
bool capture_free(DeviceContext& s, void* ptr, size_t nbytes) noexcept;
// Throws ember::Error when the device is capturing: `what` names the call capture cannot hold.
void check_not_capturing(const DeviceContext& s, const char* what);

// The cuDNN handle of device `index`, bound to its compute stream; made on first use (thread-safe).
// cuDNN calls through it are ordered on that stream with ember's kernels.
cudnnHandle_t dnn_handle(int index);

}  // namespace ember::cuda
