// The CPU backend's Bernoulli fill (dropout's masks, vectorised and threaded) against the
// definition every backend shares (philox::uniform(seed, counter) < p), and its block cache.
#include "cpp/backend/backend.h"
#include "cpp/backend/philox.h"
#include "ember/cpu_isa.h"
#include "test_util.h"

using namespace ember;

namespace {

// Every element i of the mask is 1 exactly when philox::uniform(seed, offset + i) < p, for f32 (the
// AVX2 and AVX-512 paths, each instruction-set level this CPU has), bf16 and f16 (the same kernels
// in blocks of 256) and f64 (the scalar loop), lengths that leave a tail, counters that carry from the low
// into the high word inside a vector, and 1 and 2 threads.
TEST(CpuRandom, BernoulliMatchesTheDefinitionAtEveryCounter) {
  const int threads = get_num_threads();
  const CpuKernelIsa widest = cpu_kernel_isa_supported(), isa_before = cpu_kernel_isa();
  for (CpuKernelIsa isa : {CpuKernelIsa::Baseline, CpuKernelIsa::Avx2, CpuKernelIsa::Avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(widest)) continue;  // this CPU lacks it
    set_cpu_kernel_isa(isa);
    for (int t : {1, 2}) {
      set_num_threads(t);
      for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
        for (uint64_t offset : {uint64_t(0), uint64_t(0xFFFFFFFDull), uint64_t(0xFFFFFFF5ull), uint64_t(0x1234567890ull)}) {
          for (int64_t n : {int64_t(1), int64_t(13), int64_t(70001)}) {
            for (double p : {0.0, 0.25, 0.75, 1.0}) {
              Tensor out = empty({n}, dt);
              RandomParams rp{RandomKind::Bernoulli, p, 0.0, 0x9E3779B97F4A7C15ull, offset};
              backend_for(Device::cpu()).random(out, rp);
              const std::vector<double> got = out.to_vector<double>();
              int64_t bad = 0;
              for (int64_t i = 0; i < n; ++i) {
                const double want = philox::uniform(rp.seed, offset + static_cast<uint64_t>(i)) < p ? 1.0 : 0.0;
                bad += got[i] != want;
              }
              EXPECT_EQ(bad, 0) << dtype_name(dt) << " n=" << n << " offset=" << offset << " p=" << p
                                << " threads=" << t << " isa=" << static_cast<int>(isa);
            }
          }
        }
      }
    }
  }
  set_cpu_kernel_isa(isa_before);
  set_num_threads(threads);
}

TEST(CpuMemory, FreedLargeBlocksAreReusedAndReleased) {
  const size_t limit = cpu_cache_limit();
  if (limit == 0) GTEST_SKIP() << "the CPU block cache is off in this build (sanitizers: every free goes to malloc)";
  cpu_empty_cache();
  EXPECT_EQ(cpu_cached_bytes(), 0u);
  const void* first = nullptr;
  {
    Tensor big = empty({1 << 20});  // 4 MiB
    first = big.data_ptr();
  }
  EXPECT_EQ(cpu_cached_bytes(), size_t(4) << 20);
  {
    Tensor again = empty({1 << 20});
    EXPECT_EQ(again.data_ptr(), first);  // the same block back
    EXPECT_EQ(cpu_cached_bytes(), 0u);
  }
  { Tensor small = empty({1000}); }  // under 1 MiB: never cached
  EXPECT_EQ(cpu_cached_bytes(), size_t(4) << 20);
  { Tensor huge = empty({(1 << 23) + 16}); }  // just over 32 MiB: back to the system at once
  EXPECT_EQ(cpu_cached_bytes(), size_t(4) << 20);
  { Tensor at_most = empty({1 << 23}); }  // exactly 32 MiB: cached
  EXPECT_EQ(cpu_cached_bytes(), size_t(36) << 20);
  cpu_empty_cache();
  EXPECT_EQ(cpu_cached_bytes(), 0u);
  // Off: a freed block goes straight back to malloc.
  set_cpu_cache_limit(0);
  { Tensor big = empty({1 << 20}); }
  EXPECT_EQ(cpu_cached_bytes(), 0u);
  // Full: the oldest block goes to make room, so the cache never holds more than its limit.
  set_cpu_cache_limit(size_t(6) << 20);
  const void* newest = nullptr;
  {
    Tensor a = empty({1 << 20}), b = empty({1 << 19 | 1 << 18});  // 4 MiB, 3 MiB
    newest = b.data_ptr();
    a = Tensor();  // cached first (the oldest)
  }
  EXPECT_EQ(cpu_cached_bytes(), size_t(3) << 20);  // b's block pushed a's out
  {
    Tensor b2 = empty({1 << 19 | 1 << 18});
    EXPECT_EQ(b2.data_ptr(), newest);
  }
  set_cpu_cache_limit(limit);
  cpu_empty_cache();
}

// A reused block holds the last tensor's values: with poisoning on, it is poisoned again.
TEST(CpuMemory, ReusedBlocksArePoisonedWhenPoisoningIsOn) {
  if (cpu_cache_limit() == 0) GTEST_SKIP() << "the CPU block cache is off in this build";
  cpu_empty_cache();
  { Tensor z = zeros({1 << 20}); }
  debug::set_poison_allocations(true);
  Tensor t = empty({1 << 20});
  debug::set_poison_allocations(false);
  EXPECT_TRUE(std::isnan(t.to_vector<float>()[12345]));
}

}  // namespace
