// CPU backend: 2-D max / avg pooling (regular and adaptive windows) forward and backward, one
// (sample, channel) plane per task across set_num_threads() cores. Window arithmetic in
// pool_norm_math.h, shared with cuda/kernels/pool.cu.
#include <limits>

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

math::PoolTaps taps(const PoolParams& p, int axis, int64_t o, int64_t in, int64_t out) {
  if (p.adaptive) return math::adaptive_taps(o, in, out);
  return math::pool_taps(o, in, p.kernel[axis], p.stride[axis], p.padding[axis],
                         p.kind == PoolKind::Max ? p.dilation[axis] : 1);
}

// Avg's divisor of output (i, j), whose clipped windows are th and tw.
int64_t avg_divisor(const PoolParams& p, const Plane& g, int64_t i, int64_t j, math::PoolTaps th,
                    math::PoolTaps tw) {
  if (p.adaptive) return math::tap_count(th) * math::tap_count(tw);
  if (p.divisor_override > 0) return p.divisor_override;
  if (p.count_include_pad)
    return math::avg_window_with_pad(i, g.h, p.kernel[0], p.stride[0], p.padding[0]) *
           math::avg_window_with_pad(j, g.w, p.kernel[1], p.stride[1], p.padding[1]);
  return math::tap_count(th) * math::tap_count(tw);
}

}  // namespace

void CpuBackend::pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& in, const PoolParams& p) {
  const Plane g = plane_of(in, out);
  cpu::visit_floating(in.dtype(), "pool2d", [&]<class T>() {
    const T* x = cpu::ptr<T>(in);
    T* y = cpu::ptr<T>(out);
    int64_t* idx = p.kind == PoolKind::Max ? cpu::ptr<int64_t>(indices) : nullptr;
    cpu::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const T* xp = x + pl * g.h * g.w;
        T* yp = y + pl * g.oh * g.ow;
        for (int64_t i = 0; i < g.oh; ++i) {
          const math::PoolTaps th = taps(p, 0, i, g.h, g.oh);
          for (int64_t j = 0; j < g.ow; ++j) {
            const math::PoolTaps tw = taps(p, 1, j, g.w, g.ow);
            if (p.kind == PoolKind::Max) {
              T best = -std::numeric_limits<T>::infinity();
              int64_t at = th.start * g.w + tw.start;
              for (int64_t h = th.start; h < th.end; h += th.step)
                for (int64_t w = tw.start; w < tw.end; w += tw.step) {
                  const T v = xp[h * g.w + w];
                  if (math::max_pool_takes(v, best)) best = v, at = h * g.w + w;
                }
              yp[i * g.ow + j] = best;
              idx[pl * g.oh * g.ow + i * g.ow + j] = at;
            } else {
              T s = 0;
              for (int64_t h = th.start; h < th.end; ++h)
                for (int64_t w = tw.start; w < tw.end; ++w) s += xp[h * g.w + w];
              yp[i * g.ow + j] = s / static_cast<T>(avg_divisor(p, g, i, j, th, tw));
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
          const math::PoolTaps th = taps(p, 0, i, g.h, g.oh);
          for (int64_t j = 0; j < g.ow; ++j) {
            const math::PoolTaps tw = taps(p, 1, j, g.w, g.ow);
            const T share = gyp[i * g.ow + j] / static_cast<T>(avg_divisor(p, g, i, j, th, tw));
            for (int64_t h = th.start; h < th.end; ++h)
              for (int64_t w = tw.start; w < tw.end; ++w) gxp[h * g.w + w] += share;
          }
        }
      }
    });
  });
}

}  // namespace ember
