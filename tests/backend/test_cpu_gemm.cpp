// The CPU GEMM (f32 through oneDNN's matmul, f64 through OpenBLAS) against a naive double loop
// written here, over the layouts the op layer hands it (transposed views, padded leading
// dimensions, a batch with a shared operand), alpha and beta; and ember::cpu_info() against
// Linux's /proc/cpuinfo.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/cpu_info.h"
#include "ember/ember.h"

namespace ember {
namespace {

Backend& cpu() {
  static Backend* b = empty({1}).impl()->storage->owner;
  return *b;
}

// An [rows, cols] operand stored as asked: row-major with `pad` spare columns, or (trans) a
// transposed view of a row-major [cols, rows + pad].
Tensor operand(int64_t rows, int64_t cols, bool trans, int64_t pad, DType dt) {
  const TensorOptions o(dt);
  if (trans) return randn({cols, rows + pad}, o).narrow(1, 0, rows).t();
  return randn({rows, cols + pad}, o).narrow(1, 0, cols);
}

template <class T>
void check_gemm(int64_t M, int64_t N, int64_t K, bool ta, bool tb, int64_t pad, double alpha, double beta) {
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::F64;
  const Tensor a = operand(M, K, ta, pad, dt), b = operand(K, N, tb, pad, dt);
  Tensor out = randn({M, N}, TensorOptions(dt));
  const std::vector<T> av = a.contiguous().to_vector<T>(), bv = b.contiguous().to_vector<T>(),
                       c0 = out.to_vector<T>();
  GemmOptions o;
  o.alpha = alpha, o.beta = beta;
  cpu().gemm(out, a, b, o);
  const std::vector<T> got = out.to_vector<T>();
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-13;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        acc += static_cast<double>(av[i * K + k]) * bv[k * N + j];
        mag += std::abs(static_cast<double>(av[i * K + k]) * bv[k * N + j]);
      }
      const double want = alpha * acc + beta * c0[i * N + j];
      const double scale = std::abs(alpha) * mag + std::abs(beta * c0[i * N + j]) + 1e-30;
      ASSERT_NEAR(got[i * N + j], want, tol * scale * 4)
          << M << "x" << N << "x" << K << " ta " << ta << " tb " << tb << " pad " << pad << " alpha " << alpha
          << " beta " << beta << " at " << i << "," << j;
    }
}

TEST(CpuGemm, MatchesNaiveLoopAcrossLayouts) {
  manual_seed(13);
  for (const auto& [M, N, K] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {3, 5, 7}, {64, 10, 500}, {10, 33, 64},
                                                                   {17, 1, 9}, {1, 40, 3}})
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        for (const int64_t pad : {0, 3}) {
          check_gemm<float>(M, N, K, ta, tb, pad, 1.0, 0.0);
          check_gemm<double>(M, N, K, ta, tb, pad, 1.0, 0.0);
        }
  for (const auto& [alpha, beta] : std::vector<std::pair<double, double>>{{0.5, 1.0}, {-2.0, 0.25}, {1.0, -1.0}})
    for (const bool ta : {false, true}) {
      check_gemm<float>(9, 12, 20, ta, !ta, 2, alpha, beta);
      check_gemm<double>(9, 12, 20, ta, !ta, 2, alpha, beta);
    }
}

// A batch whose second operand is one matrix for every batch entry (batch stride 0), and one
// whose first is a transposed view per entry.
TEST(CpuGemm, BatchedWithSharedAndTransposedOperands) {
  manual_seed(14);
  const int64_t B = 3, M = 6, N = 5, K = 4;
  const Tensor a = randn({B, K, M}).transpose(1, 2);  // [B, M, K], each entry transposed
  const Tensor w = randn({K, N});
  const Tensor b = w.unsqueeze(0).expand({B, K, N});
  Tensor out = empty({B, M, N});
  cpu().gemm(out, a, b, GemmOptions{});
  const std::vector<float> av = a.contiguous().to_vector<float>(), wv = w.to_vector<float>(),
                           got = out.to_vector<float>();
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(av[(bi * M + i) * K + k]) * wv[k * N + j];
        EXPECT_NEAR(got[(bi * M + i) * N + j], acc, 1e-5) << bi << "," << i << "," << j;
      }
}

// The flags Linux lists for the first CPU in /proc/cpuinfo.
std::set<std::string> proc_cpuinfo_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream in(line.substr(line.find(':') + 1));
      std::set<std::string> s;
      for (std::string w; in >> w;) s.insert(w);
      return s;
    }
  return {};
}

TEST(CpuInfo, FieldsAgreeWithProcCpuinfo) {
  const CpuInfo& info = cpu_info();
  EXPECT_FALSE(info.vendor.empty());
  EXPECT_FALSE(info.model.empty());
  EXPECT_EQ(info.gemm.rfind("oneDNN ", 0), 0u) << info.gemm;
  EXPECT_EQ(info.gemm_f64.rfind("OpenBLAS ", 0), 0u) << info.gemm_f64;
  EXPECT_EQ(info.conv.rfind("oneDNN ", 0), 0u) << info.conv;
  EXPECT_GT(info.gemm.size(), std::string("oneDNN 2.6.3 ").size()) << "no implementation name: " << info.gemm;
  const std::set<std::string> flags = proc_cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line (not Linux on x86)";
  const std::pair<const char*, bool> mine[] = {{"fma", info.fma},
                                               {"avx2", info.avx2},
                                               {"avx512f", info.avx512f},
                                               {"avx512_vnni", info.avx512_vnni},
                                               {"avx512_bf16", info.avx512_bf16},
                                               {"avx_vnni", info.avx_vnni},
                                               {"amx_tile", info.amx_tile},
                                               {"amx_bf16", info.amx_bf16},
                                               {"amx_int8", info.amx_int8}};
  std::string listed;
  for (const auto& [name, on] : mine) {
    EXPECT_EQ(on, flags.count(name) == 1) << name;
    if (flags.count(name)) listed += (listed.empty() ? "" : " ") + std::string(name);
  }
  EXPECT_EQ(info.flags(), listed);
  // The ISA is the widest feature /proc/cpuinfo lists.
  const char* widest = flags.count("amx_bf16")      ? "amx_bf16"
                       : flags.count("avx512_bf16") ? "avx512_bf16"
                       : flags.count("avx512_vnni") ? "avx512_vnni"
                       : flags.count("avx512f")     ? "avx512f"
                       : flags.count("avx2")        ? "avx2"
                                                    : "sse";
  EXPECT_EQ(info.isa, widest);
  // /proc/cpuinfo's model name is the brand string (the kernel prints CPUID's, trimmed).
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      const std::string name = line.substr(line.find(':') + 2);
      EXPECT_EQ(info.model, name);
      break;
    }
  // The JSON parses and holds every field; the one-line summary names them.
  const nlohmann::json js = nlohmann::json::parse(info.json());
  EXPECT_EQ(js.at("vendor"), info.vendor);
  EXPECT_EQ(js.at("model"), info.model);
  EXPECT_EQ(js.at("isa"), info.isa);
  EXPECT_EQ(js.at("flags"), listed);
  EXPECT_EQ(js.at("gemm"), info.gemm);
  EXPECT_EQ(js.at("gemm_f64"), info.gemm_f64);
  EXPECT_EQ(js.at("conv"), info.conv);
  const std::string sum = info.summary();
  for (const std::string& s : {info.model, info.isa, info.gemm, info.gemm_f64, info.conv})
    EXPECT_NE(sum.find(s), std::string::npos) << s;
}

}  // namespace
}  // namespace ember
