// ember-bench: timings of ember workloads, printed as JSON lines so tools/bench/run.sh can set them
// beside PyTorch's. Subcommands:
//   mlp-epoch  one epoch of the MNIST MLP (784-H-10, Adam, batch B) over IDX data, as
//              tools/bench/torch_mlp_epoch.py does it in PyTorch
//   ops        GEMM / linear+ReLU / softmax-cross-entropy micro-benchmarks forward+backward
//   conv-layers  the classic MNIST CNN's two conv layers at batch B: the backend's forward, data
//              gradient and weight gradient primitives, and the bias gradient, each timed alone
//              (tools/bench/conv_layers.sh sets them beside PyTorch's)
//   cnn-step   one training step of the classic MNIST CNN (models::mnist_cnn, Adam, batch B), and
//              the forward and backward of each of its convolutions alone, as
//              tools/bench/torch_convnet.py --mode step does them in PyTorch
//   epoch      a training epoch of the MNIST MLP or CNN, eager or (--cuda-graph) with the whole step
//              replayed as a CUDA graph, fp32 or tf32 (bench_epoch.cpp; tools/bench/gpu_epoch.sh)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "bench_epoch.h"
#include "cpp/backend/backend.h"
#include "cpp/backend/cpu/cpu_conv.h"
#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "ember/cpu_isa.h"
#include "ember/ember.h"
#include "tools/bench/bench_gemm.h"

using namespace ember;

namespace {

void sync(Device d) {
  if (d.is_cuda()) cuda::synchronize(d.index);
}

// Best of `reps` timings of `fn` after one warm-up call, in seconds.
double best_time(Device d, int reps, const std::function<void()>& fn) {
  fn();
  sync(d);
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    sync(d);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int mlp_epoch(const std::string& dir, Device device, int64_t hidden, int64_t batch, int epochs, uint64_t seed,
              const std::string& precision, bool profile) {
  EMBER_CHECK(precision == "fp32" || precision == "bf16", "mlp-epoch: --precision must be fp32 or bf16, got ", precision);
  data::Mnist ds = data::load_mnist_dir(dir);
  manual_seed(seed);
  auto model = nn::sequential({std::make_shared<nn::Linear>(784, hidden), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(hidden, 10)});
  model->to(device);
  optim::Adam opt(model->parameters(), {.lr = 1e-3});
  data::DataLoaderOptions o;
  o.batch_size = batch;
  o.shuffle = true;
  o.drop_last = true;  // as the PyTorch script: full batches only
  o.seed = seed;
  o.device = device;
  data::DataLoader loader(data::TensorDataset(ds.train.images, ds.train.labels), o);
  double best = 1e300, best_cpu = 1e300, last_loss = 0;
  // Process CPU time too: on a shared machine, time spent descheduled is not counted.
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
  };
  for (int e = 0; e < epochs; ++e) {
    // --profile: ember::profiler over the last epoch (its table on stderr; the timings include it).
    std::optional<profiler::Session> prof;
    if (profile && e == epochs - 1) prof.emplace(profiler::start());
    sync(device);
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_now();
    Tensor loss;
    for (data::Batch& b : loader) {
      profile::Range step_range("train.step");
      {
        autocast low(DType::BF16, precision == "bf16");  // --precision bf16: as torch.autocast
        loss = cross_entropy((*model)(b.x), b.y);
      }
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    sync(device);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    best_cpu = std::min(best_cpu, cpu_now() - c0);
    last_loss = loss.item<double>();
    if (prof) {
      prof->stop();
      std::fputs(prof->report().table(40).c_str(), stderr);
    }
  }
  const double n = static_cast<double>(loader.num_batches() * batch);
  // On the CPU: the epoch's fp32 floor (its GEMM FLOPs at the cores' measured peak) and what ran.
  std::string cpu;
  if (!device.is_cuda()) {
    const ember_bench::CpuPeak peak = ember_bench::measure_cpu_peak();
    const double flop = ember_bench::mlp_epoch_flops(ds.train.images.size(0), hidden, batch);
    const double floor_s = flop / (peak.peak_gflops * 1e9 * get_num_threads());
    cpu = detail::str_cat(", \"gflop\": ", flop / 1e9, ", \"peak_gflops\": ", peak.peak_gflops * get_num_threads(),
                          ", \"floor_s\": ", floor_s, ", \"x_floor\": ", best / floor_s, ", \"cpu_x_floor\": ", best_cpu / floor_s, ", \"cpu\": ", cpu_info().json(),
                          ", \"cpu_kernels\": \"", cpu_kernel_isa_name(cpu_kernel_isa()), "\"");
  }
  std::printf("{\"framework\": \"ember\", \"device\": \"%s\", \"threads\": %d, \"precision\": \"%s\", "
              "\"seconds\": %.4f, \"cpu_seconds\": %.4f, \"images_per_s\": %.1f, \"final_loss\": %.4f%s}\n",
              device.str().c_str(), get_num_threads(), precision.c_str(), best, best_cpu, n / best, last_loss, cpu.c_str());
  return 0;
}

int ops(Device device, int reps) {
  auto report = [&](const char* name, double s, double flops) {
    std::printf("{\"framework\": \"ember\", \"op\": \"%s\", \"device\": \"%s\", \"ms\": %.4f, \"gflops\": %.2f}\n", name,
                device.str().c_str(), s * 1e3, flops / s / 1e9);
  };
  if (!device.is_cuda()) {
    // What runs, the core's measured fp32 peak, then the MLP / CNN GEMM shapes against it.
    const ember_bench::CpuPeak p = ember_bench::measure_cpu_peak();
    std::printf("{\"framework\": \"ember\", \"op\": \"cpu\", \"cpu\": %s}\n", cpu_info().json().c_str());
    std::printf("{\"framework\": \"ember\", \"op\": \"cpu_peak\", \"fma_isa\": \"%s\", \"clock_ghz\": %.3f, "
                "\"clock_source\": \"dependent integer adds, thread CPU time\", \"flops_per_cycle\": %.1f, "
                "\"peak_gflops_per_core\": %.1f}\n",
                p.isa.c_str(), p.clock_ghz, p.flops_per_cycle, p.peak_gflops);
    ember_bench::gemm_shapes(p, reps);
  }
  const TensorOptions f32(DType::F32, device);
  for (int64_t n : {512, 2048}) {
    Tensor a = randn({n, n}, f32), b = randn({n, n}, f32);
    report(("matmul_" + std::to_string(n)).c_str(), best_time(device, reps, [&] { matmul(a, b); }), 2.0 * n * n * n);
  }
  Tensor x = randn({1024, 784}, f32), w = randn({500, 784}, f32).requires_grad_(), bias = zeros({500}, f32).requires_grad_();
  report("linear_relu_fwd_bwd_1024x784x500", best_time(device, reps, [&] {
           sum(linear_relu(x, w, bias)).backward();
         }),
         3 * 2.0 * 1024 * 784 * 500);
  Tensor logits = randn({4096, 1000}, f32).requires_grad_();
  Tensor labels = randint(0, 1000, {4096}, TensorOptions(DType::I64, device));
  report("cross_entropy_fwd_bwd_4096x1000", best_time(device, reps, [&] { cross_entropy(logits, labels).backward(); }), 0);
  return 0;
}

// The primitives themselves (cpp/backend/backend.h), so each direction is timed alone as
// PyTorch's aten::convolution_backward with one output_mask entry is in torch_conv_layers.py.
int conv_layers(Device device, int64_t batch, int reps) {
  struct Layer {
    const char* name;
    int64_t c_in, c_out, hw;
  };
  const char* engine = device.is_cuda() ? "cudnn" : (std::getenv("EMBER_CPU_CONV") ? std::getenv("EMBER_CPU_CONV") : "onednn");
  Backend& be = backend_for(device);
  const TensorOptions f32(DType::F32, device);
  for (const Layer& l : {Layer{"conv1_1x28x28_to_32", 1, 32, 28}, Layer{"conv2_32x26x26_to_64", 32, 64, 26}}) {
    const int64_t ho = l.hw - 2;
    Tensor x = randn({batch, l.c_in, l.hw, l.hw}, f32), w = mul(randn({l.c_out, l.c_in, 3, 3}, f32), 0.1);
    Tensor b = randn({l.c_out}, f32), y = zeros({batch, l.c_out, ho, ho}, f32), dy = randn({batch, l.c_out, ho, ho}, f32);
    Tensor dx = zeros(x.shape(), f32), dw = zeros(w.shape(), f32), db = zeros({l.c_out}, f32);
    const ConvParams p;
    const double flops = 2.0 * batch * l.c_out * ho * ho * l.c_in * 9;
    auto report = [&](const char* dir, double s, double fl) {
      std::printf("{\"framework\": \"ember\", \"engine\": \"%s\", \"threads\": %d, \"layer\": \"%s\", "
                  "\"direction\": \"%s\", \"ms\": %.4f, \"gflops\": %.2f}\n",
                  engine, get_num_threads(), l.name, dir, s * 1e3, fl / s / 1e9);
    };
    report("forward", best_time(device, reps, [&] { be.conv2d_forward(y, x, w, b, p); }), flops);
    report("data_grad", best_time(device, reps, [&] { be.conv2d_backward_data(dx, dy, w, p); }), flops);
    report("weight_grad", best_time(device, reps, [&] { be.conv2d_backward_weight(dw, Tensor(), dy, x, p); }), flops);
    // The weight and bias gradients of one primitive call, as the conv2d node's backward asks them.
    report("weight_bias_grad", best_time(device, reps, [&] { be.conv2d_backward_weight(dw, db, dy, x, p); }), flops);
  }
  // Both layers through the ops and autograd, as a training step runs them: conv, ReLU, conv, ReLU,
  // forward and backward (no input gradient for the images).
  Tensor x = randn({batch, 1, 28, 28}, f32);
  Tensor w1 = mul(randn({32, 1, 3, 3}, f32), 0.3).requires_grad_(), b1 = zeros({32}, f32).requires_grad_();
  Tensor w2 = mul(randn({64, 32, 3, 3}, f32), 0.05).requires_grad_(), b2 = zeros({64}, f32).requires_grad_();
  // Backward from a given output gradient (not from a sum: ember's full reduction alone takes ~8 ms here).
  const Tensor g = randn({batch, 64, 24, 24}, f32);
  const double s = best_time(device, reps, [&] {
    for (Tensor* t : {&w1, &b1, &w2, &b2}) t->zero_grad();
    relu(conv2d(relu(conv2d(x, w1, b1)), w2, b2)).backward(g);
  });
  std::printf("{\"framework\": \"ember\", \"engine\": \"%s\", \"threads\": %d, \"layer\": \"conv1+conv2\", "
              "\"direction\": \"fwd_bwd_autograd\", \"ms\": %.4f, \"gflops\": 0}\n",
              engine, get_num_threads(), s * 1e3);
  return 0;
}

// Process CPU time in seconds (time not spent descheduled: meaningful on a loaded machine).
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

int cnn_step(Device device, int64_t batch, int reps, uint64_t seed, const std::string& precision) {
  EMBER_CHECK(precision == "fp32" || precision == "bf16", "cnn-step: --precision must be fp32 or bf16, got ", precision);
  const bool low = precision == "bf16";  // --precision bf16: forward and loss under autocast, as torch.autocast
  manual_seed(seed);
  auto model = models::mnist_cnn();
  model->to(device);
  optim::Adam opt(model->parameters(), {.lr = 1e-3});
  const TensorOptions f32(DType::F32, device);
  const Tensor x = randn({batch, 1, 28, 28}, f32);
  const Tensor y = randint(0, 10, {batch}, TensorOptions(DType::I64, device));
  auto report = [&](const char* name, double s, double cpu_s = -1) {
    std::printf("{\"framework\": \"ember\", \"op\": \"%s\", \"device\": \"%s\", \"threads\": %d, \"batch\": %lld, "
                "\"precision\": \"%s\", \"ms\": %.3f",
                name, device.str().c_str(), get_num_threads(), static_cast<long long>(batch), precision.c_str(), s * 1e3);
    if (cpu_s >= 0) std::printf(", \"cpu_ms\": %.3f", cpu_s * 1e3);
    std::printf("}\n");
  };
  auto train_step = [&] {
    Tensor loss;
    {
      autocast guard(DType::BF16, low);
      loss = cross_entropy((*model)(x), y);
    }
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  // The step: best wall time and best process CPU time of `reps` (after a warm-up step).
  train_step();
  sync(device);
  double best_wall = 1e300, best_cpu = 1e300;
  for (int r = 0; r < reps; ++r) {
    const double c0 = process_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    train_step();
    sync(device);
    best_wall = std::min(best_wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    best_cpu = std::min(best_cpu, process_cpu_seconds() - c0);
  }
  report("cnn_train_step", best_wall, best_cpu);
  if (low && device.is_cpu()) {
    // Which engine ran conv2 (32 -> 64, 3x3) in bf16: oneDNN's bf16 kernels (where it has them and
    // they are not the slower on this CPU) or f32 on widened copies, and why.
    ConvParams p;
    const cpu::ConvGeometry g{batch, 32, 26, 26, 64, 3, 3, 24, 24, p};
    const bool native = cpu::bf16_kernels().native && cpu::dnnl_conv_has_kernel(g, DType::BF16, true);
    std::printf("{\"framework\": \"ember\", \"info\": \"conv_engine\", \"precision\": \"bf16\", \"conv2\": \"%s\", "
                "\"bf16_kernels\": \"%s\"}\n",
                native ? "oneDNN bf16 kernels" : "widened to f32", cpu::bf16_kernels().why.c_str());
  }
  autocast guard(DType::BF16, low);  // the convolutions alone, in the step's precision
  // Each convolution alone: its forward, and its backward (weight and bias gradients; conv2 also
  // the data gradient, as in the network, where conv1's input needs none).
  auto conv1 = model->at<nn::Conv2d>(0), conv2 = model->at<nn::Conv2d>(2);
  const Tensor h = randn({batch, 32, 26, 26}, f32).requires_grad_();
  const Tensor g1 = randn({batch, 32, 26, 26}, f32), g2 = randn({batch, 64, 24, 24}, f32);
  {
    autograd::NoGradGuard no_grad;
    report("conv1_forward", best_time(device, reps, [&] { (*conv1)(x); }));
    report("conv2_forward", best_time(device, reps, [&] { (*conv2)(h); }));
  }
  // The backward alone: forward + backward minus the forward, each the best of `reps`.
  auto backward_time = [&](const std::shared_ptr<nn::Conv2d>& conv, const Tensor& in, const Tensor& g) {
    const double both = best_time(device, reps, [&] { (*conv)(in).backward(g); });
    const double fwd = best_time(device, reps, [&] { (*conv)(in); });
    return both - fwd;
  };
  report("conv1_backward", backward_time(conv1, x, g1));
  report("conv2_backward", backward_time(conv2, h, g2));
  return 0;
}

}  // namespace

// tools/bench/bench_ops_cases.cpp
int op_cases(Device device, int warmup, int runs, const std::string& json_path, const std::string& only);
int profiler_overhead(const std::string& dir, Device device, int rounds, const std::string& trace_path);

int main(int argc, char** argv) {
  CLI::App app{"ember-bench: ember timings as JSON lines"};
  app.require_subcommand(1);
  std::string device_flag = "cpu", dir = "data/fashion-mnist";
  int threads = 1, epochs = 1, reps = 5;
  int64_t hidden = 500, batch = 64;
  uint64_t seed = 1;
  auto* mlp = app.add_subcommand("mlp-epoch", "one epoch of the MNIST MLP (Adam, shuffled batches)");
  mlp->add_option("--data", dir, "IDX folder")->capture_default_str();
  mlp->add_option("--hidden", hidden)->capture_default_str();
  mlp->add_option("--batch-size", batch)->capture_default_str();
  mlp->add_option("--epochs", epochs, "timed epochs (the best is reported)")->capture_default_str();
  mlp->add_option("--seed", seed)->capture_default_str();
  std::string precision = "fp32";  // mixed precision (issue 13)
  mlp->add_option("--precision", precision, "fp32 or bf16 (autocast)")->capture_default_str();
  bool mlp_profile = false;  // CPU speed (issue 13): where the epoch's time goes
  mlp->add_flag("--profile", mlp_profile, "profile the last epoch with ember::profiler (table on stderr)");
  auto* op = app.add_subcommand("ops", "GEMM and fused-op micro-benchmarks");
  op->add_option("--reps", reps)->capture_default_str();
  auto* conv = app.add_subcommand("conv-layers", "the MNIST CNN's conv layers: forward, data and weight gradients");
  conv->add_option("--reps", reps)->capture_default_str();
  conv->add_option("--batch-size", batch)->capture_default_str();
  auto* cnn = app.add_subcommand("cnn-step", "a training step of the MNIST CNN and its convolutions alone");
  cnn->add_option("--batch-size", batch)->capture_default_str();
  cnn->add_option("--reps", reps)->capture_default_str();
  cnn->add_option("--seed", seed)->capture_default_str();
  cnn->add_option("--precision", precision, "fp32 or bf16 (autocast)")->capture_default_str();
  // ---- epoch (issue 14: CUDA graphs, --precision) ----
  EpochBench eb;
  auto* epoch = app.add_subcommand("epoch", "a training epoch of the MNIST MLP or CNN, eager or as CUDA graphs");
  epoch->add_option("--data", eb.data_dir, "IDX folder")->capture_default_str();
  epoch->add_option("--model", eb.model, "mlp or cnn")->check(CLI::IsMember({"mlp", "cnn"}))->capture_default_str();
  epoch->add_option("--precision", eb.precision, "fp32 or tf32")->check(CLI::IsMember({"fp32", "tf32"}))->capture_default_str();
  epoch->add_flag("--cuda-graph", eb.cuda_graph, "replay the whole step as a CUDA graph (after a warm-up step)");
  epoch->add_option("--hidden", eb.hidden)->capture_default_str();
  epoch->add_option("--batch-size", eb.batch)->capture_default_str();
  epoch->add_option("--epochs", eb.epochs, "timed epochs (the best is reported)")->capture_default_str();
  epoch->add_option("--seed", eb.seed)->capture_default_str();
  // ---- end epoch ----
  // op-cases and profiler-overhead (bench_ops_cases.cpp)
  int warmup = 10, runs = 51, rounds = 3;
  std::string json_path, only, trace_path;
  auto* cases = app.add_subcommand("op-cases", "the MLP's and CNN's ops one by one: median of --runs after --warmup");
  cases->add_option("--warmup", warmup)->capture_default_str();
  cases->add_option("--runs", runs)->capture_default_str()->check(CLI::Range(1, 1000000));
  cases->add_option("--json", json_path, "also write JSON lines here");
  cases->add_option("--only", only, "only the cases whose name contains this");
  auto* overhead = app.add_subcommand("profiler-overhead", "MLP epochs without and with ember::profiler");
  overhead->add_option("--data", dir, "IDX folder")->capture_default_str();
  overhead->add_option("--rounds", rounds, "epoch pairs (off, on); medians reported")->capture_default_str();
  overhead->add_option("--trace", trace_path, "write the last profiled epoch's Chrome trace here");
  for (auto* sub : {mlp, op, conv, cnn, epoch, cases, overhead}) {
    sub->add_option("--device", device_flag, "cpu, cuda or cuda:N")->capture_default_str();
    sub->add_option("--threads", threads, "CPU BLAS threads")->capture_default_str();
  }
  CLI11_PARSE(app, argc, argv);
  try {
    set_num_threads(threads);
    const Device device = Device::parse(device_flag);
    if (device.is_cuda() && !cuda::is_available()) throw Error("--device " + device_flag + ": no CUDA device available");
    if (*mlp) return mlp_epoch(dir, device, hidden, batch, epochs, seed, precision, mlp_profile);
    if (*conv) return conv_layers(device, batch, reps);
    if (*cnn) return cnn_step(device, batch, reps, seed, precision);
    if (*epoch) {
      eb.device = device;
      return bench_epoch(eb);
    }
    if (*cases) return op_cases(device, warmup, runs, json_path, only);
    if (*overhead) return profiler_overhead(dir, device, rounds, trace_path);
    return ops(device, reps);
  } catch (const Error& e) {
    std::fprintf(stderr, "ember-bench: error: %s\n", e.what());
    return 2;
  }
}
