// autocast: the per-thread scope and THE table of which ops run in which precision.
#include "cpp/ops/autocast.h"

#include <array>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "cpp/autograd/backward_runs.h"
#include "cpp/core/tensor_impl.h"
#include "ember/autograd.h"
#include "ember/error.h"

namespace ember {
namespace {

thread_local bool tl_enabled = false;
thread_local DType tl_dtype = DType::BF16;

using enum AutocastPolicy;

// The one table (docs/mixed-precision.md shows it): ops not listed keep their inputs' dtype.
// Lower: the GEMMs, where bf16/f16 inputs with f32 accumulation pay (tensor cores, AVX512_BF16/AMX).
// Float32: ops whose sums or exponentials lose too much in 8 (bf16) or 11 (f16) significand bits,
// as in PyTorch's autocast lists, and the ops whose backends compute in f32/f64 only here.
constexpr std::array<std::pair<std::string_view, AutocastPolicy>, 22> kTable{{
    {"matmul", Lower},
    {"linear", Lower},
    {"linear_relu", Lower},
    {"fused_linear_relu", Lower},
    {"fused_linear_relu_linear", Lower},
    {"softmax", Float32},
    {"log_softmax", Float32},
    {"cross_entropy", Float32},
    {"nll_loss", Float32},
    {"mse_loss", Float32},
    {"binary_cross_entropy", Float32},
    {"binary_cross_entropy_with_logits", Float32},
    {"batch_norm", Float32},
    {"layer_norm", Float32},
    {"group_norm", Float32},
    {"instance_norm", Float32},
    {"sum", Float32},
    {"mean", Float32},
    // Convolutions are GEMMs too: bf16/f16 operands, f32 accumulation (oneDNN on the CPU, cuDNN
    // on the GPU), output in the low precision, as torch.autocast's lower-precision list.
    {"conv1d", Lower},
    {"conv2d", Lower},
    {"conv_transpose2d", Lower},
    // Average pooling sums: f32. Max pooling is not listed: it selects one of its inputs, exact in any
    // dtype, so it keeps its input's (as in PyTorch).
    {"avg_pool2d", Float32},
}};

// ---- the cast cache (as PyTorch's autocast keeps one) ----
// A parameter (a leaf that requires grad) used by several lowered ops in one scope (a shared
// weight, a loop over batches under autocast) is cast once: the cast is kept, keyed by the
// parameter, until the outermost scope ends. An entry is used only while it still describes the
// parameter: the same storage at the same version (an in-place write, such as an optimizer step,
// bumps it), the same dtype and grad mode, no backward since it was made (backward releases the
// cast's node), and the cast itself not written in place.
struct CastEntry {
  std::weak_ptr<TensorImpl> param;
  std::shared_ptr<Storage> storage;
  uint64_t version = 0, backward_runs = 0, cast_version = 0;
  DType dtype = DType::BF16;
  bool grad_mode = false;
  Tensor cast;
};
thread_local std::unordered_map<const TensorImpl*, CastEntry> tl_casts;

Tensor lower_cached(const Tensor& t, DType dt) {
  if (!t.is_leaf() || !t.requires_grad()) return t.to(dt);
  const bool grad = autograd::grad_mode_enabled();
  const uint64_t runs = autograd::backward_runs();
  auto it = tl_casts.find(t.impl());
  if (it != tl_casts.end()) {
    const CastEntry& e = it->second;
    if (e.param.lock() == t.impl_ptr() && e.storage == t.impl()->storage && e.version == t.version() && e.dtype == dt &&
        e.grad_mode == grad && e.backward_runs == runs && e.cast.version() == e.cast_version)
      return e.cast;
  }
  Tensor cast = t.to(dt);
  tl_casts[t.impl()] = CastEntry{t.impl_ptr(), t.impl()->storage, t.version(), runs, cast.version(), dt, grad, cast};
  return cast;
}

}  // namespace

autocast::autocast(DType dtype, bool enabled) : prev_enabled_(tl_enabled), prev_dtype_(tl_dtype) {
  EMBER_CHECK(dtype == DType::BF16 || dtype == DType::F16, "autocast: dtype must be bf16 or f16, got ",
              dtype_name(dtype), "; for f32 leave the scope out (or pass enabled = false)");
  tl_enabled = enabled;
  if (enabled) tl_dtype = dtype;
}

autocast::~autocast() {
  if (tl_enabled && !prev_enabled_) tl_casts.clear();  // the outermost enabled scope ends
  tl_enabled = prev_enabled_;
  tl_dtype = prev_dtype_;
}

bool autocast::active() { return tl_enabled; }
DType autocast::dtype() { return tl_dtype; }

AutocastPolicy autocast_policy(std::string_view op) {
  for (const auto& [name, policy] : kTable)
    if (name == op) return policy;
  return Keep;
}

namespace ops {

Tensor autocast_input(const Tensor& t, const char* op) {
  if (!tl_enabled || !t.defined()) return t;
  switch (autocast_policy(op)) {
    case Lower: return t.dtype() == DType::F32 ? lower_cached(t, tl_dtype) : t;  // f64 is asked for explicitly: kept
    case Float32: return (t.dtype() == DType::BF16 || t.dtype() == DType::F16) ? t.to(DType::F32) : t;
    case Keep: return t;
  }
  return t;
}

}  // namespace ops
}  // namespace ember
