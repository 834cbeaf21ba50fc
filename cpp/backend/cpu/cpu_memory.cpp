// CPU backend: allocation, host readers, fill, copy/cast, random fills.
#include <immintrin.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <new>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/cpu/cpu_simd.h"
#include "cpp/backend/philox.h"
#include "ember/debug.h"
#include "ember/parallel.h"

namespace ember {

namespace {
// A cache of freed large blocks, reused by exact (64-byte rounded) size. A training loop allocates
// the same activation and gradient sizes every step; without it each multi-megabyte buffer goes back
// to the kernel (glibc serves such sizes by mmap or trims them off the heap) and every page faults in
// again, zero-filled, on the next step: 5-7 ms of the MNIST CNN's 70 ms step on one core (measured
// with tools/bench/convnet.sh and with glibc told to keep the memory, MALLOC_MMAP_THRESHOLD_ /
// MALLOC_TRIM_THRESHOLD_). Only blocks of at least kMinCached bytes are kept (glibc's bins serve
// the small ones well), at most limit bytes in all (256 MiB by default: the CNN's step frees about
// 60 MiB of such blocks); sanitizer builds cache nothing, so AddressSanitizer still sees every use
// after free. oneDNN's reorder buffers and scratchpads come from here too (cpu_conv_dnnl.cpp).
// Blocks above kMaxCached (32 MiB, glibc's largest mmap threshold) go back to the system at once:
// those are evaluation-size batches (the CNN's 1000-image test batch makes 86-147 MiB activations
// and their oneDNN copies), where faulting the pages in again costs a few percent of the work that
// fills them, while keeping them would hold their memory for the rest of the run (peak RSS of a
// 2-epoch MNIST CNN run, /usr/bin/time -v ember-mnist --model cnn --epochs 2: 770 MB with them cached).
constexpr size_t kMinCached = size_t(1) << 20;
constexpr size_t kMaxCached = size_t(32) << 20;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr size_t kDefaultCacheLimit = 0;
#else
constexpr size_t kDefaultCacheLimit = size_t(256) << 20;
#endif

struct BlockCache {
  std::mutex mu;
  // Free blocks, oldest first, and by rounded size for the lookup: a block given back when the
  // cache is full pushes out the oldest ones, so sizes a loop stopped using (an evaluation's
  // batch, a last partial batch) leave the cache as the training sizes come back.
  std::list<std::pair<size_t, void*>> lru;
  std::unordered_multimap<size_t, std::list<std::pair<size_t, void*>>::iterator> by_size;
  size_t cached = 0;
  size_t limit = kDefaultCacheLimit;

  void* take(size_t rounded) {
    if (rounded < kMinCached || rounded > kMaxCached) return nullptr;
    std::lock_guard<std::mutex> lock(mu);
    auto it = by_size.find(rounded);
    if (it == by_size.end()) return nullptr;
    void* p = it->second->second;
    lru.erase(it->second);
    by_size.erase(it);
    cached -= rounded;
    return p;
  }
  bool give(void* p, size_t rounded) {
    if (rounded < kMinCached || rounded > kMaxCached) return false;
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (rounded > limit) return false;
      while (cached + rounded > limit) evicted.push_back(pop_oldest());
      lru.emplace_back(rounded, p);
      by_size.emplace(rounded, std::prev(lru.end()));
      cached += rounded;
    }
    for (void* e : evicted) std::free(e);
    return true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    while (!lru.empty()) std::free(pop_oldest());
    ++flushes;
  }
  uint64_t flushes = 0;  // under mu

 private:
  void* pop_oldest() {  // under mu; the cache is not empty
    auto [size, p] = lru.front();
    auto range = by_size.equal_range(size);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == lru.begin()) {
        by_size.erase(it);
        break;
      }
    lru.pop_front();
    cached -= size;
    return p;
  }
};

// EMBER_CPU_CACHE_LIMIT (bytes; 0 turns the cache off) overrides the default at the first allocation.
size_t initial_limit() {
  const char* v = std::getenv("EMBER_CPU_CACHE_LIMIT");
  if (!v || !*v) return kDefaultCacheLimit;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || *end != '\0' || v[0] == '-')
    throw Error(detail::str_cat("EMBER_CPU_CACHE_LIMIT=", v, ": expected a number of bytes (0 turns the CPU block "
                                "cache off), e.g. 268435456"));
  return static_cast<size_t>(n);
}

BlockCache& block_cache() {
  static BlockCache* c = [] {  // never destroyed: tensors may be freed during exit
    auto* cache = new BlockCache;
    cache->limit = initial_limit();
    return cache;
  }();
  return *c;
}

size_t rounded_size(size_t nbytes) { return nbytes == 0 ? 64 : (nbytes + 63) / 64 * 64; }

// cpu_memory_stats()'s counters (relaxed atomics: figures, not synchronisation).
struct CpuCounters {
  std::atomic<size_t> allocated{0}, allocated_rounded{0}, peak{0};
  std::atomic<uint64_t> allocs{0}, hits{0};
};
CpuCounters g_counters;

void note_cpu_allocated(size_t nbytes, size_t rounded, bool hit) {
  const size_t now = g_counters.allocated.fetch_add(nbytes, std::memory_order_relaxed) + nbytes;
  g_counters.allocated_rounded.fetch_add(rounded, std::memory_order_relaxed);
  g_counters.allocs.fetch_add(1, std::memory_order_relaxed);
  if (hit) g_counters.hits.fetch_add(1, std::memory_order_relaxed);
  size_t peak = g_counters.peak.load(std::memory_order_relaxed);
  while (now > peak && !g_counters.peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

void* CpuBackend::allocate(size_t nbytes, Device) {
  if (nbytes > SIZE_MAX - 63)
    throw OutOfMemory(detail::str_cat("cpu: cannot allocate ", nbytes, " bytes: the size overflows size_t"));
  const size_t rounded = rounded_size(nbytes);
  void* p = block_cache().take(rounded);
  const bool hit = p != nullptr;
  // 64-byte alignment suits AVX-512 loads and OpenBLAS.
  if (!p) p = std::aligned_alloc(64, rounded);
  if (!p) {  // the cache's blocks may be what is missing
    block_cache().release();
    p = std::aligned_alloc(64, rounded);
  }
  if (!p)
    throw OutOfMemory(detail::str_cat("cpu: failed to allocate ", nbytes, " bytes (",
                                      static_cast<double>(nbytes) / double(1 << 30),
                                      " GiB) of host memory; use smaller tensors or batches"));
  if (debug::poison_allocations()) std::memset(p, 0xFF, rounded);
  note_cpu_allocated(nbytes, rounded, hit);
  return p;
}

void CpuBackend::deallocate(void* ptr, size_t nbytes, Device) {
  if (!ptr) return;
  const size_t rounded = rounded_size(nbytes);
  g_counters.allocated.fetch_sub(nbytes, std::memory_order_relaxed);
  g_counters.allocated_rounded.fetch_sub(rounded, std::memory_order_relaxed);
  if (!block_cache().give(ptr, rounded)) std::free(ptr);
}

void set_cpu_cache_limit(size_t bytes) {
  BlockCache& c = block_cache();
  bool over = false;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.limit = bytes;
    over = c.cached > bytes;
  }
  if (over) c.release();
}

size_t cpu_cache_limit() {
  std::lock_guard<std::mutex> lock(block_cache().mu);
  return block_cache().limit;
}

size_t cpu_cached_bytes() {
  std::lock_guard<std::mutex> lock(block_cache().mu);
  return block_cache().cached;
}

void cpu_empty_cache() { block_cache().release(); }

CpuMemoryStats cpu_memory_stats() {
  CpuMemoryStats m;
  m.allocated = g_counters.allocated.load(std::memory_order_relaxed);
  m.peak_allocated = g_counters.peak.load(std::memory_order_relaxed);
  m.num_allocs = g_counters.allocs.load(std::memory_order_relaxed);
  m.num_cache_hits = g_counters.hits.load(std::memory_order_relaxed);
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  m.cached = c.cached;
  m.num_cache_flushes = c.flushes;
  m.reserved = g_counters.allocated_rounded.load(std::memory_order_relaxed) + c.cached;
  return m;
}

void reset_cpu_peak_memory_stats() {
  g_counters.peak.store(g_counters.allocated.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

void CpuBackend::synchronize(Device) {}  // the CPU's work is done when its call returns

namespace {
// A CPU tensor is copied at start() (so later writes to it do not show) and is ready at once.
class CpuHostReader final : public HostReader {
 public:
  void start(const Tensor& src) override {
    copy_ = make_empty(src.shape(), src.dtype(), Device::cpu());
    backend_for(Device::cpu()).copy(copy_, src);
  }
  bool ready() override { return true; }
  Tensor get(const char*) override { return std::exchange(copy_, Tensor()); }

 private:
  Tensor copy_;
};
}  // namespace

std::unique_ptr<HostReader> CpuBackend::make_host_reader(Device) { return std::make_unique<CpuHostReader>(); }

void CpuBackend::fill(const Tensor& out, double value) {
  cpu::visit_dtype(out.dtype(), "fill", [&]<class T>() {
    T v = static_cast<T>(value);
    T* o = cpu::ptr<T>(out);
    cpu::for_each_offset<1>(out.shape(), {&out.strides()}, [&](const std::array<int64_t, 1>& i) { o[i[0]] = v; });
  });
}

namespace {
#if defined(__x86_64__) && defined(__GNUC__)
// f32 -> bf16 with AVX512_BF16's vcvtne2ps2bf16, 32 values per instruction. It rounds to nearest
// even and makes a NaN quiet keeping its top bits, as lowp::float_to_bf16_bits does, but it flushes
// subnormal inputs to zero: a block of 32 holding any subnormal takes the scalar formula instead, so
// the bits are the scalar code's for every input (tests/backend/test_cpu_simd.cpp).
__attribute__((target("avx512f,avx512bf16"))) void f32_to_bf16_avx512bf16(const float* s, bf16* d, int64_t n) {
  const __m512i exp_mask = _mm512_set1_epi32(0x7f800000), man_mask = _mm512_set1_epi32(0x007fffff);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 lo = _mm512_loadu_ps(s + i), hi = _mm512_loadu_ps(s + i + 16);
    const __m512i lo_bits = _mm512_castps_si512(lo), hi_bits = _mm512_castps_si512(hi);
    // Subnormal: exponent bits all zero, significand not.
    const __mmask16 sub_lo = _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(lo_bits, exp_mask), lo_bits, man_mask);
    const __mmask16 sub_hi = _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(hi_bits, exp_mask), hi_bits, man_mask);
    if (sub_lo | sub_hi) {
      for (int64_t k = i; k < i + 32; ++k) d[k] = bf16(s[k]);
      continue;
    }
    _mm512_storeu_si512(d + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  for (; i < n; ++i) d[i] = bf16(s[i]);
}
bool has_avx512_bf16() {
  static const bool b = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  }();
  return b;
}
#endif
}  // namespace

namespace cpu {
void narrow_to_bf16(const float* src, bf16* dst, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (kernel_isa() == CpuKernelIsa::Avx512 && has_avx512_bf16()) return f32_to_bf16_avx512bf16(src, dst, n);
#endif
  simd_dispatch([&] {
    const float* __restrict s = src;
    bf16* __restrict d = dst;
    const int64_t count = n;
    for (int64_t k = 0; k < count; ++k) d[k] = bf16(s[k]);
  });
}
}  // namespace cpu

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  if (overlapping_views(dst, src) && !(dst.is_contiguous() && src.is_contiguous() && dst.dtype() == src.dtype())) {
    // The strided loop would read elements it has already overwritten: go through a temporary
    // (contiguous same-dtype views take memmove below, which handles the overlap itself).
    Tensor tmp = make_empty(src.shape(), src.dtype(), src.device());
    copy(tmp, src);
    copy(dst, tmp);
    return;
  }
  cpu::visit_dtype(dst.dtype(), "copy", [&]<class D>() {
    cpu::visit_dtype(src.dtype(), "copy", [&]<class S>() {
      D* d = cpu::ptr<D>(dst);
      const S* s = cpu::ptr<S>(src);
      if constexpr (std::is_same_v<D, S>) {
        if (dst.is_contiguous() && src.is_contiguous()) {
          std::memmove(d, s, static_cast<size_t>(dst.numel()) * sizeof(D));
          return;
        }
      }
      if (dst.is_contiguous() && src.is_contiguous()) {
        // A dtype cast between packed tensors (autocast's casts of weights and gradients): one
        // flat loop the compiler vectorises; f32 <-> bf16 / f16 at the CPU's widest instruction set
        // (cpu_simd.h), the same bits as the scalar conversion in lowp_math.h.
        const int64_t n = dst.numel();
        constexpr bool lowp_f32 = (is_lowp_v<D> && std::is_same_v<S, float>) || (is_lowp_v<S> && std::is_same_v<D, float>);
        if constexpr (lowp_f32) {
          if constexpr (std::is_same_v<D, bf16> && std::is_same_v<S, float>) return cpu::narrow_to_bf16(s, d, n);
          cpu::simd_dispatch([&] {
            D* __restrict dd = d;
            const S* __restrict ss = s;
            const int64_t count = n;
            for (int64_t k = 0; k < count; ++k) dd[k] = static_cast<D>(ss[k]);
          });
        } else {
          for (int64_t k = 0; k < n; ++k) d[k] = static_cast<D>(s[k]);
        }
        return;
      }
      cpu::for_each_offset<2>(dst.shape(), {&dst.strides(), &src.strides()},
                              [&](const std::array<int64_t, 2>& i) { d[i[0]] = static_cast<D>(s[i[1]]); });
    });
  });
}

void CpuBackend::transfer(const Tensor& dst, const Tensor& src) {
  // Host to host: both are plain memory.
  std::memcpy(dst.impl()->data(), src.impl()->data(), static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype()));
}

namespace {
// Dropout's masks: one Philox block per element, 1 where its uniform is below `prob`. The same
// draws as philox::uniform(seed, offset + i) < prob, compared as integers: uniform = bits / 2^53
// (bits < 2^53), so uniform < prob exactly when bits < ceil(prob * 2^53) (prob * 2^53 is exact: a
// power-of-two scaling). f32 masks (dropout's) run eight elements at a time in AVX2 where the CPU has
// it (chosen at run time): 5.0 -> 1.2 ms for the CNN's [64, 9216] mask on one AMD EPYC core; bf16 /
// f16 masks through the same kernel, block by block.
template <class T>
[[gnu::always_inline]] inline void bernoulli_loop(T* o, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold) {
  const auto k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t counter = offset + static_cast<uint64_t>(i);
    uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
    uint32_t key0 = k0, key1 = k1;
    for (int round = 0; round < 10; ++round) {  // philox::philox4x32_10, written out for the vectoriser
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0, p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ key0, n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ key1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    const uint64_t bits = ((static_cast<uint64_t>(c0) << 21) ^ (static_cast<uint64_t>(c1) >> 11)) & ((1ULL << 53) - 1);
    o[i] = bits < threshold ? T(1) : T(0);
  }
}

// Eight Philox blocks at a time in AVX2 lanes: each 32x32->64-bit product of a round is two
// _mm256_mul_epu32 (the even lanes, then the odd ones shifted down), whose halves are blended back
// into the high and low words; then the 53 bits and the comparison in 64-bit lanes.
__attribute__((target("avx2"))) void bernoulli_f32_avx2(float* o, int64_t n, uint64_t seed, uint64_t offset,
                                                         uint64_t threshold) {
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), sign = _mm256_set1_epi32(INT32_MIN);
  const __m256i mask53 = _mm256_set1_epi64x((1LL << 53) - 1), thr = _mm256_set1_epi64x(static_cast<int64_t>(threshold));
  const __m256i low_words = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6), one = _mm256_set1_epi32(0x3F800000);  // 1.0f
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t first = offset + static_cast<uint64_t>(i);
    const __m256i base = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(first)));
    __m256i c0 = _mm256_add_epi32(base, lanes);
    // A lane whose low word wrapped carries into the high word (unsigned c0 < base).
    const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(base, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(first >> 32))), wrapped);
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m256i e0 = _mm256_mul_epu32(c0, m0), o0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i e1 = _mm256_mul_epu32(c2, m1), o1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(e0, 32), o0, 0xAA);
      const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(e1, 32), o1, 0xAA);
      const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int32_t>(key0)));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int32_t>(key1)));
      c0 = n0;
      c1 = lo1;
      c2 = n2;
      c3 = lo0;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    // bits = ((w0 << 21) ^ (w1 >> 11)) & (2^53 - 1) per element, in two halves of four 64-bit lanes;
    // below the threshold (both under 2^63: a signed compare is exact) gives 1.0f.
    __m128i keep[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i lo = _mm256_cvtepu32_epi64(h ? _mm256_extracti128_si256(c0, 1) : _mm256_castsi256_si128(c0));
      const __m256i hi = _mm256_cvtepu32_epi64(h ? _mm256_extracti128_si256(c1, 1) : _mm256_castsi256_si128(c1));
      const __m256i bits = _mm256_and_si256(_mm256_xor_si256(_mm256_slli_epi64(lo, 21), _mm256_srli_epi64(hi, 11)), mask53);
      const __m256i below = _mm256_cmpgt_epi64(thr, bits);  // all ones where bits < threshold
      keep[h] = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(below, low_words));
    }
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(keep[0]), keep[1], 1);
    _mm256_storeu_ps(o + i, _mm256_castsi256_ps(_mm256_and_si256(both, one)));
  }
  bernoulli_loop(o + i, n - i, seed, offset + static_cast<uint64_t>(i), threshold);
}

// GCC 12 warns "__Y may be used uninitialized" inside its own AVX-512 headers (their
// `__m512i __Y = __Y;` idiom) when these are inlined in an -O1 sanitizer build: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Eight of the sixteen draws: bits = ((w0 << 21) ^ (w1 >> 11)) & (2^53 - 1) in 64-bit lanes, kept
// where below the threshold.
__attribute__((target("avx512f"), always_inline)) inline unsigned bernoulli_keep8_avx512(__m256i w0, __m256i w1,
                                                                                        __m512i thr) {
  const __m512i lo = _mm512_cvtepu32_epi64(w0), hi = _mm512_cvtepu32_epi64(w1);
  const __m512i bits = _mm512_and_si512(_mm512_xor_si512(_mm512_slli_epi64(lo, 21), _mm512_srli_epi64(hi, 11)),
                                        _mm512_set1_epi64((1LL << 53) - 1));
  return static_cast<unsigned>(_mm512_cmplt_epi64_mask(bits, thr));
}

// The same sixteen at a time in AVX-512 lanes (twice the AVX2 kernel's rate: the MNIST CNN's
// [64, 64, 12, 12] dropout mask, 590k draws, took 2.2 ms a step in AVX2 on one Xeon core).
__attribute__((target("avx512f"))) void bernoulli_f32_avx512(float* o, int64_t n, uint64_t seed, uint64_t offset,
                                                             uint64_t threshold) {
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i thr = _mm512_set1_epi64(static_cast<int64_t>(threshold));
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint64_t first = offset + static_cast<uint64_t>(i);
    const __m512i base = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(first)));
    __m512i c0 = _mm512_add_epi32(base, lanes);
    // A lane whose low word wrapped carries into the high word (unsigned c0 < base).
    const __mmask16 wrapped = _mm512_cmplt_epu32_mask(c0, base);
    const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(first >> 32)));
    __m512i c1 = _mm512_mask_add_epi32(high, wrapped, high, _mm512_set1_epi32(1));
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m512i e0 = _mm512_mul_epu32(c0, m0), o0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
      const __m512i e1 = _mm512_mul_epu32(c2, m1), o1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
      const __m512i hi0 = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(e0, 32), o0);
      const __m512i lo0 = _mm512_mask_blend_epi32(0xAAAA, e0, _mm512_slli_epi64(o0, 32));
      const __m512i hi1 = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(e1, 32), o1);
      const __m512i lo1 = _mm512_mask_blend_epi32(0xAAAA, e1, _mm512_slli_epi64(o1, 32));
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int32_t>(key0)));
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int32_t>(key1)));
      c1 = lo1;
      c3 = lo0;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    // bits = ((w0 << 21) ^ (w1 >> 11)) & (2^53 - 1) per element, in two halves of eight 64-bit lanes.
    // (Literal half indices: the intrinsic needs an immediate, which -O1 does not fold from a loop counter.)
    const unsigned keep_lo = bernoulli_keep8_avx512(_mm512_extracti64x4_epi64(c0, 0), _mm512_extracti64x4_epi64(c1, 0), thr);
    const unsigned keep_hi = bernoulli_keep8_avx512(_mm512_extracti64x4_epi64(c0, 1), _mm512_extracti64x4_epi64(c1, 1), thr);
    const __mmask16 keep = static_cast<__mmask16>(keep_lo | (keep_hi << 8));
    _mm512_storeu_ps(o + i, _mm512_maskz_mov_ps(keep, one));
  }
  bernoulli_loop(o + i, n - i, seed, offset + static_cast<uint64_t>(i), threshold);
}
#pragma GCC diagnostic pop

// The widest of the f32 kernels this CPU runs (cpu_kernel_isa), or null for the scalar loop.
using BernoulliF32 = void (*)(float*, int64_t, uint64_t, uint64_t, uint64_t);
BernoulliF32 bernoulli_f32_kernel() {
  switch (cpu::kernel_isa()) {  // a level is in use only where the CPU supports it
    case CpuKernelIsa::Avx512: return bernoulli_f32_avx512;
    case CpuKernelIsa::Avx2: return bernoulli_f32_avx2;
    case CpuKernelIsa::Baseline: return nullptr;
  }
  return nullptr;
}

template <class T>
void bernoulli_fill(T* o, int64_t n, uint64_t seed, uint64_t offset, double prob) {
  const auto threshold = static_cast<uint64_t>(std::ceil(prob * 9007199254740992.0));  // prob * 2^53, prob <= 1
  // Counter-based, so any split gives the same mask: ranges go to set_num_threads cores.
  cpu::parallel_for(n, 8 * n, [&](int64_t begin, int64_t end) {
    const uint64_t at = offset + static_cast<uint64_t>(begin);
    if constexpr (std::is_same_v<T, float>) {
      if (const BernoulliF32 kernel = bernoulli_f32_kernel()) return kernel(o + begin, end - begin, seed, at, threshold);
    } else if constexpr (is_lowp_v<T>) {
      // bf16 / f16 masks (dropout under autocast): the f32 kernel's 0s and 1s in blocks of 256, each
      // converted exactly.
      if (const BernoulliF32 kernel = bernoulli_f32_kernel()) {
        float block[256];
        for (int64_t i = begin; i < end; i += 256) {
          const int64_t len = std::min<int64_t>(256, end - i);
          kernel(block, len, seed, offset + static_cast<uint64_t>(i), threshold);
          for (int64_t k = 0; k < len; ++k) o[i + k] = block[k] != 0.0f ? T(1.0f) : T(0.0f);
        }
        return;
      }
    }
    bernoulli_loop(o + begin, end - begin, seed, at, threshold);
  });
}
}  // namespace

void CpuBackend::random(const Tensor& out, const RandomParams& p) {
  cpu::visit_dtype(out.dtype(), "random", [&]<class T>() {
    T* o = cpu::ptr<T>(out);
    const int64_t n = out.numel();
    switch (p.kind) {
      case RandomKind::Uniform:
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(p.a + (p.b - p.a) * philox::uniform(p.seed, p.offset + i));
        return;
      case RandomKind::Normal:
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(p.a + p.b * philox::normal(p.seed, p.offset + i));
        return;
      case RandomKind::Int: {
        auto lo = static_cast<int64_t>(p.a), hi = static_cast<int64_t>(p.b);
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(philox::integer(p.seed, p.offset + i, lo, hi));
        return;
      }
      case RandomKind::Bernoulli:
        bernoulli_fill(o, n, p.seed, p.offset, p.a);
        return;
    }
    throw_unhandled("random", "RandomKind", static_cast<int>(p.kind), "cpu");
  });
}

}  // namespace ember
