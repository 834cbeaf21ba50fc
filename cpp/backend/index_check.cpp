// The error messages of Backend::check_index and index_add's dtype check.
#include "cpp/backend/index_check.h"

#include "ember/error.h"

namespace ember {

std::string index_range_error(const IndexCheck& c, int64_t lo, int64_t hi) {
  return detail::str_cat(c.op, ": ", c.what, " range over [", lo, ", ", hi, "] but ", c.bound_name, " is ", c.bound,
                         "; expected values in [0, ", c.bound, ")", c.hint);
}

std::string index_value_error(const IndexCheck& c, int64_t value, int64_t position, int64_t bound,
                              const std::string& device, const char* reported_at) {
  return detail::str_cat(c.op, ": ", c.what, " hold ", value, " at position ", position, " but ", c.bound_name, " is ",
                         bound, "; expected values in [0, ", bound, ")", c.hint, ". Found by a check on ", device,
                         " and raised at the next point where the host waits for it (", reported_at,
                         "), so the op that was given the bad value ran earlier than the call that throws");
}

void check_index_add_dtype(DType dt) {
  EMBER_CHECK(dt != DType::U8 && dt != DType::Bool, "index_add: dtype ", dtype_name(dt),
              " is not supported (f32, f64, i64 and i32 are: a GPU has no byte atomics, and PyTorch has no index_add "
              "on bool); convert with to(DType::I32) first");
}

}  // namespace ember
