// Shape helpers: a shape is a vector of extents; these give its size, text and dim wrapping.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ember/dtype.h"
#include "ember/export.h"

namespace ember {

using Shape = std::vector<int64_t>;

// The element count; throws ember::Error naming the shape when it does not fit in int64_t.
EMBER_API int64_t shape_numel(const Shape& s);
// numel * dtype_size, checked: throws ember::Error naming the shape when it does not fit in int64_t.
EMBER_API size_t shape_nbytes(const Shape& s, DType dt);
EMBER_API std::string shape_str(const Shape& s);  // "[2, 3]"
// Row-major strides; throws ember::Error naming the shape when one overflows int64_t.
EMBER_API Shape contiguous_strides(const Shape& s);
// Wraps a possibly negative dim into [0, ndim); `op` names the caller in the error.
EMBER_API int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
// NumPy broadcasting of two shapes; throws naming `op` and both shapes when incompatible.
EMBER_API Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace ember
