// The arithmetic of every elementwise op and activation derivative, written once for the CPU
// loops and the CUDA kernels (which add only indexing). Integer inputs compute in double, bf16 and
// f16 inputs in float.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpp/backend/backend.h"
#include "cpp/backend/host_device.h"
#include "cpp/backend/lowp_math.h"

namespace ember::math {

template <class T>
using compute_t =
    std::conditional_t<std::is_floating_point_v<T>, T, std::conditional_t<is_lowp_v<T>, float, double>>;

// The math functions by name and precision, for both compilers. An unqualified exp(x) with a float
// x resolves on the host to the C library's ::exp(double) (<cmath> puts the float overloads in std
// only), so the CPU computed f32 activations in double while the device, where CUDA declares the
// float overloads globally, computed them in float. These pick expf for float and exp for double
// on both sides; device and host then differ only by the few ulp between CUDA's and glibc's
// float functions.
EMBER_HOST_DEVICE float exp_of(float x) { return ::expf(x); }
EMBER_HOST_DEVICE double exp_of(double x) { return ::exp(x); }
EMBER_HOST_DEVICE float log_of(float x) { return ::logf(x); }
EMBER_HOST_DEVICE double log_of(double x) { return ::log(x); }
EMBER_HOST_DEVICE float log1p_of(float x) { return ::log1pf(x); }
EMBER_HOST_DEVICE double log1p_of(double x) { return ::log1p(x); }
EMBER_HOST_DEVICE float sqrt_of(float x) { return ::sqrtf(x); }
EMBER_HOST_DEVICE double sqrt_of(double x) { return ::sqrt(x); }
EMBER_HOST_DEVICE float tanh_of(float x) { return ::tanhf(x); }
EMBER_HOST_DEVICE double tanh_of(double x) { return ::tanh(x); }
EMBER_HOST_DEVICE float erf_of(float x) { return ::erff(x); }
EMBER_HOST_DEVICE double erf_of(double x) { return ::erf(x); }
EMBER_HOST_DEVICE float pow_of(float x, float y) { return ::powf(x, y); }
EMBER_HOST_DEVICE double pow_of(double x, double y) { return ::pow(x, y); }

// One element of a row's log-softmax, with m the row's max and log_sum = log(sum_k exp(x_k - m)):
// (x - m) - log_sum, where x - m is exact for the elements that matter. Not x - (m + log_sum):
// m + log_sum rounds to the spacing of m (about 1e-3 for f32 logits near 1e4), and that error
// stays in every output.
template <class C>
EMBER_HOST_DEVICE C log_softmax_element(C x, C m, C log_sum) {
  return (x - m) - log_sum;
}

template <class C>
EMBER_HOST_DEVICE C sigmoid(C x) {
  // Two branches so that exp() never overflows.
  if (x >= C(0)) return C(1) / (C(1) + exp_of(-x));
  C e = exp_of(x);
  return e / (C(1) + e);
}

template <UnaryOp OP, class C>
EMBER_HOST_DEVICE C unary(C x, C a, C b) {
  constexpr C kSqrt2OverPi = C(0.7978845608028654);
  constexpr C kInvSqrt2 = C(0.7071067811865476);
  if constexpr (OP == UnaryOp::AddScalar) return x + a;
  else if constexpr (OP == UnaryOp::MulScalar) return x * a;
  else if constexpr (OP == UnaryOp::RSubScalar) return a - x;
  else if constexpr (OP == UnaryOp::RDivScalar) return a / x;
  else if constexpr (OP == UnaryOp::PowScalar) return pow_of(x, a);
  else if constexpr (OP == UnaryOp::RPowScalar) return pow_of(a, x);
  else if constexpr (OP == UnaryOp::Neg) return -x;
  else if constexpr (OP == UnaryOp::Exp) return exp_of(x);
  else if constexpr (OP == UnaryOp::Log) return log_of(x);
  else if constexpr (OP == UnaryOp::Sqrt) return sqrt_of(x);
  else if constexpr (OP == UnaryOp::Rsqrt) return C(1) / sqrt_of(x);
  else if constexpr (OP == UnaryOp::Abs) return x < C(0) ? -x : x;
  else if constexpr (OP == UnaryOp::Sign) return x > C(0) ? C(1) : (x < C(0) ? C(-1) : C(0));
  else if constexpr (OP == UnaryOp::Square) return x * x;
  else if constexpr (OP == UnaryOp::Clamp) return x < a ? a : (x > b ? b : x);
  else if constexpr (OP == UnaryOp::Relu) return x < C(0) ? C(0) : x;  // NaN passes through
  else if constexpr (OP == UnaryOp::LeakyRelu) return x < C(0) ? a * x : x;
  else if constexpr (OP == UnaryOp::Sigmoid) return sigmoid(x);
  else if constexpr (OP == UnaryOp::Tanh) return tanh_of(x);
  else if constexpr (OP == UnaryOp::GeluTanh)
    return C(0.5) * x * (C(1) + tanh_of(kSqrt2OverPi * (x + C(0.044715) * x * x * x)));
  else if constexpr (OP == UnaryOp::GeluErf) return C(0.5) * x * (C(1) + erf_of(x * kInvSqrt2));
  else if constexpr (OP == UnaryOp::Silu) return x * sigmoid(x);
  else if constexpr (OP == UnaryOp::Softplus) return (x > C(0) ? x : C(0)) + log1p_of(exp_of(-(x < C(0) ? -x : x)));
  else static_assert(OP == UnaryOp::IsFinite, "unhandled UnaryOp");
  return C(0);
}

EMBER_HOST_DEVICE bool is_finite(double x) { return x - x == 0.0; }  // false for NaN and +-Inf

template <BinaryOp OP>
inline constexpr bool is_comparison = ::ember::is_comparison(OP);  // from binary_ops.def

template <BinaryOp OP, class C>
EMBER_HOST_DEVICE bool compare(C x, C y) {
  if constexpr (OP == BinaryOp::Eq) return x == y;
  else if constexpr (OP == BinaryOp::Ne) return x != y;
  else if constexpr (OP == BinaryOp::Lt) return x < y;
  else if constexpr (OP == BinaryOp::Le) return x <= y;
  else if constexpr (OP == BinaryOp::Gt) return x > y;
  else {
    static_assert(OP == BinaryOp::Ge, "math::compare: a comparison in binary_ops.def has no line here");
    return x >= y;
  }
}

// For the backward ops, x is the incoming gradient and y the saved forward value.
template <BinaryOp OP, class C>
EMBER_HOST_DEVICE C binary(C x, C y, C a, C b) {
  constexpr C kSqrt2OverPi = C(0.7978845608028654);
  constexpr C kInvSqrt2 = C(0.7071067811865476);
  constexpr C kInvSqrt2Pi = C(0.3989422804014327);
  if constexpr (OP == BinaryOp::Add) return x + y;
  else if constexpr (OP == BinaryOp::Sub) return x - y;
  else if constexpr (OP == BinaryOp::Mul) return x * y;
  else if constexpr (OP == BinaryOp::Div) return x / y;
  else if constexpr (OP == BinaryOp::Pow) return pow_of(x, y);
  else if constexpr (OP == BinaryOp::Maximum) return (x != x || x > y) ? x : y;  // NaN propagates
  else if constexpr (OP == BinaryOp::Minimum) return (x != x || x < y) ? x : y;
  else if constexpr (OP == BinaryOp::ReluBackward) return y > C(0) ? x : C(0);
  else if constexpr (OP == BinaryOp::LeakyReluBackward) return y > C(0) ? x : x * a;
  else if constexpr (OP == BinaryOp::SigmoidBackward) return x * y * (C(1) - y);
  else if constexpr (OP == BinaryOp::TanhBackward) return x * (C(1) - y * y);
  else if constexpr (OP == BinaryOp::GeluTanhBackward) {
    C inner = kSqrt2OverPi * (y + C(0.044715) * y * y * y);
    C t = tanh_of(inner);
    C dinner = kSqrt2OverPi * (C(1) + C(3) * C(0.044715) * y * y);
    return x * (C(0.5) * (C(1) + t) + C(0.5) * y * (C(1) - t * t) * dinner);
  } else if constexpr (OP == BinaryOp::GeluErfBackward) {
    return x * (C(0.5) * (C(1) + erf_of(y * kInvSqrt2)) + y * kInvSqrt2Pi * exp_of(C(-0.5) * y * y));
  } else if constexpr (OP == BinaryOp::SiluBackward) {
    C s = sigmoid(y);
    return x * s * (C(1) + y * (C(1) - s));
  } else if constexpr (OP == BinaryOp::SoftplusBackward) return x * sigmoid(y);
  else if constexpr (OP == BinaryOp::ClampBackward) return (y >= a && y <= b) ? x : C(0);
  else static_assert(is_comparison<OP>, "unhandled BinaryOp");
  return C(0);
}

}  // namespace ember::math
