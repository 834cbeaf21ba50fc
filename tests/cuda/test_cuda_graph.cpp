// cuda::Graph: a whole training step (forward, backward, optimizer) captured once and replayed
// gives the parameters that eager steps give; what capture cannot hold is refused with an error
// naming it; memory freed during capture stays valid for the replays. Skipped without a GPU.
#include <cmath>

#include "cpp/backend/backend.h"
#include "test_util.h"

using namespace ember;

namespace {

// With `dropout`, a Dropout(0.3) drawing from `drop_gen` after the ReLU. `fused`: the NaN-to-zero
// mode, where Linear-ReLU-Linear runs as fused_linear_relu_linear (one node).
std::shared_ptr<nn::Module> mlp(Generator* drop_gen = nullptr, bool fused = false) {
  Generator init(11);
  std::vector<std::shared_ptr<nn::Module>> layers{
      std::make_shared<nn::Linear>(20, 32, nn::LinearOptions{.generator = &init}), std::make_shared<nn::ReLU>()};
  if (drop_gen) layers.push_back(std::make_shared<nn::Dropout>(0.3, drop_gen));
  layers.push_back(std::make_shared<nn::Linear>(32, 5, nn::LinearOptions{.generator = &init}));
  auto seq = std::make_shared<nn::Sequential>(layers);
  seq->set_relu_nan_to_zero(fused);
  return seq;
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

struct GraphCase {
  std::string name;
  MakeOpt make;
  bool one_cycle = false;  // a OneCycleLR stepped after every step (lr, and Adam's beta1 or SGD's momentum)
  bool dropout = false;    // the model has a Dropout drawing from its own generator
  bool fused = false;      // the MLP runs as fused_linear_relu_linear (RELU_AUX_BIAS / DRELU_BGRAD)
};

// N steps eagerly and N steps as warm-up + capture + replays, the options changed between steps:
// the learning rate set before every step (as a per-batch schedule does), or a OneCycleLR stepped
// after each. Equal, not close: a replay queues the same kernels with the same launch
// configurations as the eager step it was captured from (cuBLASLt's algorithm is cached per shape,
// so it is the same one); the optimizer's scalars come from optim_math::hyper_at on the same
// options and step counts, on the host for an eager step and in the graph's kernel for a replay,
// with correctly rounded f64 operations only; and dropout draws the same Philox counters (a replay
// reads the generator's counter from device memory, where the eager step took it from the host).
void check_graphed_equals_eager(const GraphCase& c) {
  SCOPED_TRACE(c.name);
  const int kSteps = 6;
  std::vector<Batch> data = batches(kSteps, 16);
  auto lr_at = [](int t) { return 0.01 / (1.0 + t); };
  auto schedule = [&](optim::Optimizer& o) -> std::unique_ptr<optim::OneCycleLR> {
    if (!c.one_cycle) return nullptr;
    return std::make_unique<optim::OneCycleLR>(o, 0.05, kSteps + 1);
  };

  Generator eager_drop(99), graph_drop(99);
  auto eager_model = mlp(c.dropout ? &eager_drop : nullptr, c.fused);
  eager_model->to(Device::cuda());
  auto eager_opt = c.make(eager_model->parameters());
  auto eager_sched = schedule(*eager_opt);
  for (int t = 0; t < kSteps; ++t) {
    if (!c.one_cycle) eager_opt->set_lr(0, lr_at(t));
    Tensor logits = (*eager_model)(data[t].x);
    if (c.fused) EXPECT_EQ(logits.grad_fn()->name(), "fused_linear_relu_linear");
    Tensor loss = cross_entropy(logits, data[t].y);
    eager_opt->zero_grad();
    loss.backward();
    eager_opt->step();
    if (eager_sched) eager_sched->step();
  }

  auto model = mlp(c.dropout ? &graph_drop : nullptr, c.fused);
  model->to(Device::cuda());
  auto opt = c.make(model->parameters());
  auto sched = schedule(*opt);
  opt->set_capturable(true);
  {
    // Warm-up (eager) step.
    if (!c.one_cycle) opt->set_lr(0, lr_at(0));
    Tensor loss = cross_entropy((*model)(data[0].x), data[0].y);
    opt->zero_grad();
    loss.backward();
    opt->step();
    if (sched) sched->step();
  }
  cuda::Graph graph;  // made before its inputs and outputs, so they go first
  Tensor sx = data[1].x.clone(), sy = data[1].y.clone(), static_loss;
  if (!c.one_cycle) opt->set_lr(0, lr_at(1));
  opt->prepare_step();
  const uint64_t drop_before = graph_drop.offset();
  graph.capture([&] {
    static_loss = cross_entropy((*model)(sx), sy);
    opt->zero_grad();
    static_loss.backward();
    opt->step();
  });
  ASSERT_TRUE(graph.captured());
  EXPECT_EQ(graph_drop.offset(), drop_before) << "capture ran nothing, so it leaves the generator where it was";
  EXPECT_GT(graph.pool_bytes(), 0u) << "the step's activations and gradients come from the graph's pool";
  graph.replay();
  if (sched) sched->step();
  const std::vector<Tensor> grads = [&] {
    std::vector<Tensor> g;
    for (const Tensor& p : model->parameters()) g.push_back(p.grad());
    return g;
  }();
  for (int t = 2; t < kSteps; ++t) {
    sx.copy_(data[t].x);
    sy.copy_(data[t].y);
    if (!c.one_cycle) opt->set_lr(0, lr_at(t));
    opt->prepare_step();
    graph.replay();
    if (sched) sched->step();
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
  if (c.dropout) {
    // kSteps draws of a [16, 32] mask each, on both sides; eager draws continue from there.
    EXPECT_EQ(graph_drop.offset(), uint64_t(kSteps) * 16 * 32);
    EXPECT_EQ(graph_drop.offset(), eager_drop.offset());
  }
  EXPECT_TRUE(std::isfinite(static_loss.item<double>()));
  for (Tensor p : model->parameters()) p.zero_grad();  // the graph's outputs go before the graph
}

}  // namespace

TEST(CudaGraph, GraphedTrainingStepsEqualEagerSteps) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture and replay are not exercised";
  check_graphed_equals_eager({"Adam", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.01});
                              }});
  check_graphed_equals_eager({"AdamW amsgrad", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::AdamW>(p, optim::AdamWOptions{.lr = 0.01, .amsgrad = true});
                              }});
  check_graphed_equals_eager({"SGD momentum", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::SGD>(p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
                              }});
  check_graphed_equals_eager({"RMSprop centered momentum", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::RMSprop>(
                                    p, optim::RMSpropOptions{.lr = 0.01, .momentum = 0.5, .centered = true});
                              }});
  check_graphed_equals_eager({"Adagrad lr_decay", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::Adagrad>(p, optim::AdagradOptions{.lr = 0.05, .lr_decay = 0.1});
                              }});
  // --precision tf32: still bitwise between graphed and eager steps (the same TF32 GEMMs are replayed);
  // TF32 against fp32 is CudaBackend.GemmWithTf32StaysClose's tolerance.
  cuda::set_allow_tf32(true);
  check_graphed_equals_eager({"Adam, TF32", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01});
                              }});
  cuda::set_allow_tf32(false);
}

// A scheduler changing the options between replays: OneCycleLR moves the lr and Adam's beta1 (SGD's
// momentum) every step, which the device table follows without a new capture.
TEST(CudaGraph, GraphedStepsFollowASchedulerBetweenReplays) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture and replay are not exercised";
  check_graphed_equals_eager({"Adam, OneCycleLR", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.01});
                              }, true});
  check_graphed_equals_eager({"SGD momentum nesterov, OneCycleLR", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::SGD>(
                                    p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
                              }, true});
}

// Dropout inside the graph: the same seed gives the same parameters graphed and eager, because
// each replay draws the counters the eager step at that point draws.
TEST(CudaGraph, GraphedStepsWithDropoutEqualEagerSteps) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture and replay are not exercised";
  check_graphed_equals_eager({"Adam, dropout", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01});
                              }, false, true});
  check_graphed_equals_eager({"AdamW, dropout, OneCycleLR", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::AdamW>(p, optim::AdamWOptions{.lr = 0.01});
                              }, true, true});
}

// The MLP as one fused_linear_relu_linear node (ember-mnist's GPU MLP): the ReLU's bit mask comes from
// the graph's pool and is written by RELU_AUX_BIAS and read by DRELU_BGRAD (or their fallback kernels)
// inside the graph; N replays equal N eager steps, bitwise.
TEST(CudaGraph, GraphedStepsWithTheTwoLayerMlpOpEqualEagerSteps) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture and replay are not exercised";
  check_graphed_equals_eager({"Adam, fused_linear_relu_linear", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::Adam>(p, optim::AdamOptions{.lr = 0.01});
                              }, false, false, true});
  check_graphed_equals_eager({"SGD momentum, fused_linear_relu_linear, OneCycleLR", [](const std::vector<Tensor>& p) {
                                return std::make_unique<optim::SGD>(p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
                              }, true, false, true});
}

// A captured dropout and dropout2d draw new masks at every replay, each the mask the CPU reference
// draws from the same generator state; eager draws after replays, and a reseed between replays,
// continue the sequence exactly as without a graph.
TEST(CudaGraph, ReplaysDrawFreshRandomNumbersInTheGeneratorsSequence) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: graph capture and replay are not exercised";
  Generator gen(7), ref(7);
  Tensor x = ones({40, 25}, TensorOptions(DType::F32, Device::cuda()));
  Tensor x4 = ones({4, 6, 3, 3}, TensorOptions(DType::F32, Device::cuda()));
  Tensor out = zeros({40, 25}, TensorOptions(DType::F32, Device::cuda()));
  Tensor out4 = zeros({4, 6, 3, 3}, TensorOptions(DType::F32, Device::cuda()));
  (void)rand({3}, TensorOptions(DType::F32, Device::cuda()), &gen);  // counters taken before the capture
  (void)rand({3}, TensorOptions(DType::F32), &ref);
  cuda::Graph g;
  g.capture([&] {
    out.copy_(dropout(x, 0.5, true, &gen));
    out4.copy_(dropout2d(x4, 0.25, true, &gen));
  });
  EXPECT_EQ(gen.offset(), 3u) << "capture ran nothing";
  // What eager dropouts from the same state give, on the CPU reference.
  auto expect_replay_matches = [&](const char* when) {
    SCOPED_TRACE(when);
    Tensor want = dropout(ones({40, 25}), 0.5, true, &ref);
    Tensor want4 = dropout2d(ones({4, 6, 3, 3}), 0.25, true, &ref);
    g.replay();
    EXPECT_TRUE(test::all_close(out.cpu(), want, test::Tol{0.0, 0.0}));
    EXPECT_TRUE(test::all_close(out4.cpu(), want4, test::Tol{0.0, 0.0}));
    EXPECT_EQ(gen.offset(), ref.offset());
    return out.cpu();
  };
  Tensor first = expect_replay_matches("first replay");
  Tensor second = expect_replay_matches("second replay");
  EXPECT_FALSE(test::all_close(first, second, test::Tol{0.0, 0.0})) << "a replay draws a new mask";
  // Eager draws between replays (the device state is written again before the next replay).
  EXPECT_TRUE(test::all_close(rand({7}, TensorOptions(DType::F32, Device::cuda()), &gen).cpu(),
                              rand({7}, TensorOptions(DType::F32), &ref), test::Tol{0.0, 0.0}));
  expect_replay_matches("after an eager draw");
  gen.manual_seed(12345);
  ref.manual_seed(12345);
  expect_replay_matches("after a reseed");
  expect_replay_matches("again");
  // And eager after the replays continues the sequence.
  EXPECT_TRUE(test::all_close(randn({9}, TensorOptions(DType::F32, Device::cuda()), &gen).cpu(),
                              randn({9}, TensorOptions(DType::F32), &ref), test::Tol{0.0, 0.0}));
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
    // A random fill whose counters no Generator reserved (only a backend caller can make one):
    // a replay could not advance them. (Dropout and rand draw through a Generator and are captured.)
    cuda::Graph g;
    Tensor r = empty({8}, TensorOptions(DType::F32, Device::cuda()));
    EXPECT_TRUE(test::throws_with([&] { g.capture([&] {
                                          backend_for(Device::cuda()).random(r, RandomParams{RandomKind::Uniform, 0.0, 1.0, 1, 0});
                                        }); },
                                  {"random fill", "no ember::Generator", "CUDA graph"}));
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
