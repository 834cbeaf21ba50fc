// ember-bench-poolnorm: max_pool2d 2x2 on [64, 64, 24, 24] and training-mode batch_norm on
// [64, 32, 26, 26] (affine), forward and forward+backward, best of --reps after a warm-up; JSON
// lines that tools/bench/poolnorm.sh sets beside tools/bench/torch_poolnorm.py's.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "ember/ember.h"

using namespace ember;

namespace {

double best_ms(int reps, const std::function<void()>& fn) {
  fn();
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void report(const char* op, double ms) {
  std::printf("{\"framework\": \"ember\", \"op\": \"%s\", \"threads\": %d, \"ms\": %.4f}\n", op, get_num_threads(), ms);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 30;
  set_num_threads(threads);
  manual_seed(1);
  {
    Tensor x = randn({64, 64, 24, 24}).requires_grad_();
    Tensor g = randn({64, 64, 12, 12});
    const MaxPool2dArgs a{.kernel_size = {2, 2}};
    report("max_pool2d_fwd", best_ms(reps, [&] {
             autograd::NoGradGuard no_grad;
             max_pool2d(x, a);
           }));
    report("max_pool2d_fwd_bwd", best_ms(reps, [&] {
             x.zero_grad();
             max_pool2d(x, a).backward(g);
           }));
  }
  {
    Tensor x = randn({64, 32, 26, 26}).requires_grad_();
    Tensor w = ones({32}).requires_grad_(), b = zeros({32}).requires_grad_();
    Tensor rm = zeros({32}), rv = ones({32});
    Tensor g = randn({64, 32, 26, 26});
    report("batch_norm_train_fwd", best_ms(reps, [&] {
             autograd::NoGradGuard no_grad;
             batch_norm(x, rm, rv, w, b, true);
           }));
    report("batch_norm_train_fwd_bwd", best_ms(reps, [&] {
             x.zero_grad(), w.zero_grad(), b.zero_grad();
             batch_norm(x, rm, rv, w, b, true).backward(g);
           }));
  }
  return 0;
}
