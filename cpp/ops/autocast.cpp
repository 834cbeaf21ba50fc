// autocast: the per-thread scope and THE table of which ops run in which precision.
#include "cpp/ops/autocast.h"

#include <array>
#include <string_view>
#include <utility>

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
    // Pooling stays f32: its primitives take f32/f64.
    {"max_pool2d", Float32},
    {"avg_pool2d", Float32},
}};

}  // namespace

autocast::autocast(DType dtype, bool enabled) : prev_enabled_(tl_enabled), prev_dtype_(tl_dtype) {
  EMBER_CHECK(dtype == DType::BF16 || dtype == DType::F16, "autocast: dtype must be bf16 or f16, got ",
              dtype_name(dtype), "; for f32 leave the scope out (or pass enabled = false)");
  tl_enabled = enabled;
  if (enabled) tl_dtype = dtype;
}

autocast::~autocast() {
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
    case Lower: return t.dtype() == DType::F32 ? t.to(tl_dtype) : t;  // f64 is asked for explicitly: kept
    case Float32: return (t.dtype() == DType::BF16 || t.dtype() == DType::F16) ? t.to(DType::F32) : t;
    case Keep: return t;
  }
  return t;
}

}  // namespace ops
}  // namespace ember
