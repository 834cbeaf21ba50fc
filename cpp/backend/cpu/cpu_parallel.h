// CPU loops split across set_num_threads() cores: [0, n) cut into one contiguous range per
// thread, the calling thread taking the first. Small loops run on the caller alone (starting a
// thread costs tens of microseconds).
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#include "ember/parallel.h"

namespace ember::cpu {

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
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(run, t);
  run(0);
  for (std::thread& th : pool) th.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace ember::cpu
