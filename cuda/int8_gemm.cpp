// ember::quant's int8 inference primitives on CUDA: the int8 x int8 -> int32 GEMM through cuBLASLt
// (CUBLAS_COMPUTE_32I, IMMA tensor-core kernels) followed by ember's epilogue kernel, and the
// launchers of the quantise / im2col / max-pool kernels (kernels/int8.cu).
//
// cuBLASLt's rules for IMMA kernels with the regular (column-major) ordering, from cublasLtMatmul's
// documentation: "TN" only (A transposed, B not), leading dimensions of A, B, C multiples of 4, m and
// k multiples of 4, every pointer 4-byte aligned (16 for better performance). ember's row-major
// product out[M, N] = a[M, K] w[n_pad, K]^T is, read column-major, D (n_pad x M) = w^T' a' with
// cuBLAS's A = w stored K x n_pad (ld K, transposed: T) and B = a stored K x M (ld K, N): the TN
// format. ember::quant pads K and n_pad to multiples of 16 (zero weights, so the padding adds
// nothing to any sum): 16-byte rows keep every row of A and B 16-byte aligned, and cuBLASLt's m
// (n_pad) and k then satisfy the multiple-of-4 rule. The accumulators D are int32 [M, n_pad]
// row-major (ld n_pad); the epilogue (compensation, bias, scales, ReLU, requantisation) is ember's
// kernel: cuBLASLt's datatype table lists no epilogue for int8 operands ("Epilogue is not
// supported" for CUBLAS_COMPUTE_32I), and its alpha-scaled s8 output would scale before adding the
// bias, which is not the CPU path's arithmetic. Each shape's descriptors and algorithm are made once (plan cache
// below), so steady inference queues one cublasLtMatmul and one kernel per layer.
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>

#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/cuda_backend.h"
#include "cuda/lt_preference.h"
#include "cuda/kernels/kernels.h"
#include "cuda/nvtx.h"
#include "cuda/runtime.h"
#include "ember/error.h"

namespace ember {
namespace {

cudaStream_t stream_on(const Tensor& t, const char* op) {
  EMBER_CHECK(t.device().is_cuda(), "cuda backend: ", op, " got a tensor on ", t.device().str(),
              "; every tensor of an op must be on the same CUDA device");
  return cuda::stream_for(t.device());
}

// One shape's cuBLASLt state, kept for the process's life (like the device context: destroying
// descriptors at exit, when the runtime may be unloading, gains nothing; they are host memory).
struct Int8Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};
// device, m (n_pad), n (M), k (K), and the alignments of w, a and D.
using Int8PlanKey = std::array<int64_t, 7>;

std::mutex& plans_mutex() {
  static std::mutex m;
  return m;
}
std::map<Int8PlanKey, Int8Plan>& plans() {
  static auto* p = new std::map<Int8PlanKey, Int8Plan>();
  return *p;
}

const Int8Plan& plan_for(cuda::GemmContext& st, const Int8PlanKey& key) {
  std::lock_guard<std::mutex> lock(plans_mutex());
  auto it = plans().find(key);
  if (it != plans().end()) return it->second;
  const int64_t m = key[1], n = key[2], k = key[3];
  Int8Plan p;
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  EMBER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  EMBER_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8I, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
  EMBER_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8I, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
  EMBER_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p.d, CUDA_R_32I, static_cast<uint64_t>(m), static_cast<uint64_t>(n), m));
  cublasLtMatmulPreference_t pref = nullptr;
  EMBER_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  // key[4..6]: the alignments of A = w, B = a and C = D = the accumulator.
  cublasStatus_t status = cuda::set_lt_preference(pref, cuda::kGemmWorkspaceBytes, static_cast<uint32_t>(key[4]),
                                                  static_cast<uint32_t>(key[5]), static_cast<uint32_t>(key[6]));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(st.lt, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) {
    (void)cublasLtMatrixLayoutDestroy(p.a);
    (void)cublasLtMatrixLayoutDestroy(p.b);
    (void)cublasLtMatrixLayoutDestroy(p.d);
    (void)cublasLtMatmulDescDestroy(p.op);
    throw Error(detail::str_cat("int8_gemm: cuBLASLt offers no int8 (CUBLAS_COMPUTE_32I) algorithm for m = ", m,
                                " output channels (padded), n = ", n, " rows, k = ", k, " (status ",
                                cublasGetStatusString(status),
                                "); run this model's int8 inference on the CPU (input and model .cpu())"));
  }
  p.algo = result.algo;
  return plans().emplace(key, p).first->second;
}

}  // namespace

void CudaBackend::int8_quantize(const Tensor& out, const Tensor& in, const Int8QuantizeParams& p) {
  const cudaStream_t stream = stream_on(out, "int8_quantize");
  cuda::DeviceGuard guard(out.device().index);
  cuda::kernels::int8_quantize(out, in, p, stream);
}

void CudaBackend::int8_im2col(const Tensor& out, const Tensor& in, const Int8Im2colParams& p) {
  const cudaStream_t stream = stream_on(out, "int8_im2col");
  cuda::DeviceGuard guard(out.device().index);
  cuda::kernels::int8_im2col(out, in, p, stream);
}

void CudaBackend::int8_max_pool(const Tensor& out, const Tensor& in, int64_t kernel) {
  const cudaStream_t stream = stream_on(out, "int8_max_pool");
  cuda::DeviceGuard guard(out.device().index);
  cuda::kernels::int8_max_pool(out, in, kernel, stream);
}

void CudaBackend::int8_gemm(const Tensor& out, const Tensor& a, const Tensor& w, const Int8GemmParams& p) {
  const Device dev = out.device();
  const cudaStream_t stream = stream_on(out, "int8_gemm");
  EMBER_CHECK(a.device() == dev && w.device() == dev && p.comp.device() == dev && p.bias_div.device() == dev &&
                  p.scale.device() == dev,
              "int8_gemm: operands on ", a.device().str(), ", ", w.device().str(), " with output on ", dev.str(),
              "; all must be on one CUDA device");
  const int64_t M = a.size(0), K = a.size(1), n_pad = w.size(0);
  const int64_t N = p.out_hw > 0 ? out.size(1) : out.size(out.dim() - 1);
  EMBER_CHECK(w.size(1) == K && N <= n_pad && p.comp.numel() >= n_pad && p.bias_div.numel() >= n_pad &&
                  p.scale.numel() >= n_pad && out.numel() / std::max<int64_t>(N, 1) == M,
              "int8_gemm: inconsistent operands: a ", shape_str(a.shape()), ", w ", shape_str(w.shape()), ", out ",
              shape_str(out.shape()), ", per-channel vectors of ", p.comp.numel(), ", ", p.bias_div.numel(), ", ",
              p.scale.numel());
  EMBER_CHECK(K % 16 == 0 && n_pad % 16 == 0 && K > 0 && n_pad > 0,
              "int8_gemm: cuBLASLt's int8 kernels need K and the padded output count as multiples of 16 here, got K = ",
              K, ", n_pad = ", n_pad, " (ember::quant pads both)");
  cuda::DeviceGuard guard(dev.index);
  cuda::NvtxRange range("ember::int8_gemm");
  if (M == 0) return;
  int64_t acc_elems = 0;
  EMBER_CHECK(!__builtin_mul_overflow(M, n_pad, &acc_elems) && acc_elems <= INT64_MAX / 4,
              "int8_gemm: the accumulator [", M, ", ", n_pad, "] overflows int64 bytes");
  const Tensor acc = make_empty({M, n_pad}, DType::I32, dev);  // from the device's pool
  const int64_t align_w = cuda::pointer_alignment(w.impl()->data()),
                align_a = cuda::pointer_alignment(a.impl()->data()),
                align_d = cuda::pointer_alignment(acc.impl()->data());
  EMBER_CHECK(align_w >= 4 && align_a >= 4 && align_d >= 4, "int8_gemm: cuBLASLt's int8 kernels need 4-byte aligned ",
              "operands, got alignments ", align_w, ", ", align_a, ", ", align_d, " (pass unsliced tensors)");
  cuda::GemmContext& st = cuda::device_context(dev.index).gemm();
  const Int8Plan& plan = plan_for(st, {dev.index, n_pad, M, K, align_w, align_a, align_d});
  const int32_t alpha = 1, beta = 0;
  const cublasStatus_t status = cublasLtMatmul(st.lt, plan.op, &alpha, w.impl()->data(), plan.a, a.impl()->data(),
                                               plan.b, &beta, acc.impl()->data(), plan.d, acc.impl()->data(), plan.d,
                                               &plan.algo, st.workspace, cuda::kGemmWorkspaceBytes, stream);
  if (status != CUBLAS_STATUS_SUCCESS)
    cuda::throw_library_error("cuBLASLt", static_cast<int>(status), cublasGetStatusString(status), "cublasLtMatmul",
                              __FILE__, __LINE__);
  cuda::kernels::int8_epilogue(out, acc, p, stream);
}

}  // namespace ember
