// Elementwise maps over tensors of any strides: out[i] = f(in_0[i], ..., in_k[i]) with k >= 0.
// The functor holds the arithmetic (from elementwise_math.h); this file holds only the indexing:
// a contiguous grid-stride loop (16-byte vectorized for f32), and a strided one that splits the
// linear index into coordinates with 32-bit divisions over at most 8 coalesced dims.
#pragma once
#include <array>
#include <climits>
#include <utility>
#include <vector>

#include "cuda/kernels/common.cuh"

namespace ember::cuda::kernels {

constexpr int kMaxDims = 8;
// A strided launch covers fewer than 2^31 elements, so its 32-bit grid-stride index never wraps
// and the divisions stay 32-bit (a 64-bit division costs several times more); offsets are 64-bit,
// so a view into a buffer of any size is one launch. Tensors past 2^31 elements or 8 dims are cut
// into pieces on the host (see cut_pieces).
constexpr int64_t kMaxIndex32 = INT32_MAX;

// Offsets of N operands for a linear index. Dims are stored innermost first; the outermost needs
// no division, since what is left of the index after the inner dims is its coordinate.
template <int N>
struct StridedOffsets {
  int ndim = 1;
  uint32_t size[kMaxDims];
  int64_t stride[N][kMaxDims];

  __host__ __device__ __forceinline__ void get(uint32_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      if (d == ndim - 1) {
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += int64_t(i) * stride[k][d];
        break;
      }
      const uint32_t q = i / size[d];
      const uint32_t r = i - q * size[d];
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += int64_t(r) * stride[k][d];
      i = q;
    }
  }
};

template <class T>
struct Operand {
  T* data;
  const Shape* strides;
};

template <class T>
Operand<T> operand(const Tensor& t) {
  return {ptr<T>(t), &t.strides()};
}

template <class F, class Out, class... In>
__global__ void map_contiguous_kernel(int64_t n, F f, Out* out, const In*... in) {
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += step) out[i] = f(in[i]...);
}

template <class F>
__device__ __forceinline__ float4 apply4(const F& f, float4 a) {
  return make_float4(f(a.x), f(a.y), f(a.z), f(a.w));
}
template <class F>
__device__ __forceinline__ float4 apply4(const F& f, float4 a, float4 b) {
  return make_float4(f(a.x, b.x), f(a.y, b.y), f(a.z, b.z), f(a.w, b.w));
}

// All-f32 contiguous operands, 16-byte aligned: one 128-bit load per operand per 4 elements
// (fewer, wider memory transactions), then a scalar loop over the n % 4 tail.
template <class F, class... In>
__global__ void map_vec4_kernel(int64_t n, F f, float* out, const In*... in) {
  static_assert((std::is_same_v<In, float> && ...), "map_vec4_kernel takes f32 operands");
  const int64_t n4 = n / 4;
  const int64_t step = int64_t(blockDim.x) * gridDim.x;
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = t; i < n4; i += step)
    reinterpret_cast<float4*>(out)[i] = apply4(f, reinterpret_cast<const float4*>(in)[i]...);
  for (int64_t i = n4 * 4 + t; i < n; i += step) out[i] = f(in[i]...);
}

template <class F, class Out, class... In, size_t... K>
__device__ __forceinline__ void map_at(const int64_t* off, const F& f, Out* out, std::index_sequence<K...>,
                                       const In*... in) {
  out[off[0]] = f(in[off[K + 1]]...);
}

template <class F, class Out, class... In>
__global__ void map_strided_kernel(uint32_t n, StridedOffsets<1 + sizeof...(In)> g, F f, Out* out, const In*... in) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    int64_t off[1 + sizeof...(In)];
    g.get(i, off);
    map_at(off, f, out, std::index_sequence_for<In...>{}, in...);
  }
}

// The shape with extent-1 dims dropped and neighbours merged where every operand steps through
// them as through one dim (outer stride == inner stride * inner size). Outermost first.
template <int N>
struct Geometry {
  std::vector<int64_t> size;
  std::array<std::vector<int64_t>, N> stride;
};

template <int N>
Geometry<N> coalesce(const Shape& shape, const std::array<const Shape*, N>& strides) {
  Geometry<N> g;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !g.size.empty();
    for (int k = 0; k < N && merge; ++k) merge = g.stride[k].back() == (*strides[k])[d] * shape[d];
    if (merge) {
      g.size.back() *= shape[d];
      for (int k = 0; k < N; ++k) g.stride[k].back() = (*strides[k])[d];
      continue;
    }
    g.size.push_back(shape[d]);
    for (int k = 0; k < N; ++k) g.stride[k].push_back((*strides[k])[d]);
  }
  return g;
}

template <int N>
struct Piece {
  StridedOffsets<N> offsets;
  std::array<int64_t, N> base;  // element offset of the piece's first element, per operand
  int64_t count;
};

// How a map runs: one flat loop when every operand is contiguous (after coalescing), else strided
// pieces of at most kMaxDims dims and kMaxIndex32 elements. Nearly every tensor is one piece;
// cuts only happen past 2^31 elements or 8 coalesced dims. Templated on the operand count only,
// so the host code is not repeated for every functor.
template <int N>
struct MapPlan {
  int64_t n = 0;
  bool contiguous = false;
  std::vector<Piece<N>> pieces;
};

// Cuts dims [d0, ndim) of `g` into pieces, appending them to `out`.
template <int N>
void cut_pieces(const Geometry<N>& g, size_t d0, std::array<int64_t, N> base, std::vector<Piece<N>>& out) {
  const size_t nd = g.size.size();
  int64_t inner_numel = 1;  // elements in one index of dim d0
  for (size_t d = d0 + 1; d < nd; ++d) inner_numel *= g.size[d];
  if (nd - d0 > size_t(kMaxDims) || inner_numel > kMaxIndex32) {
    for (int64_t i = 0; i < g.size[d0]; ++i) {
      std::array<int64_t, N> b = base;
      for (int k = 0; k < N; ++k) b[k] += i * g.stride[k][d0];
      cut_pieces<N>(g, d0 + 1, b, out);
    }
    return;
  }
  const int64_t chunk = std::min(g.size[d0], kMaxIndex32 / inner_numel);  // indices of dim d0 per piece
  Piece<N> piece;
  StridedOffsets<N>& so = piece.offsets;
  so.ndim = static_cast<int>(nd - d0);
  for (int j = 0; j < so.ndim; ++j) {
    const size_t d = nd - 1 - j;
    so.size[j] = static_cast<uint32_t>(g.size[d]);
    for (int k = 0; k < N; ++k) so.stride[k][j] = g.stride[k][d];
  }
  for (int64_t i0 = 0; i0 < g.size[d0]; i0 += chunk) {
    const int64_t len = std::min(chunk, g.size[d0] - i0);
    so.size[so.ndim - 1] = static_cast<uint32_t>(len);
    piece.base = base;
    for (int k = 0; k < N; ++k) piece.base[k] += i0 * g.stride[k][d0];
    piece.count = len * inner_numel;
    out.push_back(piece);
  }
}

template <int N>
MapPlan<N> plan_map(const Shape& shape, const std::array<const Shape*, N>& strides) {
  MapPlan<N> plan;
  plan.n = shape_numel(shape);
  if (plan.n == 0) return plan;
  const Geometry<N> g = coalesce<N>(shape, strides);
  plan.contiguous = g.size.size() <= 1;
  for (int k = 0; k < N && plan.contiguous && !g.size.empty(); ++k) plan.contiguous = g.stride[k][0] == 1;
  if (!plan.contiguous) cut_pieces<N>(g, 0, std::array<int64_t, N>{}, plan.pieces);
  return plan;
}

template <class F, class Out, class... In, size_t... K>
void launch_strided_piece(std::index_sequence<K...>, const Piece<1 + sizeof...(In)>& p, cudaStream_t stream,
                          const F& f, Out* out, const In*... in) {
  map_strided_kernel<F, Out, In...><<<blocks_for(p.count), kThreads, 0, stream>>>(
      static_cast<uint32_t>(p.count), p.offsets, f, out + p.base[0], (in + p.base[K + 1])...);
  EMBER_CUDA_LAUNCH_CHECK("map_strided_kernel");
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// out = f(in...) elementwise over `shape`; every operand has its own strides.
template <class F, class Out, class... In>
void launch_map(const Shape& shape, cudaStream_t stream, const F& f, Operand<Out> out, Operand<const In>... in) {
  constexpr int N = 1 + sizeof...(In);
  const MapPlan<N> plan = plan_map<N>(shape, {out.strides, in.strides...});
  if (plan.n == 0) return;
  if (plan.contiguous) {
    constexpr bool kVec4 = std::is_same_v<Out, float> && (std::is_same_v<In, float> && ...) &&
                           (sizeof...(In) == 1 || sizeof...(In) == 2);
    if constexpr (kVec4) {
      if (aligned16(out.data) && (aligned16(in.data) && ...)) {
        map_vec4_kernel<F, In...><<<blocks_for((plan.n + 3) / 4), kThreads, 0, stream>>>(plan.n, f, out.data,
                                                                                          in.data...);
        EMBER_CUDA_LAUNCH_CHECK("map_vec4_kernel");
        return;
      }
    }
    map_contiguous_kernel<F, Out, In...><<<blocks_for(plan.n), kThreads, 0, stream>>>(plan.n, f, out.data, in.data...);
    EMBER_CUDA_LAUNCH_CHECK("map_contiguous_kernel");
    return;
  }
  for (const Piece<N>& p : plan.pieces)
    launch_strided_piece<F, Out, In...>(std::index_sequence_for<In...>{}, p, stream, f, out.data, in.data...);
}

}  // namespace ember::cuda::kernels
