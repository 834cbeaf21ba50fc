// CPU threading: OpenBLAS's own thread pool (f64 GEMMs) and OpenMP's (oneDNN's GEMMs and
// convolutions, and ember's own loops: cpu_parallel.h), kept at the same count. This file is
// compiled with -fopenmp (CMakeLists.txt).
#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cpp/backend/cpu/cpu_parallel.h"

#include "cpp/backend/cpu/cpu_matmul_dnnl.h"
#include "ember/error.h"
#include "ember/parallel.h"

namespace ember {
namespace {
std::atomic<int> g_threads{0};  // the last set_num_threads(); 0: never called (each library's default)
}  // namespace

namespace cpu {

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer cannot see libgomp's barriers (Debian's libgomp is not instrumented) and would
// report every region's hand-over as a race: its builds run the ranges on plain threads.
void run_ranges(int64_t threads, void (*range)(void*, int64_t), void* ctx) {
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(range, ctx, t);
  range(ctx, 0);
  for (std::thread& th : pool) th.join();
}
#else
void run_ranges(int64_t threads, void (*range)(void*, int64_t), void* ctx) {
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int64_t team = omp_get_num_threads();
    for (int64_t t = omp_get_thread_num(); t < threads; t += team) range(ctx, t);
  }
}
#endif

void match_omp_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
}
}  // namespace cpu

void set_num_threads(int threads) {
  EMBER_CHECK(threads >= 1, "set_num_threads: expected at least 1 thread, got ", threads);
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
  g_threads.store(threads, std::memory_order_relaxed);
}

int get_num_threads() { return openblas_get_num_threads(); }

}  // namespace ember
