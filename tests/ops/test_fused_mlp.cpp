// fused_linear_relu_linear (two layers, one node) on the CPU: equal to its composite
// linear(fused_linear_relu(x, w1, b1), w2, b2) in value and every gradient, NaN rows, shape errors,
// the GEMM's ReLU-mask epilogues (BiasReluNanToZeroMask, DReluBiasGrad: the bit arithmetic the CUDA
// fallback kernels share) against loops written here, and nn::Sequential's Linear-ReLU-Linear
// pattern. Forward against a naive formula and the f64 gradient check: the op-table rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/backend/dtype_visit.h"
#include "cpp/backend/relu_mask.h"
#include "cpp/core/tensor_impl.h"
#include "ember/ember.h"
#include "test_util.h"

namespace ember {
namespace {

using test::throws_with;
using test::Tol;

Backend& cpu() {
  static Backend* b = empty({1}).impl()->storage->owner;
  return *b;
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// Equal element by element, bit for bit in value (a NaN matches a NaN).
::testing::AssertionResult same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i)
    if (!(x[i] == y[i] || (std::isnan(x[i]) && std::isnan(y[i]))))
      return ::testing::AssertionFailure() << "element " << i << ": " << x[i] << " vs " << y[i];
  return ::testing::AssertionSuccess();
}

struct Mlp {
  Tensor x, w1, b1, w2, b2;
};

Mlp make_mlp(const Shape& x_shape, int64_t hidden, int64_t out, DType dt, uint64_t seed) {
  const int64_t in = x_shape.back();
  return {test::uniform(x_shape, -1, 1, dt, seed), test::uniform({hidden, in}, -0.3, 0.3, dt, seed + 1),
          test::uniform({hidden}, -0.3, 0.3, dt, seed + 2), test::uniform({out, hidden}, -0.3, 0.3, dt, seed + 3),
          test::uniform({out}, -0.3, 0.3, dt, seed + 4)};
}

// y and the five gradients of sum(y * dy), through the two-layer op or its composite, from fresh
// leaf copies of m.
std::vector<Tensor> run(const Mlp& m, bool fused, const Tensor& dy) {
  Tensor x = m.x.clone().requires_grad_(), w1 = m.w1.clone().requires_grad_(), b1 = m.b1.clone().requires_grad_();
  Tensor w2 = m.w2.clone().requires_grad_(), b2 = m.b2.clone().requires_grad_();
  Tensor y = fused ? fused_linear_relu_linear(x, w1, b1, w2, b2) : linear(fused_linear_relu(x, w1, b1), w2, b2);
  sum(mul(y.to(DType::F32), dy)).backward();
  return {y, x.grad(), w1.grad(), b1.grad(), w2.grad(), b2.grad()};
}

const char* kWhat[6] = {"y", "dx", "dw1", "db1", "dw2", "db2"};

// Bitwise on the CPU: both run the same GEMMs (same oneDNN calls, shapes and layouts), the same
// bias / ReLU loop, and the mask holds exactly h > 0, so applying it is relu's backward
// (h > 0 ? g : 0); db1's column sums add the same terms in the same order in double as BiasGradA's
// sums over dHᵀ in the composite. Shapes: a small odd hidden width (mask rows of several bytes with
// padding), a 3-D input, and the MLP of ember-mnist (784-500-10, batch 64).
TEST(FusedLinearReluLinear, EqualsItsCompositeBitwise) {
  struct Case {
    Shape x;
    int64_t hidden, out;
  };
  for (const Case& c : {Case{{13, 20}, 37, 6}, Case{{2, 5, 20}, 9, 3}, Case{{64, 784}, 500, 10}}) {
    SCOPED_TRACE(shape_str(c.x) + " hidden " + std::to_string(c.hidden));
    const Mlp m = make_mlp(c.x, c.hidden, c.out, DType::F32, 40);
    Shape y_shape = c.x;
    y_shape.back() = c.out;
    const Tensor dy = test::uniform(y_shape, -1, 1, DType::F32, 49);
    const std::vector<Tensor> f = run(m, true, dy), r = run(m, false, dy);
    EXPECT_EQ(f[0].grad_fn()->name(), "fused_linear_relu_linear");
    EXPECT_EQ(f[0].grad_fn()->next_edges.size(), 5u);
    EXPECT_EQ(f[0].shape(), y_shape);
    for (int k = 0; k < 6; ++k) EXPECT_TRUE(test::all_close(f[k], r[k], Tol{0.0, 0.0})) << kWhat[k];
    // Without a backward (no_grad) no mask is written: the same y, and no node.
    autograd::NoGradGuard no_grad;
    const Tensor y0 = fused_linear_relu_linear(m.x, m.w1, m.b1, m.w2, m.b2);
    EXPECT_EQ(y0.grad_fn(), nullptr);
    EXPECT_TRUE(test::all_close(y0, f[0], Tol{0.0, 0.0}));
  }
}

// Under autocast (bf16): the same casts and bf16 GEMMs in both, the mask written from bf16 values.
TEST(FusedLinearReluLinear, UnderAutocastEqualsItsComposite) {
  const Mlp m = make_mlp({16, 24}, 40, 5, DType::F32, 60);
  const Tensor dy = test::uniform({16, 5}, -1, 1, DType::F32, 61);
  std::vector<Tensor> f, r;
  {
    autocast ac(DType::BF16);
    f = run(m, true, dy);
    r = run(m, false, dy);
  }
  EXPECT_EQ(f[0].dtype(), DType::BF16);
  for (int k = 0; k < 6; ++k) EXPECT_TRUE(test::all_close(f[k], r[k], Tol{0.0, 0.0})) << kWhat[k];
}

// A NaN pre-activation becomes 0 (fused_linear_relu's semantics) and passes no gradient: with b1[3]
// NaN, column 3 of h is 0 everywhere, so y is finite, b1's gradient there is 0 and w1's row 3 gets
// none; linear_relu's NaN-propagating ReLU would make all of y NaN. A NaN in a row of x: that row of
// y is b2 (h's row is all 0), and every value equals the composite's (NaN where it has NaN).
TEST(FusedLinearReluLinear, NaNPreActivationsBecomeZero) {
  Mlp m = make_mlp({8, 12}, 19, 4, DType::F32, 70);
  m.b1.narrow(0, 3, 1).fill_(kNaN);
  const Tensor dy = test::uniform({8, 4}, -1, 1, DType::F32, 71);
  const std::vector<Tensor> f = run(m, true, dy), r = run(m, false, dy);
  for (int k = 0; k < 6; ++k) EXPECT_TRUE(same_values(f[k], r[k])) << kWhat[k];
  for (double v : f[0].to_vector<double>()) EXPECT_TRUE(std::isfinite(v));
  EXPECT_EQ(f[3].to_vector<float>()[3], 0.0f);
  for (float v : f[2].narrow(0, 3, 1).to_vector<float>()) EXPECT_EQ(v, 0.0f);
  for (double v : linear(linear_relu(m.x, m.w1, m.b1), m.w2, m.b2).to_vector<double>()) EXPECT_TRUE(std::isnan(v));

  Mlp n = make_mlp({8, 12}, 19, 4, DType::F32, 80);
  n.x.narrow(0, 5, 1).narrow(1, 2, 1).fill_(kNaN);
  const std::vector<Tensor> fn = run(n, true, dy), rn = run(n, false, dy);
  for (int k = 0; k < 6; ++k) EXPECT_TRUE(same_values(fn[k], rn[k])) << kWhat[k];
  EXPECT_EQ(fn[0].narrow(0, 5, 1).reshape({4}).to_vector<float>(), n.b2.to_vector<float>());
  for (float v : fn[1].narrow(0, 5, 1).to_vector<float>()) EXPECT_EQ(v, 0.0f);  // dx: dH's row 5 is 0
}

TEST(FusedLinearReluLinear, BadArgumentsNameTheShapes) {
  const Mlp m = make_mlp({4, 6}, 5, 3, DType::F32, 90);
  const char* op = "fused_linear_relu_linear";
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, m.w1, Tensor(), m.w2, m.b2); },
                          {op, "needs both biases", "b1 is missing"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, m.w1, m.b1, m.w2, Tensor()); },
                          {op, "b2 is missing"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(zeros({4, 7}), m.w1, m.b1, m.w2, m.b2); },
                          {op, "input has 7 features but w1 expects 6", "[4, 7]", "[5, 6]"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, m.w1, m.b1, zeros({3, 4}), m.b2); },
                          {op, "w2 expects 4 hidden features but the first layer gives 5", "[5, 6]", "[3, 4]"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, m.w1, zeros({4}), m.w2, m.b2); },
                          {op, "b1 must have shape [5]", "got [4]"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, m.w1, m.b1, m.w2, zeros({2, 3})); },
                          {op, "b2 must have shape [3]", "got [2, 3]"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, zeros({5, 6, 1}), m.b1, m.w2, m.b2); },
                          {op, "w1 must be 2-D", "[5, 6, 1]"}));
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu_linear(m.x, m.w1, m.b1, m.w2.to(DType::F64), m.b2); },
                          {op, "w2 is f64", "input is f32"}));
}

// The GEMM's mask epilogues on the CPU against loops written here, in f32, f64 and bf16 (every
// value below is exact in bf16: small multiples of 1/2 and 1/4, sums of few terms). n = 19 columns:
// mask rows of row_bytes(19) = 16 bytes, two with bits, 14 of padding (which must be 0).
TEST(BackendRules, GemmReluMaskEpiloguesFollowTheirFormulas) {
  const int64_t M = 5, K = 4, N = 19, ld = relu_mask::row_bytes(N);
  ASSERT_EQ(ld, 16);
  auto value = [](int64_t i, int64_t j, int64_t salt) { return 0.5 * static_cast<double>((i * 7 + j * 3 + salt) % 9 - 4); };
  std::vector<double> av(M * K), bv(K * N), biasv(N);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k) av[i * K + k] = value(i, k, 1);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) bv[k * N + j] = value(k, j, 2);
  for (int64_t j = 0; j < N; ++j) biasv[j] = 0.25 * static_cast<double>(j % 5 - 2);
  av[2 * K + 1] = kNaN;  // row 2 of the product is NaN: 0 after the ReLU, no bits
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor a = from_vector<double>(av, {M, K}).to(dt), b = from_vector<double>(bv, {K, N}).to(dt);
    Tensor out = full({M, N}, kNaN, dt);
    Tensor mask = full({M, ld}, 0xAB, DType::U8);  // poisoned: every byte must be written
    GemmOptions o;
    o.epilogue = Epilogue::BiasReluNanToZeroMask;
    o.bias = from_vector<double>(biasv, {N}).to(dt);
    o.relu_mask = mask;
    cpu().gemm(out, a, b, o);
    const std::vector<double> ov = out.to_vector<double>();
    const std::vector<uint8_t> mv = mask.to_vector<uint8_t>();
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double pre = biasv[j];
        for (int64_t k = 0; k < K; ++k) pre += av[i * K + k] * bv[k * N + j];
        const double want = pre > 0 ? pre : 0.0;  // NaN > 0 is false
        EXPECT_EQ(ov[i * N + j], want) << i << ", " << j;
        const bool bit = (mv[i * ld + j / 8] >> (j % 8)) & 1;
        EXPECT_EQ(bit, want > 0) << "mask bit " << i << ", " << j;
      }
      for (int64_t j = N; j < ld * 8; ++j) EXPECT_EQ((mv[i * ld + j / 8] >> (j % 8)) & 1, 0) << "padding " << i << ", " << j;
    }
    // The CUDA fallback kernels' arithmetic (relu_mask.h, one mask byte per thread) gives the CPU
    // loop's bytes, padding included.
    visit_dtype(dt, "test", [&]<class T>() {
      if constexpr (std::is_floating_point_v<T> || is_lowp_v<T>) {
        const T* o_ptr = static_cast<const T*>(out.data_ptr());
        for (int64_t i = 0; i < M; ++i)
          for (int64_t byte = 0; byte < ld; ++byte)
            EXPECT_EQ(relu_mask::row_byte(o_ptr + i * N, N, byte), mv[i * ld + byte]) << i << ", byte " << byte;
      }
    });

    // DReluBiasGrad: out = product where the bit is set, else 0; bias_grad[j] = sum_i out[i, j].
    std::vector<uint8_t> bits(M * ld);
    for (int64_t i = 0; i < M * ld; ++i) bits[i] = static_cast<uint8_t>((i * 37 + 11) & 0xFF);
    Tensor in_mask = from_vector<uint8_t>(bits, {M, ld});
    std::vector<double> av2 = av;
    for (double& v : av2) v = std::isnan(v) ? 0.0 : v;
    const Tensor a2 = from_vector<double>(av2, {M, K}).to(dt);
    Tensor g = full({M, N}, kNaN, dt);
    GemmOptions d;
    d.epilogue = Epilogue::DReluBiasGrad;
    d.relu_mask = in_mask;
    d.bias_grad = full({N}, kNaN, dt);
    cpu().gemm(g, a2, b, d);
    const std::vector<double> gv = g.to_vector<double>(), dbv = d.bias_grad.to_vector<double>();
    for (int64_t i = 0; i < M; ++i)  // relu_mask::bit (the fallback kernel's read) is the bit read here
      for (int64_t j = 0; j < N; ++j)
        EXPECT_EQ(relu_mask::bit(bits.data() + i * ld, j), ((bits[i * ld + j / 8] >> (j % 8)) & 1) != 0);
    for (int64_t j = 0; j < N; ++j) {
      double col = 0;
      for (int64_t i = 0; i < M; ++i) {
        double p = 0;
        for (int64_t k = 0; k < K; ++k) p += av2[i * K + k] * bv[k * N + j];
        const double want = ((bits[i * ld + j / 8] >> (j % 8)) & 1) ? p : 0.0;
        EXPECT_EQ(gv[i * N + j], want) << i << ", " << j;
        col += want;
      }
      EXPECT_EQ(dbv[j], col) << "bias_grad " << j;
    }
  }
}

// The mask's value of the special numbers, in every floating dtype (relu_mask::positive, which the CPU
// loops and the CUDA kernels both call): only > 0 sets a bit; NaN, -0, +0 and -inf do not; the
// dtype's smallest subnormal and +inf do.
TEST(BackendRules, ReluMaskBitsOfSpecialValues) {
  const double inf = std::numeric_limits<double>::infinity();
  const uint8_t want0 = 0b10101000, want1 = 0b1;  // elements 3, 5, 7 | element 8 (0.5)
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    const double sub = dt == DType::F32    ? std::numeric_limits<float>::denorm_min()
                       : dt == DType::F64  ? std::numeric_limits<double>::denorm_min()
                       : dt == DType::BF16 ? std::ldexp(1.0, -133)   // bf16: f32's exponents, 7 fraction bits
                                           : std::ldexp(1.0, -24);   // f16
    const Tensor t = from_vector<double>({kNaN, -0.0, 0.0, sub, -inf, inf, -1.0, 2.0, 0.5}, {1, 9}).to(dt);
    ASSERT_GT(t.to_vector<double>()[3], 0.0) << "the subnormal survives the conversion";
    visit_dtype(dt, "test", [&]<class T>() {
      if constexpr (std::is_floating_point_v<T> || is_lowp_v<T>) {
        const T* p = static_cast<const T*>(t.data_ptr());
        EXPECT_EQ(relu_mask::row_byte(p, 9, 0), want0);
        EXPECT_EQ(relu_mask::row_byte(p, 9, 1), want1);
        EXPECT_EQ(relu_mask::row_byte(p, 9, 2), 0);  // past n: padding
      }
    });
    GemmOptions o;  // the CPU loop on the same values: out = [1] @ t (exact), + 0 bias
    o.epilogue = Epilogue::BiasReluNanToZeroMask;
    o.bias = zeros({9}, dt);
    o.relu_mask = full({1, 16}, 0xAB, DType::U8);
    Tensor out = empty({1, 9}, dt);
    cpu().gemm(out, ones({1, 1}, dt), t, o);
    // The mask is of the GEMM's output, which may flush the subnormal to 0 (oneDNN's bf16 kernels
    // do): expected bits from out itself.
    const std::vector<uint8_t> m = o.relu_mask.to_vector<uint8_t>();
    const std::vector<double> ov = out.to_vector<double>();
    uint8_t w[2] = {0, 0};
    for (int j = 0; j < 9; ++j)
      if (ov[j] > 0) w[j / 8] = static_cast<uint8_t>(w[j / 8] | (1u << (j % 8)));
    EXPECT_EQ(m[0], w[0]);
    EXPECT_EQ(m[1], w[1]);
    EXPECT_EQ(w[0] & ~0b1000, want0 & ~0b1000);  // every element but the subnormal as above
  }
}

TEST(BackendRules, GemmReluMaskEpiloguesCheckTheirArguments) {
  const Tensor a = ones({3, 2}), b = ones({2, 10});
  GemmOptions o;
  o.epilogue = Epilogue::BiasReluNanToZeroMask;
  o.bias = zeros({10});
  o.relu_mask = zeros({3, 2}, DType::U8);
  EXPECT_TRUE(throws_with([&] { cpu().gemm(empty({3, 10}), a, b, o); },
                          {"gemm (cpu)", "ReLU mask", "[3, 10]", "[3, 16]", "got u8 [3, 2]"}));
  o.relu_mask = Tensor();
  EXPECT_TRUE(throws_with([&] { cpu().gemm(empty({3, 10}), a, b, o); }, {"ReLU mask", "got none"}));
  o.relu_mask = zeros({3, 16}, DType::U8);
  EXPECT_TRUE(throws_with([&] { cpu().gemm(empty({1, 3, 10}), a.reshape({1, 3, 2}), b, o); },
                          {"2-D output", "[1, 3, 10]"}));
  GemmOptions d;
  d.epilogue = Epilogue::DReluBiasGrad;
  d.relu_mask = zeros({3, 16}, DType::U8);
  d.bias_grad = zeros({3});
  EXPECT_TRUE(throws_with([&] { cpu().gemm(empty({3, 10}), a, b, d); }, {"DReluBiasGrad", "[10]", "got [3]"}));
}

// In the NaN-to-zero mode a Linear, ReLU, Linear run (biases on both) is one fused_linear_relu_linear
// node whose edges go straight to the parameters, with the values of the unfused Sequential; the
// match is greedy from the left, and what is left keeps the pair rule (fused_linear_relu) or runs
// alone.
TEST(Sequential, ReluNanToZeroRunsLinearReluLinearAsOneNode) {
  Generator init(3);
  auto lin = [&](int64_t i, int64_t o, bool bias = true) {
    return std::make_shared<nn::Linear>(i, o, nn::LinearOptions{.bias = bias, .generator = &init});
  };
  auto relu_m = [] { return std::make_shared<nn::ReLU>(); };
  const Tensor x = test::uniform({7, 20}, -1, 1, DType::F32, 5);
  nn::Sequential seq{lin(20, 37), relu_m(), lin(37, 6)};

  std::vector<Tensor> plain_grads;
  const Tensor plain = seq(x);  // the mode is off: linear_relu, then linear
  EXPECT_EQ(plain.grad_fn()->name(), "linear");
  sum(mul(plain, plain)).backward();
  for (const Tensor& p : seq.parameters()) plain_grads.push_back(p.grad().clone());
  seq.zero_grad();

  seq.set_relu_nan_to_zero(true);
  const Tensor y = seq(x);
  const auto node = y.grad_fn();
  ASSERT_NE(node, nullptr);
  EXPECT_EQ(node->name(), "fused_linear_relu_linear");
  ASSERT_EQ(node->next_edges.size(), 5u);
  EXPECT_FALSE(node->next_edges[0].valid());  // x needs no gradient
  for (size_t k = 1; k < 5; ++k) {
    ASSERT_TRUE(node->next_edges[k].valid()) << k;
    EXPECT_EQ(node->next_edges[k].node->name(), "AccumulateGrad") << k;
  }
  EXPECT_TRUE(test::all_close(y, plain, Tol{0.0, 0.0}));
  sum(mul(y, y)).backward();
  const std::vector<Tensor> params = seq.parameters();
  for (size_t k = 0; k < params.size(); ++k)
    EXPECT_TRUE(test::all_close(params[k].grad(), plain_grads[k], Tol{0.0, 0.0})) << "parameter " << k;

  // Linear-ReLU-Linear-ReLU-Linear: the two-layer op, then relu, then linear.
  nn::Sequential deep{lin(20, 9), relu_m(), lin(9, 8), relu_m(), lin(8, 3)};
  deep.set_relu_nan_to_zero(true);
  const auto top = deep(x).grad_fn();
  ASSERT_EQ(top->name(), "linear");
  const auto mid = top->next_edges[0].node;
  ASSERT_TRUE(mid);
  EXPECT_EQ(mid->name(), "relu");
  ASSERT_TRUE(mid->next_edges[0].node);
  EXPECT_EQ(mid->next_edges[0].node->name(), "fused_linear_relu_linear");

  // A second Linear without a bias: fused_linear_relu, then linear.
  nn::Sequential nb{lin(20, 9), relu_m(), lin(9, 3, false)};
  nb.set_relu_nan_to_zero(true);
  const auto last = nb(x).grad_fn();
  ASSERT_EQ(last->name(), "linear");
  ASSERT_TRUE(last->next_edges[0].node);
  EXPECT_EQ(last->next_edges[0].node->name(), "fused_linear_relu");
}

}  // namespace
}  // namespace ember
