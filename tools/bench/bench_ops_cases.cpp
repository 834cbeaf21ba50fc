// ember-bench op-cases and profiler-overhead (registered by ember_bench.cpp):
//   op-cases          the ops of the MNIST MLP and CNN training steps one by one (their GEMM shapes
//                     through linear, elementwise maps, softmax-cross-entropy, optimizer updates,
//                     conv forward/backward), each the median of many timed runs after a warm-up;
//                     a table on stdout and JSON lines (--json FILE) that tools/bench/op_cases.sh sets
//                     beside tools/bench/torch_op_cases.py's
//   profiler-overhead one MLP epoch (784-500-10, Adam, batch 64) per round, alternately without and
//                     with ember::profiler recording it, and the cost of one profile::Range while off
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "ember/ember.h"

using namespace ember;

namespace {

using Clock = std::chrono::steady_clock;

void sync(Device d) {
  if (d.is_cuda()) cuda::synchronize(d.index);
}

struct Timing {
  double median_ms, min_ms;
  int runs;
};

// `warmup` untimed calls, then `runs` timed ones (each waited for on a device): the median and the min.
Timing time_case(Device d, int warmup, int runs, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  sync(d);
  std::vector<double> ms;
  ms.reserve(runs);
  for (int r = 0; r < runs; ++r) {
    const auto t0 = Clock::now();
    fn();
    sync(d);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  const double median = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
  return {median, ms.front(), runs};
}

double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

}  // namespace

int op_cases(Device device, int warmup, int runs, const std::string& json_path, const std::string& only) {
  const TensorOptions f32(DType::F32, device);
  const TensorOptions i64(DType::I64, device);
  manual_seed(1);
  struct Result {
    std::string name;
    Timing t;
    double flops;
  };
  std::vector<Result> results;
  auto run = [&](const std::string& name, double flops, const std::function<void()>& fn) {
    if (!only.empty() && name.find(only) == std::string::npos) return;
    results.push_back({name, time_case(device, warmup, runs, fn), flops});
  };
  const int64_t B = 64;

  // Linear layers of the MLP (784-500-10) and of the CNN's head (9216-128-10) at batch 64: forward
  // alone, and forward + backward from a given output gradient (weight and bias gradients; the input
  // gradient too where the network needs it, i.e. all but the first layer).
  struct Lin {
    const char* name;
    int64_t in, out;
    bool input_grad;
  };
  for (const Lin& l : {Lin{"mlp_fc1_784x500", 784, 500, false}, Lin{"mlp_fc2_500x10", 500, 10, true},
                       Lin{"cnn_fc1_9216x128", 9216, 128, true}, Lin{"cnn_fc2_128x10", 128, 10, true}}) {
    Tensor x = randn({B, l.in}, f32);
    if (l.input_grad) x.requires_grad_();
    Tensor w = mul(randn({l.out, l.in}, f32), 0.05).requires_grad_(), b = zeros({l.out}, f32).requires_grad_();
    const Tensor g = randn({B, l.out}, f32);
    const double fwd_flops = 2.0 * B * l.in * l.out;
    run(std::string(l.name) + "_fwd", fwd_flops, [&] {
      autograd::NoGradGuard no_grad;
      (void)linear(x, w, b);
    });
    run(std::string(l.name) + "_fwd_bwd", fwd_flops * (l.input_grad ? 3 : 2), [&] {
      for (Tensor* t : {&x, &w, &b}) t->zero_grad();
      linear(x, w, b).backward(g);
    });
  }
  {  // the MLP's hidden layer as ember runs it: linear + ReLU (one op) forward and backward
    Tensor x = randn({B, 784}, f32);
    Tensor w = mul(randn({500, 784}, f32), 0.05).requires_grad_(), b = zeros({500}, f32).requires_grad_();
    const Tensor g = randn({B, 500}, f32);
    run("mlp_linear_relu_784x500_fwd_bwd", 2 * 2.0 * B * 784 * 500, [&] {
      w.zero_grad();
      b.zero_grad();
      relu(linear(x, w, b)).backward(g);
    });
  }

  // Elementwise maps at the MLP's hidden size and the CNN's first activation.
  for (const auto& [name, shape] : {std::pair<const char*, Shape>{"64x500", Shape{B, 500}},
                                    std::pair<const char*, Shape>{"64x32x26x26", Shape{B, 32, 26, 26}}}) {
    Tensor a = randn(shape, f32), c = randn(shape, f32);
    Tensor ag = randn(shape, f32).requires_grad_();
    const Tensor g = randn(shape, f32);
    run(std::string("relu_") + name + "_fwd", 0, [&] {
      autograd::NoGradGuard no_grad;
      (void)relu(a);
    });
    run(std::string("relu_") + name + "_fwd_bwd", 0, [&] {
      ag.zero_grad();
      relu(ag).backward(g);
    });
    run(std::string("add_") + name, 0, [&] {
      autograd::NoGradGuard no_grad;
      (void)add(a, c);
    });
    run(std::string("mul_") + name, 0, [&] {
      autograd::NoGradGuard no_grad;
      (void)mul(a, c);
    });
  }

  // Softmax-cross-entropy: the models' [64, 10] logits, and a large [4096, 1000] case.
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{B, 10}, std::pair<int64_t, int64_t>{4096, 1000}}) {
    Tensor logits = randn({rows, cols}, f32).requires_grad_();
    const Tensor labels = randint(0, cols, {rows}, i64);
    const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
    run("cross_entropy_" + shape + "_fwd", 0, [&] {
      autograd::NoGradGuard no_grad;
      (void)cross_entropy(logits, labels);
    });
    run("cross_entropy_" + shape + "_fwd_bwd", 0, [&] {
      logits.zero_grad();
      cross_entropy(logits, labels).backward();
    });
  }

  // Optimizer updates over the MLP's and the CNN's parameters, gradients set by one backward.
  {
    auto mlp = nn::sequential({std::make_shared<nn::Linear>(784, 500), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(500, 10)});
    mlp->to(device);
    auto cnn = models::mnist_cnn();
    cnn->to(device);
    const Tensor x_mlp = randn({B, 784}, f32), x_cnn = randn({B, 1, 28, 28}, f32);
    const Tensor y = randint(0, 10, {B}, i64);
    cross_entropy((*mlp)(x_mlp), y).backward();
    cross_entropy((*cnn)(x_cnn), y).backward();
    optim::Adam adam_mlp(mlp->parameters(), {.lr = 1e-3});
    optim::SGD sgd_mlp(mlp->parameters(), {.lr = 1e-3, .momentum = 0.9});
    optim::Adam adam_cnn(cnn->parameters(), {.lr = 1e-3});
    run("adam_step_mlp_397510", 0, [&] { adam_mlp.step(); });
    run("sgd_momentum_step_mlp_397510", 0, [&] { sgd_mlp.step(); });
    run("adam_step_cnn_1199882", 0, [&] { adam_cnn.step(); });
  }

  // The CNN's convolutions (3x3, stride 1, no padding) at batch 64: forward alone, and forward +
  // backward (weight and bias gradients; conv2 also the data gradient, as in the network).
  struct Conv {
    const char* name;
    int64_t c_in, c_out, hw;
    bool input_grad;
  };
  for (const Conv& c : {Conv{"conv1_1x28x28_to_32", 1, 32, 28, false}, Conv{"conv2_32x26x26_to_64", 32, 64, 26, true}}) {
    Tensor x = randn({B, c.c_in, c.hw, c.hw}, f32);
    if (c.input_grad) x.requires_grad_();
    Tensor w = mul(randn({c.c_out, c.c_in, 3, 3}, f32), 0.1).requires_grad_(), b = zeros({c.c_out}, f32).requires_grad_();
    const int64_t ho = c.hw - 2;
    const Tensor g = randn({B, c.c_out, ho, ho}, f32);
    const double flops = 2.0 * B * c.c_out * ho * ho * c.c_in * 9;
    run(std::string(c.name) + "_fwd", flops, [&] {
      autograd::NoGradGuard no_grad;
      (void)conv2d(x, w, b);
    });
    run(std::string(c.name) + "_fwd_bwd", flops * (c.input_grad ? 3 : 2), [&] {
      for (Tensor* t : {&x, &w, &b}) t->zero_grad();
      conv2d(x, w, b).backward(g);
    });
  }
  {  // the CNN's pooling: 2x2 max over conv2's ReLU output
    Tensor x = randn({B, 64, 24, 24}, f32).requires_grad_();
    const Tensor g = randn({B, 64, 12, 12}, f32);
    run("max_pool2d_64x64x24x24_fwd_bwd", 0, [&] {
      x.zero_grad();
      max_pool2d(x, MaxPool2dArgs{}).backward(g);
    });
  }

  std::printf("ember-bench op-cases: %s, %d thread(s), median of %d runs after %d warm-up\n", device.str().c_str(),
              get_num_threads(), runs, warmup);
  std::printf("%-36s %12s %12s %10s\n", "case", "median ms", "min ms", "GFLOP/s");
  for (const Result& r : results) {
    if (r.flops > 0)
      std::printf("%-36s %12.4f %12.4f %10.2f\n", r.name.c_str(), r.t.median_ms, r.t.min_ms,
                  r.flops / (r.t.median_ms * 1e-3) / 1e9);
    else
      std::printf("%-36s %12.4f %12.4f %10s\n", r.name.c_str(), r.t.median_ms, r.t.min_ms, "-");
  }
  const CpuMemoryStats host = cpu_memory_stats();
  const double rss = peak_rss_mib();
  std::printf("peak memory: %.1f MiB RSS, %.1f MiB in ember's CPU allocator", rss,
              static_cast<double>(host.peak_allocated) / (1024.0 * 1024.0));
  double device_peak = 0;
  if (device.is_cuda()) {
    device_peak = static_cast<double>(cuda::memory_stats(device.index).peak_allocated) / (1024.0 * 1024.0);
    std::printf(", %.1f MiB on %s", device_peak, device.str().c_str());
  }
  std::printf("\n");
  if (!json_path.empty()) {
    std::ofstream f(json_path, std::ios::trunc);
    if (!f) throw Error("op-cases --json " + json_path + ": cannot open the file for writing");
    char line[512];
    for (const Result& r : results) {
      std::snprintf(line, sizeof line,
                    "{\"framework\": \"ember\", \"case\": \"%s\", \"device\": \"%s\", \"threads\": %d, "
                    "\"median_ms\": %.5f, \"min_ms\": %.5f, \"runs\": %d, \"warmup\": %d}\n",
                    r.name.c_str(), device.str().c_str(), get_num_threads(), r.t.median_ms, r.t.min_ms, r.t.runs,
                    warmup);
      f << line;
    }
    std::snprintf(line, sizeof line,
                  "{\"framework\": \"ember\", \"peak_rss_mib\": %.1f, \"peak_allocator_mib\": %.1f, "
                  "\"peak_device_mib\": %.1f}\n",
                  rss, static_cast<double>(host.peak_allocated) / (1024.0 * 1024.0), device_peak);
    f << line;
    if (!f) throw Error("op-cases --json " + json_path + ": writing failed");
  }
  return 0;
}

int profiler_overhead(const std::string& dir, Device device, int rounds, const std::string& trace_path) {
  // The cost of a range while no profiler runs, per range (what every op pays): wall time, and the
  // thread's CPU time (which a loaded machine inflates less).
  {
    constexpr int kRanges = 2'000'000;
    const double cpu0 = thread_cpu_ns();
    const auto t0 = Clock::now();
    for (int i = 0; i < kRanges; ++i) profile::Range r("bench");
    const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / kRanges;
    const double cpu_ns = (thread_cpu_ns() - cpu0) / kRanges;
    std::printf("{\"case\": \"range_off\", \"ns_per_range\": %.2f, \"cpu_ns_per_range\": %.2f}\n", ns, cpu_ns);
  }
  if (rounds <= 0) return 0;
  data::Mnist ds = data::load_mnist_dir(dir);
  manual_seed(1);
  auto model = nn::sequential({std::make_shared<nn::Linear>(784, 500), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(500, 10)});
  model->to(device);
  optim::Adam opt(model->parameters(), {.lr = 1e-3});
  data::DataLoaderOptions o;
  o.batch_size = 64;
  o.shuffle = true;
  o.drop_last = true;
  o.seed = 1;
  o.device = device;
  data::DataLoader loader(data::TensorDataset(ds.train.images, ds.train.labels), o);
  int64_t ranges = 0;
  double last_cpu_s = 0;  // the main thread's CPU time in the last epoch
  auto epoch = [&] {
    sync(device);
    const double cpu0 = thread_cpu_ns();
    const auto t0 = Clock::now();
    Tensor loss;
    for (data::Batch& b : loader) {
      profile::Range step("train.step");
      loss = cross_entropy((*model)(b.x), b.y);
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    sync(device);
    (void)loss.item<double>();
    last_cpu_s = (thread_cpu_ns() - cpu0) / 1e9;
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  (void)epoch();  // warm-up
  std::vector<double> off, on, off_cpu, on_cpu;
  for (int r = 0; r < rounds; ++r) {
    off.push_back(epoch());
    off_cpu.push_back(last_cpu_s);
    auto prof = profiler::start();
    on.push_back(epoch());
    prof.stop();
    on_cpu.push_back(last_cpu_s);
    ranges = 0;
    for (const profiler::Event& e : prof.report().events()) ranges += e.kind == "op";
    if (r == rounds - 1) {
      std::fputs(prof.report().table(25).c_str(), stdout);
      if (!trace_path.empty()) prof.report().write_chrome_trace(trace_path);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  std::printf("{\"case\": \"mlp_epoch\", \"device\": \"%s\", \"threads\": %d, \"rounds\": %d, \"off_s\": %.4f, "
              "\"on_s\": %.4f, \"on_over_off\": %.4f, \"off_cpu_s\": %.4f, \"on_cpu_s\": %.4f, "
              "\"on_over_off_cpu\": %.4f, \"ranges_per_epoch\": %lld}\n",
              device.str().c_str(), get_num_threads(), rounds, median(off), median(on), median(on) / median(off),
              median(off_cpu), median(on_cpu), median(on_cpu) / median(off_cpu), static_cast<long long>(ranges));
  return 0;
}
