// Optimizer updates: every parameter of one OptimizerStep in ONE kernel launch. The launcher
// builds a table (pointers, size, first chunk, the parameter's scalars) on the host, copies it to
// the device through pinned staging (asynchronously), and launches one block per chunk of
// kChunk elements; a block finds its parameter by binary search over the chunk offsets. The
// per-element arithmetic is optim_math.h, the same code the CPU reference runs.
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

template <class T>
struct OptimEntry {
  T* param;
  const T* grad;
  T* state0;
  T* state1;
  T* state2;
  int64_t numel;
  int64_t first_chunk;  // blocks [first_chunk, first_chunk + ceil(numel / kChunk)) update this entry
  optim_math::Scalars<T> scalars;
};

template <OptimizerAlgo A, class T>
__global__ void optimizer_step_kernel(const OptimEntry<T>* __restrict__ table, int count) {
  const auto chunk = static_cast<int64_t>(blockIdx.x);
  // The last entry whose first chunk is at or before this block's (entries are in chunk order).
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const OptimEntry<T> e = table[lo];
  const int64_t begin = (chunk - e.first_chunk) * kChunk;
  const int64_t end = begin + kChunk < e.numel ? begin + kChunk : e.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    optim_math::update_element<A, T>(e.param, e.grad, e.state0, e.state1, e.state2, i, e.scalars);
}

template <class T>
T* optional_ptr(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

template <class T>
void launch(OptimizerAlgo algo, const std::vector<OptimEntry<T>>& table, int64_t chunks, int device,
            cudaStream_t stream) {
  const size_t bytes = table.size() * sizeof(OptimEntry<T>);
  Scratch device_table(bytes, device);
  copy_host_to_device(device_table.as<void>(), table.data(), bytes, device);
  const auto* t = device_table.as<OptimEntry<T>>();
  const int count = static_cast<int>(table.size());
  const auto grid = static_cast<unsigned>(chunks);
  switch (algo) {
    case OptimizerAlgo::Sgd:
      optimizer_step_kernel<OptimizerAlgo::Sgd, T><<<grid, kThreads, 0, stream>>>(t, count);
      break;
    case OptimizerAlgo::Adam:
      optimizer_step_kernel<OptimizerAlgo::Adam, T><<<grid, kThreads, 0, stream>>>(t, count);
      break;
    case OptimizerAlgo::Rmsprop:
      optimizer_step_kernel<OptimizerAlgo::Rmsprop, T><<<grid, kThreads, 0, stream>>>(t, count);
      break;
    case OptimizerAlgo::Adagrad:
      optimizer_step_kernel<OptimizerAlgo::Adagrad, T><<<grid, kThreads, 0, stream>>>(t, count);
      break;
  }
  EMBER_CUDA_LAUNCH_CHECK("optimizer_step_kernel");
}

void optimizer_step(const OptimizerStep& s, int device, cudaStream_t stream) {
  visit_floating(s.params[0].param.dtype(), "optimizer_step", [&]<class T>() {
    std::vector<OptimEntry<T>> table;
    table.reserve(s.params.size());
    int64_t chunks = 0;
    for (const OptimizerParam& p : s.params) {
      const int64_t n = p.param.numel();
      if (n == 0) continue;
      table.push_back({ptr<T>(p.param), ptr<T>(p.grad), optional_ptr<T>(p.state[0]), optional_ptr<T>(p.state[1]),
                       optional_ptr<T>(p.state[2]), n, chunks, optim_math::cast_scalars<T>(p.hyper)});
      chunks += (n + kChunk - 1) / kChunk;
    }
    if (table.empty()) return;
    EMBER_CHECK(chunks <= int64_t(0x7fffffff), "optimizer_step: ", chunks, " blocks exceed the grid limit");
    launch<T>(s.algo, table, chunks, device, stream);
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
