// CPU backend: reductions over the middle dim of [outer, n, inner], accumulating sums in double.
#include <limits>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_simd.h"

namespace ember {

namespace {

struct ReduceKind {
  bool sum = false;         // Sum, Mean
  bool is_max = false;      // Max, ArgMax
  bool want_index = false;  // ArgMax, ArgMin
};

ReduceKind reduce_kind(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Mean: return {.sum = true};
    case ReduceOp::Max: return {.is_max = true};
    case ReduceOp::Min: return {};
    case ReduceOp::ArgMax: return {.is_max = true, .want_index = true};
    case ReduceOp::ArgMin: return {.want_index = true};
  }
  throw_unhandled("reduce", "ReduceOp", static_cast<int>(op), "cpu");
}

// The sum of n contiguous values in double. Eight running sums (element j goes to sum j % 8, added
// pairwise at the end) instead of one: a single chain waits out each add's latency (about 4 cycles
// an element, 1.6 ms for the CNN's 1.2M-element fc1 gradient), eight independent ones fill a vector
// register (one AVX-512 add per 8 elements, chosen at run time). Still double throughout, so the
// result rounds to the same T as the sequential sum unless the two double sums straddle a rounding
// boundary of T.
template <class T>
double contiguous_sum(const T* x, int64_t n) {
  double total = 0.0;
  cpu::simd_dispatch([&] {
    const T* __restrict p = x;
    const int64_t count = n;
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= count; j += 8)
      for (int k = 0; k < 8; ++k) lane[k] += static_cast<double>(p[j + k]);
    double t = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; j < count; ++j) t += static_cast<double>(p[j]);
    total = t;
  });
  return total;
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner) {
  const ReduceKind kind = reduce_kind(op);
  cpu::visit_dtype(in.dtype(), "reduce", [&]<class T>() {
    const T* x = cpu::ptr<T>(in);
    if (kind.sum) {
      T* o = cpu::ptr<T>(out);
      if (inner == 1) {
        for (int64_t b = 0; b < outer; ++b) {
          const double total = contiguous_sum(x + b * n, n);
          o[b] = static_cast<T>(op == ReduceOp::Mean ? total / static_cast<double>(n) : total);
        }
        return;
      }
      std::vector<double> acc(static_cast<size_t>(inner));
      for (int64_t b = 0; b < outer; ++b) {
        std::fill(acc.begin(), acc.end(), 0.0);
        const T* xb = x + b * n * inner;
        for (int64_t j = 0; j < n; ++j)
          for (int64_t i = 0; i < inner; ++i) acc[i] += static_cast<double>(xb[j * inner + i]);
        for (int64_t i = 0; i < inner; ++i)
          o[b * inner + i] = static_cast<T>(op == ReduceOp::Mean ? acc[i] / static_cast<double>(n) : acc[i]);
      }
      return;
    }
    const bool is_max = kind.is_max, want_index = kind.want_index;
    for (int64_t b = 0; b < outer; ++b) {
      for (int64_t i = 0; i < inner; ++i) {
        const T* xb = x + b * n * inner + i;
        T best = xb[0];
        int64_t best_j = 0;
        // NaN wins (as in PyTorch): once found it is kept.
        for (int64_t j = 1; j < n; ++j) {
          T v = xb[j * inner];
          if (best != best) break;
          if (v != v || (is_max ? v > best : v < best)) {
            best = v;
            best_j = j;
          }
        }
        if (want_index) cpu::ptr<int64_t>(out)[b * inner + i] = best_j;
        else cpu::ptr<T>(out)[b * inner + i] = best;
      }
    }
  });
}

}  // namespace ember
