// CPU backend: optimizer updates, one pass per parameter over the arithmetic in optim_math.h.
#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/optim_math.h"

namespace ember {
namespace {

template <OptimizerAlgo A, class T>
void update_param(const OptimizerParam& e) {
  const optim_math::Scalars<T> s = optim_math::cast_scalars<T>(e.hyper);
  T* p = cpu::ptr<T>(e.param);
  const T* g = cpu::ptr<T>(e.grad);
  T* s0 = e.state[0].defined() ? cpu::ptr<T>(e.state[0]) : nullptr;
  T* s1 = e.state[1].defined() ? cpu::ptr<T>(e.state[1]) : nullptr;
  T* s2 = e.state[2].defined() ? cpu::ptr<T>(e.state[2]) : nullptr;
  const int64_t n = e.param.numel();
  for (int64_t i = 0; i < n; ++i) optim_math::update_element<A, T>(p, g, s0, s1, s2, i, s);
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
}

}  // namespace ember
