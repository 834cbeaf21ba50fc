// ember against PyTorch's own numbers: tests/fixtures/torch_ops.json holds inputs, outputs and
// gradients that PyTorch computed (made by tests/fixtures/make_torch_ops.py, f64 on the CPU) for the
// losses with class weights, probability targets and spatial inputs, binary cross-entropy,
// gather/scatter_add, broadcast matmul, softplus(beta, threshold) and embedding's padding_idx.
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "test_util.h"

using namespace ember;
using ember::test::all_close;
using ember::test::Tol;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Each fixture case as the same call in ember.
const std::map<std::string, Fn>& calls() {
  static const std::map<std::string, Fn> c = {
      {"cross_entropy_weighted", [](auto& x) { return cross_entropy(x[0], x[1], {.weight = x[2]}); }},
      {"cross_entropy_weighted_smoothing",
       [](auto& x) { return cross_entropy(x[0], x[1], {.label_smoothing = 0.15, .weight = x[2]}); }},
      {"cross_entropy_weighted_smoothing_none",
       [](auto& x) {
         return cross_entropy(x[0], x[1], {.reduction = Reduction::None, .label_smoothing = 0.3, .weight = x[2]});
       }},
      {"cross_entropy_probs_weighted_smoothing",
       [](auto& x) { return cross_entropy(x[0], x[1], {.label_smoothing = 0.1, .weight = x[2]}); }},
      {"cross_entropy_probs_spatial_sum",
       [](auto& x) { return cross_entropy(x[0], x[1], {.reduction = Reduction::Sum}); }},
      {"cross_entropy_spatial", [](auto& x) { return cross_entropy(x[0], x[1]); }},
      {"cross_entropy_spatial_weighted_none",
       [](auto& x) { return cross_entropy(x[0], x[1], {.reduction = Reduction::None, .weight = x[2]}); }},
      {"nll_loss_weighted_spatial", [](auto& x) { return nll_loss(x[0], x[1], NllLossArgs{.weight = x[2]}); }},
      {"binary_cross_entropy_weighted", [](auto& x) { return binary_cross_entropy(x[0], x[1], {.weight = x[2]}); }},
      {"bce_with_logits_weight_pos_weight",
       [](auto& x) { return binary_cross_entropy_with_logits(x[0], x[1], {.weight = x[2], .pos_weight = x[3]}); }},
      {"gather_dim1", [](auto& x) { return gather(x[0], 1, x[1]); }},
      {"scatter_add_dim0", [](auto& x) { return scatter_add(x[0], 0, x[1], x[2]); }},
      {"matmul_broadcast", [](auto& x) { return matmul(x[0], x[1]); }},
      {"matmul_vector_batched", [](auto& x) { return matmul(x[0], x[1]); }},
      {"softplus_beta_threshold", [](auto& x) { return softplus(x[0], 2.0, 3.0); }},
      {"embedding_padding", [](auto& x) { return embedding(x[0], x[1], 1); }},
  };
  return c;
}

nlohmann::json fixture() {
  std::ifstream in(std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/torch_ops.json");
  return nlohmann::json::parse(in);
}

Tensor tensor_of(const nlohmann::json& e) {
  const Shape shape = e["shape"].get<std::vector<int64_t>>();
  if (e["dtype"] == "i64") return from_vector<int64_t>(e["values"].get<std::vector<int64_t>>(), shape);
  return from_vector<double>(e["values"].get<std::vector<double>>(), shape);
}

// f64 on both sides: only the order of accumulation differs.
constexpr Tol kTol{1e-10, 1e-12};

}  // namespace

TEST(TorchFixture, EveryCaseHasACall) {
  const nlohmann::json f = fixture();
  ASSERT_GE(f["cases"].size(), 16u);
  for (const auto& c : f["cases"]) EXPECT_TRUE(calls().count(c["name"].get<std::string>())) << c["name"];
  EXPECT_EQ(calls().size(), f["cases"].size());
}

TEST(TorchFixture, ForwardAndGradientsMatchPyTorch) {
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
    Tensor out = calls().at(name)(inputs);
    const Shape out_shape = c["output"]["shape"].get<std::vector<int64_t>>();
    ASSERT_EQ(out.shape(), out_shape);
    EXPECT_TRUE(all_close(out, c["output"]["values"].get<std::vector<double>>(), kTol)) << "forward";
    if (c.contains("grad_output"))
      sum(mul(out, from_vector<double>(c["grad_output"].get<std::vector<double>>(), out_shape))).backward();
    else
      out.backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
      const auto& g = c["inputs"][i]["grad"];
      if (g.is_null()) continue;
      ASSERT_TRUE(inputs[i].grad().defined()) << "no gradient for input " << i;
      EXPECT_TRUE(all_close(inputs[i].grad(), g.get<std::vector<double>>(), kTol)) << "gradient of input " << i;
    }
  }
}
