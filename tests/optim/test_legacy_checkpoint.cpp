// Checkpoints written by the ember before typed optimizer options (tests/fixtures/legacy/, made by
// tests/fixtures/make_legacy_checkpoints.cc with commit 6698ac5) load into today's objects: the
// typed options, scheduler values, state buffers and scheduler state come back exactly; saving
// them again writes the same bytes; and today's code, run the same way, writes the same file.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ember/checkpoint.h"
#include "test_util.h"

using namespace ember;

namespace {

std::string fixture(const std::string& name) { return std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/legacy/" + name; }

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid()) + ".safetensors")).string();
}

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The generator's model and data (same seeds, same layers).
struct LegacyRun {
  std::shared_ptr<nn::Sequential> model;
  Tensor x, y;
  explicit LegacyRun(uint64_t seed) {
    Generator init(seed);
    model = nn::sequential({std::make_shared<nn::Linear>(3, 4, nn::LinearOptions{.generator = &init}),
                            std::make_shared<nn::Tanh>(),
                            std::make_shared<nn::Linear>(4, 2, nn::LinearOptions{.generator = &init})});
    Generator data(seed + 1);
    x = randn({8, 3}, DType::F32, &data);
    y = randint(0, 2, {8}, DType::I64, &data);
  }
  void step(optim::Optimizer& opt) {
    opt.zero_grad();
    cross_entropy((*model)(x), y).backward();
    opt.step();
  }
};

// The optimizer's state equals the file's "optimizer.state.*" tensors bit for bit, and has no others.
void expect_state_is_the_files(const optim::Optimizer& opt, const std::string& path, int64_t steps) {
  const io::SafetensorsFile f = io::load_safetensors(path);
  size_t buffers = 0;
  for (const auto& [name, t] : f.tensors) {
    if (name.rfind("optimizer.state.", 0) != 0) continue;
    const std::string rest = name.substr(16);
    const size_t i = std::stoul(rest.substr(0, rest.find('.')));
    const std::string buf = rest.substr(rest.find('.') + 1);
    if (buf == "step") {
      EXPECT_EQ(opt.state_step(i), steps) << name;
      EXPECT_EQ(t.item<int64_t>(), steps) << name;
      continue;
    }
    ++buffers;
    ASSERT_TRUE(opt.state(i).count(buf)) << name;
    EXPECT_EQ(opt.state(i).at(buf).to_vector<float>(), t.to_vector<float>()) << name;
  }
  size_t held = 0;
  for (size_t i = 0; i < opt.parameters().size(); ++i) held += opt.state(i).size();
  EXPECT_EQ(held, buffers);
  EXPECT_GT(buffers, 0u);
}

// Loads `name` into `fresh` objects, checks that saving them again gives the same bytes, and that
// `straight` (today's code run as the generator ran) wrote the same file.
template <class Check>
void check_legacy(const std::string& name, LegacyRun& fresh, optim::Optimizer& opt, optim::LRScheduler& sched,
                  const std::string& straight_path, int64_t steps, Check check) {
  SCOPED_TRACE(name);
  const std::string path = fixture(name);
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  const TrainingState ts = load_checkpoint(path, *fresh.model, opt, &sched);
  EXPECT_EQ(ts.step, steps);
  EXPECT_EQ(ts.extra.at("written_by"), "ember 6698ac5");
  expect_state_is_the_files(opt, path, steps);
  check();
  const std::string again = temp_path("ember_legacy_again");
  save_checkpoint(again, *fresh.model, opt, &sched, ts);
  EXPECT_TRUE(bytes_of(again) == bytes_of(path)) << "re-saving a loaded legacy checkpoint changed its bytes";
  EXPECT_TRUE(bytes_of(straight_path) == bytes_of(path)) << "today's code writes another file for the same run";
  std::filesystem::remove(again);
  std::filesystem::remove(straight_path);
}

}  // namespace

TEST(LegacyCheckpoint, SgdGroupsWithSequentialLR) {
  // Today's code, the generator's run: SGD over two groups, SequentialLR(LinearLR, ExponentialLR).
  const std::string straight_path = temp_path("ember_legacy_sgd");
  auto make = [](LegacyRun& run) {
    auto first = run.model->at<nn::Linear>(0), second = run.model->at<nn::Linear>(2);
    return std::make_unique<optim::SGD>(
        std::vector<optim::ParamGroup>{{{first->weight, first->bias}, 0.05, 0.01}, {{second->weight, second->bias}}},
        optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.25, .weight_decay = 0.001});
  };
  auto schedule = [](optim::Optimizer& opt) {
    auto warm = std::make_shared<optim::LinearLR>(opt, 0.5, 1.0, 2);
    auto decay = std::make_shared<optim::ExponentialLR>(opt, 0.8);
    return std::make_unique<optim::SequentialLR>(opt, std::vector<std::shared_ptr<optim::LRScheduler>>{warm, decay},
                                                 std::vector<int64_t>{2});
  };
  manual_seed(11);
  LegacyRun straight(1);
  auto sopt = make(straight);
  auto ssched = schedule(*sopt);
  for (int i = 0; i < 3; ++i) {
    straight.step(*sopt);
    ssched->step();
  }
  save_checkpoint(straight_path, *straight.model, *sopt, ssched.get(),
                  TrainingState{.epoch = 3, .step = 3, .extra = {{"written_by", "ember 6698ac5"}}});

  manual_seed(5);
  LegacyRun fresh(7);  // other weights; an optimizer with other options
  auto first = fresh.model->at<nn::Linear>(0), second = fresh.model->at<nn::Linear>(2);
  optim::SGD opt(std::vector<optim::ParamGroup>{{{first->weight, first->bias}}, {{second->weight, second->bias}}},
                 {.lr = 0.3, .nesterov = false});
  auto sched = schedule(opt);
  check_legacy("sgd_groups_sequential.safetensors", fresh, opt, *sched, straight_path, 3, [&] {
    // Epoch 3 is ExponentialLR's epoch 1 (milestone 2): base * 0.8.
    const optim::SGDOptions g0 = opt.options<optim::SGDOptions>(0), g1 = opt.options<optim::SGDOptions>(1);
    EXPECT_NEAR(g0.lr, 0.05 * 0.8, 1e-17);
    EXPECT_NEAR(g1.lr, 0.1 * 0.8, 1e-17);
    EXPECT_EQ(g0.momentum, 0.9);
    EXPECT_EQ(g0.dampening, 0.25);
    EXPECT_EQ(g0.weight_decay, 0.01);
    EXPECT_EQ(g1.weight_decay, 0.001);
    EXPECT_FALSE(g0.nesterov);
    EXPECT_FALSE(g1.maximize);
    EXPECT_EQ(opt.scheduler_values(0), (std::map<std::string, double>{{"initial_lr", 0.05}}));
    EXPECT_EQ(opt.scheduler_values(1), (std::map<std::string, double>{{"initial_lr", 0.1}}));
    EXPECT_EQ(sched->last_epoch(), 3);
    EXPECT_EQ(sched->get_last_lr(), (std::vector<double>{g0.lr, g1.lr}));
  });
  // The loaded run continues as the straight one does (on the straight run's data).
  fresh.x = straight.x;
  fresh.y = straight.y;
  for (int i = 0; i < 2; ++i) {
    straight.step(*sopt);
    ssched->step();
    fresh.step(opt);
    sched->step();
  }
  EXPECT_EQ(fresh.model->at<nn::Linear>(0)->weight.to_vector<float>(),
            straight.model->at<nn::Linear>(0)->weight.to_vector<float>());
  EXPECT_EQ(opt.lr(1), sopt->lr(1));
}

TEST(LegacyCheckpoint, AdamAmsgradWithOneCycleLR) {
  const std::string straight_path = temp_path("ember_legacy_adam");
  manual_seed(12);
  LegacyRun straight(2);
  optim::Adam sopt(straight.model->parameters(),
                   {.lr = 0.01, .beta2 = 0.99, .eps = 1e-7, .weight_decay = 0.02, .amsgrad = true});
  optim::OneCycleLR ssched(sopt, 0.05, 10);
  for (int i = 0; i < 4; ++i) {
    straight.step(sopt);
    ssched.step();
  }
  save_checkpoint(straight_path, *straight.model, sopt, &ssched,
                  TrainingState{.epoch = 1, .step = 4, .extra = {{"written_by", "ember 6698ac5"}}});

  manual_seed(5);
  LegacyRun fresh(8);
  optim::Adam opt(fresh.model->parameters(), {.lr = 0.5});
  optim::OneCycleLR sched(opt, 0.05, 10);
  check_legacy("adam_amsgrad_onecycle.safetensors", fresh, opt, sched, straight_path, 4, [&] {
    // The values the old file holds for the group, by their old names, now typed or scheduler values.
    const nlohmann::json saved = nlohmann::json::parse(io::load_safetensors(fixture("adam_amsgrad_onecycle.safetensors"))
                                                           .metadata.at("optimizer"))["param_groups"][0]["options"];
    const optim::AdamOptions& o = opt.options<optim::AdamOptions>(0);
    EXPECT_EQ(o.lr, saved["lr"].get<double>());
    EXPECT_EQ(o.beta1, saved["beta1"].get<double>());
    EXPECT_EQ(o.beta2, 0.99);
    EXPECT_EQ(o.eps, 1e-7);
    EXPECT_EQ(o.weight_decay, 0.02);
    EXPECT_TRUE(o.amsgrad);
    EXPECT_FALSE(o.maximize);
    EXPECT_EQ(opt.scheduler_values(0), (std::map<std::string, double>{{"base_momentum", 0.85},
                                                                      {"initial_lr", 0.05 / 25},
                                                                      {"max_lr", 0.05},
                                                                      {"max_momentum", 0.95},
                                                                      {"min_lr", 0.05 / 25 / 1e4}}));
    EXPECT_EQ(sched.last_epoch(), 4);
  });
}

TEST(LegacyCheckpoint, RmspropCenteredWithReduceLROnPlateau) {
  const std::string straight_path = temp_path("ember_legacy_rmsprop");
  auto options = optim::RMSpropOptions{.lr = 0.02, .alpha = 0.9, .eps = 1e-6, .weight_decay = 0.01, .momentum = 0.5,
                                       .centered = true};
  manual_seed(13);
  LegacyRun straight(3);
  optim::RMSprop sopt(straight.model->parameters(), options);
  optim::ReduceLROnPlateau ssched(sopt, {.factor = 0.5, .patience = 0});
  for (int i = 0; i < 3; ++i) {
    straight.step(sopt);
    ssched.step(1.0 + i);
  }
  save_checkpoint(straight_path, *straight.model, sopt, &ssched,
                  TrainingState{.epoch = 3, .step = 3, .extra = {{"written_by", "ember 6698ac5"}}});

  manual_seed(5);
  LegacyRun fresh(9);
  optim::RMSprop opt(fresh.model->parameters());
  optim::ReduceLROnPlateau sched(opt, {.factor = 0.5, .patience = 0});
  check_legacy("rmsprop_plateau.safetensors", fresh, opt, sched, straight_path, 3, [&] {
    optim::RMSpropOptions want = options;
    want.lr = 0.02 * 0.5 * 0.5;  // the metric got worse twice after the first step
    EXPECT_EQ(opt.options<optim::RMSpropOptions>(0), want);
    EXPECT_TRUE(opt.scheduler_values(0).empty());
    EXPECT_EQ(sched.best(), 1.0);
    EXPECT_EQ(sched.last_epoch(), 3);
  });
}
