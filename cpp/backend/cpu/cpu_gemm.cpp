// CPU backend: GEMM. f32 through oneDNN's matmul (kernels chosen from CPUID at run time on every
// x86-64 CPU; see cpu_matmul_dnnl.h), f64 (gradient checks, reference runs) through OpenBLAS
// (cblas); the bias/ReLU/bias-gradient epilogues and the ReLU bit mask's as loops (cpu_epilogue.h).
#include <cblas.h>

#include <cstdint>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_epilogue.h"
#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "cpp/backend/cpu/cpu_matmul_dnnl.h"
#include "cpp/backend/gemm_layout.h"

namespace ember {
namespace {

CBLAS_TRANSPOSE cblas_trans(const GemmLayout& l) { return l.trans ? CblasTrans : CblasNoTrans; }

template <class T>
void gemm_call(const GemmLayout& la, const GemmLayout& lb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               const T* B, T beta, T* C) {
  if constexpr (std::is_same_v<T, float>) {
    cpu::MatmulCall m;
    m.M = M, m.N = N, m.K = K, m.ta = la.trans, m.tb = lb.trans, m.lda = la.ld, m.ldb = lb.ld, m.ldc = N;
    m.alpha = alpha, m.beta = beta;
    cpu::dnnl_matmul(m, A, B, C);
    return;
  }
  // cblas takes 32-bit ints: a larger extent or leading dimension would be silently truncated.
  for (const int64_t v : {M, N, K, la.ld, lb.ld})
    EMBER_CHECK(v <= INT32_MAX, "gemm: [", M, ", ", K, "] x [", K, ", ", N, "] (leading dims ", la.ld, ", ", lb.ld,
                ") has an extent above 2^31 - 1, more than the CPU BLAS takes; split the product into smaller ones");
  if constexpr (!std::is_same_v<T, float>)
    cblas_dgemm(CblasRowMajor, cblas_trans(la), cblas_trans(lb), M, N, K, alpha, A, la.ld, B, lb.ld, beta, C, N);
}

// f32 and f64 through oneDNN / OpenBLAS with the bias, ReLU and bias-gradient epilogues.
void gemm_f32_f64(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) {
  const bool batched = out.dim() == 3;
  const int64_t B = batched ? out.size(0) : 1;
  const int64_t M = out.size(-2 + out.dim()), N = out.size(out.dim() - 1);
  const int64_t K = a.size(a.dim() - 1);
  const int64_t ad = a.dim();
  cpu::visit_floating(out.dtype(), "gemm", [&]<class T>() {
    const GemmLayout la = gemm_layout_checked(a, "cpu"), lb = gemm_layout_checked(b, "cpu");
    const T* A = cpu::ptr<T>(a);
    const T* Bm = cpu::ptr<T>(b);
    T* C = cpu::ptr<T>(out);
    if (K == 0) {
      // BLAS leaves C untouched for K == 0 only when beta == 1; make the empty sum explicit.
      for (int64_t i = 0; i < B * M * N; ++i) C[i] = o.beta == 0.0 ? T(0) : static_cast<T>(o.beta) * C[i];
    } else if (M > 0 && N > 0) {
      for (int64_t bi = 0; bi < B; ++bi)
        gemm_call<T>(la, lb, M, N, K, static_cast<T>(o.alpha), A + bi * la.batch_stride, Bm + bi * lb.batch_stride,
                     static_cast<T>(o.beta), C + bi * M * N);
    }
    const EpilogueParts ep = epilogue_parts(o.epilogue, "cpu");
    const bool bias = ep.bias, relu = ep.relu;  // the ReLU mask's parts: CpuBackend::gemm
    if (bias || (relu && !ep.nan_to_zero))
      cpu::bias_relu_rows<T>(C, B * M, N, bias ? cpu::ptr<T>(o.bias) : nullptr, bias ? o.bias.stride(0) : 0,
                             relu && !ep.nan_to_zero);
    if (relu && ep.nan_to_zero)  // fused_linear_relu's cuBLASLt semantics: NaN becomes 0
      for (int64_t i = 0; i < B * M * N; ++i) C[i] = C[i] > T(0) ? C[i] : T(0);
    if (ep.bias_grad)
      cpu::bias_grad_rows<T>(A, M, K, a.stride(ad - 2), a.stride(ad - 1), cpu::ptr<T>(o.bias_grad),
                             o.bias_grad.stride(0));
  });
}

}  // namespace

void CpuBackend::gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) {
  const EpilogueParts ep = epilogue_parts(o.epilogue, "cpu");
  if (ep.relu_mask_out || ep.relu_mask_in) check_relu_mask_args(out, o, "cpu");
  if (out.dtype() == DType::BF16 || out.dtype() == DType::F16) cpu::gemm_lowp(out, a, b, o);  // mixed precision
  else gemm_f32_f64(out, a, b, o);
  // The ReLU mask's parts run after the GEMM and its other epilogue parts, for every dtype.
  if (ep.relu_mask_out || ep.relu_mask_in || ep.bias_grad_out) {
    visit_dtype(out.dtype(), "gemm", [&]<class T>() {
      if constexpr (std::is_floating_point_v<T> || is_lowp_v<T>) {
        const int64_t rows = out.size(0), n = out.size(1), ld = o.relu_mask.size(1);
        T* c = cpu::ptr<T>(out);
        if (ep.relu_mask_out) cpu::relu_mask_write<T>(c, rows, n, cpu::ptr<uint8_t>(o.relu_mask), ld);
        if (ep.relu_mask_in) cpu::relu_mask_apply<T>(c, rows, n, cpu::ptr<const uint8_t>(o.relu_mask), ld);
        // Column sums of out: out read as its transpose [n, rows] (row stride 1), bias_grad_rows'
        // in-order, vectorised case; each sum in double over i = 0, 1, ... as BiasGradA's.
        if (ep.bias_grad_out)
          cpu::bias_grad_rows<T>(c, n, rows, 1, n, cpu::ptr<T>(o.bias_grad), o.bias_grad.stride(0));
      }
    });
  }
}

}  // namespace ember
