// CPU backend: optimizer updates, one pass per parameter over the arithmetic in optim_math.h,
// a large parameter split across set_num_threads() cores.
#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/cpu/cpu_simd.h"
#include "cpp/backend/optim_math.h"

namespace ember {
namespace {

// One loop per combination of present state buffers: the null checks fold away, and what is left
// is straight-line arithmetic with selects. A parameter, its gradient and its state buffers are
// distinct allocations (the optimizer makes them so), so the loop may be vectorised as if they could
// not alias (`omp simd`; -fopenmp-simd -fno-math-errno for this file: CMakeLists.txt), at the
// widest instruction set the CPU has (cpu_simd.h; -ffp-contract=off keeps every level's bits the same).
template <OptimizerAlgo A, class T, bool H0, bool H1, bool H2>
void update_loop(T* p_in, const T* g_in, T* s0, T* s1, T* s2, int64_t n_in, const optim_math::Scalars<T>& s_in) {
  cpu::simd_dispatch([&] {
    // Locals, not the closure's references: in the dispatched function the null state buffers must
    // be known (their checks fold away), the scalars kept in registers, and the pointers seen not to
    // change while the loop stores through them.
    T* p = p_in;
    const T* g = g_in;
    T* b0 = H0 ? s0 : nullptr;
    T* b1 = H1 ? s1 : nullptr;
    T* b2 = H2 ? s2 : nullptr;
    const int64_t n = n_in;
    const optim_math::Scalars<T> s = s_in;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) optim_math::update_element<A, T>(p, g, b0, b1, b2, i, s);
  });
}

template <OptimizerAlgo A, class T>
void update_param(const OptimizerParam& e) {
  const optim_math::Scalars<T> s = optim_math::cast_scalars<T>(e.hyper);
  T* p = cpu::ptr<T>(e.param);
  const T* g = cpu::ptr<T>(e.grad);
  T* s0 = e.state[0].defined() ? cpu::ptr<T>(e.state[0]) : nullptr;
  T* s1 = e.state[1].defined() ? cpu::ptr<T>(e.state[1]) : nullptr;
  T* s2 = e.state[2].defined() ? cpu::ptr<T>(e.state[2]) : nullptr;
  const int64_t n = e.param.numel();
  const int mask = (s0 ? 1 : 0) | (s1 ? 2 : 0) | (s2 ? 4 : 0);
  // Elements are independent: a large parameter's range is split across the threads (same bits).
  cpu::parallel_for(n, n * (2 + (mask & 1) + (mask >> 1 & 1) + (mask >> 2)), [&](int64_t b, int64_t end) {
    const auto at = [b](T* q) { return q ? q + b : nullptr; };
    const int64_t m = end - b;
    switch (mask) {
      case 0: return update_loop<A, T, false, false, false>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      case 1: return update_loop<A, T, true, false, false>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      case 2: return update_loop<A, T, false, true, false>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      case 3: return update_loop<A, T, true, true, false>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      case 4: return update_loop<A, T, false, false, true>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      case 5: return update_loop<A, T, true, false, true>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      case 6: return update_loop<A, T, false, true, true>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
      default: return update_loop<A, T, true, true, true>(p + b, g + b, at(s0), at(s1), at(s2), m, s);
    }
  });
}

template <OptimizerAlgo A>
void update_all(const OptimizerStep& s) {
  for (const OptimizerParam& e : s.params)
    cpu::visit_floating(e.param.dtype(), "optimizer_step", [&]<class T>() { update_param<A, T>(e); });
}

}  // namespace

void CpuBackend::optimizer_step(const OptimizerStep& s) {
  switch (s.algo) {
    case OptimizerAlgo::Sgd: return update_all<OptimizerAlgo::Sgd>(s);
    case OptimizerAlgo::Adam: return update_all<OptimizerAlgo::Adam>(s);
    case OptimizerAlgo::Rmsprop: return update_all<OptimizerAlgo::Rmsprop>(s);
    case OptimizerAlgo::Adagrad: return update_all<OptimizerAlgo::Adagrad>(s);
  }
  throw_unhandled("optimizer_step", "OptimizerAlgo", static_cast<int>(s.algo), "cpu");
}

}  // namespace ember
