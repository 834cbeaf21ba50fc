// CPU backend: 2-D max / avg pooling (regular and adaptive windows) forward and backward on f32 /
// f64, and on bf16 / f16 through f32 planes, one (sample, channel) plane per task across
// set_num_threads() cores. Window arithmetic in
// pool_norm_math.h, shared with cuda/kernels/pool.cu.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/cpu/cpu_simd.h"
#include "cpp/backend/pool_norm_math.h"
#include "ember/cpu_isa.h"

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

// The 2x2, stride-2 max pool without padding or dilation whose windows all lie inside the plane
// (the MNIST CNN's and most convnets'): the same four taps in the same order as the general loop
// (first tap, then take_if_max), so ties and NaNs resolve identically; on f32 with AVX-512, 16
// windows at a time (the scalar loop's branch-free selects do not vectorise: 4.6 ms for the MNIST
// CNN's [64, 64, 24, 24] at one thread, tools/bench/poolnorm.sh).
bool is_full_2x2_max(const PoolParams& p, const Plane& g) {
  return p.kind == PoolKind::Max && !p.adaptive && p.kernel[0] == 2 && p.kernel[1] == 2 && p.stride[0] == 2 &&
         p.stride[1] == 2 && p.padding[0] == 0 && p.padding[1] == 0 && p.dilation[0] == 1 && p.dilation[1] == 1 &&
         2 * g.oh <= g.h && 2 * g.ow <= g.w;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define EMBER_POOL_AVX512 1
// One tap of 16 windows: takes v (at plane index i) where math::max_pool_takes(v, best) holds,
// v > best (ordered) or v NaN.
__attribute__((target("avx512f"), always_inline)) inline void take16(__m512 v, __m512i i, __m512& best, __m512i& at) {
  const __mmask16 m = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  best = _mm512_mask_blend_ps(m, best, v);
  at = _mm512_mask_blend_epi32(m, at, i);
}

// One output row of the 2x2 pool on f32, 16 windows at a time (the last group masked: the MNIST
// CNN's rows have 12): rows r0 and r1 deinterleaved into the four taps, taken in the general loop's
// order. `base` is r0's index in the plane (plane indices fit int32: checked by the caller).
__attribute__((target("avx512f"))) void max_pool_2x2_row_avx512(const float* r0, const float* r1, float* yr,
                                                                  int64_t* ir, int64_t base, int64_t w, int64_t ow) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i one = _mm512_set1_epi32(1), below = _mm512_set1_epi32(static_cast<int32_t>(w));
  for (int64_t j = 0; j < ow; j += 16) {
    const int64_t n = std::min<int64_t>(16, ow - j);  // windows in this group: 2n inputs per row
    const auto mask = [](int64_t k) { return static_cast<__mmask16>(k >= 16 ? 0xFFFF : (1u << k) - 1u); };
    const __mmask16 lo = mask(2 * n), hi = mask(std::max<int64_t>(0, 2 * n - 16)), out = mask(n);
    const __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + 2 * j), a1 = _mm512_maskz_loadu_ps(hi, r0 + 2 * j + 16);
    const __m512 b0 = _mm512_maskz_loadu_ps(lo, r1 + 2 * j), b1 = _mm512_maskz_loadu_ps(hi, r1 + 2 * j + 16);
    const __m512i i0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(base + 2 * j)), even);
    const __m512i i2 = _mm512_add_epi32(i0, below);
    __m512 best = _mm512_permutex2var_ps(a0, even, a1);
    __m512i at = i0;
    take16(_mm512_permutex2var_ps(a0, odd, a1), _mm512_add_epi32(i0, one), best, at);
    take16(_mm512_permutex2var_ps(b0, even, b1), i2, best, at);
    take16(_mm512_permutex2var_ps(b0, odd, b1), _mm512_add_epi32(i2, one), best, at);
    _mm512_mask_storeu_ps(yr + j, out, best);
    // The zero-merging forms of the widening and the extracts: the plain ones (and the cast) start from an
    // "undefined" register, which GCC 12 reports as maybe-uninitialized.
    const __m512i zero = _mm512_setzero_si512();
    const __m256i at_lo = _mm512_mask_extracti64x4_epi64(_mm256_setzero_si256(), 0xF, at, 0);
    const __m256i at_hi = _mm512_mask_extracti64x4_epi64(_mm256_setzero_si256(), 0xF, at, 1);
    _mm512_mask_storeu_epi64(ir + j, static_cast<__mmask8>(out), _mm512_mask_cvtepi32_epi64(zero, 0xFF, at_lo));
    _mm512_mask_storeu_epi64(ir + j + 8, static_cast<__mmask8>(out >> 8), _mm512_mask_cvtepi32_epi64(zero, 0xFF, at_hi));
  }
}
#endif

template <class T>
void max_pool_2x2_plane(const T* xp, T* yp, int64_t* ip, const Plane& g) {
#if EMBER_POOL_AVX512
  if constexpr (std::is_same_v<T, float>)
    if (cpu::kernel_isa() == CpuKernelIsa::Avx512 && g.h * g.w <= std::numeric_limits<int32_t>::max()) {
      for (int64_t i = 0; i < g.oh; ++i)
        max_pool_2x2_row_avx512(xp + 2 * i * g.w, xp + (2 * i + 1) * g.w, yp + i * g.ow, ip + i * g.ow, 2 * i * g.w,
                                g.w, g.ow);
      return;
    }
#endif
  for (int64_t i = 0; i < g.oh; ++i) {
    const int64_t base = 2 * i * g.w;
    const T* r0 = xp + base;
    const T* r1 = r0 + g.w;
    T* yr = yp + i * g.ow;
    int64_t* ir = ip + i * g.ow;
    for (int64_t j = 0; j < g.ow; ++j) {
      // The general loop starts from -inf at the first tap's index: the first tap then takes
      // unless it is -inf itself, which leaves the same value and index.
      T best = r0[2 * j];
      int64_t at = base + 2 * j;
      take_if_max(r0[2 * j + 1], base + 2 * j + 1, best, at);
      take_if_max(r1[2 * j], base + g.w + 2 * j, best, at);
      take_if_max(r1[2 * j + 1], base + g.w + 2 * j + 1, best, at);
      yr[j] = best;
      ir[j] = at;
    }
  }
}

// Planes [b, e) of the pool on f32/f64: x, y and idx point at plane 0.
template <class T>
void pool_planes(const T* x, T* y, int64_t* idx, const PoolParams& p, const Plane& g, int64_t b, int64_t e) {
  if (is_full_2x2_max(p, g)) {
    for (int64_t pl = b; pl < e; ++pl)
      max_pool_2x2_plane(x + pl * g.h * g.w, y + pl * g.oh * g.ow, idx + pl * g.oh * g.ow, g);
    return;
  }
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
}

// Planes [b, e) of the pool's backward on f32/f64: each call owns whole planes of gx, so
// overlapping windows add without races.
template <class T>
void pool_backward_planes(T* gx, const T* gy, const int64_t* idx, const PoolParams& p, const Plane& g, int64_t b,
                          int64_t e) {
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
}

// bf16 / f16 planes: each plane is widened to f32 (exact), pooled by the f32 code above (the 2x2
// AVX-512 kernel included) and its output narrowed once. Max takes one of its inputs, so its
// output is that input's 16 bits exactly (narrowed by keeping the top half for bf16, by the exact
// conversion for f16); avg rounds its f32 mean once. The backward sums each plane's gradient in f32
// and rounds once (exact for max pools whose windows do not overlap: one contribution per input).
template <class L>
void widen_plane(const L* src, float* dst, int64_t n) {
  cpu::simd_dispatch([&] {
    const L* __restrict s = src;
    float* __restrict d = dst;
    const int64_t count = n;
    for (int64_t k = 0; k < count; ++k) d[k] = static_cast<float>(s[k]);
  });
}

template <class L>
void narrow_plane(const float* src, L* dst, int64_t n, bool exact) {
  if constexpr (std::is_same_v<L, bf16>) {
    if (exact) {  // bf16 values held in f32: their top 16 bits, NaN payloads included
      cpu::simd_dispatch([&] {
        const float* __restrict s = src;
        uint16_t* __restrict d = reinterpret_cast<uint16_t*>(dst);
        const int64_t count = n;
        for (int64_t k = 0; k < count; ++k) d[k] = static_cast<uint16_t>(std::bit_cast<uint32_t>(s[k]) >> 16);
      });
      return;
    }
  }
  if constexpr (std::is_same_v<L, bf16>) {
    cpu::narrow_to_bf16(src, dst, n);
  } else {
    cpu::simd_dispatch([&] {
      const float* __restrict s = src;
      L* __restrict d = dst;
      const int64_t count = n;
      for (int64_t k = 0; k < count; ++k) d[k] = L(s[k]);
    });
  }
}

template <class L>
void pool_planes_lowp(const L* x, L* y, int64_t* idx, const PoolParams& p, const Plane& g, int64_t b, int64_t e) {
  std::vector<float> xf(static_cast<size_t>(g.h * g.w)), yf(static_cast<size_t>(g.oh * g.ow));
  for (int64_t pl = b; pl < e; ++pl) {
    widen_plane(x + pl * g.h * g.w, xf.data(), g.h * g.w);
    pool_planes<float>(xf.data(), yf.data(), idx ? idx + pl * g.oh * g.ow : nullptr, p, g, 0, 1);
    narrow_plane(yf.data(), y + pl * g.oh * g.ow, g.oh * g.ow, p.kind == PoolKind::Max);
  }
}

template <class L>
void pool_backward_planes_lowp(L* gx, const L* gy, const int64_t* idx, const PoolParams& p, const Plane& g, int64_t b,
                               int64_t e) {
  std::vector<float> gxf(static_cast<size_t>(g.h * g.w)), gyf(static_cast<size_t>(g.oh * g.ow));
  for (int64_t pl = b; pl < e; ++pl) {
    widen_plane(gy + pl * g.oh * g.ow, gyf.data(), g.oh * g.ow);
    pool_backward_planes<float>(gxf.data(), gyf.data(), idx ? idx + pl * g.oh * g.ow : nullptr, p, g, 0, 1);
    narrow_plane(gxf.data(), gx + pl * g.h * g.w, g.h * g.w, false);
  }
}

}  // namespace

// f32 / f64 natively; bf16 / f16 through f32 planes (pool_planes_lowp). One (sample, channel)
// plane per task.
void CpuBackend::pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& in, const PoolParams& p) {
  const Plane g = plane_of(in, out);
  int64_t* idx = p.kind == PoolKind::Max ? cpu::ptr<int64_t>(indices) : nullptr;
  const auto run = [&]<class T>(auto&& planes) {
    const T* x = cpu::ptr<T>(in);
    T* y = cpu::ptr<T>(out);
    cpu::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t b, int64_t e) { planes(x, y, idx, p, g, b, e); });
  };
  if (in.dtype() == DType::BF16) return run.template operator()<bf16>(pool_planes_lowp<bf16>);
  if (in.dtype() == DType::F16) return run.template operator()<f16>(pool_planes_lowp<f16>);
  cpu::visit_floating(in.dtype(), "pool2d", [&]<class T>() { run.template operator()<T>(pool_planes<T>); });
}

void CpuBackend::pool2d_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& indices,
                                 const PoolParams& p) {
  const Plane g = plane_of(grad_in, grad_out);
  const int64_t* idx = p.kind == PoolKind::Max ? cpu::ptr<int64_t>(indices) : nullptr;
  const auto run = [&]<class T>(auto&& planes) {
    T* gx = cpu::ptr<T>(grad_in);
    const T* gy = cpu::ptr<T>(grad_out);
    cpu::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t b, int64_t e) { planes(gx, gy, idx, p, g, b, e); });
  };
  if (grad_in.dtype() == DType::BF16) return run.template operator()<bf16>(pool_backward_planes_lowp<bf16>);
  if (grad_in.dtype() == DType::F16) return run.template operator()<f16>(pool_backward_planes_lowp<f16>);
  cpu::visit_floating(grad_in.dtype(), "pool2d_backward",
                      [&]<class T>() { run.template operator()<T>(pool_backward_planes<T>); });
}

}  // namespace ember
