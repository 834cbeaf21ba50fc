// CPU backend: GEMM through OpenBLAS (cblas), with the bias/ReLU/bias-gradient epilogues as loops.
#include <cblas.h>

#include <cstdint>

#include "cpp/backend/cpu/cpu_backend.h"

namespace ember {
namespace {

struct MatLayout {
  CBLAS_TRANSPOSE trans;
  int64_t ld;
};

// A matrix [rows, cols] with strides (rs, cs): row-major when cs == 1, column-major (a transposed
// view) when rs == 1. Degenerate extents admit either.
MatLayout layout_of(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if (cs == 1 || cols == 1) {
    if (rows == 1 || rs >= cols) return {CblasNoTrans, std::max<int64_t>(rows == 1 ? cols : rs, 1)};
  }
  if (rs == 1 || rows == 1) {
    if (cols == 1 || cs >= rows) return {CblasTrans, std::max<int64_t>(cols == 1 ? rows : cs, 1)};
  }
  throw Error(detail::str_cat("gemm: operand of shape [", rows, ", ", cols, "] has strides [", rs, ", ", cs,
                              "] with no unit stride; make it contiguous first"));
}

template <class T>
void gemm_call(MatLayout la, MatLayout lb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, const T* B, T beta,
               T* C) {
  // cblas takes 32-bit ints: a larger extent or leading dimension would be silently truncated.
  for (const int64_t v : {M, N, K, la.ld, lb.ld})
    EMBER_CHECK(v <= INT32_MAX, "gemm: [", M, ", ", K, "] x [", K, ", ", N, "] (leading dims ", la.ld, ", ", lb.ld,
                ") has an extent above 2^31 - 1, more than the CPU BLAS takes; split the product into smaller ones");
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, la.trans, lb.trans, M, N, K, alpha, A, la.ld, B, lb.ld, beta, C, N);
  else
    cblas_dgemm(CblasRowMajor, la.trans, lb.trans, M, N, K, alpha, A, la.ld, B, lb.ld, beta, C, N);
}

}  // namespace

void CpuBackend::gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) {
  const bool batched = out.dim() == 3;
  const int64_t B = batched ? out.size(0) : 1;
  const int64_t M = out.size(-2 + out.dim()), N = out.size(out.dim() - 1);
  const int64_t K = a.size(a.dim() - 1);
  const int64_t ad = a.dim(), bd = b.dim();
  const int64_t a_bs = ad == 3 ? a.stride(0) : 0, b_bs = bd == 3 ? b.stride(0) : 0;
  cpu::visit_floating(out.dtype(), "gemm", [&]<class T>() {
    const MatLayout la = layout_of(M, K, a.stride(ad - 2), a.stride(ad - 1));
    const MatLayout lb = layout_of(K, N, b.stride(bd - 2), b.stride(bd - 1));
    const T* A = cpu::ptr<T>(a);
    const T* Bm = cpu::ptr<T>(b);
    T* C = cpu::ptr<T>(out);
    if (K == 0) {
      // BLAS leaves C untouched for K == 0 only when beta == 1; make the empty sum explicit.
      for (int64_t i = 0; i < B * M * N; ++i) C[i] = o.beta == 0.0 ? T(0) : static_cast<T>(o.beta) * C[i];
    } else if (M > 0 && N > 0) {
      for (int64_t bi = 0; bi < B; ++bi)
        gemm_call<T>(la, lb, M, N, K, static_cast<T>(o.alpha), A + bi * a_bs, Bm + bi * b_bs, static_cast<T>(o.beta),
                     C + bi * M * N);
    }
    const EpilogueParts ep = epilogue_parts(o.epilogue, "cpu");
    const bool bias = ep.bias, relu = ep.relu;
    if (bias || relu) {
      const T* bv = bias ? cpu::ptr<T>(o.bias) : nullptr;
      const int64_t bstride = bias ? o.bias.stride(0) : 0;
      for (int64_t i = 0; i < B * M; ++i) {
        T* row = C + i * N;
        if (bias)
          for (int64_t j = 0; j < N; ++j) row[j] += bv[j * bstride];
        if (relu)
          for (int64_t j = 0; j < N; ++j) row[j] = row[j] < T(0) ? T(0) : row[j];
      }
    }
    if (ep.bias_grad) {
      T* g = cpu::ptr<T>(o.bias_grad);
      const int64_t rs = a.stride(ad - 2), cs = a.stride(ad - 1);
      for (int64_t i = 0; i < M; ++i) {
        double acc = 0.0;
        for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(A[i * rs + k * cs]);
        g[i * o.bias_grad.stride(0)] = static_cast<T>(acc);
      }
    }
  });
}

}  // namespace ember
