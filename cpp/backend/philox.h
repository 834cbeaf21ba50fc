// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and the
// conversions to uniform, normal and integer values. Shared by the CPU loops and CUDA kernels so
// one (seed, counter) gives the same number on every device.
#pragma once
#include <cmath>
#include <cstdint>

#include "cpp/backend/host_device.h"

namespace ember::philox {

struct U32x4 {
  uint32_t x[4];
};

EMBER_HOST_DEVICE uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Ten rounds over the 128-bit counter (the element's counter in the low 64 bits) keyed by the seed.
EMBER_HOST_DEVICE U32x4 philox4x32_10(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 53 random bits from two words (exact in f64; rounded once for f32).
EMBER_HOST_DEVICE double to_unit(uint32_t a, uint32_t b) {
  uint64_t bits = (static_cast<uint64_t>(a) << 21) ^ (static_cast<uint64_t>(b) >> 11);
  bits &= (1ULL << 53) - 1;
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

EMBER_HOST_DEVICE double uniform(uint64_t seed, uint64_t counter) {
  U32x4 r = philox4x32_10(seed, counter);
  return to_unit(r.x[0], r.x[1]);
}

// Standard normal by Box-Muller from the element's own four words (no pairing between elements,
// so any element can be computed alone).
EMBER_HOST_DEVICE double normal(uint64_t seed, uint64_t counter) {
  U32x4 r = philox4x32_10(seed, counter);
  double u1 = 1.0 - to_unit(r.x[0], r.x[1]);  // (0, 1]: log() stays finite
  double u2 = to_unit(r.x[2], r.x[3]);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Integer in [low, high): 64 random bits reduced modulo the range (bias below 2^-40 for ranges
// under 2^24, which covers labels and indices).
EMBER_HOST_DEVICE int64_t integer(uint64_t seed, uint64_t counter, int64_t low, int64_t high) {
  U32x4 r = philox4x32_10(seed, counter);
  uint64_t bits = (static_cast<uint64_t>(r.x[0]) << 32) | r.x[1];
  uint64_t range = static_cast<uint64_t>(high - low);
  return low + static_cast<int64_t>(bits % range);
}

}  // namespace ember::philox
