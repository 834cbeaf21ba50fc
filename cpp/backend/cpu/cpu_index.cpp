// CPU backend: index checks, and index_select and index_add along the middle dim of [outer, n, inner].
#include <algorithm>
#include <cstring>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/index_check.h"

namespace ember {

void CpuBackend::check_index(const Tensor& index, const IndexCheck& c) {
  const int64_t k = index.numel(), step = vector_stride(index);
  const int64_t* idx = cpu::ptr<int64_t>(index);
  bool bad = false;
  int64_t lo = 0, hi = 0;
  bool any = false;
  for (int64_t j = 0; j < k; ++j) {
    const int64_t v = idx[j * step];
    if (c.allow_ignore && v == c.ignore_index) continue;
    lo = any ? std::min(lo, v) : v;
    hi = any ? std::max(hi, v) : v;
    any = true;
    bad = bad || v < 0 || v >= c.bound;
  }
  if (bad) throw Error(index_range_error(c, lo, hi));
}

void CpuBackend::index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                              int64_t inner) {
  const int64_t k = index.numel(), step = vector_stride(index);
  const int64_t* idx = cpu::ptr<int64_t>(index);
  const size_t row = static_cast<size_t>(inner) * dtype_size(in.dtype());
  const char* x = in.impl()->data();
  char* o = out.impl()->data();
  for (int64_t b = 0; b < outer; ++b)
    for (int64_t j = 0; j < k; ++j) std::memcpy(o + (b * k + j) * row, x + (b * n + idx[j * step]) * row, row);
}

void CpuBackend::index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                           int64_t inner) {
  check_index_add_dtype(out.dtype());
  const int64_t k = index.numel(), step = vector_stride(index);
  const int64_t* idx = cpu::ptr<int64_t>(index);
  cpu::visit_dtype(out.dtype(), "index_add", [&]<class T>() {
    T* o = cpu::ptr<T>(out);
    const T* s = cpu::ptr<T>(src);
    for (int64_t b = 0; b < outer; ++b)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t i = 0; i < inner; ++i) o[(b * n + idx[j * step]) * inner + i] += s[(b * k + j) * inner + i];
  });
}

}  // namespace ember
