// CPU backend: the data pipeline's primitives (random_permutation, gather_batch), the reference the
// CUDA kernels in cuda/kernels/data.cu are checked against. Arithmetic: data_math.h.
#include <algorithm>
#include <numeric>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/data_math.h"

namespace ember {

void CpuBackend::random_permutation(const Tensor& out, uint64_t seed, uint64_t counter) {
  const int64_t n = out.numel();
  std::vector<uint64_t> keys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) keys[static_cast<size_t>(i)] = data_math::permutation_key(seed, counter + static_cast<uint64_t>(i));
  int64_t* o = cpu::ptr<int64_t>(out);
  std::iota(o, o + n, int64_t{0});
  std::stable_sort(o, o + n, [&](int64_t a, int64_t b) { return keys[static_cast<size_t>(a)] < keys[static_cast<size_t>(b)]; });
}

void CpuBackend::gather_batch(const Tensor& x, const Tensor& y, const Tensor& images, const Tensor& labels,
                              const Tensor& order, const BatchParams& p) {
  const int64_t n = images.size(0);
  const int64_t pixels = n > 0 ? images.numel() / n : 0;
  const int64_t batch = pixels > 0 ? x.numel() / pixels : (y.defined() ? y.numel() : 0);
  const int64_t rows = images.dim() == 3 ? images.size(1) : 0, cols = images.dim() == 3 ? images.size(2) : 0;
  const uint8_t* src = cpu::ptr<uint8_t>(images);
  const int64_t* ord = cpu::ptr<int64_t>(order);
  const int64_t ord_stride = order.stride(0);
  float* out = cpu::ptr<float>(x);
  // normalize_pixel of each of the 256 u8 values: the same floats, without a division per pixel.
  float lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = data_math::normalize_pixel(static_cast<uint8_t>(v), p.mean, p.std);
  // Shuffled images are far apart in memory: each one's first read waits for DRAM (half of this
  // loop's time in an MLP epoch). Ask for the image two ahead while converting this one.
  constexpr int64_t kAhead = 2;
  auto prefetch = [&](int64_t b) {
    if (b >= batch) return;
    const uint8_t* img = src + ord[(p.first + b) * ord_stride] * pixels;
    for (int64_t off = 0; off < pixels; off += 64) __builtin_prefetch(img + off);
  };
  for (int64_t b = 0; b < kAhead; ++b) prefetch(b);
  for (int64_t b = 0; b < batch; ++b) {
    prefetch(b + kAhead);
    const int64_t pos = p.first + b, index = ord[pos * ord_stride];
    const uint8_t* img = src + index * pixels;
    float* row = out + b * pixels;
    if (p.augment) {
      const data_math::Warp w =
          data_math::random_warp(p.seed, p.augment_counter + static_cast<uint64_t>(pos), p.max_degrees, p.max_shift,
                                 p.max_scale, p.crop_padding, p.hflip);
      for (int64_t yy = 0; yy < rows; ++yy)
        for (int64_t xx = 0; xx < cols; ++xx)
          row[yy * cols + xx] = lut[data_math::warp_pixel(img, rows, cols, yy, xx, w)];
    } else {
      for (int64_t j = 0; j < pixels; ++j) row[j] = lut[img[j]];
    }
  }
  if (y.defined()) {
    const int64_t* lab = cpu::ptr<int64_t>(labels);
    int64_t* yo = cpu::ptr<int64_t>(y);
    for (int64_t b = 0; b < batch; ++b) yo[b] = lab[ord[(p.first + b) * ord_stride]];
  }
}

}  // namespace ember
