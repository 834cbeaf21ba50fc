// The DataLoader's scaling, crop-with-padding and horizontal flip, each against the formula worked
// out here from the Philox words (and a naive bilinear sampler), seeded, and on CUDA equal to the CPU.
#include <cmath>

#include "cpp/backend/philox.h"
#include "ember/cuda.h"
#include "ember/data.h"
#include "test_util.h"

using namespace ember;
using data::DataLoader;
using data::DataLoaderOptions;
using ember::test::throws_with;

namespace {

constexpr int64_t kRows = 6, kCols = 7, kN = 24;
constexpr uint64_t kSeed = 21;

std::vector<uint8_t> pixels() {
  std::vector<uint8_t> px(static_cast<size_t>(kN * kRows * kCols));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(1 + (i * 37 + i / 5) % 254);
  return px;
}

data::TensorDataset dataset() {
  std::vector<int64_t> y(kN);
  for (int64_t i = 0; i < kN; ++i) y[static_cast<size_t>(i)] = i % 10;
  return data::TensorDataset(from_vector<uint8_t>(pixels(), {kN, kRows, kCols}), from_vector<int64_t>(y));
}

// Unshuffled, one batch, mean 0 and std 1: x = float(v / 255), sample i at position i.
DataLoaderOptions options(const data::AugmentOptions& a) {
  DataLoaderOptions o;
  o.batch_size = kN;
  o.seed = kSeed;
  o.flatten = false;
  o.mean = 0.0;
  o.std = 1.0;
  o.augment = true;
  o.augment_options = a;
  return o;
}

std::vector<float> first_batch(const DataLoaderOptions& o) {
  DataLoader l(dataset(), o);
  return l.next()->x.cpu().to_vector<float>();
}

// Epoch 0's augmentation counter of position p (DataLoader: epoch << 40 | stream 1 << 38 | p).
uint64_t counter(int64_t p) { return (uint64_t{1} << 38) | static_cast<uint64_t>(p); }
philox::U32x4 extra_words(int64_t p) { return philox::philox4x32_10(kSeed ^ 0x9E3779B97F4A7C15ull, counter(p)); }

float as_input(double v) { return static_cast<float>(v / 255.0); }

}  // namespace

TEST(AugmentExtras, FlipMirrorsExactlyTheSamplesItsCoinPicks) {
  data::AugmentOptions a{.max_shift = 0, .max_degrees = 0, .hflip = true};
  const std::vector<float> x = first_batch(options(a));
  const std::vector<uint8_t> px = pixels();
  int flipped = 0;
  for (int64_t i = 0; i < kN; ++i) {
    const bool flip = extra_words(i).x[2] < 0x80000000u;
    flipped += flip;
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < kCols; ++c) {
        const int64_t src_c = flip ? kCols - 1 - c : c;
        ASSERT_EQ(x[static_cast<size_t>((i * kRows + r) * kCols + c)],
                  as_input(px[static_cast<size_t>((i * kRows + r) * kCols + src_c)]))
            << "sample " << i << " pixel " << r << "," << c;
      }
  }
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, kN);
}

TEST(AugmentExtras, CropWithPaddingIsAWholePixelShiftWithZeros) {
  const int64_t pad = 2;
  data::AugmentOptions a{.max_shift = 0, .max_degrees = 0, .crop_padding = pad};
  const std::vector<float> x = first_batch(options(a));
  const std::vector<uint8_t> px = pixels();
  int moved = 0;
  for (int64_t i = 0; i < kN; ++i) {
    const philox::U32x4 e = extra_words(i);
    // Crop of the padded image at offset (ox, oy): output (r, c) is source (r + oy - pad, c + ox - pad).
    const auto ox = static_cast<int64_t>((e.x[0] * uint64_t{2 * pad + 1}) >> 32);
    const auto oy = static_cast<int64_t>((e.x[1] * uint64_t{2 * pad + 1}) >> 32);
    moved += ox != pad || oy != pad;
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < kCols; ++c) {
        const int64_t sr = r + oy - pad, sc = c + ox - pad;
        const double want = sr >= 0 && sr < kRows && sc >= 0 && sc < kCols ? px[static_cast<size_t>((i * kRows + sr) * kCols + sc)] : 0;
        ASSERT_EQ(x[static_cast<size_t>((i * kRows + r) * kCols + c)], as_input(want))
            << "sample " << i << " pixel " << r << "," << c << " offset " << ox << "," << oy;
      }
  }
  EXPECT_GT(moved, kN / 2);
}

// Scaling by s about the centre: output q samples the source bilinearly at (q - centre) / s + centre.
TEST(AugmentExtras, ScalingSamplesTheSourceAtTheScaledPosition) {
  data::AugmentOptions a{.max_shift = 0, .max_degrees = 0, .max_scale = 0.3};
  const std::vector<float> x = first_batch(options(a));
  const std::vector<uint8_t> px = pixels();
  for (int64_t i = 0; i < kN; ++i) {
    const philox::U32x4 w = philox::philox4x32_10(kSeed, counter(i));
    const double s = 1.0 + (2.0 * (w.x[3] / 4294967296.0) - 1.0) * 0.3;
    ASSERT_GE(s, 0.7);
    ASSERT_LE(s, 1.3);
    auto at = [&](int64_t r, int64_t c) -> double {
      return r >= 0 && r < kRows && c >= 0 && c < kCols ? px[static_cast<size_t>((i * kRows + r) * kCols + c)] : 0.0;
    };
    const double cy = (kRows - 1) / 2.0, cx = (kCols - 1) / 2.0;
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < kCols; ++c) {
        const double sy = (r - cy) / s + cy, sx = (c - cx) / s + cx;
        const double y0 = std::floor(sy), x0 = std::floor(sx), fy = sy - y0, fx = sx - x0;
        const auto iy = static_cast<int64_t>(y0), ix = static_cast<int64_t>(x0);
        const double v = (1 - fy) * ((1 - fx) * at(iy, ix) + fx * at(iy, ix + 1)) +
                         fy * ((1 - fx) * at(iy + 1, ix) + fx * at(iy + 1, ix + 1));
        // Rounded to u8; a value within 1e-9 of a half could round either way in the last bit.
        const double frac = v - std::floor(v);
        if (std::abs(frac - 0.5) < 1e-9) continue;
        ASSERT_EQ(x[static_cast<size_t>((i * kRows + r) * kCols + c)], as_input(std::floor(v + 0.5)))
            << "sample " << i << " pixel " << r << "," << c << " scale " << s;
      }
  }
}

TEST(AugmentExtras, SeededAndOffByDefault) {
  data::AugmentOptions all{.max_scale = 0.2, .crop_padding = 3, .hflip = true};
  EXPECT_EQ(first_batch(options(all)), first_batch(options(all)));
  // With the new options at their defaults the augmentation is the rotation and shift alone.
  data::AugmentOptions defaults;
  EXPECT_EQ(defaults.max_scale, 0.0);
  EXPECT_EQ(defaults.crop_padding, 0);
  EXPECT_FALSE(defaults.hflip);
  data::AugmentOptions rot = all;
  rot.max_scale = 0;
  rot.crop_padding = 0;
  rot.hflip = false;
  DataLoaderOptions o = options(rot);
  EXPECT_EQ(first_batch(o), first_batch(options(data::AugmentOptions{.max_shift = all.max_shift, .max_degrees = all.max_degrees})));
  data::AugmentOptions bad{.max_scale = 0.6};
  EXPECT_TRUE(throws_with([&] { DataLoader(dataset(), options(bad)); }, {"max_scale 0.6", "[0, 0.5]"}));
  data::AugmentOptions neg{.crop_padding = -1};
  EXPECT_TRUE(throws_with([&] { DataLoader(dataset(), options(neg)); }, {"crop_padding -1"}));
}

// The device-resident path draws and applies the same warps: equal, not close (data_math.h on both).
TEST(AugmentExtras, CudaMatchesTheCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  data::AugmentOptions all{.max_scale = 0.2, .crop_padding = 3, .hflip = true};
  DataLoaderOptions c = options(all), g = c;
  c.shuffle = g.shuffle = true;
  g.device = Device::cuda();
  DataLoader cpu(dataset(), c), gpu(dataset(), g);
  for (int epoch = 0; epoch < 2; ++epoch)
    while (std::optional<data::Batch> b = cpu.next()) {
      std::optional<data::Batch> d = gpu.next();
      ASSERT_TRUE(d.has_value());
      EXPECT_EQ(d->x.cpu().to_vector<float>(), b->x.to_vector<float>());
      EXPECT_EQ(d->y.cpu().to_vector<int64_t>(), b->y.to_vector<int64_t>());
    }
}
