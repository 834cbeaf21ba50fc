// Optimizer updates: every parameter of one OptimizerStep in ONE kernel launch, with no
// host-to-device copy in a steady training loop. The launcher builds a table (pointers, size, first
// chunk, which scalar set) on the host; the device copy of that table is cached by its bytes, so an
// optimizer stepping the same parameters uploads it once. The per-step scalars (lr, bias corrections,
// ...) differ in at most a few sets (one per param group and step count) and travel by value in the
// kernel's arguments. One block per chunk of kChunk elements; a block finds its parameter by binary
// search over the chunk offsets. The per-element arithmetic is optim_math.h, the same code the CPU
// reference runs.
#include <cstring>
#include <mutex>
#include <vector>

#include "cpp/backend/optim_math.h"
#include "cuda/cuda_backend.h"
#include "cuda/kernels/common.cuh"
#include "cuda/nvtx.h"

namespace ember {
namespace cuda::kernels {
namespace {

// Elements per block: eight per thread keeps blocks busy without starving small parameters.
constexpr int64_t kChunk = int64_t(kThreads) * 8;

// Every field is 8 bytes wide: no padding, so equal tables are equal bytes (the cache's key).
template <class T>
struct OptimEntry {
  T* param;
  const T* grad;
  T* state0;
  T* state1;
  T* state2;
  int64_t numel;
  int64_t first_chunk;  // blocks [first_chunk, first_chunk + ceil(numel / kChunk)) update this entry
  int64_t set;          // which of the launch's scalar sets this parameter uses
};

// Distinct scalar sets passed by value (kernel arguments: 8 x 88 bytes at most, well inside the limit).
constexpr int kMaxScalarSets = 8;
template <class T>
struct ScalarSets {
  optim_math::Scalars<T> s[kMaxScalarSets];
};

template <class T>
bool same_scalars(const optim_math::Scalars<T>& a, const optim_math::Scalars<T>& b) {
  return a.step_size == b.step_size && a.weight_decay == b.weight_decay && a.decay_factor == b.decay_factor &&
         a.momentum == b.momentum && a.dampening_complement == b.dampening_complement &&
         a.beta1_complement == b.beta1_complement && a.beta2 == b.beta2 && a.beta2_complement == b.beta2_complement &&
         a.eps == b.eps && a.bias_correction2_sqrt == b.bias_correction2_sqrt &&
         a.has_weight_decay == b.has_weight_decay && a.maximize == b.maximize && a.nesterov == b.nesterov &&
         a.first_step == b.first_step && a.amsgrad == b.amsgrad &&
         a.decoupled_weight_decay == b.decoupled_weight_decay && a.centered == b.centered;
}

// Device copies of recent tables, found by their bytes. Entries live until evicted (least recently
// used first); a freed entry is released on the compute stream, after the launches that read it.
class TableCache {
 public:
  const void* get(const void* host, size_t bytes, int device) {
    std::lock_guard<std::mutex> lock(mu_);
    ++clock_;
    for (Entry& e : entries_)
      if (e.device == device && e.bytes.size() == bytes && std::memcmp(e.bytes.data(), host, bytes) == 0) {
        e.last_use = clock_;
        return e.ptr;
      }
    if (entries_.size() == kCapacity) {
      size_t oldest = 0;
      for (size_t i = 1; i < entries_.size(); ++i)
        if (entries_[i].last_use < entries_[oldest].last_use) oldest = i;
      device_free(entries_[oldest].ptr, entries_[oldest].bytes.size(), entries_[oldest].device);
      entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(oldest));
    }
    Entry e;
    const auto* b = static_cast<const unsigned char*>(host);
    e.bytes.assign(b, b + bytes);
    e.device = device;
    e.last_use = clock_;
    e.ptr = device_allocate(bytes, device);
    copy_host_to_device(e.ptr, host, bytes, device);
    entries_.push_back(std::move(e));
    return entries_.back().ptr;
  }

 private:
  struct Entry {
    std::vector<unsigned char> bytes;
    void* ptr = nullptr;
    int device = 0;
    uint64_t last_use = 0;
  };
  static constexpr size_t kCapacity = 16;
  std::mutex mu_;
  uint64_t clock_ = 0;
  std::vector<Entry> entries_;
};

TableCache& table_cache() {
  static TableCache* cache = new TableCache;  // never destroyed: see DeviceState
  return *cache;
}

// Scalars from `sets` by the entry's set, or, when a step has more distinct sets than fit in the
// arguments, from `per_entry` (uploaded for that step).
template <OptimizerAlgo A, class T>
__global__ void optimizer_step_kernel(const OptimEntry<T>* __restrict__ table, int count, ScalarSets<T> sets,
                                      const optim_math::Scalars<T>* __restrict__ per_entry) {
  const auto chunk = static_cast<int64_t>(blockIdx.x);
  // The last entry whose first chunk is at or before this block's (entries are in chunk order).
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const OptimEntry<T> e = table[lo];
  const optim_math::Scalars<T> scalars = per_entry ? per_entry[lo] : sets.s[e.set];
  const int64_t begin = (chunk - e.first_chunk) * kChunk;
  const int64_t end = begin + kChunk < e.numel ? begin + kChunk : e.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    optim_math::update_element<A, T>(e.param, e.grad, e.state0, e.state1, e.state2, i, scalars);
}

template <class T>
T* optional_ptr(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

template <class T>
void launch(OptimizerAlgo algo, const std::vector<OptimEntry<T>>& table, const ScalarSets<T>& sets,
            const std::vector<optim_math::Scalars<T>>& per_entry, int64_t chunks, int device, cudaStream_t stream) {
  const auto* t = static_cast<const OptimEntry<T>*>(
      table_cache().get(table.data(), table.size() * sizeof(OptimEntry<T>), device));
  // Only when the scalars did not fit in the arguments: this step's copy, freed on the stream after the launch.
  const size_t scalar_bytes = per_entry.size() * sizeof(optim_math::Scalars<T>);
  Scratch device_scalars(scalar_bytes, device);
  if (scalar_bytes) copy_host_to_device(device_scalars.as<void>(), per_entry.data(), scalar_bytes, device);
  const auto* pe = scalar_bytes ? device_scalars.as<optim_math::Scalars<T>>() : nullptr;
  const int count = static_cast<int>(table.size());
  const auto grid = static_cast<unsigned>(chunks);
  switch (algo) {
    case OptimizerAlgo::Sgd:
      optimizer_step_kernel<OptimizerAlgo::Sgd, T><<<grid, kThreads, 0, stream>>>(t, count, sets, pe);
      break;
    case OptimizerAlgo::Adam:
      optimizer_step_kernel<OptimizerAlgo::Adam, T><<<grid, kThreads, 0, stream>>>(t, count, sets, pe);
      break;
    case OptimizerAlgo::Rmsprop:
      optimizer_step_kernel<OptimizerAlgo::Rmsprop, T><<<grid, kThreads, 0, stream>>>(t, count, sets, pe);
      break;
    case OptimizerAlgo::Adagrad:
      optimizer_step_kernel<OptimizerAlgo::Adagrad, T><<<grid, kThreads, 0, stream>>>(t, count, sets, pe);
      break;
  }
  EMBER_CUDA_LAUNCH_CHECK("optimizer_step_kernel");
}

void optimizer_step(const OptimizerStep& s, int device, cudaStream_t stream) {
  visit_floating(s.params[0].param.dtype(), "optimizer_step", [&]<class T>() {
    std::vector<OptimEntry<T>> table;
    std::vector<optim_math::Scalars<T>> scalars;  // one per entry
    table.reserve(s.params.size());
    int64_t chunks = 0;
    for (const OptimizerParam& p : s.params) {
      const int64_t n = p.param.numel();
      if (n == 0) continue;
      table.push_back({ptr<T>(p.param), ptr<T>(p.grad), optional_ptr<T>(p.state[0]), optional_ptr<T>(p.state[1]),
                       optional_ptr<T>(p.state[2]), n, chunks, 0});
      scalars.push_back(optim_math::cast_scalars<T>(p.hyper));
      chunks += (n + kChunk - 1) / kChunk;
    }
    if (table.empty()) return;
    EMBER_CHECK(chunks <= int64_t(0x7fffffff), "optimizer_step: ", chunks, " blocks exceed the grid limit");
    ScalarSets<T> sets{};
    int num_sets = 0;
    bool fits = true;
    for (size_t i = 0; i < table.size() && fits; ++i) {
      int k = 0;
      while (k < num_sets && !same_scalars(sets.s[k], scalars[i])) ++k;
      if (k == num_sets) {
        if (num_sets == kMaxScalarSets) {
          fits = false;
          break;
        }
        sets.s[num_sets++] = scalars[i];
      }
      table[i].set = k;
    }
    if (fits) {
      launch<T>(s.algo, table, sets, {}, chunks, device, stream);
    } else {
      for (OptimEntry<T>& e : table) e.set = 0;
      launch<T>(s.algo, table, sets, scalars, chunks, device, stream);
    }
  });
}

}  // namespace
}  // namespace cuda::kernels

void CudaBackend::optimizer_step(const OptimizerStep& s) {
  if (s.params.empty()) return;
  const Device device = s.params[0].param.device();
  EMBER_CHECK(device.is_cuda(), "cuda backend: optimizer_step got parameters on ", device.str());
  cuda::NvtxRange range("optimizer_step");
  cuda::DeviceGuard guard(device.index);
  cuda::kernels::optimizer_step(s, device.index, cuda::stream_for(device));
}

}  // namespace ember
