// CPU threading: OpenBLAS's own thread pool (f64 GEMMs) and OpenMP's (oneDNN's f32 GEMMs and
// convolutions), kept at the same count.
#include <cblas.h>
#include <omp.h>

#include <atomic>

#include "cpp/backend/cpu/cpu_matmul_dnnl.h"
#include "ember/error.h"
#include "ember/parallel.h"

namespace ember {
namespace {
std::atomic<int> g_threads{0};  // the last set_num_threads(); 0: never called (each library's default)
}  // namespace

namespace cpu {
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
