// The GEMM layout rule (cpp/backend/gemm_layout.h) on the views the op layer passes: row-major,
// transposed, padded, an expanded batch, and the views it must copy; and matmul on a view the rule
// rejects against a naive loop.
#include <gtest/gtest.h>

#include "cpp/backend/gemm_layout.h"
#include "ember/ember.h"
#include "test_util.h"

namespace ember {
namespace {

void expect_layout(const std::optional<GemmLayout>& l, bool trans, int64_t ld, int64_t batch_stride) {
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->trans, trans);
  EXPECT_EQ(l->ld, ld);
  EXPECT_EQ(l->batch_stride, batch_stride);
}

TEST(GemmLayout, RowMajorMatricesUseTheirRowStride) {
  const Tensor a = zeros({3, 4});
  expect_layout(gemm_layout(a), false, 4, 0);
  // The first 4 columns of [3, 6]: rows 6 elements apart.
  expect_layout(gemm_layout(zeros({3, 6}).narrow(1, 0, 4)), false, 6, 0);
  expect_layout(gemm_layout(3, 4, 4, 1), false, 4, 0);
}

TEST(GemmLayout, TransposedViewsAreColumnMajor) {
  // [4, 3] row-major, viewed as [3, 4]: strides (1, 3), so column j starts 3 elements after j - 1.
  expect_layout(gemm_layout(zeros({4, 3}).transpose(0, 1)), true, 3, 0);
  // A transposed view of the first 3 columns of [4, 5]: strides (1, 5).
  expect_layout(gemm_layout(zeros({4, 5}).narrow(1, 0, 3).transpose(0, 1)), true, 5, 0);
}

TEST(GemmLayout, BatchesKeepTheirBatchStrideAndAnExpandedOneIsZero) {
  expect_layout(gemm_layout(zeros({2, 3, 4})), false, 4, 12);
  expect_layout(gemm_layout(zeros({3, 4}).expand({5, 3, 4})), false, 4, 0);
  expect_layout(gemm_layout(zeros({2, 4, 3}).transpose(1, 2)), true, 3, 12);
}

TEST(GemmLayout, ExtentsOfOneAdmitEitherLayout) {
  // A single row: its row stride is never stepped; with a non-unit column stride it is column-major.
  expect_layout(gemm_layout(1, 4, 100, 1), false, 4, 0);
  expect_layout(gemm_layout(1, 4, 100, 3), true, 3, 0);
  // A single column: row-major with its row stride.
  expect_layout(gemm_layout(4, 1, 7, 5), false, 7, 0);
  // Empty inner extent: a leading dimension of at least 1.
  expect_layout(gemm_layout(3, 0, 0, 1), false, 1, 0);
}

TEST(GemmLayout, ANonUnitInnerStrideOrOverlappingRowsNeedACopy) {
  const Tensor every_other = zeros({3, 8}).slice(1, 0, 8, 2);  // [3, 4], strides (8, 2)
  EXPECT_FALSE(gemm_layout(every_other).has_value());
  EXPECT_TRUE(test::throws_with([&] { (void)gemm_layout_checked(every_other, "cpu"); },
                                {"gemm (cpu)", "[3, 4]", "[8, 2]", "make it contiguous"}));
  // Rows expanded from one (stride 0) overlap: no leading dimension describes them.
  EXPECT_FALSE(gemm_layout(zeros({1, 4}).expand({3, 4})).has_value());
  // Both strides non-unit (every other row and column).
  EXPECT_FALSE(gemm_layout(3, 4, 16, 2).has_value());
  EXPECT_TRUE(gemm_layout(every_other.contiguous()).has_value());
}

TEST(GemmLayout, MatmulCopiesAnOperandWithoutALayoutAndMatchesANaiveLoop) {
  const Tensor big = test::uniform({3, 8}, -1, 1, DType::F64, 7), w = test::uniform({4, 5}, -1, 1, DType::F64, 8);
  const Tensor a = big.slice(1, 0, 8, 2);  // [3, 4] with column stride 2
  ASSERT_FALSE(gemm_layout(a).has_value());
  const std::vector<double> bv = big.to_vector<double>(), wv = w.to_vector<double>();
  std::vector<double> want(3 * 5, 0.0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 4; ++k) want[i * 5 + j] += bv[i * 8 + 2 * k] * wv[k * 5 + j];
  EXPECT_TRUE(test::all_close(matmul(a, w), want, test::Tol::for_dtype(DType::F64)));
  // Expanded rows (stride 0) as the first operand of a batched product.
  const Tensor row = test::uniform({1, 4}, -1, 1, DType::F64, 9);
  const std::vector<double> rv = row.to_vector<double>();
  std::vector<double> want_rows(3 * 5, 0.0);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 4; ++k) want_rows[i * 5 + j] += rv[k] * wv[k * 5 + j];
  EXPECT_TRUE(test::all_close(matmul(row.expand({3, 4}), w), want_rows, test::Tol::for_dtype(DType::F64)));
}

}  // namespace
}  // namespace ember
