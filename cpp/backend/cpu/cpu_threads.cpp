// CPU threading: OpenBLAS's own thread pool (GEMMs) and OpenMP's (oneDNN's convolutions), kept at
// the same count.
#include <cblas.h>
#include <omp.h>

#include "ember/error.h"
#include "ember/parallel.h"

namespace ember {

void set_num_threads(int threads) {
  EMBER_CHECK(threads >= 1, "set_num_threads: expected at least 1 thread, got ", threads);
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);
}

int get_num_threads() { return openblas_get_num_threads(); }

}  // namespace ember
