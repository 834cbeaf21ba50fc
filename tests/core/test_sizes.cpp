// Impossible and too-large sizes: every element count, byte size and stride is checked, so a shape
// no tensor can have is an ember::Error naming it, and one too large for memory is an OutOfMemory
// naming the bytes, never a tensor with a few bytes of storage behind a huge shape.
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

TEST(Sizes, ElementCountOverflowIsAnErrorNamingTheShape) {
  EXPECT_TRUE(throws_with([] { zeros({int64_t{1} << 62, 4}); }, {"[4611686018427387904, 4]", "64-bit"}));
  EXPECT_TRUE(throws_with([] { empty({int64_t{1} << 32, int64_t{1} << 32}); }, {"[4294967296, 4294967296]"}));
  EXPECT_TRUE(throws_with([] { shape_numel({int64_t{1} << 40, int64_t{1} << 40, 0}); }, {"more elements"}));
  EXPECT_EQ(shape_numel({0, int64_t{1} << 40, int64_t{1} << 20}), 0);
}

TEST(Sizes, ByteSizeOverflowIsAnErrorNamingTheShape) {
  // 2^62 elements fit a count but not, at 4 bytes each, a byte size.
  EXPECT_TRUE(throws_with([] { empty({int64_t{1} << 31, int64_t{1} << 31}); },
                          {"[2147483648, 2147483648]", "f32", "more bytes"}));
  EXPECT_TRUE(throws_with([] { shape_nbytes({int64_t{1} << 61}, DType::F64); }, {"[2305843009213693952]", "f64"}));
  EXPECT_EQ(shape_nbytes({3, 5}, DType::F64), 120u);
  // The product that once wrote past a 64-byte buffer.
  EXPECT_TRUE(throws_with([] { matmul(zeros({int64_t{1} << 31, 0}), zeros({0, int64_t{1} << 31})); },
                          {"[2147483648, 2147483648]"}));
}

TEST(Sizes, StrideOverflowIsAnErrorEvenWithNoElements) {
  EXPECT_TRUE(throws_with([] { empty({0, int64_t{1} << 40, int64_t{1} << 40}); }, {"strides", "overflow"}));
  EXPECT_TRUE(throws_with([] { contiguous_strides({2, int64_t{1} << 62, 4}); }, {"strides"}));
}

TEST(Sizes, ViewsOfImpossibleShapesAreRefused) {
  // expand adds no storage, so its shape was never counted; numel() of it overflowed.
  EXPECT_TRUE(throws_with([] { ones({1, 4}).expand({int64_t{1} << 62, 4}); }, {"[4611686018427387904, 4]"}));
  EXPECT_EQ(ones({1, 4}).expand({int64_t{1} << 40, 4}).numel(), int64_t{1} << 42);
}

TEST(Sizes, TooLargeForMemoryIsOutOfMemoryNamingTheBytes) {
  try {
    zeros({int64_t{1} << 42});  // 16 TiB of f32
    ADD_FAILURE() << "allocated 16 TiB";
  } catch (const OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("17592186044416 bytes"), std::string::npos) << e.what();
  }
}

TEST(Sizes, ArangeCountsAreCheckedBeforeCastingOrAllocating) {
  // 1e30 values: the float-to-int cast was undefined (it gave an empty tensor).
  EXPECT_TRUE(throws_with([] { arange(0.0, 1e30); }, {"arange", "1e+30 values", "2^53"}));
  // 1e12 values: std::bad_alloc escaped before; now ember's OutOfMemory.
  EXPECT_THROW(arange(0.0, 1e12), OutOfMemory);
  EXPECT_EQ(arange(0.0, 3.0).numel(), 3);
}
