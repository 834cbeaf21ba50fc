// The op table: every differentiable op, with broadcasting, non-contiguous inputs and options.
#include "ops/op_table.h"
#include "ops/op_table_conv.h"

namespace ember::test {
namespace {

InputSpec in(Shape s, double lo = -1.0, double hi = 1.0) { return InputSpec{std::move(s), lo, hi}; }
InputSpec labels(std::vector<int64_t> v) {
  return InputSpec{{static_cast<int64_t>(v.size())}, 0, 0, false,
                   [v](DType) { return from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}); }};
}
InputSpec index(std::vector<int64_t> v, Shape shape) {
  return InputSpec{shape, 0, 0, false, [v, shape](DType) { return from_vector<int64_t>(v, shape); }};
}
InputSpec mask(std::vector<bool> v, Shape shape) {
  return InputSpec{shape, 0, 0, false, [v, shape](DType) { return from_vector<bool>(v, shape); }};
}
// Values away from zero (for abs, pow bases, division) with random signs.
InputSpec signed_away_from_zero(Shape s) {
  return InputSpec{s, 0, 0, true, [s](DType dt) {
                     Tensor mag = uniform(s, 0.5, 1.5, dt, 99);
                     Tensor sign = sub(mul(gt(uniform(s, 0, 1, dt, 98), 0.5).to(dt), 2.0), 1.0);
                     return mul(mag, sign);
                   }};
}
// Distinct values (no ties) for max/min, via a shuffled ramp.
InputSpec distinct(Shape s) {
  return InputSpec{s, 0, 0, true, [s](DType dt) {
                     const int64_t n = shape_numel(s);
                     std::vector<double> v(static_cast<size_t>(n));
                     for (int64_t i = 0; i < n; ++i) v[i] = static_cast<double>((i * 37) % n) / n - 0.5;
                     return from_vector<double>(v, s).to(dt);
                   }};
}

using V = const std::vector<Tensor>&;

}  // namespace

std::vector<OpRow> op_table() {
  std::vector<OpRow> t = {
      // Elementwise binary, with broadcasting and non-contiguous operands.
      {"add", {in({3, 4}), in({3, 4})}, [](V x) { return add(x[0], x[1]); }},
      {"add_broadcast", {in({3, 1, 4}), in({2, 1})}, [](V x) { return add(x[0], x[1]); }},
      {"sub_broadcast", {in({4}), in({3, 4})}, [](V x) { return sub(x[0], x[1]); }},
      {"mul_transposed", {in({4, 3}), in({3, 4})}, [](V x) { return mul(x[0].t(), x[1]); }},
      {"mul_broadcast", {in({2, 3, 4}), in({3, 1})}, [](V x) { return x[0] * x[1]; }},
      {"div", {in({3, 4}), signed_away_from_zero({3, 4})}, [](V x) { return div(x[0], x[1]); }},
      {"div_broadcast", {in({3, 4}), signed_away_from_zero({4})}, [](V x) { return x[0] / x[1]; }},
      {"pow", {in({3, 4}, 0.5, 2.0), in({3, 4})}, [](V x) { return pow(x[0], x[1]); }},
      {"maximum", {distinct({3, 4}), in({3, 4}, -0.3, 0.3)}, [](V x) { return maximum(x[0], x[1]); }},
      {"minimum_broadcast", {distinct({3, 4}), in({4}, -0.3, 0.3)}, [](V x) { return minimum(x[0], x[1]); }},
      // With a scalar.
      {"add_scalar", {in({5})}, [](V x) { return x[0] + 2.5; }},
      {"sub_scalar", {in({5})}, [](V x) { return x[0] - 2.5; }},
      {"rsub_scalar", {in({5})}, [](V x) { return 2.5 - x[0]; }},
      {"mul_scalar", {in({5})}, [](V x) { return x[0] * -3.0; }},
      {"div_scalar", {in({5})}, [](V x) { return x[0] / 4.0; }},
      {"rdiv_scalar", {signed_away_from_zero({5})}, [](V x) { return 2.0 / x[0]; }},
      {"pow_scalar", {in({5}, 0.5, 2.0)}, [](V x) { return pow(x[0], 2.7); }},
      {"pow_scalar_base", {in({5})}, [](V x) { return pow(1.7, x[0]); }},
      // Unary math.
      {"neg", {in({2, 3})}, [](V x) { return -x[0]; }},
      {"exp", {in({2, 3})}, [](V x) { return exp(x[0]); }},
      {"log", {in({2, 3}, 0.2, 3.0)}, [](V x) { return log(x[0]); }},
      {"sqrt", {in({2, 3}, 0.2, 3.0)}, [](V x) { return sqrt(x[0]); }},
      {"rsqrt", {in({2, 3}, 0.2, 3.0)}, [](V x) { return rsqrt(x[0]); }},
      {"abs", {signed_away_from_zero({2, 3})}, [](V x) { return abs(x[0]); }},
      {"square", {in({2, 3})}, [](V x) { return square(x[0]); }},
      {"clamp", {in({4, 5}, -2.0, 2.0)}, [](V x) { return clamp(x[0], -0.9, 0.7); }},
      {"clamp_min", {in({4, 5}, -2.0, 2.0)}, [](V x) { return clamp(x[0], -0.9, std::nullopt); }},
      {"where", {mask({true, false, true, true, false, false}, {2, 3}), in({2, 3}), in({3})},
       [](V x) { return where(x[0], x[1], x[2]); }},
      {"where_le_ge", {in({3, 4}), in({3, 4})},
       [](V x) { return where(le(x[0], x[1]), x[0], x[1]) + where(ge(x[0], x[1]), x[0], x[1]) * 2.0; }},
      // Reductions.
      {"sum_all", {in({3, 4})}, [](V x) { return sum(x[0]); }},
      {"sum_dim", {in({3, 4, 2})}, [](V x) { return sum(x[0], {1}); }},
      {"sum_dims_keepdim", {in({3, 4, 2})}, [](V x) { return sum(x[0], {0, 2}, true); }},
      {"sum_transposed", {in({3, 4})}, [](V x) { return sum(x[0].t(), {1}); }},
      {"mean_all", {in({3, 4})}, [](V x) { return mean(x[0]); }},
      {"mean_dim", {in({3, 4})}, [](V x) { return mean(x[0], {-1}, true); }},
      {"var", {in({3, 5})}, [](V x) { return var(x[0], {1}); }},
      {"var_population_all", {in({3, 5})}, [](V x) { return var(x[0], {}, 0); }},
      {"std", {in({4, 3})}, [](V x) { return ember::std(x[0], {0}, 1, true); }},
      {"max_all", {distinct({3, 4})}, [](V x) { return max(x[0]); }},
      {"min_all", {distinct({3, 4})}, [](V x) { return min(x[0]); }},
      {"max_dim", {distinct({3, 4})}, [](V x) { return max(x[0], 1).first; }},
      {"min_dim_keepdim", {distinct({3, 4})}, [](V x) { return min(x[0], 0, true).first; }},
      {"logsumexp", {in({3, 4}, -3.0, 3.0)}, [](V x) { return logsumexp(x[0], {1}); }},
      {"logsumexp_all", {in({3, 4}, -3.0, 3.0)}, [](V x) { return logsumexp(x[0], {}, true); }},
      // Linear algebra. (CUDA: f32 GEMM sums K products in a different order; 1e-4 holds for K <= 8.)
      {"matmul", {in({3, 5}), in({5, 4})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_transposed", {in({5, 3}), in({4, 5})}, [](V x) { return matmul(x[0].t(), x[1].t()); }},
      {"matmul_batched", {in({2, 3, 5}), in({2, 5, 4})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_batched_shared", {in({2, 3, 5}), in({5, 4})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_vector", {in({3, 5}), in({5})}, [](V x) { return matmul(x[0], x[1]); }},
      {"linear", {in({4, 5}), in({3, 5}), in({3})}, [](V x) { return linear(x[0], x[1], x[2]); }},
      {"linear_3d_no_bias", {in({2, 4, 5}), in({3, 5})}, [](V x) { return linear(x[0], x[1]); }},
      {"linear_relu", {in({4, 5}), in({3, 5}), in({3})}, [](V x) { return linear_relu(x[0], x[1], x[2]); }},
      {"fused_linear_relu", {in({4, 5}), in({3, 5}), in({3})},
       [](V x) { return fused_linear_relu(x[0], x[1], x[2]); }},
      // Two layers, one node (x, w1, b1, w2, b2); hidden 11: mask rows of two bytes' bits and padding.
      {"fused_linear_relu_linear", {in({4, 5}), in({11, 5}), in({11}), in({3, 11}), in({3})},
       [](V x) { return fused_linear_relu_linear(x[0], x[1], x[2], x[3], x[4]); }},
      {"fused_linear_relu_linear_3d", {in({2, 3, 5}), in({4, 5}), in({4}), in({2, 4}), in({2})},
       [](V x) { return fused_linear_relu_linear(x[0], x[1], x[2], x[3], x[4]); }},
      // Activations.
      {"relu", {signed_away_from_zero({3, 4})}, [](V x) { return relu(x[0]); }},
      {"leaky_relu", {signed_away_from_zero({3, 4})}, [](V x) { return leaky_relu(x[0], 0.1); }},
      {"sigmoid", {in({3, 4}, -4, 4)}, [](V x) { return sigmoid(x[0]); }},
      {"tanh", {in({3, 4}, -3, 3)}, [](V x) { return tanh(x[0]); }},
      {"gelu_erf", {in({3, 4}, -3, 3)}, [](V x) { return gelu(x[0]); }},
      {"gelu_tanh", {in({3, 4}, -3, 3)}, [](V x) { return gelu(x[0], GeluApproximation::Tanh); }},
      {"silu", {in({3, 4}, -3, 3)}, [](V x) { return silu(x[0]); }},
      {"softplus", {in({3, 4}, -3, 3)}, [](V x) { return softplus(x[0]); }},
      {"softmax", {in({3, 5}, -2, 2)}, [](V x) { return softmax(x[0], 1); }},
      {"softmax_dim0", {in({3, 5}, -2, 2)}, [](V x) { return softmax(x[0], 0); }},
      {"log_softmax", {in({3, 5}, -2, 2)}, [](V x) { return log_softmax(x[0], -1); }},
      {"log_softmax_3d_mid", {in({2, 3, 4}, -2, 2)}, [](V x) { return log_softmax(x[0], 1); }},
      // Losses.
      {"cross_entropy", {in({4, 5}, -2, 2), labels({1, 0, 4, 2})}, [](V x) { return cross_entropy(x[0], x[1]); }},
      {"cross_entropy_sum_ignore", {in({4, 5}, -2, 2), labels({1, -100, 4, 2})},
       [](V x) { return cross_entropy(x[0], x[1], {Reduction::Sum, -100, 0.0}); }},
      {"cross_entropy_none_smooth", {in({4, 5}, -2, 2), labels({1, 0, 4, 3})},
       [](V x) { return cross_entropy(x[0], x[1], {Reduction::None, -100, 0.1}); }},
      {"cross_entropy_mean_ignore_smooth", {in({4, 5}, -2, 2), labels({3, 0, 3, 1})},
       [](V x) { return cross_entropy(x[0], x[1], {Reduction::Mean, 3, 0.2}); }},
      {"nll_loss", {in({4, 5}, -3, -0.1), labels({1, 0, 4, 2})}, [](V x) { return nll_loss(x[0], x[1]); }},
      {"nll_loss_sum_ignore", {in({4, 5}, -3, -0.1), labels({1, 7, 4, 7})},
       [](V x) { return nll_loss(x[0], x[1], Reduction::Sum, 7); }},
      {"mse_loss", {in({3, 4}), in({3, 4})}, [](V x) { return mse_loss(x[0], x[1]); }},
      {"mse_loss_none", {in({3, 4}), in({3, 4})}, [](V x) { return mse_loss(x[0], x[1], Reduction::None); }},
      {"l1_loss", {in({3, 4}, -1, 0), in({3, 4}, 0.1, 1)}, [](V x) { return l1_loss(x[0], x[1], Reduction::Sum); }},
      {"bce_with_logits", {in({3, 4}, -3, 3), in({3, 4}, 0, 1)},
       [](V x) { return binary_cross_entropy_with_logits(x[0], x[1]); }},
      // Shapes, views and indexing.
      {"reshape", {in({3, 4})}, [](V x) { return x[0].reshape({2, 6}) * from_vector<double>({1, 2, 3, 4, 5, 6}, {6}).to(x[0].dtype()); }},
      {"flatten", {in({2, 3, 2})}, [](V x) { return x[0].flatten(1); }},
      {"transpose_contiguous", {in({3, 4})}, [](V x) { return x[0].transpose(0, 1).contiguous(); }},
      {"permute", {in({2, 3, 4})}, [](V x) { return exp(x[0].permute({2, 0, 1})); }},
      {"narrow_slice_select", {in({4, 6})},
       [](V x) { return x[0].narrow(0, 1, 2).slice(1, 0, 6, 2) * x[0].select(0, 3).slice(0, 1, 4); }},
      {"squeeze_unsqueeze", {in({3, 1, 4})}, [](V x) { return x[0].squeeze(1).unsqueeze(0) * 2.0; }},
      {"expand", {in({3, 1})}, [](V x) { return x[0].expand({2, 3, 4}); }},
      {"cat", {in({2, 3}), in({4, 3})}, [](V x) { return cat({x[0], x[1]}, 0); }},
      {"cat_dim1", {in({2, 3}), in({2, 1})}, [](V x) { return cat({x[0], x[1]}, -1); }},
      {"stack", {in({2, 3}), in({2, 3})}, [](V x) { return stack({x[0], x[1]}, 1); }},
      {"split", {in({5, 2})}, [](V x) { auto p = split(x[0], 2, 0); return mul(p[0], p[1]) + sum(p[2]); }},
      {"index_select_repeated", {in({5, 3}), index({4, 0, 4, 2}, {4})},
       [](V x) { return index_select(x[0], 0, x[1]); }},
      {"index_select_dim1", {in({2, 5}), index({1, 3}, {2})}, [](V x) { return index_select(x[0], 1, x[1]); }},
      {"embedding", {in({6, 3}), index({5, 0, 5, 1, 2, 3}, {2, 3})}, [](V x) { return embedding(x[0], x[1]); }},
      {"dropout", {in({4, 5})}, [](V x) { Generator g(5); return dropout(x[0], 0.4, true, &g); }},
      // PyTorch's everyday ops beyond the basics (issue: ops users reach for).
      {"matmul_broadcast_batch", {in({2, 1, 3, 4}), in({3, 4, 2})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_4d_2d", {in({2, 2, 3, 4}), in({4, 3})}, [](V x) { return matmul(x[0], x[1]); }},
      {"matmul_vector_batched", {in({4}), in({2, 4, 3})}, [](V x) { return matmul(x[0], x[1]); }},
      {"gather_dim1", {in({3, 4}), index({3, 0, 0, 1, 2, 2}, {3, 2})}, [](V x) { return gather(x[0], 1, x[1]); }},
      {"gather_dim0_3d", {in({3, 2, 4}), index({2, 0, 1, 1, 0, 2, 0, 0, 1, 2, 2, 1}, {2, 2, 3})},
       [](V x) { return gather(x[0], 0, x[1]); }},
      {"scatter_add_dim1", {in({3, 5}), index({4, 4, 0, 1, 3, 1}, {3, 2}), in({3, 3})},
       [](V x) { return scatter_add(x[0], 1, x[1], x[2]); }},
      // (The padding row takes no gradient by design, which a finite difference cannot see: the
      // row uses padding_idx 4, absent from the indices; Embedding.PaddingRowTakesNoGradient tests it.)
      {"embedding_padding", {in({6, 3}), index({5, 0, 5, 1, 2, 3}, {2, 3})},
       [](V x) { return mul(embedding(x[0], x[1], 4), 2.0); }},
      {"split_sizes", {in({6, 2})}, [](V x) {
         auto p = split(x[0], std::vector<int64_t>{1, 3, 2}, 0);
         return add(mul(sum(p[1], {0}), p[0]), sum(mul(p[2], p[2]), {0}, true));
       }},
      {"softplus_beta_threshold", {in({3, 4}, -3, 3)}, [](V x) { return softplus(x[0], 2.0, 3.0); }},
      {"cross_entropy_weighted", {in({4, 5}, -2, 2), labels({1, 4, -100, 2}), in({5}, 0.5, 2.0)},
       [](V x) { return cross_entropy(x[0], x[1], {.weight = x[2]}); }},
      {"cross_entropy_weighted_smoothing_sum", {in({4, 5}, -2, 2), labels({3, 0, 3, 7}), in({5}, 0.5, 2.0)},
       [](V x) {
         return cross_entropy(x[0], x[1],
                              {.reduction = Reduction::Sum, .ignore_index = 7, .label_smoothing = 0.2, .weight = x[2]});
       }},
      {"cross_entropy_probs", {in({3, 4}, -2, 2), in({3, 4}, 0, 1), in({4}, 0.5, 2.0)},
       [](V x) { return cross_entropy(x[0], x[1], {.label_smoothing = 0.1, .weight = x[2]}); }},
      {"cross_entropy_spatial_none", {in({2, 3, 2, 2}, -2, 2), index({0, 2, 1, 1, 2, 0, 0, 1}, {2, 2, 2})},
       [](V x) { return cross_entropy(x[0], x[1], {.reduction = Reduction::None}); }},
      {"cross_entropy_spatial_weighted", {in({2, 3, 4}, -2, 2), index({0, 2, 1, 1, 2, 0, 0, 1}, {2, 4}),
                                          in({3}, 0.5, 2.0)},
       [](V x) { return cross_entropy(x[0], x[1], {.weight = x[2]}); }},
      {"nll_loss_weighted_spatial", {in({2, 3, 4}, -3, -0.1), index({0, 2, 1, -100, 2, 0, 0, 1}, {2, 4}),
                                     in({3}, 0.5, 2.0)},
       [](V x) { return nll_loss(x[0], x[1], NllLossArgs{.weight = x[2]}); }},
      {"bce", {in({3, 4}, 0.05, 0.95), in({3, 4}, 0, 1), in({4}, 0.5, 2.0)},
       [](V x) { return binary_cross_entropy(x[0], x[1], {.weight = x[2]}); }},
      {"bce_with_logits_pos_weight", {in({3, 4}, -3, 3), in({3, 4}, 0, 1), in({3, 1}, 0.5, 2.0), in({4}, 0.5, 3.0)},
       [](V x) { return binary_cross_entropy_with_logits(x[0], x[1], {.weight = x[2], .pos_weight = x[3]}); }},
      // A composition: a two-layer MLP's loss.
      {"mlp_loss", {in({6, 4}), in({5, 4}), in({5}), in({3, 5}), in({3}), labels({0, 2, 1, 1, 0, 2})},
       [](V x) { return cross_entropy(linear(relu(linear(x[0], x[1], x[2])), x[3], x[4]), x[5]); }},
  };
  for (OpRow& row : poolnorm_op_rows()) t.push_back(std::move(row));
  for (OpRow& row : conv_op_rows()) t.push_back(std::move(row));  // tests/ops/op_table_conv.cpp
  return t;
}

}  // namespace ember::test
