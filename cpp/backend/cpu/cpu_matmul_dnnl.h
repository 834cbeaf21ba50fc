// CPU backend: GEMM through oneDNN's matmul primitive, which picks its kernels from the CPU's own
// feature bits (CPUID) at run time: AVX2, AVX-512, AVX512_BF16, AMX, on Intel and AMD alike, with
// nothing set by the user (Debian's OpenBLAS 0.3.21 falls back to SSE3 kernels on CPUs newer than
// it knows). Each shape gets one primitive, built once and cached.
#pragma once
#include <cstdint>
#include <string>

namespace ember::cpu {

// The element types a matmul reads and writes. The primitive accumulates in f32 whatever the
// inputs: a bf16 GEMM with f32 accumulation is A = B = BF16, C = F32 (or BF16), no other change.
enum class MatElem : int64_t { F32 = 0, BF16 = 1 };

// Row-major C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C. op(A) is A [M, K] with leading
// dimension lda, or (ta) a transposed view of a stored [K, M] with leading dimension lda; B likewise
// with ldb; C has leading dimension ldc. M, N, K > 0.
struct MatmulCall {
  int64_t M = 0, N = 0, K = 0;
  bool ta = false, tb = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
  MatElem a = MatElem::F32, b = MatElem::F32, c = MatElem::F32;
};

// Runs on OpenMP's threads: as many as ember::set_num_threads() last set, whichever thread calls.
void dnnl_matmul(const MatmulCall& call, const void* A, const void* B, void* C);

// Sets the calling thread's OpenMP thread count (a per-thread setting) to ember::set_num_threads()'s
// last value, where it was ever called (cpu_threads.cpp).
void match_omp_threads();

// What runs: "oneDNN 2.6.3 brg:avx512_core" (the library, its version and the implementation it
// chose for an f32 GEMM of the MNIST MLP's first layer at batch 64).
std::string dnnl_matmul_kernels();
// The ISA oneDNN dispatches to on this CPU ("avx512_core_bf16", "avx2", ...).
std::string dnnl_isa_name();

}  // namespace ember::cpu
