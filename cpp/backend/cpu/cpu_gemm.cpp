// CPU backend: GEMM. f32 through oneDNN's matmul (kernels chosen from CPUID at run time on every
// x86-64 CPU; see cpu_matmul_dnnl.h), f64 (gradient checks, reference runs) through OpenBLAS
// (cblas); the bias/ReLU/bias-gradient epilogues as loops (cpu_epilogue.h).
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

}  // namespace

void CpuBackend::gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) {
  if (out.dtype() == DType::BF16 || out.dtype() == DType::F16) return cpu::gemm_lowp(out, a, b, o);  // mixed precision
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
    const bool bias = ep.bias, relu = ep.relu;
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

}  // namespace ember
