// CUDA parity for the optimizers: every fused update (one launch per 48 parameters) against the
// CPU reference on the same parameters, gradients and options, parameters and state buffers
// compared after several steps; many parameters of odd sizes so the launch's table spans several
// entries and chunks; per-group scalars; a model trained on CUDA. Skipped without a GPU.
#include <cmath>
#include <functional>

#include "test_util.h"

using namespace ember;

namespace {

using MakeOpt = std::function<std::unique_ptr<optim::Optimizer>(const std::vector<optim::ParamGroup>&)>;

// Two groups (the second with its own lr and weight decay) over parameters of sizes that cross
// the kernel's 2048-element chunks, including an empty one.
std::vector<optim::ParamGroup> groups_of(const std::vector<Tensor>& ps) {
  const size_t half = ps.size() / 2;
  return {{std::vector<Tensor>(ps.begin(), ps.begin() + half), std::nullopt, std::nullopt},
          {std::vector<Tensor>(ps.begin() + half, ps.end()), 0.003, 0.02}};
}

// Equal, not close: the CPU loop and the kernel run the same optim_math.h code, which uses only
// +, -, *, / and sqrt (correctly rounded on both), optim.cu is compiled with -fmad=false and the
// host code has no FMAs either (cmake/EmberCuda.cmake), so every step rounds the same way.
void expect_close(const Tensor& gpu, const Tensor& cpu, DType dt, const std::string& what) {
  EXPECT_EQ(gpu.device(), Device::cuda());
  EXPECT_EQ(gpu.dtype(), dt);
  EXPECT_TRUE(test::all_close(gpu.cpu(), cpu, test::Tol{0.0, 0.0})) << what << " (bitwise)";
}

// One group per parameter, each with its own lr: ten distinct scalar sets, more than one launch
// carries (8), so the step is split into two launches.
std::vector<optim::ParamGroup> group_per_param(const std::vector<Tensor>& ps) {
  std::vector<optim::ParamGroup> g;
  for (size_t k = 0; k < ps.size(); ++k) g.push_back({{ps[k]}, 0.001 * static_cast<double>(k + 1), std::nullopt});
  return g;
}

void check_parity(const std::string& name, const MakeOpt& make, DType dt, bool many_groups = false) {
  SCOPED_TRACE(name + (dt == DType::F64 ? " f64" : " f32") + (many_groups ? ", a group per parameter" : ""));
  const std::vector<int64_t> sizes{1, 7, 2048, 2049, 0, 5000, 33, 3 * 2048 + 5, 64, 999};
  std::vector<Tensor> cpu_params, gpu_params;
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor p = test::uniform({sizes[k]}, -1, 1, dt, 100 + k);
    gpu_params.push_back(p.to(Device::cuda()).requires_grad_());
    cpu_params.push_back(p.requires_grad_());
  }
  auto cpu_opt = make(many_groups ? group_per_param(cpu_params) : groups_of(cpu_params));
  auto gpu_opt = make(many_groups ? group_per_param(gpu_params) : groups_of(gpu_params));
  for (int t = 1; t <= 4; ++t) {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (k == 3 && t == 2) {  // a parameter without a gradient in one step is skipped on both
        cpu_params[k].zero_grad();
        gpu_params[k].zero_grad();
        continue;
      }
      Tensor g = test::uniform({sizes[k]}, -2.0 / t, 2.0 / t, dt, 1000 * t + k);
      cpu_params[k].set_grad(g);
      gpu_params[k].set_grad(g.to(Device::cuda()));
    }
    cpu_opt->step();
    gpu_opt->step();
  }
  for (size_t k = 0; k < sizes.size(); ++k) {
    expect_close(gpu_params[k], cpu_params[k], dt, "parameter " + std::to_string(k));
    EXPECT_EQ(gpu_opt->state_step(k), cpu_opt->state_step(k));
    ASSERT_EQ(gpu_opt->state(k).size(), cpu_opt->state(k).size());
    for (const auto& [buf, t] : cpu_opt->state(k))
      expect_close(gpu_opt->state(k).at(buf), t, dt, "state " + std::to_string(k) + "." + buf);
  }
}

template <class Opt, class Options>
MakeOpt maker(Options o) {
  return [o](const std::vector<optim::ParamGroup>& g) { return std::make_unique<Opt>(g, o); };
}

}  // namespace

TEST(CudaOptim, FusedUpdatesMatchCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: the fused optimizer kernels are not exercised";
  const std::vector<std::pair<std::string, MakeOpt>> cases{
      {"SGD", maker<optim::SGD>(optim::SGDOptions{.lr = 0.05})},
      {"SGD momentum+dampening",
       maker<optim::SGD>(optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.2, .weight_decay = 0.01})},
      {"SGD nesterov", maker<optim::SGD>(optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true})},
      {"Adam", maker<optim::Adam>(optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1})},
      {"Adam amsgrad maximize",
       maker<optim::Adam>(optim::AdamOptions{.lr = 0.01, .beta2 = 0.6, .amsgrad = true, .maximize = true})},
      {"AdamW", maker<optim::AdamW>(optim::AdamWOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true})},
      {"RMSprop", maker<optim::RMSprop>(optim::RMSpropOptions{.lr = 0.01})},
      {"RMSprop centered momentum",
       maker<optim::RMSprop>(optim::RMSpropOptions{.lr = 0.01, .alpha = 0.9, .weight_decay = 0.01, .momentum = 0.5,
                                                   .centered = true})},
      {"Adagrad", maker<optim::Adagrad>(optim::AdagradOptions{.lr = 0.1, .lr_decay = 0.05,
                                                              .initial_accumulator_value = 0.1})}};
  for (const auto& [name, make] : cases)
    for (DType dt : {DType::F32, DType::F64}) check_parity(name, make, dt);
  for (const auto& [name, make] : cases) check_parity(name, make, DType::F32, /*many_groups=*/true);
}

// 150 parameters: more than one launch's 48 entries, so the step takes four launches.
TEST(CudaOptim, ManyParametersSpanSeveralLaunches) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: the fused optimizer kernels are not exercised";
  std::vector<Tensor> cpu_params, gpu_params;
  for (int k = 0; k < 150; ++k) {
    Tensor p = test::uniform({1 + (k * 37) % 300}, -1, 1, DType::F32, 7 + k);
    gpu_params.push_back(p.to(Device::cuda()).requires_grad_());
    cpu_params.push_back(p.requires_grad_());
  }
  optim::Adam cpu_opt(cpu_params, {.lr = 0.01, .weight_decay = 0.01}), gpu_opt(gpu_params, {.lr = 0.01, .weight_decay = 0.01});
  for (int t = 1; t <= 3; ++t) {
    for (size_t k = 0; k < cpu_params.size(); ++k) {
      Tensor g = test::uniform(cpu_params[k].shape(), -1, 1, DType::F32, 100 * t + k);
      cpu_params[k].set_grad(g);
      gpu_params[k].set_grad(g.to(Device::cuda()));
    }
    cpu_opt.step();
    gpu_opt.step();
  }
  for (size_t k = 0; k < cpu_params.size(); ++k) expect_close(gpu_params[k], cpu_params[k], DType::F32, "parameter " + std::to_string(k));
}

TEST(CudaOptim, TrainingOnCudaTracksTheCpuRun) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: CUDA training is not exercised";
  Generator data(5);
  Tensor x = randn({64, 3}, DType::F32, &data);
  Tensor y = randint(0, 2, {64}, DType::I64, &data);
  auto build = [] {
    Generator init(11);
    return nn::sequential({std::make_shared<nn::Linear>(3, 16, nn::LinearOptions{.generator = &init}),
                           std::make_shared<nn::ReLU>(),
                           std::make_shared<nn::Linear>(16, 2, nn::LinearOptions{.generator = &init})});
  };
  auto cpu_model = build(), gpu_model = build();
  gpu_model->to(Device::cuda());
  optim::Adam cpu_opt(cpu_model->parameters(), {.lr = 0.01}), gpu_opt(gpu_model->parameters(), {.lr = 0.01});
  Tensor xg = x.cuda(), yg = y.cuda();
  for (int step = 0; step < 20; ++step) {
    cpu_opt.zero_grad();
    gpu_opt.zero_grad();
    Tensor lc = cross_entropy((*cpu_model)(x), y), lg = cross_entropy((*gpu_model)(xg), yg);
    EXPECT_NEAR(lg.item(), lc.item(), 1e-4) << "step " << step;
    lc.backward();
    lg.backward();
    cpu_opt.step();
    gpu_opt.step();
  }
  auto pc = cpu_model->parameters(), pg = gpu_model->parameters();
  for (size_t i = 0; i < pc.size(); ++i) EXPECT_TRUE(test::all_close(pg[i].cpu(), pc[i], {1e-4, 1e-3})) << i;
}
