// Kernels for fill, copy with dtype conversion (any strides), and the counter-based random fills.
#include <cmath>

#include "cpp/backend/philox.h"
#include "cuda/kernels/kernels.h"
#include "cuda/kernels/map.cuh"

namespace ember::cuda::kernels {
namespace {

template <class T>
struct FillF {
  T value;
  __device__ T operator()() const { return value; }
};

template <class D, class S>
struct CastF {
  __device__ D operator()(S x) const { return static_cast<D>(x); }
};

// A same-dtype copy moves bits, so one kernel per element size serves every dtype.
template <size_t kSize>
using Bits = std::conditional_t<kSize == 1, uint8_t,
                                std::conditional_t<kSize == 2, uint16_t, std::conditional_t<kSize == 4, uint32_t, uint64_t>>>;

template <size_t kSize>
void copy_bits(const Tensor& dst, const Tensor& src, cudaStream_t stream) {
  using B = Bits<kSize>;
  launch_map(dst.shape(), stream, CastF<B, B>{}, operand<B>(dst), operand<const B>(src));
}

// Element i takes counter offset + i, exactly as the CPU loop does, and the arithmetic around the
// philox.h conversions uses explicitly rounded operations: nvcc would otherwise contract
// a + (b - a) * u into an FMA and the result could differ from the CPU's in the last bit.
// In a captured fill (state set) the seed and the counter base come from the generator's device
// state when the kernel runs, so each replay draws the counters the host generator is at then.
template <class T>
__global__ void random_kernel(T* out, int64_t n, RandomParams p, const uint64_t* state) {
  if (state) {
    p.seed = state[0];
    p.offset += state[1];
  }
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += step) {
    const uint64_t counter = p.offset + static_cast<uint64_t>(i);
    switch (p.kind) {
      case RandomKind::Uniform:
        out[i] = static_cast<T>(__dadd_rn(p.a, __dmul_rn(__dsub_rn(p.b, p.a), philox::uniform(p.seed, counter))));
        break;
      case RandomKind::Normal:
        out[i] = static_cast<T>(__dadd_rn(p.a, __dmul_rn(p.b, philox::normal(p.seed, counter))));
        break;
      case RandomKind::Int:
        out[i] = static_cast<T>(
            philox::integer(p.seed, counter, static_cast<int64_t>(p.a), static_cast<int64_t>(p.b)));
        break;
      case RandomKind::Bernoulli:
        out[i] = static_cast<T>(philox::uniform(p.seed, counter) < p.a ? 1 : 0);
        break;
    }
  }
}

__global__ void rng_state_set_kernel(uint64_t* state, uint64_t seed, uint64_t offset) {
  state[0] = seed;
  state[1] = offset;
}

__global__ void rng_state_advance_kernel(uint64_t* state, uint64_t n) { state[1] += n; }

}  // namespace

void rng_state_set(uint64_t* state, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  rng_state_set_kernel<<<1, 1, 0, stream>>>(state, seed, offset);
  EMBER_CUDA_LAUNCH_CHECK("rng_state_set_kernel");
}

void rng_state_advance(uint64_t* state, uint64_t n, cudaStream_t stream) {
  rng_state_advance_kernel<<<1, 1, 0, stream>>>(state, n);
  EMBER_CUDA_LAUNCH_CHECK("rng_state_advance_kernel");
}

void fill(const Tensor& out, double value, cudaStream_t stream) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (value == 0.0 && !std::signbit(value) && out.is_contiguous()) {
    // All-zero bytes are zero in every dtype: let the copy engine do it.
    EMBER_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, static_cast<size_t>(n) * dtype_size(out.dtype()), stream));
    return;
  }
  visit_dtype(out.dtype(), "fill", [&]<class T>() {
    launch_map(out.shape(), stream, FillF<T>{static_cast<T>(value)}, operand<T>(out));
  });
}

void copy(const Tensor& dst, const Tensor& src, cudaStream_t stream) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  if (dst.dtype() == src.dtype()) {
    const size_t elem = dtype_size(dst.dtype());
    if (dst.is_contiguous() && src.is_contiguous()) {
      if (dst.data_ptr() != src.data_ptr())
        EMBER_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), static_cast<size_t>(n) * elem,
                                         cudaMemcpyDeviceToDevice, stream));
      return;
    }
    switch (elem) {
      case 1: return copy_bits<1>(dst, src, stream);
      case 2: return copy_bits<2>(dst, src, stream);
      case 4: return copy_bits<4>(dst, src, stream);
      default: return copy_bits<8>(dst, src, stream);
    }
  }
  visit_dtype(dst.dtype(), "copy", [&]<class D>() {
    visit_dtype(src.dtype(), "copy", [&]<class S>() {
      if constexpr (!std::is_same_v<D, S>)
        launch_map(dst.shape(), stream, CastF<D, S>{}, operand<D>(dst), operand<const S>(src));
    });
  });
}

void random(const Tensor& out, const RandomParams& p, cudaStream_t stream, const uint64_t* state) {
  // The kernel's switch cannot throw: a value outside the enum stops here, before the launch.
  switch (p.kind) {
    case RandomKind::Uniform:
    case RandomKind::Normal:
    case RandomKind::Int:
    case RandomKind::Bernoulli: break;
    default: throw_unhandled("random", "RandomKind", static_cast<int>(p.kind), "cuda");
  }
  const int64_t n = out.numel();
  if (n == 0) return;
  visit_dtype(out.dtype(), "random", [&]<class T>() {
    random_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(ptr<T>(out), n, p, state);
    EMBER_CUDA_LAUNCH_CHECK("random_kernel");
  });
}

}  // namespace ember::cuda::kernels
