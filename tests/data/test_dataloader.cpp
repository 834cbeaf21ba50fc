// DataLoader tests: batch shapes, drop_last, coverage and order per seed and epoch, normalisation,
// the loader thread's shutdown and error path, augmentation, gather_normalize and the CUDA path.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <numeric>
#include <set>

#include "cpp/backend/backend.h"
#include "cpp/backend/philox.h"
#include "cpp/core/tensor_impl.h"
#include "data/data_test_util.h"
#include "ember/cuda.h"
#include "ember/data.h"

using namespace ember;
using namespace ember::test;
using data::Batch;
using data::DataLoader;
using data::DataLoaderOptions;
using data::TensorDataset;

namespace {

// n images of rows x cols whose pixels identify the image; label i for image i, so a batch's labels
// say which samples it holds.
TensorDataset numbered_dataset(int64_t n, int64_t rows = 3, int64_t cols = 4) {
  std::vector<uint8_t> px(static_cast<size_t>(n * rows * cols));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>((i * 7 + i / 12) % 256);
  std::vector<int64_t> y(static_cast<size_t>(n));
  std::iota(y.begin(), y.end(), int64_t{0});
  return TensorDataset(from_vector<uint8_t>(px, {n, rows, cols}), from_vector<int64_t>(y, {n}));
}

// 28x28 images with a bright off-centre bar, so that shifting or rotating changes pixels.
TensorDataset bar_dataset(int64_t n) {
  std::vector<uint8_t> px(static_cast<size_t>(n * 784), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 6; r < 22; ++r)
      for (int64_t c = 10 + i % 5; c < 14 + i % 5; ++c) px[static_cast<size_t>(i * 784 + r * 28 + c)] = 255;
  std::vector<int64_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) y[i] = i % 10;
  return TensorDataset(from_vector<uint8_t>(px, {n, 28, 28}), from_vector<int64_t>(y, {n}));
}

DataLoaderOptions opts(int64_t batch, bool shuffle = false, uint64_t seed = 0) {
  DataLoaderOptions o;
  o.batch_size = batch;
  o.shuffle = shuffle;
  o.seed = seed;
  return o;
}

// The backend that made `t` (libember hides cpu_backend()/cuda_backend(); a Storage records its owner).
Backend& backend_of(const Tensor& t) { return *t.impl()->storage->owner; }

std::vector<int64_t> epoch_labels(DataLoader& loader) {
  std::vector<int64_t> all;
  while (std::optional<Batch> b = loader.next()) {
    std::vector<int64_t> y = b->y.to_vector<int64_t>();
    all.insert(all.end(), y.begin(), y.end());
  }
  return all;
}

std::vector<float> epoch_pixels(DataLoader& loader) {
  std::vector<float> all;
  for (Batch& b : loader) {
    std::vector<float> x = b.x.to_vector<float>();
    all.insert(all.end(), x.begin(), x.end());
  }
  return all;
}

float normalized(uint8_t v, double mean = 0.1307, double std = 0.3081) {
  return static_cast<float>((v / 255.0 - mean) / std);
}

TEST(DataLoader, BatchShapesAndPartialLastBatch) {
  DataLoader loader(numbered_dataset(10), opts(4));
  EXPECT_EQ(loader.num_batches(), 3);
  std::vector<Shape> x_shapes, y_shapes;
  for (Batch& b : loader) {
    EXPECT_EQ(b.x.dtype(), DType::F32);
    EXPECT_EQ(b.y.dtype(), DType::I64);
    EXPECT_EQ(b.x.device(), Device::cpu());
    x_shapes.push_back(b.x.shape());
    y_shapes.push_back(b.y.shape());
  }
  EXPECT_EQ(x_shapes, (std::vector<Shape>{{4, 12}, {4, 12}, {2, 12}}));
  EXPECT_EQ(y_shapes, (std::vector<Shape>{{4}, {4}, {2}}));

  DataLoaderOptions image_layout = opts(4);
  image_layout.flatten = false;
  DataLoader images(numbered_dataset(10), image_layout);
  EXPECT_EQ(images.next()->x.shape(), (Shape{4, 1, 3, 4}));
}

TEST(DataLoader, DropLast) {
  DataLoaderOptions o = opts(4, true, 5);
  o.drop_last = true;
  DataLoader loader(numbered_dataset(10), o);
  EXPECT_EQ(loader.num_batches(), 2);
  int batches = 0;
  for (Batch& b : loader) {
    EXPECT_EQ(b.y.numel(), 4);
    ++batches;
  }
  EXPECT_EQ(batches, 2);
  // Exactly divisible: nothing dropped.
  o.batch_size = 5;
  EXPECT_EQ(DataLoader(numbered_dataset(10), o).num_batches(), 2);
}

TEST(DataLoader, HugeBatchSizeIsOneBatchOfEverything) {
  // (n + b - 1) / b overflowed for b near INT64_MAX: 0 batches, and a trainer that trained nothing.
  DataLoader loader(numbered_dataset(10), opts(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(loader.num_batches(), 1);
  std::vector<int64_t> sizes;
  for (Batch& b : loader) sizes.push_back(b.y.numel());
  EXPECT_EQ(sizes, (std::vector<int64_t>{10}));
  DataLoaderOptions o = opts(std::numeric_limits<int64_t>::max() - 3);
  o.drop_last = true;
  EXPECT_EQ(DataLoader(numbered_dataset(10), o).num_batches(), 0);
}

TEST(DataLoader, EverySampleOncePerEpochWithItsOwnImage) {
  const TensorDataset ds = numbered_dataset(23);
  const std::vector<uint8_t> px = ds.images().to_vector<uint8_t>();
  DataLoader loader(ds, opts(5, true, 42));
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen;
    for (Batch& b : loader) {
      const std::vector<int64_t> y = b.y.to_vector<int64_t>();
      const std::vector<float> x = b.x.to_vector<float>();
      for (size_t k = 0; k < y.size(); ++k)
        for (size_t j = 0; j < 12; ++j)
          ASSERT_FLOAT_EQ(x[k * 12 + j], normalized(px[static_cast<size_t>(y[k]) * 12 + j])) << "sample " << y[k];
      seen.insert(seen.end(), y.begin(), y.end());
    }
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(23);
    std::iota(all.begin(), all.end(), int64_t{0});
    EXPECT_EQ(sorted, all) << "epoch " << epoch;
    EXPECT_NE(seen, all) << "epoch " << epoch << " was not shuffled";
  }
}

TEST(DataLoader, NoShuffleKeepsDatasetOrder) {
  DataLoader loader(numbered_dataset(7), opts(3));
  std::vector<int64_t> all(7);
  std::iota(all.begin(), all.end(), int64_t{0});
  EXPECT_EQ(epoch_labels(loader), all);
  EXPECT_EQ(epoch_labels(loader), all);
}

TEST(DataLoader, OrderIsAFunctionOfSeedAndEpoch) {
  const TensorDataset ds = numbered_dataset(64);
  DataLoader a(ds, opts(8, true, 7)), b(ds, opts(16, true, 7)), c(ds, opts(8, true, 8));
  const std::vector<int64_t> a0 = epoch_labels(a), a1 = epoch_labels(a), a2 = epoch_labels(a);
  EXPECT_EQ(a0, epoch_labels(b));  // the batch size does not change the order
  EXPECT_EQ(a1, epoch_labels(b));
  EXPECT_NE(a0, a1);
  EXPECT_NE(a1, a2);
  EXPECT_NE(a0, epoch_labels(c));  // another seed, another order
  // set_epoch replays an epoch exactly, as a resumed run needs.
  DataLoader resumed(ds, opts(8, true, 7));
  resumed.set_epoch(2);
  EXPECT_EQ(epoch_labels(resumed), a2);
  EXPECT_EQ(resumed.next_epoch(), 3);
}

TEST(DataLoader, NormalisationValues) {
  const TensorDataset ds = numbered_dataset(4);
  const std::vector<uint8_t> px = ds.images().to_vector<uint8_t>();
  DataLoaderOptions o = opts(4);
  o.mean = 0.5;
  o.std = 0.25;
  DataLoader loader(ds, o);
  const std::vector<float> x = loader.next()->x.to_vector<float>();
  ASSERT_EQ(x.size(), px.size());
  for (size_t i = 0; i < px.size(); ++i) EXPECT_FLOAT_EQ(x[i], static_cast<float>((px[i] / 255.0 - 0.5) / 0.25));
  // The MNIST defaults: 0 -> -0.4242, 255 -> 2.8215.
  TensorDataset extremes(from_vector<uint8_t>({0, 255}, {1, 1, 2}), from_vector<int64_t>({3}, {1}));
  const std::vector<float> e = DataLoader(extremes, opts(1)).next()->x.to_vector<float>();
  EXPECT_NEAR(e[0], -0.424213, 1e-6);
  EXPECT_NEAR(e[1], 2.821487, 1e-6);
}

TEST(DataLoader, StopsItsThreadMidEpoch) {
  const TensorDataset ds = numbered_dataset(2000);
  const auto start = std::chrono::steady_clock::now();
  // Each loader is destroyed with its thread waiting on a full queue, or mid-batch.
  for (int round = 0; round < 20; ++round) {
    DataLoaderOptions o = opts(1, true, static_cast<uint64_t>(round));
    o.prefetch = 1 + round % 4;
    DataLoader loader(ds, o);
    ASSERT_TRUE(loader.next().has_value());
    if (round % 2) loader.set_epoch(5);  // abandons the running epoch
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // begin() mid-epoch abandons the rest and runs the next epoch in full.
  DataLoader loader(numbered_dataset(10), opts(3));
  loader.next();
  int batches = 0;
  for (Batch& b : loader) {
    (void)b;
    ++batches;
  }
  EXPECT_EQ(batches, 4);
  EXPECT_EQ(loader.next_epoch(), 2);
}

TEST(DataLoader, TransformSeesEachSampleAndItsIndex) {
  const TensorDataset ds = numbered_dataset(6);
  const std::vector<uint8_t> px = ds.images().to_vector<uint8_t>();
  DataLoaderOptions o = opts(4, true, 3);
  std::atomic<int> calls{0};
  o.transform = [&](const Tensor& image, int64_t index) {
    ++calls;
    EXPECT_EQ(image.shape(), (Shape{3, 4}));
    EXPECT_EQ(image.to_vector<uint8_t>()[0], px[static_cast<size_t>(index) * 12]);
    return rsub(image.to(DType::I64), 255.0).to(DType::U8);  // inverts the image
  };
  DataLoader loader(ds, o);
  for (Batch& b : loader) {
    const std::vector<int64_t> y = b.y.to_vector<int64_t>();
    const std::vector<float> x = b.x.to_vector<float>();
    for (size_t k = 0; k < y.size(); ++k)
      for (size_t j = 0; j < 12; ++j)
        EXPECT_FLOAT_EQ(x[k * 12 + j], normalized(static_cast<uint8_t>(255 - px[static_cast<size_t>(y[k]) * 12 + j])));
  }
  EXPECT_EQ(calls.load(), 6);
}

TEST(DataLoader, LoaderThreadErrorsReachTheConsumer) {
  DataLoaderOptions o = opts(2);
  std::atomic<bool> fail{true};
  o.transform = [&](const Tensor& image, int64_t index) {
    if (index == 5 && fail) throw Error("bad sample 5");
    return image;
  };
  DataLoader loader(numbered_dataset(8), o);
  // Batches made before the failure arrive first, then the error, with where it happened.
  EXPECT_TRUE(loader.next().has_value());
  EXPECT_TRUE(loader.next().has_value());
  EXPECT_TRUE(throws_with([&] { loader.next(); }, {"DataLoader: epoch 0, batch 2", "loader thread", "bad sample 5"}));
  // The failed epoch is over; the next one runs.
  fail = false;
  EXPECT_EQ(loader.next_epoch(), 1);
  EXPECT_EQ(epoch_labels(loader).size(), 8u);

  DataLoaderOptions shape = opts(2);
  shape.transform = [](const Tensor& image, int64_t) { return image.reshape({12}); };
  DataLoader bad(numbered_dataset(4), shape);
  EXPECT_TRUE(throws_with([&] { bad.next(); }, {"transform returned u8 [12]", "expected U8 [3, 4]"}));
}

TEST(DataLoader, AugmentationIsSeededChangesPixelsKeepsLabels) {
  const TensorDataset ds = bar_dataset(40);
  DataLoaderOptions plain = opts(16, true, 11), aug = plain;
  aug.augment = true;
  DataLoader p(ds, plain), a1(ds, aug), a2(ds, aug);
  std::vector<int64_t> yp, ya;
  const std::vector<float> xp = epoch_pixels(p);
  p.set_epoch(0);
  yp = epoch_labels(p);
  const std::vector<float> x1 = epoch_pixels(a1), x2 = epoch_pixels(a2);
  a1.set_epoch(0);
  ya = epoch_labels(a1);
  EXPECT_EQ(x1, x2);  // same seed, same augmented pixels
  EXPECT_EQ(ya, yp);  // augmentation leaves the order and the labels alone
  ASSERT_EQ(x1.size(), xp.size());
  int changed = 0;
  for (size_t s = 0; s < 40; ++s)
    changed += !std::equal(x1.begin() + static_cast<std::ptrdiff_t>(s * 784),
                           x1.begin() + static_cast<std::ptrdiff_t>((s + 1) * 784),
                           xp.begin() + static_cast<std::ptrdiff_t>(s * 784));
  EXPECT_GE(changed, 38);  // a draw of exactly zero rotation and shift is all but impossible
  // Each epoch draws anew.
  a1.set_epoch(1);
  EXPECT_NE(epoch_pixels(a1), x1);
  // The bar keeps most of its mass: a shift of 2 px and 10 degrees move it, not erase it.
  double mass_plain = 0, mass_aug = 0;
  for (size_t i = 0; i < xp.size(); ++i) {
    mass_plain += xp[i] > 0 ? 1 : 0;
    mass_aug += x1[i] > 0 ? 1 : 0;
  }
  EXPECT_NEAR(mass_aug / mass_plain, 1.0, 0.25);
}

TEST(DataLoader, RotateTranslate) {
  const Tensor img = from_vector<uint8_t>(pattern(28 * 28, 5), {28, 28});
  EXPECT_EQ(data::rotate_translate(img, 0, 0, 0).to_vector<uint8_t>(), img.to_vector<uint8_t>());
  // Whole-pixel shifts move pixels exactly: right by 2, up by 1; zeros come in at the edges.
  const std::vector<uint8_t> src = img.to_vector<uint8_t>(),
                             moved = data::rotate_translate(img, 0, 2, -1).to_vector<uint8_t>();
  for (int r = 0; r < 28; ++r)
    for (int c = 0; c < 28; ++c) {
      const int sr = r + 1, sc = c - 2;
      const uint8_t want = (sr < 28 && sc >= 0) ? src[static_cast<size_t>(sr * 28 + sc)] : 0;
      ASSERT_EQ(moved[static_cast<size_t>(r * 28 + c)], want) << r << "," << c;
    }
  // Shifted out of the frame: all background, however far.
  for (double far : {40.0, -40.5, 1e300}) {
    const std::vector<uint8_t> gone = data::rotate_translate(img, 5, far, 0).to_vector<uint8_t>();
    EXPECT_EQ(std::count(gone.begin(), gone.end(), 0), 784) << far;
  }
  // 90 degrees counter-clockwise on screen: the pixel right of the centre goes above it.
  Tensor dot = zeros({3, 3}, DType::U8);
  dot.data<uint8_t>()[1 * 3 + 2] = 200;
  const std::vector<uint8_t> turned = data::rotate_translate(dot, 90, 0, 0).to_vector<uint8_t>();
  EXPECT_EQ(turned, (std::vector<uint8_t>{0, 200, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_TRUE(throws_with(
      [&] {
        data::rotate_translate(zeros({3, 3}), 0, 0, 0);
      },
      {"rotate_translate", "U8 [rows, cols]"}));
}

TEST(DataLoader, GatherNormalizeMatchesTheHostPath) {
  const TensorDataset ds = numbered_dataset(9);
  const Tensor idx = from_vector<int64_t>({8, 0, 3, 3});
  const Tensor x = data::gather_normalize(ds.images(), idx, 0.1307, 0.3081);
  EXPECT_EQ(x.shape(), (Shape{4, 3, 4}));
  EXPECT_EQ(x.dtype(), DType::F32);
  const std::vector<uint8_t> px = ds.images().to_vector<uint8_t>();
  const std::vector<float> v = x.to_vector<float>();
  const int64_t rows[] = {8, 0, 3, 3};
  for (size_t k = 0; k < 4; ++k)
    for (size_t j = 0; j < 12; ++j)
      EXPECT_NEAR(v[k * 12 + j], normalized(px[static_cast<size_t>(rows[k]) * 12 + j]), 1e-6);
  EXPECT_TRUE(throws_with([&] { data::gather_normalize(ds.images(), from_vector<int64_t>({9}), 0.1, 0.3); },
                          {"gather_normalize", "[9, 9]", "number of images is 9"}));
  EXPECT_TRUE(throws_with([&] { data::gather_normalize(ds.images(), idx, 0.1, 0.0); }, {"std 0", "std > 0"}));
  EXPECT_TRUE(throws_with([&] { data::gather_normalize(ds.images().to(DType::F32), idx, 0.1, 0.3); }, {"U8"}));
}

TEST(DataLoader, RejectsBadOptionsAndDatasets) {
  const TensorDataset ds = numbered_dataset(4);
  DataLoaderOptions o = opts(0);
  EXPECT_TRUE(throws_with([&] { DataLoader(ds, o); }, {"batch_size is 0"}));
  o = opts(2);
  o.prefetch = 0;
  EXPECT_TRUE(throws_with([&] { DataLoader(ds, o); }, {"prefetch is 0"}));
  o = opts(2);
  o.std = -1;
  EXPECT_TRUE(throws_with([&] { DataLoader(ds, o); }, {"std -1", "std > 0"}));
  o = opts(2);
  o.augment = true;
  TensorDataset flat(zeros({4, 12}, DType::U8), zeros({4}, DType::I64));
  EXPECT_TRUE(throws_with([&] { DataLoader(flat, o); }, {"augment", "[N, rows, cols]", "[4, 12]"}));
  EXPECT_TRUE(throws_with([&] { DataLoader(ds, opts(2)).set_epoch(-1); }, {"set_epoch", "-1"}));
  EXPECT_TRUE(throws_with(
      [&] {
        TensorDataset(zeros({4, 2, 2}, DType::U8), zeros({3}, DType::I64));
      },
      {"4 images", "3 labels", "equal counts"}));
  EXPECT_TRUE(throws_with([&] { TensorDataset(zeros({4, 2, 2}), zeros({4}, DType::I64)); }, {"U8", "f32"}));
  EXPECT_TRUE(throws_with([&] { TensorDataset(zeros({4, 2, 2}, DType::U8), zeros({4}, DType::I32)); }, {"I64", "i32"}));
  // Flat images are fine without augmentation: x is [B, features].
  EXPECT_EQ(DataLoader(flat, opts(3)).next()->x.shape(), (Shape{3, 12}));
}

// The device-resident path on a GPU (permutation, gather, augmentation and normalisation on the
// device) against the CPU loader thread. Equal, not close: the same data_math.h code, and data.cu is
// compiled without fused multiply-adds. (With 0/255 pixels, a last-bit difference between the
// device's and glibc's sin/cos could flip a u8 rounding only if a bilinear value fell within ~1e-13 of
// a half: not a case these images reach.)
TEST(DataLoader, CudaBatchesMatchTheCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  const TensorDataset ds = bar_dataset(50);
  for (bool augment : {false, true}) {
    SCOPED_TRACE(augment ? "augment" : "plain");
    DataLoaderOptions o = opts(16, true, 9);
    o.augment = augment;
    DataLoaderOptions g = o;
    g.device = Device::cuda();
    DataLoader cpu(ds, o), gpu(ds, g);
    for (int epoch = 0; epoch < 2; ++epoch) {
      while (std::optional<Batch> c = cpu.next()) {
        std::optional<Batch> d = gpu.next();
        ASSERT_TRUE(d.has_value());
        EXPECT_EQ(d->x.device(), Device::cuda());
        EXPECT_EQ(d->y.device(), Device::cuda());
        EXPECT_EQ(d->y.cpu().to_vector<int64_t>(), c->y.to_vector<int64_t>());
        EXPECT_EQ(d->x.cpu().to_vector<float>(), c->x.to_vector<float>());
      }
      EXPECT_FALSE(gpu.next().has_value());
    }
  }
}

TEST(DataLoader, CudaPermutationMatchesTheCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  for (int64_t n : {1, 33, 60000}) {
    Tensor c = empty({n}, DType::I64), d = empty({n}, TensorOptions(DType::I64, Device::cuda()));
    backend_of(c).random_permutation(c, 5, uint64_t{9} << 40);
    backend_of(d).random_permutation(d, 5, uint64_t{9} << 40);
    EXPECT_EQ(d.cpu().to_vector<int64_t>(), c.to_vector<int64_t>()) << n;
  }
  // gather_normalize (checked indices) on the device equals the host's.
  const TensorDataset ds = numbered_dataset(9);
  const Tensor idx = from_vector<int64_t>({8, 0, 3, 3});
  EXPECT_EQ(data::gather_normalize(ds.images().to(Device::cuda()), idx.to(Device::cuda()), 0.2, 0.3).cpu().to_vector<float>(),
            data::gather_normalize(ds.images(), idx, 0.2, 0.3).to_vector<float>());
}

}  // namespace
