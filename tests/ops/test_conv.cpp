// Convolutions beyond the op table: error messages for bad arguments, the f32 engine's gradients
// (oneDNN) against the gradient-checked f64 ones (im2col), empty batches, thread counts, and
// PyTorch's own numbers from tests/fixtures/torch_conv.json (made by make_torch_conv.py).
#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ops/op_table_conv.h"
#include "test_util.h"

namespace ember::test {
namespace {

Tensor r(const Shape& s, uint64_t seed = 5) { return uniform(s, -1, 1, DType::F32, seed); }

TEST(ConvErrors, InputChannelsThatDoNotMatchTheWeight) {
  EXPECT_TRUE(throws_with([] { conv2d(r({2, 3, 5, 5}), r({4, 2, 3, 3})); },
                          {"conv2d", "[2, 3, 5, 5]", "3 channels", "[4, 2, 3, 3]", "expects 2"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({2, 4, 5, 5}), r({4, 1, 3, 3}), {}, {.groups = 2}); },
                          {"groups 2 expects 2", "weight.size(1) * groups"}));
  EXPECT_TRUE(throws_with([] { conv_transpose2d(r({1, 3, 4, 4}), r({4, 2, 3, 3})); },
                          {"conv_transpose2d", "[1, 3, 4, 4]", "[4, 2, 3, 3]", "expects 4", "[C_in, C_out / groups"}));
  EXPECT_TRUE(throws_with([] { conv1d(r({2, 3, 9}), r({4, 2, 3})); }, {"conv1d", "[2, 3, 9]", "[4, 2, 3]"}));
}

TEST(ConvErrors, KernelLargerThanThePaddedInput) {
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 1, 2, 2}), r({1, 1, 3, 3})); },
                          {"conv2d", "larger than the padded input", "[1, 1, 2, 2]", "[1, 1, 3, 3]", "pad the input"}));
  EXPECT_EQ(conv2d(r({1, 1, 2, 2}), r({1, 1, 3, 3}), {}, {.padding = {1, 1}}).shape(), (Shape{1, 1, 2, 2}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.dilation = {3, 1}}); },
                          {"larger than the padded input", "dilation [3, 1]"}));
  EXPECT_TRUE(throws_with([] { conv1d(r({1, 1, 2}), r({1, 1, 3})); }, {"conv1d", "[1, 1, 2]", "[1, 1, 3]"}));
}

TEST(ConvErrors, GroupsThatDoNotDivideTheChannels) {
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 4, 5, 5}), r({6, 2, 3, 3}), {}, {.groups = 3}); },
                          {"groups 3 must divide the input channels", "[1, 4, 5, 5]", "has 4"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 4, 5, 5}), r({5, 2, 3, 3}), {}, {.groups = 2}); },
                          {"groups 2 must divide the output channels", "[5, 2, 3, 3]"}));
  EXPECT_TRUE(throws_with([] { conv_transpose2d(r({1, 3, 4, 4}), r({3, 2, 3, 3}), {}, {.groups = 2}); },
                          {"conv_transpose2d", "groups 2 must divide the input channels"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 4, 5, 5}), r({4, 4, 3, 3}), {}, {.groups = 0}); },
                          {"groups must be positive, got 0"}));
}

TEST(ConvErrors, InputsOfTheWrongRank) {
  EXPECT_TRUE(throws_with([] { conv2d(r({3, 5, 5}), r({4, 3, 3, 3})); },
                          {"conv2d", "4-D [N, C_in, H, W]", "[3, 5, 5]", "x.unsqueeze(0)"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 3, 5, 5}), r({4, 3, 3})); }, {"weight must be 4-D", "[4, 3, 3]"}));
  EXPECT_TRUE(throws_with([] { conv1d(r({3, 9}), r({4, 3, 3})); }, {"conv1d", "3-D [N, C_in, L]", "[3, 9]"}));
  EXPECT_TRUE(throws_with([] { conv_transpose2d(r({3, 4, 4}), r({3, 2, 3, 3})); }, {"conv_transpose2d", "4-D"}));
}

TEST(ConvErrors, BiasOfTheWrongSize) {
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 3, 5, 5}), r({4, 3, 3, 3}), r({3})); },
                          {"bias must have shape [C_out] = [4]", "got [3]"}));
  EXPECT_TRUE(throws_with([] { conv_transpose2d(r({1, 3, 4, 4}), r({3, 2, 3, 3}), r({3}), {.groups = 3}); },
                          {"bias must have shape [C_out] = [6]"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 3, 5, 5}), r({4, 3, 3, 3}), r({4}).to(DType::F64)); },
                          {"bias is f64 but input is f32"}));
}

TEST(ConvErrors, StrideDilationAndPadding) {
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.stride = {0, 1}}); },
                          {"stride must be positive, got [0, 1]"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.dilation = {1, 0}}); },
                          {"dilation must be positive, got [1, 0]"}));
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.padding = {-1, 0}}); },
                          {"padding must be non-negative, got [-1, 0]"}));
  EXPECT_TRUE(throws_with([] { conv1d(r({1, 1, 5}), r({1, 1, 3}), {}, {.stride = -2}); },
                          {"conv1d", "stride must be positive, got -2"}));
  EXPECT_TRUE(throws_with(
      [] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.stride = {2, 2}, .padding_mode = ConvPadding::Same}); },
      {"padding='same' is not supported for strided convolutions", "stride [2, 2]"}));
  EXPECT_TRUE(throws_with(
      [] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.padding = {1, 1}, .padding_mode = ConvPadding::Same}); },
      {"padding [1, 1] given together with padding_mode Same"}));
  // A dilation whose kernel extent overflows 64 bits.
  EXPECT_TRUE(throws_with([] { conv2d(r({1, 1, 5, 5}), r({1, 1, 3, 3}), {}, {.dilation = {INT64_MAX / 2 + 1, 1}}); },
                          {"conv2d", "overflow"}));
}

TEST(ConvErrors, OutputPaddingMustBeSmallerThanStrideOrDilation) {
  EXPECT_TRUE(throws_with(
      [] { conv_transpose2d(r({1, 2, 3, 3}), r({2, 2, 3, 3}), {}, {.stride = {2, 2}, .output_padding = {2, 0}}); },
      {"conv_transpose2d", "output_padding [2, 0]", "smaller than the stride [2, 2] or the dilation [1, 1]"}));
  EXPECT_TRUE(throws_with([] { conv_transpose2d(r({1, 2, 3, 3}), r({2, 2, 3, 3}), {}, {.output_padding = {0, 1}}); },
                          {"output_padding [0, 1]"}));
  // Smaller than the dilation is enough (as PyTorch).
  EXPECT_EQ(conv_transpose2d(r({1, 2, 3, 3}), r({2, 2, 3, 3}), {}, {.output_padding = {1, 0}, .dilation = {2, 1}})
                .shape(),
            (Shape{1, 2, 8, 5}));
  EXPECT_TRUE(throws_with([] { conv_transpose2d(r({1, 2, 1, 1}), r({2, 2, 1, 1}), {}, {.padding = {1, 0}}); },
                          {"the output would be -1", "reduce the padding"}));
}

// The f32 engine (oneDNN) against the f64 one (im2col + GEMM, which the op table gradient-checks):
// outputs and every gradient of every convolution row.
TEST(Conv, F32GradientsMatchTheF64Ones) {
  for (const OpRow& row : conv_op_rows()) {
    std::vector<Tensor> grads[2];
    Tensor outs[2];
    int k = 0;
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<Tensor> xs = make_inputs(row, dt);
      for (Tensor& x : xs) x.requires_grad_();
      Tensor out = row.fn(xs);
      sum(mul(out, uniform(out.shape(), 0.5, 1.5, dt, 3))).backward();
      outs[k] = out.detach().to(DType::F64);
      for (const Tensor& x : xs) grads[k].push_back(x.grad().to(DType::F64));
      ++k;
    }
    EXPECT_TRUE(all_close(outs[0], outs[1], {1e-5, 1e-5})) << row.name << " forward";
    for (size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_TRUE(all_close(grads[0][i], grads[1][i], {1e-4, 1e-4})) << row.name << " gradient of input " << i;
  }
}

TEST(Conv, EmptyBatch) {
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = zeros({0, 3, 5, 5}, dt), w = uniform({4, 3, 3, 3}, -1, 1, dt), b = uniform({4}, -1, 1, dt);
    w.requires_grad_();
    b.requires_grad_();
    Tensor y = conv2d(x, w, b, {.padding = {1, 1}});
    EXPECT_EQ(y.shape(), (Shape{0, 4, 5, 5}));
    sum(y).backward();
    EXPECT_TRUE(all_close(w.grad(), zeros({4, 3, 3, 3}, dt), {0, 0}));
    EXPECT_TRUE(all_close(b.grad(), zeros({4}, dt), {0, 0}));
  }
}

// The CNN's second layer at batch 4, one thread and two: both engines (oneDNN's OpenMP threads,
// OpenBLAS's in im2col's GEMMs) give the same values.
TEST(Conv, OneAndTwoThreadsAgree) {
  const int before = get_num_threads();
  for (DType dt : {DType::F32, DType::F64}) {
    std::vector<Tensor> res[2];
    for (int t = 0; t < 2; ++t) {
      set_num_threads(t + 1);
      Tensor x = uniform({4, 32, 12, 12}, -1, 1, dt, 1), w = uniform({64, 32, 3, 3}, -0.1, 0.1, dt, 2);
      Tensor b = uniform({64}, -1, 1, dt, 4);
      x.requires_grad_();
      w.requires_grad_();
      b.requires_grad_();
      Tensor y = conv2d(x, w, b, {.padding = {1, 1}});
      sum(mul(y, uniform(y.shape(), 0.5, 1.5, dt, 3))).backward();
      res[t] = {y.detach(), x.grad(), w.grad(), b.grad()};
    }
    const Tol tol = dt == DType::F64 ? Tol{1e-12, 1e-12} : Tol{1e-5, 1e-5};
    for (size_t i = 0; i < res[0].size(); ++i) EXPECT_TRUE(all_close(res[1][i], res[0][i], tol)) << i;
  }
  set_num_threads(before);
}

// ---- PyTorch's numbers ----

Int2 int2(const nlohmann::json& a, const char* key, Int2 dflt) {
  if (!a.contains(key)) return dflt;
  return {a[key][0].get<int64_t>(), a[key][1].get<int64_t>()};
}

ConvPadding padding_mode(const nlohmann::json& a) {
  if (!a.contains("padding_mode")) return ConvPadding::Explicit;
  return a["padding_mode"] == "same" ? ConvPadding::Same : ConvPadding::Valid;
}

Tensor call(const nlohmann::json& c, const std::vector<Tensor>& x) {
  const nlohmann::json& a = c["args"];
  const int64_t groups = a.value("groups", 1);
  const std::string op = c["op"];
  if (op == "conv2d")
    return conv2d(x[0], x[1], x[2],
                  {.stride = int2(a, "stride", {1, 1}), .padding = int2(a, "padding", {0, 0}),
                   .dilation = int2(a, "dilation", {1, 1}), .groups = groups, .padding_mode = padding_mode(a)});
  if (op == "conv_transpose2d")
    return conv_transpose2d(x[0], x[1], x[2],
                            {.stride = int2(a, "stride", {1, 1}), .padding = int2(a, "padding", {0, 0}),
                             .output_padding = int2(a, "output_padding", {0, 0}),
                             .dilation = int2(a, "dilation", {1, 1}), .groups = groups});
  EXPECT_EQ(op, "conv1d");
  return conv1d(x[0], x[1], x[2],
                {.stride = int2(a, "stride", {1, 1})[1], .padding = int2(a, "padding", {0, 0})[1],
                 .dilation = int2(a, "dilation", {1, 1})[1], .groups = groups, .padding_mode = padding_mode(a)});
}

TEST(TorchConvFixture, OutputsAndGradientsMatchPyTorch) {
  std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/torch_conv.json");
  ASSERT_TRUE(in.good()) << "tests/fixtures/torch_conv.json is missing: run tests/fixtures/make_torch_conv.py";
  const nlohmann::json f = nlohmann::json::parse(in);
  ASSERT_GE(f["cases"].size(), 7u);
  for (const auto& c : f["cases"]) {
    const std::string name = c["name"];
    for (DType dt : {DType::F64, DType::F32}) {
      std::vector<Tensor> xs;
      for (const auto& e : c["inputs"])
        xs.push_back(from_vector<double>(e["values"].get<std::vector<double>>(), e["shape"].get<Shape>())
                         .to(dt)
                         .requires_grad_());
      Tensor out = call(c, xs);
      const Shape out_shape = c["output"]["shape"].get<Shape>();
      ASSERT_EQ(out.shape(), out_shape) << name;
      const Tol tol = dt == DType::F64 ? Tol{1e-10, 1e-10} : Tol{1e-4, 1e-4};
      EXPECT_TRUE(all_close(out, c["output"]["values"].get<std::vector<double>>(), tol)) << name << " output";
      sum(mul(out, from_vector<double>(c["grad_output"].get<std::vector<double>>(), out_shape).to(dt))).backward();
      for (size_t i = 0; i < xs.size(); ++i)
        EXPECT_TRUE(all_close(xs[i].grad(), c["inputs"][i]["grad"].get<std::vector<double>>(), tol))
            << name << " (" << dtype_name(dt) << ") gradient of input " << i;
    }
  }
}

}  // namespace
}  // namespace ember::test
