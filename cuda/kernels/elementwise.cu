// Kernels for the binary maps and where() (the unary maps are in elementwise_unary.cu). The
// arithmetic is elementwise_math.h's, the same functions the CPU loops run; this file adds only
// dtype dispatch, and map.cuh the indexing.
#include "cpp/backend/elementwise_math.h"
#include "cuda/kernels/kernels.h"
#include "cuda/kernels/map.cuh"

namespace ember::cuda::kernels {
namespace {

// Integer and bool inputs compute in double (math::compute_t), as on the CPU.
template <BinaryOp OP, class T>
struct BinaryF {
  using C = math::compute_t<T>;
  C a, b;
  __device__ T operator()(T x, T y) const {
    return static_cast<T>(math::binary<OP, C>(static_cast<C>(x), static_cast<C>(y), a, b));
  }
};

// Comparisons compare in the input type itself, like the CPU.
template <BinaryOp OP, class T>
struct CompareF {
  __device__ bool operator()(T x, T y) const { return math::compare<OP, T>(x, y); }
};

template <class T>
struct WhereF {
  __device__ T operator()(bool c, T x, T y) const { return c ? x : y; }
};

template <BinaryOp OP>
void binary_typed(const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p,
                  cudaStream_t stream) {
  visit_dtype(a.dtype(), "binary", [&]<class T>() {
    if constexpr (math::is_comparison<OP>) {
      launch_map(out.shape(), stream, CompareF<OP, T>{}, operand<bool>(out), operand<const T>(a), operand<const T>(b));
    } else {
      using C = math::compute_t<T>;
      launch_map(out.shape(), stream, BinaryF<OP, T>{static_cast<C>(p.alpha), static_cast<C>(p.beta)},
                 operand<T>(out), operand<const T>(a), operand<const T>(b));
    }
  });
}

// The dispatch table, one entry per listed op in list order (so indexed by the enum's value).
using BinaryLaunch = void (*)(const Tensor&, const Tensor&, const Tensor&, const ElementwiseParams&, cudaStream_t);
constexpr BinaryLaunch kBinaryLaunches[] = {
#define EMBER_BINARY_OP(NAME, STR, COMPARES) &binary_typed<BinaryOp::NAME>,
#include "cpp/backend/binary_ops.def"
#undef EMBER_BINARY_OP
};
static_assert(std::size(kBinaryLaunches) == kBinaryOpCount);

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p,
            cudaStream_t stream) {
  kBinaryLaunches[op_index(op, "cuda")](out, a, b, p, stream);
}

void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b, cudaStream_t stream) {
  visit_dtype(out.dtype(), "where", [&]<class T>() {
    launch_map(out.shape(), stream, WhereF<T>{}, operand<T>(out), operand<const bool>(cond), operand<const T>(a),
               operand<const T>(b));
  });
}

}  // namespace ember::cuda::kernels
