// The error messages of Backend::check_index and index_add, one wording for every backend.
#pragma once
#include <cstdint>
#include <string>

#include "cpp/backend/backend.h"

namespace ember {

// All values seen at once (the CPU): the range of the values that are not ignore_index.
std::string index_range_error(const IndexCheck& c, int64_t lo, int64_t hi);
// One bad value found on a device, reported later at a host wait named by `reported_at`.
std::string index_value_error(const IndexCheck& c, int64_t value, int64_t position, int64_t bound,
                              const std::string& device, const char* reported_at);

// index_add's dtypes (backend.h): throws for U8 and Bool.
void check_index_add_dtype(DType dt);

}  // namespace ember
