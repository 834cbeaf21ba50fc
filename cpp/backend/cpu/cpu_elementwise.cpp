// CPU backend: unary and binary maps and where(), over the arithmetic in elementwise_math.h.
#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/elementwise_math.h"

namespace ember {
namespace {

template <UnaryOp OP>
void unary_loop(const Tensor& out, const Tensor& in, const ElementwiseParams& p) {
  cpu::visit_dtype(in.dtype(), "unary", [&]<class T>() {
    using C = math::compute_t<T>;
    const T* x = cpu::ptr<T>(in);
    const C a = static_cast<C>(p.alpha), b = static_cast<C>(p.beta);
    if constexpr (OP == UnaryOp::IsFinite) {
      bool* o = cpu::ptr<bool>(out);
      cpu::for_each_offset<2>(out.shape(), {&out.strides(), &in.strides()}, [&](const std::array<int64_t, 2>& i) {
        o[i[0]] = math::is_finite(static_cast<double>(x[i[1]]));
      });
    } else {
      T* o = cpu::ptr<T>(out);
      cpu::for_each_offset<2>(out.shape(), {&out.strides(), &in.strides()}, [&](const std::array<int64_t, 2>& i) {
        o[i[0]] = static_cast<T>(math::unary<OP, C>(static_cast<C>(x[i[1]]), a, b));
      });
    }
  });
}

template <BinaryOp OP>
void binary_loop(const Tensor& out, const Tensor& at, const Tensor& bt, const ElementwiseParams& p) {
  cpu::visit_dtype(at.dtype(), "binary", [&]<class T>() {
    using C = math::compute_t<T>;
    const T* x = cpu::ptr<T>(at);
    const T* y = cpu::ptr<T>(bt);
    const C a = static_cast<C>(p.alpha), b = static_cast<C>(p.beta);
    const std::array<const Shape*, 3> strides{&out.strides(), &at.strides(), &bt.strides()};
    if constexpr (math::is_comparison<OP>) {
      bool* o = cpu::ptr<bool>(out);
      cpu::for_each_offset<3>(out.shape(), strides, [&](const std::array<int64_t, 3>& i) {
        o[i[0]] = math::compare<OP, T>(x[i[1]], y[i[2]]);
      });
    } else {
      T* o = cpu::ptr<T>(out);
      cpu::for_each_offset<3>(out.shape(), strides, [&](const std::array<int64_t, 3>& i) {
        o[i[0]] = static_cast<T>(math::binary<OP, C>(static_cast<C>(x[i[1]]), static_cast<C>(y[i[2]]), a, b));
      });
    }
  });
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) {
  switch (op) {
#define EMBER_CASE(NAME) \
  case UnaryOp::NAME: return unary_loop<UnaryOp::NAME>(out, in, p);
    EMBER_CASE(AddScalar) EMBER_CASE(MulScalar) EMBER_CASE(RSubScalar) EMBER_CASE(RDivScalar)
    EMBER_CASE(PowScalar) EMBER_CASE(RPowScalar) EMBER_CASE(Neg) EMBER_CASE(Exp) EMBER_CASE(Log)
    EMBER_CASE(Sqrt) EMBER_CASE(Rsqrt) EMBER_CASE(Abs) EMBER_CASE(Sign) EMBER_CASE(Square)
    EMBER_CASE(Reciprocal) EMBER_CASE(Clamp) EMBER_CASE(Relu) EMBER_CASE(LeakyRelu) EMBER_CASE(Sigmoid)
    EMBER_CASE(Tanh) EMBER_CASE(GeluTanh) EMBER_CASE(GeluErf) EMBER_CASE(Silu) EMBER_CASE(Softplus)
    EMBER_CASE(IsFinite)
#undef EMBER_CASE
  }
}

void CpuBackend::binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b,
                        const ElementwiseParams& p) {
  switch (op) {
#define EMBER_CASE(NAME) \
  case BinaryOp::NAME: return binary_loop<BinaryOp::NAME>(out, a, b, p);
    EMBER_CASE(Add) EMBER_CASE(Sub) EMBER_CASE(Mul) EMBER_CASE(Div) EMBER_CASE(Pow) EMBER_CASE(Maximum)
    EMBER_CASE(Minimum) EMBER_CASE(Eq) EMBER_CASE(Ne) EMBER_CASE(Lt) EMBER_CASE(Le) EMBER_CASE(Gt) EMBER_CASE(Ge)
    EMBER_CASE(ReluBackward) EMBER_CASE(LeakyReluBackward) EMBER_CASE(SigmoidBackward) EMBER_CASE(TanhBackward)
    EMBER_CASE(GeluTanhBackward) EMBER_CASE(GeluErfBackward) EMBER_CASE(SiluBackward)
    EMBER_CASE(SoftplusBackward) EMBER_CASE(ClampBackward)
#undef EMBER_CASE
  }
}

void CpuBackend::where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  cpu::visit_dtype(out.dtype(), "where", [&]<class T>() {
    T* o = cpu::ptr<T>(out);
    const bool* c = cpu::ptr<bool>(cond);
    const T* x = cpu::ptr<T>(a);
    const T* y = cpu::ptr<T>(b);
    cpu::for_each_offset<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                            [&](const std::array<int64_t, 4>& i) { o[i[0]] = c[i[1]] ? x[i[2]] : y[i[3]]; });
  });
}

}  // namespace ember
