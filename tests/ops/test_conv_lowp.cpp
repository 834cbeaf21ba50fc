// bf16/f16 convolutions (issue 13): forward, data gradient, weight gradient and bias gradient of
// conv2d on 16-bit tensors, against a naive f64 loop written here over the same 16-bit inputs, and
// autocast's routing of conv1d/conv2d/conv_transpose2d to the low precision with f32 master
// gradients. The Cuda* tests run the same cases through cuDNN and compare with the CPU; they skip
// without a device.
//
// The bound. Every input is exactly representable in the 16-bit dtype, so each product x * w is
// exact in f32 (8 + 8 or 11 + 11 significand bits). A convolution with f32 accumulation therefore
// computes the exact sum s (what the f64 loop gives, to 2^-53) up to the f32 rounding of at most K
// additions, |e| <= K * 2^-24 * sum |x w| (K = the number of terms), and rounds the result once to
// the 16-bit dtype: |result - s| <= u * |s| + (1 + u) * |e|, with u = 2^-8 for bf16 (8 significand
// bits) and 2^-11 for f16. The tests assert exactly that (with K * 2^-23 for |e|, a factor 2 of
// margin for the order of the additions oneDNN picks), which is tighter than PyTorch's assert_close
// tolerance for bf16 (rtol 1.6e-2 = 4.1 u) and checks that each output is rounded once, not twice.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <vector>

#include "cpp/backend/cpu/cpu_conv.h"
#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "ember/ember.h"
#include "tests/test_util.h"

namespace ember {
namespace {

using ember::test::all_close;
using ember::test::Tol;

#define EMBER_SKIP_WITHOUT_CUDA()                 \
  if (!ember::cuda::is_available()) GTEST_SKIP() \
      << "no CUDA device: ember::cuda::is_available() is false on this machine (no GPU or no driver)"

// The unit roundoff of the dtype: half its ulp at 1.
double unit_roundoff(DType dt) { return dt == DType::BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11); }

struct Case {
  const char* name;
  int64_t n, c_in, h, w, c_out, kh, kw;
  Int2 stride, padding, dilation;
  int64_t groups;
  bool bias;
};

// The MNIST CNN's two layers (smaller batch), and strided / dilated / grouped / pointwise cases.
const std::vector<Case> kCases = {
    {"mnist conv1 (1 -> 32)", 3, 1, 28, 28, 32, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, true},
    {"mnist conv2 (32 -> 64)", 2, 32, 14, 14, 64, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1, true},
    {"padded, strided", 2, 5, 11, 9, 7, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1, true},
    {"dilated, no bias", 2, 4, 10, 10, 6, 3, 2, {1, 1}, {2, 1}, {2, 2}, 1, false},
    {"grouped", 2, 6, 8, 8, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2, true},
    {"pointwise 1x1", 2, 16, 7, 7, 16, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1, true},
};

// Exact (f64) sums of the convolution of 16-bit-valued inputs: y, dx, dw, db for a given dy, and
// the sums of absolute products behind each entry (for the accumulation bound).
struct Reference {
  std::vector<double> y, y_abs, y_conv, dx, dx_abs, dw, dw_abs, db, db_abs;  // y_conv: y without the bias
  int64_t k_y = 0, k_dx = 0, k_dw = 0, k_db = 0;  // terms per entry (upper bounds)
};

Reference naive(const Case& c, const std::vector<double>& x, const std::vector<double>& w,
                const std::vector<double>& b, const std::vector<double>& dy, int64_t ho, int64_t wo) {
  const int64_t cg_in = c.c_in / c.groups, cg_out = c.c_out / c.groups;
  Reference r;
  r.y.assign(static_cast<size_t>(c.n * c.c_out * ho * wo), 0.0);
  r.y_abs = r.y_conv = r.y;
  r.dx.assign(static_cast<size_t>(c.n * c.c_in * c.h * c.w), 0.0);
  r.dx_abs = r.dx;
  r.dw.assign(static_cast<size_t>(c.c_out * cg_in * c.kh * c.kw), 0.0);
  r.dw_abs = r.dw;
  r.db.assign(static_cast<size_t>(c.c_out), 0.0);
  r.db_abs = r.db;
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t co = 0; co < c.c_out; ++co) {
      const int64_t grp = co / cg_out;
      for (int64_t oh = 0; oh < ho; ++oh)
        for (int64_t ow = 0; ow < wo; ++ow) {
          const size_t yi = static_cast<size_t>(((n * c.c_out + co) * ho + oh) * wo + ow);
          const double g = dy[yi];
          double acc = c.bias ? b[co] : 0.0, acc_abs = c.bias ? std::fabs(b[co]) : 0.0;
          for (int64_t cig = 0; cig < cg_in; ++cig) {
            const int64_t ci = grp * cg_in + cig;
            for (int64_t i = 0; i < c.kh; ++i)
              for (int64_t j = 0; j < c.kw; ++j) {
                const int64_t ih = oh * c.stride[0] - c.padding[0] + i * c.dilation[0];
                const int64_t iw = ow * c.stride[1] - c.padding[1] + j * c.dilation[1];
                if (ih < 0 || ih >= c.h || iw < 0 || iw >= c.w) continue;
                const size_t xi = static_cast<size_t>(((n * c.c_in + ci) * c.h + ih) * c.w + iw);
                const size_t wi = static_cast<size_t>(((co * cg_in + cig) * c.kh + i) * c.kw + j);
                acc += x[xi] * w[wi];
                acc_abs += std::fabs(x[xi] * w[wi]);
                r.dx[xi] += g * w[wi];
                r.dx_abs[xi] += std::fabs(g * w[wi]);
                r.dw[wi] += g * x[xi];
                r.dw_abs[wi] += std::fabs(g * x[xi]);
              }
          }
          r.y[yi] = acc;
          r.y_abs[yi] = acc_abs;
          r.y_conv[yi] = acc - (c.bias ? b[co] : 0.0);
          r.db[co] += g;
          r.db_abs[co] += std::fabs(g);
        }
    }
  r.k_y = cg_in * c.kh * c.kw + 1;
  r.k_dx = cg_out * c.kh * c.kw;  // each input element is read by at most kh*kw windows per channel
  r.k_dw = c.n * ho * wo;
  r.k_db = c.n * ho * wo;
  return r;
}

// |got - exact| <= u * |exact| + (1 + u) * k * 2^-23 * abs_sum, entry by entry; with `first`
// (a result rounded to the dtype before a last addition: cuDNN's convolution before ember adds the
// bias), also + (1 + u) * u * |first|, that first rounding's error.
::testing::AssertionResult within_bound(const Tensor& got, const std::vector<double>& exact,
                                        const std::vector<double>& abs_sum, int64_t k, DType dt,
                                        const std::vector<double>* first, const std::string& what) {
  const std::vector<double> v = got.to(DType::F64).cpu().to_vector<double>();
  if (v.size() != exact.size()) return ::testing::AssertionFailure() << what << ": " << v.size() << " values vs " << exact.size();
  const double u = unit_roundoff(dt);
  for (size_t i = 0; i < v.size(); ++i) {
    const double bound = u * std::fabs(exact[i]) + (1 + u) * static_cast<double>(k) * std::ldexp(1.0, -23) * abs_sum[i] +
                         (first ? (1 + u) * u * std::fabs((*first)[i]) : 0.0);
    if (!(std::fabs(v[i] - exact[i]) <= bound))
      return ::testing::AssertionFailure() << what << " [" << i << "]: got " << v[i] << ", exact " << exact[i]
                                           << ", |diff| " << std::fabs(v[i] - exact[i]) << " > bound " << bound;
  }
  return ::testing::AssertionSuccess();
}

struct ConvRun {
  Tensor y, dx, dw, db;
};

// conv2d on dt tensors made from the case's inputs (already dt-valued), forward and backward
// from dy, on `dev`.
ConvRun run_conv(const Case& c, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, Device dev) {
  // Fresh leaves (to() returns the tensor itself when it is already on dev).
  Tensor xd = x.to(dev).detach().requires_grad_(true), wd = w.to(dev).detach().requires_grad_(true);
  Tensor bd = c.bias ? b.to(dev).detach().requires_grad_(true) : Tensor();
  Tensor y = conv2d(xd, wd, bd, {.stride = c.stride, .padding = c.padding, .dilation = c.dilation, .groups = c.groups});
  y.backward(dy.to(dev));
  return {y, xd.grad(), wd.grad(), c.bias ? bd.grad() : Tensor()};
}

struct Inputs {
  Tensor x, w, b, dy;  // dt tensors
  Reference ref;
};

Inputs make_inputs(const Case& c, DType dt, uint64_t seed) {
  const int64_t eh = c.dilation[0] * (c.kh - 1) + 1, ew = c.dilation[1] * (c.kw - 1) + 1;
  const int64_t ho = (c.h + 2 * c.padding[0] - eh) / c.stride[0] + 1, wo = (c.w + 2 * c.padding[1] - ew) / c.stride[1] + 1;
  Inputs in;
  in.x = test::uniform({c.n, c.c_in, c.h, c.w}, -1.0, 1.0, DType::F32, seed).to(dt);
  in.w = test::uniform({c.c_out, c.c_in / c.groups, c.kh, c.kw}, -0.5, 0.5, DType::F32, seed + 1).to(dt);
  in.b = test::uniform({c.c_out}, -0.5, 0.5, DType::F32, seed + 2).to(dt);
  in.dy = test::uniform({c.n, c.c_out, ho, wo}, -1.0, 1.0, DType::F32, seed + 3).to(dt);
  auto f64 = [](const Tensor& t) { return t.to(DType::F64).to_vector<double>(); };
  in.ref = naive(c, f64(in.x), f64(in.w), f64(in.b), f64(in.dy), ho, wo);
  return in;
}

// `bias_after`: the bias is added to the convolution's already rounded result (cuDNN's path), so the
// forward result is rounded twice; every other output is rounded once.
void check_against_reference(const Case& c, DType dt, const Inputs& in, const ConvRun& r, bool bias_after) {
  SCOPED_TRACE(std::string(c.name) + ", " + dtype_name(dt));
  EXPECT_EQ(r.y.dtype(), dt);
  EXPECT_EQ(r.dx.dtype(), dt);
  EXPECT_EQ(r.dw.dtype(), dt);
  EXPECT_TRUE(within_bound(r.y, in.ref.y, in.ref.y_abs, in.ref.k_y, dt, c.bias && bias_after ? &in.ref.y_conv : nullptr,
                           "forward"));
  EXPECT_TRUE(within_bound(r.dx, in.ref.dx, in.ref.dx_abs, in.ref.k_dx, dt, nullptr, "data gradient"));
  EXPECT_TRUE(within_bound(r.dw, in.ref.dw, in.ref.dw_abs, in.ref.k_dw, dt, nullptr, "weight gradient"));
  if (c.bias) {
    EXPECT_EQ(r.db.dtype(), dt);
    EXPECT_TRUE(within_bound(r.db, in.ref.db, in.ref.db_abs, in.ref.k_db, dt, nullptr, "bias gradient"));
  }
}

cpu::ConvGeometry geometry_of(const Case& c, const Inputs& in) {  // as cpu::conv_geometry reads it
  ConvParams p;
  p.stride = c.stride;
  p.dilation = c.dilation;
  p.pad_begin = p.pad_end = c.padding;
  p.groups = c.groups;
  return {c.n, c.c_in, c.h, c.w, c.c_out, c.kh, c.kw, in.dy.size(2), in.dy.size(3), p};
}

// Whether oneDNN is limited to AVX2 (ctest's ops.conv_lowp_without_avx512 sets DNNL_MAX_CPU_ISA=AVX2,
// as on an AVX2-only CPU, where oneDNN 2.6 has no bf16 convolution).
bool onednn_limited_to_avx2() {
  const char* e = std::getenv("DNNL_MAX_CPU_ISA");
  return e && std::string(e) == "AVX2";
}

TEST(ConvLowp, MatchesExactSumsOfTheRoundedInputs) {
  // Where the CPU has AVX512_BF16, bf16 must run on oneDNN's bf16 kernels (not silently widened);
  // limited to AVX2, it must take the widened path (and meet the same bound below).
  {
    const Case& c = kCases[1];
    const Inputs in = make_inputs(c, DType::BF16, 5);
    if (onednn_limited_to_avx2())
      EXPECT_FALSE(cpu::dnnl_conv_has_kernel(geometry_of(c, in), DType::BF16, true));
    else if (cpu_info().avx512_bf16)
      EXPECT_TRUE(cpu::dnnl_conv_has_kernel(geometry_of(c, in), DType::BF16, true));
  }
  // bf16 under both of the CPU's paths (cpu::bf16_kernels() picks one per machine by timing;
  // forced here so that each machine tests both): oneDNN's bf16 kernels, and f32 on widened copies.
  for (const int bf16_mode : {1, 0}) {
    cpu::force_bf16_kernels_for_testing(bf16_mode);
    for (DType dt : {DType::BF16, DType::F16}) {
      if (dt == DType::F16 && bf16_mode == 0) continue;  // f16 does not depend on the bf16 choice
      for (size_t i = 0; i < kCases.size(); ++i) {
        const Case& c = kCases[i];
        SCOPED_TRACE(bf16_mode == 1 ? "bf16 on oneDNN's kernels where it has them" : "bf16 widened to f32");
        const Inputs in = make_inputs(c, dt, 10 * i + 1);
        check_against_reference(c, dt, in, run_conv(c, in.x, in.w, in.b, in.dy, Device::cpu()), false);
        // Which engine ran (oneDNN's 16-bit kernels, or f32 on widened copies): both must meet the bound.
        const bool kernels = cpu::dnnl_conv_has_kernel(geometry_of(c, in), dt, c.bias) && (dt != DType::BF16 || bf16_mode == 1);
        RecordProperty(std::string(c.name) + " " + dtype_name(dt) + (bf16_mode == 1 ? "" : " (forced widened)"),
                       kernels ? "oneDNN 16-bit kernels" : "widened to f32");
      }
    }
  }
  cpu::force_bf16_kernels_for_testing(-1);
}

// The same convolution in f32 on the 16-bit-valued inputs: the exact sums up to f32 rounding, so
// the 16-bit result must equal it rounded once, within the accumulation term of the bound.
TEST(ConvLowp, AgreesWithF32ConvOfTheRoundedInputs) {
  for (DType dt : {DType::BF16, DType::F16}) {
    const Case& c = kCases[1];
    const Inputs in = make_inputs(c, dt, 77);
    const ConvRun low = run_conv(c, in.x, in.w, in.b, in.dy, Device::cpu());
    const ConvRun f32 = run_conv(c, in.x.to(DType::F32), in.w.to(DType::F32), in.b.to(DType::F32), in.dy.to(DType::F32),
                             Device::cpu());
    EXPECT_EQ(f32.y.dtype(), DType::F32);
    const Tol tol{0.0, 2 * unit_roundoff(dt)};  // one rounding of the f32 value plus f32's own (much smaller) error
    EXPECT_TRUE(all_close(low.y.to(DType::F64), f32.y.to(DType::F64), {1e-5, tol.rtol}));
    EXPECT_TRUE(all_close(low.dw.to(DType::F64), f32.dw.to(DType::F64), {1e-5, tol.rtol}));
    EXPECT_TRUE(all_close(low.dx.to(DType::F64), f32.dx.to(DType::F64), {1e-5, tol.rtol}));
  }
}

TEST(ConvLowp, EmptyBatchAndMixedDtypesAreHandled) {
  const Tensor x = zeros({0, 3, 5, 5}).to(DType::BF16), w = ones({4, 3, 3, 3}).to(DType::BF16).requires_grad_(true);
  const Tensor y = conv2d(x, w, Tensor(), {});
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_EQ(y.shape(), (Shape{0, 4, 3, 3}));
  // Outside autocast a bf16 input with an f32 weight is refused, naming both dtypes.
  EXPECT_TRUE(test::throws_with([] { conv2d(ones({1, 3, 5, 5}).to(DType::BF16), ones({4, 3, 3, 3}), Tensor(), {}); },
                                {"conv2d", "bf16", "f32", ".to(DType)"}));
}

// ---- autocast routing ----

TEST(AutocastConv, TableLowersConvolutions) {
  EXPECT_EQ(autocast_policy("conv2d"), AutocastPolicy::Lower);
  EXPECT_EQ(autocast_policy("conv1d"), AutocastPolicy::Lower);
  EXPECT_EQ(autocast_policy("conv_transpose2d"), AutocastPolicy::Lower);
  // Max pooling selects an input (exact in any dtype) and keeps its input's dtype, as in PyTorch;
  // average pooling sums in f32.
  EXPECT_EQ(autocast_policy("max_pool2d"), AutocastPolicy::Keep);
  EXPECT_EQ(autocast_policy("avg_pool2d"), AutocastPolicy::Float32);
}

// A small CNN under autocast: conv2d -> relu -> max_pool2d -> conv_transpose2d, conv1d, then a
// loss. Convolutions and the max pool output the low precision, the loss f32; the f32 master weights get
// f32 gradients that match f32 training within the dtype's tolerance (scaled to the gradients).
void check_autocast_cnn(DType dt, Device dev) {
  SCOPED_TRACE(dtype_name(dt));
  const Tensor x = test::uniform({4, 3, 10, 10}, -1.0, 1.0, DType::F32, 5).to(dev);
  const Tensor w1 = test::uniform({8, 3, 3, 3}, -0.3, 0.3, DType::F32, 6).to(dev).requires_grad_(true);
  const Tensor b1 = test::uniform({8}, -0.2, 0.2, DType::F32, 7).to(dev).requires_grad_(true);
  const Tensor wt = test::uniform({8, 4, 2, 2}, -0.3, 0.3, DType::F32, 8).to(dev).requires_grad_(true);
  const Tensor w3 = test::uniform({5, 4, 3}, -0.3, 0.3, DType::F32, 9).to(dev).requires_grad_(true);
  auto forward = [&](const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& d, bool check) {
    const Tensor y1 = conv2d(x, a, b, {.padding = {1, 1}});
    const Tensor p = max_pool2d(relu(y1), {.kernel_size = {2, 2}});
    const Tensor y2 = conv_transpose2d(p, c, Tensor(), {.stride = {2, 2}});  // [4, 4, 10, 10]
    const Tensor y3 = conv1d(y2.reshape({4, 4, 100}), d, Tensor(), {});      // [4, 5, 98]
    if (check) {
      EXPECT_EQ(y1.dtype(), dt);
      EXPECT_EQ(p.dtype(), dt);
      EXPECT_EQ(y2.dtype(), dt);
      EXPECT_EQ(y3.dtype(), dt);
    }
    return mean(mul(y3, y3));
  };
  Tensor loss;
  {
    autocast guard(dt);
    loss = forward(w1, b1, wt, w3, true);
  }
  EXPECT_EQ(loss.dtype(), DType::F32);
  loss.backward();
  const Tensor a = w1.detach().requires_grad_(true), b = b1.detach().requires_grad_(true),
               c = wt.detach().requires_grad_(true), d = w3.detach().requires_grad_(true);
  forward(a, b, c, d, false).backward();
  const double rtol = dt == DType::BF16 ? 1.6e-2 : 1e-3;
  for (const auto& [low, ref] : std::vector<std::pair<Tensor, Tensor>>{{w1, a}, {b1, b}, {wt, c}, {w3, d}}) {
    ASSERT_TRUE(low.grad().defined());
    EXPECT_EQ(low.grad().dtype(), DType::F32);
    // Each gradient is a sum of terms rounded to the dtype: absolute tolerance relative to its scale.
    const double scale = max(abs(ref.grad())).item();
    EXPECT_TRUE(all_close(low.grad().cpu(), ref.grad().cpu(), Tol{scale * rtol * 2, rtol}));
  }
}

TEST(AutocastConv, ConvolutionsRunLowAndMasterGradientsAreF32) {
  check_autocast_cnn(DType::BF16, Device::cpu());
  check_autocast_cnn(DType::F16, Device::cpu());
}

TEST(AutocastConv, MnistCnnTrainsUnderBf16) {
  manual_seed(3);
  auto model = models::mnist_cnn();
  optim::Adam opt(model->parameters(), {.lr = 1e-3});
  // Two fixed batches whose class is a bright 4x4 patch at a class-dependent place.
  std::vector<float> px(16 * 28 * 28, 0.0f);
  std::vector<int64_t> labels(16);
  for (int64_t i = 0; i < 16; ++i) {
    labels[i] = i % 4;
    for (int64_t r = 0; r < 4; ++r)
      for (int64_t q = 0; q < 4; ++q) px[i * 784 + (4 + 12 * (labels[i] / 2) + r) * 28 + 4 + 12 * (labels[i] % 2) + q] = 2.0f;
  }
  const Tensor x = from_vector<float>(px, {16, 1, 28, 28}), y = from_vector<int64_t>(labels);
  double first = 0, last = 0;
  for (int step = 0; step < 15; ++step) {
    Tensor loss;
    {
      autocast guard(DType::BF16);
      loss = cross_entropy((*model)(x), y);
    }
    opt.zero_grad();
    loss.backward();
    for (const Tensor& p : model->parameters()) EXPECT_EQ(p.grad().dtype(), DType::F32);
    opt.step();
    (step == 0 ? first : last) = loss.item();
  }
  EXPECT_LT(last, 0.5 * first) << "loss " << first << " -> " << last;
}

// ---- CUDA: cuDNN in bf16/f16 against the same exact sums and against the CPU ----

TEST(CudaConvLowp, MatchesExactSumsAndTheCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::BF16, DType::F16})
    for (size_t i = 0; i < kCases.size(); ++i) {
      const Case& c = kCases[i];
      const Inputs in = make_inputs(c, dt, 10 * i + 1);
      const ConvRun gpu = run_conv(c, in.x, in.w, in.b, in.dy, Device::cuda(0));
      check_against_reference(c, dt, in, gpu, /*bias_after=*/true);
      // CUDA vs the CPU, and vs cuDNN's f32 convolution of the same rounded inputs, with PyTorch's
      // assert_close rtol for the dtype. The absolute part is one rounding at the tensor's scale
      // (2u * max |ref|): entries near zero come from cancelling sums (and, for y, from the bias
      // cancelling the convolution, whose rounding cuDNN's path does first), where a relative test
      // says nothing.
      const ConvRun cpu = run_conv(c, in.x, in.w, in.b, in.dy, Device::cpu());
      const ConvRun f32 = run_conv(c, in.x.to(DType::F32), in.w.to(DType::F32), in.b.to(DType::F32),
                                   in.dy.to(DType::F32), Device::cuda(0));
      const double rtol = dt == DType::BF16 ? 1.6e-2 : 1e-3;
      auto close = [&](const Tensor& got, const Tensor& ref, const char* what) {
        const Tensor r64 = ref.to(DType::F64).cpu();
        const double atol = 2 * unit_roundoff(dt) * max(abs(r64)).item();
        EXPECT_TRUE(all_close(got.to(DType::F64).cpu(), r64, Tol{atol, rtol})) << c.name << ", " << what;
      };
      close(gpu.y, cpu.y, "forward vs cpu");
      close(gpu.dx, cpu.dx, "data gradient vs cpu");
      close(gpu.dw, cpu.dw, "weight gradient vs cpu");
      if (c.bias) close(gpu.db, cpu.db, "bias gradient vs cpu");
      close(gpu.y, f32.y, "forward vs f32");
      close(gpu.dx, f32.dx, "data gradient vs f32");
      close(gpu.dw, f32.dw, "weight gradient vs f32");
    }
}

TEST(CudaAutocastConv, ConvolutionsRunLowAndMatchCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  check_autocast_cnn(DType::BF16, Device::cuda(0));
  check_autocast_cnn(DType::F16, Device::cuda(0));
}

}  // namespace
}  // namespace ember
