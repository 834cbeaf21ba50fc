// The CPU GEMMs' epilogue loops (bias, ReLU, bias gradient), at the CPU's widest instruction set
// (cpu_simd.h). Each keeps the plain loop's arithmetic: the bias add and ReLU are elementwise, and
// every bias-gradient sum adds its terms in the same order (k = 0, 1, ...) in double. Also the ReLU
// bit mask's write and apply (relu_mask.h's layout and bit arithmetic).
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpp/backend/cpu/cpu_simd.h"
#include "cpp/backend/lowp_math.h"
#include "cpp/backend/relu_mask.h"

namespace ember::cpu {

// rows x N matrix C (rows packed, N apart): C[i][j] += bias[j * bstride] (if bias), then ReLU
// (x < 0 ? 0 : x, so NaN passes through).
template <class T>
void bias_relu_rows(T* c_in, int64_t rows_in, int64_t n_in, const T* bias_in, int64_t bstride_in, bool relu_in) {
  simd_dispatch([&] {
    T* __restrict c = c_in;
    const T* __restrict bias = bias_in;
    const int64_t rows = rows_in, n = n_in, bs = bstride_in;
    const bool relu = relu_in;
    for (int64_t i = 0; i < rows; ++i) {
      T* __restrict row = c + i * n;
      if (bias) {
        if (bs == 1)
          for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
        else
          for (int64_t j = 0; j < n; ++j) row[j] += bias[j * bs];
      }
      if (relu)
        for (int64_t j = 0; j < n; ++j) row[j] = row[j] < T(0) ? T(0) : row[j];
    }
  });
}

template <class T>
inline double widen(T v) {
  if constexpr (is_lowp_v<T>) return static_cast<double>(static_cast<float>(v));
  else return static_cast<double>(v);
}

// g[i * gstride] = sum over k < K of A[i * rs + k * cs] (i < M), each sum in double in k order.
// When A is a transposed view (rs == 1: the bias gradient of dY^T X reads dY's columns), the sums
// run side by side, one row of dY at a time, so the loop reads memory in order and vectorises.
template <class T>
void bias_grad_rows(const T* a_in, int64_t m_in, int64_t k_in, int64_t rs_in, int64_t cs_in, T* g_in,
                    int64_t gstride_in) {
  if (rs_in == 1 && cs_in != 1 && m_in > 1) {
    std::vector<double> acc_buf(static_cast<size_t>(m_in), 0.0);
    simd_dispatch([&] {
      const T* __restrict a = a_in;
      double* __restrict acc = acc_buf.data();
      const int64_t m = m_in, kk = k_in, cs = cs_in;
      for (int64_t k = 0; k < kk; ++k) {
        const T* __restrict row = a + k * cs;
        for (int64_t i = 0; i < m; ++i) acc[i] += widen(row[i]);
      }
    });
    for (int64_t i = 0; i < m_in; ++i) g_in[i * gstride_in] = static_cast<T>(acc_buf[static_cast<size_t>(i)]);
    return;
  }
  for (int64_t i = 0; i < m_in; ++i) {
    double acc = 0.0;
    for (int64_t k = 0; k < k_in; ++k) acc += widen(a_in[i * rs_in + k * cs_in]);
    g_in[i * gstride_in] = static_cast<T>(acc);
  }
}

// The ReLU mask (relu_mask.h) on the CPU, through one byte per element: a compare loop that
// vectorises writes keep[j] = 0 or 1, and eight such bytes, read as a little-endian u64 x, pack into
// one mask byte as (x * 0x0102040810204080) >> 56 (the multiplier moves byte k's low bit to bit 56 + k
// with no carries, since every byte is 0 or 1); unpacking is the reverse, a mask byte replicated into
// eight and each byte k and-ed with bit k. Same bits as relu_mask::row_byte / relu_mask::bit, which
// the CUDA fallback kernels use.
static_assert(std::endian::native == std::endian::little, "the mask's byte packing reads u64s little-endian");

// Mask row i (ld bytes, ld >= ceil(n / 8)) of the rows x n matrix C (rows packed): bit j = C[i][j] > 0,
// and 0 in every bit past n.
template <class T>
void relu_mask_write(const T* c_in, int64_t rows_in, int64_t n_in, uint8_t* mask_in, int64_t ld_in) {
  std::vector<uint8_t> keep_buf(static_cast<size_t>(8 * ld_in), 0);
  simd_dispatch([&] {
    const T* __restrict c = c_in;
    uint8_t* __restrict mask = mask_in;
    uint8_t* __restrict keep = keep_buf.data();
    const int64_t rows = rows_in, n = n_in, ld = ld_in;
    for (int64_t i = 0; i < rows; ++i) {
      const T* __restrict row = c + i * n;
      for (int64_t j = 0; j < n; ++j) keep[j] = relu_mask::positive(row[j]) ? 1 : 0;  // keep[n..] stays 0
      uint8_t* __restrict m = mask + i * ld;
      for (int64_t b = 0; b < ld; ++b) {
        uint64_t x;
        std::memcpy(&x, keep + 8 * b, 8);
        m[b] = static_cast<uint8_t>((x * 0x0102040810204080ull) >> 56);
      }
    }
  });
}

// C[i][j] = 0 where bit j of mask row i is 0 (the ReLU's backward from its mask), else unchanged.
template <class T>
void relu_mask_apply(T* c_in, int64_t rows_in, int64_t n_in, const uint8_t* mask_in, int64_t ld_in) {
  std::vector<uint8_t> keep_buf(static_cast<size_t>(8 * ld_in), 0);
  simd_dispatch([&] {
    T* __restrict c = c_in;
    const uint8_t* __restrict mask = mask_in;
    uint8_t* __restrict keep = keep_buf.data();
    const int64_t rows = rows_in, n = n_in, ld = ld_in, bytes = (n_in + 7) / 8;
    for (int64_t i = 0; i < rows; ++i) {
      const uint8_t* __restrict m = mask + i * ld;
      for (int64_t b = 0; b < bytes; ++b) {
        const uint64_t x = (m[b] * 0x0101010101010101ull) & 0x8040201008040201ull;  // byte k: bit k or 0
        std::memcpy(keep + 8 * b, &x, 8);
      }
      T* __restrict row = c + i * n;
      for (int64_t j = 0; j < n; ++j) row[j] = keep[j] != 0 ? row[j] : T(0);
    }
  });
}

}  // namespace ember::cpu
