// CPU backend: the normalisation primitive (batch, layer, group norm) forward and backward, one
// statistics group (or, per_channel, one channel) per task across set_num_threads() cores. Sums
// accumulate in double; the formula is pool_norm_math.h's, shared with cuda/kernels/norm.cu.
#include <utility>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/pool_norm_math.h"

namespace ember {
namespace {

template <class T>
const T* maybe(const Tensor& t) {
  return t.defined() ? cpu::ptr<T>(t) : nullptr;
}

// Sums over [0, n) in double with eight independent accumulators: one accumulator makes every add
// wait for the previous one (a strict FP order the compiler may not change), eight let the adds
// pipeline and vectorise. The order is fixed by n alone, so results do not depend on threads.
constexpr int kLanes = 8;

template <class F>
double sum_of(int64_t n, F f) {
  double a[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int u = 0; u < kLanes; ++u) a[u] += f(k + u);
  double tail = 0;
  for (; k < n; ++k) tail += f(k);
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + tail;
}

template <class F, class G>
std::pair<double, double> sums_of(int64_t n, F f, G g) {
  double a[kLanes] = {}, b[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes)
    for (int u = 0; u < kLanes; ++u) a[u] += f(k + u), b[u] += g(k + u);
  double ta = 0, tb = 0;
  for (; k < n; ++k) ta += f(k), tb += g(k);
  return {((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) + ta,
          ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7])) + tb};
}

}  // namespace

void CpuBackend::norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                              const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                              const Tensor& running_var, const NormParams& p) {
  cpu::visit_floating(x.dtype(), "norm", [&]<class T>() {
    const T* xd = cpu::ptr<T>(x);
    T* y = cpu::ptr<T>(out);
    T* mu = cpu::ptr<T>(mean);
    T* rs = cpu::ptr<T>(rstd);
    const T* w = maybe<T>(weight);
    const T* bi = maybe<T>(bias);
    const int64_t total = p.n * p.c * p.s;
    if (!p.per_channel) {
      const int64_t cg = p.c / p.groups, m = cg * p.s;
      cpu::parallel_for(p.n * p.groups, total, [&](int64_t b, int64_t e) {
        for (int64_t grp = b; grp < e; ++grp) {
          const T* xg = xd + grp * m;
          const double avg = sum_of(m, [&](int64_t k) { return static_cast<double>(xg[k]); }) / static_cast<double>(m);
          const double sq = sum_of(m, [&](int64_t k) {
            const double d = xg[k] - avg;
            return d * d;
          });
          const T mt = static_cast<T>(avg), r = math::rstd_of(static_cast<T>(sq / static_cast<double>(m)), p.eps);
          mu[grp] = mt;
          rs[grp] = r;
          const int64_t ch0 = (grp % p.groups) * cg;
          for (int64_t ch = 0; ch < cg; ++ch) {
            const T scale = r * (w ? w[ch0 + ch] : T(1)), shift = bi ? bi[ch0 + ch] : T(0);
            const T* xc = xg + ch * p.s;
            T* yc = y + grp * m + ch * p.s;
            for (int64_t k = 0; k < p.s; ++k) yc[k] = (xc[k] - mt) * scale + shift;
          }
        }
      });
      return;
    }
    T* rm = running_mean.defined() ? cpu::ptr<T>(running_mean) : nullptr;
    T* rv = running_var.defined() ? cpu::ptr<T>(running_var) : nullptr;
    const int64_t m = p.n * p.s;
    cpu::parallel_for(p.c, total, [&](int64_t b, int64_t e) {
      for (int64_t ch = b; ch < e; ++ch) {
        double sum = 0;
        for (int64_t i = 0; i < p.n; ++i) {
          const T* xc = xd + (i * p.c + ch) * p.s;
          sum += sum_of(p.s, [&](int64_t k) { return static_cast<double>(xc[k]); });
        }
        const double avg = sum / static_cast<double>(m);
        double sq = 0;
        for (int64_t i = 0; i < p.n; ++i) {
          const T* xc = xd + (i * p.c + ch) * p.s;
          sq += sum_of(p.s, [&](int64_t k) {
            const double d = xc[k] - avg;
            return d * d;
          });
        }
        const T var = static_cast<T>(sq / static_cast<double>(m));
        const T mt = static_cast<T>(avg), r = math::rstd_of(var, p.eps);
        mu[ch] = mt;
        rs[ch] = r;
        if (rm) rm[ch] = math::running_update(rm[ch], mt, p.momentum);
        if (rv) rv[ch] = math::running_update(rv[ch], math::unbiased_var(static_cast<T>(sq / static_cast<double>(m)), m), p.momentum);
        const T scale = r * (w ? w[ch] : T(1)), shift = bi ? bi[ch] : T(0);
        for (int64_t i = 0; i < p.n; ++i) {
          const T* xc = xd + (i * p.c + ch) * p.s;
          T* yc = y + (i * p.c + ch) * p.s;
          for (int64_t k = 0; k < p.s; ++k) yc[k] = (xc[k] - mt) * scale + shift;
        }
      }
    });
  });
}

void CpuBackend::norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias,
                               const Tensor& grad_out, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               const Tensor& weight, const NormParams& p) {
  cpu::visit_floating(x.dtype(), "norm_backward", [&]<class T>() {
    const T* xd = cpu::ptr<T>(x);
    const T* g = cpu::ptr<T>(grad_out);
    const T* mu = cpu::ptr<T>(mean);
    const T* rs = cpu::ptr<T>(rstd);
    const T* w = maybe<T>(weight);
    T* gx = grad_x.defined() ? cpu::ptr<T>(grad_x) : nullptr;
    T* gw = grad_weight.defined() ? cpu::ptr<T>(grad_weight) : nullptr;
    T* gb = grad_bias.defined() ? cpu::ptr<T>(grad_bias) : nullptr;
    const int64_t total = p.n * p.c * p.s;
    if (p.per_channel) {
      const int64_t m = p.n * p.s;
      cpu::parallel_for(p.c, 2 * total, [&](int64_t b, int64_t e) {
        for (int64_t ch = b; ch < e; ++ch) {
          const T mt = mu[ch], r = rs[ch], wc = w ? w[ch] : T(1);
          double sg = 0, sgx = 0;  // sum g, sum g * (x - mean)
          for (int64_t i = 0; i < p.n; ++i) {
            const T* gc = g + (i * p.c + ch) * p.s;
            const T* xc = xd + (i * p.c + ch) * p.s;
            const auto [a, b] = sums_of(
                p.s, [&](int64_t k) { return static_cast<double>(gc[k]); },
                [&](int64_t k) { return static_cast<double>(gc[k]) * (xc[k] - mt); });
            sg += a, sgx += b;
          }
          if (gw) gw[ch] = static_cast<T>(sgx * r);
          if (gb) gb[ch] = static_cast<T>(sg);
          if (!gx) continue;
          const T mean_gh = static_cast<T>(wc * sg / static_cast<double>(m));
          const T mean_gh_xh = static_cast<T>(wc * sgx * r / static_cast<double>(m));
          for (int64_t i = 0; i < p.n; ++i) {
            const int64_t at = (i * p.c + ch) * p.s;
            for (int64_t k = 0; k < p.s; ++k)
              gx[at + k] = math::norm_grad_input(g[at + k] * wc, (xd[at + k] - mt) * r, r, mean_gh, mean_gh_xh);
          }
        }
      });
      return;
    }
    const int64_t cg = p.c / p.groups, m = cg * p.s;
    if (gx) {
      cpu::parallel_for(p.n * p.groups, 2 * total, [&](int64_t b, int64_t e) {
        for (int64_t grp = b; grp < e; ++grp) {
          const T mt = mu[grp], r = rs[grp];
          const int64_t ch0 = (grp % p.groups) * cg, base = grp * m;
          double sgh = 0, sghx = 0;  // sum gh, sum gh * (x - mean)
          for (int64_t ch = 0; ch < cg; ++ch) {
            const double wc = w ? w[ch0 + ch] : T(1);
            const T* gc = g + base + ch * p.s;
            const T* xc = xd + base + ch * p.s;
            const auto [a, b] = sums_of(
                p.s, [&](int64_t k) { return static_cast<double>(gc[k]); },
                [&](int64_t k) { return static_cast<double>(gc[k]) * (xc[k] - mt); });
            sgh += a * wc, sghx += b * wc;
          }
          const T mean_gh = static_cast<T>(sgh / static_cast<double>(m));
          const T mean_gh_xh = static_cast<T>(sghx * r / static_cast<double>(m));
          for (int64_t ch = 0; ch < cg; ++ch) {
            const T wc = w ? w[ch0 + ch] : T(1);
            for (int64_t k = 0; k < p.s; ++k) {
              const int64_t at = base + ch * p.s + k;
              gx[at] = math::norm_grad_input(g[at] * wc, (xd[at] - mt) * r, r, mean_gh, mean_gh_xh);
            }
          }
        }
      });
    }
    if (!gw && !gb) return;
    if (p.s == 1) {
      // Layer norm's layout: each row holds every channel once, so a task takes a range of channels
      // and walks the rows, reading each row's slice contiguously.
      cpu::parallel_for(p.c, total, [&](int64_t b, int64_t e) {
        std::vector<double> sg(static_cast<size_t>(e - b), 0.0), sgxh(static_cast<size_t>(e - b), 0.0);
        for (int64_t i = 0; i < p.n; ++i) {
          const T* gr = g + i * p.c;
          const T* xr = xd + i * p.c;
          for (int64_t ch = b; ch < e; ++ch) {
            const int64_t grp = i * p.groups + ch / cg;
            sg[ch - b] += gr[ch];
            sgxh[ch - b] += static_cast<double>(gr[ch]) * ((xr[ch] - mu[grp]) * rs[grp]);
          }
        }
        for (int64_t ch = b; ch < e; ++ch) {
          if (gw) gw[ch] = static_cast<T>(sgxh[ch - b]);
          if (gb) gb[ch] = static_cast<T>(sg[ch - b]);
        }
      });
      return;
    }
    cpu::parallel_for(p.c, total, [&](int64_t b, int64_t e) {
      for (int64_t ch = b; ch < e; ++ch) {
        double sg = 0, sgxh = 0;
        for (int64_t i = 0; i < p.n; ++i) {
          const int64_t grp = i * p.groups + ch / cg, at = (i * p.c + ch) * p.s;
          const T mt = mu[grp], r = rs[grp];
          const auto [a, b] = sums_of(
              p.s, [&](int64_t k) { return static_cast<double>(g[at + k]); },
              [&](int64_t k) { return static_cast<double>(g[at + k]) * ((xd[at + k] - mt) * r); });
          sg += a, sgxh += b;
        }
        if (gw) gw[ch] = static_cast<T>(sgxh);
        if (gb) gb[ch] = static_cast<T>(sg);
      }
    });
  });
}

}  // namespace ember
