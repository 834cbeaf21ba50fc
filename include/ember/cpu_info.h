// What the CPU backend runs on and with: the CPU's features (read from CPUID, as enabled by the OS),
// its vendor and model, and the libraries and kernels the GEMM and the convolutions use, so that a
// machine running slow kernels is visible at once (ember-mnist's banner, ember-bench's JSON).
#pragma once
#include <string>

#include "ember/export.h"

namespace ember {

struct EMBER_API CpuInfo {
  std::string vendor;  // CPUID's vendor id: "GenuineIntel", "AuthenticAMD"
  std::string model;   // CPUID's brand string: "AMD EPYC 9654 96-Core Processor"
  // Features, each as Linux names it in /proc/cpuinfo's flags.
  bool fma = false, avx2 = false, avx512f = false, avx512_vnni = false, avx512_bf16 = false, avx_vnni = false,
       amx_tile = false, amx_bf16 = false, amx_int8 = false;
  std::string isa;   // the widest of those: "amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2" or "sse"
  std::string gemm;  // the f32 GEMM's library, version and kernels: "oneDNN 2.6.3 brg:avx512_core"
  std::string gemm_f64;  // the f64 GEMM's: "OpenBLAS 0.3.21 Cooperlake" (the core OpenBLAS detected)
  std::string conv;  // the convolutions': "oneDNN 2.6.3 avx512_core_bf16" (the ISA oneDNN dispatches to)
  // How autocast's bf16 GEMMs and convolutions run here, and why: "native oneDNN bf16 kernels: bf16
  // 210 vs f32 110 GFLOP/s (matmul 256^3, timed once)" or "widened to f32 (oneDNN f32 kernels): ..."
  // where oneDNN's bf16 kernels are the slower on this CPU (see docs/mixed-precision.md).
  std::string bf16;

  std::string flags() const;    // the features present, space-separated: "fma avx2 avx512f ..."
  std::string summary() const;  // one line: model, ISA, flags, GEMM and conv libraries, the bf16 path
  std::string json() const;     // a JSON object of every field
};

// Read once (CPUID and the libraries' own reports) and kept.
EMBER_API const CpuInfo& cpu_info();

}  // namespace ember
