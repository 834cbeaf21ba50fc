// The table-driven op suites: forward against naive references (plain loops over host vectors),
// the f64 finite-difference gradient check of every row, and CUDA-vs-CPU parity of every row.
#include <algorithm>
#include <cmath>
#include <map>

#include "ops/op_table.h"
#include "ops/op_table_conv.h"

namespace ember::test {
namespace {

// ---- a tiny host array for the references ----
struct A {
  Shape s;
  std::vector<double> v;
  int64_t n() const { return static_cast<int64_t>(v.size()); }
};

A host(const Tensor& t) { return {t.shape(), t.contiguous().to_vector<double>()}; }

std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    idx[d] = s[d] == 0 ? 0 : i % s[d];
    i = s[d] == 0 ? 0 : i / s[d];
  }
  return idx;
}

// Index into `s` of a broadcast multi-index `idx` (aligned from the right).
int64_t bindex(const std::vector<int64_t>& idx, const Shape& s) {
  int64_t off = 0;
  const size_t lead = idx.size() - s.size();
  for (size_t d = 0; d < s.size(); ++d) off = off * s[d] + (s[d] == 1 ? 0 : idx[d + lead]);
  return off;
}

A map1(const A& x, const std::function<double(double)>& f) {
  A r = x;
  for (double& e : r.v) e = f(e);
  return r;
}

A map2(const A& a, const A& b, const std::function<double(double, double)>& f) {
  const Shape s = broadcast_shapes(a.s, b.s, "ref");
  A r{s, std::vector<double>(static_cast<size_t>(shape_numel(s)))};
  for (int64_t i = 0; i < r.n(); ++i) {
    auto idx = unravel(i, s);
    r.v[i] = f(a.v[bindex(idx, a.s)], b.v[bindex(idx, b.s)]);
  }
  return r;
}

// Reduces `dim` with f over the values of each slice (keepdim keeps a 1).
A reduce_dim(const A& x, int64_t dim, const std::function<double(const std::vector<double>&)>& f, bool keepdim) {
  Shape s = x.s;
  const int64_t n = s[dim];
  s[dim] = 1;
  A r{s, std::vector<double>(static_cast<size_t>(shape_numel(s)))};
  for (int64_t i = 0; i < r.n(); ++i) {
    auto idx = unravel(i, s);
    std::vector<double> slice;
    for (int64_t k = 0; k < n; ++k) {
      idx[dim] = k;
      int64_t off = 0;
      for (size_t d = 0; d < x.s.size(); ++d) off = off * x.s[d] + idx[d];
      slice.push_back(x.v[off]);
    }
    r.v[i] = f(slice);
  }
  if (!keepdim) r.s.erase(r.s.begin() + dim);
  return r;
}

A all_as_one(const A& x) { return A{{}, {}}; }
double vsum(const std::vector<double>& v) {
  double s = 0;
  for (double e : v) s += e;
  return s;
}
double vmax(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
double vmin(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double vlse(const std::vector<double>& v) {
  double m = vmax(v), s = 0;
  for (double e : v) s += std::exp(e - m);
  return m + std::log(s);
}
double vvar(const std::vector<double>& v, int correction) {
  double m = vsum(v) / v.size(), s = 0;
  for (double e : v) s += (e - m) * (e - m);
  return s / (static_cast<double>(v.size()) - correction);
}
A scalar(double x) { return A{{}, {x}}; }

A transpose2(const A& x) {
  A r{{x.s[1], x.s[0]}, std::vector<double>(x.v.size())};
  for (int64_t i = 0; i < x.s[0]; ++i)
    for (int64_t j = 0; j < x.s[1]; ++j) r.v[j * x.s[0] + i] = x.v[i * x.s[1] + j];
  return r;
}

A matmul2(const A& a, const A& b) {
  const int64_t M = a.s[0], K = a.s[1], N = b.s[1];
  A r{{M, N}, std::vector<double>(static_cast<size_t>(M * N))};
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) r.v[i * N + j] += a.v[i * K + k] * b.v[k * N + j];
  return r;
}

A batch(const A& x, int64_t b) {
  const int64_t per = x.n() / x.s[0];
  return A{{x.s[1], x.s[2]}, std::vector<double>(x.v.begin() + b * per, x.v.begin() + (b + 1) * per)};
}

A stack_batches(const std::vector<A>& parts) {
  A r{{static_cast<int64_t>(parts.size()), parts[0].s[0], parts[0].s[1]}, {}};
  for (const A& p : parts) r.v.insert(r.v.end(), p.v.begin(), p.v.end());
  return r;
}

A rows_softmax(const A& x, bool log) {
  const int64_t C = x.s.back(), R = x.n() / C;
  A r = x;
  for (int64_t i = 0; i < R; ++i) {
    std::vector<double> row(x.v.begin() + i * C, x.v.begin() + (i + 1) * C);
    const double lse = vlse(row);
    for (int64_t j = 0; j < C; ++j) r.v[i * C + j] = log ? row[j] - lse : std::exp(row[j] - lse);
  }
  return r;
}

// Cross-entropy per row with smoothing; 0 on ignored rows.
std::vector<double> ce_rows(const A& x, const A& y, int64_t ignore, double smooth) {
  const int64_t N = x.s[0], C = x.s[1];
  std::vector<double> out(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const auto label = static_cast<int64_t>(y.v[i]);
    if (label == ignore) continue;
    std::vector<double> row(x.v.begin() + i * C, x.v.begin() + (i + 1) * C);
    const double lse = vlse(row);
    double l = (1 - smooth) * (lse - row[label]);
    for (double e : row) l += smooth / C * (lse - e);
    out[i] = l;
  }
  return out;
}

int64_t count_not(const A& y, int64_t ignore) {
  int64_t c = 0;
  for (double e : y.v) c += static_cast<int64_t>(e) != ignore;
  return c;
}

A gather_rows(const A& x, const A& idx) {
  const int64_t D = x.n() / x.s[0];
  A r{{idx.n(), D}, {}};
  for (double e : idx.v) r.v.insert(r.v.end(), x.v.begin() + static_cast<int64_t>(e) * D, x.v.begin() + (static_cast<int64_t>(e) + 1) * D);
  return r;
}

A linear_ref(const A& x, const A& w, const A* b, bool relu_after) {
  const int64_t in_f = w.s[1];
  A x2{{x.n() / in_f, in_f}, x.v};
  A y = matmul2(x2, transpose2(w));
  if (b) y = map2(y, *b, [](double p, double q) { return p + q; });
  if (relu_after) y = map1(y, [](double p) { return p > 0 ? p : 0.0; });
  Shape s = x.s;
  s.back() = w.s[0];
  y.s = s;
  return y;
}

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

using R = std::function<A(const std::vector<A>&)>;

// One reference per row, written with plain loops over host values.
std::map<std::string, R> references() {
  auto add_f = [](double a, double b) { return a + b; };
  auto mul_f = [](double a, double b) { return a * b; };
  std::map<std::string, R> r = {
      {"add", [=](auto& x) { return map2(x[0], x[1], add_f); }},
      {"add_broadcast", [=](auto& x) { return map2(x[0], x[1], add_f); }},
      {"sub_broadcast", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return a - b; }); }},
      {"mul_transposed", [=](auto& x) { return map2(transpose2(x[0]), x[1], mul_f); }},
      {"mul_broadcast", [=](auto& x) { return map2(x[0], x[1], mul_f); }},
      {"div", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return a / b; }); }},
      {"div_broadcast", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return a / b; }); }},
      {"pow", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return std::pow(a, b); }); }},
      {"maximum", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return a > b ? a : b; }); }},
      {"minimum_broadcast", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return a < b ? a : b; }); }},
      {"add_scalar", [](auto& x) { return map1(x[0], [](double a) { return a + 2.5; }); }},
      {"sub_scalar", [](auto& x) { return map1(x[0], [](double a) { return a - 2.5; }); }},
      {"rsub_scalar", [](auto& x) { return map1(x[0], [](double a) { return 2.5 - a; }); }},
      {"mul_scalar", [](auto& x) { return map1(x[0], [](double a) { return a * -3.0; }); }},
      {"div_scalar", [](auto& x) { return map1(x[0], [](double a) { return a / 4.0; }); }},
      {"rdiv_scalar", [](auto& x) { return map1(x[0], [](double a) { return 2.0 / a; }); }},
      {"pow_scalar", [](auto& x) { return map1(x[0], [](double a) { return std::pow(a, 2.7); }); }},
      {"pow_scalar_base", [](auto& x) { return map1(x[0], [](double a) { return std::pow(1.7, a); }); }},
      {"neg", [](auto& x) { return map1(x[0], [](double a) { return -a; }); }},
      {"exp", [](auto& x) { return map1(x[0], [](double a) { return std::exp(a); }); }},
      {"log", [](auto& x) { return map1(x[0], [](double a) { return std::log(a); }); }},
      {"sqrt", [](auto& x) { return map1(x[0], [](double a) { return std::sqrt(a); }); }},
      {"rsqrt", [](auto& x) { return map1(x[0], [](double a) { return 1.0 / std::sqrt(a); }); }},
      {"abs", [](auto& x) { return map1(x[0], [](double a) { return std::fabs(a); }); }},
      {"square", [](auto& x) { return map1(x[0], [](double a) { return a * a; }); }},
      {"clamp", [](auto& x) { return map1(x[0], [](double a) { return std::min(std::max(a, -0.9), 0.7); }); }},
      {"clamp_min", [](auto& x) { return map1(x[0], [](double a) { return std::max(a, -0.9); }); }},
      {"where", [](auto& x) {
         A ab = map2(x[1], x[2], [](double a, double) { return a; });
         A bb = map2(x[1], x[2], [](double, double b) { return b; });
         for (int64_t i = 0; i < ab.n(); ++i) ab.v[i] = x[0].v[i] != 0 ? ab.v[i] : bb.v[i];
         return ab;
       }},
      {"where_le_ge", [](auto& x) {
         return map2(x[0], x[1], [](double a, double b) { return std::min(a, b) + 2.0 * std::max(a, b); });
       }},
      {"sum_all", [](auto& x) { return scalar(vsum(x[0].v)); }},
      {"sum_dim", [](auto& x) { return reduce_dim(x[0], 1, vsum, false); }},
      {"sum_dims_keepdim", [](auto& x) { return reduce_dim(reduce_dim(x[0], 0, vsum, true), 2, vsum, true); }},
      {"sum_transposed", [](auto& x) { return reduce_dim(transpose2(x[0]), 1, vsum, false); }},
      {"mean_all", [](auto& x) { return scalar(vsum(x[0].v) / x[0].n()); }},
      {"mean_dim", [](auto& x) { return reduce_dim(x[0], 1, [](auto& v) { return vsum(v) / v.size(); }, true); }},
      {"var", [](auto& x) { return reduce_dim(x[0], 1, [](auto& v) { return vvar(v, 1); }, false); }},
      {"var_population_all", [](auto& x) { return scalar(vvar(x[0].v, 0)); }},
      {"std", [](auto& x) { return reduce_dim(x[0], 0, [](auto& v) { return std::sqrt(vvar(v, 1)); }, true); }},
      {"max_all", [](auto& x) { return scalar(vmax(x[0].v)); }},
      {"min_all", [](auto& x) { return scalar(vmin(x[0].v)); }},
      {"max_dim", [](auto& x) { return reduce_dim(x[0], 1, vmax, false); }},
      {"min_dim_keepdim", [](auto& x) { return reduce_dim(x[0], 0, vmin, true); }},
      {"logsumexp", [](auto& x) { return reduce_dim(x[0], 1, vlse, false); }},
      {"logsumexp_all", [](auto& x) { return A{{1, 1}, {vlse(x[0].v)}}; }},
      {"matmul", [](auto& x) { return matmul2(x[0], x[1]); }},
      {"matmul_transposed", [](auto& x) { return matmul2(transpose2(x[0]), transpose2(x[1])); }},
      {"matmul_batched", [](auto& x) {
         return stack_batches({matmul2(batch(x[0], 0), batch(x[1], 0)), matmul2(batch(x[0], 1), batch(x[1], 1))});
       }},
      {"matmul_batched_shared", [](auto& x) {
         return stack_batches({matmul2(batch(x[0], 0), x[1]), matmul2(batch(x[0], 1), x[1])});
       }},
      {"matmul_vector", [](auto& x) {
         A r = matmul2(x[0], A{{x[1].n(), 1}, x[1].v});
         r.s = {x[0].s[0]};
         return r;
       }},
      {"linear", [](auto& x) { return linear_ref(x[0], x[1], &x[2], false); }},
      {"linear_3d_no_bias", [](auto& x) { return linear_ref(x[0], x[1], nullptr, false); }},
      {"linear_relu", [](auto& x) { return linear_ref(x[0], x[1], &x[2], true); }},
      {"fused_linear_relu", [](auto& x) { return linear_ref(x[0], x[1], &x[2], true); }},
      {"fused_linear_relu_linear",
       [](auto& x) { return linear_ref(linear_ref(x[0], x[1], &x[2], true), x[3], &x[4], false); }},
      {"fused_linear_relu_linear_3d",
       [](auto& x) { return linear_ref(linear_ref(x[0], x[1], &x[2], true), x[3], &x[4], false); }},
      {"relu", [](auto& x) { return map1(x[0], [](double a) { return a > 0 ? a : 0.0; }); }},
      {"leaky_relu", [](auto& x) { return map1(x[0], [](double a) { return a > 0 ? a : 0.1 * a; }); }},
      {"sigmoid", [](auto& x) { return map1(x[0], sigm); }},
      {"tanh", [](auto& x) { return map1(x[0], [](double a) { return std::tanh(a); }); }},
      {"gelu_erf", [](auto& x) { return map1(x[0], [](double a) { return 0.5 * a * (1 + std::erf(a / std::sqrt(2.0))); }); }},
      {"gelu_tanh", [](auto& x) {
         return map1(x[0], [](double a) {
           return 0.5 * a * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (a + 0.044715 * a * a * a)));
         });
       }},
      {"silu", [](auto& x) { return map1(x[0], [](double a) { return a * sigm(a); }); }},
      {"softplus", [](auto& x) { return map1(x[0], [](double a) { return std::log(1 + std::exp(a)); }); }},
      {"softmax", [](auto& x) { return rows_softmax(x[0], false); }},
      {"softmax_dim0", [](auto& x) { return transpose2(rows_softmax(transpose2(x[0]), false)); }},
      {"log_softmax", [](auto& x) { return rows_softmax(x[0], true); }},
      {"log_softmax_3d_mid", [](auto& x) {
         A r = x[0];
         const int64_t B = x[0].s[0], C = x[0].s[1], I = x[0].s[2];
         for (int64_t b = 0; b < B; ++b)
           for (int64_t i = 0; i < I; ++i) {
             std::vector<double> col;
             for (int64_t c = 0; c < C; ++c) col.push_back(x[0].v[(b * C + c) * I + i]);
             const double lse = vlse(col);
             for (int64_t c = 0; c < C; ++c) r.v[(b * C + c) * I + i] = col[c] - lse;
           }
         return r;
       }},
      {"cross_entropy", [](auto& x) { return scalar(vsum(ce_rows(x[0], x[1], -100, 0)) / 4); }},
      {"cross_entropy_sum_ignore", [](auto& x) { return scalar(vsum(ce_rows(x[0], x[1], -100, 0))); }},
      {"cross_entropy_none_smooth", [](auto& x) { return A{{4}, ce_rows(x[0], x[1], -100, 0.1)}; }},
      {"cross_entropy_mean_ignore_smooth", [](auto& x) {
         return scalar(vsum(ce_rows(x[0], x[1], 3, 0.2)) / static_cast<double>(count_not(x[1], 3)));
       }},
      {"nll_loss", [](auto& x) {
         double s = 0;
         for (int64_t i = 0; i < 4; ++i) s -= x[0].v[i * 5 + static_cast<int64_t>(x[1].v[i])];
         return scalar(s / 4);
       }},
      {"nll_loss_sum_ignore", [](auto& x) {
         double s = 0;
         for (int64_t i = 0; i < 4; ++i)
           if (x[1].v[i] != 7) s -= x[0].v[i * 5 + static_cast<int64_t>(x[1].v[i])];
         return scalar(s);
       }},
      {"mse_loss", [](auto& x) {
         A d = map2(x[0], x[1], [](double a, double b) { return (a - b) * (a - b); });
         return scalar(vsum(d.v) / d.n());
       }},
      {"mse_loss_none", [](auto& x) { return map2(x[0], x[1], [](double a, double b) { return (a - b) * (a - b); }); }},
      {"l1_loss", [](auto& x) { return scalar(vsum(map2(x[0], x[1], [](double a, double b) { return std::fabs(a - b); }).v)); }},
      {"bce_with_logits", [](auto& x) {
         A l = map2(x[0], x[1], [](double z, double t) {
           return -(t * std::log(sigm(z)) + (1 - t) * std::log(1 - sigm(z)));
         });
         return scalar(vsum(l.v) / l.n());
       }},
      // ---- the ops users reach for: PyTorch's documented formulas, written out ----
      {"matmul_broadcast_batch", [](auto& x) {  // [2, 1, 3, 4] @ [3, 4, 2] -> [2, 3, 3, 2]
         A r{{2, 3, 3, 2}, {}};
         for (int64_t i = 0; i < 2; ++i)
           for (int64_t j = 0; j < 3; ++j) {
             A p = matmul2(A{{3, 4}, std::vector<double>(x[0].v.begin() + i * 12, x[0].v.begin() + (i + 1) * 12)},
                           batch(x[1], j));
             r.v.insert(r.v.end(), p.v.begin(), p.v.end());
           }
         return r;
       }},
      {"matmul_4d_2d", [](auto& x) {
         A r = matmul2(A{{12, 4}, x[0].v}, x[1]);
         r.s = {2, 2, 3, 3};
         return r;
       }},
      {"matmul_vector_batched", [](auto& x) {
         A r{{2, 3}, {}};
         for (int64_t b = 0; b < 2; ++b) {
           A p = matmul2(A{{1, 4}, x[0].v}, batch(x[1], b));
           r.v.insert(r.v.end(), p.v.begin(), p.v.end());
         }
         return r;
       }},
      {"gather_dim1", [](auto& x) {  // out[i][j] = x[i][index[i][j]]
         A r{{3, 2}, {}};
         for (int64_t i = 0; i < 3; ++i)
           for (int64_t j = 0; j < 2; ++j) r.v.push_back(x[0].v[i * 4 + static_cast<int64_t>(x[1].v[i * 2 + j])]);
         return r;
       }},
      {"gather_dim0_3d", [](auto& x) {  // out[i][j][k] = x[index[i][j][k]][j][k], x [3, 2, 4]
         A r{{2, 2, 3}, {}};
         for (int64_t i = 0; i < 2; ++i)
           for (int64_t j = 0; j < 2; ++j)
             for (int64_t k = 0; k < 3; ++k)
               r.v.push_back(x[0].v[(static_cast<int64_t>(x[1].v[(i * 2 + j) * 3 + k]) * 2 + j) * 4 + k]);
         return r;
       }},
      {"scatter_add_dim1", [](auto& x) {  // out = x; out[i][index[i][j]] += src[i][j] for the [3, 2] index
         A r = x[0];
         for (int64_t i = 0; i < 3; ++i)
           for (int64_t j = 0; j < 2; ++j) r.v[i * 5 + static_cast<int64_t>(x[1].v[i * 2 + j])] += x[2].v[i * 3 + j];
         return r;
       }},
      {"embedding_padding", [](auto& x) {
         A r = gather_rows(x[0], A{{6}, x[1].v});
         r.s = {2, 3, 3};
         return map1(r, [](double a) { return 2 * a; });
       }},
      {"split_sizes", [](auto& x) {  // rows 1..3 summed, times row 0, plus the squares of rows 4..5 summed
         A r{{1, 2}, {}};
         for (int64_t c = 0; c < 2; ++c) {
           const double s13 = x[0].v[1 * 2 + c] + x[0].v[2 * 2 + c] + x[0].v[3 * 2 + c];
           const double sq = x[0].v[4 * 2 + c] * x[0].v[4 * 2 + c] + x[0].v[5 * 2 + c] * x[0].v[5 * 2 + c];
           r.v.push_back(s13 * x[0].v[c] + sq);
         }
         return r;
       }},
      {"softplus_beta_threshold", [](auto& x) {
         return map1(x[0], [](double a) { return 2 * a > 3 ? a : std::log(1 + std::exp(2 * a)) / 2; });
       }},
      {"cross_entropy_weighted", [](auto& x) {  // sum_i w[y_i] (lse_i - x_i,y_i) / sum_i w[y_i], ignoring -100
         double num = 0, den = 0;
         for (int64_t i = 0; i < 4; ++i) {
           const auto y = static_cast<int64_t>(x[1].v[i]);
           if (y == -100) continue;
           std::vector<double> row(x[0].v.begin() + i * 5, x[0].v.begin() + (i + 1) * 5);
           num += x[2].v[y] * (vlse(row) - row[y]);
           den += x[2].v[y];
         }
         return scalar(num / den);
       }},
      {"cross_entropy_weighted_smoothing_sum", [](auto& x) {
         // (1 - eps) w_y (lse - x_y) + eps / C sum_c w_c (lse - x_c), eps 0.2, C 5, label 7 ignored
         double s = 0;
         for (int64_t i = 0; i < 4; ++i) {
           const auto y = static_cast<int64_t>(x[1].v[i]);
           if (y == 7) continue;
           std::vector<double> row(x[0].v.begin() + i * 5, x[0].v.begin() + (i + 1) * 5);
           const double lse = vlse(row);
           double smooth = 0;
           for (int64_t c = 0; c < 5; ++c) smooth += x[2].v[c] * (lse - row[c]);
           s += 0.8 * x[2].v[y] * (lse - row[y]) + 0.2 / 5 * smooth;
         }
         return scalar(s);
       }},
      {"cross_entropy_probs", [](auto& x) {  // mean_i -sum_c w_c t'_ic log p_ic, t' = 0.9 t + 0.1 / 4
         double s = 0;
         for (int64_t i = 0; i < 3; ++i) {
           std::vector<double> row(x[0].v.begin() + i * 4, x[0].v.begin() + (i + 1) * 4);
           const double lse = vlse(row);
           for (int64_t c = 0; c < 4; ++c) s += x[2].v[c] * (0.9 * x[1].v[i * 4 + c] + 0.1 / 4) * (lse - row[c]);
         }
         return scalar(s / 3);
       }},
      {"cross_entropy_spatial_none", [](auto& x) {  // logits [2, 3, 2, 2], one loss per [n, h, w]
         A r{{2, 2, 2}, {}};
         for (int64_t n = 0; n < 2; ++n)
           for (int64_t p = 0; p < 4; ++p) {
             std::vector<double> row;
             for (int64_t c = 0; c < 3; ++c) row.push_back(x[0].v[(n * 3 + c) * 4 + p]);
             r.v.push_back(vlse(row) - row[static_cast<int64_t>(x[1].v[n * 4 + p])]);
           }
         return r;
       }},
      {"cross_entropy_spatial_weighted", [](auto& x) {  // logits [2, 3, 4], labels [2, 4], weight [3]
         double num = 0, den = 0;
         for (int64_t n = 0; n < 2; ++n)
           for (int64_t p = 0; p < 4; ++p) {
             std::vector<double> row;
             for (int64_t c = 0; c < 3; ++c) row.push_back(x[0].v[(n * 3 + c) * 4 + p]);
             const auto y = static_cast<int64_t>(x[1].v[n * 4 + p]);
             num += x[2].v[y] * (vlse(row) - row[y]);
             den += x[2].v[y];
           }
         return scalar(num / den);
       }},
      {"nll_loss_weighted_spatial", [](auto& x) {  // -sum w_y lp[n, y, p] / sum w_y, -100 ignored
         double num = 0, den = 0;
         for (int64_t n = 0; n < 2; ++n)
           for (int64_t p = 0; p < 4; ++p) {
             const auto y = static_cast<int64_t>(x[1].v[n * 4 + p]);
             if (y == -100) continue;
             num -= x[2].v[y] * x[0].v[(n * 3 + y) * 4 + p];
             den += x[2].v[y];
           }
         return scalar(num / den);
       }},
      {"bce", [](auto& x) {  // mean of -w_c [t log p + (1 - t) log(1 - p)]
         double s = 0;
         for (int64_t i = 0; i < 12; ++i) {
           const double p = x[0].v[i], t = x[1].v[i];
           s -= x[2].v[i % 4] * (t * std::log(p) + (1 - t) * std::log(1 - p));
         }
         return scalar(s / 12);
       }},
      {"bce_with_logits_pos_weight", [](auto& x) {  // mean of -w_r [pw_c t log s(z) + (1 - t) log(1 - s(z))]
         double s = 0;
         for (int64_t i = 0; i < 12; ++i) {
           const double z = x[0].v[i], t = x[1].v[i];
           s -= x[2].v[i / 4] * (x[3].v[i % 4] * t * std::log(sigm(z)) + (1 - t) * std::log(1 - sigm(z)));
         }
         return scalar(s / 12);
       }},
      {"reshape", [](auto& x) {
         A r{{2, 6}, x[0].v};
         for (int64_t i = 0; i < 12; ++i) r.v[i] *= static_cast<double>(i % 6 + 1);
         return r;
       }},
      {"flatten", [](auto& x) { return A{{2, 6}, x[0].v}; }},
      {"transpose_contiguous", [](auto& x) { return transpose2(x[0]); }},
      {"permute", [](auto& x) {
         A r{{4, 2, 3}, std::vector<double>(24)};
         for (int64_t a = 0; a < 2; ++a)
           for (int64_t b = 0; b < 3; ++b)
             for (int64_t c = 0; c < 4; ++c) r.v[(c * 2 + a) * 3 + b] = std::exp(x[0].v[(a * 3 + b) * 4 + c]);
         return r;
       }},
      {"narrow_slice_select", [](auto& x) {
         A r{{2, 3}, {}};
         for (int64_t i = 1; i <= 2; ++i)
           for (int64_t j = 0; j < 6; j += 2) r.v.push_back(x[0].v[i * 6 + j] * x[0].v[3 * 6 + 1 + j / 2]);
         return r;
       }},
      {"squeeze_unsqueeze", [](auto& x) { return A{{1, 3, 4}, map1(x[0], [](double a) { return 2 * a; }).v}; }},
      {"expand", [](auto& x) {
         A r{{2, 3, 4}, {}};
         for (int64_t b = 0; b < 2; ++b)
           for (int64_t i = 0; i < 3; ++i)
             for (int64_t j = 0; j < 4; ++j) r.v.push_back(x[0].v[i]);
         return r;
       }},
      {"cat", [](auto& x) {
         A r{{6, 3}, x[0].v};
         r.v.insert(r.v.end(), x[1].v.begin(), x[1].v.end());
         return r;
       }},
      {"cat_dim1", [](auto& x) {
         A r{{2, 4}, {}};
         for (int64_t i = 0; i < 2; ++i) {
           for (int64_t j = 0; j < 3; ++j) r.v.push_back(x[0].v[i * 3 + j]);
           r.v.push_back(x[1].v[i]);
         }
         return r;
       }},
      {"stack", [](auto& x) {
         A r{{2, 2, 3}, {}};
         for (int64_t i = 0; i < 2; ++i)
           for (int k = 0; k < 2; ++k)
             for (int64_t j = 0; j < 3; ++j) r.v.push_back(x[k].v[i * 3 + j]);
         return r;
       }},
      {"split", [](auto& x) {
         double tail = x[0].v[8] + x[0].v[9];
         A r{{2, 2}, {}};
         for (int64_t i = 0; i < 4; ++i) r.v.push_back(x[0].v[i] * x[0].v[4 + i] + tail);
         return r;
       }},
      {"index_select_repeated", [](auto& x) { return gather_rows(x[0], x[1]); }},
      {"index_select_dim1", [](auto& x) {
         A r{{2, 2}, {}};
         for (int64_t i = 0; i < 2; ++i)
           for (double k : x[1].v) r.v.push_back(x[0].v[i * 5 + static_cast<int64_t>(k)]);
         return r;
       }},
      {"embedding", [](auto& x) {
         A r = gather_rows(x[0], x[1]);
         r.s = {2, 3, 3};
         return r;
       }},
      {"mlp_loss", [](auto& x) {
         A h = linear_ref(x[0], x[1], &x[2], true);
         A logits = linear_ref(h, x[3], &x[4], false);
         return scalar(vsum(ce_rows(logits, x[5], -100, 0)) / 6);
       }},
  };
  // Rows defined in other files bring references over host tensors.
  for (auto& [name, ref] : poolnorm_references())
    r[name] = [ref](const std::vector<A>& x) {
      std::vector<Tensor> ts;
      for (const A& a : x) ts.push_back(from_vector<double>(a.v, a.s));
      return host(ref(ts));
    };
  // The convolution rows' references (tests/ops/op_table_conv.cpp) work on tensors.
  for (auto& [name, f] : conv_references())
    r[name] = [f](const std::vector<A>& x) {
      std::vector<Tensor> ts;
      for (const A& a : x) ts.push_back(from_vector<double>(a.v, a.s));
      const Tensor t = f(ts);
      return A{t.shape(), t.to_vector<double>()};
    };
  return r;
}

class OpTable : public ::testing::TestWithParam<OpRow> {};

std::string row_name(const ::testing::TestParamInfo<OpRow>& info) { return info.param.name; }

// ---- forward vs reference ----
TEST_P(OpTable, ForwardMatchesReference) {
  const OpRow& row = GetParam();
  static const std::map<std::string, R> refs = references();
  if (row.name == "dropout") {
    // Dropout's reference: every output is 0 or x / (1 - p), and the kept fraction is near 1 - p.
    Tensor x = make_inputs(row, DType::F64)[0];
    std::vector<double> y = row.fn({x}).to_vector<double>(), xv = x.to_vector<double>();
    for (size_t i = 0; i < y.size(); ++i)
      EXPECT_TRUE(y[i] == 0.0 || std::abs(y[i] - xv[i] / 0.6) < 1e-12) << i;
    Generator g(11);
    std::vector<double> big = dropout(ones({20000}, DType::F64), 0.4, true, &g).to_vector<double>();
    EXPECT_NEAR(std::count(big.begin(), big.end(), 0.0) / 20000.0, 0.4, 0.02);
    return;
  }
  auto it = refs.find(row.name);
  ASSERT_NE(it, refs.end()) << "op row '" << row.name << "' has no reference: add one to references()";
  for (DType dt : {DType::F64, DType::F32}) {
    std::vector<Tensor> xs = make_inputs(row, dt);
    std::vector<A> hs;
    for (const Tensor& x : xs) hs.push_back(host(x));
    Tensor out = row.fn(xs);
    A expect = it->second(hs);
    EXPECT_EQ(out.dtype(), dt);
    EXPECT_TRUE(all_close(out, from_vector<double>(expect.v, expect.s),
                          dt == DType::F64 ? Tol{1e-12, 1e-10} : Tol{1e-5, 1e-5}))
        << row.name << " (" << dtype_name(dt) << ")";
  }
}

// ---- f64 finite-difference gradient check ----
double g_worst_rel = 0.0;
std::string g_worst_op;
int g_checked = 0;

TEST_P(OpTable, GradientMatchesFiniteDifferences) {
  const OpRow& row = GetParam();
  std::vector<Tensor> xs = make_inputs(row, DType::F64);
  for (size_t i = 0; i < xs.size(); ++i)
    if (row.inputs[i].differentiable) xs[i].requires_grad_();
  Tensor out = row.fn(xs);
  ASSERT_TRUE(out.requires_grad()) << row.name << " did not record a gradient";
  // Weights make every output element matter with a different factor.
  const Tensor w = uniform(out.shape(), 0.5, 1.5, DType::F64, 3);
  sum(mul(out, w)).backward();
  auto loss_at = [&](const std::vector<Tensor>& in) {
    autograd::NoGradGuard no_grad;
    return sum(mul(row.fn(in), w)).item<double>();
  };
  const double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!row.inputs[i].differentiable) continue;
    ASSERT_TRUE(xs[i].grad().defined()) << row.name << ": no gradient for input " << i;
    ASSERT_EQ(xs[i].grad().shape(), xs[i].shape());
    std::vector<double> analytic = xs[i].grad().to_vector<double>();
    std::vector<Tensor> probe;
    for (const Tensor& x : xs) probe.push_back(x.detach().clone());
    double* p = probe[i].data<double>();
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      const double keep = p[j];
      p[j] = keep + eps;
      const double up = loss_at(probe);
      p[j] = keep - eps;
      const double down = loss_at(probe);
      p[j] = keep;
      const double numeric = (up - down) / (2 * eps);
      const double err = std::abs(analytic[j] - numeric);
      EXPECT_LE(err, atol + rtol * std::abs(numeric))
          << row.name << ": input " << i << " element " << j << ": analytic " << analytic[j] << " numeric " << numeric;
      const double rel = err / std::max(std::abs(numeric), 1e-3);
      if (rel > g_worst_rel) {
        g_worst_rel = rel;
        g_worst_op = row.name;
      }
    }
  }
  ++g_checked;
}

// ---- CUDA vs CPU ----
TEST_P(OpTable, CudaMatchesCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: CUDA-vs-CPU parity runs on a GPU machine";
  const OpRow& row = GetParam();
  cuda::set_allow_tf32(false);
  std::vector<Tensor> cpu_in = make_inputs(row, DType::F32), gpu_in;
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    gpu_in.push_back(cpu_in[i].to(Device::cuda()));
    if (row.inputs[i].differentiable) {
      cpu_in[i].requires_grad_();
      gpu_in[i].requires_grad_();
    }
  }
  Tensor cpu_out = row.fn(cpu_in), gpu_out = row.fn(gpu_in);
  EXPECT_EQ(gpu_out.device(), Device::cuda());
  EXPECT_TRUE(all_close(gpu_out.cpu(), cpu_out, {row.cuda_tol, row.cuda_tol})) << row.name << " forward";
  const Tensor w = uniform(cpu_out.shape(), 0.5, 1.5, DType::F32, 3);
  sum(mul(cpu_out, w)).backward();
  sum(mul(gpu_out, w.cuda())).backward();
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    if (!row.inputs[i].differentiable) continue;
    ASSERT_TRUE(gpu_in[i].grad().defined()) << row.name << ": no CUDA gradient for input " << i;
    EXPECT_TRUE(all_close(gpu_in[i].grad().cpu(), cpu_in[i].grad(), {row.cuda_tol, row.cuda_tol}))
        << row.name << " gradient of input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpTable, ::testing::ValuesIn(op_table()), row_name);

TEST(OpTableSummary, EveryRowHasAReference) {
  const auto refs = references();
  for (const OpRow& row : op_table())
    EXPECT_TRUE(row.name == "dropout" || refs.count(row.name)) << row.name << " lacks a forward reference";
  EXPECT_GE(op_table().size(), 80u);
}

}  // namespace
}  // namespace ember::test

// Prints the gradient-check totals once the suite has run (ctest runs rows in separate processes;
// run the binary directly, or with --gtest_filter='*Gradient*', to see the totals).
class GradcheckReport : public ::testing::Environment {
 public:
  // Every allocation in the op suites starts as NaN, so an element a kernel forgets to write fails.
  void SetUp() override { ember::debug::set_poison_allocations(true); }
  void TearDown() override {
    if (ember::test::g_checked > 0)
      std::printf("[gradcheck] %d ops checked, worst relative error %.3g (%s)\n", ember::test::g_checked,
                  ember::test::g_worst_rel, ember::test::g_worst_op.c_str());
  }
};
static ::testing::Environment* const g_report = ::testing::AddGlobalTestEnvironment(new GradcheckReport);
