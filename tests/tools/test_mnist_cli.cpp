// ember-mnist as a hostile user runs it: the real binary on a tiny hand-made dataset (64 training
// and 20 test images of 4x4 pixels), with flags, checkpoints and output paths chosen to break it.
// Every case must end with a clear message and a non-zero exit, never an abort, a hang or an exit 0
// that reports numbers nobody measured.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <nlohmann/json.hpp>

#include "ember/checkpoint.h"
#include "ember/data.h"
#include "ember/io.h"
#include "test_util.h"

using namespace ember;
namespace fs = std::filesystem;

#ifdef EMBER_MNIST_BIN

namespace {

struct Result {
  int rc = -1;
  std::string out;  // stdout and stderr together
};

class MnistCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ember-cli-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write_dataset(data_dir(), 64, 20);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string data_dir() const { return path("data"); }

  // A dataset of `n_train` and `n_test` side x side images (4x4 by default) whose class shows in the
  // pixels, so training learns.
  static void write_dataset(const std::string& dir, int64_t n_train, int64_t n_test, int64_t side = 4) {
    fs::create_directories(dir);
    const int64_t px_per = side * side;
    auto split = [&](const std::string& prefix, int64_t n) {
      std::vector<uint8_t> px(static_cast<size_t>(n * px_per));
      std::vector<int64_t> y(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        y[i] = i % 10;
        for (int64_t k = 0; k < px_per; ++k)
          px[i * px_per + k] = static_cast<uint8_t>(k % 16 == y[i] ? 250 : (i * 7 + k) % 40);
      }
      data::write_idx(dir + "/" + prefix + "-images-idx3-ubyte", from_vector<uint8_t>(px, {n, side, side}));
      data::write_idx(dir + "/" + prefix + "-labels-idx1-ubyte", from_vector<int64_t>(y, {n}));
    };
    split("train", n_train);
    split("t10k", n_test);
  }

  // Runs ember-mnist with the tiny dataset, the CPU and a small model, plus `args`.
  Result run(const std::string& args, const std::string& data = "", bool quiet = true) const {
    const std::string log = path("log.txt");
    const std::string cmd = std::string("'") + EMBER_MNIST_BIN + "' --data '" + (data.empty() ? data_dir() : data) +
                            "' --device cpu --hidden 8 " + (quiet ? "--quiet " : "") + args + " > '" + log + "' 2>&1 < /dev/null";
    const int status = std::system(cmd.c_str());
    Result r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    std::ifstream in(log);
    r.out.assign(std::istreambuf_iterator<char>(in), {});
    return r;
  }

  // Rewrites one metadata entry of the checkpoint at `p`.
  static void edit_meta(const std::string& p, const std::string& key, const std::string& value) {
    io::SafetensorsFile f = io::load_safetensors(p);
    f.metadata[key] = value;
    io::save_safetensors(p, f.tensors, f.metadata);
  }

  fs::path dir_;
};

::testing::AssertionResult fails_with(const Result& r, int rc, const std::vector<std::string>& needles) {
  if (r.rc != rc) return ::testing::AssertionFailure() << "exit " << r.rc << " (expected " << rc << "): " << r.out;
  for (const std::string& n : needles)
    if (r.out.find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "output lacks \"" << n << "\": " << r.out;
  return ::testing::AssertionSuccess();
}

TEST_F(MnistCli, TrainsAndResumesOnTheTinyDataset) {
  const std::string ck = path("ck.safetensors");
  const Result first = run("--epochs 1 --save '" + ck + "'");
  ASSERT_EQ(first.rc, 0) << first.out;
  const Result resumed = run("--epochs 2 --save '" + ck + "' --resume '" + ck + "'");
  EXPECT_EQ(resumed.rc, 0) << resumed.out;
  EXPECT_NE(resumed.out.find("best epoch"), std::string::npos) << resumed.out;
}

// The convnets train, save, resume and evaluate like the MLP (on 8x8 images: the CNN needs 6x6 at
// least), the banner names the model and its parameter count, and a checkpoint of one model is
// refused by a run that builds another, naming both.
TEST_F(MnistCli, ConvnetsTrainResumeAndEvaluate) {
  const std::string data8 = path("data8");
  write_dataset(data8, 64, 20, 8);
  for (const std::string model : {"cnn", "resnet"}) {
    const std::string ck = path(model + ".safetensors");
    const Result first = run("--model " + model + " --epochs 1 --batch-size 32 --save '" + ck + "'", data8);
    ASSERT_EQ(first.rc, 0) << first.out;
    const Result resumed =
        run("--model " + model + " --epochs 2 --batch-size 32 --save '" + ck + "' --resume '" + ck + "'", data8);
    EXPECT_EQ(resumed.rc, 0) << resumed.out;
    EXPECT_NE(resumed.out.find("best epoch"), std::string::npos) << resumed.out;
    const Result evaluated = run("--model " + model + " --eval '" + ck + "'", data8);
    EXPECT_EQ(evaluated.rc, 0) << evaluated.out;
    EXPECT_TRUE(fails_with(run("--eval '" + ck + "'", data8), 2, {"holds a " + model, "builds a mlp with --hidden 8", "--model"}));
  }
  const Result banner = run("--model cnn --epochs 1 --batch-size 32", data8, /*quiet=*/false);
  ASSERT_EQ(banner.rc, 0) << banner.out;
  // conv1 32*1*9+32, conv2 64*32*9+64, fc1 (64*2*2)*128+128, fc2 128*10+10.
  const int64_t params = 32 * 9 + 32 + 64 * 32 * 9 + 64 + 256 * 128 + 128 + 128 * 10 + 10;
  EXPECT_NE(banner.out.find("CNN"), std::string::npos) << banner.out;
  EXPECT_NE(banner.out.find(std::to_string(params) + " parameters"), std::string::npos) << banner.out;
}

// --resnet-widths / --resnet-blocks choose the ResNet's design: the banner names it with its parameter
// count, a resume with another design is refused naming both, and mismatched lists are refused.
TEST_F(MnistCli, ResnetDesignFlags) {
  const std::string data8 = path("data8");
  write_dataset(data8, 64, 20, 8);
  const std::string ck = path("resnet-8-16.safetensors");
  const std::string design = "--model resnet --resnet-widths 8,16 --resnet-blocks 1,1 --batch-size 32";
  const Result first = run(design + " --epochs 1 --save '" + ck + "'", data8, /*quiet=*/false);
  ASSERT_EQ(first.rc, 0) << first.out;
  // stem conv 8*1*9 + bn 2*8; layer1.0: two convs 8*8*9 and two bns; layer2.0: conv 16*8*9, conv 16*16*9,
  // two bns 2*16 each, downsample conv 16*8 and its bn 2*16; fc 16*10+10.
  const int64_t params = 8 * 9 + 16 + 2 * (8 * 8 * 9 + 16) + 16 * 8 * 9 + 16 * 16 * 9 + 2 * 32 + 16 * 8 + 32 + 16 * 10 + 10;
  EXPECT_NE(first.out.find("2 stages of 1/1 BasicBlocks, widths 8/16"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find(std::to_string(params) + " parameters"), std::string::npos) << first.out;
  EXPECT_EQ(run(design + " --epochs 2 --save '" + ck + "' --resume '" + ck + "'", data8).rc, 0);
  EXPECT_TRUE(fails_with(run("--model resnet --resnet-widths 8,16 --resnet-blocks 2,1 --batch-size 32 --epochs 3 --resume '" +
                             ck + "'", data8),
                         2, {"--resnet-blocks: saved '1,1', this run '2,1'"}));
  EXPECT_TRUE(fails_with(run("--model resnet --resnet-widths 8,16,32 --resnet-blocks 1,1 --epochs 1", data8), 2,
                         {"--resnet-widths has 3 stage(s) and --resnet-blocks 2", "one block count per width"}));
  EXPECT_NE(run("--model resnet --resnet-widths 0,16 --resnet-blocks 1,1 --epochs 1", data8).rc, 0);
  // --resnet-fc-dropout: named in the banner (same parameters), recorded, and checked both ways on resume.
  const std::string ckd = path("resnet-dropout.safetensors");
  const Result dropped = run(design + " --resnet-fc-dropout 0.3 --epochs 1 --save '" + ckd + "'", data8, /*quiet=*/false);
  ASSERT_EQ(dropped.rc, 0) << dropped.out;
  EXPECT_NE(dropped.out.find("widths 8/16, dropout 0.3 before fc), " + std::to_string(params) + " parameters"),
            std::string::npos)
      << dropped.out;
  EXPECT_EQ(run(design + " --resnet-fc-dropout 0.3 --epochs 2 --resume '" + ckd + "'", data8).rc, 0);
  EXPECT_TRUE(fails_with(run(design + " --epochs 2 --resume '" + ckd + "'", data8), 2,
                         {"--resnet-fc-dropout: saved '0.29999999999999999', this run not given (its default)"}));
  EXPECT_TRUE(fails_with(run(design + " --resnet-fc-dropout 0.5 --epochs 3 --resume '" + ck + "'", data8), 2,
                         {"--resnet-fc-dropout: saved (not recorded), this run '0.5'"}));
  EXPECT_NE(run(design + " --resnet-fc-dropout 1 --epochs 1", data8).rc, 0);
}

// --precision bf16 with the CNN (issue 13): its convolutions run under autocast in bf16 and it
// trains, saves and evaluates like fp32; the banner says the convolutions run in bf16.
TEST_F(MnistCli, CnnTrainsInBf16) {
  const std::string data8 = path("data8");
  write_dataset(data8, 64, 20, 8);
  const std::string ck = path("cnn-bf16.safetensors");
  const Result r = run("--model cnn --epochs 2 --batch-size 32 --precision bf16 --save '" + ck + "'", data8, /*quiet=*/false);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("bf16 autocast: linear/matmul and convolutions in bf16 with f32 accumulation"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("best epoch"), std::string::npos) << r.out;
  const Result evaluated = run("--model cnn --eval '" + ck + "'", data8);
  EXPECT_EQ(evaluated.rc, 0) << evaluated.out;
}

TEST_F(MnistCli, MalformedHistoryInACheckpointIsAnErrorNotAnAbort) {
  const std::string ck = path("ck.safetensors");
  ASSERT_EQ(run("--epochs 1 --save '" + ck + "'").rc, 0);
  // [[1]] once read past a 1-element row; "{" and "7" made nlohmann's exceptions escape (rc 134).
  for (const std::string& history : std::vector<std::string>{"[[1]]", "{", "7", "[[1,2,3,4,5,6,7,\"x\"]]", "[" + std::string(100, '[')}) {
    edit_meta(ck, "extra.history", history);
    EXPECT_TRUE(fails_with(run("--epochs 2 --resume '" + ck + "'"), 2, {"error:", "extra.history"})) << history;
  }
}

// ---- honest results: nothing reported that was not measured ----

TEST_F(MnistCli, HugeBatchSizeTrainsOneBatchInsteadOfNothing) {
  // (n + b - 1) / b overflowed into 0 batches: the run "trained" and printed the untrained model.
  const std::string metrics = path("m.jsonl");
  const Result r = run("--epochs 1 --batch-size 9223372036854775807 --metrics-out '" + metrics + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  std::ifstream in(metrics);
  std::string first;
  std::getline(in, first);
  const nlohmann::json epoch = nlohmann::json::parse(first);
  EXPECT_GT(epoch.at("train_loss").get<double>(), 0.0) << first;
  EXPECT_GT(epoch.at("images_per_s").get<double>(), 0.0) << first;
}

TEST_F(MnistCli, NoTrainingImagesIsAnError) {
  write_dataset(path("empty-train"), 0, 20);
  EXPECT_TRUE(fails_with(run("--epochs 1", path("empty-train")), 2, {"training set holds 0 images"}));
}

TEST_F(MnistCli, NoTestImagesIsStatedNotReportedAsZero) {
  write_dataset(path("no-test"), 64, 0);
  const std::string metrics = path("m.jsonl");
  const Result r = run("--epochs 1 --metrics-out '" + metrics + "'", path("no-test"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("no test images: the test loss and accuracy were not measured"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("0.00%"), std::string::npos) << r.out;
  std::ifstream in(metrics);
  std::string line, last;
  while (std::getline(in, line)) last = line;
  const nlohmann::json summary = nlohmann::json::parse(last);
  EXPECT_TRUE(summary.at("test_accuracy").is_null()) << last;
  // A target cannot be checked against nothing.
  EXPECT_TRUE(fails_with(run("--epochs 1 --target-accuracy 50", path("no-test")), 2, {"0 test images"}));
}

TEST_F(MnistCli, MetricsOnAFullDiskFailTheRun) {
  // /dev/full accepts the open and fails the flush: the run once exited 0 with two empty files.
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this machine";
  EXPECT_TRUE(fails_with(run("--epochs 1 --metrics-out /dev/full"), 2, {"--metrics-out", "/dev/full", "No space"}));
}

TEST_F(MnistCli, AReportThatCannotBeWrittenFailsTheRun) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this machine";
  const std::string err = path("err.txt");
  const std::string cmd = std::string("'") + EMBER_MNIST_BIN + "' --data '" + data_dir() +
                          "' --device cpu --hidden 8 --epochs 1 > /dev/full 2> '" + err + "'";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream in(err);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("writing the report to stdout failed"), std::string::npos) << text;
}

TEST_F(MnistCli, MetricsPlotThatCannotBeWrittenFailsTheRun) {
  // The JSON lines can be written but the plot beside them cannot (a directory holds its name).
  const std::string metrics = path("m.jsonl");
  fs::create_directories(path("m.svg"));
  EXPECT_TRUE(fails_with(run("--epochs 1 --metrics-out '" + metrics + "'"), 2, {"--metrics-out: the plot", "m.svg"}));
}

// ---- resume checks what it resumes ----

TEST_F(MnistCli, ResumeRefusesChangedSettingsListingEachDifference) {
  const std::string ck = path("ck.safetensors");
  ASSERT_EQ(run("--epochs 1 --save '" + ck + "'").rc, 0);
  // Once: --batch-size 1000 silently skipped the rest of the epoch, --seed 8 changed the order.
  EXPECT_TRUE(fails_with(run("--epochs 2 --batch-size 32 --seed 8 --lr 0.01 --resume '" + ck + "'"), 2,
                         {"other settings", "--batch-size: saved '64', this run '32'", "--seed: saved '1', this run '8'",
                          "--lr: saved '0.001", "only --epochs"}));
  // Another dataset of the same shape: its checksum differs.
  write_dataset(path("other"), 64, 20);
  std::ofstream(path("other") + "/train-labels-idx1-ubyte", std::ios::binary | std::ios::in | std::ios::out)
      .seekp(8)
      .put(3);  // the first label 0 -> 3
  const Result other = run("--epochs 2 --resume '" + ck + "'", path("other"));
  EXPECT_TRUE(fails_with(other, 2, {"dataset: saved '64 training and 20 test images of 4x4, checksum"}));
  // --epochs may change without a scheduler, not with one.
  EXPECT_EQ(run("--epochs 2 --resume '" + ck + "'").rc, 0);
  const std::string cos = path("cos.safetensors");
  ASSERT_EQ(run("--epochs 1 --scheduler cosine --save '" + cos + "'").rc, 0);
  EXPECT_TRUE(fails_with(run("--epochs 2 --scheduler cosine --resume '" + cos + "'"), 2,
                         {"--epochs: saved '1', this run '2'"}));
}

TEST_F(MnistCli, ResumeValidatesTheStoredCounters) {
  const std::string ck = path("ck.safetensors");
  ASSERT_EQ(run("--epochs 1 --save '" + ck + "'").rc, 0);
  EXPECT_TRUE(fails_with(run("--epochs 1 --resume '" + ck + "'"), 2, {"completed 1 epoch(s)", "nothing to train"}));
  // A stored step of 1000000 or -3 was accepted.
  edit_meta(ck, "step", "1000000");
  EXPECT_TRUE(fails_with(run("--epochs 2 --resume '" + ck + "'"), 2, {"stopped at step 1000000", "has 1 steps"}));
  edit_meta(ck, "step", "-3");
  EXPECT_TRUE(fails_with(run("--epochs 2 --resume '" + ck + "'"), 2, {"step -3", "never negative"}));
  edit_meta(ck, "step", "0");
  edit_meta(ck, "epoch", "0");
  EXPECT_TRUE(fails_with(run("--epochs 2 --resume '" + ck + "'"), 2, {"completed 0 epoch(s) but its history holds 1"}));
}

TEST_F(MnistCli, EvalWithResumeIsAUsageError) {
  const std::string ck = path("ck.safetensors");
  ASSERT_EQ(run("--epochs 1 --save '" + ck + "'").rc, 0);
  const Result r = run("--eval '" + ck + "' --resume '" + ck + "'");
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("excludes"), std::string::npos) << r.out;
}

TEST_F(MnistCli, SaveIntoAMissingOrUnwritableFolderFailsBeforeTraining) {
  const std::string metrics = path("m.jsonl");
  EXPECT_TRUE(fails_with(run("--epochs 1 --metrics-out '" + metrics + "' --save '" + path("no/such/ck") + "'"), 2,
                         {"--save", "does not exist"}));
  EXPECT_FALSE(fs::exists(metrics)) << "training started before --save was checked";
  // /proc takes no new files, even from root (a chmod'ed folder would not stop root).
  EXPECT_TRUE(fails_with(run("--epochs 1 --metrics-out '" + metrics + "' --save /proc/ember-ck.safetensors"), 2,
                         {"--save", "cannot create files in '/proc'"}));
  EXPECT_FALSE(fs::exists(metrics));
  EXPECT_TRUE(fails_with(run("--epochs 1 --save '" + data_dir() + "'"), 2, {"is a folder"}));
}

TEST_F(MnistCli, NamedPipeAsResumeOrEvalIsRefusedWithoutBlocking) {
  const std::string fifo = path("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_TRUE(fails_with(run("--epochs 1 --resume '" + fifo + "'"), 2, {"FIFO"}));
  EXPECT_TRUE(fails_with(run("--eval '" + fifo + "'"), 2, {"FIFO"}));
}

// ---- flags out of range are refused, not clamped, with the value as given ----

// --precision and --no-cuda-graph (issue 14): the banner says how the steps ran and in which
// precision; fp32 is the default; tf32 is refused on the CPU and with --deterministic; an unknown
// precision is a usage error.
TEST_F(MnistCli, PrecisionAndStepModeAreInTheBanner) {
  const Result plain = run("--epochs 1", "", /*quiet=*/false);
  ASSERT_EQ(plain.rc, 0) << plain.out;
  EXPECT_NE(plain.out.find("ember-mnist: steps eager (on the CPU), precision fp32"), std::string::npos) << plain.out;
  // TF32 is the GPU's tensor-core format: on the CPU it is refused, not silently run as fp32.
  EXPECT_TRUE(fails_with(run("--epochs 1 --precision tf32 --no-cuda-graph"), 2,
                         {"--precision tf32 runs on the GPU's tensor cores only", "--precision fp32"}));
  EXPECT_TRUE(fails_with(run("--epochs 1 --precision tf32 --deterministic"), 2,
                         {"--deterministic turns TF32 off, so it contradicts --precision tf32"}));
  const Result bad = run("--epochs 1 --precision fp64");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.out.find("--precision"), std::string::npos) << bad.out;
}

TEST_F(MnistCli, OutOfRangeFlagsAreRefusedWithTheValueAsGiven) {
  struct Case {
    std::string args;
    std::string message;
  };
  const std::string huge(400, '9');
  const std::vector<Case> cases = {
      {"--epochs 99999999999999999999", "--epochs: must be an integer from 1 to 1000000, got 99999999999999999999"},
      {"--epochs 1.5", "--epochs: must be an integer from 1 to 1000000, got 1.5"},
      {"--epochs " + huge, "got 9999999999999999999999999999999999999..."},
      {"--seed -1", "--seed: must be an integer from 0 to 18446744073709551615, got -1"},
      {"--seed 18446744073709551616", "got 18446744073709551616"},
      {"--threads -1", "--threads: must be an integer from 0 to 4096, got -1"},
      {"--weight-decay inf", "--weight-decay: must be a finite number >= 0, got inf"},
      {"--lr nan", "--lr: must be a finite number > 0, got nan"},
      {"--lr 1e400", "--lr: must be a finite number > 0, got 1e400"},
      {"--hidden 99999999999", "--hidden: must be an integer from 1 to 2147483647"},
      {"--batch-size 0", "--batch-size: must be an integer from 1 to 9223372036854775807, got 0"},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << ": " << r.out;
    EXPECT_LT(r.out.size(), 1000u) << c.args;
  }
}

TEST_F(MnistCli, MoreThreadsThanCoresAreCappedWithAWarning) {
  const Result r = run("--epochs 1 --threads 4096");
  EXPECT_EQ(r.rc, 0) << r.out;
  const std::string warning = "--threads 4096 is more than the " +
                              std::to_string(std::thread::hardware_concurrency()) + " cores present";
  EXPECT_NE(r.out.find(warning), std::string::npos) << r.out;
}

// ---- the NaN/Inf guard ----

TEST_F(MnistCli, NonFiniteStepStopsTheRunAndSavesNothing) {
  // lr 1e38: the first update is finite, the second forward overflows.
  const std::string ck = path("ck.safetensors");
  const Result r = run("--epochs 2 --batch-size 8 --optimizer sgd --lr 1e38 --save '" + ck + "'");
  EXPECT_TRUE(fails_with(r, 2, {"non-finite loss or gradient norm at epoch 1, step 2 of 8",
                                "no checkpoint was written", "--skip-nonfinite"}));
  EXPECT_FALSE(fs::exists(ck)) << "a checkpoint was written after a non-finite step";
  // Anomaly mode names the op.
  EXPECT_TRUE(fails_with(run("--epochs 1 --batch-size 8 --optimizer sgd --lr 1e38 --detect-anomaly"), 2,
                         {"--detect-anomaly: epoch 1, step 2", "anomaly detected", "NaN/Inf"}));
}

TEST_F(MnistCli, SkipNonFiniteSkipsAndCountsThoseSteps) {
  const std::string ck = path("ck.safetensors");
  const Result r = run("--epochs 1 --batch-size 8 --optimizer sgd --lr 1e38 --skip-nonfinite --save '" + ck + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  // Step 1's update was applied; all 7 later steps overflow from its huge weights, and are skipped.
  EXPECT_NE(r.out.find("skipped 7 non-finite step(s)"), std::string::npos) << r.out;
  for (const auto& [name, t] : io::load_safetensors(ck).tensors)
    if (name.rfind("optimizer.", 0) != 0) EXPECT_EQ(sum(isfinite(t)).item<int64_t>(), t.numel()) << name;
}

// ---- --profile, --profile-steps, --trace ----

TEST_F(MnistCli, ProfileStepsPrintTheTableAndWriteANestedTrace) {
  // 64 images at batch 8: 8 steps an epoch, so steps 10 to 12 lie in the second epoch.
  const std::string trace = path("trace.json");
  const Result r = run("--epochs 2 --batch-size 8 --profile-steps 10:12 --trace '" + trace + "'", "", false);
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("profile of steps 10 to 12"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 step(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("peak memory: host"), std::string::npos) << r.out;
  std::ifstream in(trace);
  const nlohmann::json t = nlohmann::json::parse(in);
  int steps = 0, epochs = 0;
  for (const nlohmann::json& e : t.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    steps += e.at("name") == "train.step";
    epochs += e.at("name") == "train.epoch";
  }
  EXPECT_EQ(steps, 3);
  EXPECT_EQ(epochs, 1) << "the second epoch's range, open when profiling started";
}

TEST_F(MnistCli, BadProfileFlagsSayWhatIsExpected) {
  for (const char* steps : {"5", "9:3", "0:2", "a:b", "3:"})
    EXPECT_TRUE(fails_with(run(std::string("--epochs 1 --profile-steps ") + steps), 2, {"expected FIRST:LAST"})) << steps;
  EXPECT_TRUE(fails_with(run("--epochs 1 --trace '" + path("no/such/dir/t.json") + "'"), 2,
                         {"--trace", "cannot create the file"}));
}

}  // namespace

// Model compression (issue 17): --prune with fine-tuning, --prune-structured, --eval --int8.
TEST_F(MnistCli, PruneReportsSparsityAndFineTunes) {
  const Result r = run("--epochs 1 --prune 0.5 --finetune-epochs 1");
  ASSERT_EQ(r.rc, 0) << r.out;
  // MLP 16-8-10: 0.weight has 128 elements, round(0.5 * 128) = 64 pruned; 2.weight 80, 40 pruned.
  EXPECT_NE(r.out.find("64 zero ( 50.0% sparse)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("40 zero ( 50.0% sparse)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("parameters 226 (122 non-zero)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("after 1 fine-tuning epoch(s)"), std::string::npos) << r.out;
  const Result s = run("--epochs 1 --prune 0.5 --prune-structured --finetune-epochs 0");
  ASSERT_EQ(s.rc, 0) << s.out;
  // 16-4-10 after removing 4 of 8 hidden units: 4*16 + 4 + 10*4 + 10 parameters.
  EXPECT_NE(s.out.find("parameters 118 (118 non-zero)"), std::string::npos) << s.out;
  EXPECT_TRUE(fails_with(run("--model resnet --epochs 1 --prune 0.5 --prune-structured"), 2, {"--prune-structured", "mlp and cnn", "ResNet"}));
  EXPECT_NE(run("--prune 1.5").rc, 0);
}

TEST_F(MnistCli, EvalInt8ComparesWithFp32) {
  const std::string ck = path("ck.safetensors"), q = path("q.safetensors");
  ASSERT_EQ(run("--epochs 2 --save '" + ck + "'").rc, 0);
  const Result r = run("--eval '" + ck + "' --int8 --int8-calibration percentile --int8-save '" + q + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const char* needle : {"fp32 ", "int8 ", "int8 vs fp32: accuracy", "images/s", "int8 model saved"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << ": " << r.out;
  EXPECT_TRUE(fs::exists(q));
  EXPECT_TRUE(fails_with(run("--epochs 1 --int8"), 2, {"--int8 goes with --eval"}));
}

#else
TEST(MnistCli, NeedsTheTrainer) { GTEST_SKIP() << "ember-mnist is not built (EMBER_BUILD_TOOLS=OFF)"; }
#endif
