// CPU backend: the conv primitives. f32 goes to oneDNN (cpu_conv_dnnl.cpp), which won the
// measurement in tools/bench/conv_layers.sh (bias and bias gradient fused in its passes); f64
// (gradient checks) and the cases oneDNN declines run im2col + OpenBLAS GEMM here, one image at a
// time (its column buffer stays in cache), the GEMM threaded by OpenBLAS. im2col / col2im stay
// single-threaded on purpose: OpenMP workers spinning between these loops took the cores from
// OpenBLAS's own threads (20x slower at 2 threads in conv_layers.sh), and they are a small part.
#include "cpp/backend/cpu/cpu_conv.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "cpp/backend/lowp_math.h"

namespace ember {
namespace cpu {

ConvGeometry conv_geometry(const Tensor& x_like, const Tensor& w, const Tensor& y_like, const ConvParams& p) {
  return {x_like.size(0), x_like.size(1), x_like.size(2), x_like.size(3), w.size(0), w.size(2), w.size(3),
          y_like.size(2), y_like.size(3), p};
}

bool f32_uses_onednn() {
  static const bool onednn = [] {
    const char* e = std::getenv("EMBER_CPU_CONV");
    return !(e && std::strcmp(e, "im2col") == 0);
  }();
  return onednn;
}

}  // namespace cpu

namespace {

using cpu::ConvGeometry;

// ceil(a / b) for b > 0 and any sign of a.
int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The output columns [lo, hi) whose input column ow * stride + off lies inside [0, extent).
std::pair<int64_t, int64_t> valid_range(int64_t off, int64_t stride, int64_t extent, int64_t out) {
  const int64_t lo = std::clamp<int64_t>(ceil_div(-off, stride), 0, out);
  const int64_t hi = std::clamp<int64_t>(ceil_div(extent - off, stride), lo, out);
  return {lo, hi};
}

struct Dims {
  int64_t cg_in, cg_out, kk, k, hw, hw_out;  // per group: channels in/out, kh*kw, GEMM K, plane sizes
};

Dims dims_of(const ConvGeometry& g) {
  const int64_t cg_in = g.c_in / g.p.groups, kk = g.kh * g.kw;
  return {cg_in, g.c_out / g.p.groups, kk, cg_in * kk, g.h * g.w, g.h_out * g.w_out};
}

// A 1x1 convolution with unit stride and no padding reads the input itself as its column matrix.
bool is_pointwise(const ConvGeometry& g) {
  const ConvParams& p = g.p;
  return g.kh == 1 && g.kw == 1 && p.stride[0] == 1 && p.stride[1] == 1 && p.pad_begin[0] == 0 &&
         p.pad_begin[1] == 0 && g.h_out == g.h && g.w_out == g.w;
}

// Row r = (c * kh + i) * kw + j of col [cg * kh * kw, h_out * w_out] holds input channel c at the
// kernel tap (i, j) for every output position (zero where the tap falls into the padding).
template <class T>
void im2col(const ConvGeometry& g, int64_t cg, const T* x, T* col) {
  const ConvParams& p = g.p;
  const int64_t kk = g.kh * g.kw, hw_out = g.h_out * g.w_out;
  for (int64_t r = 0; r < cg * kk; ++r) {
    const int64_t c = r / kk, i = (r / g.kw) % g.kh, j = r % g.kw;
    const T* xc = x + c * g.h * g.w;
    T* out = col + r * hw_out;
    const int64_t off = j * p.dilation[1] - p.pad_begin[1];
    const auto [lo, hi] = valid_range(off, p.stride[1], g.w, g.w_out);
    for (int64_t oh = 0; oh < g.h_out; ++oh) {
      const int64_t ih = oh * p.stride[0] - p.pad_begin[0] + i * p.dilation[0];
      T* o = out + oh * g.w_out;
      if (ih < 0 || ih >= g.h) {
        std::fill(o, o + g.w_out, T(0));
        continue;
      }
      const T* xr = xc + ih * g.w + off;
      std::fill(o, o + lo, T(0));
      if (p.stride[1] == 1) std::copy(xr + lo, xr + hi, o + lo);
      else
        for (int64_t ow = lo; ow < hi; ++ow) o[ow] = xr[ow * p.stride[1]];
      std::fill(o + hi, o + g.w_out, T(0));
    }
  }
}

// dx [cg, h, w] += the columns of dcol scattered back (im2col's adjoint).
template <class T>
void col2im(const ConvGeometry& g, int64_t cg, const T* dcol, T* dx) {
  const ConvParams& p = g.p;
  const int64_t hw_out = g.h_out * g.w_out;
  for (int64_t c = 0; c < cg; ++c) {
    T* xc = dx + c * g.h * g.w;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* in = dcol + ((c * g.kh + i) * g.kw + j) * hw_out;
        const int64_t off = j * p.dilation[1] - p.pad_begin[1];
        const auto [lo, hi] = valid_range(off, p.stride[1], g.w, g.w_out);
        for (int64_t oh = 0; oh < g.h_out; ++oh) {
          const int64_t ih = oh * p.stride[0] - p.pad_begin[0] + i * p.dilation[0];
          if (ih < 0 || ih >= g.h) continue;
          T* xr = xc + ih * g.w + off;
          const T* o = in + oh * g.w_out;
          for (int64_t ow = lo; ow < hi; ++ow) xr[ow * p.stride[1]] += o[ow];
        }
      }
  }
}

// Row-major C [M, N] = alpha op(A) op(B) + beta C through cblas (32-bit sizes, checked).
template <class T>
void gemm_rm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
             T beta, T* C, int64_t ldc) {
  for (const int64_t v : {M, N, K, lda, ldb, ldc})
    EMBER_CHECK(v <= INT32_MAX, "conv2d (cpu): a GEMM extent of ", v,
                " is above 2^31 - 1, more than the CPU BLAS takes; use a smaller batch or image");
  const auto a = ta ? CblasTrans : CblasNoTrans, b = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, a, b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  else
    cblas_dgemm(CblasRowMajor, a, b, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
}

template <class T>
void im2col_forward(const ConvGeometry& g, T* y, const T* x, const T* w, const T* bias) {
  const Dims d = dims_of(g);
  const int64_t G = g.p.groups;
  const bool direct = is_pointwise(g);
  std::vector<T> col(direct ? 0 : static_cast<size_t>(d.k * d.hw_out));
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t gi = 0; gi < G; ++gi) {
      const T* xg = x + (n * g.c_in + gi * d.cg_in) * d.hw;
      const T* cm = xg;
      if (!direct) {
        im2col(g, d.cg_in, xg, col.data());
        cm = col.data();
      }
      gemm_rm<T>(false, false, d.cg_out, d.hw_out, d.k, w + gi * d.cg_out * d.k, d.k, cm, d.hw_out, T(0),
                 y + (n * g.c_out + gi * d.cg_out) * d.hw_out, d.hw_out);
    }
  if (!bias) return;
  for (int64_t r = 0; r < g.n * g.c_out; ++r) {
    const T b = bias[r % g.c_out];
    T* row = y + r * d.hw_out;
    for (int64_t i = 0; i < d.hw_out; ++i) row[i] += b;
  }
}

template <class T>
void im2col_backward_data(const ConvGeometry& g, T* dx, const T* dy, const T* w) {
  const Dims d = dims_of(g);
  const int64_t G = g.p.groups;
  const bool direct = is_pointwise(g);
  std::vector<T> col(direct ? 0 : static_cast<size_t>(d.k * d.hw_out));
  if (!direct) std::fill(dx, dx + g.n * g.c_in * d.hw, T(0));
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t gi = 0; gi < G; ++gi) {
      T* dxg = dx + (n * g.c_in + gi * d.cg_in) * d.hw;
      const T* dyg = dy + (n * g.c_out + gi * d.cg_out) * d.hw_out;
      // dcol [K, hw_out] = W_gᵀ [K, cg_out] dY_g [cg_out, hw_out]
      T* dcol = direct ? dxg : col.data();
      gemm_rm<T>(true, false, d.k, d.hw_out, d.cg_out, w + gi * d.cg_out * d.k, d.k, dyg, d.hw_out, T(0), dcol,
                 d.hw_out);
      if (!direct) col2im(g, d.cg_in, col.data(), dxg);
    }
}

template <class T>
void im2col_backward_weight(const ConvGeometry& g, T* dw, const T* dy, const T* x) {
  const Dims d = dims_of(g);
  const int64_t G = g.p.groups;
  const bool direct = is_pointwise(g);
  std::vector<T> col(direct ? 0 : static_cast<size_t>(d.k * d.hw_out));
  if (g.n == 0) std::fill(dw, dw + g.c_out * d.k, T(0));
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t gi = 0; gi < G; ++gi) {
      const T* xg = x + (n * g.c_in + gi * d.cg_in) * d.hw;
      const T* cm = xg;
      if (!direct) {
        im2col(g, d.cg_in, xg, col.data());
        cm = col.data();
      }
      // dW_g [cg_out, K] (+)= dY_g [cg_out, hw_out] colᵀ [hw_out, K]
      gemm_rm<T>(false, true, d.cg_out, d.k, d.hw_out, dy + (n * g.c_out + gi * d.cg_out) * d.hw_out, d.hw_out, cm,
                 d.hw_out, n == 0 ? T(0) : T(1), dw + gi * d.cg_out * d.k, d.k);
    }
}

// db[co] = sum of dy[n, co, :, :] over n (accumulated in double).
template <class T>
void bias_grad(const ConvGeometry& g, T* db, const T* dy) {
  const int64_t hw_out = g.h_out * g.w_out;
  for (int64_t co = 0; co < g.c_out; ++co) {
    double acc = 0.0;
    for (int64_t n = 0; n < g.n; ++n) {
      const T* row = dy + (n * g.c_out + co) * hw_out;
      for (int64_t i = 0; i < hw_out; ++i) acc += static_cast<double>(row[i]);
    }
    db[co] = static_cast<T>(acc);
  }
}

template <class T>
T* bias_ptr(const Tensor& bias) {
  return bias.defined() ? cpu::ptr<T>(bias) : nullptr;
}

}  // namespace

// ---- convolution (conv primitives block) ----

// bf16/f16 (autocast's convolutions): oneDNN's 16-bit kernels (AVX512_BF16 / AMX; AVX512_FP16 for
// f16 where oneDNN has them) read 16-bit operands, accumulate in f32 and round each result once.
// Where oneDNN has none on this CPU (f16 on every CPU without AVX512_FP16, bf16 on AVX2-only CPUs),
// where its bf16 kernels are slower than its f32 ones here (cpu::bf16_kernels(), timed once: an Intel
// Xeon without AMX runs them at half the f32 rate) or EMBER_CPU_CONV=im2col asks for im2col, the
// operands are widened to f32, the f32 convolution runs, and the result is rounded once: the same
// arithmetic (a 16-bit product is exact in f32; only the order of the f32 sums differs), at f32 speed.
namespace {

bool is_lowp(DType dt) { return dt == DType::BF16 || dt == DType::F16; }

// Whether a 16-bit convolution may try oneDNN's 16-bit kernels (which still decline a case they lack).
bool lowp_on_onednn(DType dt) { return cpu::f32_uses_onednn() && (dt != DType::BF16 || cpu::bf16_runs_native()); }

Tensor widened(const Tensor& t) {
  if (!t.defined()) return t;
  Tensor w = make_empty(t.shape(), DType::F32, t.device());
  cpu_backend().copy(w, t);
  return w;
}

Tensor f32_like(const Tensor& t) { return t.defined() ? make_empty(t.shape(), DType::F32, t.device()) : t; }

const void* opt_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* opt_mut_ptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

}  // namespace

void CpuBackend::conv2d_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                                const ConvParams& p) {
  if (y.numel() == 0) return;
  const ConvGeometry g = cpu::conv_geometry(x, w, y, p);
  if (is_lowp(y.dtype())) {
    if (lowp_on_onednn(y.dtype()) &&
        cpu::dnnl_conv_forward(g, y.dtype(), y.data_ptr(), x.data_ptr(), w.data_ptr(), opt_ptr(bias)))
      return;
    const Tensor y32 = f32_like(y);
    conv2d_forward(y32, widened(x), widened(w), widened(bias), p);
    copy(y, y32);
    return;
  }
  cpu::visit_floating(y.dtype(), "conv2d_forward", [&]<class T>() {
    if constexpr (std::is_same_v<T, float>) {
      if (cpu::f32_uses_onednn() &&
          cpu::dnnl_conv_forward(g, DType::F32, y.data_ptr(), x.data_ptr(), w.data_ptr(), opt_ptr(bias)))
        return;
    }
    im2col_forward<T>(g, cpu::ptr<T>(y), cpu::ptr<T>(x), cpu::ptr<T>(w), bias_ptr<T>(bias));
  });
}

void CpuBackend::conv2d_backward_data(const Tensor& dx, const Tensor& dy, const Tensor& w, const ConvParams& p) {
  if (dx.numel() == 0) return;
  const ConvGeometry g = cpu::conv_geometry(dx, w, dy, p);
  if (is_lowp(dx.dtype())) {
    if (lowp_on_onednn(dx.dtype()) &&
        cpu::dnnl_conv_backward_data(g, dx.dtype(), dx.data_ptr(), dy.data_ptr(), w.data_ptr()))
      return;
    const Tensor dx32 = f32_like(dx);
    conv2d_backward_data(dx32, widened(dy), widened(w), p);
    copy(dx, dx32);
    return;
  }
  cpu::visit_floating(dx.dtype(), "conv2d_backward_data", [&]<class T>() {
    if constexpr (std::is_same_v<T, float>) {
      if (cpu::f32_uses_onednn() && cpu::dnnl_conv_backward_data(g, DType::F32, dx.data_ptr(), dy.data_ptr(), w.data_ptr()))
        return;
    }
    im2col_backward_data<T>(g, cpu::ptr<T>(dx), cpu::ptr<T>(dy), cpu::ptr<T>(w));
  });
}

void CpuBackend::conv2d_backward_weight(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                                        const ConvParams& p) {
  if (dw.numel() == 0) return;
  const ConvGeometry g = cpu::conv_geometry(x, dw, dy, p);
  if (is_lowp(dw.dtype())) {
    if (lowp_on_onednn(dw.dtype()) && g.n > 0 &&
        cpu::dnnl_conv_backward_weight(g, dw.dtype(), dw.data_ptr(), opt_mut_ptr(db), dy.data_ptr(), x.data_ptr()))
      return;
    const Tensor dw32 = f32_like(dw), db32 = f32_like(db);
    conv2d_backward_weight(dw32, db32, widened(dy), widened(x), p);
    copy(dw, dw32);
    if (db.defined()) copy(db, db32);
    return;
  }
  cpu::visit_floating(dw.dtype(), "conv2d_backward_weight", [&]<class T>() {
    if constexpr (std::is_same_v<T, float>) {
      if (cpu::f32_uses_onednn() && g.n > 0 &&
          cpu::dnnl_conv_backward_weight(g, DType::F32, dw.data_ptr(), opt_mut_ptr(db), dy.data_ptr(), x.data_ptr()))
        return;
    }
    im2col_backward_weight<T>(g, cpu::ptr<T>(dw), cpu::ptr<T>(dy), cpu::ptr<T>(x));
    if (db.defined()) bias_grad<T>(g, cpu::ptr<T>(db), cpu::ptr<T>(dy));
  });
}

void CpuBackend::conv2d_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                                 const Tensor& x, const Tensor& w, const ConvParams& p) {
  const ConvGeometry g = cpu::conv_geometry(x, w, dy, p);
  // oneDNN for both when it runs this dtype (dy converted once); otherwise the two calls.
  const bool onednn = is_lowp(dx.dtype()) ? lowp_on_onednn(dx.dtype()) : dx.dtype() == DType::F32 && cpu::f32_uses_onednn();
  if (onednn && dx.numel() > 0 && dw.numel() > 0 && g.n > 0 &&
      cpu::dnnl_conv_backward(g, dx.dtype(), dx.data_ptr(), dw.data_ptr(), opt_mut_ptr(db), dy.data_ptr(), x.data_ptr(),
                              w.data_ptr()))
    return;
  conv2d_backward_data(dx, dy, w, p);
  conv2d_backward_weight(dw, db, dy, x, p);
}

// ---- end of the conv primitives block ----

}  // namespace ember
