// matmul (any ranks, broadcast batch dims, as PyTorch) and linear / linear_relu with their GEMM
// epilogues: bias (+ReLU) fused into the forward GEMM, the bias gradient into the weight GEMM; and
// fused_linear_relu_linear, two layers in one node (the ReLU's backward inside the next GEMM).
#include "cpp/backend/gemm_layout.h"
#include "cpp/backend/relu_mask.h"
#include "cpp/ops/autocast.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
using autograd::any_requires_grad;
using autograd::record;
using autograd::SavedTensor;

namespace {

// A GEMM operand without a BLAS layout (gemm_layout.h) is copied.
Tensor gemm_operand(const Tensor& t) { return gemm_layout(t) ? t : t.contiguous(); }

Tensor gemm(const Tensor& a, const Tensor& b, const GemmOptions& o = {}) {
  Tensor ga = gemm_operand(a), gb = gemm_operand(b);
  Shape out_shape;
  if (a.dim() == 3 || b.dim() == 3) out_shape.push_back(a.dim() == 3 ? a.size(0) : b.size(0));
  out_shape.push_back(a.size(a.dim() - 2));
  out_shape.push_back(b.size(b.dim() - 1));
  if (out_shape.size() == 3) {
    // The 2-D operand is shared by every batch: a batch stride of 0.
    if (ga.dim() == 2)
      ga = make_view(ga, {out_shape[0], ga.size(0), ga.size(1)}, {0, ga.stride(0), ga.stride(1)}, ga.offset());
    if (gb.dim() == 2)
      gb = make_view(gb, {out_shape[0], gb.size(0), gb.size(1)}, {0, gb.stride(0), gb.stride(1)}, gb.offset());
  }
  Tensor out = make_empty(out_shape, a.dtype(), a.device());
  ops::backend_of(a).gemm(out, ga, gb, o);
  return out;
}

void check_matmul_args(const Tensor& a, const Tensor& b, const char* op) {
  ops::check_defined(a, op, "first operand");
  ops::check_defined(b, op, "second operand");
  ops::check_same_device(a, b, op);
  ops::check_floating(a, op);
  EMBER_CHECK(a.dtype() == b.dtype(), op, ": operands have different dtypes (", dtype_name(a.dtype()), " and ",
              dtype_name(b.dtype()), "); convert one with .to(DType)");
}

// Gradient of a 2-D operand that was shared across a batch: sum the per-batch products.
Tensor batched_to_shared(const Tensor& g) { return g.dim() == 3 ? sum(g, {0}) : g; }

Tensor matmul_2d3d(const Tensor& a, const Tensor& b) {
  EMBER_CHECK((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3),
              "matmul: expected 1-D, 2-D or 3-D "
              "operands, got shapes ",
              shape_str(a.shape()), " and ", shape_str(b.shape()));
  const int64_t k1 = a.size(-1), k2 = b.size(-2);
  EMBER_CHECK(k1 == k2, "matmul: inner dimensions differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()), " (",
              k1, " vs ", k2, "); the last dim of the first must equal the second-to-last of the second");
  if (a.dim() == 3 && b.dim() == 3)
    EMBER_CHECK(a.size(0) == b.size(0), "matmul: batch sizes differ: ", shape_str(a.shape()), " @ ",
                shape_str(b.shape()));
  Tensor out = gemm(a.detach(), b.detach());
  if (!any_requires_grad({&a, &b})) return out;
  SavedTensor sa(a), sb(b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  const int64_t ad = a.dim(), bd = b.dim();
  record("matmul", {a, b}, {out}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor av = sa.unpack("matmul"), bv = sb.unpack("matmul");
    std::vector<Tensor> r(2);
    if (ga) {
      Tensor da = gemm(g[0], bv.transpose(-1, -2));  // dA = dC Bᵀ
      r[0] = ad == 2 ? batched_to_shared(da) : da;
    }
    if (gb) {
      Tensor db = gemm(av.transpose(-1, -2), g[0]);  // dB = Aᵀ dC
      r[1] = bd == 2 ? batched_to_shared(db) : db;
    }
    return r;
  });
  return out;
}

// nan_to_zero (fused_linear_relu): the ReLU maps NaN to 0, so on CUDA it fuses into cuBLASLt's
// RELU_BIAS epilogue; its backward is relu's (dy where y > 0), the same for either reading.
Tensor linear_impl(const Tensor& x, const Tensor& w, const Tensor& b, bool relu, const char* op,
                   bool nan_to_zero = false) {
  profile::Range range(op);
  ops::check_defined(x, op, "input");
  ops::check_defined(w, op, "weight");
  ops::check_same_device(x, w, op);
  ops::check_floating(x, op);
  EMBER_CHECK(w.dim() == 2, op, ": weight must be 2-D [out_features, in_features], got shape ", shape_str(w.shape()));
  EMBER_CHECK(x.dim() >= 1, op, ": input must have at least 1 dim, got a 0-d tensor");
  EMBER_CHECK(x.size(-1) == w.size(1), op, ": input has ", x.size(-1), " features but weight expects ", w.size(1),
              " (input shape ", shape_str(x.shape()), ", weight ", shape_str(w.shape()), ")");
  EMBER_CHECK(x.dtype() == w.dtype(), op, ": input is ", dtype_name(x.dtype()), " but weight is ",
              dtype_name(w.dtype()), "; convert one with .to(DType)");
  if (b.defined()) {
    ops::check_same_device(x, b, op);
    EMBER_CHECK(b.dim() == 1 && b.size(0) == w.size(0), op, ": bias must have shape [", w.size(0), "], got ",
                shape_str(b.shape()));
    EMBER_CHECK(b.dtype() == x.dtype(), op, ": bias is ", dtype_name(b.dtype()), " but input is ",
                dtype_name(x.dtype()));
  }
  Shape out_shape = x.shape();
  out_shape.back() = w.size(0);
  Tensor x2 = x.detach().reshape({-1, x.size(-1)});
  GemmOptions o;
  o.epilogue = b.defined() ? (relu ? Epilogue::BiasRelu : Epilogue::Bias) : (relu ? Epilogue::Relu : Epilogue::None);
  if (nan_to_zero) o.epilogue = Epilogue::BiasReluNanToZero;  // the caller checked that b is defined
  o.bias = b.defined() ? b.detach().contiguous() : Tensor();
  Tensor y = gemm(x2, w.detach().t(), o).reshape(out_shape);
  if (!any_requires_grad({&x, &w, &b})) return y;
  SavedTensor sx(x2), sw(w), sy(y, true);
  const bool gx = x.requires_grad(), gw = w.requires_grad(), gb = b.defined() && b.requires_grad();
  const Shape x_shape = x.shape();
  record(op, {x, w, b}, {y}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dy = g[0].reshape({-1, g[0].size(-1)});
    if (relu) dy = ops::binary_kernel(BinaryOp::ReluBackward, dy.contiguous(), sy.unpack(op).reshape(dy.shape()));
    std::vector<Tensor> r(3);
    if (gx) r[0] = gemm(dy, sw.unpack(op)).reshape(x_shape);  // dX = dY W
    if (gw || gb) {
      // dW = dYᵀ X; the bias gradient (column sums of dY) comes out of the same GEMM.
      GemmOptions bo;
      Tensor db;
      if (gb) {
        db = make_empty({dy.size(1)}, dy.dtype(), dy.device());
        bo.epilogue = Epilogue::BiasGradA;
        bo.bias_grad = db;
      }
      Tensor dw = gemm(dy.t(), sx.unpack(op), bo);
      if (gw) r[1] = dw;
      if (gb) r[2] = db;
    }
    return r;
  });
  return y;
}

// fused_linear_relu_linear's second layer: w2 [out2, hidden] takes what w1 [hidden, in] gives, b2 is
// [out2]; dtypes and devices are x's (the first layer is checked by linear_impl's rules).
void check_second_layer(const Tensor& x, const Tensor& w1, const Tensor& w2, const Tensor& b2, const char* op) {
  ops::check_defined(w2, op, "second weight (w2)");
  ops::check_same_device(x, w2, op);
  ops::check_same_device(x, b2, op);
  EMBER_CHECK(w2.dim() == 2, op, ": w2 must be 2-D [out_features, hidden], got shape ", shape_str(w2.shape()));
  EMBER_CHECK(w2.size(1) == w1.size(0), op, ": w2 expects ", w2.size(1), " hidden features but the first layer gives ",
              w1.size(0), " (w1 ", shape_str(w1.shape()), ", w2 ", shape_str(w2.shape()),
              "); w2's second dim must equal w1's first");
  EMBER_CHECK(w2.dtype() == x.dtype() && b2.dtype() == x.dtype(), op, ": w2 is ", dtype_name(w2.dtype()), " and b2 ",
              dtype_name(b2.dtype()), " but the input is ", dtype_name(x.dtype()), "; convert with .to(DType)");
  EMBER_CHECK(b2.dim() == 1 && b2.size(0) == w2.size(0), op, ": b2 must have shape [", w2.size(0), "] (w2 ",
              shape_str(w2.shape()), "), got ", shape_str(b2.shape()));
}

}  // namespace

// PyTorch's rules: 1-D operands gain a dim that is removed again (a row vector in front, a column
// vector behind); the batch dims (all but the last two) broadcast; a 2-D second operand folds the
// first's batch dims into its rows (one GEMM); otherwise the broadcast batch runs as one batched GEMM.
Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  profile::Range range("matmul");
  const Tensor a = ops::autocast_input(a_in, "matmul"), b = ops::autocast_input(b_in, "matmul");
  check_matmul_args(a, b, "matmul");
  EMBER_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: operands must have at least 1 dim, got shapes ",
              shape_str(a.shape()), " and ", shape_str(b.shape()));
  if (a.dim() == 1 && b.dim() == 1) {
    EMBER_CHECK(a.size(0) == b.size(0), "matmul: a dot product needs equal lengths, got shapes ", shape_str(a.shape()),
                " and ", shape_str(b.shape()));
    return matmul_2d3d(a.unsqueeze(0), b.unsqueeze(1)).reshape({});
  }
  if (a.dim() == 1) return matmul(a.unsqueeze(0), b).squeeze(-2);
  if (b.dim() == 1) return matmul(a, b.unsqueeze(1)).squeeze(-1);
  const int64_t k1 = a.size(-1), k2 = b.size(-2);
  EMBER_CHECK(k1 == k2, "matmul: inner dimensions differ: ", shape_str(a.shape()), " @ ", shape_str(b.shape()), " (",
              k1, " vs ", k2, "); the last dim of the first must equal the second-to-last of the second");
  const bool same_batch = a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0);
  if ((a.dim() <= 3 && b.dim() == 2) || (a.dim() == 2 && b.dim() == 3) || same_batch) return matmul_2d3d(a, b);
  if (b.dim() == 2) {
    Shape out_shape = a.shape();
    out_shape.back() = b.size(1);
    return matmul_2d3d(a.reshape({-1, k1}), b).reshape(out_shape);
  }
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2), b_batch(b.shape().begin(), b.shape().end() - 2);
  for (size_t i = 1; i <= std::min(a_batch.size(), b_batch.size()); ++i) {
    const int64_t p = a_batch[a_batch.size() - i], q = b_batch[b_batch.size() - i];
    EMBER_CHECK(p == q || p == 1 || q == 1, "matmul: the batch dims ", shape_str(a_batch), " and ", shape_str(b_batch),
                " do not broadcast (", p, " vs ", q, "; operands ", shape_str(a.shape()), " @ ", shape_str(b.shape()),
                "); each pair must match or be 1");
  }
  const Shape batch = broadcast_shapes(a_batch, b_batch, "matmul");
  const int64_t n = a.size(-2), m = b.size(-1);
  Shape a_full = batch, b_full = batch, out_shape = batch;
  a_full.insert(a_full.end(), {n, k1});
  b_full.insert(b_full.end(), {k2, m});
  out_shape.insert(out_shape.end(), {n, m});
  const int64_t count = shape_numel(batch);
  return matmul_2d3d(a.expand(a_full).reshape({count, n, k1}), b.expand(b_full).reshape({count, k2, m}))
      .reshape(out_shape);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  return linear_impl(ops::autocast_input(x, "linear"), ops::autocast_input(w, "linear"),
                     ops::autocast_input(b, "linear"), false, "linear");
}
Tensor fused_linear_relu(const Tensor& x, const Tensor& w, const Tensor& b) {
  EMBER_CHECK(b.defined(), "fused_linear_relu: needs a bias (the fused epilogue is bias + ReLU); use linear_relu "
              "for a layer without one");
  return linear_impl(ops::autocast_input(x, "fused_linear_relu"), ops::autocast_input(w, "fused_linear_relu"),
                     ops::autocast_input(b, "fused_linear_relu"), true, "fused_linear_relu", true);
}

// Both layers in one node, so that the first layer's ReLU backward can run inside the second layer's
// input-gradient GEMM (DReluBiasGrad, with b1's gradient), which per-op autograd cannot reach.
// Forward: h = GEMM 1 with bias, ReLU (NaN -> 0) and the ReLU's bit mask (BiasReluNanToZeroMask);
// y = GEMM 2 with bias. Backward: dW2 with db2 (BiasGradA), dH = dY W2 with the mask applied and db1
// (DReluBiasGrad), then dW1 = dHᵀ X and dX = dH W1. The same GEMMs and epilogue arithmetic as
// linear(fused_linear_relu(x, w1, b1), w2, b2) on the CPU (equal values there).
Tensor fused_linear_relu_linear(const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in, const Tensor& w2_in,
                                const Tensor& b2_in) {
  static constexpr const char* op = "fused_linear_relu_linear";
  profile::Range range(op);
  EMBER_CHECK(b1_in.defined() && b2_in.defined(), op, ": needs both biases (b1 is ",
              b1_in.defined() ? "given" : "missing", ", b2 is ", b2_in.defined() ? "given" : "missing",
              "); run fused_linear_relu / linear_relu and linear for layers without one");
  const Tensor x = ops::autocast_input(x_in, op), w1 = ops::autocast_input(w1_in, op),
               b1 = ops::autocast_input(b1_in, op), w2 = ops::autocast_input(w2_in, op),
               b2 = ops::autocast_input(b2_in, op);
  ops::check_defined(x, op, "input");
  ops::check_defined(w1, op, "first weight (w1)");
  ops::check_same_device(x, w1, op);
  ops::check_same_device(x, b1, op);
  ops::check_floating(x, op);
  EMBER_CHECK(w1.dim() == 2, op, ": w1 must be 2-D [hidden, in_features], got shape ", shape_str(w1.shape()));
  EMBER_CHECK(x.dim() >= 1, op, ": input must have at least 1 dim, got a 0-d tensor");
  EMBER_CHECK(x.size(-1) == w1.size(1), op, ": input has ", x.size(-1), " features but w1 expects ", w1.size(1),
              " (input shape ", shape_str(x.shape()), ", w1 ", shape_str(w1.shape()), ")");
  EMBER_CHECK(w1.dtype() == x.dtype() && b1.dtype() == x.dtype(), op, ": w1 is ", dtype_name(w1.dtype()), " and b1 ",
              dtype_name(b1.dtype()), " but the input is ", dtype_name(x.dtype()), "; convert with .to(DType)");
  EMBER_CHECK(b1.dim() == 1 && b1.size(0) == w1.size(0), op, ": b1 must have shape [", w1.size(0), "] (w1 ",
              shape_str(w1.shape()), "), got ", shape_str(b1.shape()));
  check_second_layer(x, w1, w2, b2, op);

  const int64_t hidden = w1.size(0), out_f = w2.size(0);
  Tensor x2 = x.detach().reshape({-1, x.size(-1)});
  const int64_t rows = x2.size(0);
  // The mask only serves the backward: without one (inference, no_grad) GEMM 1 is fused_linear_relu's.
  const bool backward = any_requires_grad({&x, &w1, &b1, &w2, &b2});
  GemmOptions o1;
  o1.epilogue = backward ? Epilogue::BiasReluNanToZeroMask : Epilogue::BiasReluNanToZero;
  o1.bias = b1.detach().contiguous();
  if (backward) o1.relu_mask = make_empty({rows, relu_mask::row_bytes(hidden)}, DType::U8, x.device());
  Tensor h = gemm(x2, w1.detach().t(), o1);
  GemmOptions o2;
  o2.epilogue = Epilogue::Bias;
  o2.bias = b2.detach().contiguous();
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor y = gemm(h, w2.detach().t(), o2).reshape(out_shape);
  if (!backward) return y;
  SavedTensor sx(x2), sw1(w1), sw2(w2);
  const Tensor mask = o1.relu_mask;
  const bool gx = x.requires_grad(), gw1 = w1.requires_grad(), gb1 = b1.requires_grad();
  const bool gw2 = w2.requires_grad(), gb2 = b2.requires_grad();
  const Shape x_shape = x.shape();
  record(op, {x, w1, b1, w2, b2}, {y}, [=](const std::vector<Tensor>& g) -> std::vector<Tensor> {
    Tensor dy = g[0].reshape({-1, out_f});
    std::vector<Tensor> r(5);
    if (gw2 || gb2) {
      // dW2 = dYᵀ H with db2 (column sums of dY) from the same GEMM.
      GemmOptions bo;
      Tensor db2;
      if (gb2) {
        db2 = make_empty({out_f}, dy.dtype(), dy.device());
        bo.epilogue = Epilogue::BiasGradA;
        bo.bias_grad = db2;
      }
      Tensor dw2 = gemm(dy.t(), h, bo);
      if (gw2) r[3] = dw2;
      if (gb2) r[4] = db2;
    }
    if (gx || gw1 || gb1) {
      // dH = (dY W2) masked by the first layer's ReLU, and db1 = its column sums, in one GEMM.
      GemmOptions d;
      d.epilogue = Epilogue::DReluBiasGrad;
      d.relu_mask = mask;
      d.bias_grad = make_empty({hidden}, dy.dtype(), dy.device());
      Tensor dh = gemm(dy, sw2.unpack(op), d);
      if (gx) r[0] = gemm(dh, sw1.unpack(op)).reshape(x_shape);  // dX = dH W1
      if (gw1) r[1] = gemm(dh.t(), sx.unpack(op));               // dW1 = dHᵀ X
      if (gb1) r[2] = d.bias_grad;
    }
    return r;
  });
  return y;
}

Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& b) {
  return linear_impl(ops::autocast_input(x, "linear_relu"), ops::autocast_input(w, "linear_relu"),
                     ops::autocast_input(b, "linear_relu"), true, "linear_relu");
}

}  // namespace ember
