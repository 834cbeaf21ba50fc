// Dtype dispatch shared by the CPU loops and the CUDA launchers: calls f.template operator()<T>()
// with the C++ type of a dtype that the backends compute with (bf16/f16: lowp_math.h's types,
// whose arithmetic runs in f32).
#pragma once
#include <cstdint>

#include "cpp/backend/lowp_math.h"
#include "ember/error.h"
#include "ember/tensor.h"

namespace ember {

// The numeric dtypes every backend computes with; `op` names the caller in the error.
template <class F>
void visit_dtype(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f.template operator()<float>(); return;
    case DType::F64: f.template operator()<double>(); return;
    case DType::BF16: f.template operator()<bf16>(); return;
    case DType::F16: f.template operator()<f16>(); return;
    case DType::I64: f.template operator()<int64_t>(); return;
    case DType::I32: f.template operator()<int32_t>(); return;
    case DType::U8: f.template operator()<uint8_t>(); return;
    case DType::Bool: f.template operator()<bool>(); return;
    default:
      throw Error(detail::str_cat(op, ": dtype ", dtype_name(dt),
                                  " is not supported by ember's CPU and CUDA backends; convert with to(DType::F32) "
                                  "first"));
  }
}

template <class F>
void visit_floating(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f.template operator()<float>(); return;
    case DType::F64: f.template operator()<double>(); return;
    default:
      throw Error(detail::str_cat(op, ": expected a floating dtype (f32 or f64) but got ", dtype_name(dt),
                                  "; this op computes in f32 or f64 only: convert with .to(DType::F32), or run "
                                  "it inside ember::autocast, which does"));
  }
}

}  // namespace ember
