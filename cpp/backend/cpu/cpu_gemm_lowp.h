// The CPU backend's bf16/f16 GEMM (cpu_gemm_lowp.cpp), called by CpuBackend::gemm for those dtypes,
// and the choice, made once per process, between oneDNN's bf16 kernels and its f32 kernels on
// widened copies for autocast's bf16 GEMMs and convolutions.
#pragma once
#include <string>

#include "cpp/backend/backend.h"
#include "ember/export.h"

namespace ember::cpu {

// CpuBackend::gemm's contract (backend.h) for bf16 or f16 out, a and b: products accumulate in f32
// and round once into out.
void gemm_lowp(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o);

// How bf16 GEMMs and convolutions run on this CPU. oneDNN's bf16 kernels ("native") are not faster
// than its f32 ones everywhere: on Zen 4 (AVX512_BF16) they run at about twice the f32 rate, on an
// Intel Xeon whose AMX the hypervisor hides (AVX512_BF16 only) at half of it. So, once per process,
// oneDNN's bf16 and f32 matmul are timed side by side on one compute-bound shape (a few ms, at the
// first bf16 GEMM or convolution), and bf16 runs natively unless its kernels are slower than
// kNativeSlowerLimit x the f32 ones; otherwise the operands are widened to f32, the f32 kernel
// runs and the result is rounded once: the same arithmetic (a bf16 product is exact in f32, the
// sums accumulate in f32 either way; only their order differs), at f32 speed. EMBER_CPU_BF16=native
// or =widened fixes the choice (reproducibility across machines; never needed for speed).
struct Bf16Kernels {
  bool native = false;      // oneDNN's bf16 kernels; false: f32 kernels on widened copies
  bool available = false;   // whether oneDNN has a bf16 matmul on this CPU at all (none on AVX2-only CPUs)
  double bf16_gflops = 0;   // the timed rates (0 when not timed: no bf16 kernels, or EMBER_CPU_BF16 set)
  double f32_gflops = 0;
  std::string why;          // one line for cpu_info(): what was measured or set
};
inline constexpr double kNativeSlowerLimit = 1.25;

// Decided at the first call (thread-safe) and kept.
EMBER_API const Bf16Kernels& bf16_kernels();
// The path the next bf16 GEMM or convolution takes: bf16_kernels().native, unless a test forced it.
bool bf16_runs_native();
// Tests: run bf16 natively (1, where oneDNN has the kernels) or widened (0) whatever the decision;
// -1 returns to the decision. Not thread-safe against concurrent GEMMs (tests set it between them).
EMBER_API void force_bf16_kernels_for_testing(int mode);
// EMBER_CPU_BF16's value: 1 "native", 0 "widened", -1 unset or empty (measure); anything else is
// an ember::Error naming the value and the two accepted.
EMBER_API int parse_bf16_kernels_env(const char* value);

}  // namespace ember::cpu
