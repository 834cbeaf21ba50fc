// Helpers shared by the op families: argument checks with messages naming the op, output
// allocation, dtype promotion and reducing a broadcast gradient back to an input's shape.
#pragma once
#include <string>
#include <vector>

#include "cpp/autograd/function.h"
#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/ops.h"

namespace ember::ops {

void check_defined(const Tensor& t, const char* op, const char* what = "input");
// Both on one device; the message names both devices.
void check_same_device(const Tensor& a, const Tensor& b, const char* op);
void check_floating(const Tensor& t, const char* op);
void check_dtype(const Tensor& t, DType dt, const char* op, const char* what);
// The dtype arithmetic on a and b computes in: the wider float, else the wider integer.
DType promote(DType a, DType b);
// Casts to a floating dtype (f32 for integers) for ops whose math needs it.
Tensor to_floating(const Tensor& t);

// The gradient `g` of a broadcast result, summed back to `shape`.
Tensor sum_to(const Tensor& g, const Shape& shape);
// Normalizes reduction dims (wrapped, sorted, unique); empty means all.
std::vector<int64_t> reduce_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op);
// Shape of a reduction result over `dims`.
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim);
// Re-inserts reduced dims of size 1 so a reduced gradient broadcasts against the input.
Tensor unsqueeze_dims(const Tensor& g, const std::vector<int64_t>& dims, int64_t ndim);

inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }

}  // namespace ember::ops

namespace ember::ops {
// A stride-0 view of `t` expanded to `shape`, not recorded by autograd (for kernels' inputs).
Tensor broadcast_view(const Tensor& t, const Shape& shape);
// out = op(in) through the backend (no recording).
Tensor unary_kernel(UnaryOp op, const Tensor& in, ElementwiseParams p = {}, DType out_dtype = DType::F32,
                    bool keep_dtype = true);
// out = op(a, b) with broadcasting through the backend (no recording); a and b share a dtype.
Tensor binary_kernel(BinaryOp op, const Tensor& a, const Tensor& b, ElementwiseParams p = {});
}  // namespace ember::ops
