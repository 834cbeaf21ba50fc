// The CPU reference against the rules every backend shares: f32 arithmetic in float (the shared
// math header is what the CUDA kernels run), log-softmax's formula, NaN through ReLU epilogues,
// index checks, strided vector arguments and index_add's dtypes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/backend/elementwise_math.h"
#include "cpp/core/tensor_impl.h"
#include "ember/ember.h"
#include "test_util.h"

namespace ember {
namespace {

using test::throws_with;

// The CPU backend, reached through a tensor's storage (libember's symbols are hidden).
Backend& cpu() {
  static Backend* b = empty({1}).impl()->storage->owner;
  return *b;
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// 1501 floats over [-10, 10], none of them special.
std::vector<float> sample_floats() {
  std::vector<float> xs;
  for (int i = 0; i <= 1500; ++i) xs.push_back(-10.0f + 0.0133f * static_cast<float>(i));
  return xs;
}

static_assert(std::is_same_v<decltype(math::exp_of(1.0f)), float>);
static_assert(std::is_same_v<decltype(math::tanh_of(1.0f)), float>);
static_assert(std::is_same_v<decltype(math::log1p_of(1.0f)), float>);
static_assert(std::is_same_v<decltype(math::erf_of(1.0f)), float>);
static_assert(std::is_same_v<decltype(math::exp_of(1.0)), double>);

// Every step of an f32 activation rounds to float, as on the device: the expected values are the
// formulas written out with the C library's float functions (an activation computed in double and
// rounded once differs from them in the last bit for many inputs).
TEST(SharedMath, F32ActivationsComputeInFloat) {
  using math::unary;
  int checked = 0;
  for (const float x : sample_floats()) {
    const float sig = x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    EXPECT_EQ(unary<UnaryOp::Sigmoid>(x, 0.0f, 0.0f), sig) << x;
    EXPECT_EQ(unary<UnaryOp::Tanh>(x, 0.0f, 0.0f), tanhf(x)) << x;
    EXPECT_EQ(unary<UnaryOp::Exp>(x, 0.0f, 0.0f), expf(x)) << x;
    const float k = 0.7978845608028654f, c = 0.044715f;
    EXPECT_EQ(unary<UnaryOp::GeluTanh>(x, 0.0f, 0.0f), 0.5f * x * (1.0f + tanhf(k * (x + c * x * x * x)))) << x;
    EXPECT_EQ(unary<UnaryOp::GeluErf>(x, 0.0f, 0.0f), 0.5f * x * (1.0f + erff(x * 0.7071067811865476f))) << x;
    EXPECT_EQ(unary<UnaryOp::Softplus>(x, 0.0f, 0.0f), (x > 0.0f ? x : 0.0f) + log1pf(expf(-std::fabs(x)))) << x;
    EXPECT_EQ(unary<UnaryOp::Silu>(x, 0.0f, 0.0f), x * sig) << x;
    ++checked;
  }
  EXPECT_EQ(checked, 1501);
}

// The CPU's f32 tensors run the same functions (cpu_elementwise.cpp calls math::unary).
TEST(SharedMath, CpuSigmoidOfF32TensorsIsTheFloatFormula) {
  const std::vector<float> xs = sample_floats();
  const Tensor y = sigmoid(from_vector<float>(xs));
  const std::vector<float> v = y.to_vector<float>();
  ASSERT_EQ(v.size(), xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    const float x = xs[i];
    const float want = x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    EXPECT_EQ(v[i], want) << x;
  }
}

// Logits near 1e4 in f32: (x - m) - log_sum keeps the outputs' 1e-7 relative precision, where
// x - (m + log_sum) rounds m + log_sum to the spacing of 1e4 in float (2^-10).
TEST(SharedMath, LogSoftmaxElementKeepsPrecisionAtLargeLogits) {
  const std::vector<float> row = {10000.25f, 10000.5f, 9998.7f, 10000.9f, 9999.31f};
  float m = row[0];
  for (float x : row) m = std::max(m, x);
  double sum = 0.0;
  for (float x : row) sum += std::exp(static_cast<double>(x) - static_cast<double>(m));
  const double log_sum = std::log(sum);
  for (float x : row) {
    const double want = (static_cast<double>(x) - static_cast<double>(m)) - log_sum;
    EXPECT_NEAR(math::log_softmax_element(x, m, static_cast<float>(log_sum)), want, 1e-6) << x;
  }
  // The same through the op on the CPU.
  const Tensor y = log_softmax(from_vector<float>(row, {1, 5}), 1);
  const std::vector<float> v = y.to_vector<float>();
  for (size_t j = 0; j < row.size(); ++j) {
    const double want = (static_cast<double>(row[j]) - static_cast<double>(m)) - log_sum;
    EXPECT_NEAR(v[j], want, 1e-6) << j;
  }
}

// A NaN in a GEMM's output stays NaN through the ReLU epilogues (as through relu), so the anomaly
// check sees it.
TEST(BackendRules, GemmReluEpiloguesPassNaNOn) {
  for (Epilogue e : {Epilogue::Relu, Epilogue::BiasRelu}) {
    Tensor a = from_vector<float>({1, -2, 3, 0.5f, 2, 1}, {3, 2});
    a.narrow(0, 1, 1).narrow(1, 0, 1).fill_(kNaN);  // row 1 of the product is NaN
    const Tensor b = from_vector<float>({1, -1, 2, -3, 0.5f, 1}, {2, 3});
    const Tensor bias = from_vector<float>({0.5f, -0.5f, 0.25f});
    Tensor out = full({3, 3}, 7.0);
    GemmOptions o;
    o.epilogue = e;
    if (e == Epilogue::BiasRelu) o.bias = bias;
    cpu().gemm(out, a, b, o);
    const std::vector<float> v = out.to_vector<float>();
    for (int j = 0; j < 3; ++j) EXPECT_TRUE(std::isnan(v[3 + j])) << "epilogue " << int(e) << " column " << j;
    // Row 0: [1, -2] @ b = [7, -2, 0] (+ bias), then ReLU.
    const float bj[3] = {0.5f, -0.5f, 0.25f};
    const float row0[3] = {1 * 1 + -2 * -3, 1 * -1 + -2 * 0.5f, 1 * 2 + -2 * 1};
    for (int j = 0; j < 3; ++j) {
      const float pre = row0[j] + (e == Epilogue::BiasRelu ? bj[j] : 0.0f);
      EXPECT_EQ(v[j], pre < 0 ? 0.0f : pre) << j;
    }
  }
}

// BiasReluNanToZero (fused_linear_relu): cuBLASLt's RELU_BIAS semantics, v > 0 ? v : 0, so a NaN
// in the product becomes 0; elsewhere the same values as BiasRelu. f32 (the loop) and bf16 (oneDNN,
// then the ReLU as a map).
TEST(BackendRules, GemmBiasReluNanToZeroMapsNaNToZero) {
  for (DType dt : {DType::F32, DType::BF16}) {
    Tensor a = from_vector<float>({1, -2, 3, 0.5f, 2, 1}, {3, 2});
    a.narrow(0, 1, 1).narrow(1, 0, 1).fill_(kNaN);  // row 1 of the product is NaN
    a = a.to(dt);
    const Tensor b = from_vector<float>({1, -1, 2, -3, 0.5f, 1}, {2, 3}).to(dt);
    const Tensor bias = from_vector<float>({0.5f, -0.5f, 0.25f}).to(dt);
    Tensor out = full({3, 3}, 7.0, dt);
    GemmOptions o;
    o.epilogue = Epilogue::BiasReluNanToZero;
    o.bias = bias;
    cpu().gemm(out, a, b, o);
    const std::vector<float> v = out.to(DType::F32).to_vector<float>();
    for (int j = 0; j < 3; ++j) EXPECT_EQ(v[3 + j], 0.0f) << dtype_name(dt) << " column " << j;
    // Rows 0 and 2: [1, -2] @ b = [7, -2, 0] and [2, 1] @ b = [-1, -1.5, 5], + bias, then v > 0 ? v : 0
    // (every value here is exact in bf16).
    const float bj[3] = {0.5f, -0.5f, 0.25f};
    const float pre[2][3] = {{7, -2, 0}, {-1, -1.5f, 5}};
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < 3; ++j) {
        const float p = pre[r][j] + bj[j];
        EXPECT_EQ(v[(r == 0 ? 0 : 6) + j], p > 0 ? p : 0.0f) << dtype_name(dt) << " row " << 2 * r << " column " << j;
      }
  }
}

// fused_linear_relu equals relu(linear(...)) (the composition) wherever the pre-activation is a
// number, in value and gradients, and gives 0 where it is NaN (linear_relu gives NaN); it needs a bias.
TEST(BackendRules, FusedLinearReluEqualsItsCompositionAndZeroesNaN) {
  const Tensor x0 = test::uniform({6, 5}, -1, 1, DType::F32, 31), w0 = test::uniform({4, 5}, -1, 1, DType::F32, 32);
  const Tensor b0 = test::uniform({4}, -1, 1, DType::F32, 33), dy = test::uniform({6, 4}, -1, 1, DType::F32, 34);
  Tensor x1 = x0.clone().requires_grad_(), w1 = w0.clone().requires_grad_(), b1 = b0.clone().requires_grad_();
  Tensor x2 = x0.clone().requires_grad_(), w2 = w0.clone().requires_grad_(), b2 = b0.clone().requires_grad_();
  Tensor fused = fused_linear_relu(x1, w1, b1);
  Tensor composed = relu(linear(x2, w2, b2));
  EXPECT_EQ(fused.grad_fn()->name(), "fused_linear_relu");
  // Bitwise on the CPU: the same GEMM, bias addition and comparison with 0.
  EXPECT_TRUE(test::all_close(fused, composed, test::Tol{0.0, 0.0}));
  sum(mul(fused, dy)).backward();
  sum(mul(composed, dy)).backward();
  EXPECT_TRUE(test::all_close(x1.grad(), x2.grad(), test::Tol{0.0, 0.0}));
  EXPECT_TRUE(test::all_close(w1.grad(), w2.grad(), test::Tol{0.0, 0.0}));
  EXPECT_TRUE(test::all_close(b1.grad(), b2.grad(), test::Tol{0.0, 0.0}));

  Tensor xn = x0.clone();
  xn.narrow(0, 2, 1).narrow(1, 1, 1).fill_(kNaN);  // row 2 of the pre-activation is NaN
  const std::vector<float> vf = fused_linear_relu(xn, w0, b0).to_vector<float>();
  const std::vector<float> vr = linear_relu(xn, w0, b0).to_vector<float>();
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(vf[2 * 4 + j], 0.0f) << j;
    EXPECT_TRUE(std::isnan(vr[2 * 4 + j])) << j;
  }
  EXPECT_TRUE(throws_with([&] { (void)fused_linear_relu(x0, w0, Tensor()); }, {"fused_linear_relu", "needs a bias"}));
}

TEST(BackendRules, CheckIndexHonoursStridesAndIgnoreIndex) {
  // Every other element of {0, 99, 2, 99, 4}: the 99s are not part of the index.
  const Tensor base = from_vector<int64_t>({0, 99, 2, 99, 4});
  const Tensor strided = base.slice(0, 0, 5, 2);
  ASSERT_EQ(strided.stride(0), 2);
  IndexCheck c{.op = "test_op", .what = "indices", .bound_name = "the bound", .bound = 5};
  EXPECT_NO_THROW(cpu().check_index(strided, c));
  c.bound = 4;
  EXPECT_TRUE(throws_with([&] { cpu().check_index(strided, c); },
                          {"test_op: indices range over [0, 4] but the bound is 4", "expected values in [0, 4)"}));
  const Tensor labels = from_vector<int64_t>({1, -100, 2});
  IndexCheck l{.op = "loss",
               .what = "labels",
               .bound_name = "the number of classes",
               .hint = "; fix them",
               .bound = 3,
               .allow_ignore = true,
               .ignore_index = -100};
  EXPECT_NO_THROW(cpu().check_index(labels, l));
  l.allow_ignore = false;
  EXPECT_TRUE(throws_with([&] { cpu().check_index(labels, l); }, {"loss: labels range over [-100, 2]", "; fix them"}));
  EXPECT_NO_THROW(cpu().check_index(from_vector<int64_t>({2}).reshape({}), l));
  EXPECT_THROW(cpu().check_index(from_vector<int64_t>({3}).reshape({}), l), Error);
}

TEST(BackendRules, OpsCheckIndicesThroughTheBackend) {
  EXPECT_TRUE(throws_with(
      [] {
        embedding(zeros({4, 2}), from_vector<int64_t>({0, 4, 1}, {3}));
      },
      {"index_select", "[0, 4]", "size of the indexed dim is 4"}));
  EXPECT_TRUE(throws_with([] { one_hot(from_vector<int64_t>({-1, 0}, {2, 1}), 3); }, {"one_hot", "[-1, 0]"}));
  // Ignored labels are not range-checked.
  const Tensor loss = nll_loss(zeros({2, 3}), from_vector<int64_t>({-100, 2}), Reduction::Sum, -100);
  EXPECT_EQ(loss.item<double>(), 0.0);
}

// 1-D vector arguments may have any stride (backend.h): a strided view gives what its contiguous
// copy gives.
TEST(BackendRules, VectorArgumentsMayBeStrided) {
  auto every_other = [](const Tensor& t) {
    Tensor wide = full({2 * t.size(0)}, -7.0, TensorOptions(t.dtype()));
    Tensor view = wide.slice(0, 0, 2 * t.size(0), 2);
    view.copy_(t);
    return view;
  };
  const Tensor index = from_vector<int64_t>({2, 0, 2, 1});
  const Tensor in = test::uniform({2, 3, 4}, -1, 1, DType::F32, 5);
  Tensor want = full({2, 4, 4}, kNaN), got = full({2, 4, 4}, kNaN);
  cpu().index_select(want, in, index, 2, 3, 4);
  cpu().index_select(got, in, every_other(index), 2, 3, 4);
  EXPECT_EQ(got.to_vector<float>(), want.to_vector<float>());

  const Tensor src = test::uniform({2, 4, 4}, -1, 1, DType::F32, 6);
  Tensor acc_want = zeros({2, 3, 4}), acc_got = zeros({2, 3, 4});
  cpu().index_add(acc_want, src, index, 2, 3, 4);
  cpu().index_add(acc_got, src, every_other(index), 2, 3, 4);
  EXPECT_EQ(acc_got.to_vector<float>(), acc_want.to_vector<float>());

  const Tensor logits = test::uniform({4, 5}, -2, 2, DType::F32, 7);
  const Tensor labels = from_vector<int64_t>({4, 0, -100, 2});
  const CrossEntropyOptions o{.ignore_index = -100, .label_smoothing = 0.1};
  Tensor loss_want = full({4}, kNaN), lse_want = full({4}, kNaN), loss_got = full({4}, kNaN), lse_got = full({4}, kNaN);
  cpu().cross_entropy_forward(loss_want, lse_want, logits, labels, o);
  cpu().cross_entropy_forward(loss_got, lse_got, logits, every_other(labels), o);
  EXPECT_EQ(loss_got.to_vector<float>(), loss_want.to_vector<float>());
  EXPECT_EQ(lse_got.to_vector<float>(), lse_want.to_vector<float>());

  const Tensor grad_loss = from_vector<float>({0.5f, -1.0f, 2.0f, 0.25f});
  Tensor g_want = full({4, 5}, kNaN), g_got = full({4, 5}, kNaN);
  cpu().cross_entropy_backward(g_want, grad_loss, logits, lse_want, labels, o);
  cpu().cross_entropy_backward(g_got, every_other(grad_loss), logits, every_other(lse_want), every_other(labels), o);
  EXPECT_EQ(g_got.to_vector<float>(), g_want.to_vector<float>());
}

TEST(BackendRules, IndexAddRejectsByteDtypes) {
  const Tensor index = from_vector<int64_t>({0, 1});
  for (DType dt : {DType::U8, DType::Bool}) {
    Tensor out = zeros({3}, dt), src = zeros({2}, dt);
    EXPECT_TRUE(throws_with([&] { cpu().index_add(out, src, index, 1, 3, 1); },
                            {"index_add", dtype_name(dt), "not supported", "to(DType::I32)"}));
  }
  Tensor out = zeros({3}, DType::I32);
  cpu().index_add(out, from_vector<int32_t>({2, 5}), index, 1, 3, 1);
  EXPECT_EQ(out.to_vector<int32_t>(), (std::vector<int32_t>{2, 5, 0}));
}

// A backend's dispatch never skips an op silently: a value outside an op enum (an integer cast
// to it) throws, naming the primitive and the backend, and leaves nothing half done.
TEST(BackendRules, AValueOutsideAnEnumThrowsNamingTheBackend) {
  Tensor out = full({4}, 7.0), in = ones({4});
  EXPECT_TRUE(throws_with([&] { cpu().unary(static_cast<UnaryOp>(kUnaryOpCount), out, in, {}); },
                          {"unary_ops", std::to_string(kUnaryOpCount), "cpu"}));
  EXPECT_TRUE(throws_with([&] { cpu().binary(static_cast<BinaryOp>(-1), out, in, in, {}); },
                          {"binary_ops", "-1", "cpu"}));
  EXPECT_TRUE(throws_with([&] { cpu().reduce(static_cast<ReduceOp>(99), zeros({1}), in, 1, 4, 1); },
                          {"reduce", "ReduceOp", "99", "cpu"}));
  RandomParams p;
  p.kind = static_cast<RandomKind>(42);
  EXPECT_TRUE(throws_with([&] { cpu().random(out, p); }, {"random", "RandomKind", "42", "cpu"}));
  OptimizerStep step;
  step.algo = static_cast<OptimizerAlgo>(17);
  EXPECT_TRUE(throws_with([&] { cpu().optimizer_step(step); }, {"optimizer_step", "OptimizerAlgo", "17", "cpu"}));
  GemmOptions o;
  o.epilogue = static_cast<Epilogue>(23);
  Tensor c = zeros({2, 2});
  EXPECT_TRUE(throws_with([&] { cpu().gemm(c, ones({2, 3}), ones({3, 2}), o); }, {"gemm", "Epilogue", "23", "cpu"}));
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{7, 7, 7, 7}));
}

// Every listed op has its own name, generated from its list.
TEST(BackendRules, OpListsNameEveryOpOnce) {
  std::set<std::string> names;
  for (int i = 0; i < kUnaryOpCount; ++i) names.insert(op_name(static_cast<UnaryOp>(i)));
  EXPECT_EQ(names.size(), static_cast<size_t>(kUnaryOpCount));
  names.clear();
  for (int i = 0; i < kBinaryOpCount; ++i) names.insert(op_name(static_cast<BinaryOp>(i)));
  EXPECT_EQ(names.size(), static_cast<size_t>(kBinaryOpCount));
  EXPECT_STREQ(op_name(UnaryOp::Softplus), "softplus");
  EXPECT_STREQ(op_name(BinaryOp::ClampBackward), "clamp_backward");
  EXPECT_STREQ(op_name(static_cast<UnaryOp>(kUnaryOpCount)), "unknown");
  EXPECT_TRUE(is_comparison(BinaryOp::Ge) && !is_comparison(BinaryOp::Add));
}

// Overlapping views copy as memmove does on every backend (backend.h; CUDA's side is
// CudaBackend.CopyHandlesManyDimsAndOverlap): here strided rows shifted by one column, which a
// plain loop would smear ([a, a, a, a] instead of [a, a, b, c]).
TEST(BackendRules, OverlappingStridedCopyReadsTheSourceFirst) {
  for (DType dt : {DType::F32, DType::I64}) {
    Tensor t = arange(12, TensorOptions(dt)).reshape({3, 4});
    t.narrow(1, 1, 3).copy_(t.narrow(1, 0, 3));
    EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{0, 0, 1, 2, 4, 4, 5, 6, 8, 8, 9, 10})) << dtype_name(dt);
    // The other direction, and a square transposed onto itself.
    Tensor u = arange(12, TensorOptions(dt)).reshape({3, 4});
    u.narrow(1, 0, 3).copy_(u.narrow(1, 1, 3));
    EXPECT_EQ(u.to_vector<double>(), (std::vector<double>{1, 2, 3, 3, 5, 6, 7, 7, 9, 10, 11, 11})) << dtype_name(dt);
    Tensor sq = arange(9, TensorOptions(dt)).reshape({3, 3});
    sq.copy_(sq.t());
    EXPECT_EQ(sq.to_vector<double>(), (std::vector<double>{0, 3, 6, 1, 4, 7, 2, 5, 8})) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace ember
