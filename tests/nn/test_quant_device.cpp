// ember::quant's device path (the int8 backend primitives: quantise, im2col, int8 GEMM with its
// requantising epilogue, max-pool of codes). On the CPU: quant_math.h's scalar rules against values
// written here, and the primitives' reference loops (forward_primitives) against the oneDNN path
// (forward) on Linear / Conv2d chains covering s8 and u8 inputs, stride, padding, dilation, a
// pointwise convolution, a max-pool, a Flatten (aligned and not), a convolution as the last layer
// and models::mnist_cnn on MNIST digits. On CUDA (Cuda* tests, skipped without a device): every
// primitive against the CPU's on poisoned outputs, and the same models on the device against the
// CPU, then errors.
//
// Tolerances. The int32 accumulations are exact on every path. After them, the CPU loops and the
// CUDA kernels evaluate the same f32 operations in the same order from the same f32 constants
// (quant_math.h; round-half-even by rintf on both; the kernels compiled with -fmad=false, so no
// FMA), so the CUDA outputs must equal the CPU loops' bit for bit: those comparisons are exact.
// The oneDNN path computes (acc + bias_div) * scale in its own JIT code; its outputs are compared
// with the loops' exactly too where it follows the same order (the tests below say so, and were
// run on this CPU: AVX-512 VNNI brgemm kernels).
#include <cmath>
#include <cstring>
#include <filesystem>

#include "cpp/backend/backend.h"
#include "cpp/backend/quant_math.h"
#include "ember/cuda.h"
#include "ember/models.h"
#include "ember/quant.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

using Children = std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>;

bool have_cuda() { return cuda::is_available(); }
#define SKIP_WITHOUT_CUDA() \
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device (the int8 device path is compiled but cannot run here)"

// Exact equality of two F32 tensors (shape and every value), naming the first difference.
::testing::AssertionResult same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  const std::vector<float> x = a.cpu().contiguous().to_vector<float>(), y = b.cpu().contiguous().to_vector<float>();
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i])) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << x.size() << " values differ; first at " << first << ": "
                                       << x[static_cast<size_t>(first)] << " vs " << y[static_cast<size_t>(first)];
}

struct Case {
  const char* name;
  std::shared_ptr<nn::Sequential> model;
  Tensor calib, x;
};

// The chains the tests run; every one quantises (quant.h's supported set).
std::vector<Case> cases() {
  std::vector<Case> out;
  Generator g(41);
  const nn::LinearOptions lo{.generator = &g};
  // s8 input (K 20 -> k_pad 32, 13 outputs -> n_pad 16).
  out.push_back({"linear_s8",
                 std::make_shared<nn::Sequential>(Children{{"fc", std::make_shared<nn::Linear>(20, 13, lo)}}),
                 test::uniform({16, 20}, -2, 2, DType::F32, 5), test::uniform({7, 20}, -2, 2, DType::F32, 6)});
  // u8 input and a requantised u8 hidden layer (24 = not a multiple of 16: the padding copy).
  out.push_back({"mlp_u8",
                 std::make_shared<nn::Sequential>(Children{{"fc1", std::make_shared<nn::Linear>(30, 24, lo)},
                                                           {"relu", std::make_shared<nn::ReLU>()},
                                                           {"fc2", std::make_shared<nn::Linear>(24, 5, lo)}}),
                 test::uniform({16, 30}, 0, 1, DType::F32, 7), test::uniform({9, 30}, 0, 1, DType::F32, 8)});
  // Stride 2 + padding 1, dilation 2 + padding 2, a max-pool, a pointwise convolution on 16
  // channels (read in place), a Flatten of 4 * 3 * 10 = 120 features (copied to 128), non-square.
  {
    auto conv = [&](int64_t i, int64_t o, int64_t k, nn::ConvOptions co) {
      co.generator = &g;
      return std::make_shared<nn::Conv2d>(i, o, k, co);
    };
    auto m = std::make_shared<nn::Sequential>(Children{{"c1", conv(3, 8, 3, {.stride = {2, 2}, .padding = {1, 1}})},
                                                       {"r1", std::make_shared<nn::ReLU>()},
                                                       {"c2", conv(8, 16, 3, {.padding = {2, 2}, .dilation = {2, 2}})},
                                                       {"r2", std::make_shared<nn::ReLU>()},
                                                       {"p2", std::make_shared<nn::MaxPool2d>(2)},
                                                       {"c3", conv(16, 10, 1, {})},
                                                       {"r3", std::make_shared<nn::ReLU>()},
                                                       {"flat", std::make_shared<nn::Flatten>()},
                                                       {"fc", std::make_shared<nn::Linear>(4 * 3 * 10, 7, lo)}});
    out.push_back({"convnet", m, test::uniform({8, 3, 15, 13}, -1, 1, DType::F32, 9),
                   test::uniform({3, 3, 15, 13}, -1, 1, DType::F32, 10)});
  }
  // A convolution as the last layer (f32 NCHW output), max-pooled; u8 input.
  out.push_back({"conv_last",
                 std::make_shared<nn::Sequential>(Children{
                     {"c", std::make_shared<nn::Conv2d>(2, 5, 3, nn::ConvOptions{.padding = {1, 1}, .generator = &g})},
                     {"r", std::make_shared<nn::ReLU>()},
                     {"p", std::make_shared<nn::MaxPool2d>(2)}}),
                 test::uniform({4, 2, 6, 6}, 0, 1, DType::F32, 11), test::uniform({3, 2, 6, 6}, 0, 1, DType::F32, 12)});
  // A Flatten before the first Linear (the input read in NCHW order).
  out.push_back({"flatten_first",
                 std::make_shared<nn::Sequential>(Children{{"flat", std::make_shared<nn::Flatten>()},
                                                           {"fc", std::make_shared<nn::Linear>(2 * 4 * 4, 6, lo)}}),
                 test::uniform({8, 2, 4, 4}, -1, 1, DType::F32, 13),
                 test::uniform({5, 2, 4, 4}, -1, 1, DType::F32, 14)});
  return out;
}

// MNIST digits normalised as the trainer does, [n, 1, 28, 28] F32, from split `train` or test.
Tensor digits(bool train, int64_t n) {
  static const data::Mnist ds = data::load_mnist_dir(std::string(EMBER_SOURCE_DIR) + "/data/mnist");
  const Tensor images = (train ? ds.train.images : ds.test.images).slice(0, 0, n).to(DType::F32);
  return div(sub(div(images, 255.0), 0.1307), 0.3081).reshape({n, 1, 28, 28}).contiguous();
}

std::shared_ptr<nn::Sequential> seeded_mnist_cnn() {
  manual_seed(2024);
  auto m = models::mnist_cnn();
  m->eval();
  return m;
}

}  // namespace

// ---- quant_math.h: the scalar rules ----

TEST(QuantMath, SaturateRoundIsHalfToEvenAfterSaturation) {
  const std::pair<float, int32_t> s8[] = {{0.5f, 0},   {1.5f, 2},       {2.5f, 2},     {-0.5f, 0},
                                          {-1.5f, -2}, {-2.5f, -2},     {126.5f, 126}, {127.4f, 127},
                                          {300, 127},  {-128.6f, -128}, {-1e9f, -128}, {0.49999997f, 0}};
  for (auto [v, want] : s8) EXPECT_EQ(math::int8_saturate_round(v, -128, 127), want) << v;
  const std::pair<float, int32_t> u8[] = {{-3, 0}, {-0.5f, 0}, {254.5f, 254}, {255.5f, 255}, {1e9f, 255}, {3.5f, 4}};
  for (auto [v, want] : u8) EXPECT_EQ(math::int8_saturate_round(v, 0, 255), want) << v;
  EXPECT_EQ(math::int8_saturate_round(std::nanf(""), 0, 255), 0);
  EXPECT_EQ(math::int8_saturate_round(std::nanf(""), -128, 127), -128);
}

TEST(QuantMath, QuantizeMultipliesByTheInverseScale) {
  // 0.3 / 0.1 is 2.9999998 in f32 arithmetic; 0.3 * (1 / 0.1f) rounds to exactly 3: the rule is
  // the product with the f32 inverse, as the CPU path's reorder computes it.
  const float inv = 1.0f / 0.1f;
  EXPECT_EQ(math::int8_quantize(0.3f, inv, false), static_cast<int32_t>(std::nearbyint(0.3f * inv)));
  EXPECT_EQ(math::int8_quantize(-0.25f, 1.0f / 0.1f, false), -2);  // -2.5 -> -2 (half to even)
  EXPECT_EQ(math::int8_quantize(-0.25f, 1.0f / 0.1f, true), 0);
  EXPECT_EQ(math::int8_quantize(100.0f, 1.0f, true), 100);
  EXPECT_EQ(math::int8_quantize(100.0f, 2.0f, false), 127);
  EXPECT_EQ(math::int8_code_offset(true), -128);
  EXPECT_EQ(math::int8_code_offset(false), 0);
}

TEST(QuantMath, DequantizeAddsTheBiasBeforeTheScale) {
  // (acc + b) * s, one f32 rounding each: 16777217 is not an f32, so float(acc) rounds to 16777216
  // (half to even) before the bias is added.
  EXPECT_EQ(math::int8_dequantize(16777217, 0.0f, 1.0f, false), 16777216.0f);
  EXPECT_EQ(math::int8_dequantize(10, 2.5f, 0.5f, false), 6.25f);
  EXPECT_EQ(math::int8_dequantize(-10, 2.5f, 0.5f, false), -3.75f);
  EXPECT_EQ(math::int8_dequantize(-10, 2.5f, 0.5f, true), 0.0f);
  const float b = 0.1f, s = 0.3f;
  volatile float sum = static_cast<float>(12345) + b;  // each step rounded to f32
  EXPECT_EQ(math::int8_dequantize(12345, b, s, false), sum * s);
}

// ---- the CPU reference loops against the oneDNN path ----

TEST(QuantPrimitives, CpuLoopsEqualOneDnnOnEveryChain) {
  for (Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto q = quant::quantize(*c.model, {c.calib});
    const Tensor dnnl = (*q)(c.x);
    const Tensor loops = q->forward_primitives(c.x);
    // oneDNN's int8 kernels evaluate (float(acc) + bias_div) * scale and round half to even, as the
    // loops do: the outputs agree exactly (observed on this CPU; see the file comment).
    EXPECT_TRUE(same_values(loops, dnnl));
    // Not a vacuous agreement: the int8 output follows the float model's, which is far from constant.
    const Tensor f = (*c.model)(c.x);
    const double range = max(f).item<double>() - min(f).item<double>();
    const double err = max(abs(sub(loops, f))).item<double>();
    EXPECT_GT(range, 0.1);
    EXPECT_LT(err, 0.1 * range);
  }
}

TEST(QuantPrimitives, MnistCnnOnDigitsEqualsOneDnn) {
  auto model = seeded_mnist_cnn();
  auto q = quant::quantize(*model, {digits(true, 64)});
  const Tensor x = digits(false, 16);
  const Tensor dnnl = (*q)(x);
  EXPECT_TRUE(same_values(q->forward_primitives(x), dnnl));
  // And the int8 model is the float model's approximation: the same class for most digits.
  const Tensor f = (*model)(x);
  const int64_t agree = sum(eq(argmax(f, 1), argmax(dnnl, 1))).item<int64_t>();
  EXPECT_GE(agree, 14) << "int8 and fp32 agree on " << agree << " of 16 digits";
}

TEST(QuantPrimitives, DevicePathStateIsNotInTheStateDictAndSurvivesSaveLoad) {
  Case c = cases()[2];
  auto q = quant::quantize(*c.model, {c.calib});
  EXPECT_TRUE(q->state_dict().empty());  // the format of save() is unchanged; the buffers are derived
  EXPECT_EQ(q->buffers().size(), 4 * q->layers().size());
  const std::string path = (std::filesystem::temp_directory_path() / "ember_quant_device.safetensors").string();
  q->save(path);
  auto r = quant::QuantizedSequential::load(path);
  std::filesystem::remove(path);
  EXPECT_TRUE(same_values(r->forward_primitives(c.x), q->forward_primitives(c.x)));
}

TEST(QuantPrimitives, BadInputsThrow) {
  Case c = cases()[0];
  auto q = quant::quantize(*c.model, {c.calib});
  EXPECT_TRUE(throws_with([&] { q->forward_primitives(zeros({2, 20}, DType::F64)); }, {"F32"}));
  EXPECT_TRUE(throws_with([&] { q->forward_primitives(zeros({2, 21})); }, {"'fc'", "20 features", "21"}));
  EXPECT_TRUE(throws_with([&] { q->forward_primitives(zeros({0, 20})); }, {"empty batch"}));
  EXPECT_TRUE(throws_with([&] { q->forward_primitives(zeros({2, 4, 5})); }, {"[N, features]", "[2, 4, 5]"}));
  Case cv = cases()[2];
  auto qc = quant::quantize(*cv.model, {cv.calib});
  EXPECT_TRUE(throws_with([&] { qc->forward_primitives(zeros({1, 3, 2, 2})); }, {"'c2'", "max-pool"}));
  EXPECT_TRUE(throws_with([&] { qc->forward_primitives(zeros({1, 4, 15, 13})); }, {"'c1'", "3 channels"}));
  // The GEMM primitive checks its operands' agreement (a wrong K would read past w's rows).
  Int8GemmParams g;
  g.comp = zeros({16}, TensorOptions(DType::I32));
  g.bias_div = zeros({16});
  g.scale = zeros({16});
  EXPECT_TRUE(throws_with(
      [&] {
        backend_for(Device::cpu())
            .int8_gemm(zeros({4, 16}), zeros({4, 32}, TensorOptions(DType::U8)),
                       zeros({16, 48}, TensorOptions(DType::U8)), g);
      },
      {"inconsistent", "[4, 32]", "[16, 48]"}));
  q->to(DType::BF16);
  EXPECT_TRUE(throws_with([&] { q->forward_primitives(zeros({2, 20})); }, {"f32", "to(dtype)"}));
}

TEST(QuantPrimitives, CpuIm2colAndMaxPoolFollowTheirFormulas) {
  // The geometry the CUDA comparison below uses, against the definitions written out here.
  const int64_t N = 2, H = 7, W = 9, C = 3, KH = 3, KW = 2, OH = 4, OW = 10, LD = 32;
  const Tensor codes = randint(0, 256, {N, H, W, C}, TensorOptions(DType::I64)).to(DType::U8);
  const std::vector<uint8_t> x = codes.to_vector<uint8_t>();
  Int8Im2colParams p;
  p.kernel[0] = KH, p.kernel[1] = KW, p.stride[0] = 2, p.stride[1] = 1, p.padding[0] = 1, p.padding[1] = 2;
  p.dilation[0] = 1, p.dilation[1] = 3, p.out_h = OH, p.out_w = OW, p.zero_byte = -128;
  Tensor col = full({N * OH * OW, LD}, 0x5a, TensorOptions(DType::U8));
  backend_for(Device::cpu()).int8_im2col(col, codes, p);
  const std::vector<uint8_t> got = col.to_vector<uint8_t>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t k = 0; k < LD; ++k) {
          uint8_t want = 0x80;  // the byte of code 0 for u8 codes (q - 128)
          if (k < KH * KW * C) {
            const int64_t c = k % C, j = (k / C) % KW, i = k / (C * KW);
            const int64_t h = oh * 2 - 1 + i, w = ow - 2 + 3 * j;
            if (h >= 0 && h < H && w >= 0 && w < W) want = x[static_cast<size_t>(((n * H + h) * W + w) * C + c)];
          }
          ASSERT_EQ(got[static_cast<size_t>(((n * OH + oh) * OW + ow) * LD + k)], want)
              << n << " " << oh << " " << ow << " " << k;
        }
  Tensor pooled = full({N, H / 2, W / 2, C}, 0x5a, TensorOptions(DType::U8));
  backend_for(Device::cpu()).int8_max_pool(pooled, codes, 2);
  const std::vector<uint8_t> pv = pooled.to_vector<uint8_t>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < H / 2; ++i)
      for (int64_t j = 0; j < W / 2; ++j)
        for (int64_t c = 0; c < C; ++c) {
          int best = -129;  // the bytes compare as int8
          for (int64_t u = 0; u < 2; ++u)
            for (int64_t v = 0; v < 2; ++v)
              best = std::max(best, static_cast<int>(static_cast<int8_t>(
                                        x[static_cast<size_t>(((n * H + 2 * i + u) * W + 2 * j + v) * C + c)])));
          ASSERT_EQ(static_cast<int8_t>(pv[static_cast<size_t>(((n * (H / 2) + i) * (W / 2) + j) * C + c)]), best);
        }
}

// ---- CUDA ----

// Each primitive on the device against the CPU's loops, outputs poisoned first.
TEST(CudaQuantPrimitives, EachPrimitiveEqualsTheCpuBytes) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  Backend& cpu_be = backend_for(Device::cpu());
  Backend& gpu_be = backend_for(gpu);
  auto bytes_of = [](const Tensor& t) { return t.cpu().contiguous().to_vector<uint8_t>(); };
  auto poisoned = [](const Shape& s, Device d) { return full(s, 0x5a, TensorOptions(DType::U8, d)); };
  // Quantise, both layouts and signednesses.
  const Tensor x = test::uniform({3, 5, 4, 6}, -3, 3, DType::F32, 21);
  for (bool uns : {false, true}) {
    const Int8QuantizeParams nhwc{1.0f / 0.02f, uns, true}, rows{1.0f / 0.02f, uns, false};
    Tensor a = poisoned({3, 4, 6, 5}, Device::cpu()), b = poisoned({3, 4, 6, 5}, gpu);
    cpu_be.int8_quantize(a, x, nhwc);
    gpu_be.int8_quantize(b, x.to(gpu), nhwc);
    EXPECT_EQ(bytes_of(a), bytes_of(b)) << "nhwc, unsigned " << uns;
    Tensor c = poisoned({3, 128}, Device::cpu()), d = poisoned({3, 128}, gpu);
    cpu_be.int8_quantize(c, x, rows);
    gpu_be.int8_quantize(d, x.to(gpu), rows);
    EXPECT_EQ(bytes_of(c), bytes_of(d)) << "rows, unsigned " << uns;
  }
  // im2col with stride, padding, dilation and a padded row.
  const Tensor codes = randint(0, 256, {2, 7, 9, 3}, TensorOptions(DType::I64)).to(DType::U8);
  Int8Im2colParams p;
  p.kernel[0] = 3, p.kernel[1] = 2, p.stride[0] = 2, p.stride[1] = 1, p.padding[0] = 1, p.padding[1] = 2;
  // out_h = (7 + 2 - 2 - 1) / 2 + 1 = 4, out_w = (9 + 4 - 3 - 1) / 1 + 1 = 10; K = 3 * 2 * 3 = 18 <= 32.
  p.dilation[0] = 1, p.dilation[1] = 3, p.out_h = 4, p.out_w = 10, p.zero_byte = -128;
  Tensor ca = poisoned({2 * 4 * 10, 32}, Device::cpu()), cb = poisoned({2 * 4 * 10, 32}, gpu);
  cpu_be.int8_im2col(ca, codes, p);
  gpu_be.int8_im2col(cb, codes.to(gpu), p);
  EXPECT_EQ(bytes_of(ca), bytes_of(cb));
  // Max-pool of codes.
  Tensor pa = poisoned({2, 3, 4, 3}, Device::cpu()), pb = poisoned({2, 3, 4, 3}, gpu);
  cpu_be.int8_max_pool(pa, codes, 2);
  gpu_be.int8_max_pool(pb, codes.to(gpu), 2);
  EXPECT_EQ(bytes_of(pa), bytes_of(pb));
  // The GEMM with each epilogue: codes (u8 / s8, ReLU or not) and f32 (rows and NCHW).
  const int64_t M = 37, K = 48, N = 21, NP = 32;
  const Tensor A = randint(0, 256, {M, K}, TensorOptions(DType::I64)).to(DType::U8);
  const Tensor W = randint(0, 256, {NP, K}, TensorOptions(DType::I64)).to(DType::U8);
  Int8GemmParams g;
  g.comp = randint(-20000, 20000, {NP}, TensorOptions(DType::I64)).to(DType::I32);
  g.bias_div = test::uniform({NP}, -300, 300, DType::F32, 22);
  g.scale = test::uniform({NP}, 1e-4, 3e-3, DType::F32, 23);
  auto on = [&](const Int8GemmParams& h, Device d) {
    Int8GemmParams r = h;
    r.comp = h.comp.to(d), r.bias_div = h.bias_div.to(d), r.scale = h.scale.to(d);
    return r;
  };
  for (bool relu : {false, true})
    for (bool uns : {false, true}) {
      g.relu = relu, g.out_unsigned = uns, g.out_hw = 0;
      Tensor oa = poisoned({M, N}, Device::cpu()), ob = poisoned({M, N}, gpu);
      cpu_be.int8_gemm(oa, A, W, on(g, Device::cpu()));
      gpu_be.int8_gemm(ob, A.to(gpu), W.to(gpu), on(g, gpu));
      EXPECT_EQ(bytes_of(oa), bytes_of(ob)) << "codes, relu " << relu << ", unsigned " << uns;
    }
  g.relu = false, g.out_hw = 0;
  Tensor fa = full({M, N}, std::nan(""), TensorOptions(DType::F32, Device::cpu()));
  Tensor fb = full({M, N}, std::nan(""), TensorOptions(DType::F32, gpu));
  cpu_be.int8_gemm(fa, A, W, on(g, Device::cpu()));
  gpu_be.int8_gemm(fb, A.to(gpu), W.to(gpu), on(g, gpu));
  EXPECT_TRUE(same_values(fa, fb));
  g.out_hw = 37;  // [1, N, 37]
  Tensor na = full({1, N, 37}, std::nan(""), TensorOptions(DType::F32, Device::cpu()));
  Tensor nb = full({1, N, 37}, std::nan(""), TensorOptions(DType::F32, gpu));
  cpu_be.int8_gemm(na, A, W, on(g, Device::cpu()));
  gpu_be.int8_gemm(nb, A.to(gpu), W.to(gpu), on(g, gpu));
  EXPECT_TRUE(same_values(na, nb));
}

TEST(CudaQuant, EveryChainEqualsTheCpu) {
  SKIP_WITHOUT_CUDA();
  for (Case& c : cases()) {
    SCOPED_TRACE(c.name);
    auto q = quant::quantize(*c.model, {c.calib});
    const Tensor loops = q->forward_primitives(c.x), dnnl = (*q)(c.x);
    q->to(Device::cuda(0));
    const Tensor y = (*q)(c.x.to(Device::cuda(0)));
    EXPECT_TRUE(y.device().is_cuda());
    // Bit for bit: the same f32 operations in the same order (see the file comment).
    EXPECT_TRUE(same_values(y, loops));
    EXPECT_TRUE(same_values(y, dnnl));
    // The model's host copy still serves CPU inputs through oneDNN.
    EXPECT_TRUE(same_values((*q)(c.x), dnnl));
  }
}

TEST(CudaQuant, MnistCnnOnDigitsEqualsTheCpu) {
  SKIP_WITHOUT_CUDA();
  auto model = seeded_mnist_cnn();
  auto q = quant::quantize(*model, {digits(true, 64)});
  const Tensor x = digits(false, 256);
  const Tensor cpu_out = (*q)(x);
  q->to(Device::cuda(0));
  const Tensor gpu_out = (*q)(x.to(Device::cuda(0)));
  EXPECT_TRUE(same_values(gpu_out, cpu_out));
  // Steady inference reuses the cached cuBLASLt plans: a second batch of the same shape agrees too.
  EXPECT_TRUE(same_values((*q)(x.to(Device::cuda(0))), cpu_out));
}

TEST(CudaQuant, LoadedModelMovesToTheDevice) {
  SKIP_WITHOUT_CUDA();
  Case c = cases()[2];
  auto q = quant::quantize(*c.model, {c.calib});
  const std::string path = (std::filesystem::temp_directory_path() / "ember_quant_cuda.safetensors").string();
  q->save(path);
  auto r = quant::QuantizedSequential::load(path);
  std::filesystem::remove(path);
  r->to(Device::cuda(0));
  EXPECT_TRUE(same_values((*r)(c.x.to(Device::cuda(0))), (*q)(c.x)));
}

TEST(CudaQuant, BadInputsThrow) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda(0);
  Case c = cases()[0];
  auto q = quant::quantize(*c.model, {c.calib});
  // The model still on the CPU, the input on the device.
  EXPECT_TRUE(throws_with([&] { (*q)(c.x.to(gpu)); }, {"input is on cuda:0", "int8 model is on cpu", ".to(cuda:0)"}));
  q->to(gpu);
  EXPECT_TRUE(throws_with([&] { (*q)(zeros({2, 21}, TensorOptions(DType::F32, gpu))); }, {"'fc'", "20 features"}));
  EXPECT_TRUE(throws_with([&] { (*q)(zeros({2, 20}, TensorOptions(DType::F64, gpu))); }, {"F32"}));
  // The GEMM refuses what cuBLASLt's int8 kernels cannot take.
  Int8GemmParams g;
  g.comp = zeros({16}, TensorOptions(DType::I32, gpu));
  g.bias_div = zeros({16}, TensorOptions(DType::F32, gpu));
  g.scale = zeros({16}, TensorOptions(DType::F32, gpu));
  const Tensor a = zeros({4, 20}, TensorOptions(DType::U8, gpu)), w = zeros({16, 20}, TensorOptions(DType::U8, gpu));
  const Tensor out = zeros({4, 16}, TensorOptions(DType::F32, gpu));
  EXPECT_TRUE(throws_with([&] { backend_for(gpu).int8_gemm(out, a, w, g); }, {"multiples of 16", "K = 20"}));
  const Tensor a32 = zeros({4, 32}, TensorOptions(DType::U8, gpu));
  EXPECT_TRUE(
      throws_with([&] { backend_for(gpu).int8_gemm(out, a32, w, g); }, {"inconsistent", "[4, 32]", "[16, 20]"}));
}
