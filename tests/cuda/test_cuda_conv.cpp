// cuDNN convolutions beyond the op table's CUDA-vs-CPU parity rows: a steady training loop makes
// the host wait for nothing, deterministic algorithms repeat bit for bit, and the CNN's layer
// shapes (batch 64) match the CPU. Every test skips without a GPU.
#include <gtest/gtest.h>

#include "ember/ember.h"
#include "test_util.h"

namespace ember::test {
namespace {

#define EMBER_SKIP_WITHOUT_CUDA()                 \
  if (!ember::cuda::is_available()) GTEST_SKIP() \
      << "no CUDA device: ember::cuda::is_available() is false on this machine (no GPU or no driver)"

struct ConvStep {
  Tensor x, w, b;
  std::vector<Tensor> run(const Conv2dArgs& a) {
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    Tensor y = conv2d(x, w, b, a);
    sum(mul(y, y)).backward();
    return {y.detach(), x.grad(), w.grad(), b.grad()};
  }
};

ConvStep make_step(Device d, Shape xs, Shape ws, uint64_t seed) {
  ConvStep s{uniform(xs, -1, 1, DType::F32, seed).to(d), uniform(ws, -0.2, 0.2, DType::F32, seed + 1).to(d),
             uniform({ws[0]}, -1, 1, DType::F32, seed + 2).to(d)};
  s.x.requires_grad_();
  s.w.requires_grad_();
  s.b.requires_grad_();
  return s;
}

TEST(CudaConv, SteadyLoopMakesTheHostWaitForNothing) {
  EMBER_SKIP_WITHOUT_CUDA();
  // A 2 x 4 kernel: odd "same" totals, so the padded copy runs too.
  ConvStep s = make_step(Device::cuda(), {8, 4, 12, 12}, {6, 4, 2, 4}, 1);
  const Conv2dArgs same{.padding_mode = ConvPadding::Same};
  s.run(same);  // first call: handle, plans and algorithms
  cuda::synchronize();
  const cuda::TransferStats before = cuda::transfer_stats();
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
  for (int i = 0; i < 3; ++i) {
    s.run(same);
  }
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
  const cuda::TransferStats after = cuda::transfer_stats();
  EXPECT_EQ(after.synchronizations, before.synchronizations);
  EXPECT_EQ(after.device_to_host_copies, before.device_to_host_copies);
  EXPECT_EQ(after.host_to_device_copies, before.host_to_device_copies);
}

TEST(CudaConv, DeterministicAlgorithmsRepeatBitForBit) {
  EMBER_SKIP_WITHOUT_CUDA();
  const bool before = cuda::deterministic_algorithms();
  cuda::set_deterministic_algorithms(true);
  std::vector<double> first;
  for (int rep = 0; rep < 2; ++rep) {
    ConvStep s = make_step(Device::cuda(), {16, 8, 20, 20}, {16, 8, 3, 3}, 4);
    const std::vector<Tensor> r = s.run({.padding = {1, 1}});
    std::vector<double> all;
    for (const Tensor& t : r)
      for (double v : t.cpu().to_vector<double>()) all.push_back(v);
    if (rep == 0) first = all;
    else EXPECT_EQ(all, first);
  }
  cuda::set_deterministic_algorithms(before);
}

// The classic MNIST CNN's two layers at batch 64, and odd "same" padding through the padded copy.
TEST(CudaConv, CnnLayersMatchTheCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  cuda::set_allow_tf32(false);
  struct Case {
    Shape x, w;
    Conv2dArgs a;
  };
  for (const Case& c : {Case{{64, 1, 28, 28}, {32, 1, 3, 3}, {}}, Case{{64, 32, 26, 26}, {64, 32, 3, 3}, {}},
                        Case{{4, 3, 9, 8}, {5, 3, 2, 4}, {.padding_mode = ConvPadding::Same}}}) {
    ConvStep cpu = make_step(Device::cpu(), c.x, c.w, 9), gpu = make_step(Device::cuda(), c.x, c.w, 9);
    const std::vector<Tensor> rc = cpu.run(c.a), rg = gpu.run(c.a);
    for (size_t i = 0; i < rc.size(); ++i)
      EXPECT_TRUE(all_close(rg[i].cpu(), rc[i], {1e-3, 1e-4})) << shape_str(c.x) << " result " << i;
  }
}

}  // namespace
}  // namespace ember::test
