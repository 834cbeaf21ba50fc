// CUDA graphs (ember/cuda.h's Graph): stream capture of the compute stream, the graph's private
// memory pool (context.h's CapturePool) and replay.
#include <mutex>
#include <vector>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/kernels/kernels.h"
#include "cuda/runtime.h"
#include "ember/cuda.h"
#include "ember/error.h"
#include "ember/generator.h"

namespace ember::cuda {

void* capture_allocate(DeviceContext& s, size_t nbytes) {
  std::lock_guard<std::mutex> lock(s.capture_mutex);
  CapturePool* pool = s.capturing.load(std::memory_order_acquire);
  EMBER_CHECK(pool, "cuda:", s.index, ": capture_allocate without a capture");  // the caller checked
  // A block freed earlier in this capture: the captured work that used it comes before the work that
  // will use it again, in the one stream's order, at every replay as during capture.
  if (auto it = pool->reusable.find(nbytes); it != pool->reusable.end()) {
    void* p = it->second;
    pool->reusable.erase(it);
    pool->held.insert(p);
    return p;
  }
  void* p = nullptr;
  // cudaMalloc is one of the calls stream capture calls "potentially unsafe" (it is not a stream
  // operation); this thread's capture mode is relaxed around it, as the CUDA programming guide shows.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  EMBER_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  const cudaError_t e = cudaMalloc(&p, nbytes);
  EMBER_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw OutOfMemory(detail::str_cat("cuda:", s.index, " out of memory while capturing a CUDA graph: cudaMalloc of ",
                                      nbytes, " bytes for the graph's private pool failed with ", cudaGetErrorName(e),
                                      " (the pool holds ", pool->bytes,
                                      " bytes so far); use a smaller batch, or "
                                      "run eagerly (ember-mnist --no-cuda-graph)"));
  }
  try {
    pool->blocks.emplace(p, nbytes);
    pool->held.insert(p);
  } catch (...) {
    (void)cudaFree(p);
    throw;
  }
  pool->bytes += nbytes;
  return p;
}

bool capture_free(DeviceContext& s, void* ptr, size_t nbytes) noexcept {
  std::lock_guard<std::mutex> lock(s.capture_mutex);
  CapturePool* capturing = s.capturing.load(std::memory_order_acquire);
  try {
    // Another graph's block stays until that graph goes (which frees it), also when freed during
    // this capture; the block of a destroyed graph goes with its last tensor.
    for (CapturePool* pool : s.graph_pools)
      if (pool != capturing && pool->blocks.count(ptr)) {
        pool->held.erase(ptr);
        return true;
      }
    // (cudaFree cannot run during a capture: such a block then stays, a small leak on a rare path.)
    if (capturing && s.orphans.blocks.count(ptr)) return true;
    if (s.orphans.blocks.erase(ptr)) {
      s.orphans.held.erase(ptr);
      if (s.orphans.blocks.empty()) s.num_graph_pools.fetch_sub(1);
      // cudaMalloc'd memory: cudaFree waits for the device, which is due here (a rare path: a
      // tensor made during a capture outlived its graph).
      (void)cudaFree(ptr);
      (void)cudaGetLastError();
      return true;
    }
    if (capturing) {
      // Freed during capture: a block of this graph can serve a later allocation of this capture;
      // pool memory must outlive the replays that read it, so its free waits for the graph.
      if (capturing->blocks.count(ptr)) {
        capturing->held.erase(ptr);
        capturing->reusable.emplace(nbytes, ptr);
      } else {
        capturing->deferred.push_back(ptr);
      }
      return true;
    }
  } catch (...) {
    // Out of host memory recording the free: keeping the block (a leak) is the safe choice.
    return true;
  }
  return false;
}

void check_not_capturing(const DeviceContext& s, const char* what) {
  if (!s.capturing.load(std::memory_order_acquire)) return;
  throw Error(detail::str_cat(what, " on cuda:", s.index,
                              " while a CUDA graph captures there: capture cannot hold it (a replay would not "
                              "repeat it, or the stream would have to wait); keep the step's values on the device, "
                              "write inputs into tensors made before capture, or run the step eagerly"));
}

CapturedRandom capture_random(int device, Generator* generator, uint64_t seed, uint64_t offset) {
  DeviceContext& s = device_context(device);
  std::lock_guard<std::mutex> lock(s.capture_mutex);
  CapturePool* pool = s.capturing.load(std::memory_order_acquire);
  EMBER_CHECK(pool, "cuda:", device, ": capture_random without a capture");  // the caller checked
  if (!generator)
    throw Error(detail::str_cat("a random fill whose counters come from no ember::Generator cannot be recorded in a "
                                "CUDA graph on cuda:", device,
                                ": a replay could not advance them; draw through a Generator, or run eagerly"));
  CaptureRng* r = nullptr;
  for (CaptureRng& c : pool->rng)
    if (c.generator == generator) r = &c;
  if (!r) {
    RngDeviceState& st = s.rng_states[generator];
    if (!st.dev) {
      // Not a stream operation: capture mode relaxed around it, as for the pool's blocks.
      cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
      EMBER_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
      void* p = nullptr;
      const cudaError_t e = cudaMalloc(&p, 2 * sizeof(uint64_t));
      EMBER_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        throw OutOfMemory(detail::str_cat("cuda:", device, " out of memory while capturing a CUDA graph: cudaMalloc of ",
                                          "16 bytes for a generator's device state failed with ", cudaGetErrorName(e)));
      }
      st.dev = static_cast<uint64_t*>(p);
      st.known = false;
    }
    pool->rng.push_back({generator, &st, seed, offset, 0});
    r = &pool->rng.back();
  }
  // The host generator reserved this fill's counters; a reseed in the middle of a capture, or a state
  // set back before the capture's first counter, has no consistent meaning for a replay.
  if (seed != r->seed || offset < r->base)
    throw Error(detail::str_cat("a random fill recorded in a CUDA graph on cuda:", device,
                                " uses seed ", seed, " counter ", offset, " but the capture's first fill from the same "
                                "generator used seed ", r->seed, " counter ", r->base,
                                ": do not reseed or rewind a generator while a graph captures"));
  return {r->state->dev, offset - r->base};
}

bool is_capturing(int device) {
  DeviceContext* s = find_device_context(device);
  return s && s->capturing.load(std::memory_order_acquire) != nullptr;
}

struct Graph::Impl {
  int device = 0;
  CapturePool pool;
  bool registered = false;  // pool is in the context's graph_pools
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

Graph::Graph(int device) : impl_(std::make_unique<Impl>()) {
  impl_->device = device;
  (void)device_context(device);  // throws for a device that does not exist
}

Graph::~Graph() {
  DeviceContext* s = find_device_context(impl_->device);
  if (!s) return;
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess || previous == impl_->device)
    previous = -1;
  else
    (void)cudaSetDevice(impl_->device);
  // Replays may still be queued: they read and write the pool's blocks. Errors here (runtime
  // unloading at exit) leave nothing to report to.
  (void)cudaStreamSynchronize(s->stream);
  if (impl_->exec) (void)cudaGraphExecDestroy(impl_->exec);
  if (impl_->graph) (void)cudaGraphDestroy(impl_->graph);
  {
    std::lock_guard<std::mutex> lock(s->capture_mutex);
    if (impl_->registered) {
      std::erase(s->graph_pools, &impl_->pool);
      s->num_graph_pools.fetch_sub(1);
    }
    // A block a tensor still holds (an output kept past its graph) is freed with that tensor.
    for (const auto& [p, n] : impl_->pool.blocks) {
      if (!impl_->pool.held.count(p)) {
        (void)cudaFree(p);
        continue;
      }
      try {
        if (s->orphans.blocks.empty()) s->num_graph_pools.fetch_add(1);
        s->orphans.blocks.emplace(p, n);
        s->orphans.held.insert(p);
      } catch (...) {
        // No host memory to record it: the block leaks rather than being freed under its tensor.
      }
    }
  }
  for (void* p : impl_->pool.deferred) (void)cudaFreeAsync(p, s->stream);
  (void)cudaGetLastError();
  if (previous >= 0) (void)cudaSetDevice(previous);
}

void Graph::capture(const std::function<void()>& record) {
  Impl& g = *impl_;
  EMBER_CHECK(!g.exec, "cuda::Graph::capture: this graph already holds a capture; make a new Graph to capture again");
  DeviceContext& s = device_context(g.device);
  DeviceGuard guard(g.device);
  {
    std::lock_guard<std::mutex> lock(s.capture_mutex);
    EMBER_CHECK(!s.capturing.load(), "cuda::Graph::capture: another graph is capturing on cuda:", g.device,
                " already (one capture per device at a time)");
    s.graph_pools.push_back(&g.pool);
    s.num_graph_pools.fetch_add(1);
    g.registered = true;
    s.capturing.store(&g.pool, std::memory_order_release);
  }
  // Work queued before capture runs before the first replay, not inside the graph.
  EMBER_CUDA_CHECK(cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  // Nothing captured runs now: each generator the step drew from goes back to its first captured
  // counter, so the first replay draws what an eager step would have drawn (and a failed capture,
  // redone eagerly, draws them once).
  auto rewind_generators = [&] {
    for (const CaptureRng& r : g.pool.rng) r.generator->set_state(r.seed, r.base);
  };
  try {
    record();
    // The graph's last nodes: each generator's device counter moves past every counter the step
    // reserved, so the next replay (and the host, advanced by replay()) continues after them.
    for (CaptureRng& r : g.pool.rng) {
      EMBER_CHECK(r.generator->seed() == r.seed && r.generator->offset() >= r.base,
                  "cuda::Graph::capture: a generator the captured step drew from was reseeded or rewound during the "
                  "capture (seed ", r.generator->seed(), ", counter ", r.generator->offset(), "; its first captured "
                  "draw used seed ", r.seed, ", counter ", r.base, ")");
      r.total = r.generator->offset() - r.base;
      kernels::rng_state_advance(r.state->dev, r.total, s.stream);
    }
  } catch (...) {
    (void)cudaStreamEndCapture(s.stream, &graph);
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    s.capturing.store(nullptr, std::memory_order_release);
    rewind_generators();
    g.pool.rng.clear();
    throw;  // the pool stays registered: tensors made during the failed capture may still be alive
  }
  const cudaError_t end = cudaStreamEndCapture(s.stream, &graph);
  s.capturing.store(nullptr, std::memory_order_release);
  rewind_generators();
  if (end != cudaSuccess) {
    g.pool.rng.clear();
    (void)cudaGetLastError();
    if (graph) (void)cudaGraphDestroy(graph);
    throw Error(detail::str_cat("cuda::Graph::capture on cuda:", g.device, ": cudaStreamEndCapture failed with ",
                                cudaGetErrorName(end), " (", cudaGetErrorString(end),
                                "): the recorded code did something stream capture does not allow (a call on another "
                                "stream that waits on this one, or a synchronising CUDA call); run it eagerly"));
  }
  g.graph = graph;
  EMBER_CUDA_CHECK(cudaGraphInstantiate(&g.exec, g.graph, 0));
}

void Graph::replay() {
  EMBER_CHECK(impl_->exec, "cuda::Graph::replay: nothing captured yet; call capture() first");
  DeviceContext& s = device_context(impl_->device);
  check_not_capturing(s, "cuda::Graph::replay");
  DeviceGuard guard(impl_->device);
  std::lock_guard<std::mutex> lock(s.capture_mutex);
  // Each generator's device state must hold the host generator's (seed, counter) when the graph
  // starts: true after a replay (its last node advanced it as replay() advances the host), so it
  // is written only after eager draws, a reseed, or on the first replay.
  for (const CaptureRng& r : impl_->pool.rng) {
    RngDeviceState& st = *r.state;
    const uint64_t seed = r.generator->seed(), offset = r.generator->offset();
    if (!st.known || st.seed != seed || st.offset != offset) {
      st.known = false;  // until the write is queued
      kernels::rng_state_set(st.dev, seed, offset, s.stream);
      st.seed = seed;
      st.offset = offset;
      st.known = true;
    }
  }
  EMBER_CUDA_CHECK(cudaGraphLaunch(impl_->exec, s.stream));
  for (const CaptureRng& r : impl_->pool.rng) {
    r.generator->advance(r.total);
    r.state->offset = r.generator->offset();
  }
}

bool Graph::captured() const { return impl_->exec != nullptr; }
int Graph::device() const { return impl_->device; }
size_t Graph::pool_bytes() const { return impl_->pool.bytes; }

}  // namespace ember::cuda
