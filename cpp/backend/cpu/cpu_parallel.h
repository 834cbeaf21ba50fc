// CPU loops split across set_num_threads() cores: [0, n) cut into one contiguous range per
// thread, the calling thread taking the first. The ranges run on OpenMP's team, the threads
// oneDNN's convolutions and GEMMs use too: they wait between regions, so a loop starts them in
// microseconds, and no second set of threads competes with oneDNN's for the cores. The bf16
// MNIST CNN's step at two threads took 13.8 ms with one std::thread per range per loop and takes
// 8.4 ms on the team (fp32 22.0 -> 17.9 ms; one thread 15.0 and 34.7 ms either way; ember-bench
// cnn-step, Xeon with AMX). Small loops run on the caller alone.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <vector>

#include "ember/parallel.h"

namespace ember::cpu {

// Calls range(ctx, t) once for each t in [0, threads), concurrently, t = 0 on the calling thread,
// and returns when all have returned; range must not throw. On OpenMP's team (cpu_threads.cpp);
// a team smaller than asked for (a loop started inside another) runs the rest of the t in turn.
void run_ranges(int64_t threads, void (*range)(void*, int64_t), void* ctx);

// Calls f(begin, end) over disjoint ranges covering [0, n); `work` estimates the elements touched
// in all, to decide whether threads pay. An exception in any range is rethrown here.
template <class F>
void parallel_for(int64_t n, int64_t work, F&& f) {
  constexpr int64_t kMinWorkPerThread = 16384;
  const int64_t threads = std::min<int64_t>({static_cast<int64_t>(get_num_threads()), n,
                                             std::max<int64_t>(1, work / kMinWorkPerThread)});
  if (threads <= 1) {
    if (n > 0) f(int64_t(0), n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto run = [&](int64_t t) {
    try {
      f(n * t / threads, n * (t + 1) / threads);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
    }
  };
  run_ranges(threads, [](void* ctx, int64_t t) { (*static_cast<decltype(run)*>(ctx))(t); }, &run);
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace ember::cpu
