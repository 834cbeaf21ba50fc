// bf16 and f16 scalar types and their conversions, written once for the CPU loops and the CUDA
// kernels: storage is the 16-bit pattern; arithmetic goes through float (an implicit conversion),
// so every op on these types computes in f32 and rounds once when it stores.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpp/backend/host_device.h"
#include "ember/dtype.h"

namespace ember {
namespace lowp {

EMBER_HOST_DEVICE uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

EMBER_HOST_DEVICE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// double -> float rounded to odd: when inexact, the neighbour whose last significand bit is 1.
// Rounding that float once more to a format with at most 22 significand bits then equals rounding
// the double directly (Boldo and Melquiond, "When double rounding is odd", 2005), so casts from
// f64 round to nearest even like casts from f32, without a second rounding error.
EMBER_HOST_DEVICE float round_to_odd(double d) {
  const float f = static_cast<float>(d);
  // Exact, NaN, or out of float's range (inf): nothing to adjust. (Plain arithmetic, no <cmath>,
  // so the same code compiles for the device.)
  if (static_cast<double>(f) == d || d != d || f - f != 0.0f) return f;
  uint32_t u = float_bits(f);
  const double af = f < 0 ? -static_cast<double>(f) : static_cast<double>(f), ad = d < 0 ? -d : d;
  if ((u & 1u) == 0) u += af > ad ? uint32_t(-1) : 1u;
  return bits_float(u);
}

// Round to nearest even; a NaN stays a NaN (made quiet, sign kept); overflow gives inf. Both
// results are computed and one selected (no branch), so the CPU's cast loops vectorise.
EMBER_HOST_DEVICE uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t nan = (u >> 16) | 0x0040u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

EMBER_HOST_DEVICE float bf16_bits_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// IEEE binary16: round to nearest even, subnormals kept, |x| >= 65520 gives inf, NaN stays NaN.
EMBER_HOST_DEVICE uint16_t float_to_f16_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // 65520 = 65504 + half an ulp
  if (a < 0x38800000u) {                                               // below 2^-14: subnormal or zero
    if (a < 0x33000000u) return static_cast<uint16_t>(sign);           // below 2^-25 rounds to 0
    // a = m * 2^(e - 150) with the implicit bit in m; in units of 2^-24 that is m >> (126 - e).
    const uint32_t e = a >> 23;
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;  // a carry into 0x400 is the smallest normal
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: drop 13 significand bits rounding to even, then rebias the exponent (127 -> 15); a
  // carry out of the significand moves into the exponent, which is the correct result.
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
  return static_cast<uint16_t>(sign | (r >> 13));
}

EMBER_HOST_DEVICE float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

}  // namespace lowp

// The two 16-bit floating types. Implicit to and from float (and from double and integers, which
// round once), so templated loops written for float compile unchanged and compute in f32.
struct bf16 {
  uint16_t bits;
  bf16() = default;
  EMBER_HOST_DEVICE bf16(float f) : bits(lowp::float_to_bf16_bits(f)) {}
  EMBER_HOST_DEVICE bf16(double d) : bits(lowp::float_to_bf16_bits(lowp::round_to_odd(d))) {}
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
  EMBER_HOST_DEVICE bf16(I i) : bf16(static_cast<double>(i)) {}
  EMBER_HOST_DEVICE operator float() const { return lowp::bf16_bits_to_float(bits); }
  // Compound assignment in f32, rounded once (index_add's accumulation).
  EMBER_HOST_DEVICE bf16& operator+=(float v) { return *this = bf16(float(*this) + v); }
  EMBER_HOST_DEVICE static bf16 from_bits(uint16_t b) {
    bf16 h;
    h.bits = b;
    return h;
  }
};

struct f16 {
  uint16_t bits;
  f16() = default;
  EMBER_HOST_DEVICE f16(float f) : bits(lowp::float_to_f16_bits(f)) {}
  EMBER_HOST_DEVICE f16(double d) : bits(lowp::float_to_f16_bits(lowp::round_to_odd(d))) {}
  template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
  EMBER_HOST_DEVICE f16(I i) : f16(static_cast<double>(i)) {}
  EMBER_HOST_DEVICE operator float() const { return lowp::f16_bits_to_float(bits); }
  // Compound assignment in f32, rounded once (index_add's accumulation).
  EMBER_HOST_DEVICE f16& operator+=(float v) { return *this = f16(float(*this) + v); }
  EMBER_HOST_DEVICE static f16 from_bits(uint16_t b) {
    f16 h;
    h.bits = b;
    return h;
  }
};

static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2 && std::is_trivially_copyable_v<bf16> &&
              std::is_trivially_copyable_v<f16>);

template <class T>
inline constexpr bool is_lowp_v = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

template <> struct DTypeOf<bf16> { static constexpr DType value = DType::BF16; };
template <> struct DTypeOf<f16> { static constexpr DType value = DType::F16; };

}  // namespace ember
