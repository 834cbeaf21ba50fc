// CPU threading through OpenBLAS's own thread pool.
#include <cblas.h>

#include "ember/error.h"
#include "ember/parallel.h"

namespace ember {

void set_num_threads(int threads) {
  EMBER_CHECK(threads >= 1, "set_num_threads: expected at least 1 thread, got ", threads);
  openblas_set_num_threads(threads);
}

int get_num_threads() { return openblas_get_num_threads(); }

}  // namespace ember
