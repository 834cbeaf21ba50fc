// Optimizer updates: the parameters of one OptimizerStep in one kernel launch per 48 of them, with
// nothing copied from the host: the launch's table (pointers, size, first chunk, which scalar set)
// and the per-step scalars (lr, bias corrections, ...; one set per param group and step count, at
// most 8 per launch) travel in the kernel's arguments, a __grid_constant__ struct under the 4 KB
// argument limit, as PyTorch's multi_tensor_apply does. Any number of parameters takes
// ceil(n / 48) launches (more when a launch would need a 9th scalar set). One block per chunk of
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
constexpr int kMaxEntries = 48;
constexpr int kMaxScalarSets = 8;

template <class T>
struct OptimEntry {
  T* param;
  const T* grad;
  T* state0;
  T* state1;
  T* state2;
  int64_t numel;
  int64_t first_chunk;  // blocks [first_chunk, first_chunk + ceil(numel / kChunk)) update this entry
  int64_t set;          // which of the launch's scalar sets this parameter uses; with device_hyper, the
                        // parameter's index in device_hyper
};

template <class T>
struct OptimLaunch {
  OptimEntry<T> entries[kMaxEntries];
  optim_math::Scalars<T> sets[kMaxScalarSets];
  const OptimizerHyper* device_hyper;  // capturable: the scalars are read here when the kernel runs
  int count;
};
static_assert(sizeof(OptimLaunch<double>) <= 4000, "an OptimLaunch must fit in the 4 KB of kernel arguments");

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

// __grid_constant__: the argument is read in place (no per-thread copy) even though it is indexed.
template <OptimizerAlgo A, class T>
__global__ void optimizer_step_kernel(const __grid_constant__ OptimLaunch<T> launch) {
  const auto chunk = static_cast<int64_t>(blockIdx.x);
  // The last entry whose first chunk is at or before this block's (entries are in chunk order).
  int lo = 0, hi = launch.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (launch.entries[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const OptimEntry<T>& e = launch.entries[lo];
  // Capturable: the same cast of the same OptimizerHyper the host would have put in `sets`, done
  // when the kernel runs, from the values written before this launch (or replay).
  const optim_math::Scalars<T> scalars =
      launch.device_hyper ? optim_math::cast_scalars<T>(launch.device_hyper[e.set]) : launch.sets[e.set];
  const int64_t begin = (chunk - e.first_chunk) * kChunk;
  const int64_t end = begin + kChunk < e.numel ? begin + kChunk : e.numel;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    optim_math::update_element<A, T>(e.param, e.grad, e.state0, e.state1, e.state2, i, scalars);
}

// Capturable updates: each parameter's step count advanced and its scalars computed from its group's
// options, on the device, by the arithmetic the host runs for an eager step (optim_math::hyper_at),
// so a replayed graph follows a schedule's lr and counts its own steps.
__global__ void optimizer_scalars_kernel(OptimizerAlgo algo, const OptimizerInputs* groups,
                                         OptimizerParamScalars* params, OptimizerHyper* hyper, int64_t n) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    OptimizerParamScalars& r = params[i];
    const double t = __dadd_rn(r.step, 1.0);
    r.step = t;
    hyper[i] = optim_math::hyper_at(algo, groups[static_cast<int64_t>(r.group)], t, r.first_step != 0.0);
  }
}

template <class T>
T* optional_ptr(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

template <class T>
void launch(OptimizerAlgo algo, const OptimLaunch<T>& l, int64_t chunks, cudaStream_t stream) {
  EMBER_CHECK(chunks <= int64_t(0x7fffffff), "optimizer_step: ", chunks, " blocks exceed the grid limit");
  const auto grid = static_cast<unsigned>(chunks);
  switch (algo) {
    case OptimizerAlgo::Sgd: optimizer_step_kernel<OptimizerAlgo::Sgd, T><<<grid, kThreads, 0, stream>>>(l); break;
    case OptimizerAlgo::Adam: optimizer_step_kernel<OptimizerAlgo::Adam, T><<<grid, kThreads, 0, stream>>>(l); break;
    case OptimizerAlgo::Rmsprop:
      optimizer_step_kernel<OptimizerAlgo::Rmsprop, T><<<grid, kThreads, 0, stream>>>(l);
      break;
    case OptimizerAlgo::Adagrad:
      optimizer_step_kernel<OptimizerAlgo::Adagrad, T><<<grid, kThreads, 0, stream>>>(l);
      break;
    default: throw_unhandled("optimizer_step", "OptimizerAlgo", static_cast<int>(algo), "cuda");
  }
  EMBER_CUDA_LAUNCH_CHECK("optimizer_step_kernel");
}

void optimizer_step(const OptimizerStep& s, cudaStream_t stream) {
  EMBER_CHECK((s.device_groups == nullptr) == (s.device_params == nullptr) &&
                  (s.device_params == nullptr) == (s.device_hyper == nullptr),
              "optimizer_step: device_groups, device_params and device_hyper are set together");
  if (s.device_hyper) {
    const auto n = static_cast<int64_t>(s.params.size());
    switch (s.algo) {  // hyper_at's switch has no default: a value outside the enum stops here
      case OptimizerAlgo::Sgd:
      case OptimizerAlgo::Adam:
      case OptimizerAlgo::Rmsprop:
      case OptimizerAlgo::Adagrad: break;
      default: throw_unhandled("optimizer_step", "OptimizerAlgo", static_cast<int>(s.algo), "cuda");
    }
    optimizer_scalars_kernel<<<blocks_for(n), kThreads, 0, stream>>>(s.algo, s.device_groups, s.device_params,
                                                                       s.device_hyper, n);
    EMBER_CUDA_LAUNCH_CHECK("optimizer_scalars_kernel");
  }
  visit_floating(s.params[0].param.dtype(), "optimizer_step", [&]<class T>() {
    OptimLaunch<T> l{};
    l.device_hyper = s.device_hyper;
    int num_sets = 0;
    int64_t chunks = 0;
    for (size_t index = 0; index < s.params.size(); ++index) {
      const OptimizerParam& p = s.params[index];
      const int64_t n = p.param.numel();
      if (n == 0) continue;
      if (s.device_hyper) {  // no scalar sets: each entry names its slot of device_hyper
        if (l.count == kMaxEntries) {
          launch<T>(s.algo, l, chunks, stream);
          l = OptimLaunch<T>{};
          l.device_hyper = s.device_hyper;
          chunks = 0;
        }
        l.entries[l.count++] = {ptr<T>(p.param), ptr<T>(p.grad), optional_ptr<T>(p.state[0]),
                                optional_ptr<T>(p.state[1]), optional_ptr<T>(p.state[2]), n, chunks,
                                static_cast<int64_t>(index)};
        chunks += (n + kChunk - 1) / kChunk;
        continue;
      }
      const optim_math::Scalars<T> sc = optim_math::cast_scalars<T>(p.hyper);
      int set = 0;
      while (set < num_sets && !same_scalars(l.sets[set], sc)) ++set;
      // Full (entries, or a 9th scalar set needed): launch what is gathered and start the next.
      if (l.count == kMaxEntries || set == kMaxScalarSets) {
        launch<T>(s.algo, l, chunks, stream);
        l = OptimLaunch<T>{};
        num_sets = 0;
        chunks = 0;
        set = 0;
      }
      if (set == num_sets) l.sets[num_sets++] = sc;
      l.entries[l.count++] = {ptr<T>(p.param), ptr<T>(p.grad), optional_ptr<T>(p.state[0]),
                              optional_ptr<T>(p.state[1]), optional_ptr<T>(p.state[2]), n, chunks, set};
      chunks += (n + kChunk - 1) / kChunk;
    }
    if (l.count > 0) launch<T>(s.algo, l, chunks, stream);
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
  cuda::kernels::optimizer_step(s, cuda::stream_for(device));
}

}  // namespace ember
