// The ReLU bit mask that GemmOptions::relu_mask carries from Epilogue::BiasReluNanToZeroMask (the
// forward GEMM writes it) to Epilogue::DReluBiasGrad (the backward GEMM applies it), and its bit
// arithmetic, shared by the CPU loops and the CUDA fallback kernels.
//
// Layout: for an output [rows, n] (row-major), row i of the mask is row_bytes(n) bytes; bit j & 7 of
// byte j >> 3 of that row is 1 iff out[i, j] > 0 (NaN gives 0); the bits past n are 0. Read as
// cuBLASLt reads its D (column-major n x rows), this is its ReLU bit mask with CUBLASLT_MATMUL_DESC_
// EPILOGUE_AUX_LD = 8 * row_bytes(n) bits: element (j, i) at bit j + i * ld of a little-endian bit
// array. The row length is a multiple of 128 bits because cuBLASLt requires that of the aux ld.
#pragma once
#include <cstdint>

#include "cpp/backend/host_device.h"
#include "cpp/backend/lowp_math.h"

namespace ember::relu_mask {

// Bytes per mask row for n columns: n bits rounded up to a multiple of 128 (16 bytes). The caller
// checks that n + 127 does not overflow (n is a tensor extent, far below 2^62).
EMBER_HOST_DEVICE int64_t row_bytes(int64_t n) { return (n + 127) / 128 * 16; }

// The mask's value for v: v > 0 (NaN and -0 give false), compared in v's own type (a bf16/f16
// through its exact float value).
template <class T>
EMBER_HOST_DEVICE bool positive(T v) {
  if constexpr (is_lowp_v<T>) return static_cast<float>(v) > 0.0f;
  else return v > T(0);
}

// Byte b of a mask row over `row` (n values): bit k is positive(row[8b + k]) for 8b + k < n, else 0.
template <class T>
EMBER_HOST_DEVICE uint8_t row_byte(const T* row, int64_t n, int64_t b) {
  uint8_t byte = 0;
  for (int k = 0; k < 8; ++k) {
    const int64_t j = 8 * b + k;
    if (j < n && positive(row[j])) byte = static_cast<uint8_t>(byte | (1u << k));
  }
  return byte;
}

// Whether bit j of mask row `row` is set.
EMBER_HOST_DEVICE bool bit(const uint8_t* row, int64_t j) { return ((row[j >> 3] >> (j & 7)) & 1u) != 0; }

}  // namespace ember::relu_mask
