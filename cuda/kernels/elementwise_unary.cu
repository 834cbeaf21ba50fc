// Kernels for the unary maps (elementwise.cu's other half, in its own file so the two compile in
// parallel: together they instantiate about a thousand small kernels). The arithmetic is
// elementwise_math.h's, the same functions the CPU loops run; this file adds only dispatch.
#include "cpp/backend/elementwise_math.h"
#include "cuda/kernels/kernels.h"
#include "cuda/kernels/map.cuh"

namespace ember::cuda::kernels {
namespace {

// Integer and bool inputs compute in double (math::compute_t), as on the CPU.
template <UnaryOp OP, class T>
struct UnaryF {
  using C = math::compute_t<T>;
  C a, b;
  __device__ T operator()(T x) const { return static_cast<T>(math::unary<OP, C>(static_cast<C>(x), a, b)); }
};

template <class T>
struct IsFiniteF {
  __device__ bool operator()(T x) const { return math::is_finite(static_cast<double>(x)); }
};

template <UnaryOp OP>
void unary_typed(const Tensor& out, const Tensor& in, const ElementwiseParams& p, cudaStream_t stream) {
  visit_dtype(in.dtype(), "unary", [&]<class T>() {
    if constexpr (OP == UnaryOp::IsFinite) {
      launch_map(out.shape(), stream, IsFiniteF<T>{}, operand<bool>(out), operand<const T>(in));
    } else {
      using C = math::compute_t<T>;
      launch_map(out.shape(), stream, UnaryF<OP, T>{static_cast<C>(p.alpha), static_cast<C>(p.beta)},
                 operand<T>(out), operand<const T>(in));
    }
  });
}

// The dispatch table, one entry per listed op in list order (so indexed by the enum's value).
using UnaryLaunch = void (*)(const Tensor&, const Tensor&, const ElementwiseParams&, cudaStream_t);
constexpr UnaryLaunch kUnaryLaunches[] = {
#define EMBER_UNARY_OP(NAME, STR) &unary_typed<UnaryOp::NAME>,
#include "cpp/backend/unary_ops.def"
#undef EMBER_UNARY_OP
};
static_assert(std::size(kUnaryLaunches) == kUnaryOpCount);

}  // namespace

void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p, cudaStream_t stream) {
  kUnaryLaunches[op_index(op, "cuda")](out, in, p, stream);
}

}  // namespace ember::cuda::kernels
