// autocast's cast cache (cpp/ops/autocast.cpp): a parameter used by several lowered ops in one
// scope is cast once; an in-place write, a backward, a change of grad mode or the end of the
// outermost scope makes the next use cast again; gradients through a shared cast are right.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ember/ember.h"

namespace ember {
namespace {

// How many copy/cast primitives ran inside f (the profiler counts backend calls).
template <class F>
int64_t copies(F&& f) {
  auto prof = profiler::start();
  f();
  prof.stop();
  for (const profiler::Row& r : prof.report().rows())
    if (r.name == "copy" && r.kind == "primitive") return r.calls;
  return 0;
}

TEST(AutocastCache, AParameterUsedTwiceIsCastOnce) {
  manual_seed(21);
  Tensor w = randn({5, 8}).requires_grad_();
  const Tensor x1 = randn({3, 8}), x2 = randn({4, 8});
  Tensor y1, y2;
  const int64_t n = copies([&] {
    autocast low(DType::BF16);
    y1 = linear(x1, w, Tensor());
    y2 = linear(x2, w, Tensor());
  });
  EXPECT_EQ(n, 3) << "x1, x2 and w once";
  EXPECT_EQ(y1.dtype(), DType::BF16);
  // A new outermost scope casts again.
  const int64_t again = copies([&] {
    autocast low(DType::BF16);
    y1 = linear(x1, w, Tensor());
  });
  EXPECT_EQ(again, 2);
  // Inputs that are not parameters are cast at each use.
  const int64_t inputs = copies([&] {
    autocast low(DType::BF16);
    y1 = linear(x1, w, Tensor());
    y2 = linear(x1, w, Tensor());
  });
  EXPECT_EQ(inputs, 3) << "x1 twice, w once";
}

// y = x1 W^T + x2 W^T with one cast of W: dW = dy1^T x1 + dy2^T x2 (bf16 products and sums),
// against the same sums in double from the bf16-rounded operands, within bf16's tolerance.
TEST(AutocastCache, GradientThroughASharedCastIsTheSumOfBothUses) {
  manual_seed(22);
  const int64_t out = 6, in = 10;
  Tensor w = randn({out, in}).requires_grad_();
  const Tensor x1 = randn({4, in}), x2 = randn({3, in});
  {
    autocast low(DType::BF16);
    Tensor loss = add(sum(linear(x1, w, Tensor())), sum(linear(x2, w, Tensor())));
    loss.backward();
  }
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  // d(sum(x W^T))/dW[o][i] = sum over rows of x[r][i], for each o.
  const std::vector<float> a = x1.to(DType::BF16).to(DType::F32).to_vector<float>(),
                           b = x2.to(DType::BF16).to(DType::F32).to_vector<float>();
  const std::vector<float> g = w.grad().to_vector<float>();
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double want = 0;
      for (int64_t r = 0; r < 4; ++r) want += a[r * in + i];
      for (int64_t r = 0; r < 3; ++r) want += b[r * in + i];
      EXPECT_NEAR(g[o * in + i], want, 1.6e-2 * std::abs(want) + 1e-2) << o << ", " << i;
    }
}

TEST(AutocastCache, AnInPlaceWriteMakesTheNextUseCastAgain) {
  manual_seed(23);
  Tensor w = randn({4, 6}).requires_grad_();
  const Tensor x = randn({2, 6});
  Tensor before, after;
  const int64_t n = copies([&] {
    autocast low(DType::BF16);
    before = linear(x, w, Tensor());
    {
      autograd::NoGradGuard no_grad;
      add_(w, full({4, 6}, 1.0));  // as an optimizer step does
    }
    after = linear(x, w, Tensor());
  });
  EXPECT_EQ(n, 4) << "x twice, w before and after its write";
  // `after` used the new weights: each output grew by the sum of the row of x (bf16 tolerance).
  const std::vector<float> xb = x.to(DType::BF16).to(DType::F32).to_vector<float>();
  const std::vector<float> bv = before.to(DType::F32).to_vector<float>(), av = after.to(DType::F32).to_vector<float>();
  for (int64_t r = 0; r < 2; ++r) {
    double rs = 0;
    for (int64_t i = 0; i < 6; ++i) rs += xb[r * 6 + i];
    for (int64_t o = 0; o < 4; ++o)
      EXPECT_NEAR(av[r * 4 + o] - bv[r * 4 + o], rs, 0.05 * (std::abs(av[r * 4 + o]) + std::abs(bv[r * 4 + o])) + 0.05);
  }
}

// A backward inside the scope releases the cast's node: the next forward casts again instead of
// reusing it (which would fail: "backward through to a second time").
TEST(AutocastCache, ABackwardInsideTheScopeMakesTheNextUseCastAgain) {
  manual_seed(24);
  Tensor w = randn({3, 5}).requires_grad_();
  const Tensor x = randn({2, 5});
  std::vector<float> first;
  {
    autocast low(DType::BF16);
    sum(linear(x, w, Tensor())).backward();
    first = w.grad().to_vector<float>();
    ASSERT_NO_THROW(sum(linear(x, w, Tensor())).backward());
  }
  const std::vector<float> twice = w.grad().to_vector<float>();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(twice[i], 2.0f * first[i]) << i;
}

// A cast made without grad mode has no history: with grad mode back on, the parameter is cast
// again so that its gradient flows.
TEST(AutocastCache, GradModeIsPartOfTheKey) {
  manual_seed(25);
  Tensor w = randn({3, 4}).requires_grad_();
  const Tensor x = randn({2, 4});
  autocast low(DType::BF16);
  {
    autograd::NoGradGuard no_grad;
    EXPECT_FALSE(linear(x, w, Tensor()).requires_grad());
  }
  Tensor y = linear(x, w, Tensor());
  EXPECT_TRUE(y.requires_grad());
  sum(y).backward();
  EXPECT_TRUE(w.grad().defined());
}

}  // namespace
}  // namespace ember
