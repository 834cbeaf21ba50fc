// ember-bench-fused-mlp: the MNIST MLP's two layers (batch 64, 784-500-10) on the CPU as
// fused_linear_relu_linear (one node: the ReLU's mask written by the first GEMM's epilogue, applied
// with b1's gradient in the dY·W2 GEMM's) and as its composite linear(fused_linear_relu(...)),
// forward and forward+backward (gradients of the four parameters), the two interleaved rep by rep (in
// alternating order) so that a loaded machine slows both alike; best and median of --reps after a
// warm-up; JSON lines that tools/bench/fused_mlp.sh sets beside tools/bench/torch_fused_mlp.py's.
//   ember-bench-fused-mlp [THREADS] [REPS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "ember/ember.h"

using namespace ember;

namespace {

struct Times {
  std::vector<double> ms;
  double best() const { return *std::min_element(ms.begin(), ms.end()); }
  double median() const {
    std::vector<double> s = ms;
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
  }
};

double time_ms(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void report(const char* op, const Times& t) {
  std::printf("{\"framework\": \"ember\", \"op\": \"%s\", \"threads\": %d, \"ms\": %.4f, \"median_ms\": %.4f}\n", op,
              get_num_threads(), t.best(), t.median());
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 200;
  set_num_threads(threads);
  manual_seed(1);
  const Tensor x = randn({64, 784});
  Tensor w1 = mul(randn({500, 784}), 0.03).requires_grad_(), b1 = mul(randn({500}), 0.1).requires_grad_();
  Tensor w2 = mul(randn({10, 500}), 0.05).requires_grad_(), b2 = mul(randn({10}), 0.1).requires_grad_();
  const Tensor g = randn({64, 10});
  auto fused = [&] { return fused_linear_relu_linear(x, w1, b1, w2, b2); };
  auto composite = [&] { return linear(fused_linear_relu(x, w1, b1), w2, b2); };
  auto step = [&](const std::function<Tensor()>& f) {
    for (Tensor* p : {&w1, &b1, &w2, &b2}) p->zero_grad();
    f().backward(g);
  };
  auto forward = [&](const std::function<Tensor()>& f) {
    autograd::NoGradGuard no_grad;
    (void)f();
  };
  Times ff, cf, fs, cs;
  for (int r = -5; r < reps; ++r) {  // 5 warm-up reps; who goes first alternates (caches favour one)
    double a, b, c, d;
    if (r % 2 == 0) {
      a = time_ms([&] { forward(fused); }), b = time_ms([&] { forward(composite); });
      c = time_ms([&] { step(fused); }), d = time_ms([&] { step(composite); });
    } else {
      b = time_ms([&] { forward(composite); }), a = time_ms([&] { forward(fused); });
      d = time_ms([&] { step(composite); }), c = time_ms([&] { step(fused); });
    }
    if (r < 0) continue;
    ff.ms.push_back(a), cf.ms.push_back(b), fs.ms.push_back(c), cs.ms.push_back(d);
  }
  report("mlp_fwd_fused", ff);
  report("mlp_fwd_composite", cf);
  report("mlp_fwd_bwd_fused", fs);
  report("mlp_fwd_bwd_composite", cs);
}
