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

}  // namespace

void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p, cudaStream_t stream) {
  switch (op) {
#define EMBER_CASE(NAME) \
  case UnaryOp::NAME: return unary_typed<UnaryOp::NAME>(out, in, p, stream);
    EMBER_CASE(AddScalar) EMBER_CASE(MulScalar) EMBER_CASE(RSubScalar) EMBER_CASE(RDivScalar)
    EMBER_CASE(PowScalar) EMBER_CASE(RPowScalar) EMBER_CASE(Neg) EMBER_CASE(Exp) EMBER_CASE(Log)
    EMBER_CASE(Sqrt) EMBER_CASE(Rsqrt) EMBER_CASE(Abs) EMBER_CASE(Sign) EMBER_CASE(Square)
    EMBER_CASE(Reciprocal) EMBER_CASE(Clamp) EMBER_CASE(Relu) EMBER_CASE(LeakyRelu) EMBER_CASE(Sigmoid)
    EMBER_CASE(Tanh) EMBER_CASE(GeluTanh) EMBER_CASE(GeluErf) EMBER_CASE(Silu) EMBER_CASE(Softplus)
    EMBER_CASE(IsFinite)
#undef EMBER_CASE
  }
  throw Error(detail::str_cat("unary: unknown UnaryOp ", static_cast<int>(op)));
}

}  // namespace ember::cuda::kernels
