// Shared by the kernel families: dtype dispatch, grid sizing for grid-stride loops, typed data
// pointers and warp shuffles for any element type.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpp/backend/backend.h"
#include "cpp/backend/dtype_visit.h"
#include "cpp/core/tensor_impl.h"
#include "cuda/check.h"
#include "cuda/runtime.h"

namespace ember::cuda::kernels {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
T* ptr(const Tensor& t) {
  return reinterpret_cast<T*>(t.impl()->data());
}

// Blocks for a grid-stride loop over `n` items: a few waves of full occupancy at most, since more
// blocks would only add scheduling work.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t needed = (n + threads - 1) / threads;
  const int64_t cap = int64_t(current_sm_count()) * (2048 / threads) * 4;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(needed, cap)));
}

using ember::visit_dtype;  // dtype_visit.h, shared with the CPU loops
using ember::visit_floating;

// Warp shuffles for every element type: types narrower than 32 bits travel as int (bf16/f16 as
// their bit pattern).
template <class T>
__device__ __forceinline__ T shfl_down(T v, unsigned delta) {
  if constexpr (is_lowp_v<T>) return T::from_bits(static_cast<uint16_t>(__shfl_down_sync(kFullMask, int(v.bits), delta)));
  else if constexpr (sizeof(T) < 4) return static_cast<T>(__shfl_down_sync(kFullMask, static_cast<int>(v), delta));
  else return __shfl_down_sync(kFullMask, v, delta);
}

template <class T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
  if constexpr (is_lowp_v<T>) return T::from_bits(static_cast<uint16_t>(__shfl_xor_sync(kFullMask, int(v.bits), mask)));
  else if constexpr (sizeof(T) < 4) return static_cast<T>(__shfl_xor_sync(kFullMask, static_cast<int>(v), mask));
  else return __shfl_xor_sync(kFullMask, v, mask);
}

}  // namespace ember::cuda::kernels
