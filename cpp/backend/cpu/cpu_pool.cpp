// CPU backend: 2-D max / avg pooling (regular and adaptive windows) forward and backward, one
// (sample, channel) plane per task across set_num_threads() cores. Window arithmetic in
// pool_norm_math.h, shared with cuda/kernels/pool.cu.
#include <algorithm>
#include <bit>
#include <type_traits>
#include <limits>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/pool_norm_math.h"

namespace ember {
namespace {

struct Plane {
  int64_t planes, h, w, oh, ow;
};

Plane plane_of(const Tensor& in, const Tensor& out) {
  return {in.size(0) * in.size(1), in.size(2), in.size(3), out.size(2), out.size(3)};
}

// best, at = v, i when max pool takes v (math::max_pool_takes), as bit masks rather than a
// branch: on real activations the comparison is a coin flip, and a mispredicted branch per tap
// costs several times the tap (GCC turns a ?: here back into a branch).
template <class T>
inline void take_if_max(T v, int64_t i, T& best, int64_t& at) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const bool take = math::max_pool_takes(v, best);
  const U m = U(0) - U(take);
  best = std::bit_cast<T>(static_cast<U>((std::bit_cast<U>(v) & m) | (std::bit_cast<U>(best) & ~m)));
  const uint64_t mi = uint64_t(0) - uint64_t(take);
  at = static_cast<int64_t>((static_cast<uint64_t>(i) & mi) | (static_cast<uint64_t>(at) & ~mi));
}

}  // namespace

void CpuBackend::pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& in, const PoolParams& p) {
  const Plane g = plane_of(in, out);
  cpu::visit_floating(in.dtype(), "pool2d", [&]<class T>() {
    const T* x = cpu::ptr<T>(in);
    T* y = cpu::ptr<T>(out);
    int64_t* idx = p.kind == PoolKind::Max ? cpu::ptr<int64_t>(indices) : nullptr;
    cpu::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t b, int64_t e) {
      std::vector<T> row_best(static_cast<size_t>(g.ow));
      std::vector<int64_t> row_at(static_cast<size_t>(g.ow));
      for (int64_t pl = b; pl < e; ++pl) {
        const T* xp = x + pl * g.h * g.w;
        T* yp = y + pl * g.oh * g.ow;
        int64_t* ip = idx ? idx + pl * g.oh * g.ow : nullptr;
        for (int64_t i = 0; i < g.oh; ++i) {
          const math::PoolTaps th = math::pool_axis_taps(p, 0, i, g.h, g.oh);
          // Max over regular windows: the columns whose taps all lie inside the row go tap by tap
          // across the whole row (selects over contiguous outputs, which the compiler turns into
          // vector blends); the same taps in the same order as the per-output loop, so ties and
          // NaNs resolve identically.
          int64_t j0 = g.ow, j1 = g.ow;
          if (p.kind == PoolKind::Max && !p.adaptive) {
            const int64_t s = p.stride[1], pad = p.padding[1], d = p.dilation[1], k = p.kernel[1];
            j0 = std::min(g.ow, (pad + s - 1) / s);
            const int64_t last = g.w - 1 + pad - (k - 1) * d;  // j * s <= last
            j1 = last < 0 ? j0 : std::clamp<int64_t>(last / s + 1, j0, g.ow);
            for (int64_t j = j0; j < j1; ++j) row_best[j] = -std::numeric_limits<T>::infinity();
            for (int64_t j = j0; j < j1; ++j) row_at[j] = th.start * g.w + j * s - pad;
            for (int64_t h = th.start; h < th.end; h += th.step)
              for (int64_t kb = 0; kb < k; ++kb) {
                const int64_t base = h * g.w + kb * d - pad;
                const T* src = xp + base;
                T* best = row_best.data();
                int64_t* at = row_at.data();
                for (int64_t j = j0; j < j1; ++j) take_if_max(src[j * s], base + j * s, best[j], at[j]);
              }
            for (int64_t j = j0; j < j1; ++j) yp[i * g.ow + j] = row_best[j], ip[i * g.ow + j] = row_at[j];
          }
          for (int64_t j = 0; j < g.ow; ++j) {
            if (j == j0) j = j1;
            if (j >= g.ow) break;
            const math::PoolTaps tw = math::pool_axis_taps(p, 1, j, g.w, g.ow);
            if (p.kind == PoolKind::Max) {
              T best = -std::numeric_limits<T>::infinity();
              int64_t at = th.start * g.w + tw.start;
              for (int64_t h = th.start; h < th.end; h += th.step)
                for (int64_t w = tw.start; w < tw.end; w += tw.step) {
                  const T v = xp[h * g.w + w];
                  if (math::max_pool_takes(v, best)) best = v, at = h * g.w + w;
                }
              yp[i * g.ow + j] = best;
              ip[i * g.ow + j] = at;
            } else {
              T s = 0;
              for (int64_t h = th.start; h < th.end; ++h)
                for (int64_t w = tw.start; w < tw.end; ++w) s += xp[h * g.w + w];
              yp[i * g.ow + j] = s / static_cast<T>(math::avg_pool_divisor(p, g.h, g.w, i, j, th, tw));
            }
          }
        }
      }
    });
  });
}

void CpuBackend::pool2d_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& indices,
                                 const PoolParams& p) {
  const Plane g = plane_of(grad_in, grad_out);
  cpu::visit_floating(grad_in.dtype(), "pool2d_backward", [&]<class T>() {
    T* gx = cpu::ptr<T>(grad_in);
    const T* gy = cpu::ptr<T>(grad_out);
    const int64_t* idx = p.kind == PoolKind::Max ? cpu::ptr<int64_t>(indices) : nullptr;
    // Each task owns whole planes of grad_in, so overlapping windows add without races.
    cpu::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        T* gxp = gx + pl * g.h * g.w;
        const T* gyp = gy + pl * g.oh * g.ow;
        for (int64_t k = 0; k < g.h * g.w; ++k) gxp[k] = T(0);
        if (p.kind == PoolKind::Max) {
          const int64_t* ip = idx + pl * g.oh * g.ow;
          for (int64_t k = 0; k < g.oh * g.ow; ++k) gxp[ip[k]] += gyp[k];
          continue;
        }
        for (int64_t i = 0; i < g.oh; ++i) {
          const math::PoolTaps th = math::pool_axis_taps(p, 0, i, g.h, g.oh);
          for (int64_t j = 0; j < g.ow; ++j) {
            const math::PoolTaps tw = math::pool_axis_taps(p, 1, j, g.w, g.ow);
            const T share = gyp[i * g.ow + j] / static_cast<T>(math::avg_pool_divisor(p, g.h, g.w, i, j, th, tw));
            for (int64_t h = th.start; h < th.end; ++h)
              for (int64_t w = tw.start; w < tw.end; ++w) gxp[h * g.w + w] += share;
          }
        }
      }
    });
  });
}

}  // namespace ember
