// GEMM for the CUDA backend: cuBLASLt for single products (bias / ReLU / bias-gradient epilogues
// fused when cuBLASLt has an algorithm for the case, and the ReLU bit mask of fused_linear_relu_linear:
// RELU_AUX_BIAS forward, DRELU_BGRAD backward), cuBLAS strided-batched for batches, and the
// epilogues as separate kernels whenever they were not fused, so every case of backend.h works.
//
// Row-major vs column-major: ember's out [M, N] (row-major, contiguous) is, read column-major,
// the N x M matrix out^T = op(b)^T op(a)^T. So cuBLAS's "A" is ember's b, its "B" is ember's a,
// its m = N and n = M. The bias over out's columns (length N) is then a bias over the rows of
// cuBLAS's D (CUBLASLT_EPILOGUE_BIAS), and the bias gradient sum_k op(a)[i, k] (length M) is a
// reduction over k of cuBLAS's B, whose length is D's column count (CUBLASLT_EPILOGUE_BGRADB).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <array>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "cpp/backend/gemm_layout.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/cuda_backend.h"
#include "cuda/kernels/kernels.h"
#include "cuda/lt_preference.h"
#include "cuda/nvtx.h"
#include "cuda/runtime.h"
#include "ember/cuda.h"

namespace ember {
namespace {

using cuda::GemmContext;
using cuda::kGemmWorkspaceBytes;

// A matrix as cuBLAS sees it: stored column-major as rows x cols with leading dimension ld, and
// transposed by cuBLAS (op) or not.
struct CuOperand {
  cublasOperation_t op;
  int64_t rows, cols, ld;
  const void* ptr;
};

// cuBLAS's A: ember's b [K, N]. Row-major b is column-major N x K (no transpose); a transposed
// view of b is column-major K x N, which cuBLAS transposes.
CuOperand cublas_a(const GemmLayout& lb, int64_t K, int64_t N, const void* p) {
  return lb.trans ? CuOperand{CUBLAS_OP_T, K, N, lb.ld, p} : CuOperand{CUBLAS_OP_N, N, K, lb.ld, p};
}
// cuBLAS's B: ember's a [M, K], likewise.
CuOperand cublas_b(const GemmLayout& la, int64_t M, int64_t K, const void* p) {
  return la.trans ? CuOperand{CUBLAS_OP_T, M, K, la.ld, p} : CuOperand{CUBLAS_OP_N, K, M, la.ld, p};
}

// RAII for cuBLASLt descriptors (destroy failures are ignored: a destructor must not throw, and
// destroying a descriptor only frees host memory).
struct LtDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~LtDesc() {
    if (d) (void)cublasLtMatmulDescDestroy(d);
  }
};
struct LtLayout {
  cublasLtMatrixLayout_t l = nullptr;
  ~LtLayout() {
    if (l) (void)cublasLtMatrixLayoutDestroy(l);
  }
};
struct LtPreference {
  cublasLtMatmulPreference_t p = nullptr;
  ~LtPreference() {
    if (p) (void)cublasLtMatmulPreferenceDestroy(p);
  }
};

struct GemmTypes {
  cudaDataType data;
  cublasComputeType_t compute;
};

GemmTypes gemm_types(DType dt) {
  if (dt == DType::F64) return {CUDA_R_64F, CUBLAS_COMPUTE_64F};
  // bf16/f16 operands on the tensor cores, accumulating in f32 (alpha and beta in f32).
  if (dt == DType::BF16) return {CUDA_R_16BF, CUBLAS_COMPUTE_32F};
  if (dt == DType::F16) return {CUDA_R_16F, CUBLAS_COMPUTE_32F};
  // TF32 rounds inputs to 10 mantissa bits: off by default so results match the CPU closely.
  return {CUDA_R_32F, cuda::allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F};
}

// alpha and beta in the scale type (the compute precision: f32 for f32 and TF32, f64 for f64).
struct Scalars {
  float f[2];
  double d[2];
  const void* alpha(DType dt) const { return dt == DType::F64 ? static_cast<const void*>(&d[0]) : &f[0]; }
  const void* beta(DType dt) const { return dt == DType::F64 ? static_cast<const void*>(&d[1]) : &f[1]; }
};

// The epilogue's auxiliary buffer: the ReLU bit mask that RELU_AUX_BIAS writes and DRELU_BGRAD
// reads (relu_mask.h), ld in bits (a multiple of 128, >= m: cuBLASLt's rule for a bit mask).
struct LtAux {
  void* ptr = nullptr;
  int64_t ld_bits = 0;
};

// D (m x n, ld m) = alpha op(A) op(B) + beta D with the epilogue, through cuBLASLt. Returns false,
// having queued nothing, when cuBLASLt has no algorithm for the case (for example an epilogue it
// does not support with these types or layouts); the caller then falls back.
bool lt_matmul(GemmContext& st, cudaStream_t stream, DType dt, const CuOperand& A, const CuOperand& B, void* D,
               int64_t m, int64_t n, const Scalars& s, cublasLtEpilogue_t epilogue, void* bias,
               const LtAux& aux = {}) {
  const GemmTypes t = gemm_types(dt);
  const cudaDataType scale = dt == DType::F64 ? CUDA_R_64F : CUDA_R_32F;
  LtDesc op;
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.d, t.compute, scale));
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &A.op, sizeof(A.op)));
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &B.op, sizeof(B.op)));
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (bias)
    EMBER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  if (aux.ptr) {
    // The mask is a bit mask (the aux data type left unset: cuBLASLt's ReLU mask is always bits).
    EMBER_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux.ptr, sizeof(aux.ptr)));
    EMBER_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux.ld_bits, sizeof(aux.ld_bits)));
  }
  LtLayout la, lb, ld;
  EMBER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la.l, t.data, A.rows, A.cols, A.ld));
  EMBER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb.l, t.data, B.rows, B.cols, B.ld));
  EMBER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld.l, t.data, m, n, m));

  using cuda::pointer_alignment;
  const cuda::GemmAlgoKey key{static_cast<int64_t>(t.data), static_cast<int64_t>(t.compute), static_cast<int64_t>(A.op),
                    A.rows, A.cols, A.ld, static_cast<int64_t>(B.op), B.rows, B.cols, B.ld, m, n,
                    static_cast<int64_t>(epilogue), pointer_alignment(A.ptr), pointer_alignment(B.ptr),
                    pointer_alignment(D), bias ? pointer_alignment(bias) : 0,
                    aux.ptr ? pointer_alignment(aux.ptr) : 0, aux.ld_bits};
  std::optional<cublasLtMatmulAlgo_t> algo;
  {
    std::lock_guard<std::mutex> lock(st.algos_mutex);
    auto it = st.algos.find(key);
    if (it == st.algos.end()) {
      LtPreference pref;
      EMBER_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
      EMBER_CUBLAS_CHECK(cuda::set_lt_preference(pref.p, kGemmWorkspaceBytes, static_cast<uint32_t>(key[13]),
                                                 static_cast<uint32_t>(key[14]), static_cast<uint32_t>(key[15])));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      // Any failure here means "no algorithm": the cuBLAS fallback reports real errors itself.
      const cublasStatus_t status =
          cublasLtMatmulAlgoGetHeuristic(st.lt, op.d, la.l, lb.l, ld.l, ld.l, pref.p, 1, &result, &found);
      if (status == CUBLAS_STATUS_SUCCESS && found > 0) algo = result.algo;
      st.algos.emplace(key, algo);
    } else {
      algo = it->second;
    }
  }
  if (!algo) return false;
  const cublasStatus_t status = cublasLtMatmul(st.lt, op.d, s.alpha(dt), A.ptr, la.l, B.ptr, lb.l, s.beta(dt), D,
                                               ld.l, D, ld.l, &*algo, st.workspace, kGemmWorkspaceBytes, stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    std::lock_guard<std::mutex> lock(st.algos_mutex);
    st.algos[key] = std::nullopt;
    return false;
  }
  if (status != CUBLAS_STATUS_SUCCESS)
    cuda::throw_library_error("cuBLASLt", static_cast<int>(status), cublasGetStatusString(status), "cublasLtMatmul",
                              __FILE__, __LINE__);
  return true;
}

void check_int_range(int64_t v, const char* what) {
  EMBER_CHECK(v <= INT_MAX, "gemm: ", what, " = ", v, " exceeds cuBLAS's 32-bit limit (", INT_MAX,
              "); split the product into smaller GEMMs");
}

// D[i] = alpha op(A[i]) op(B[i]) + beta D[i] for `batch` matrices (batch strides may be 0: a
// shared operand), through cuBLAS.
void batched_matmul(GemmContext& st, DType dt, const CuOperand& A, int64_t stride_a, const CuOperand& B,
                    int64_t stride_b, void* D, int64_t stride_d, int64_t m, int64_t n, int64_t k, int64_t batch,
                    const Scalars& s) {
  const std::pair<int64_t, const char*> sizes[] = {{m, "N"}, {n, "M"}, {k, "K"}, {A.ld, "the leading dimension of b"},
                                                   {B.ld, "the leading dimension of a"}, {batch, "the batch"}};
  for (const auto& [v, what] : sizes) check_int_range(v, what);
  const GemmTypes t = gemm_types(dt);
  EMBER_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      st.blas, A.op, B.op, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), s.alpha(dt), A.ptr, t.data,
      static_cast<int>(A.ld), stride_a, B.ptr, t.data, static_cast<int>(B.ld), stride_b, s.beta(dt), D, t.data,
      static_cast<int>(m), stride_d, static_cast<int>(batch), t.compute, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void CudaBackend::gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) {
  const Device dev = out.device();
  EMBER_CHECK(dev.is_cuda() && a.device() == dev && b.device() == dev, "gemm: operands on ", a.device().str(), " and ",
              b.device().str(), " with output on ", dev.str(), "; all must be on one CUDA device");
  const DType dt = out.dtype();
  EMBER_CHECK(is_floating(dt), "gemm: expected a floating dtype (f32, f64, bf16 or f16) but got ", dtype_name(dt));
  const cudaStream_t stream = cuda::stream_for(dev);
  cuda::DeviceGuard guard(dev.index);
  cuda::NvtxRange range("ember::gemm");

  const bool batched = out.dim() == 3;
  const int64_t B = batched ? out.size(0) : 1;
  const int64_t M = out.size(out.dim() - 2), N = out.size(out.dim() - 1), K = a.size(a.dim() - 1);
  const EpilogueParts ep = epilogue_parts(o.epilogue, "cuda");
  const bool bias = ep.bias, relu = ep.relu, bias_grad = ep.bias_grad;
  const bool mask_parts = ep.relu_mask_out || ep.relu_mask_in;
  if (mask_parts) check_relu_mask_args(out, o, "cuda");

  if (B == 0) return;
  if (M == 0 || N == 0) {
    // No product, but a bias gradient over op(a) still has M rows to sum, and DReluBiasGrad's sums
    // over no rows are 0 (the mask of an empty output has no bits to write).
    if (bias_grad && M > 0) gemm_epilogue_fallback(out, a, o, false, true);
    if (ep.bias_grad_out && N > 0) fill(o.bias_grad, 0.0);
    return;
  }
  if (K == 0) {
    // An empty sum: out = beta * out (cuBLAS would leave C alone only for beta == 1).
    if (o.beta == 0.0) fill(out, 0.0);
    else unary(UnaryOp::MulScalar, out, out, {o.beta, 0.0});
    gemm_epilogue_fallback(out, a, o, bias || relu, bias_grad);
    if (mask_parts) relu_mask_fallback(out, o);
    return;
  }

  const GemmLayout la = gemm_layout_checked(a, "cuda"), lb = gemm_layout_checked(b, "cuda");
  const int64_t a_bs = la.batch_stride, b_bs = lb.batch_stride;
  // A batch over a shared b with row-major a stacked at stride M * ld is one GEMM [B * M, K] @ [K, N]
  // (the 3-D @ 2-D of a linear layer on a sequence): one launch, and the epilogues can fuse.
  int64_t rows = M, batch = B;
  if (B > 1 && b_bs == 0 && !la.trans && a_bs == M * la.ld) {
    rows = B * M;
    batch = 1;
  }
  const CuOperand A = cublas_a(lb, K, N, b.data_ptr());
  const CuOperand Bop = cublas_b(la, rows, K, a.data_ptr());
  Scalars s{};
  s.f[0] = static_cast<float>(o.alpha);
  s.f[1] = static_cast<float>(o.beta);
  s.d[0] = o.alpha;
  s.d[1] = o.beta;
  GemmContext& st = cuda::device_context(dev.index).gemm();

  bool ran = false, fused = false;
  if (batch == 1) {
    for (int64_t v : {N, rows, K, A.ld, Bop.ld}) check_int_range(v, "a GEMM dimension");
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    void* epilogue_ptr = nullptr;
    LtAux aux;
    if (mask_parts) aux = {o.relu_mask.data_ptr(), o.relu_mask.size(1) * 8};  // mask rows: D's columns
    bool fusable = false;
    // cuBLASLt's RELU epilogues turn NaN into 0, where the CPU and ember's relu pass it on (as
    // PyTorch does) so that the anomaly check sees it: Relu and BiasRelu run the ReLU as the
    // kernel, after the GEMM (with its bias fused where it can be).
    // BiasReluNanToZero asks for exactly cuBLASLt's semantics, so its ReLU fuses (RELU_BIAS), and
    // with the mask written too (BiasReluNanToZeroMask) as RELU_AUX_BIAS.
    if (bias) {
      // cuBLASLt reads a packed bias vector.
      fusable = o.bias.stride(0) == 1 || N == 1;
      epilogue = ep.relu_mask_out ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS
                 : ep.nan_to_zero ? CUBLASLT_EPILOGUE_RELU_BIAS
                                  : CUBLASLT_EPILOGUE_BIAS;
      epilogue_ptr = o.bias.data_ptr();
    } else if (ep.bias_grad_out) {
      // DReluBiasGrad: DRELU_BGRAD masks D (the product) by the bits and writes the bias gradient,
      // one value per row of D (ember's columns, N), into the bias pointer, packed. Fused only for
      // alpha 1, beta 0, where "the matmul output" is the product itself and no reading differs.
      fusable = o.alpha == 1.0 && o.beta == 0.0 && (o.bias_grad.stride(0) == 1 || N == 1);
      epilogue = CUBLASLT_EPILOGUE_DRELU_BGRAD;
      epilogue_ptr = o.bias_grad.data_ptr();
    } else if (bias_grad) {
      // The bias gradient is of op(a) alone (unscaled) and, on the CPU, of its first matrix only;
      // fuse only where those readings cannot differ: alpha 1, no batch, a packed vector.
      fusable = B == 1 && o.alpha == 1.0 && (o.bias_grad.stride(0) == 1 || M == 1);
      epilogue = CUBLASLT_EPILOGUE_BGRADB;
      epilogue_ptr = o.bias_grad.data_ptr();
    }
    if (fusable)
      fused = ran = lt_matmul(st, stream, dt, A, Bop, out.data_ptr(), N, rows, s, epilogue, epilogue_ptr, aux);
    if (!ran) ran = lt_matmul(st, stream, dt, A, Bop, out.data_ptr(), N, rows, s, CUBLASLT_EPILOGUE_DEFAULT, nullptr);
  }
  if (!ran) batched_matmul(st, dt, A, b_bs, Bop, a_bs, out.data_ptr(), M * N, N, rows, K, batch, s);
  if (!fused && o.epilogue != Epilogue::None) {
    gemm_epilogue_fallback(out, a, o, bias || relu, bias_grad);
    if (mask_parts) relu_mask_fallback(out, o);
  } else if (fused && relu && !ep.nan_to_zero) {
    unary(UnaryOp::Relu, out, out, {});
  }
}

// The ReLU mask's parts unfused, after the GEMM and its other parts (gemm_epilogue_fallback), with
// relu_mask.h's bit arithmetic as on the CPU: write the mask of out, or apply it to out and sum
// out's columns into bias_grad (the reduction kernel sums in double, as the CPU's loop).
void CudaBackend::relu_mask_fallback(const Tensor& out, const GemmOptions& o) {
  const EpilogueParts ep = epilogue_parts(o.epilogue, "cuda");
  const cudaStream_t stream = cuda::stream_for(out.device());
  if (ep.relu_mask_out) cuda::kernels::relu_mask_write(o.relu_mask, out, stream);
  if (ep.relu_mask_in) cuda::kernels::relu_mask_apply(out, o.relu_mask, stream);
  if (ep.bias_grad_out) {
    const int64_t M = out.size(0), N = out.size(1);
    const Tensor sums = o.bias_grad.is_contiguous() ? o.bias_grad : make_empty({N}, out.dtype(), out.device());
    reduce(ReduceOp::Sum, sums, out, 1, M, N);
    if (!sums.is_same(o.bias_grad)) copy(o.bias_grad, sums);
  }
}

void CudaBackend::gemm_epilogue_fallback(const Tensor& out, const Tensor& a, const GemmOptions& o, bool bias_relu,
                                         bool bias_grad) {
  if (bias_relu) {
    // Over every row of every batch, as on the CPU; in place (each element is read and written by
    // the same thread).
    const int64_t N = out.size(out.dim() - 1), rows = N == 0 ? 0 : out.numel() / N;
    const Tensor c = make_view(out, {rows, N}, {N, 1}, out.offset());
    const EpilogueParts ep = epilogue_parts(o.epilogue, "cuda");
    if (ep.bias)
      binary(BinaryOp::Add, c, c, make_view(o.bias, {rows, N}, {0, o.bias.stride(0)}, o.bias.offset()), {});
    // BiasReluNanToZero unfused: c > 0 ? c : 0 (NaN to 0, as the epilogue) is ReluBackward(c, c).
    if (ep.relu && ep.nan_to_zero) binary(BinaryOp::ReluBackward, c, c, c, {});
    else if (ep.relu) unary(UnaryOp::Relu, c, c, {});
  }
  if (bias_grad) {
    // bias_grad[i] = sum_k op(a)[i, k] over a's first matrix (as the CPU reads it), summed in
    // double by the reduction kernel, like the CPU's loop.
    const int64_t ad = a.dim(), M = a.size(ad - 2), K = a.size(ad - 1);
    const int64_t rs = a.stride(ad - 2), cs = a.stride(ad - 1);
    const Tensor rows_major = make_view(a, {M, K}, {rs, cs}, a.offset());
    const Tensor cols_major = make_view(a, {K, M}, {cs, rs}, a.offset());
    const Tensor sums = o.bias_grad.is_contiguous() ? o.bias_grad : make_empty({M}, out.dtype(), out.device());
    if (rows_major.is_contiguous()) {
      reduce(ReduceOp::Sum, sums, rows_major, M, K, 1);
    } else if (cols_major.is_contiguous()) {
      reduce(ReduceOp::Sum, sums, cols_major, 1, K, M);  // a transposed view: sum the rows of a^T
    } else {
      const Tensor packed = make_empty({M, K}, a.dtype(), a.device());
      copy(packed, rows_major);
      reduce(ReduceOp::Sum, sums, packed, M, K, 1);
    }
    if (!sums.is_same(o.bias_grad)) copy(o.bias_grad, sums);
  }
}

}  // namespace ember
