// Training checkpoint tests: N steps + save + load into fresh objects + N steps equals 2N
// uninterrupted steps bit for bit on the CPU; the file is plain safetensors with the documented
// names and metadata; a failed write leaves the previous checkpoint loadable; a checkpoint that
// does not fit is refused without changing anything.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "ember/checkpoint.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid()) + ".safetensors")).string();
}

// Everything one training run owns. The model uses Dropout on the default generator, Adam with
// AMSGrad and weight decay, and OneCycleLR (which also cycles beta1), so every piece of state the
// checkpoint carries matters to the result.
struct TrainingRun {
  static constexpr int64_t kTotalSteps = 12;
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<optim::Adam> opt;
  std::unique_ptr<optim::OneCycleLR> sched;
  Tensor x, y;
  TrainingState counters;

  explicit TrainingRun(uint64_t init_seed) {
    Generator init(init_seed);
    model = nn::sequential({std::make_shared<nn::Linear>(4, 16, nn::LinearOptions{.generator = &init}),
                            std::make_shared<nn::ReLU>(), std::make_shared<nn::Dropout>(0.25),
                            std::make_shared<nn::Linear>(16, 3, nn::LinearOptions{.generator = &init})});
    opt = std::make_unique<optim::Adam>(model->parameters(),
                                        optim::AdamOptions{.lr = 0.01, .weight_decay = 0.01, .amsgrad = true});
    sched = std::make_unique<optim::OneCycleLR>(*opt, 0.05, kTotalSteps);
    Generator data(77);
    x = randn({32, 4}, DType::F32, &data);
    y = randint(0, 3, {32}, DType::I64, &data);
  }

  void train(int64_t steps) {
    for (int64_t i = 0; i < steps; ++i) {
      opt->zero_grad();
      Tensor loss = cross_entropy((*model)(x), y);
      loss.backward();
      opt->step();
      sched->step();
      ++counters.step;
      if (counters.step % 4 == 0) ++counters.epoch;
    }
  }
};

// Exact equality of everything the two runs hold.
void expect_identical(TrainingRun& a, TrainingRun& b) {
  auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_EQ(pa[i].second.to_vector<float>(), pb[i].second.to_vector<float>()) << pa[i].first;
  const auto params = a.opt->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(a.opt->state_step(i), b.opt->state_step(i));
    ASSERT_EQ(a.opt->state(i).size(), b.opt->state(i).size());
    for (const auto& [name, t] : a.opt->state(i))
      EXPECT_EQ(t.to_vector<float>(), b.opt->state(i).at(name).to_vector<float>()) << "state " << i << "." << name;
  }
  EXPECT_EQ(a.opt->options<optim::AdamOptions>(0), b.opt->options<optim::AdamOptions>(0));  // lr and beta1 as OneCycleLR left them
  EXPECT_EQ(a.opt->scheduler_values(0), b.opt->scheduler_values(0));
  EXPECT_EQ(a.sched->last_epoch(), b.sched->last_epoch());
  EXPECT_EQ(a.sched->get_last_lr(), b.sched->get_last_lr());
  EXPECT_EQ(a.counters.step, b.counters.step);
  EXPECT_EQ(a.counters.epoch, b.counters.epoch);
}

}  // namespace

TEST(Checkpoint, ResumeIsBitIdenticalToAnUninterruptedRun) {
  const int64_t n = TrainingRun::kTotalSteps / 2;
  const std::string path = temp_path("ember_resume");

  manual_seed(1234);
  TrainingRun straight(5);
  straight.train(2 * n);
  const uint64_t straight_offset = default_generator().offset();

  manual_seed(1234);
  TrainingRun first(5);
  first.train(n);
  first.counters.extra["note"] = "halfway";
  save_checkpoint(path, *first.model, *first.opt, first.sched.get(), first.counters);

  // Fresh objects with other weights, and a generator elsewhere: the load must restore it all.
  manual_seed(999);
  TrainingRun resumed(6);
  rand({3});
  resumed.counters = load_checkpoint(path, *resumed.model, *resumed.opt, resumed.sched.get());
  EXPECT_EQ(resumed.counters.step, n);
  EXPECT_EQ(resumed.counters.extra.at("note"), "halfway");
  expect_identical(first, resumed);
  resumed.train(n);
  expect_identical(straight, resumed);
  EXPECT_EQ(default_generator().offset(), straight_offset);
  EXPECT_EQ(default_generator().seed(), 1234u);
  std::filesystem::remove(path);
}

TEST(Checkpoint, IsPlainSafetensorsWithDocumentedNames) {
  const std::string path = temp_path("ember_layout");
  manual_seed(3);
  TrainingRun run(1);
  run.train(2);
  run.counters.extra["dataset"] = "synthetic";
  save_checkpoint(path, *run.model, *run.opt, run.sched.get(), run.counters);
  io::SafetensorsFile f = io::load_safetensors(path);
  std::map<std::string, Tensor> t(f.tensors.begin(), f.tensors.end());
  for (const char* name : {"0.weight", "0.bias", "3.weight", "3.bias", "optimizer.state.0.exp_avg",
                           "optimizer.state.0.exp_avg_sq", "optimizer.state.0.max_exp_avg_sq", "optimizer.state.3.step"})
    EXPECT_TRUE(t.count(name)) << name;
  EXPECT_EQ(t.size(), 4u + 4u * 4u);
  EXPECT_EQ(t.at("optimizer.state.3.step").dtype(), DType::I64);
  EXPECT_EQ(t.at("optimizer.state.3.step").item<int64_t>(), 2);
  EXPECT_EQ(t.at("0.weight").to_vector<float>(), run.model->at<nn::Linear>(0)->weight.to_vector<float>());
  EXPECT_EQ(f.metadata.at("format"), "ember-checkpoint");
  EXPECT_EQ(f.metadata.at("step"), "2");
  EXPECT_EQ(f.metadata.at("epoch"), "0");
  EXPECT_EQ(f.metadata.at("extra.dataset"), "synthetic");
  EXPECT_EQ(f.metadata.at("model_type"), "Sequential");
  EXPECT_NE(f.metadata.at("model").find("(0): Linear(in_features=4, out_features=16, bias=true)"), std::string::npos);
  EXPECT_NE(f.metadata.at("optimizer").find("\"type\":\"Adam\""), std::string::npos);
  EXPECT_NE(f.metadata.at("optimizer").find("\"amsgrad\":1.0"), std::string::npos);
  EXPECT_NE(f.metadata.at("scheduler").find("\"type\":\"OneCycleLR\""), std::string::npos);
  EXPECT_NE(f.metadata.at("generator").find("\"seed\":3"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(Checkpoint, FailedWriteLeavesThePreviousCheckpointLoadable) {
  const std::string path = temp_path("ember_failed_write");
  manual_seed(8);
  TrainingRun run(2);
  run.train(3);
  save_checkpoint(path, *run.model, *run.opt, run.sched.get(), run.counters);
  const auto size = std::filesystem::file_size(path);
  const std::vector<float> saved = run.model->at<nn::Linear>(0)->weight.to_vector<float>();
  run.train(2);
  // Writes past half the checkpoint's size fail (EFBIG) in the middle of the new file.
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = size / 2;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  bool threw = false;
  try {
    save_checkpoint(path, *run.model, *run.opt, run.sched.get(), run.counters);
  } catch (const Error&) {
    threw = true;
  }
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  std::signal(SIGXFSZ, previous_handler);
  EXPECT_TRUE(threw);
  // The old file is intact and loads; no temporary file is left beside it.
  EXPECT_EQ(std::filesystem::file_size(path), size);
  TrainingRun fresh(9);
  TrainingState ts = load_checkpoint(path, *fresh.model, *fresh.opt, fresh.sched.get());
  EXPECT_EQ(ts.step, 3);
  EXPECT_EQ(fresh.model->at<nn::Linear>(0)->weight.to_vector<float>(), saved);
  const std::string stem = std::filesystem::path(path).filename().string();
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    EXPECT_EQ(e.path().filename().string().rfind(stem + ".tmp", 0), std::string::npos) << e.path();
  std::filesystem::remove(path);
}

TEST(Checkpoint, MismatchIsRefusedAndNothingChanges) {
  const std::string path = temp_path("ember_mismatch");
  manual_seed(4);
  TrainingRun run(3);
  run.train(2);
  save_checkpoint(path, *run.model, *run.opt, run.sched.get(), run.counters);

  // A model of another shape: the model part fails; nothing is changed.
  Generator g(1);
  auto other = nn::sequential({std::make_shared<nn::Linear>(4, 8, nn::LinearOptions{.generator = &g}),
                               std::make_shared<nn::ReLU>(), std::make_shared<nn::Dropout>(0.25),
                               std::make_shared<nn::Linear>(8, 3, nn::LinearOptions{.generator = &g})});
  optim::Adam opt(other->parameters(), {.lr = 0.01, .weight_decay = 0.01, .amsgrad = true});
  const std::vector<float> before = other->at<nn::Linear>(0)->weight.to_vector<float>();
  EXPECT_TRUE(throws_with([&] { load_checkpoint(path, *other, opt, nullptr); },
                          {"load_checkpoint", "left as they were", "size mismatch for \"0.weight\""}));
  EXPECT_EQ(other->at<nn::Linear>(0)->weight.to_vector<float>(), before);

  // The right model but another optimizer type: the model is rolled back too.
  TrainingRun target(10);
  const std::vector<float> target_before = target.model->at<nn::Linear>(3)->bias.to_vector<float>();
  optim::SGD sgd(target.model->parameters(), {.lr = 0.1});
  EXPECT_TRUE(throws_with([&] { load_checkpoint(path, *target.model, sgd, nullptr); }, {"SGD", "saved by a Adam"}));
  EXPECT_EQ(target.model->at<nn::Linear>(3)->bias.to_vector<float>(), target_before);
  EXPECT_EQ(sgd.state_step(0), 0);

  // Another scheduler type is refused; a null scheduler skips the saved one.
  optim::StepLR step(*target.opt, 2);
  EXPECT_TRUE(throws_with([&] { load_checkpoint(path, *target.model, *target.opt, &step); },
                          {"StepLR", "saved by a OneCycleLR"}));
  EXPECT_EQ(target.opt->state_step(0), 0);
  EXPECT_EQ(load_checkpoint(path, *target.model, *target.opt, nullptr).step, 2);

  // A plain safetensors file is not a checkpoint.
  const std::string plain = temp_path("ember_plain");
  io::save_safetensors(plain, run.model->state_dict());
  EXPECT_TRUE(throws_with([&] { load_checkpoint(plain, *target.model, *target.opt, nullptr); },
                          {"not an ember training checkpoint"}));
  // A checkpoint saved without a scheduler cannot fill one.
  save_checkpoint(plain, *run.model, *run.opt, nullptr, run.counters);
  EXPECT_TRUE(throws_with([&] { load_checkpoint(plain, *target.model, *target.opt, target.sched.get()); },
                          {"without a scheduler"}));
  std::filesystem::remove(path);
  std::filesystem::remove(plain);
}

TEST(Checkpoint, RefusesNamesThatCollide) {
  class Odd : public nn::Module {
   public:
    Odd() { register_module("optimizer", std::make_shared<nn::Linear>(2, 2)); }
  } odd;
  optim::SGD sgd(odd.parameters());
  EXPECT_TRUE(throws_with([&] { save_checkpoint(temp_path("ember_odd"), odd, sgd, nullptr, {}); },
                          {"optimizer.weight", "reserves"}));
  Tensor p = zeros({1}).requires_grad_();
  optim::SGD other({p});
  optim::StepLR s(other, 1);
  EXPECT_TRUE(throws_with([&] { save_checkpoint(temp_path("ember_odd"), odd, sgd, &s, {}); }, {"another optimizer"}));
}
