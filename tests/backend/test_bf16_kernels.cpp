// The CPU's bf16 path (cpu::bf16_kernels(), cpu_gemm_lowp.h): oneDNN's bf16 kernels where they are
// not slower than its f32 ones on this CPU, f32 kernels on widened copies otherwise. The decision
// follows its own timings (or EMBER_CPU_BF16), cpu_info() reports it, and both paths compute the
// same arithmetic: a bf16 GEMM and a bf16 convolution under either path against f64 sums of the
// rounded inputs, and the two paths against each other.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "ember/cpu_info.h"
#include "ember/ember.h"
#include "tests/test_util.h"

namespace ember {
namespace {

using test::all_close;
using test::Tol;

// Forces one path for its lifetime, then returns to the decision.
struct ForcedBf16Path {
  explicit ForcedBf16Path(int mode) { cpu::force_bf16_kernels_for_testing(mode); }
  ~ForcedBf16Path() { cpu::force_bf16_kernels_for_testing(-1); }
};

TEST(Bf16Kernels, DecisionFollowsItsTimingsOrTheEnvironment) {
  const cpu::Bf16Kernels& k = cpu::bf16_kernels();
  const char* env = std::getenv("EMBER_CPU_BF16");
  RecordProperty("bf16_kernels", k.why);
  if (!k.available) {
    EXPECT_FALSE(k.native);
    EXPECT_NE(k.why.find("no bf16 matmul"), std::string::npos) << k.why;
  } else if (env && *env) {
    EXPECT_EQ(k.native, std::string(env) == "native") << k.why;
    EXPECT_EQ(k.bf16_gflops, 0.0);  // nothing timed
    EXPECT_NE(k.why.find("EMBER_CPU_BF16"), std::string::npos) << k.why;
  } else {
    ASSERT_GT(k.f32_gflops, 0.0) << k.why;
    ASSERT_GT(k.bf16_gflops, 0.0) << k.why;
    // native exactly when the bf16 time is at most kNativeSlowerLimit times the f32 time.
    EXPECT_EQ(k.native, k.f32_gflops <= cpu::kNativeSlowerLimit * k.bf16_gflops)
        << "bf16 " << k.bf16_gflops << " vs f32 " << k.f32_gflops << " GFLOP/s: " << k.why;
    EXPECT_NE(k.why.find("GFLOP/s"), std::string::npos) << k.why;
  }
  EXPECT_EQ(k.why.rfind(k.native ? "native" : "widened", 0), 0u) << k.why;
  EXPECT_EQ(cpu_info().bf16, k.why);
  EXPECT_NE(cpu_info().summary().find("; bf16 " + k.why), std::string::npos) << cpu_info().summary();
  EXPECT_NE(cpu_info().json().find("\"bf16\": "), std::string::npos) << cpu_info().json();
}

TEST(Bf16Kernels, EnvironmentValuesAreParsedOrRefused) {
  EXPECT_EQ(cpu::parse_bf16_kernels_env(nullptr), -1);
  EXPECT_EQ(cpu::parse_bf16_kernels_env(""), -1);
  EXPECT_EQ(cpu::parse_bf16_kernels_env("native"), 1);
  EXPECT_EQ(cpu::parse_bf16_kernels_env("widened"), 0);
  EXPECT_TRUE(test::throws_with([] { cpu::parse_bf16_kernels_env("NATIVE"); },
                                {"EMBER_CPU_BF16='NATIVE'", "'native'", "'widened'", "unset it"}));
  EXPECT_TRUE(test::throws_with([] { cpu::force_bf16_kernels_for_testing(2); }, {"mode 2", "-1", "0", "1"}));
}

// f64 sums of the bf16-rounded inputs, the result rounded once: what an f32-accumulating bf16 GEMM
// computes up to f32 summation error.
Tensor reference_matmul(const Tensor& a, const Tensor& b) {
  return matmul(a.to(DType::BF16).to(DType::F64), b.to(DType::BF16).to(DType::F64)).to(DType::BF16).to(DType::F64);
}

TEST(Bf16Kernels, GemmAndConvolutionAgreeUnderBothPaths) {
  const Tensor a = test::uniform({33, 70}, -1.0, 1.0, DType::F32, 3), b = test::uniform({70, 21}, -1.0, 1.0, DType::F32, 4);
  const Tensor x = test::uniform({2, 5, 9, 8}, -1.0, 1.0, DType::F32, 5);
  const Tensor w = test::uniform({6, 5, 3, 3}, -0.5, 0.5, DType::F32, 6), bias = test::uniform({6}, -0.5, 0.5, DType::F32, 7);
  std::vector<Tensor> gemms, convs;
  for (const int mode : {0, 1}) {
    SCOPED_TRACE(mode == 1 ? "native (where oneDNN has bf16 kernels)" : "widened to f32");
    ForcedBf16Path force(mode);
    const Tensor c = matmul(a.to(DType::BF16), b.to(DType::BF16));
    EXPECT_EQ(c.dtype(), DType::BF16);
    // One bf16 rounding of the exact sum (2^-8 relative), plus f32 summation error far below it.
    EXPECT_TRUE(all_close(c.to(DType::F64), reference_matmul(a, b), Tol{1e-5, 1.0 / 256}));
    gemms.push_back(c.to(DType::F64));
    const Tensor y = conv2d(x.to(DType::BF16), w.to(DType::BF16), bias.to(DType::BF16), Conv2dArgs{.padding = {1, 1}});
    EXPECT_EQ(y.dtype(), DType::BF16);
    const Tensor ref = conv2d(x.to(DType::BF16).to(DType::F64), w.to(DType::BF16).to(DType::F64),
                              bias.to(DType::BF16).to(DType::F64), Conv2dArgs{.padding = {1, 1}});
    EXPECT_TRUE(all_close(y.to(DType::F64), ref, Tol{1e-5, 1.0 / 256}));
    convs.push_back(y.to(DType::F64));
  }
  // The two paths differ only in the order of f32 sums: at most one bf16 step apart.
  EXPECT_TRUE(all_close(gemms[0], gemms[1], Tol{1e-5, 1.0 / 128}));
  EXPECT_TRUE(all_close(convs[0], convs[1], Tol{1e-5, 1.0 / 128}));
}

}  // namespace
}  // namespace ember
