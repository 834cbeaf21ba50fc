// cuda::Graph: a whole training step (forward, backward, optimizer) captured once and replayed
// gives the parameters that eager steps give; what capture cannot hold is refused with an error
// naming it; memory freed during capture stays valid for the replays. Skipped without a GPU.
#include <cmath>

#include "test_util.h"

using namespace ember;

namespace {

std::shared_ptr<nn::Module> mlp() {
  Generator init(11);
  return nn::sequential({std::make_shared<nn::Linear>(20, 32, nn::LinearOptions{.generator = &init}),
                         std::make_shared<nn::ReLU>(),
                         std::make_shared<nn::Linear>(32, 5, nn::LinearOptions{.generator = &init})});
}

struct Batch {
  Tensor x, y;
};

std::vector<Batch> batches(int n, int64_t rows) {
  Generator g(5);
  std::vector<Batch> b;
  for (int i = 0; i < n; ++i)
    b.push_back({randn({rows, 20}, DType::F32, &g).cuda(), randint(0, 5, {rows}, DType::I64, &g).cuda()});
  return b;
}

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Tensor>&)>;

// N steps eagerly and N steps as warm-up + capture + replays, the learning rate changed before
// every step (as a per-batch schedule does). Equal, not close: a replay queues the same kernels
// with the same launch configurations as the eager step it was captured from (cuBLASLt's algorithm
// is cached per shape, so it is the same one), and the optimizer reads the same f64 scalars, which
// the same host code computed, from device memory instead of its arguments.
void check_graphed_equals_eager(const std::string& name, const MakeOpt& make) {
  SCOPED_TRACE(name);
  const int kSteps = 6;
  std::vector<Batch> data = batches(kSteps, 16);
  auto lr_at = [](int t) { return 0.01 / (1.0 + t); };

  auto eager_model = mlp();
  eager_model->to(Device::cuda());
  auto eager_opt = make(eager_model->parameters());
  for (int t = 0; t < kSteps; ++t) {
    eager_opt->set_lr(0, lr_at(t));
    Tensor loss = cross_entropy((*eager_model)(data[t].x), data[t].y);
    eager_opt->zero_grad();
    loss.backward();
    eager_opt->step();
  }

  auto model = mlp();
  model->to(Device::cuda());
  auto opt = make(model->parameters());
  opt->set_capturable(true);
  {
    // Warm-up (eager) step.
    opt->set_lr(0, lr_at(0));
    Tensor loss = cross_entropy((*model)(data[0].x), data[0].y);
    opt->zero_grad();
    loss.backward();
    opt->step();
  }
  cuda::Graph graph;  // made before its inputs and outputs, so they go first
  Tensor sx = data[1].x.clone(), sy = data[1].y.clone(), static_loss;
  opt->set_lr(0, lr_at(1));
  opt->prepare_step();
  graph.capture([&] {
    static_loss = cross_entropy((*model)(sx), sy);
    opt->zero_grad();
    static_loss.backward();
    opt->step();
  });
  ASSERT_TRUE(graph.captured());
  EXPECT_GT(graph.pool_bytes(), 0u) << "the step's activations and gradients come from the graph's pool";
  graph.replay();
  const std::vector<Tensor> grads = [&] {
    std::vector<Tensor> g;
    for (const Tensor& p : model->parameters()) g.push_back(p.grad());
    return g;
  }();
  for (int t = 2; t < kSteps; ++t) {
    sx.copy_(data[t].x);
    sy.copy_(data[t].y);
    opt->set_lr(0, lr_at(t));
    opt->prepare_step();
    graph.replay();
  }
  // The parameters, the last step's gradients (the graph's output tensors) and the optimizer state.
  const std::vector<Tensor> pe = eager_model->parameters(), pg = model->parameters();
  ASSERT_EQ(pe.size(), pg.size());
  for (size_t k = 0; k < pe.size(); ++k) {
    EXPECT_TRUE(test::all_close(pg[k].cpu(), pe[k].cpu(), test::Tol{0.0, 0.0})) << "parameter " << k;
    EXPECT_TRUE(test::all_close(grads[k].cpu(), pe[k].grad().cpu(), test::Tol{0.0, 0.0})) << "gradient " << k;
    EXPECT_EQ(opt->state_step(k), eager_opt->state_step(k));
    for (const auto& [buf, v] : eager_opt->state(k))
      EXPECT_TRUE(test::all_close(opt->state(k).at(buf).cpu(), v.cpu(), test::Tol{0.0, 0.0})) << buf << " " << k;
  }
  EXPECT_TRUE(std::isfinite(static_loss.item<double>()));
  for (Tensor p : model->parameters()) p.zero_grad();  // the graph's outputs go before the graph
}

}  // namespace

TEST(CudaGraph, GraphedTrainingStepsEqualEagerSteps) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture and replay are not exercised";
  check_graphed_equals_eager("Adam", [](const std::vector<Tensor>& p) {
    return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.01});
  });
  check_graphed_equals_eager("AdamW amsgrad", [](const std::vector<Tensor>& p) {
    return std::make_unique<optim::AdamW>(p, optim::AdamWOptions{.lr = 0.01, .amsgrad = true});
  });
  check_graphed_equals_eager("SGD momentum", [](const std::vector<Tensor>& p) {
    return std::make_unique<optim::SGD>(p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  });
  // --precision tf32: still bitwise between graphed and eager steps (the same TF32 GEMMs are replayed);
  // TF32 against fp32 is CudaBackend.GemmWithTf32StaysClose's tolerance.
  cuda::set_allow_tf32(true);
  check_graphed_equals_eager("Adam, TF32", [](const std::vector<Tensor>& p) {
    return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01});
  });
  cuda::set_allow_tf32(false);
}

TEST(CudaGraph, CapturableOptimizerEqualsPlainOnCuda) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: the capturable optimizer kernel is not exercised";
  std::vector<Tensor> a, b;
  for (int64_t n : {5, 3000, 1}) {
    Tensor p = test::uniform({n}, -1, 1, DType::F32, 40 + n).cuda();
    a.push_back(p.clone().requires_grad_());
    b.push_back(p.clone().requires_grad_());
  }
  optim::Adam plain(a, {.lr = 0.01, .weight_decay = 0.1}), cap(b, {.lr = 0.01, .weight_decay = 0.1});
  cap.set_capturable(true);
  for (int t = 1; t <= 4; ++t) {
    for (size_t k = 0; k < a.size(); ++k) {
      Tensor g = test::uniform(a[k].shape(), -1, 1, DType::F32, 10 * t + k).cuda();
      a[k].set_grad(g);
      b[k].set_grad(g.clone());
    }
    plain.set_lr(0, 0.01 * t);
    cap.set_lr(0, 0.01 * t);
    plain.step();
    if (t % 2) cap.prepare_step();
    cap.step();
  }
  for (size_t k = 0; k < a.size(); ++k)
    EXPECT_TRUE(test::all_close(b[k].cpu(), a[k].cpu(), test::Tol{0.0, 0.0})) << "parameter " << k << " (bitwise)";
}

TEST(CudaGraph, WhatCaptureCannotHoldIsRefused) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture is not exercised";
  Tensor x = ones({8}, TensorOptions(DType::F32, Device::cuda()));
  {
    cuda::Graph g;
    EXPECT_TRUE(test::throws_with([&] { g.capture([&] { (void)sum(x).item<double>(); }); },
                                  {"read of a device tensor's values", "CUDA graph captures"}));
    EXPECT_FALSE(g.captured());
  }
  {
    cuda::Graph g;
    EXPECT_TRUE(test::throws_with([&] { g.capture([&] {
                                          (void)from_vector<float>({1, 2}).cuda();
                                        }); },
                                  {"host-to-device copy"}));
  }
  {
    nn::Dropout drop(0.5);
    cuda::Graph g;
    EXPECT_TRUE(test::throws_with([&] { g.capture([&] { (void)drop(x); }); }, {"random fill", "Philox", "CUDA graph"}));
  }
  {
    cuda::Graph g;
    EXPECT_TRUE(test::throws_with([&] { g.replay(); }, {"nothing captured"}));
  }
  // The stream works eagerly again after the refused captures.
  EXPECT_DOUBLE_EQ(sum(mul(x, 3.0)).item<double>(), 24.0);
}

TEST(CudaGraph, MemoryFreedDuringCaptureStaysValidForReplays) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: the graph's pool is not exercised";
  Tensor in = full({1000}, 2.0, TensorOptions(DType::F32, Device::cuda()));
  Tensor out = zeros({1000}, TensorOptions(DType::F32, Device::cuda()));
  cuda::Graph g;
  g.capture([&] {
    Tensor tmp = mul(in, 3.0);  // from the graph's pool, freed (reusable) within the capture
    out.copy_(add(tmp, 1.0));
    in = Tensor();  // pool memory freed during capture: deferred until the graph goes
  });
  g.replay();
  EXPECT_TRUE(test::all_close(out.cpu(), full({1000}, 7.0), test::Tol{0.0, 0.0}));
  // Fresh allocations must not land on the memory the graph reads and writes.
  std::vector<Tensor> others;
  for (int i = 0; i < 8; ++i) others.push_back(full({1000}, -5.0, TensorOptions(DType::F32, Device::cuda())));
  out.zero_();
  g.replay();
  EXPECT_TRUE(test::all_close(out.cpu(), full({1000}, 7.0), test::Tol{0.0, 0.0}));
  for (const Tensor& t : others) EXPECT_TRUE(test::all_close(t.cpu(), full({1000}, -5.0), test::Tol{0.0, 0.0}));
}
