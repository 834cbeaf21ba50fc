// Reductions over the middle dim of a contiguous [outer, n, inner] tensor: sum, mean, max, min,
// argmax, argmin. One kernel shape serves every case: a block of bx x by threads, where bx (a
// power of two up to 32) spans adjacent columns of `inner` and by spans the reduced dim, so a
// warp reads consecutive addresses both when inner == 1 (rows) and when inner is large (columns).
// Threads of a warp with the same column combine by shuffles, warps through shared memory.
// When [outer, inner] alone gives too few blocks, the reduced dim is split across blocks that
// write partial results, and a second pass of the same kernel combines the partials.
#include <cmath>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/kernels.h"

namespace ember::cuda::kernels {
namespace {

constexpr int kReduceThreads = 256;

template <class T>
__device__ __forceinline__ bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T> || is_lowp_v<T>) return v != v;
  else return false;
}

// Sums accumulate in double for every dtype, as the CPU reference does. A reduction is bound by
// memory bandwidth and H100/H200 run FP64 adds at half the FP32 rate, so double costs nothing
// measurable and keeps long sums with cancellation within rounding of the CPU's.
template <class T>
struct SumReducer {
  using Acc = double;
  __device__ static Acc identity() { return 0.0; }
  __device__ static Acc load(T x, int64_t) { return static_cast<double>(x); }
  __device__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ static Acc shfl(Acc a, unsigned d) { return shfl_down(a, d); }
};

template <class T, bool kMax>
struct ExtremeReducer {
  struct Acc {
    T v;
    int64_t j;  // index along n; < 0 for "no element yet"
  };
  __device__ static Acc identity() { return {T(0), -1}; }
  __device__ static Acc load(T x, int64_t j) { return {x, j}; }
  // A NaN wins, then the larger (smaller) value, then the smaller index. The rule is associative
  // and commutative, so any reduction order gives the CPU's answer: the first NaN if there is one,
  // else the first occurrence of the extreme value.
  __device__ static Acc combine(Acc a, Acc b) {
    if (a.j < 0) return b;
    if (b.j < 0) return a;
    const bool a_nan = is_nan(a.v), b_nan = is_nan(b.v);
    if (a_nan != b_nan) return a_nan ? a : b;
    if (!a_nan) {
      if (kMax ? a.v > b.v : a.v < b.v) return a;
      if (kMax ? b.v > a.v : b.v < a.v) return b;
    }
    return a.j < b.j ? a : b;
  }
  __device__ static Acc shfl(Acc a, unsigned d) { return {shfl_down(a.v, d), shfl_down(a.j, d)}; }
};

template <ReduceOp OP>
inline constexpr bool kIsSum = OP == ReduceOp::Sum || OP == ReduceOp::Mean;
template <ReduceOp OP>
inline constexpr bool kIsArg = OP == ReduceOp::ArgMax || OP == ReduceOp::ArgMin;

template <ReduceOp OP, class T>
using ReducerFor =
    std::conditional_t<kIsSum<OP>, SumReducer<T>, ExtremeReducer<T, OP == ReduceOp::Max || OP == ReduceOp::ArgMax>>;
template <ReduceOp OP, class T>
using OutFor = std::conditional_t<kIsArg<OP>, int64_t, T>;

template <ReduceOp OP, class T, class Acc>
__device__ OutFor<OP, T> finalize(const Acc& a, int64_t n) {
  if constexpr (OP == ReduceOp::Sum) return static_cast<T>(a);
  else if constexpr (OP == ReduceOp::Mean) return static_cast<T>(a / static_cast<double>(n));
  else if constexpr (kIsArg<OP>) return a.j;
  else return a.v;
}

struct ReduceShape {
  int64_t outer, n, inner;
  int64_t col_blocks;  // blocks across inner: ceil(inner / bx)
  int64_t split_len;   // elements of n per blockIdx.y
  int64_t full_n;      // the n a mean divides by (the partials pass sees n = number of splits)
};

// kPartials: `in` holds Acc partials [outer, n, inner] from a split first pass.
// kFinal: write finalized results [outer, inner]; else Acc partials [outer, gridDim.y, inner].
template <ReduceOp OP, class T, bool kPartials, bool kFinal>
__global__ void __launch_bounds__(kReduceThreads) reduce_kernel(const void* in_v, void* out_v, ReduceShape s) {
  using R = ReducerFor<OP, T>;
  using Acc = typename R::Acc;
  using Src = std::conditional_t<kPartials, Acc, T>;
  __shared__ Acc warp_partial[kReduceThreads / 32][32];
  const Src* in = static_cast<const Src*>(in_v);
  const unsigned bx = blockDim.x, by = blockDim.y;
  const unsigned tid = threadIdx.y * bx + threadIdx.x, lane = tid % 32, warp = tid / 32;
  const unsigned nwarps = (bx * by) / 32;
  const int64_t j0 = blockIdx.y * s.split_len, j1 = min(s.n, j0 + s.split_len);
  for (int64_t blk = blockIdx.x; blk < s.outer * s.col_blocks; blk += gridDim.x) {
    const int64_t o = blk / s.col_blocks;
    const int64_t i = (blk % s.col_blocks) * bx + threadIdx.x;
    Acc acc = R::identity();
    if (i < s.inner) {
      const Src* p = in + o * s.n * s.inner + i;
      for (int64_t j = j0 + threadIdx.y; j < j1; j += by) {
        if constexpr (kPartials) acc = R::combine(acc, p[j * s.inner]);
        else acc = R::combine(acc, R::load(p[j * s.inner], j));
      }
    }
    // Lanes l and l + d (d a multiple of bx) hold the same column: after the tree, lanes < bx
    // hold their warp's result for column `lane`.
    for (unsigned d = 16; d >= bx; d >>= 1) acc = R::combine(acc, R::shfl(acc, d));
    if (lane < bx) warp_partial[warp][lane] = acc;
    __syncthreads();
    if (tid < bx && i < s.inner) {  // tid < bx: threadIdx.y == 0 and threadIdx.x == tid
      Acc r = warp_partial[0][tid];
      for (unsigned w = 1; w < nwarps; ++w) r = R::combine(r, warp_partial[w][tid]);
      if constexpr (kFinal) static_cast<OutFor<OP, T>*>(out_v)[o * s.inner + i] = finalize<OP, T>(r, s.full_n);
      else static_cast<Acc*>(out_v)[(o * gridDim.y + blockIdx.y) * s.inner + i] = r;
    }
    __syncthreads();  // warp_partial is reused by the next block-loop iteration
  }
}

struct BlockShape {
  unsigned bx, by;
};

// bx covers inner (up to a warp), by the reduced dim; blocks shrink for short n, down to one warp.
BlockShape block_shape(int64_t n, int64_t inner) {
  unsigned bx = 1;
  while (bx < 32 && bx < inner) bx *= 2;
  unsigned by = kReduceThreads / bx;
  while (by > 1 && by / 2 >= n && bx * (by / 2) >= 32) by /= 2;
  return {bx, by};
}

template <ReduceOp OP, class T, bool kPartials, bool kFinal>
void launch_pass(const void* in, void* out, int64_t outer, int64_t n, int64_t inner, int64_t splits,
                 int64_t split_len, int64_t full_n, BlockShape bs, cudaStream_t stream) {
  const ReduceShape s{outer, n, inner, (inner + bs.bx - 1) / bs.bx, split_len, full_n};
  const int64_t blocks = outer * s.col_blocks;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(blocks, int64_t(current_sm_count()) * 32)),
                  static_cast<unsigned>(splits));
  reduce_kernel<OP, T, kPartials, kFinal><<<grid, dim3(bs.bx, bs.by), 0, stream>>>(in, out, s);
  EMBER_CUDA_LAUNCH_CHECK("reduce_kernel");
}

template <ReduceOp OP, class T>
void reduce_typed(const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner, cudaStream_t stream) {
  using Acc = typename ReducerFor<OP, T>::Acc;
  const BlockShape bs = block_shape(n, inner);
  const int64_t blocks = outer * ((inner + bs.bx - 1) / bs.bx);
  // Split n when [outer, inner] gives fewer than ~4 blocks per SM, keeping >= 8 loads per thread.
  const int64_t target = int64_t(current_sm_count()) * 4;
  int64_t splits = 1;
  if (blocks < target) splits = std::min<int64_t>({(target + blocks - 1) / blocks, n / (int64_t(bs.by) * 8), 65535});
  if (splits <= 1) {
    launch_pass<OP, T, false, true>(in.data_ptr(), out.data_ptr(), outer, n, inner, 1, n, n, bs, stream);
    return;
  }
  const int64_t split_len = (n + splits - 1) / splits;
  splits = (n + split_len - 1) / split_len;  // no empty split
  Scratch partials(static_cast<size_t>(outer * splits * inner) * sizeof(Acc), in.device().index);
  launch_pass<OP, T, false, false>(in.data_ptr(), partials.as<Acc>(), outer, n, inner, splits, split_len, n, bs,
                                   stream);
  launch_pass<OP, T, true, true>(partials.as<Acc>(), out.data_ptr(), outer, splits, inner, 1, splits, n,
                                 block_shape(splits, inner), stream);
}

}  // namespace

void reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner,
            cudaStream_t stream) {
  if (outer == 0 || inner == 0) return;
  if (n == 0 && op != ReduceOp::Sum && op != ReduceOp::Mean)
    throw Error(detail::str_cat("reduce: max/min/argmax/argmin over an empty dimension (", outer, " x 0 x ", inner,
                                " elements) has no value; reduce a non-empty dimension"));
  visit_dtype(in.dtype(), "reduce", [&]<class T>() {
    switch (op) {
      case ReduceOp::Sum: return reduce_typed<ReduceOp::Sum, T>(out, in, outer, n, inner, stream);
      case ReduceOp::Mean: return reduce_typed<ReduceOp::Mean, T>(out, in, outer, n, inner, stream);
      case ReduceOp::Max: return reduce_typed<ReduceOp::Max, T>(out, in, outer, n, inner, stream);
      case ReduceOp::Min: return reduce_typed<ReduceOp::Min, T>(out, in, outer, n, inner, stream);
      case ReduceOp::ArgMax: return reduce_typed<ReduceOp::ArgMax, T>(out, in, outer, n, inner, stream);
      case ReduceOp::ArgMin: return reduce_typed<ReduceOp::ArgMin, T>(out, in, outer, n, inner, stream);
    }
    throw_unhandled("reduce", "ReduceOp", static_cast<int>(op), "cuda");
  });
}

}  // namespace ember::cuda::kernels
