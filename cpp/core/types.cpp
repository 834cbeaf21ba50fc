// Device, DType and Shape helpers.
#include <sstream>

#include "ember/device.h"
#include "ember/dtype.h"
#include "ember/error.h"
#include "ember/shape.h"

namespace ember {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string idx = text.substr(5);
    if (!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos && idx.size() < 6)
      return cuda(std::stoi(idx));
  }
  throw Error("invalid device '" + text + "': expected 'cpu', 'cuda' or 'cuda:N'");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::U8: case DType::Bool: return 1;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I64: return "i64";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
  }
  return "?";
}
std::ostream& operator<<(std::ostream& os, DType dt) { return os << dtype_name(dt); }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  bool overflow = false;
  for (int64_t d : s) overflow |= __builtin_mul_overflow(n, d, &n);
  if (overflow)
    throw Error(detail::str_cat("shape ", shape_str(s), " has more elements than a 64-bit count holds (2^63 - 1); "
                                "no tensor can have that shape"));
  return n;
}

size_t shape_nbytes(const Shape& s, DType dt) {
  const int64_t n = shape_numel(s);
  int64_t bytes = 0;
  if (n < 0 || __builtin_mul_overflow(n, static_cast<int64_t>(dtype_size(dt)), &bytes))
    throw Error(detail::str_cat("shape ", shape_str(s), " of ", dtype_name(dt), " (", n, " elements of ",
                                dtype_size(dt), " bytes) needs more bytes than a 64-bit size holds; no tensor can "
                                "have that shape"));
  return static_cast<size_t>(bytes);
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    // With a zero extent the element count is 0, but the other strides must still be representable.
    if (i > 0 && __builtin_mul_overflow(acc, std::max<int64_t>(s[i], 1), &acc))
      throw Error(detail::str_cat("shape ", shape_str(s), " has strides that overflow 64 bits; no tensor can have "
                                  "that shape"));
  }
  return st;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  if (dim < lo || dim > hi)
    throw Error(detail::str_cat(op, ": dim ", dim, " is out of range for a tensor of ", ndim,
                                " dims (expected a dim in [", lo, ", ", hi, "])"));
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw Error(detail::str_cat(op, ": shapes ", shape_str(a), " and ", shape_str(b),
                                  " cannot be broadcast (dim ", i, ": ", da, " vs ", db,
                                  "); sizes must match or be 1"));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace ember
