// The GEMM operand layout rule, in one place: the op layer copies an operand it rejects
// (cpp/ops/linalg.cpp), and the CPU (cblas) and CUDA (cuBLASLt / cuBLAS) GEMMs read transposes,
// leading dimensions and batch strides from it.
//
// A matrix view [rows, cols] with strides (rs, cs) (ember's row-major indexing) is stored
// row-major with leading dimension ld = rs when cs == 1 and rs >= cols, or column-major (a
// transposed view, trans) with ld = cs when rs == 1 and cs >= rows; an extent of 1 admits either
// (its stride is never stepped). Anything else (a non-unit inner stride, rows overlapping through
// a stride 0) has no BLAS layout and must be made contiguous. A batch of matrices has any batch
// stride, 0 included: one matrix shared by every batch (an expanded operand).
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>

#include "ember/error.h"
#include "ember/tensor.h"

namespace ember {

struct GemmLayout {
  bool trans = false;        // stored column-major: a transposed view of a row-major matrix
  int64_t ld = 1;            // leading dimension (elements between rows, or columns when trans), >= 1
  int64_t batch_stride = 0;  // elements between the matrices of a batch; 0: one matrix for every batch
};

// The layout of a [rows, cols] matrix with strides (rs, cs), or nullopt when it must be made
// contiguous first.
inline std::optional<GemmLayout> gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                                             int64_t batch_stride = 0) {
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= cols))
    return GemmLayout{false, std::max<int64_t>(rows == 1 ? cols : rs, 1), batch_stride};
  if ((rs == 1 || rows == 1) && (cols == 1 || cs >= rows))
    return GemmLayout{true, std::max<int64_t>(cols == 1 ? rows : cs, 1), batch_stride};
  return std::nullopt;
}

// The layout of a 2-D operand [rows, cols] or a 3-D batch [B, rows, cols] (batch stride 0 for a 2-D one).
inline std::optional<GemmLayout> gemm_layout(const Tensor& t) {
  const int64_t n = t.dim();
  return gemm_layout(t.size(n - 2), t.size(n - 1), t.stride(n - 2), t.stride(n - 1), n == 3 ? t.stride(0) : 0);
}

// What a backend reads: the layout of an operand the op layer prepared; throws ember::Error for
// one it should have made contiguous.
inline GemmLayout gemm_layout_checked(const Tensor& t, const char* backend) {
  if (const std::optional<GemmLayout> l = gemm_layout(t)) return *l;
  throw Error(detail::str_cat("gemm (", backend, "): operand of shape ", shape_str(t.shape()), " has strides ",
                              shape_str(t.strides()),
                              " with no unit stride in its last two dims; make it contiguous first"));
}

}  // namespace ember
