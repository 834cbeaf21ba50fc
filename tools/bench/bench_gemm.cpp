// ember-bench ops: the CPU GEMM shapes against the core's measured peak (see bench_gemm.h).
#include "tools/bench/bench_gemm.h"

#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "ember/ember.h"

namespace ember_bench {
namespace {

double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Cycles: 100 dependent adds per iteration, each one cycle of latency on every x86-64 core.
__attribute__((noinline)) void add_chain(int64_t iters) {
  uint64_t x = 0;
  for (int64_t i = 0; i < iters; ++i) __asm__ volatile(".rept 100\n\taddq $1, %0\n\t.endr" : "+r"(x));
}

// FLOPs: 16 independent FMA chains (enough to cover latency x pipes on every current core). The
// chains stay in registers (no fast-math: nothing folds them); the sum keeps the result alive.
__attribute__((target("avx512f"), noinline)) double fma512(int64_t iters) {
  __m512 acc[16];
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (__m512& v : acc) v = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < iters; ++i) {
    for (__m512& v : acc) v = _mm512_fmadd_ps(v, m, a);
  }
  float sink = 0;
  for (__m512& v : acc) sink += _mm512_reduce_add_ps(v);
  if (sink == 12345.678f) std::printf(" ");
  return 2.0 * 16 * 16 * static_cast<double>(iters);
}

__attribute__((target("avx2,fma"), noinline)) double fma256(int64_t iters) {
  __m256 acc[16];
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (__m256& v : acc) v = _mm256_set1_ps(1.0f);
  for (int64_t i = 0; i < iters; ++i) {
    for (__m256& v : acc) v = _mm256_fmadd_ps(v, m, a);
  }
  float sink = 0, o[8];
  for (__m256& v : acc) {
    _mm256_storeu_ps(o, v);
    sink += o[0];
  }
  if (sink == 12345.678f) std::printf(" ");
  return 2.0 * 8 * 16 * static_cast<double>(iters);
}

// The fastest of 5 runs of fn (returns work units) in units per second of thread CPU time.
double best_rate(const std::function<double()>& fn) {
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    const double t0 = thread_seconds();
    const double units = fn();
    best = std::max(best, units / (thread_seconds() - t0));
  }
  return best;
}

struct Shape {
  const char* name;
  bool ta, tb;
  int64_t M, N, K;
};

}  // namespace

CpuPeak measure_cpu_peak() {
  CpuPeak p;
  const ember::CpuInfo& info = ember::cpu_info();
  const int64_t adds = 2'000'000;
  p.clock_ghz = best_rate([&] {
                  add_chain(adds / 100);
                  return static_cast<double>(adds);
                }) / 1e9;
  const int64_t iters = 4'000'000;
  double flops_per_s = 0;
  if (info.avx512f) {
    p.isa = "avx512f";
    flops_per_s = best_rate([&] { return fma512(iters); });
  } else if (info.avx2 && info.fma) {
    p.isa = "avx2";
    flops_per_s = best_rate([&] { return fma256(iters); });
  } else {
    p.isa = "sse (no FMA loop: peak not measured)";
  }
  p.peak_gflops = flops_per_s / 1e9;
  p.flops_per_cycle = p.clock_ghz > 0 ? p.peak_gflops / p.clock_ghz : 0;
  return p;
}

double mlp_epoch_flops(int64_t images, int64_t hidden, int64_t batch) {
  const double steps = static_cast<double>(images / batch), b = static_cast<double>(batch);
  const double h = static_cast<double>(hidden);
  const double fc1 = 2 * b * 784 * h, fc2 = 2 * b * h * 10;
  return steps * (2 * fc1 + 3 * fc2);  // fc1: forward, weight grad; fc2: forward, data grad, weight grad
}

void gemm_shapes(const CpuPeak& peak, int reps) {
  using namespace ember;
  const std::vector<Shape> shapes = {
      {"mlp_fc1_fwd X.W1^T", false, true, 64, 500, 784},   {"mlp_fc1_dW dY^T.X", true, false, 500, 784, 64},
      {"mlp_fc2_fwd H.W2^T", false, true, 64, 10, 500},    {"mlp_fc2_dX dY.W2", false, false, 64, 500, 10},
      {"mlp_fc2_dW dY^T.H", true, false, 10, 500, 64},     {"mlp_eval_fc1 (10000)", false, true, 10000, 500, 784},
      {"mlp_eval_fc2 (10000)", false, true, 10000, 10, 500}, {"cnn_fc1_fwd", false, true, 64, 128, 9216},
      {"cnn_fc1_dX", false, false, 64, 9216, 128},          {"cnn_fc1_dW", true, false, 128, 9216, 64},
      {"cnn_fc2_fwd", false, true, 64, 10, 128},            {"cnn_fc2_dW", true, false, 10, 128, 64},
  };
  const TensorOptions f32(DType::F32, Device::cpu());
  const bool one_thread = get_num_threads() == 1;
  for (const Shape& s : shapes) {
    // Stored as the training step has them: a transposed operand is a .t() view of a row-major one.
    Tensor a = s.ta ? randn({s.K, s.M}, f32).t() : randn({s.M, s.K}, f32);
    Tensor b = s.tb ? randn({s.N, s.K}, f32).t() : randn({s.K, s.N}, f32);
    const double flop = 2.0 * s.M * s.N * s.K;
    matmul(a, b);
    // Best of `reps` timings, each the mean of enough calls to take ~20 ms; at one thread in this
    // thread's CPU time (a shared machine's other processes do not count), else in wall time.
    auto clock = [&] {
      return one_thread ? thread_seconds()
                        : std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
    double t0 = clock();
    matmul(a, b);
    const int calls = std::max(1, static_cast<int>(0.02 / std::max(clock() - t0, 1e-7)));
    double best = 1e300;
    for (int r = 0; r < std::max(reps, 3); ++r) {
      t0 = clock();
      for (int i = 0; i < calls; ++i) matmul(a, b);
      best = std::min(best, (clock() - t0) / calls);
    }
    const double gf = flop / best / 1e9;
    std::printf("{\"framework\": \"ember\", \"op\": \"gemm\", \"shape\": \"%s\", \"M\": %lld, \"N\": %lld, \"K\": %lld, "
                "\"threads\": %d, \"ms\": %.4f, \"gflops\": %.2f, \"peak_gflops\": %.2f, \"of_peak\": %.3f}\n",
                s.name, static_cast<long long>(s.M), static_cast<long long>(s.N), static_cast<long long>(s.K),
                get_num_threads(), best * 1e3, gf, peak.peak_gflops * get_num_threads(),
                gf / (peak.peak_gflops * get_num_threads()));
  }
  const double flop = mlp_epoch_flops(60000, 500, 64);
  std::printf("{\"framework\": \"ember\", \"op\": \"mlp_epoch_floor\", \"images\": 60000, \"hidden\": 500, "
              "\"batch\": 64, \"gflop\": %.2f, \"threads\": %d, \"floor_s\": %.4f}\n",
              flop / 1e9, get_num_threads(), flop / (peak.peak_gflops * 1e9 * get_num_threads()));
}

}  // namespace ember_bench
