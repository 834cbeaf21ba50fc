// Runs a CPU loop compiled for the instruction set picked at run time (ember/cpu_isa.h).
//
//   cpu::simd_dispatch([&] { for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]); });
//
// The lambda is instantiated into three functions, one per target (baseline x86-64, AVX2,
// AVX-512F), each `flatten`ed so that the lambda and everything it calls that can be inlined is
// compiled for that target; a call that is not inlined reaches the baseline code, never a wider
// one. Files that use this must be compiled with -ffp-contract=off (CMakeLists.txt): AVX-512F
// includes FMA, and a contracted a * b + c would round differently from the baseline loop.
#pragma once
#include <atomic>
#include <cstdint>

#include "ember/cpu_isa.h"

namespace ember {
struct bf16;
}

namespace ember::cpu {

// n f32 values to bf16, rounded to nearest even with lowp::float_to_bf16_bits's bits (NaN kept
// quiet, subnormals kept): AVX512_BF16's vcvtne2ps2bf16 where the CPU has it and the level in use
// is AVX-512, else the loop at that level (cpu_memory.cpp).
void narrow_to_bf16(const float* src, bf16* dst, int64_t n);

// The level in use (-1 until first read).
extern std::atomic<int> g_kernel_isa;
int init_kernel_isa();

inline CpuKernelIsa kernel_isa() {
  int v = g_kernel_isa.load(std::memory_order_relaxed);
  if (v < 0) v = init_kernel_isa();
  return static_cast<CpuKernelIsa>(v);
}

#if defined(__x86_64__) && defined(__GNUC__)
template <class F>
__attribute__((target("avx512f"), flatten)) void run_avx512(const F& f) {
  f();
}
template <class F>
__attribute__((target("avx2"), flatten)) void run_avx2(const F& f) {
  f();
}
template <class F>
__attribute__((flatten)) void run_baseline(const F& f) {
  f();
}

template <class F>
void simd_dispatch(const F& f) {
  switch (kernel_isa()) {
    case CpuKernelIsa::Avx512: return run_avx512(f);
    case CpuKernelIsa::Avx2: return run_avx2(f);
    case CpuKernelIsa::Baseline: return run_baseline(f);
  }
  run_baseline(f);
}
#else
template <class F>
void simd_dispatch(const F& f) {
  f();
}
#endif

}  // namespace ember::cpu
