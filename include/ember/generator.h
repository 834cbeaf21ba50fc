// Generator: a counter-based (Philox-4x32-10) random stream, identical on CPU and CUDA.
#pragma once
#include <cstdint>

#include "ember/export.h"

namespace ember {

// A seed and a counter offset. Each random fill of n elements uses counters [offset, offset + n)
// and advances the offset by n, so the numbers depend only on (seed, offset, index), never on
// the device or the thread layout.
class EMBER_API Generator {
 public:
  explicit Generator(uint64_t seed = 0x853c49e6748fea9bULL) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void manual_seed(uint64_t seed) { seed_ = seed; offset_ = 0; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) { uint64_t o = offset_; offset_ += n; return o; }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process-wide default generator used when none is passed.
EMBER_API Generator& default_generator();
EMBER_API void manual_seed(uint64_t seed);

}  // namespace ember
