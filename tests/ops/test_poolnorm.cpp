// Pooling, normalisation and resampling beyond the op table: PyTorch's own numbers
// (tests/fixtures/torch_poolnorm.json, made by tests/fixtures/make_torch_poolnorm.py with torch
// 1.13), max-pool indices, batch-norm and instance-norm running statistics against their formula,
// dropout2d's whole-channel masks, threading, CUDA-vs-CPU checks of what the op table cannot see
// (indices, running statistics on the device), and the error messages for bad arguments.
#include <bit>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "ember/cuda.h"
#include "ember/parallel.h"
#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::Tol;
using ember::test::uniform;

namespace {

// ---- PyTorch fixture ----

using Extras = std::map<std::string, Tensor>;
using Call = std::function<std::pair<Tensor, Extras>(const std::vector<Tensor>&)>;

Call plain(std::function<Tensor(const std::vector<Tensor>&)> f) {
  return [f](const std::vector<Tensor>& x) { return std::pair<Tensor, Extras>{f(x), {}}; };
}
Call indexed(std::function<std::pair<Tensor, Tensor>(const std::vector<Tensor>&)> f) {
  return [f](const std::vector<Tensor>& x) {
    auto [out, idx] = f(x);
    return std::pair<Tensor, Extras>{out, {{"indices", idx}}};
  };
}

const std::map<std::string, Call>& calls() {
  static const std::map<std::string, Call> c = {
      {"max_pool2d_ceil_indices", indexed([](auto& x) {
         return max_pool2d_with_indices(x[0], {.kernel_size = {3, 3}, .stride = Int2{2, 2}, .padding = {1, 1},
                                               .ceil_mode = true});
       })},
      {"max_pool2d_dilation_ceil_indices", indexed([](auto& x) {
         return max_pool2d_with_indices(x[0], {.kernel_size = {2, 3}, .stride = Int2{2, 1}, .padding = {1, 1},
                                               .dilation = {2, 1}, .ceil_mode = true});
       })},
      {"avg_pool2d_ceil_include_pad", plain([](auto& x) {
         return avg_pool2d(x[0], {.kernel_size = {3, 3}, .stride = Int2{2, 2}, .padding = {1, 1}, .ceil_mode = true});
       })},
      {"avg_pool2d_ceil_exclude_pad", plain([](auto& x) {
         return avg_pool2d(x[0], {.kernel_size = {3, 3}, .stride = Int2{2, 2}, .padding = {1, 1}, .ceil_mode = true,
                                  .count_include_pad = false});
       })},
      {"avg_pool2d_divisor_override", plain([](auto& x) {
         return avg_pool2d(x[0], {.kernel_size = {2, 3}, .stride = Int2{1, 2}, .padding = {1, 1},
                                  .divisor_override = 4});
       })},
      {"adaptive_avg_pool2d", plain([](auto& x) { return adaptive_avg_pool2d(x[0], {3, 2}); })},
      {"adaptive_avg_pool2d_upsample", plain([](auto& x) { return adaptive_avg_pool2d(x[0], {4, 5}); })},
      {"adaptive_max_pool2d_indices", indexed([](auto& x) { return adaptive_max_pool2d_with_indices(x[0], {3, 4}); })},
      {"batch_norm_train",
       [](auto& x) {
         Tensor out = batch_norm(x[0], x[3], x[4], x[1], x[2], true, 0.3, 1e-5);
         return std::pair<Tensor, Extras>{out, {{"running_mean", x[3]}, {"running_var", x[4]}}};
       }},
      {"batch_norm_eval", plain([](auto& x) { return batch_norm(x[0], x[3], x[4], x[1], x[2], false, 0.1, 1e-5); })},
      {"layer_norm", plain([](auto& x) { return layer_norm(x[0], {3, 4}, x[1], x[2]); })},
      {"group_norm", plain([](auto& x) { return group_norm(x[0], 2, x[1], x[2]); })},
      {"instance_norm_running",
       [](auto& x) {
         Tensor out = instance_norm(x[0], x[3], x[4], x[1], x[2], true, 0.2, 1e-5);
         return std::pair<Tensor, Extras>{out, {{"running_mean", x[3]}, {"running_var", x[4]}}};
       }},
      {"interpolate_nearest_size", plain([](auto& x) { return interpolate(x[0], {.size = Int2{7, 5}}); })},
      {"interpolate_nearest_scale",
       plain([](auto& x) { return interpolate(x[0], {.scale_factor = std::array<double, 2>{1.7, 2.5}}); })},
      {"interpolate_bilinear_size",
       plain([](auto& x) { return interpolate(x[0], {.size = Int2{5, 7}, .mode = InterpolateMode::Bilinear}); })},
      {"interpolate_bilinear_align_corners", plain([](auto& x) {
         return interpolate(x[0], {.size = Int2{3, 6}, .mode = InterpolateMode::Bilinear, .align_corners = true});
       })},
      {"interpolate_bilinear_scale", plain([](auto& x) {
         return interpolate(x[0],
                            {.scale_factor = std::array<double, 2>{1.5, 0.6}, .mode = InterpolateMode::Bilinear});
       })},
      {"pad_reflect", plain([](auto& x) { return pad(x[0], {2, 4, 3, 1}, PadMode::Reflect); })},
      {"pad_replicate", plain([](auto& x) { return pad(x[0], {3, 1, 0, 2}, PadMode::Replicate); })},
      {"pad_constant_crop", plain([](auto& x) { return pad(x[0], {-1, 2, 1, -2}, PadMode::Constant, 0.25); })},
  };
  return c;
}

nlohmann::json fixture() {
  std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/torch_poolnorm.json");
  return nlohmann::json::parse(in);
}

Tensor tensor_of(const nlohmann::json& e) {
  return from_vector<double>(e["values"].get<std::vector<double>>(), e["shape"].get<std::vector<int64_t>>());
}

// f64 on both sides: only the order of accumulation differs.
constexpr Tol kTol{1e-10, 1e-12};

TEST(TorchPoolNorm, EveryCaseHasACall) {
  const nlohmann::json f = fixture();
  ASSERT_GE(f["cases"].size(), 21u);
  for (const auto& c : f["cases"]) EXPECT_TRUE(calls().count(c["name"].get<std::string>())) << c["name"];
  EXPECT_EQ(calls().size(), f["cases"].size());
}

TEST(TorchPoolNorm, ForwardGradientsAndSideResultsMatchPyTorch) {
  const nlohmann::json f = fixture();
  for (const auto& c : f["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name + " (PyTorch " + f["torch_version"].get<std::string>() + ")");
    ASSERT_TRUE(calls().count(name));
    std::vector<Tensor> inputs;
    for (const auto& e : c["inputs"]) {
      Tensor t = tensor_of(e);
      if (!e["grad"].is_null()) t.requires_grad_();
      inputs.push_back(t);
    }
    auto [out, extras] = calls().at(name)(inputs);
    const Shape out_shape = c["output"]["shape"].get<std::vector<int64_t>>();
    ASSERT_EQ(out.shape(), out_shape);
    EXPECT_TRUE(all_close(out, c["output"]["values"].get<std::vector<double>>(), kTol)) << "forward";
    for (const auto& [key, want] : c["extra"].items()) {
      ASSERT_TRUE(extras.count(key)) << key;
      const Tensor got = extras.at(key).to(DType::F64);
      ASSERT_EQ(got.shape(), want["shape"].get<std::vector<int64_t>>()) << key;
      EXPECT_TRUE(all_close(got, want["values"].get<std::vector<double>>(), kTol)) << key;
    }
    sum(mul(out, from_vector<double>(c["grad_output"].get<std::vector<double>>(), out_shape))).backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& g = c["inputs"][i]["grad"];
      if (g.is_null()) continue;
      ASSERT_TRUE(inputs[i].grad().defined()) << "no gradient for input " << i;
      EXPECT_TRUE(all_close(inputs[i].grad(), g.get<std::vector<double>>(), kTol)) << "gradient of input " << i;
    }
  }
}

// ---- max-pool indices ----

TEST(MaxPool2d, IndicesNameTheFirstMaximumAndNaNWins) {
  // Plane 0 has ties (the first in row-major order wins), plane 1 a NaN (it wins its window).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = from_vector<double>({1, 3, 3, 0,  //
                                  2, 3, 1, 3,  //
                                  0, 5, 4, 1,  //
                                  1, nan, 2, 4},
                                 {1, 1, 4, 4});
  auto [out, idx] = max_pool2d_with_indices(x, {.kernel_size = {2, 2}});
  EXPECT_EQ(idx.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 13, 10}));
  std::vector<double> v = out.to_vector<double>();
  EXPECT_EQ(v[0], 3);
  EXPECT_EQ(v[1], 3);
  EXPECT_TRUE(std::isnan(v[2]));
  EXPECT_EQ(v[3], 4);
}

// The 2x2 stride-2 pool's own path (16 windows at a time on AVX-512, the last group masked) against
// explicit windows written here: PyTorch's rule, a tap takes when it is greater or NaN (so the first
// of tied maxima and the last NaN win), on rows of 5, 12, 16 and 37 windows, odd sizes (the last row
// and column unused), ties, NaN, -inf and +inf; f32 and f64.
TEST(MaxPool2d, TwoByTwoWindowsMatchExplicitWindowsWithTiesAndNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const int64_t w : {10, 24, 33, 75}) {
    const int64_t n = 2, c = 3, h = 9, oh = h / 2, ow = w / 2;
    std::vector<float> xv = uniform({n, c, h, w}, -2, 2, DType::F32, 7 + w).to_vector<float>();
    for (size_t k = 0; k < xv.size(); k += 7) xv[k] = std::round(xv[k]);  // ties between rounded values
    xv[3] = nan, xv[w + 3] = nan;     // two NaNs in one window: the later one's index wins
    xv[2 * w + 5] = -inf, xv[5 * w + 8] = inf;
    for (int64_t k = 0; k < 4; ++k) xv[h * w + (k / 2) * w + k % 2] = -inf;  // a window of -inf only
    for (DType dt : {DType::F32, DType::F64}) {
      SCOPED_TRACE(std::string("w ") + std::to_string(w) + ", " + dtype_name(dt));
      const Tensor x = from_vector<float>(xv, {n, c, h, w}).to(dt);
      auto [out, idx] = max_pool2d_with_indices(x, {.kernel_size = {2, 2}});
      ASSERT_EQ(out.shape(), (Shape{n, c, oh, ow}));
      const std::vector<double> ov = out.to(DType::F64).to_vector<double>();
      const std::vector<int64_t> iv = idx.to_vector<int64_t>();
      for (int64_t pl = 0; pl < n * c; ++pl)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            double best = -inf;
            int64_t at = 2 * i * w + 2 * j;
            for (int64_t a = 0; a < 2; ++a)
              for (int64_t b = 0; b < 2; ++b) {
                const int64_t k = (2 * i + a) * w + 2 * j + b;
                const double v = xv[pl * h * w + k];
                if (v > best || std::isnan(v)) best = v, at = k;
              }
            const int64_t o = (pl * oh + i) * ow + j;
            ASSERT_EQ(iv[o], at) << "plane " << pl << ", window (" << i << ", " << j << ")";
            if (std::isnan(best)) ASSERT_TRUE(std::isnan(ov[o])) << "window (" << i << ", " << j << ")";
            else ASSERT_EQ(ov[o], best) << "window (" << i << ", " << j << ")";
          }
    }
  }
}

// bf16 and f16 pooling on the CPU (CUDA: through f32 copies) is the f32 pool of the widened input
// with each output rounded once: a max is one of its inputs (bit for bit, NaN included) and keeps
// its index; an average is rounded once; the backward sums each input's gradient in f32 and rounds
// once. The expected values are the f32 op's (checked above against explicit windows and PyTorch)
// on the same 16-bit values, for the 2x2 path, overlapping windows, padding with ceil_mode, avg
// with and without count_include_pad, and the adaptive pools.
TEST(Pool2d, SixteenBitIsTheF32PoolOfTheWidenedInputRoundedOnce) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  using Pool = std::function<std::pair<Tensor, Tensor>(const Tensor&)>;
  const std::vector<std::pair<const char*, Pool>> pools{
      {"max 2x2", [](const Tensor& x) { return max_pool2d_with_indices(x, {.kernel_size = {2, 2}}); }},
      {"max 3x3 stride 2 pad 1 ceil",
       [](const Tensor& x) {
         return max_pool2d_with_indices(x, {.kernel_size = {3, 3}, .stride = Int2{2, 2}, .padding = {1, 1}, .ceil_mode = true});
       }},
      {"avg 3x3 stride 2 pad 1",
       [](const Tensor& x) {
         return std::pair{avg_pool2d(x, {.kernel_size = {3, 3}, .stride = Int2{2, 2}, .padding = {1, 1}}), Tensor()};
       }},
      {"avg 3x3 stride 1 pad 1 count_include_pad false",
       [](const Tensor& x) {
         return std::pair{avg_pool2d(x, {.kernel_size = {3, 3}, .stride = Int2{1, 1}, .padding = {1, 1}, .count_include_pad = false}),
                          Tensor()};
       }},
      {"adaptive avg 3x4", [](const Tensor& x) { return std::pair{adaptive_avg_pool2d(x, {3, 4}), Tensor()}; }},
      {"adaptive max 4x3", [](const Tensor& x) { return adaptive_max_pool2d_with_indices(x, {4, 3}); }},
  };
  const int64_t n = 2, c = 3, h = 9, w = 26;
  std::vector<float> xv = uniform({n, c, h, w}, -3, 3, DType::F32, 41).to_vector<float>();
  for (size_t k = 0; k < xv.size(); k += 5) xv[k] = std::round(xv[k]);  // ties
  xv[3] = nan, xv[w + 40] = -inf, xv[2 * w + 7] = inf;
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor x16 = from_vector<float>(xv, {n, c, h, w}).to(dt);
    for (const auto& [name, pool] : pools) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + ", " + name);
      const Tensor xf = x16.to(DType::F32).requires_grad_(true);
      const Tensor xl = x16.detach().requires_grad_(true);
      auto [ref, ref_idx] = pool(xf);
      auto [out, idx] = pool(xl);
      ASSERT_EQ(out.dtype(), dt);
      ASSERT_EQ(out.shape(), ref.shape());
      // Bit patterns through f32 (both widen exactly): NaN == NaN here, as it must be.
      const std::vector<float> ov = out.to(DType::F32).to_vector<float>();
      const std::vector<float> rv = ref.to(dt).to(DType::F32).to_vector<float>();
      for (size_t k = 0; k < ov.size(); ++k)
        ASSERT_EQ(std::bit_cast<uint32_t>(ov[k]), std::bit_cast<uint32_t>(rv[k])) << "output " << k;
      if (ref_idx.defined()) EXPECT_EQ(idx.to_vector<int64_t>(), ref_idx.to_vector<int64_t>());
      const Tensor gy = uniform(out.shape(), -1, 1, DType::F32, 43).to(dt);
      ref.backward(gy.to(DType::F32));
      out.backward(gy);
      ASSERT_EQ(xl.grad().dtype(), dt);
      const std::vector<float> gv = xl.grad().to(DType::F32).to_vector<float>();
      const std::vector<float> gr = xf.grad().to(dt).to(DType::F32).to_vector<float>();
      for (size_t k = 0; k < gv.size(); ++k)
        ASSERT_EQ(std::bit_cast<uint32_t>(gv[k]), std::bit_cast<uint32_t>(gr[k])) << "gradient " << k;
    }
  }
}

TEST(MaxPool2d, GradientGoesToTheIndexedElementOnly) {
  Tensor x = from_vector<double>({1, 3, 3, 0, 2, 3, 1, 3, 0, 5, 4, 1, 1, 2, 2, 4}, {1, 1, 4, 4}).requires_grad_();
  sum(mul(max_pool2d(x, {.kernel_size = {2, 2}}), from_vector<double>({1, 10, 100, 1000}, {1, 1, 2, 2}))).backward();
  std::vector<double> expect(16, 0.0);
  expect[1] = 1, expect[2] = 10, expect[9] = 100, expect[10] = 1000;  // 4 at 10 comes before 4 at 15
  EXPECT_EQ(x.grad().to_vector<double>(), expect);
}

// ---- running statistics ----

TEST(BatchNorm, TrainingUpdatesRunningStatisticsByTheFormula) {
  for (DType dt : {DType::F64, DType::F32}) {
    const int64_t n = 3, c = 2, s = 5;
    Tensor x = uniform({n, c, s}, -2, 3, dt, 41);
    Tensor rm = from_vector<double>({0.5, -0.25}, {c}).to(dt), rv = from_vector<double>({1.5, 0.75}, {c}).to(dt);
    const std::vector<double> xv = x.to_vector<double>(), rm0 = rm.to_vector<double>(), rv0 = rv.to_vector<double>();
    const uint64_t version = rm.version();
    const double momentum = 0.25;
    batch_norm(x, rm, rv, Tensor(), Tensor(), true, momentum, 1e-5);
    EXPECT_GT(rm.version(), version) << "the in-place update must bump the version";
    std::vector<double> want_m, want_v;
    for (int64_t ch = 0; ch < c; ++ch) {
      double mu = 0, ss = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k = 0; k < s; ++k) mu += xv[(i * c + ch) * s + k];
      mu /= n * s;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t k = 0; k < s; ++k) ss += std::pow(xv[(i * c + ch) * s + k] - mu, 2);
      want_m.push_back((1 - momentum) * rm0[ch] + momentum * mu);
      want_v.push_back((1 - momentum) * rv0[ch] + momentum * ss / (n * s - 1));  // unbiased
    }
    const Tol tol = dt == DType::F64 ? Tol{1e-12, 1e-12} : Tol{1e-6, 1e-6};
    EXPECT_TRUE(all_close(rm, want_m, tol)) << dtype_name(dt);
    EXPECT_TRUE(all_close(rv, want_v, tol)) << dtype_name(dt);
    // Eval afterwards normalises by the updated statistics.
    Tensor y = batch_norm(x, rm, rv, Tensor(), Tensor(), false, momentum, 1e-5);
    std::vector<double> want_y;
    for (int64_t i = 0; i < n * c * s; ++i) {
      const int64_t ch = (i / s) % c;
      want_y.push_back((xv[i] - want_m[ch]) / std::sqrt(want_v[ch] + 1e-5));
    }
    EXPECT_TRUE(all_close(y, want_y, dt == DType::F64 ? Tol{1e-10, 1e-10} : Tol{1e-5, 1e-5}));
  }
}

TEST(BatchNorm, RunningStatisticsTakeNoGradientAndTrainingWithoutThemWorks) {
  Tensor x = uniform({4, 3}, -1, 1, DType::F64, 3).requires_grad_();
  Tensor y = batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true);
  sum(mul(y, y)).backward();
  ASSERT_TRUE(x.grad().defined());
  // Each column of y has mean 0 and biased variance 1 / (1 + eps / var).
  std::vector<double> yv = y.to_vector<double>();
  for (int ch = 0; ch < 3; ++ch) EXPECT_NEAR(yv[ch] + yv[3 + ch] + yv[6 + ch] + yv[9 + ch], 0.0, 1e-12);
}

TEST(InstanceNorm, RunningStatisticsAverageThePlanesUnbiasedVariance) {
  const int64_t n = 2, c = 2, s = 6;
  Tensor x = uniform({n, c, 2, 3}, -1, 2, DType::F64, 8);
  Tensor rm = zeros({c}, DType::F64), rv = ones({c}, DType::F64);
  instance_norm(x, rm, rv, Tensor(), Tensor(), true, 0.4);
  const std::vector<double> xv = x.to_vector<double>();
  std::vector<double> want_m(c, 0.0), want_v(c, 0.0);
  for (int64_t ch = 0; ch < c; ++ch) {
    for (int64_t i = 0; i < n; ++i) {
      double mu = 0, ss = 0;
      for (int64_t k = 0; k < s; ++k) mu += xv[(i * c + ch) * s + k];
      mu /= s;
      for (int64_t k = 0; k < s; ++k) ss += std::pow(xv[(i * c + ch) * s + k] - mu, 2);
      want_m[ch] += mu / n;
      want_v[ch] += ss / (s - 1) / n;
    }
    want_m[ch] = 0.4 * want_m[ch];
    want_v[ch] = 0.6 + 0.4 * want_v[ch];
  }
  EXPECT_TRUE(all_close(rm, want_m, {1e-12, 1e-12}));
  EXPECT_TRUE(all_close(rv, want_v, {1e-12, 1e-12}));
}

// ---- dropout2d ----

TEST(Dropout2d, ZeroesWholeChannelsAtRateP) {
  Generator g(21);
  const int64_t n = 40, c = 50, s = 9;
  Tensor y = dropout2d(ones({n, c, 3, 3}, DType::F64), 0.3, true, &g);
  std::vector<double> v = y.to_vector<double>();
  int64_t dropped = 0;
  for (int64_t p = 0; p < n * c; ++p) {
    for (int64_t k = 1; k < s; ++k) ASSERT_EQ(v[p * s + k], v[p * s]) << "plane " << p << " is not uniform";
    ASSERT_TRUE(v[p * s] == 0.0 || std::abs(v[p * s] - 1.0 / 0.7) < 1e-12);
    dropped += v[p * s] == 0.0;
  }
  EXPECT_NEAR(static_cast<double>(dropped) / (n * c), 0.3, 0.03);
  Tensor x = uniform({2, 3, 4}, -1, 1, DType::F64, 2);
  EXPECT_TRUE(dropout2d(x, 0.3, false).is_same(x)) << "eval mode returns the input";
}

// ---- threading: every task owns whole planes / groups, so two threads give the same bits ----

TEST(PoolNormThreads, TwoThreadsMatchOneBitForBit) {
  const int before = get_num_threads();
  auto run = [] {
    Tensor x = uniform({8, 16, 20, 20}, -1, 1, DType::F32, 77).requires_grad_();
    Tensor w = uniform({16}, 0.5, 1.5, DType::F32, 78).requires_grad_();
    Tensor rm = zeros({16}), rv = ones({16});
    Tensor y = add(max_pool2d(batch_norm(x, rm, rv, w, Tensor(), true), {.kernel_size = {2, 2}}),
                   avg_pool2d(group_norm(x, 4, w), {.kernel_size = {2, 2}}));
    Tensor lw = uniform({400}, 0.5, 1.5, DType::F32, 79).requires_grad_();
    Tensor z = layer_norm(x.reshape({128, 400}), {400}, lw);
    add(sum(mul(y, y)), sum(mul(z, mul(z, z)))).backward();
    return std::vector<std::vector<float>>{y.to_vector<float>(), z.to_vector<float>(), x.grad().to_vector<float>(),
                                           w.grad().to_vector<float>(), lw.grad().to_vector<float>(),
                                           rv.to_vector<float>()};
  };
  set_num_threads(1);
  auto one = run();
  set_num_threads(2);
  auto two = run();
  set_num_threads(before);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], two[i]) << "result " << i;
}

// ---- CUDA: what the op table's parity rows do not see ----

TEST(CudaPoolNorm, IndicesAndRunningStatisticsMatchTheCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: CUDA-vs-CPU parity runs on a GPU machine";
  Tensor x = uniform({4, 3, 9, 8}, -1, 1, DType::F32, 5);
  const MaxPool2dArgs a{.kernel_size = {3, 3}, .stride = Int2{2, 2}, .padding = {1, 1}, .ceil_mode = true};
  auto [vc, ic] = max_pool2d_with_indices(x, a);
  auto [vg, ig] = max_pool2d_with_indices(x.cuda(), a);
  EXPECT_EQ(ig.cpu().to_vector<int64_t>(), ic.to_vector<int64_t>());
  EXPECT_TRUE(all_close(vg.cpu(), vc, {0, 0}));
  auto [avc, aic] = adaptive_max_pool2d_with_indices(x, {4, 3});
  auto [avg_, aig] = adaptive_max_pool2d_with_indices(x.cuda(), {4, 3});
  EXPECT_EQ(aig.cpu().to_vector<int64_t>(), aic.to_vector<int64_t>());
  Tensor rm = uniform({3}, -1, 1, DType::F32, 6), rv = uniform({3}, 0.5, 2, DType::F32, 7);
  Tensor rm_g = rm.cuda(), rv_g = rv.cuda();
  for (int step = 0; step < 3; ++step) {
    batch_norm(x, rm, rv, Tensor(), Tensor(), true, 0.1, 1e-5);
    batch_norm(x.cuda(), rm_g, rv_g, Tensor(), Tensor(), true, 0.1, 1e-5);
  }
  EXPECT_TRUE(all_close(rm_g.cpu(), rm, {1e-5, 1e-5}));
  EXPECT_TRUE(all_close(rv_g.cpu(), rv, {1e-5, 1e-5}));
  Tensor big = uniform({64, 32, 26, 26}, -1, 1, DType::F32, 9);
  EXPECT_TRUE(all_close(batch_norm(big.cuda(), Tensor(), Tensor(), Tensor(), Tensor(), true).cpu(),
                        batch_norm(big, Tensor(), Tensor(), Tensor(), Tensor(), true), {1e-4, 1e-4}));
}

// ---- error messages ----

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an ember::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nlacks: " << p;
  }
}

TEST(PoolNormErrors, PoolingNamesShapesAndWhatToChange) {
  Tensor x = zeros({1, 2, 3, 3});
  expect_error([&] { max_pool2d(x, {.kernel_size = {5, 5}}); },
               {"max_pool2d", "[1, 2, 3, 3]", "too small for kernel_size (5, 5)", "output would be"});
  expect_error([&] { max_pool2d(x, {.kernel_size = {2, 2}, .padding = {2, 0}}); },
               {"padding (2, 0)", "at most half the kernel size (2, 2)"});
  expect_error([&] { max_pool2d(x, {.kernel_size = {2, 2}, .stride = Int2{0, 1}}); }, {"stride must be positive"});
  expect_error([&] { max_pool2d(x, {.kernel_size = {2, 2}, .dilation = {0, 1}}); }, {"dilation must be positive"});
  expect_error([&] { max_pool2d(zeros({2, 3}), {}); }, {"3-D [C, H, W] or 4-D", "[2, 3]"});
  expect_error([&] { max_pool2d(zeros({1, 1, 0, 4}), {}); }, {"empty plane"});
  expect_error([&] { max_pool2d(x, {.kernel_size = {INT64_MAX, 2}}); }, {"larger than 2^31"});
  expect_error([&] { avg_pool2d(x, {.kernel_size = {2, 2}, .divisor_override = 0}); },
               {"divisor_override must be positive"});
  expect_error([&] { adaptive_avg_pool2d(x, {0, 2}); }, {"adaptive_avg_pool2d", "at least 1x1", "(0, 2)"});
  expect_error([&] { max_pool2d(zeros({1, 1, 4, 4}, DType::I64), {}); }, {"f32 or f64"});
}

TEST(PoolNormErrors, NormalisationNamesShapesAndWhatToChange) {
  Tensor x = zeros({4, 6, 3});
  expect_error([&] { group_norm(x, 4); }, {"group_norm", "num_groups 4", "6 channels", "[4, 6, 3]", "divisor of 6"});
  expect_error([&] { group_norm(x, 3, zeros({5})); }, {"weight must be [6]", "got [5]"});
  expect_error([&] { batch_norm(x, zeros({6}), ones({6}), zeros({3})); }, {"batch_norm", "weight must be [6]"});
  expect_error([&] { batch_norm(x, Tensor(), Tensor()); }, {"eval mode", "running_mean", "training = true"});
  expect_error([&] { batch_norm(zeros({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true); },
               {"more than 1 value per channel", "[1, 3]"});
  expect_error([&] { batch_norm(x, zeros({6}, DType::F64), ones({6}), Tensor(), Tensor(), true); },
               {"running_mean is f64", "input is f32"});
  expect_error([&] { batch_norm(x, zeros({6}), ones({6}), Tensor(), Tensor(), true, 1.5); }, {"momentum"});
  expect_error([&] { layer_norm(x, {4}); }, {"layer_norm", "normalized_shape [4]", "last 1 dims", "[4, 6, 3]"});
  expect_error([&] { layer_norm(x, {6, 3}, zeros({3, 6})); }, {"weight must be [6, 3]"});
  expect_error([&] { instance_norm(zeros({2, 3, 1})); }, {"instance_norm", "more than 1 spatial element"});
  expect_error([&] { dropout2d(zeros({3}), 0.5); }, {"dropout2d", "at least 2 dims"});
  expect_error([&] { dropout2d(x, 1.5); }, {"probability must be in [0, 1]"});
}

TEST(PoolNormErrors, ResamplingNamesShapesAndWhatToChange) {
  Tensor x = zeros({1, 2, 3, 4});
  expect_error([&] { pad(x, {4, 0}, PadMode::Reflect); }, {"reflect pads (4, 0)", "smaller than dim 3", "size 4"});
  expect_error([&] { pad(x, {1, 2, 3}); }, {"(before, after) pairs"});
  expect_error([&] { pad(x, {-3, -2}); }, {"crop dim 3", "below 0"});
  expect_error([&] { pad(x, {-1, 0}, PadMode::Replicate); }, {"replicate pads must be non-negative"});
  expect_error([&] { pad(x, {1, INT64_MAX}); }, {"overflow"});
  expect_error([&] { interpolate(x, {}); }, {"exactly one of size and scale_factor"});
  expect_error([&] { interpolate(x, {.size = Int2{0, 3}}); }, {"size must be at least 1"});
  expect_error([&] { interpolate(x, {.scale_factor = std::array<double, 2>{0.1, 1.0}}); },
               {"scale_factor 0.1", "at least 1"});
  expect_error([&] { interpolate(x, {.size = Int2{2, 2}, .align_corners = true}); }, {"align_corners", "bilinear"});
  expect_error([&] { interpolate(zeros({2, 3, 4}), {.size = Int2{2, 2}}); }, {"4-D [N, C, H, W]"});
}

}  // namespace

namespace {

// ---- the fused primitives equal the composites of ember ops they replace ----

struct Grads {
  Tensor out;
  std::vector<Tensor> grads;
};

Grads run_with_grads(const std::vector<Tensor>& inputs, const std::function<Tensor(const std::vector<Tensor>&)>& f) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(t.detach().clone().requires_grad_());
  Tensor out = f(xs);
  sum(mul(out, uniform(out.shape(), 0.5, 1.5, DType::F64, 99))).backward();
  Grads r{out.detach(), {}};
  for (const Tensor& x : xs) r.grads.push_back(x.grad());
  return r;
}

void expect_same(const Grads& a, const Grads& b, const char* what) {
  EXPECT_TRUE(all_close(a.out, b.out, {1e-10, 1e-10})) << what << " forward";
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(all_close(a.grads[i], b.grads[i], {1e-9, 1e-9})) << what << " gradient " << i;
}

TEST(PoolNormFused, MatchesTheCompositeOfEmberOps) {
  const std::vector<Tensor> bn_in{uniform({4, 3, 5, 2}, -2, 2, DType::F64, 1), uniform({3}, 0.5, 1.5, DType::F64, 2),
                                  uniform({3}, -1, 1, DType::F64, 3)};
  expect_same(run_with_grads(bn_in, [](auto& x) { return batch_norm(x[0], Tensor(), Tensor(), x[1], x[2], true); }),
              run_with_grads(bn_in,
                             [](auto& x) {
                               Tensor mu = mean(x[0], {0, 2, 3}, true), v = var(x[0], {0, 2, 3}, 0, true);
                               Tensor xh = mul(sub(x[0], mu), rsqrt(add(v, 1e-5)));
                               return add(mul(xh, x[1].reshape({1, 3, 1, 1})), x[2].reshape({1, 3, 1, 1}));
                             }),
              "batch_norm");
  const std::vector<Tensor> gn_in{uniform({2, 6, 4}, -2, 2, DType::F64, 4), uniform({6}, 0.5, 1.5, DType::F64, 5),
                                  uniform({6}, -1, 1, DType::F64, 6)};
  expect_same(run_with_grads(gn_in, [](auto& x) { return group_norm(x[0], 3, x[1], x[2]); }),
              run_with_grads(gn_in,
                             [](auto& x) {
                               Tensor g = x[0].reshape({2, 3, 8});
                               Tensor xh = mul(sub(g, mean(g, {2}, true)), rsqrt(add(var(g, {2}, 0, true), 1e-5)));
                               return add(mul(xh.reshape({2, 6, 4}), x[1].reshape({1, 6, 1})), x[2].reshape({1, 6, 1}));
                             }),
              "group_norm");
  const std::vector<Tensor> ln_in{uniform({3, 2, 5}, -2, 2, DType::F64, 7), uniform({2, 5}, 0.5, 1.5, DType::F64, 8)};
  expect_same(run_with_grads(ln_in, [](auto& x) { return layer_norm(x[0], {2, 5}, x[1]); }),
              run_with_grads(ln_in,
                             [](auto& x) {
                               Tensor xh = mul(sub(x[0], mean(x[0], {1, 2}, true)),
                                               rsqrt(add(var(x[0], {1, 2}, 0, true), 1e-5)));
                               return mul(xh, x[1]);
                             }),
              "layer_norm");
  // A 2x2 max pool is the max over the two window dims of a reshaped view (no ties in random data).
  const std::vector<Tensor> mp_in{uniform({2, 3, 6, 4}, -1, 1, DType::F64, 9)};
  expect_same(run_with_grads(mp_in, [](auto& x) { return max_pool2d(x[0], {.kernel_size = {2, 2}}); }),
              run_with_grads(mp_in,
                             [](auto& x) {
                               return max(max(x[0].reshape({2, 3, 3, 2, 2, 2}), 5).first, 3).first;
                             }),
              "max_pool2d");
  const std::vector<Tensor> ap_in{uniform({2, 3, 6, 4}, -1, 1, DType::F64, 10)};
  expect_same(run_with_grads(ap_in, [](auto& x) { return adaptive_avg_pool2d(x[0], {1, 1}); }),
              run_with_grads(ap_in, [](auto& x) { return mean(x[0], {2, 3}, true); }), "adaptive_avg_pool2d");
}

}  // namespace
