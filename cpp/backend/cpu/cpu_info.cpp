// ember::cpu_info(): CPUID (masked by what the OS enabled in XCR0, as Linux's /proc/cpuinfo is) and
// the CPU libraries' own reports of the kernels they run.
#include "ember/cpu_info.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdint>
#include <cstring>
#include <sstream>

#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "cpp/backend/cpu/cpu_matmul_dnnl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define EMBER_X86 1
#endif

extern "C" char* openblas_get_corename();
extern "C" char* openblas_get_config();

namespace ember {
namespace {

#if EMBER_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}
bool bit(unsigned v, int i) { return (v >> i) & 1u; }
uint64_t xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

void read_cpuid(CpuInfo& info) {
#if EMBER_X86
  const Regs r0 = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &r0.b, 4);
  std::memcpy(vendor + 4, &r0.d, 4);
  std::memcpy(vendor + 8, &r0.c, 4);
  info.vendor = vendor;
  if (cpuid(0x80000000).a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    std::string s = brand;
    const size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
    info.model = b == std::string::npos ? "" : s.substr(b, e - b + 1);
  }
  const unsigned max_leaf = r0.a;
  const Regs r1 = cpuid(1);
  const bool osxsave = bit(r1.c, 27);
  const uint64_t x = osxsave ? xcr0() : 0;
  const bool os_avx = (x & 0x6) == 0x6;                  // SSE and AVX state
  const bool os_avx512 = os_avx && (x & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (x & 0x60000) == 0x60000;         // XTILECFG, XTILEDATA
  const Regs r7 = max_leaf >= 7 ? cpuid(7, 0) : Regs{};
  const Regs r71 = max_leaf >= 7 && r7.a >= 1 ? cpuid(7, 1) : Regs{};
  info.fma = os_avx && bit(r1.c, 12);
  info.avx2 = os_avx && bit(r7.b, 5);
  info.avx512f = os_avx512 && bit(r7.b, 16);
  info.avx512_vnni = os_avx512 && bit(r7.c, 11);
  info.avx512_bf16 = os_avx512 && bit(r71.a, 5);
  info.avx_vnni = os_avx && bit(r71.a, 4);
  info.amx_tile = os_amx && bit(r7.d, 24);
  info.amx_bf16 = os_amx && bit(r7.d, 22);
  info.amx_int8 = os_amx && bit(r7.d, 25);
#else
  info.vendor = "unknown (not x86)";
  info.model = "unknown";
#endif
  info.isa = info.amx_bf16      ? "amx_bf16"
             : info.avx512_bf16 ? "avx512_bf16"
             : info.avx512_vnni ? "avx512_vnni"
             : info.avx512f     ? "avx512f"
             : info.avx2        ? "avx2"
                                : "sse";
}

std::string openblas_name() {
  // openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64"
  std::istringstream cfg(openblas_get_config());
  std::string lib, version;
  cfg >> lib >> version;
  return lib + " " + version + " " + openblas_get_corename();
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) o += c;
  }
  return o + "\"";
}

}  // namespace

std::string CpuInfo::flags() const {
  std::string s;
  const std::pair<const char*, bool> all[] = {{"fma", fma},
                                              {"avx2", avx2},
                                              {"avx512f", avx512f},
                                              {"avx512_vnni", avx512_vnni},
                                              {"avx512_bf16", avx512_bf16},
                                              {"avx_vnni", avx_vnni},
                                              {"amx_tile", amx_tile},
                                              {"amx_bf16", amx_bf16},
                                              {"amx_int8", amx_int8}};
  for (const auto& [name, on] : all)
    if (on) s += (s.empty() ? "" : " ") + std::string(name);
  return s;
}

std::string CpuInfo::summary() const {
  return model + " (" + vendor + "), " + isa + " [" + flags() + "]; gemm " + gemm + " (f64: " + gemm_f64 + "); conv " +
         conv + "; bf16 " + bf16;
}

std::string CpuInfo::json() const {
  return "{\"vendor\": " + json_str(vendor) + ", \"model\": " + json_str(model) + ", \"isa\": " + json_str(isa) +
         ", \"flags\": " + json_str(flags()) + ", \"gemm\": " + json_str(gemm) + ", \"gemm_f64\": " +
         json_str(gemm_f64) + ", \"conv\": " + json_str(conv) + ", \"bf16\": " + json_str(bf16) + "}";
}

const CpuInfo& cpu_info() {
  static const CpuInfo info = [] {
    CpuInfo i;
    read_cpuid(i);
    i.gemm = cpu::dnnl_matmul_kernels();
    i.gemm_f64 = openblas_name();
    const dnnl_version_t* v = dnnl_version();
    i.conv = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
             " " + cpu::dnnl_isa_name();
    i.bf16 = cpu::bf16_kernels().why;
    return i;
  }();
  return info;
}

}  // namespace ember
