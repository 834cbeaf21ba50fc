// Hostile checkpoints and safetensors headers: a real checkpoint with one metadata entry or header
// byte rewritten, as an attacker (or a damaged disk) would. Each must be refused with ember::Error
// naming the problem, in a message of bounded size, and leave the objects it was loading into as
// they were; none may crash (deep nesting once overflowed the stack) or escape as another exception.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ember/checkpoint.h"
#include "ember/io.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;
namespace fs = std::filesystem;

namespace {

class HostileCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ember-hostile-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    Generator g(5);
    model_ = nn::sequential({std::make_shared<nn::Linear>(3, 4, nn::LinearOptions{.generator = &g}),
                             std::make_shared<nn::ReLU>(),
                             std::make_shared<nn::Linear>(4, 2, nn::LinearOptions{.generator = &g})});
    opt_ = std::make_unique<optim::Adam>(model_->parameters(), optim::AdamOptions{.lr = 0.01});
    sched_ = std::make_unique<optim::StepLR>(*opt_, 2, 0.5);
    // One step, so the optimizer has state buffers to save.
    Tensor loss = cross_entropy((*model_)(randn({5, 3}, DType::F32, &g)), randint(0, 2, {5}, DType::I64, &g));
    loss.backward();
    opt_->step();
    good_ = path("good.safetensors");
    save_checkpoint(good_, *model_, *opt_, sched_.get(), {.epoch = 1, .step = 3});
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // The good checkpoint with metadata `key` set to `value`, written to a new file.
  std::string with_meta(const std::string& key, const std::string& value) {
    io::SafetensorsFile f = io::load_safetensors(good_);
    f.metadata[key] = value;
    const std::string p = path("edited.safetensors");
    io::save_safetensors(p, f.tensors, f.metadata);
    return p;
  }

  // Loads `p` into the test's objects; the weights must be unchanged afterwards.
  ::testing::AssertionResult refused(const std::string& p, const std::vector<std::string>& needles,
                                     size_t max_message = 2000) {
    const std::vector<float> before = model_->at<nn::Linear>(0)->weight.to_vector<float>();
    std::string msg;
    try {
      load_checkpoint(p, *model_, *opt_, sched_.get());
      return ::testing::AssertionFailure() << "loaded without an error";
    } catch (const Error& e) {
      msg = e.what();
    } catch (const std::exception& e) {
      return ::testing::AssertionFailure() << "a non-ember exception escaped: " << e.what();
    }
    for (const std::string& n : needles)
      if (msg.find(n) == std::string::npos) return ::testing::AssertionFailure() << "\"" << msg << "\" lacks " << n;
    if (msg.size() > max_message) return ::testing::AssertionFailure() << "message of " << msg.size() << " bytes";
    if (model_->at<nn::Linear>(0)->weight.to_vector<float>() != before)
      return ::testing::AssertionFailure() << "the model changed";
    return ::testing::AssertionSuccess();
  }

  fs::path dir_;
  std::shared_ptr<nn::Sequential> model_;
  std::unique_ptr<optim::Adam> opt_;
  std::unique_ptr<optim::StepLR> sched_;
  std::string good_;
};

std::string nested(const std::string& open, const std::string& inner, const std::string& close, int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  s += inner;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

TEST_F(HostileCheckpoint, DeeplyNestedOptimizerOptionsAreRefusedNotRecursedInto) {
  // 65k levels once crashed in the recursive dump() that built the "not a number" message.
  const std::string options = "{\"lr\":" + nested("[", "1", "]", 65'000) + "}";
  const std::string p = with_meta("optimizer", "{\"type\":\"Adam\",\"param_groups\":[{\"options\":" + options +
                                                   ",\"params\":[0,1,2,3]}]}");
  EXPECT_TRUE(refused(p, {"\"optimizer\" metadata", "deeper than 32 levels"}));
}

TEST_F(HostileCheckpoint, DeeplyNestedSchedulerChildrenAreRefusedNotRecursedInto) {
  // 16k levels once overflowed decode_scheduler's recursion.
  const std::string chain = nested("{\"type\":\"StepLR\",\"children\":[", "{\"type\":\"StepLR\"}", "]}", 16'000);
  EXPECT_TRUE(refused(with_meta("scheduler", chain), {"\"scheduler\" metadata", "deeper than 32 levels"}));
}

TEST_F(HostileCheckpoint, MalformedMetadataIsAnEmberErrorWithABoundedMessage) {
  // A huge unterminated string: nlohmann's message quotes the token it read.
  const std::string huge(4'000'000, 'x');
  EXPECT_TRUE(refused(with_meta("generator", "{\"seed\":\"" + huge), {"\"generator\" metadata", "not valid JSON"}));
  EXPECT_TRUE(refused(with_meta("epoch", huge), {"\"epoch\"", "is not an integer", "4000000 bytes"}));
  EXPECT_TRUE(refused(with_meta("format_version", huge), {"format version", "4000000 bytes"}));
  EXPECT_TRUE(refused(with_meta("optimizer", "{\"type\":\"Adam\",\"param_groups\":[{\"options\":{\"lr\":[\"" + huge +
                                                 "\"]},\"params\":[0,1,2,3]}]}"),
                      {"optimizer options", "is not a number"}));
  EXPECT_TRUE(refused(with_meta("scheduler", "{\"type\":\"StepLR\",\"children\":7}"), {"\"children\" is not an array"}));
  EXPECT_TRUE(refused(with_meta("optimizer", "[1]"), {"optimizer metadata", "malformed"}));
  EXPECT_TRUE(refused(with_meta("generator", "{\"seed\":-1,\"offset\":0}"), {"generator metadata", "malformed"}));
  EXPECT_TRUE(refused(with_meta("optimizer", std::string(17 << 20, ' ')), {"more than the limit"}));
}

TEST_F(HostileCheckpoint, NegativeCountersAreRefused) {
  EXPECT_TRUE(refused(with_meta("step", "-3"), {"step -3", "never negative"}));
  EXPECT_TRUE(refused(with_meta("epoch", "-1"), {"epoch -1", "never negative"}));
}

void write_all(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// The saved scheduler JSON with values[key] replaced by `value` (JSON text).
std::string scheduler_with(const std::string& saved, const std::string& key, const std::string& value) {
  nlohmann::json j = nlohmann::json::parse(saved);
  j["values"][key] = nlohmann::json::parse(value);
  return j.dump();
}

TEST_F(HostileCheckpoint, RestoredSchedulerStateIsValidatedAsTheConstructorValidatesIt) {
  // A StepLR gamma of NaN or -5 once loaded, and the run died an epoch later without naming the file.
  const std::string saved = io::load_safetensors(good_).metadata.at("scheduler");
  EXPECT_TRUE(refused(with_meta("scheduler", scheduler_with(saved, "gamma", "\"nan\"")),
                      {"edited.safetensors", "StepLR.load_state_dict: gamma must be finite"}));
  EXPECT_TRUE(refused(with_meta("scheduler", scheduler_with(saved, "gamma", "-5")), {"gamma", "got -5"}));
  EXPECT_TRUE(refused(with_meta("scheduler", scheduler_with(saved, "step_size", "1e300")), {"step_size", "integer"}));
  EXPECT_TRUE(refused(with_meta("scheduler", scheduler_with(saved, "step_size", "2.5")), {"step_size", "integer"}));
  EXPECT_TRUE(refused(with_meta("scheduler", scheduler_with(saved, "last_epoch", "\"nan\"")), {"last_epoch"}));
  EXPECT_TRUE(refused(with_meta("scheduler", scheduler_with(saved, "last_epoch", "-7")), {"last_epoch -7"}));
  nlohmann::json lrs = nlohmann::json::parse(saved);
  lrs["lists"]["base_lrs"] = {"inf"};
  EXPECT_TRUE(refused(with_meta("scheduler", lrs.dump()), {"base_lrs must be finite"}));
  // The scheduler is unchanged by the refused loads.
  EXPECT_EQ(sched_->state_dict().values.at("gamma"), 0.5);
}

TEST_F(HostileCheckpoint, RestoredOptimizerOptionsAreValidatedAsTheConstructorValidatesThem) {
  nlohmann::json o = nlohmann::json::parse(io::load_safetensors(good_).metadata.at("optimizer"));
  o["param_groups"][0]["options"]["lr"] = -1;
  EXPECT_TRUE(refused(with_meta("optimizer", o.dump()), {"options of parameter group 0 are invalid", "lr"}));
}

TEST_F(HostileCheckpoint, ADtypeChangedInTheFileIsRefusedNotCast) {
  io::SafetensorsFile f = io::load_safetensors(good_);
  for (auto& [name, t] : f.tensors)
    if (name == "0.weight") t = t.to(DType::I32);
  const std::string p = path("retyped.safetensors");
  io::save_safetensors(p, f.tensors, f.metadata);
  EXPECT_TRUE(refused(p, {"\"0.weight\" is i32 but the model's is f32", "nothing was changed"}));
  // An optimizer buffer retyped within the floats is refused too: a checkpoint restores exactly.
  f = io::load_safetensors(good_);
  bool retyped = false;
  for (auto& [name, t] : f.tensors)
    if (name == "optimizer.state.0.exp_avg") t = t.to(DType::F64), retyped = true;
  ASSERT_TRUE(retyped) << "no optimizer.state.0.exp_avg in the checkpoint";
  io::save_safetensors(p, f.tensors, f.metadata);
  EXPECT_TRUE(refused(p, {"optimizer.state.0.exp_avg\" is f64 but parameter 0 is f32"}));
  // Plain load_state_dict converts between float precisions but refuses a float read as an integer.
  nn::StateDict sd = model_->state_dict();
  for (auto& [name, t] : sd)
    if (name == "2.bias") t = t.to(DType::I64);
  EXPECT_TRUE(throws_with([&] { model_->load_state_dict(sd); }, {"dtype mismatch for \"2.bias\"", "i64", "f32"}));
}

TEST_F(HostileCheckpoint, ManyAndLongKeysAreListedShort) {
  // A state with 1000 foreign keys, one of them 5 MB long: the message names a few, cut short.
  nn::StateDict sd = model_->state_dict();
  sd.emplace_back(std::string(5'000'000, 'k'), zeros({1}));
  for (int i = 0; i < 1000; ++i) sd.emplace_back("extra." + std::to_string(i), zeros({1}));
  try {
    model_->load_state_dict(sd);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unexpected key(s)"), std::string::npos) << msg.substr(0, 300);
    EXPECT_NE(msg.find("(5000000 bytes)"), std::string::npos) << msg.substr(0, 300);
    EXPECT_NE(msg.find("(and 981 more)"), std::string::npos) << msg.substr(0, 600);
    EXPECT_LT(msg.size(), 4000u);
  }
  optim::OptimizerState os = opt_->state_dict();
  for (int i = 0; i < 1000; ++i) os.tensors.emplace_back(std::string(100'000, 'x') + std::to_string(i), zeros({1}));
  try {
    opt_->load_state_dict(os);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("(and 980 more)"), std::string::npos);
    EXPECT_LT(std::string(e.what()).size(), 6000u);
  }
}

TEST_F(HostileCheckpoint, NulByteInsideTheHeaderIsRefused) {
  // nlohmann stops at a NUL, so "{} <NUL> <html>" once parsed as an empty header.
  const std::string header = std::string("{}") + '\0' + "<html>oops</html>";
  const std::string p = path("nul.safetensors");
  write_all(p, le64(header.size()) + header);
  EXPECT_TRUE(throws_with([&] { io::load_safetensors(p); }, {"NUL byte at offset 2"}));
}

TEST_F(HostileCheckpoint, NamedPipeIsRefusedWithoutBlocking) {
  // fopen on a FIFO waits for a writer: --resume and --eval once hung here forever.
  const std::string fifo = path("pipe.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_TRUE(refused(fifo, {"load_safetensors: ", fifo, "not a regular file", "FIFO"}));
  EXPECT_TRUE(throws_with([&] { io::load_safetensors(fifo); }, {"FIFO", "expected a safetensors file"}));
}

TEST_F(HostileCheckpoint, HugeNamesInTheHeaderAreQuotedShort) {
  const std::string name(5'000'000, 'n');
  const std::string header = "{\"" + name + "\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  const std::string p = path("longname.safetensors");
  write_all(p, le64(header.size()) + header + "x");
  try {
    io::load_safetensors(p);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unknown dtype 'Q7'"), std::string::npos) << msg.substr(0, 300);
    EXPECT_NE(msg.find("(5000000 bytes)"), std::string::npos) << msg.substr(0, 300);
    EXPECT_LT(msg.size(), 1000u);
  }
  // A duplicate key is quoted short too.
  const std::string dup = "{\"" + name + "\":1,\"" + name + "\":2}";
  write_all(p, le64(dup.size()) + dup);
  try {
    io::load_safetensors(p);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name"), std::string::npos);
    EXPECT_LT(std::string(e.what()).size(), 1000u);
  }
}

}  // namespace
