// Post-accumulate gradient hooks: when they run, what they see, removal, and bad arguments.
#include <algorithm>

#include "ember/autograd.h"
#include "ember/profile.h"
#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::throws_with;
using ember::test::Tol;

TEST(PostAccumulateHook, RunsOncePerBackwardAfterTheGradientIsAccumulated) {
  Tensor x = from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  std::vector<std::vector<double>> seen;
  autograd::register_post_accumulate_grad_hook(x, [&](const Tensor& leaf) {
    EXPECT_TRUE(leaf.is_same(x));
    seen.push_back(leaf.grad().to_vector<double>());
  });
  // x is used twice: the engine sums both contributions before AccumulateGrad runs, so the hook
  // runs once, with the sum (d/dx of x*x + 3x = 2x + 3).
  sum(add(mul(x, x), mul(x, 3.0))).backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<double>{5, 7, 9}));
  // A second backward accumulates (5,7,9) + 2 and the hook sees the accumulated gradient.
  sum(mul(x, 2.0)).backward();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], (std::vector<double>{7, 9, 11}));
}

TEST(PostAccumulateHook, RunsInRegistrationOrderAndCanBeRemoved) {
  Tensor w = ones({2}, DType::F64).requires_grad_();
  std::vector<int> calls;
  const uint64_t a = autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) { calls.push_back(1); });
  autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) { calls.push_back(2); });
  sum(w).backward();
  EXPECT_EQ(calls, (std::vector<int>{1, 2}));
  autograd::remove_post_accumulate_grad_hook(w, a);
  autograd::remove_post_accumulate_grad_hook(w, 987654);  // unknown: ignored
  sum(w).backward();
  EXPECT_EQ(calls, (std::vector<int>{1, 2, 2}));
}

namespace {
std::vector<std::string>* g_events = nullptr;
void record_range(const char* name) {
  if (g_events && name) g_events->push_back(name);
}
}  // namespace

TEST(PostAccumulateHook, FiresAsSoonAsTheLeafIsCompleteLastLayerFirst) {
  // Backward visits the later-recorded nodes first, and a leaf's accumulation as soon as its gradient
  // is complete: the second layer's weight is done before the first layer's backward runs, which is
  // what lets DistributedDataParallel start communicating during backward.
  Tensor w1 = full({3, 2}, 0.5, DType::F64).requires_grad_();
  Tensor w2 = full({1, 3}, 0.25, DType::F64).requires_grad_();
  std::vector<std::string> events;
  autograd::register_post_accumulate_grad_hook(w1, [&](const Tensor&) { events.push_back("hook w1"); });
  autograd::register_post_accumulate_grad_hook(w2, [&](const Tensor&) { events.push_back("hook w2"); });
  Tensor x = from_vector<double>({1, -2}, {1, 2});
  // One statement per op: the recording order is the program order.
  Tensor h = relu(matmul(x, w1.t()));
  Tensor y = sum(matmul(h, w2.t()));
  g_events = &events;
  profile::set_listener(record_range);
  y.backward();
  profile::set_listener(nullptr);
  g_events = nullptr;
  const auto at = [&](const std::string& e) {
    return std::find(events.begin(), events.end(), e) - events.begin();
  };
  ASSERT_LT(at("hook w2"), static_cast<long>(events.size()));
  ASSERT_LT(at("hook w1"), static_cast<long>(events.size()));
  EXPECT_LT(at("hook w2"), at("hook w1"));
  EXPECT_LT(at("hook w2"), at("relu backward")) << "w2's gradient waited for the rest of backward";
}

TEST(PostAccumulateHook, AnExceptionFromAHookEndsBackward) {
  Tensor x = ones({2}, DType::F64).requires_grad_();
  autograd::register_post_accumulate_grad_hook(x, [](const Tensor&) { throw Error("hook failed on purpose"); });
  EXPECT_TRUE(throws_with([&] { sum(x).backward(); }, {"hook failed on purpose"}));
}

TEST(PostAccumulateHook, RejectsTensorsThatGetNoAccumulatedGradient) {
  Tensor plain = ones({2});
  EXPECT_TRUE(throws_with([&] { autograd::register_post_accumulate_grad_hook(plain, [](const Tensor&) {}); },
                          {"expected a leaf tensor that requires grad"}));
  Tensor leaf = ones({2}).requires_grad_();
  Tensor computed = mul(leaf, 2.0);
  EXPECT_TRUE(throws_with([&] { autograd::register_post_accumulate_grad_hook(computed, [](const Tensor&) {}); },
                          {"a non-leaf"}));
  EXPECT_TRUE(throws_with([&] { autograd::register_post_accumulate_grad_hook(leaf, nullptr); }, {"the hook is empty"}));
}
