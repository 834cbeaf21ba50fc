// CPU backend: index_select and index_add along the middle dim of [outer, n, inner].
#include <cstring>

#include "cpp/backend/cpu/cpu_backend.h"

namespace ember {

void CpuBackend::index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                              int64_t inner) {
  const int64_t k = index.numel();
  const int64_t* idx = cpu::ptr<int64_t>(index);
  const size_t row = static_cast<size_t>(inner) * dtype_size(in.dtype());
  const char* x = in.impl()->data();
  char* o = out.impl()->data();
  for (int64_t b = 0; b < outer; ++b)
    for (int64_t j = 0; j < k; ++j) std::memcpy(o + (b * k + j) * row, x + (b * n + idx[j]) * row, row);
}

void CpuBackend::index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                           int64_t inner) {
  const int64_t k = index.numel();
  const int64_t* idx = cpu::ptr<int64_t>(index);
  cpu::visit_dtype(out.dtype(), "index_add", [&]<class T>() {
    T* o = cpu::ptr<T>(out);
    const T* s = cpu::ptr<T>(src);
    for (int64_t b = 0; b < outer; ++b)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t i = 0; i < inner; ++i) o[(b * n + idx[j]) * inner + i] += s[(b * k + j) * inner + i];
  });
}

}  // namespace ember
