// The instruction set of ember's vectorised CPU loops: detected once, lowered on request.
#include "cpp/backend/cpu/cpu_simd.h"

#include "ember/error.h"

namespace ember {
namespace cpu {

std::atomic<int> g_kernel_isa{-1};

namespace {
CpuKernelIsa detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  // libgcc's checks read CPUID and XCR0: a feature the OS does not save (AVX-512 state on an
  // older kernel or a VM that hides it) counts as absent.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return CpuKernelIsa::Avx512;
  if (__builtin_cpu_supports("avx2")) return CpuKernelIsa::Avx2;
#endif
  return CpuKernelIsa::Baseline;
}
}  // namespace

int init_kernel_isa() {
  int expected = -1;
  g_kernel_isa.compare_exchange_strong(expected, static_cast<int>(cpu_kernel_isa_supported()),
                                       std::memory_order_relaxed);
  return g_kernel_isa.load(std::memory_order_relaxed);
}

}  // namespace cpu

CpuKernelIsa cpu_kernel_isa() { return cpu::kernel_isa(); }

CpuKernelIsa cpu_kernel_isa_supported() {
  static const CpuKernelIsa s = cpu::detect();
  return s;
}

const char* cpu_kernel_isa_name(CpuKernelIsa isa) {
  switch (isa) {
    case CpuKernelIsa::Baseline: return "baseline";
    case CpuKernelIsa::Avx2: return "avx2";
    case CpuKernelIsa::Avx512: return "avx512f";
  }
  return "unknown";
}

void set_cpu_kernel_isa(CpuKernelIsa isa) {
  const int v = static_cast<int>(isa);
  EMBER_CHECK(v >= 0 && v <= 2, "set_cpu_kernel_isa: ", v, " is not a CpuKernelIsa (Baseline, Avx2, Avx512)");
  const CpuKernelIsa top = cpu_kernel_isa_supported();
  EMBER_CHECK(v <= static_cast<int>(top), "set_cpu_kernel_isa: ", cpu_kernel_isa_name(isa),
              " is wider than this CPU supports (", cpu_kernel_isa_name(top), "); pick ", cpu_kernel_isa_name(top),
              " or lower");
  cpu::g_kernel_isa.store(v, std::memory_order_relaxed);
}

}  // namespace ember
