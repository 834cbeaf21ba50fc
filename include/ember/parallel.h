// CPU threading: how many threads the CPU backend's BLAS uses.
#pragma once
#include "ember/export.h"

namespace ember {

// Sets the number of threads OpenBLAS uses for CPU GEMMs (>= 1).
EMBER_API void set_num_threads(int threads);
EMBER_API int get_num_threads();

}  // namespace ember
