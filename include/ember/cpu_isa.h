// The instruction set of ember's own vectorised CPU loops (optimizer updates, elementwise maps,
// dtype casts, GEMM epilogues): each is compiled for x86-64's baseline, AVX2 and AVX-512F, and the
// widest one the CPU and the OS support is picked at run time (CPUID and XCR0), so one build runs
// on any x86-64 CPU. Every level computes the same bits: the loops are elementwise or keep each
// sum's order, and no level contracts a * b + c into an FMA. GEMM and convolution kernels are the
// libraries' own choice (cpu_info.h).
#pragma once
#include "ember/export.h"

namespace ember {

enum class CpuKernelIsa { Baseline = 0, Avx2 = 1, Avx512 = 2 };

// The level in use: the widest supported, unless lowered by set_cpu_kernel_isa.
EMBER_API CpuKernelIsa cpu_kernel_isa();
// The widest level this CPU and OS support (Baseline on other architectures).
EMBER_API CpuKernelIsa cpu_kernel_isa_supported();
// Runs the loops at `isa` from now on, in every thread (a comparison, a test of each level). A
// level above cpu_kernel_isa_supported() is an Error.
EMBER_API void set_cpu_kernel_isa(CpuKernelIsa isa);
// "baseline", "avx2", "avx512f".
EMBER_API const char* cpu_kernel_isa_name(CpuKernelIsa isa);

}  // namespace ember
