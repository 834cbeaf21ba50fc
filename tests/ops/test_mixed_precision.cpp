// Mixed precision: bf16/f16 storage and casts (against bit patterns the test computes by nearest
// search), elementwise ops and reductions on them, autocast's table, and GradScaler. The Cuda*
// tests check the CUDA backend against the CPU in each precision and skip without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "ember/ember.h"
#include "tests/test_util.h"

namespace ember {
namespace {

using ember::test::all_close;
using ember::test::Tol;

// PyTorch's assert_close defaults per dtype (bf16: rtol 1.6e-2, f16: rtol 1e-3, both atol 1e-5).
Tol lowp_tol(DType dt) { return dt == DType::BF16 ? Tol{1e-5, 1.6e-2} : Tol{1e-5, 1e-3}; }

#define EMBER_SKIP_WITHOUT_CUDA()                 \
  if (!ember::cuda::is_available()) GTEST_SKIP() \
      << "no CUDA device: ember::cuda::is_available() is false on this machine (no GPU or no driver)"

// ---- the reference: every finite value of a 16-bit format by formula, and rounding as a nearest search ----

struct Format {
  int exp_bits, man_bits;  // bf16: 8, 7; f16: 5, 10
};
constexpr Format kBF16{8, 7}, kF16{5, 10};

// The value of a 16-bit pattern: (-1)^s * 2^(e - bias) * (1 + m / 2^p), subnormal when e == 0.
double value_of(uint16_t bits, Format f) {
  const int bias = (1 << (f.exp_bits - 1)) - 1;
  const int e = (bits >> f.man_bits) & ((1 << f.exp_bits) - 1);
  const int m = bits & ((1 << f.man_bits) - 1);
  const double sign = (bits >> 15) ? -1.0 : 1.0;
  if (e == (1 << f.exp_bits) - 1) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), 1 - bias - f.man_bits);
  return sign * std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -f.man_bits), e - bias);
}

// Round-to-nearest-even of x by searching the format's positive finite values (ascending with
// their bit patterns); beyond the largest, values from max + half an ulp round to inf (IEEE).
uint16_t expected_bits(double x, Format f) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  const uint16_t inf = static_cast<uint16_t>(((1 << f.exp_bits) - 1) << f.man_bits);
  const uint16_t max_bits = inf - 1;
  const double max = value_of(max_bits, f);
  const double half_ulp = (max - value_of(max_bits - 1, f)) / 2;
  if (a >= max + half_ulp) return sign | inf;
  uint16_t lo = 0, hi = max_bits;  // find the largest pattern with value <= a
  while (lo < hi) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (value_of(mid, f) <= a) lo = mid;
    else hi = mid - 1;
  }
  if (lo == max_bits) return sign | lo;
  const double d_lo = a - value_of(lo, f), d_hi = value_of(lo + 1, f) - a;
  const uint16_t pick = d_lo < d_hi ? lo : d_hi < d_lo ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
  return sign | pick;
}

std::vector<uint16_t> bits_of(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  std::vector<uint16_t> v(static_cast<size_t>(c.numel()));
  std::memcpy(v.data(), c.data_ptr(), v.size() * 2);
  return v;
}

bool is_nan_bits(uint16_t b, Format f) {
  const int e = (b >> f.man_bits) & ((1 << f.exp_bits) - 1);
  return e == (1 << f.exp_bits) - 1 && (b & ((1 << f.man_bits) - 1)) != 0;
}

// Floats to cast: specials, every halfway case near 1 and near the subnormal/overflow edges, and
// random bit patterns over the whole range.
std::vector<float> cast_inputs(Format f) {
  std::vector<float> v{0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 70000.0f, 3.0e38f,
                       std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                       std::numeric_limits<float>::denorm_min(), 6.0e-8f, 2.9802322e-8f, 2.98023259e-8f,
                       5.96e-8f, 6.1035156e-5f, 6.0e-5f, INFINITY, -INFINITY};
  for (int k = 0; k < 64; ++k) {  // 1 + (k + 1/2) ulp: exact ties, both parities
    const double ulp = std::ldexp(1.0, -f.man_bits);
    v.push_back(static_cast<float>(1.0 + (k + 0.5) * ulp));
    v.push_back(static_cast<float>(-(1.0 + (k + 0.5) * ulp)));
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    uint32_t u = rng();
    float x;
    std::memcpy(&x, &u, 4);
    if (std::isnan(x)) continue;
    v.push_back(x);
    // Values in the f16 range too (random bits are mostly outside it).
    v.push_back(static_cast<float>(std::ldexp(static_cast<double>(rng()) / 4294967296.0 + 0.5, int(rng() % 44) - 26)));
  }
  return v;
}

void check_casts(DType dt, Format f, Device dev) {
  const std::vector<float> in = cast_inputs(f);
  const Tensor x = from_vector<float>(in).to(dev);
  const std::vector<uint16_t> got = bits_of(x.to(dt));
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(got[i], expected_bits(in[i], f)) << dtype_name(dt) << " cast of " << in[i] << " (index " << i << ")";
  // Back to f32 is exact: the value of the pattern.
  const std::vector<float> back = x.to(dt).to(DType::F32).to(Device::cpu()).to_vector<float>();
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(static_cast<double>(back[i]), value_of(got[i], f)) << dtype_name(dt) << " pattern " << got[i];
}

TEST(MixedPrecision, CastsRoundToNearestEven) {
  check_casts(DType::BF16, kBF16, Device::cpu());
  check_casts(DType::F16, kF16, Device::cpu());
}

TEST(MixedPrecision, NaNStaysNaN) {
  const float nans[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> in(std::begin(nans), std::end(nans));
  uint32_t payload_low = 0x7f800001u;  // a NaN whose payload is only in the bits a truncation drops
  float x;
  std::memcpy(&x, &payload_low, 4);
  in.push_back(x);
  for (auto [dt, f] : {std::pair{DType::BF16, kBF16}, std::pair{DType::F16, kF16}}) {
    for (uint16_t b : bits_of(from_vector<float>(in).to(dt))) EXPECT_TRUE(is_nan_bits(b, f)) << b;
    for (uint16_t b : bits_of(from_vector<double>({NAN}).to(dt))) EXPECT_TRUE(is_nan_bits(b, f)) << b;
  }
}

TEST(MixedPrecision, F64CastsRoundOnce) {
  // 1 + 2^-8 + 2^-40 is just above the bf16 halfway point 1 + 2^-8; through f32 it would become
  // that tie exactly and round to even (1.0). The right answer is 1 + 2^-7.
  const double above_tie = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
  const double below_tie = 1.0 + std::ldexp(1.0, -8) - std::ldexp(1.0, -40);
  const double f16_above = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -45);
  EXPECT_EQ(bits_of(from_vector<double>({above_tie, below_tie}).to(DType::BF16)),
            (std::vector<uint16_t>{expected_bits(above_tie, kBF16), expected_bits(below_tie, kBF16)}));
  EXPECT_EQ(expected_bits(above_tie, kBF16), 0x3f81);
  EXPECT_EQ(bits_of(from_vector<double>({f16_above}).to(DType::F16)),
            (std::vector<uint16_t>{expected_bits(f16_above, kF16)}));
  EXPECT_EQ(expected_bits(f16_above, kF16), 0x3c01);
  // Integers round too: 257 is a bf16 tie between 256 and 258 (even: 256); 2049 likewise in f16.
  EXPECT_EQ(bits_of(from_vector<int64_t>({257, 259}).to(DType::BF16)),
            (std::vector<uint16_t>{expected_bits(257, kBF16), expected_bits(259, kBF16)}));
  EXPECT_EQ(bits_of(from_vector<int64_t>({2049}).to(DType::F16)), (std::vector<uint16_t>{expected_bits(2049, kF16)}));
}

// The f32 result of an op on the inputs' values, rounded once to the format.
template <class F>
std::vector<uint16_t> reference_map(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, Format f, F op) {
  std::vector<uint16_t> r(a.size());
  for (size_t i = 0; i < a.size(); ++i)
    r[i] = expected_bits(static_cast<double>(op(static_cast<float>(value_of(a[i], f)),
                                                static_cast<float>(value_of(b[i], f)))), f);
  return r;
}

void check_elementwise(DType dt, Format f) {
  const Tensor x = test::uniform({257}, -3.0, 3.0, DType::F32, 11).to(dt);
  const Tensor y = test::uniform({257}, 0.5, 2.0, DType::F32, 12).to(dt);
  const std::vector<uint16_t> a = bits_of(x), b = bits_of(y);
  EXPECT_EQ(add(x, y).dtype(), dt);
  EXPECT_EQ(bits_of(add(x, y)), reference_map(a, b, f, [](float p, float q) { return p + q; }));
  EXPECT_EQ(bits_of(mul(x, y)), reference_map(a, b, f, [](float p, float q) { return p * q; }));
  EXPECT_EQ(bits_of(div(x, y)), reference_map(a, b, f, [](float p, float q) { return p / q; }));
  EXPECT_EQ(bits_of(relu(x)), reference_map(a, b, f, [](float p, float) { return p < 0 ? 0.0f : p; }));
  EXPECT_EQ(bits_of(exp(x)), reference_map(a, b, f, [](float p, float) { return ::expf(p); }));
  EXPECT_EQ(bits_of(mul(x, 0.3)), reference_map(a, b, f, [](float p, float) { return p * 0.3f; }));
  // Mixed with f32: promoted to f32 (PyTorch's rule); bf16 with f16 gives f32.
  EXPECT_EQ(add(x, ones({257})).dtype(), DType::F32);
  EXPECT_EQ(add(ones({2}).to(DType::BF16), ones({2}).to(DType::F16)).dtype(), DType::F32);
  // A strided (transposed) view takes the strided loop.
  const Tensor m = x.narrow(0, 0, 256).reshape({16, 16});
  EXPECT_TRUE(all_close(m.t().contiguous().to(DType::F32), m.to(DType::F32).t(), Tol{0, 0}));
}

TEST(MixedPrecision, ElementwiseComputesInF32AndRoundsOnce) {
  check_elementwise(DType::BF16, kBF16);
  check_elementwise(DType::F16, kF16);
}

TEST(MixedPrecision, ReductionsAccumulateInF32) {
  for (DType dt : {DType::BF16, DType::F16}) {
    // 4096 ones: a bf16 accumulator stops at 256 (256 + 1 rounds back to 256), an f16 one at 2048.
    const Tensor s = sum(ones({4096}).to(dt));
    EXPECT_EQ(s.dtype(), dt);
    EXPECT_EQ(s.to(DType::F32).item(), 4096.0) << dtype_name(dt);
    const Tensor x = test::uniform({64, 33}, -2.0, 2.0, DType::F32, 5).to(dt);
    const std::vector<double> v = x.to(DType::F64).to_vector<double>();
    std::vector<double> rows(64, 0.0);
    double vmax = -INFINITY;
    for (int i = 0; i < 64; ++i)
      for (int j = 0; j < 33; ++j) {
        rows[i] += v[i * 33 + j];
        vmax = std::max(vmax, v[i * 33 + j]);
      }
    const std::vector<uint16_t> got = bits_of(sum(x, {1}));
    for (int i = 0; i < 64; ++i) EXPECT_EQ(got[i], expected_bits(rows[i], dt == DType::BF16 ? kBF16 : kF16));
    EXPECT_EQ(max(x).to(DType::F64).item(), vmax);
    EXPECT_EQ(argmax(x).item(),
              static_cast<double>(std::max_element(v.begin(), v.end()) - v.begin()));
  }
}

TEST(MixedPrecision, StorageOpsWork) {
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor z = full({3, 4}, 1.5, TensorOptions(dt));
    EXPECT_EQ(z.to(DType::F32).to_vector<float>(), std::vector<float>(12, 1.5f));
    const Tensor c = cat({z, zeros({1, 4}).to(dt)}, 0);
    EXPECT_EQ(c.dtype(), dt);
    EXPECT_EQ(sum(c.to(DType::F32)).item(), 18.0);
    EXPECT_EQ(sum(where(gt(z, 1.0), z, zeros({3, 4}).to(dt)).to(DType::F32)).item(), 18.0);
  }
}

// ---- autocast ----

TEST(Autocast, TableSaysWhichOpsRunLow) {
  EXPECT_EQ(autocast_policy("linear"), AutocastPolicy::Lower);
  EXPECT_EQ(autocast_policy("matmul"), AutocastPolicy::Lower);
  EXPECT_EQ(autocast_policy("cross_entropy"), AutocastPolicy::Float32);
  EXPECT_EQ(autocast_policy("softmax"), AutocastPolicy::Float32);
  EXPECT_EQ(autocast_policy("layer_norm"), AutocastPolicy::Float32);
  EXPECT_EQ(autocast_policy("relu"), AutocastPolicy::Keep);
  EXPECT_FALSE(autocast::active());
  {
    autocast guard(DType::F16);
    EXPECT_TRUE(autocast::active());
    EXPECT_EQ(autocast::dtype(), DType::F16);
    {
      autocast off(DType::BF16, false);
      EXPECT_FALSE(autocast::active());
    }
    EXPECT_TRUE(autocast::active());
  }
  EXPECT_FALSE(autocast::active());
  EXPECT_TRUE(test::throws_with([] { autocast bad(DType::F32); }, {"autocast", "bf16 or f16", "f32"}));
}

// Reference linear: f64 products of the inputs rounded to the low dtype, as an f32-accumulating
// GEMM computes them up to f32 rounding; the result rounds once to the low dtype.
Tensor reference_linear(const Tensor& x, const Tensor& w, const Tensor& b, DType dt) {
  const Tensor xl = x.to(dt).to(DType::F64), wl = w.to(dt).to(DType::F64), bl = b.to(dt).to(DType::F64);
  const std::vector<double> xv = xl.to_vector<double>(), wv = wl.to_vector<double>(), bv = bl.to_vector<double>();
  const int64_t n = x.size(0), k = x.size(1), m = w.size(0);
  std::vector<double> y(static_cast<size_t>(n * m));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double acc = bv[j];
      for (int64_t q = 0; q < k; ++q) acc += xv[i * k + q] * wv[j * k + q];
      y[i * m + j] = acc;
    }
  return from_vector<double>(y, {n, m});
}

void check_autocast_mlp(DType dt, Device dev) {
  const Tensor x = test::uniform({37, 50}, -1.0, 1.0, DType::F32, 1).to(dev).requires_grad_(true);
  const Tensor w = test::uniform({20, 50}, -0.3, 0.3, DType::F32, 2).to(dev).requires_grad_(true);
  const Tensor b = test::uniform({20}, -0.5, 0.5, DType::F32, 3).to(dev).requires_grad_(true);
  const Tensor labels = from_vector<int64_t>(std::vector<int64_t>(37, 3)).to(dev);
  Tensor y, h, loss;
  {
    autocast guard(dt);
    y = linear(x, w, b);
    h = relu(y);
    loss = cross_entropy(h, labels);
  }
  EXPECT_EQ(y.dtype(), dt);
  EXPECT_EQ(h.dtype(), dt);
  EXPECT_EQ(loss.dtype(), DType::F32);
  // The low-precision output against f64 sums of the rounded inputs, within the dtype's tolerance.
  EXPECT_TRUE(all_close(y.to(DType::F64).cpu(), reference_linear(x.cpu(), w.cpu(), b.cpu(), dt), lowp_tol(dt)));
  loss.backward();
  // Master weights and their gradients stay f32; the gradients match f32 training within the
  // dtype's tolerance (measured against the same loss in f32, whose gradients are O(1/37)).
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  EXPECT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  const Tensor x32 = x.detach().requires_grad_(true), w32 = w.detach().requires_grad_(true),
               b32 = b.detach().requires_grad_(true);
  cross_entropy(relu(linear(x32, w32, b32)), labels).backward();
  // Absolute tolerance relative to the gradients' scale: each is a sum of bf16-rounded terms.
  const double scale = max(abs(w32.grad())).item();
  EXPECT_TRUE(all_close(w.grad().cpu(), w32.grad().cpu(), Tol{scale * lowp_tol(dt).rtol, lowp_tol(dt).rtol}));
  EXPECT_TRUE(all_close(b.grad().cpu(), b32.grad().cpu(), Tol{max(abs(b32.grad())).item() * lowp_tol(dt).rtol,
                                                              lowp_tol(dt).rtol}));
}

TEST(Autocast, LinearRunsLowWithF32LossAndMasterGradients) {
  check_autocast_mlp(DType::BF16, Device::cpu());
  check_autocast_mlp(DType::F16, Device::cpu());
}

TEST(Autocast, MatmulBatchedAndTransposed) {
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor a = test::uniform({3, 7, 9}, -1.0, 1.0, DType::F32, 8);
    const Tensor b = test::uniform({9, 5}, -1.0, 1.0, DType::F32, 9);
    Tensor c, ct;
    {
      autocast guard(dt);
      c = matmul(a, b);
      ct = matmul(b.t(), a.transpose(1, 2));  // [5, 9] @ [3, 9, 7]: strided operands
    }
    EXPECT_EQ(c.dtype(), dt);
    const Tensor ref = matmul(a.to(dt).to(DType::F64), b.to(dt).to(DType::F64));
    EXPECT_TRUE(all_close(c.to(DType::F64), ref, lowp_tol(dt)));
    EXPECT_TRUE(all_close(ct.to(DType::F64), ref.transpose(1, 2), lowp_tol(dt)));
  }
}

TEST(Autocast, OutsideTheScopeNothingChanges) {
  const Tensor x = test::uniform({4, 6}, -1.0, 1.0, DType::F32, 1), w = test::uniform({3, 6}, -1, 1, DType::F32, 2);
  EXPECT_EQ(linear(x, w, Tensor()).dtype(), DType::F32);
  {
    autocast guard(DType::BF16);
    EXPECT_EQ(linear(x.to(DType::F64), w.to(DType::F64), Tensor()).dtype(), DType::F64);  // f64 is kept
  }
}

// ---- GradScaler ----

TEST(GradScaler, InjectedInfSkipsTheStepAndHalvesTheScale) {
  Tensor p = from_vector<float>({1.0f, 2.0f, 3.0f}).requires_grad_(true);
  optim::SGD opt({p}, optim::SGDOptions{.lr = 0.1});
  optim::GradScaler scaler(optim::GradScalerOptions{.growth_interval = 3});
  EXPECT_EQ(scaler.get_scale(), 65536.0);
  // A clean step: loss = sum(p^2) / 2, gradient p; after unscaling exactly p.
  scaler.scale(mul(sum(square(p)), 0.5)).backward();
  EXPECT_EQ(p.grad().to_vector<float>(), (std::vector<float>{65536.0f, 131072.0f, 196608.0f}));
  EXPECT_TRUE(scaler.step(opt));
  scaler.update();
  EXPECT_TRUE(all_close(p.detach(), from_vector<float>({0.9f, 1.8f, 2.7f}), Tol::for_dtype(DType::F32)));
  // An inf in one gradient element: the step is skipped, the parameters are unchanged.
  opt.zero_grad();
  scaler.scale(mul(sum(square(p)), 0.5)).backward();
  Tensor g = p.grad();
  g.copy_(from_vector<float>({1.0f, INFINITY, 1.0f}));
  const std::vector<float> before = p.detach().to_vector<float>();
  EXPECT_FALSE(scaler.step(opt));
  scaler.update();
  EXPECT_EQ(p.detach().to_vector<float>(), before);
  EXPECT_EQ(scaler.get_scale(), 32768.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  // NaN likewise.
  opt.zero_grad();
  scaler.scale(sum(p)).backward();
  p.grad().copy_(from_vector<float>({NAN, 0.0f, 0.0f}));
  EXPECT_FALSE(scaler.step(opt));
  scaler.update();
  EXPECT_EQ(p.detach().to_vector<float>(), before);
  EXPECT_EQ(scaler.get_scale(), 16384.0);
  // growth_interval (3) clean steps in a row double it.
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    scaler.scale(sum(p)).backward();
    EXPECT_TRUE(scaler.step(opt));
    scaler.update();
    EXPECT_EQ(scaler.get_scale(), i < 2 ? 16384.0 : 32768.0);
  }
  EXPECT_EQ(scaler.skipped_steps(), 2);
}

TEST(GradScaler, UnscaleBeforeClippingSeesTrueGradients) {
  Tensor p = from_vector<float>({3.0f, 4.0f}).requires_grad_(true);
  optim::SGD opt({p}, optim::SGDOptions{.lr = 1.0});
  optim::GradScaler scaler;
  scaler.scale(sum(mul(p, from_vector<float>({3.0f, 4.0f})))).backward();  // gradient (3, 4)
  scaler.unscale_(opt);
  EXPECT_EQ(p.grad().to_vector<float>(), (std::vector<float>{3.0f, 4.0f}));
  const Tensor norm = optim::clip_grad_norm_({p}, 1.0);
  EXPECT_NEAR(norm.item(), 5.0, 1e-6);
  EXPECT_TRUE(scaler.step(opt));  // does not unscale again
  scaler.update();
  EXPECT_TRUE(all_close(p.detach(), from_vector<float>({3.0f - 0.6f, 4.0f - 0.8f}), Tol{1e-5, 1e-5}));
  EXPECT_TRUE(test::throws_with([&] { scaler.update(); }, {"GradScaler", "step()"}));
}

TEST(GradScaler, RejectsBadOptions) {
  EXPECT_TRUE(test::throws_with([] { optim::GradScaler s(optim::GradScalerOptions{.init_scale = 0.0}); },
                                {"init_scale"}));
  EXPECT_TRUE(test::throws_with([] { optim::GradScaler s(optim::GradScalerOptions{.backoff_factor = 1.5}); },
                                {"backoff_factor"}));
}

// ---- CUDA vs CPU, per op and precision ----

TEST(CudaMixedPrecision, CastsMatchTheReference) {
  EMBER_SKIP_WITHOUT_CUDA();
  check_casts(DType::BF16, kBF16, Device::cuda(0));
  check_casts(DType::F16, kF16, Device::cuda(0));
}

TEST(CudaMixedPrecision, ElementwiseAndReductionsMatchCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::BF16, DType::F16}) {
    const Tensor x = test::uniform({1000}, -3.0, 3.0, DType::F32, 21).to(dt);
    const Tensor y = test::uniform({1000}, 0.5, 2.0, DType::F32, 22).to(dt);
    const Tensor xc = x.cuda(), yc = y.cuda();
    EXPECT_EQ(bits_of(add(xc, yc)), bits_of(add(x, y)));
    EXPECT_EQ(bits_of(mul(xc, yc)), bits_of(mul(x, y)));
    EXPECT_EQ(bits_of(relu(xc)), bits_of(relu(x)));
    // exp: CUDA's expf and glibc's differ by a few ulp of f32, far inside one ulp of the low dtype
    // except where the f32 result sits next to a rounding boundary.
    EXPECT_TRUE(all_close(exp(xc).to(DType::F64).cpu(), exp(x).to(DType::F64), lowp_tol(dt)));
    const Tensor m = x.reshape({40, 25});
    EXPECT_TRUE(all_close(sum(m.cuda(), {1}).to(DType::F64).cpu(), sum(m, {1}).to(DType::F64), lowp_tol(dt)));
    EXPECT_EQ(bits_of(max(m.cuda(), 0).first), bits_of(max(m, 0).first));
    EXPECT_EQ(sum(ones({4096}).to(dt).cuda()).to(DType::F32).item(), 4096.0);
  }
}

TEST(CudaAutocast, LinearAndMatmulMatchCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::BF16, DType::F16}) {
    check_autocast_mlp(dt, Device::cuda(0));
    const Tensor a = test::uniform({3, 7, 9}, -1.0, 1.0, DType::F32, 8);
    const Tensor b = test::uniform({9, 5}, -1.0, 1.0, DType::F32, 9);
    autocast guard(dt);
    EXPECT_TRUE(all_close(matmul(a.cuda(), b.cuda()).to(DType::F64).cpu(), matmul(a, b).to(DType::F64), lowp_tol(dt)));
  }
}

TEST(CudaGradScaler, InjectedInfSkipsTheStep) {
  EMBER_SKIP_WITHOUT_CUDA();
  Tensor p = from_vector<float>({1.0f, 2.0f}).cuda().detach().requires_grad_(true);
  optim::SGD opt({p}, optim::SGDOptions{.lr = 0.1});
  optim::GradScaler scaler;
  scaler.scale(sum(p)).backward();
  p.grad().copy_(from_vector<float>({1.0f, INFINITY}).cuda());
  EXPECT_FALSE(scaler.step(opt));
  scaler.update();
  EXPECT_EQ(p.detach().cpu().to_vector<float>(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(scaler.get_scale(), 32768.0);
}

}  // namespace
}  // namespace ember
