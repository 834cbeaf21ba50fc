// ember-mnist's training loop. A step reads top to bottom: batch, forward, loss, backward, step.
#include "train.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include "checkpoint_io.h"
#include "compress.h"
#include "graph_step.h"
#include "profiling.h"
#include "precision.h"
#include "ember/dist.h"
#include "ember/ember.h"
#include "report.h"
#include "tensorboard.h"
#include "validation.h"
#include "transfer.h"

namespace mnist {
namespace {

std::atomic<bool> g_stop{false};

// ---- --distributed (ember::dist) ----
// Under mpirun -np N each rank trains on its shard of every epoch with --batch-size images per step
// (a global batch of N x --batch-size), gradients averaged by DistributedDataParallel. Only rank 0
// prints, writes metrics and checkpoints; every rank reads --resume.
std::shared_ptr<ember::dist::ProcessGroup> g_group;  // null: a single process

int world_size() { return g_group ? g_group->size() : 1; }

// Starts the ranks (when --distributed, or when launched by mpirun with more than one rank) and
// returns the flags this rank runs with: the other ranks print nothing and write no files.
Config join_distributed(const Config& cfg) {
  Config c = cfg;
  const bool launched = ember::dist::launched_distributed() && ember::dist::launch_environment().world_size > 1;
  if (!cfg.distributed && !launched) return c;
  c.distributed = true;  // launched by mpirun with several ranks: the run is data-parallel
  g_group = ember::dist::init();
  if (c.device == "auto" && ember::cuda::is_available())
    c.device = "cuda:" + std::to_string(g_group->local_rank() % ember::cuda::device_count());
  if (g_group->rank() != 0) {
    c.save_path.clear();
    c.metrics_out.clear();
    c.quiet = true;
    // The report and the per-epoch lines go to stdout: rank 0's copy is the one shown. Errors (stderr) stay.
    if (!std::freopen("/dev/null", "w", stdout)) std::fprintf(stderr, "ember-mnist: cannot silence rank %d\n", g_group->rank());
  } else if (!c.quiet) {
    std::printf("ember-mnist: %d ranks x batch %lld = global batch %lld (scale --lr with it: see docs/distributed.md)\n",
                g_group->size(), static_cast<long long>(c.batch_size), static_cast<long long>(c.batch_size * g_group->size()));
  }
  return c;
}

// What every rank does after a step, agreed by all of them: stop there (a Ctrl-C or SIGTERM reached
// any rank: mpirun turns Ctrl-C into SIGTERM for every rank, and a rank may see it a step later than
// another) and, with --skip-nonfinite, skip the update (any rank's loss or gradient norm non-finite).
// One all-reduce of two integers over MPI per step (tens of microseconds next to a step of
// milliseconds), so every rank takes the same steps and stops after the same one, and rank 0's
// checkpoint is the state of all of them. A single process decides alone.
struct StepVote {
  bool stop = false;
  bool skip = false;
};
StepVote vote(bool stop, bool skip) {
  using ember::Tensor;
  if (!g_group) return {stop, skip};
  Tensor v = ember::from_vector<int32_t>({stop ? 1 : 0, skip ? 1 : 0});
  g_group->all_reduce(v, ember::dist::ReduceOp::Sum);
  const int32_t* r = v.data<int32_t>();
  return {r[0] > 0, r[1] > 0};
}

// Ends the ranks when the run does (also when it throws).
struct DistributedScope {
  ~DistributedScope() {
    if (g_group) ember::dist::finalize();
    g_group.reset();
  }
};
// ---- end --distributed ----

using namespace ember;

const std::vector<std::string> kFashionNames = {"T-shirt", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",  "Shirt",   "Sneaker",  "Bag",   "Boot"};

Device pick_device(const std::string& flag, bool quiet) {
  if (flag == "auto") {
    if (cuda::is_available()) return Device::cuda(0);
    if (!quiet) std::printf("ember-mnist: no CUDA device found; training on the CPU\n");
    return Device::cpu();
  }
  Device d = Device::parse(flag);
  if (d.is_cuda()) {
    EMBER_CHECK(cuda::is_compiled(), "--device ", flag, ": this ember was built without CUDA; use --device cpu");
    EMBER_CHECK(cuda::is_available(), "--device ", flag, ": no CUDA device is available on this machine; use --device cpu");
    EMBER_CHECK(d.index < cuda::device_count(), "--device ", flag, ": only ", cuda::device_count(),
                " CUDA device(s) (cuda:0 to cuda:", cuda::device_count() - 1, ")");
  }
  return d;
}

// --model mlp: Linear-ReLU-Linear on flattened images; --model cnn: PyTorch's classic MNIST example
// (models::mnist_cnn); --model resnet: a ResNet for small images with torchvision's names (3x3 stem,
// BasicBlocks; --resnet-widths and --resnet-blocks, whose defaults are models::small_resnet's).
std::shared_ptr<nn::Module> make_model(const Config& cfg, int64_t rows, int64_t cols, int64_t classes) {
  if (cfg.model == "mlp")
    return nn::sequential({std::make_shared<nn::Linear>(rows * cols, cfg.hidden), std::make_shared<nn::ReLU>(),
                           std::make_shared<nn::Linear>(cfg.hidden, classes)});
  if (cfg.model == "cnn") return models::mnist_cnn(rows, cols, classes);
  if (cfg.model == "resnet") {
    EMBER_CHECK(!cfg.resnet_widths.empty() && cfg.resnet_widths.size() == cfg.resnet_blocks.size(),
                "--resnet-widths has ", cfg.resnet_widths.size(), " stage(s) and --resnet-blocks ",
                cfg.resnet_blocks.size(), "; give one block count per width (e.g. --resnet-widths 32,64,128 "
                "--resnet-blocks 1,1,1)");
    models::ResNetOptions o;
    o.stem = models::ResNetStem::Small;
    o.widths = cfg.resnet_widths;
    o.layers = cfg.resnet_blocks;
    o.fc_dropout = cfg.resnet_fc_dropout;
    o.in_channels = 1;
    o.num_classes = classes;
    return std::make_shared<models::ResNet>(o);
  }
  throw Error("--model " + cfg.model + ": expected mlp, cnn or resnet");
}

// --model mlp on a GPU runs its Linear-ReLU-Linear as fused_linear_relu_linear, one node (bias, ReLU and
// its bit mask inside GEMM 1: cuBLASLt's RELU_AUX_BIAS, where a NaN pre-activation becomes 0; the ReLU's
// backward and b1's gradient inside the dY·W2 GEMM: DRELU_BGRAD); --detect-anomaly keeps torch.relu's
// NaN semantics, op by op, so that a NaN is reported by the op that made it.
bool fused_relu_epilogue(const Config& cfg, Device d) { return cfg.model == "mlp" && d.is_cuda() && !cfg.detect_anomaly; }

std::string join_ints(const std::vector<int64_t>& v, const char* sep) {
  std::string out;
  for (int64_t x : v) out += (out.empty() ? "" : sep) + std::to_string(x);
  return out;
}

std::string dropout_note(double p) {
  if (p <= 0) return "";
  char buf[48];
  std::snprintf(buf, sizeof buf, ", dropout %g before fc", p);
  return buf;
}

// One line naming the model, for the banner.
std::string describe_model(const Config& cfg, int64_t rows, int64_t cols, const nn::Module& model) {
  std::string what = cfg.model == "mlp"   ? "MLP " + std::to_string(rows * cols) + "-" + std::to_string(cfg.hidden) + "-10"
                     : cfg.model == "cnn" ? std::string("CNN (2 conv, max-pool, 2 linear)")
                                          : "ResNet (3x3 stem, " + std::to_string(cfg.resnet_widths.size()) +
                                                " stages of " + join_ints(cfg.resnet_blocks, "/") +
                                                " BasicBlocks, widths " + join_ints(cfg.resnet_widths, "/") +
                                                dropout_note(cfg.resnet_fc_dropout) + ")";
  return what + ", " + std::to_string(model.num_parameters()) + " parameters";
}

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& cfg, const std::vector<Tensor>& params) {
  if (cfg.optimizer == "sgd") return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = cfg.lr, .weight_decay = cfg.weight_decay});
  if (cfg.optimizer == "momentum")
    return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = cfg.lr, .momentum = 0.9, .weight_decay = cfg.weight_decay});
  if (cfg.optimizer == "adam") return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = cfg.lr, .weight_decay = cfg.weight_decay});
  if (cfg.optimizer == "adamw")
    return std::make_unique<optim::AdamW>(params, optim::AdamWOptions{.lr = cfg.lr, .weight_decay = cfg.weight_decay});
  throw Error("--optimizer " + cfg.optimizer + ": expected sgd, momentum, adam or adamw");
}

// Epoch schedulers step once per epoch; OneCycle steps once per batch.
std::unique_ptr<optim::LRScheduler> make_scheduler(const Config& cfg, optim::Optimizer& opt, int64_t steps_per_epoch) {
  if (cfg.scheduler == "none") return nullptr;
  if (cfg.scheduler == "step") return std::make_unique<optim::StepLR>(opt, std::max<int64_t>(1, cfg.epochs / 3), 0.1);
  if (cfg.scheduler == "cosine") return std::make_unique<optim::CosineAnnealingLR>(opt, cfg.epochs);
  if (cfg.scheduler == "onecycle") return std::make_unique<optim::OneCycleLR>(opt, cfg.lr, cfg.epochs * steps_per_epoch);
  throw Error("--scheduler " + cfg.scheduler + ": expected none, step, cosine or onecycle");
}

struct EvalResult {
  double loss = NAN, accuracy = NAN;  // NaN: not measured (no test images)
};

// Test loss and accuracy; fills `cm` when given.
EvalResult evaluate(nn::Module& model, data::DataLoader& loader, metrics::ConfusionMatrix* cm) {
  profile::Range range("evaluate");
  autograd::InferenceModeGuard inference;
  // Evaluation's batch has other sizes than training's: the host blocks cached for the training
  // step would only sit beside its peak, and its own would sit beside training's (cpu_empty_cache).
  cpu_empty_cache();
  model.eval();
  Tensor loss_sum, correct;
  int64_t seen = 0;
  for (data::Batch& b : loader) {
    Tensor logits = model(b.x);
    Tensor loss = cross_entropy(logits, b.y, {Reduction::Sum});
    Tensor pred = argmax(logits, 1);
    Tensor hit = sum(eq(pred, b.y));
    loss_sum = loss_sum.defined() ? add(loss_sum, loss) : loss;
    correct = correct.defined() ? add(correct, hit) : hit;
    if (cm) cm->update(pred, b.y);
    seen += b.y.size(0);
  }
  model.train();
  cpu_empty_cache();
  if (seen == 0) return {};
  return {loss_sum.item<double>() / static_cast<double>(seen),
          static_cast<double>(correct.item<int64_t>()) / static_cast<double>(seen)};
}

std::string resolve_data_dir(const Config& cfg) {
  if (!cfg.data_dir.empty()) return cfg.data_dir;
  EMBER_CHECK(cfg.dataset == "mnist" || cfg.dataset == "fashion-mnist", "--dataset ", cfg.dataset,
              ": expected mnist or fashion-mnist (or --data DIR with IDX files)");
  const std::string rel = "data/" + cfg.dataset;
  if (std::filesystem::exists(rel)) return rel;
#ifdef EMBER_SOURCE_DIR
  const std::string in_source = std::string(EMBER_SOURCE_DIR) + "/" + rel;
  if (std::filesystem::exists(in_source)) return in_source;
#endif
  throw Error("--dataset " + cfg.dataset + ": no data in '" + rel +
              "' (nor in ember's source folder): the MNIST digits ship in data/mnist, and tools/get-data.sh "
              "links Fashion-MNIST into data/fashion-mnist; or pass --data DIR");
}

// The NaN/Inf guard. Each step's loss plus its squared gradient norm is tested on the device, and
// two counters kept there: steps that were finite, and steps before the first that was not (a 0/1
// "all finite so far" flag summed). The loop never waits for them: the count is read back
// asynchronously, like the progress bar's loss (at once on the CPU, a step or two later on a GPU),
// and synchronously only before a checkpoint is written, so nothing non-finite is ever saved.
class NonFiniteGuard {
 public:
  NonFiniteGuard(Device device, int64_t first_step)
      : finite_(zeros({}, TensorOptions(DType::I64, device))),
        clean_(zeros({}, TensorOptions(DType::I64, device))),
        all_ok_(ones({}, TensorOptions(DType::I64, device))),
        first_step_(first_step) {}

  // Records the step just computed (loss and gradients) and returns its "finite" flag (a bool on the
  // device; reading it is a host wait, which only --skip-nonfinite pays).
  Tensor record(const Tensor& loss, const std::vector<Tensor>& params) {
    autograd::NoGradGuard no_grad;
    Tensor total = loss.detach();
    for (const Tensor& p : params)
      if (p.grad().defined()) total = add(total, sum(square(p.grad())));
    Tensor ok = isfinite(total);
    Tensor ok_i = ok.to(DType::I64);
    finite_ = add(finite_, ok_i);
    all_ok_ = mul(all_ok_, ok_i);
    clean_ = add(clean_, all_ok_);
    ++steps_;
    if (reader_.pending() && reader_.ready()) {
      seen_finite_ = reader_.get().item<int64_t>();
      seen_steps_ = read_steps_;
    }
    if (!reader_.pending()) {
      reader_.start(finite_);
      read_steps_ = steps_;
    }
    return ok;
  }

  // From the latest count read back: a step was non-finite (no wait).
  bool tripped() const { return seen_finite_ < seen_steps_; }
  // Waits for the counters: every recorded step was finite.
  bool all_finite() const { return finite_.item<int64_t>() == steps_; }
  int64_t nonfinite_steps() const { return steps_ - finite_.item<int64_t>(); }
  // The run's index (from 0) of the first non-finite step; only when !all_finite().
  int64_t first_bad_step() const { return first_step_ + clean_.item<int64_t>(); }

 private:
  Tensor finite_, clean_, all_ok_;
  int64_t first_step_ = 0, steps_ = 0;
  AsyncRead reader_;
  int64_t read_steps_ = 0, seen_finite_ = 0, seen_steps_ = 0;
};

// FNV-1a over the bytes of every tensor: the dataset's identity for --resume, whatever its path.
std::string fingerprint(const std::vector<Tensor>& tensors) {
  uint64_t h = 14695981039346656037ull;
  for (const Tensor& t : tensors) {
    const Tensor c = t.cpu().contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    const size_t n = static_cast<size_t>(c.numel()) * dtype_size(c.dtype());
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string exact(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// See RunSettings (checkpoint_io.h): what a resumed run must share with the saved one.
RunSettings run_settings(const Config& cfg, const data::Mnist& ds, const data::DataLoaderOptions& train) {
  const Tensor& x = ds.train.images;
  RunSettings s = {
      {"dataset", detail::str_cat(x.size(0), " training and ", ds.test.images.size(0), " test images of ", x.size(1),
                                  "x", x.size(2), ", checksum ",
                                  fingerprint({x, ds.train.labels, ds.test.images, ds.test.labels}))},
      {"--batch-size", std::to_string(cfg.batch_size * world_size())},  // global: a checkpoint resumes on any rank count
      {"--seed", std::to_string(cfg.seed)},
      {"--lr", exact(cfg.lr)},
      {"--weight-decay", exact(cfg.weight_decay)},
      {"--augment", cfg.augment ? "on" : "off"},
      {"normalisation", "mean " + exact(train.mean) + ", std " + exact(train.std)}};
  if (cfg.l1 > 0) s.emplace_back("--l1", exact(cfg.l1));
  // Only a design other than the default is recorded, so checkpoints from before these flags resume.
  if (cfg.model == "resnet" && (cfg.resnet_widths != Config{}.resnet_widths || cfg.resnet_blocks != Config{}.resnet_blocks)) {
    s.emplace_back("--resnet-widths", join_ints(cfg.resnet_widths, ","));
    s.emplace_back("--resnet-blocks", join_ints(cfg.resnet_blocks, ","));
  }
  if (cfg.model == "resnet" && cfg.resnet_fc_dropout > 0) s.emplace_back("--resnet-fc-dropout", exact(cfg.resnet_fc_dropout));
  if (cfg.val_split > 0) s.emplace_back("--val-split", exact(cfg.val_split));
  if (cfg.aug_scale > 0) s.emplace_back("--aug-scale", exact(cfg.aug_scale));
  if (cfg.aug_crop_padding > 0) s.emplace_back("--aug-crop-padding", std::to_string(cfg.aug_crop_padding));
  if (cfg.aug_hflip) s.emplace_back("--aug-hflip", "on");
  // A schedule is laid out over the whole run, so its length is part of it.
  if (cfg.scheduler != "none") s.emplace_back("--epochs", std::to_string(cfg.epochs));
  return s;
}

// --save must be writable before an epoch is spent: a file is created (and removed) beside it, as
// the atomic save will.
void check_save_path(const std::string& path) {
  const std::filesystem::path p(path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  EMBER_CHECK(std::filesystem::is_directory(dir, ec), "--save ", path, ": the folder '", dir.string(),
              "' does not exist (or is not a folder); create it first");
  EMBER_CHECK(!std::filesystem::is_directory(p, ec), "--save ", path, ": is a folder; pass a file name");
  const std::string probe = detail::str_cat(path, ".tmp.", ::getpid(), ".probe");
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    throw Error(detail::str_cat("--save ", path, ": cannot create files in '", dir.string(), "': ",
                                std::strerror(err), "; pick a writable folder"));
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

// Everything a run is made of, built by set_up(): the data, the model and its optimizer and
// schedule, the loaders, and what a checkpoint must agree on.
struct Session {
  const Config& cfg;
  Device device;
  std::string dir;
  bool fashion = false;
  data::Mnist ds;
  int64_t in_features = 0;
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<optim::Optimizer> opt;
  std::unique_ptr<optim::LRScheduler> sched;
  bool per_batch_sched = false;
  std::unique_ptr<data::DataLoader> train_loader, test_loader;
  std::unique_ptr<data::DataLoader> val_loader;  // --val-split / --folds: held out of the training set
  std::unique_ptr<dist::DistributedDataParallel> ddp;  // --distributed: averages the gradients in backward
  std::unique_ptr<GraphedStep> graphed;  // the step as a CUDA graph, unless cuda_graph_unavailable says why not
  std::unique_ptr<RunProfiler> prof;                    // --profile (profiling.h)
  int64_t steps_per_epoch = 0;
  RunSettings settings;
  std::unique_ptr<Precision> precision;  // --precision

  std::vector<std::string> class_names() const { return fashion ? kFashionNames : std::vector<std::string>{}; }
};

// The flags that no data is needed to judge.
void check_flags(const Config& cfg) {
  EMBER_CHECK(cfg.epochs >= 1, "--epochs must be at least 1, got ", cfg.epochs);
  EMBER_CHECK(cfg.batch_size >= 1, "--batch-size must be at least 1, got ", cfg.batch_size);
  EMBER_CHECK(cfg.hidden >= 1, "--hidden must be at least 1, got ", cfg.hidden);
  EMBER_CHECK(cfg.lr > 0, "--lr must be positive, got ", cfg.lr);
  EMBER_CHECK(cfg.weight_decay >= 0, "--weight-decay must be >= 0, got ", cfg.weight_decay);
  EMBER_CHECK(cfg.target_accuracy <= 100, "--target-accuracy is a percentage (0-100), got ", cfg.target_accuracy);
  EMBER_CHECK(cfg.eval_path.empty() || cfg.resume_path.empty(),
              "--eval and --resume do not go together: --eval evaluates a checkpoint, --resume trains on from one");
  if (!cfg.save_path.empty()) check_save_path(cfg.save_path);
  // Model compression (compress.cpp).
  EMBER_CHECK(!cfg.int8 || !cfg.eval_path.empty(), "--int8 goes with --eval CKPT (it quantises a trained model)");
  EMBER_CHECK(cfg.prune == 0 || (cfg.eval_path.empty() && !cfg.distributed), "--prune runs after training, in one process: "
              "not with --eval or --distributed");
  EMBER_CHECK(!cfg.prune_structured || cfg.model != "resnet", "--prune-structured supports --model mlp and cnn; a "
              "ResNet's residual additions tie its channels (use --prune without --prune-structured)");
  check_extra_flags(cfg);
}

// Threads, TF32 and anomaly mode: process-wide settings.
void apply_process_settings(const Config& cfg) {
  if (cfg.threads > 0) {
    // More threads than cores only oversubscribe them: capped, and said so.
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    int threads = cfg.threads;
    if (cores > 0 && threads > cores) {
      std::fprintf(stderr, "ember-mnist: warning: --threads %d is more than the %d cores present; using %d\n",
                   threads, cores, cores);
      threads = cores;
    }
    set_num_threads(threads);
  }
  // --precision (fp32 by default, as allow_tf32's default); --deterministic asks for reproducible
  // results, which TF32's rounding of the inputs does not contradict but which users pair with fp32.
  cuda::set_allow_tf32(cfg.precision == "tf32");
  if (cfg.deterministic) cuda::set_deterministic_algorithms(true);
  if (cfg.detect_anomaly) autograd::detect_anomaly(true);
}

std::unique_ptr<Session> set_up(const Config& cfg) {
  auto s = std::make_unique<Session>(Session{cfg, pick_device(cfg.device, cfg.quiet), resolve_data_dir(cfg)});
  s->ds = data::load_mnist_dir(s->dir);
  if (cfg.train_per_class > 0) limit_per_class(cfg, s->ds.train);
  const int64_t n_train = s->ds.train.images.size(0), n_test = s->ds.test.images.size(0);
  // Numbers nobody measured are never reported: no training images is an error, and without test
  // images the test figures are stated as absent (so a target accuracy cannot be checked).
  EMBER_CHECK(n_train > 0, s->dir, ": the training set holds 0 images, so there is nothing to train on; check the "
              "train-images-idx3-ubyte file (or pass another --data)");
  if (n_test == 0) {
    EMBER_CHECK(cfg.eval_path.empty(), "--eval: ", s->dir, " holds 0 test images, so there is nothing to evaluate on");
    EMBER_CHECK(cfg.target_accuracy < 0, "--target-accuracy: ", s->dir,
                " holds 0 test images, so the test accuracy cannot be measured");
  }
  std::optional<data::MnistSplit> val = hold_out_validation(cfg, s->ds);  // --val-split / --folds
  s->in_features = s->ds.train.images.size(1) * s->ds.train.images.size(2);
  s->fashion = s->dir.find("fashion") != std::string::npos;

  manual_seed(cfg.seed);
  s->model = make_model(cfg, s->ds.train.images.size(1), s->ds.train.images.size(2), 10);
  if (!cfg.pretrained.empty()) apply_pretrained(cfg, *s->model, cfg.quiet);
  s->model->to(s->device);
  if (fused_relu_epilogue(cfg, s->device))
    if (auto seq = std::dynamic_pointer_cast<nn::Sequential>(s->model)) seq->set_relu_nan_to_zero(true);
  s->precision = std::make_unique<Precision>(cfg, s->device);
  if (g_group) s->ddp = std::make_unique<dist::DistributedDataParallel>(s->model, *g_group);
  s->opt = cfg.pretrained.empty() ? make_optimizer(cfg, s->model->parameters()) : make_transfer_optimizer(cfg, *s->model);

  data::DataLoaderOptions train_opts;
  train_opts.batch_size = cfg.batch_size;
  train_opts.shuffle = true;
  train_opts.seed = cfg.seed;
  train_opts.device = s->device;
  train_opts.augment = cfg.augment;
  // --aug-scale, --aug-crop-padding, --aug-hflip: each turns the loader's augmentation on by itself;
  // rotation and shift stay --augment's.
  if (cfg.aug_scale > 0 || cfg.aug_crop_padding > 0 || cfg.aug_hflip) {
    if (!cfg.augment) train_opts.augment_options = {.max_shift = 0, .max_degrees = 0};
    train_opts.augment_options.max_scale = cfg.aug_scale;
    train_opts.augment_options.crop_padding = cfg.aug_crop_padding;
    train_opts.augment_options.hflip = cfg.aug_hflip;
    train_opts.augment = true;
  }
  train_opts.flatten = cfg.model == "mlp";  // the convnets take [B, 1, rows, cols]
  if (g_group) train_opts.shard = data::ShardOptions{g_group->size(), g_group->rank(), false};
  s->train_loader =
      std::make_unique<data::DataLoader>(data::TensorDataset(s->ds.train.images, s->ds.train.labels), train_opts);
  data::DataLoaderOptions test_opts;
  test_opts.batch_size = 1000;
  test_opts.device = s->device;
  test_opts.flatten = train_opts.flatten;
  s->test_loader =
      std::make_unique<data::DataLoader>(data::TensorDataset(s->ds.test.images, s->ds.test.labels), test_opts);
  if (val) s->val_loader = std::make_unique<data::DataLoader>(data::TensorDataset(*val), test_opts);
  s->steps_per_epoch = s->train_loader->num_batches();
  s->prof = std::make_unique<RunProfiler>(cfg, s->device);
  s->settings = cfg.eval_path.empty() ? run_settings(cfg, s->ds, train_opts) : RunSettings{};
  s->sched = make_scheduler(cfg, *s->opt, s->steps_per_epoch);
  s->per_batch_sched = cfg.scheduler == "onecycle";
  if (cfg.eval_path.empty() && !cuda_graph_unavailable(cfg, s->device))
    s->graphed = std::make_unique<GraphedStep>(*s->model, *s->opt, s->device, cfg.quiet);
  return s;
}

// --eval: the checkpoint's model on the test set; the exit code says whether it met the target.
int evaluate_checkpoint(Session& s) {
  const Config& cfg = s.cfg;
  Progress ignored;
  load_training_checkpoint(cfg.eval_path, *s.model, nullptr, nullptr, ignored, cfg, s.settings);
  if (cfg.int8) return compress::evaluate_int8(cfg, *s.model, s.ds, *s.test_loader, cfg.model == "mlp");
  metrics::ConfusionMatrix cm(10);
  EvalResult r = evaluate(*s.model, *s.test_loader, &cm);
  std::printf("evaluated %s on %lld test images: loss %.4f\n", cfg.eval_path.c_str(),
              static_cast<long long>(cm.total()), r.loss);
  print_final({}, cm, s.class_names());
  return cfg.target_accuracy >= 0 && 100 * r.accuracy < cfg.target_accuracy ? 3 : 0;
}

// Where training starts: from scratch, or (--resume) where a checkpoint of this same run stopped.
Progress start_or_resume(Session& s) {
  const Config& cfg = s.cfg;
  Progress progress;
  if (cfg.resume_path.empty()) return progress;
  load_training_checkpoint(cfg.resume_path, *s.model, s.opt.get(), s.sched.get(), progress, cfg, s.settings);
  // The stored counters must describe a point inside this run.
  EMBER_CHECK(progress.epoch < cfg.epochs, "--resume ", cfg.resume_path, ": the checkpoint has completed ",
              progress.epoch, " epoch(s), so --epochs ", cfg.epochs, " leaves nothing to train; pass a larger "
              "--epochs (with --scheduler none), or --eval it");
  EMBER_CHECK(progress.step_in_epoch >= 0 && progress.step_in_epoch < s.steps_per_epoch, "--resume ",
              cfg.resume_path, ": the checkpoint stopped at step ", progress.step_in_epoch, " of epoch ",
              progress.epoch + 1, ", but an epoch here has ", s.steps_per_epoch, " steps (0 to ",
              s.steps_per_epoch - 1, "); the file is damaged or edited");
  EMBER_CHECK(static_cast<int64_t>(progress.history.size()) == progress.epoch, "--resume ", cfg.resume_path,
              ": the checkpoint has completed ", progress.epoch, " epoch(s) but its history holds ",
              progress.history.size(), "; the file is damaged or edited");
  if (!cfg.quiet)
    std::printf("resumed from %s at epoch %lld, step %lld\n", cfg.resume_path.c_str(),
                static_cast<long long>(progress.epoch + 1), static_cast<long long>(progress.step_in_epoch));
  return progress;
}

void print_header(const Session& s) {
  const Config& cfg = s.cfg;
  if (cfg.quiet) return;
  std::printf("ember-mnist: %s %s, %s lr %g, batch %lld, %lld epochs on %s (%lld train / %lld test)\n",
              cfg.dataset.c_str(),
              describe_model(cfg, s.ds.train.images.size(1), s.ds.train.images.size(2), *s.model).c_str(),
              cfg.optimizer.c_str(), cfg.lr, static_cast<long long>(cfg.batch_size), static_cast<long long>(cfg.epochs),
              s.device.str().c_str(), static_cast<long long>(s.ds.train.images.size(0)),
              static_cast<long long>(s.ds.test.images.size(0)));
  const auto no_graph = cuda_graph_unavailable(cfg, s.device);
  std::printf("ember-mnist: steps %s, precision %s%s\n",
              no_graph ? ("eager (" + *no_graph + ")").c_str() : "as a CUDA graph (captured after a warm-up step)",
              s.precision->describe().c_str(),
              fused_relu_epilogue(cfg, s.device)
                  ? ", Linear-ReLU-Linear as one node in cuBLASLt's RELU_AUX_BIAS / DRELU_BGRAD epilogues (NaN -> 0)"
                  : "");
  // The CPU and the kernels its GEMM and convolutions run (issue 13: a slow machine shows at once).
  if (!s.device.is_cuda()) std::printf("ember-mnist: cpu %s\n", cpu_info().summary().c_str());
}

// What lives across the epochs of a training run: the guard, the progress bar's reader, the counts.
struct Training {
  Training(const Session& s, const Progress& p)
      : guard(s.device, p.epoch * s.steps_per_epoch + p.step_in_epoch), steps_per_epoch(s.steps_per_epoch) {}
  AsyncRead loss_reader;  // one pinned buffer for the whole run
  NonFiniteGuard guard;
  int64_t steps_per_epoch;
  int64_t skipped = 0;  // --skip-nonfinite: steps whose update was not applied

  // Stops the run at a non-finite step: nothing is saved from here on, and the exit is non-zero.
  [[noreturn]] void stop_nonfinite() const {
    const int64_t first = guard.first_bad_step();
    throw Error(detail::str_cat(
        "non-finite loss or gradient norm at epoch ", first / steps_per_epoch + 1, ", step ",
        first % steps_per_epoch + 1, " of ", steps_per_epoch, " (", guard.nonfinite_steps(),
        " non-finite step(s) so far); training stopped and no checkpoint was written after it. Try a lower --lr, "
        "--detect-anomaly to name the op that produced it, or --skip-nonfinite to skip such steps"));
  }
};

struct EpochResult {
  bool interrupted = false;
  int64_t steps = 0;  // steps done in this epoch (where an interrupted epoch stopped)
  EpochStats stats;   // for a finished epoch
};

// One epoch: each step reads batch, forward, loss, backward, guard, step; then the test set.
EpochResult train_epoch(Session& s, Training& t, int64_t epoch, int64_t first_step) {
  const Config& cfg = s.cfg;
  profile::Range epoch_range("train.epoch");
  s.train_loader->set_epoch(epoch);
  ProgressBar bar(epoch + 1, cfg.epochs, s.steps_per_epoch, cfg.quiet);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor loss_sum = zeros({}, TensorOptions(DType::F32, s.device));
  Tensor correct = zeros({}, TensorOptions(DType::I64, s.device));
  EpochResult r;
  int64_t& step = r.steps;
  int64_t images = 0;
  // The bar's running loss is read back asynchronously (no wait on the device inside the loop): it
  // shows the latest copy that has arrived, at most one refresh old.
  if (t.loss_reader.pending()) (void)t.loss_reader.get();  // last epoch's, long arrived: dropped
  double shown_loss = NAN;
  int64_t read_images = 0, shown_images = 0;
  for (data::Batch& batch : *s.train_loader) {
    if (step < first_step) {  // resuming mid-epoch: replay the order, skip the work
      ++step;
      continue;
    }
    const int64_t run_step = epoch * s.steps_per_epoch + step + 1;  // --profile-steps counts these
    s.prof->before(run_step);
    profile::Range step_range("train.step");  // Nsight: one range per step, ember's op ranges inside
    Tensor logits, loss;
    if (s.graphed) {  // the whole step, the update included, as one graph replay
      GraphedStep::Result g = s.graphed->step(batch.x, batch.y);
      logits = g.logits;
      loss = g.loss;
    } else try {
      {
        const auto low = s.precision->forward_scope();  // --precision bf16/fp16: autocast
        logits = (*s.model)(batch.x);
        loss = cross_entropy(logits, batch.y);
      }
      s.opt->zero_grad();
      // --l1: lambda * sum |w| joins the objective; the reported loss stays the data's. fp16: the
      // scaled objective.
      s.precision->backward(cfg.l1 > 0 ? add(loss, optim::l1_penalty(s.model->parameters(), cfg.l1)) : loss);
    } catch (const Error& e) {
      if (!autograd::anomaly_enabled()) throw;
      throw Error(detail::str_cat("--detect-anomaly: epoch ", epoch + 1, ", step ", step + 1, ": ", e.what()));
    }
    // fp16: an overflow of the scaled gradients is the loss scaler's to handle (the step is skipped
    // and counted), not a non-finite run.
    const bool overflow = s.precision->unscale_and_check(*s.opt);
    const Tensor finite = overflow ? ones({}, TensorOptions(DType::Bool)) : t.guard.record(loss, s.model->parameters());
    // --skip-nonfinite decides on the host before the update: one wait per step on a GPU.
    const StepVote agreed = vote(g_stop, cfg.skip_nonfinite && !finite.item<bool>());
    const bool skip = agreed.skip;
    if (!s.graphed) s.precision->step(*s.opt, !skip);  // a replayed graph has updated already
    if (s.per_batch_sched) s.sched->step();  // the schedule follows the steps taken or skipped
    ++step;
    if (skip) {
      ++t.skipped;
    } else {
      autograd::NoGradGuard no_grad;
      loss_sum = add(loss_sum, mul(loss.detach(), static_cast<double>(batch.y.size(0))));
      correct = add(correct, sum(eq(argmax(logits.detach(), 1), batch.y)));
      images += batch.y.size(0);
    }
    if (!cfg.skip_nonfinite && t.guard.tripped()) t.stop_nonfinite();
    if (bar.due(step)) {
      if (!t.loss_reader.pending()) {
        t.loss_reader.start(loss_sum);
        read_images = images;
      }
      if (t.loss_reader.ready()) {  // on the CPU at once; on a GPU usually at the next refresh
        shown_loss = t.loss_reader.get().item<double>();
        shown_images = read_images;
      }
      bar.update(step, shown_images ? shown_loss / static_cast<double>(shown_images) : NAN, images);
    }
    s.prof->after(run_step);
    if (agreed.stop) {
      r.interrupted = true;
      break;
    }
  }
  bar.finish();
  if (!cfg.skip_nonfinite && !t.guard.all_finite()) t.stop_nonfinite();
  if (r.interrupted) return r;
  if (s.sched && !s.per_batch_sched) s.sched->step();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // With a validation set, the test set waits for the end of the run: it must not steer it.
  const EvalResult val = s.val_loader ? evaluate(*s.model, *s.val_loader, nullptr) : EvalResult{};
  EvalResult test = s.val_loader ? EvalResult{} : evaluate(*s.model, *s.test_loader, nullptr);
  EpochStats& st = r.stats;
  st.val_loss = val.loss;
  st.val_acc = val.accuracy;
  st.epoch = epoch + 1;
  st.train_loss = images ? loss_sum.item<double>() / static_cast<double>(images) : NAN;
  st.train_acc = images ? static_cast<double>(correct.item<int64_t>()) / static_cast<double>(images) : NAN;
  st.test_loss = test.loss;
  st.test_acc = test.accuracy;
  st.seconds = seconds;
  st.images_per_s = static_cast<double>(images) / seconds;
  st.lr = s.opt->lr(0);
  return r;
}

void checkpoint(Session& s, const Progress& progress) {
  if (!s.cfg.save_path.empty())
    save_training_checkpoint(s.cfg.save_path, *s.model, *s.opt, s.sched.get(), progress, s.cfg, s.settings);
}

// Ctrl-C: saves where the run stopped (with --save) and says how to go on; exit 130.
int stop_interrupted(Session& s, const Progress& progress) {
  const Config& cfg = s.cfg;
  if (!cfg.save_path.empty()) {
    checkpoint(s, progress);
    std::printf("\ninterrupted at epoch %lld, step %lld: checkpoint saved to %s\nresume with: ember-mnist --resume %s "
                "(and the same flags)\n", static_cast<long long>(progress.epoch + 1),
                static_cast<long long>(progress.step_in_epoch), cfg.save_path.c_str(), cfg.save_path.c_str());
  } else {
    std::printf("\ninterrupted at epoch %lld, step %lld; no checkpoint written (pass --save PATH to make runs "
                "resumable)\n", static_cast<long long>(progress.epoch + 1),
                static_cast<long long>(progress.step_in_epoch));
  }
  return 130;
}

// The end of a finished run: the best epoch, the confusion matrix and per-class scores, the metrics
// summary; exit 3 below --target-accuracy.
int report(Session& s, const Training& t, const std::vector<EpochStats>& history, MetricsWriter& metrics_out,
           TensorBoardLog& tb) {
  const Config& cfg = s.cfg;
  if (t.skipped > 0)
    std::printf("\nskipped %lld non-finite step(s) (--skip-nonfinite): their updates were not applied\n",
                static_cast<long long>(t.skipped));
  if (s.precision->loss_scaling())
    std::printf("\nfp16 loss scaling: %lld step(s) skipped for inf/NaN gradients (parameters unchanged); final scale %g\n",
                static_cast<long long>(s.precision->skipped_steps()), s.precision->loss_scale());
  metrics::ConfusionMatrix cm(10);
  EvalResult final_test = evaluate(*s.model, *s.test_loader, &cm);
  print_final(history, cm, s.class_names());
  metrics_out.summary(history, cm);
  tb.final_test(final_test.loss, final_test.accuracy, cm, static_cast<int64_t>(history.size()));
  if (metrics_out.enabled() && !cfg.quiet)
    std::printf("\nmetrics: %s, plot: %s\n", cfg.metrics_out.c_str(), metrics_out.svg_path().c_str());
  if (cfg.target_accuracy >= 0 && 100 * final_test.accuracy < cfg.target_accuracy) {
    std::printf("test accuracy %.2f%% is below --target-accuracy %.2f%%\n", 100 * final_test.accuracy,
                cfg.target_accuracy);
    return 3;
  }
  return 0;
}

// --val-split: after an epoch that beat every earlier one on validation accuracy, its weights are
// kept in memory and, with --save PATH, in PATH's ".best" sibling (written atomically like every
// checkpoint, so a failed write leaves the previous best file whole).
void keep_best(Session& s, const Progress& progress, nn::StateDict& best) {
  if (!s.val_loader || best_val_epoch(progress.history) != progress.history.back().epoch) return;
  best.clear();
  for (auto& [name, t] : s.model->state_dict()) best.emplace_back(name, t.detach().clone());
  if (!s.cfg.save_path.empty())
    save_training_checkpoint(best_checkpoint_path(s.cfg.save_path), *s.model, *s.opt, s.sched.get(), progress, s.cfg,
                             s.settings);
}

// Before the test set is touched: the best epoch's weights back in the model (from memory, or after
// a --resume past the best epoch from the best checkpoint).
void restore_best(Session& s, const Progress& progress, const nn::StateDict& best) {
  if (!s.val_loader || progress.history.empty()) return;
  const int64_t epoch = best_val_epoch(progress.history);
  if (epoch == progress.history.back().epoch) return;  // the model holds them already
  if (!best.empty()) {
    s.model->load_state_dict(best);
    return;
  }
  const std::string path = s.cfg.save_path.empty() ? std::string() : best_checkpoint_path(s.cfg.save_path);
  if (!path.empty() && std::filesystem::exists(path)) {
    Progress ignored;
    load_training_checkpoint(path, *s.model, nullptr, nullptr, ignored, s.cfg, s.settings);
    return;
  }
  std::printf("note: the best epoch (%lld) came before --resume and no best checkpoint (%s) was found; the test "
              "figures are the last epoch's\n", static_cast<long long>(epoch),
              path.empty() ? "no --save" : path.c_str());
}

// One training run, or (`fold` given) one fold of --folds, which returns its best validation figures
// instead of a test report.
int train_run(const Config& cfg, FoldResult* fold) {
  std::unique_ptr<Session> s = set_up(cfg);
  if (!cfg.eval_path.empty()) return evaluate_checkpoint(*s);

  Progress progress = start_or_resume(*s);
  print_header(*s);
  MetricsWriter metrics_out(cfg.metrics_out);
  TensorBoardLog tb(cfg.tensorboard_dir);
  nn::StateDict best;
  Training training(*s, progress);
  for (int64_t epoch = progress.epoch; epoch < cfg.epochs; ++epoch) {
    const EpochResult r = train_epoch(*s, training, epoch, progress.step_in_epoch);
    if (r.interrupted) {
      progress.epoch = epoch;
      progress.step_in_epoch = r.steps;
      return stop_interrupted(*s, progress);
    }
    progress.history.push_back(r.stats);
    print_epoch(r.stats, cfg.epochs, cfg.quiet);
    metrics_out.epoch(r.stats, progress.history);
    progress.epoch = epoch + 1;
    progress.step_in_epoch = 0;
    checkpoint(*s, progress);
    tb.epoch(r.stats, *s->model);
    keep_best(*s, progress, best);
    if (should_stop_early(progress.history, cfg.early_stopping)) {
      if (!cfg.quiet)
        std::printf("early stopping: no validation improvement for %lld epoch(s) since epoch %lld\n",
                    static_cast<long long>(cfg.early_stopping), static_cast<long long>(best_val_epoch(progress.history)));
      break;
    }
  }
  if (s->ddp && !cfg.quiet)  // --distributed: the communication that backward did not hide
    std::printf("ddp: %d ranks, %zu gradient bucket(s), %.2f s waiting for all-reduces\n", g_group->size(),
                s->ddp->num_buckets(), s->ddp->seconds_waiting());
  if (fold) {
    *fold = fold_result(progress.history);
    return 0;
  }
  restore_best(*s, progress, best);
  if (cfg.prune > 0)  // --prune: the pruned, fine-tuned model is the one reported
    s->model = compress::prune_and_finetune(
        cfg, s->model, *s->train_loader,
        {[&](const std::vector<Tensor>& p) { return make_optimizer(cfg, p); },
         [&](nn::Module& m) { return evaluate(m, *s->test_loader, nullptr).accuracy; }});
  s->prof->after(INT64_MAX);  // --profile ends with training (the final evaluation is not profiled)
  const int rc = report(*s, training, progress.history, metrics_out, tb);
  s->prof->finish();  // --profile's table and trace, and the run's peak memory
  return rc;
}

}  // namespace

void request_stop() { g_stop = true; }

// The program: set up, then per epoch train, evaluate, record and checkpoint, then report (or, with
// --folds K, that K times, one per fold, and the cross-validation summary).
int run(const Config& cfg_in) {
  DistributedScope dist_scope;
  const Config cfg = join_distributed(cfg_in);
  check_flags(cfg);
  apply_process_settings(cfg);
  if (cfg.folds > 0)
    return run_cross_validation(cfg, [](const Config& c) -> std::optional<FoldResult> {
      FoldResult f;
      if (train_run(c, &f) != 0) return std::nullopt;
      return f;
    });
  return train_run(cfg, nullptr);
}

}  // namespace mnist
