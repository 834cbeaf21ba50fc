// ember::Error, the one exception type for user-facing failures, and the EMBER_CHECK helper.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

#include "ember/export.h"

namespace ember {

class EMBER_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Thrown when a device allocation fails even after the allocator's cache was released.
class EMBER_API OutOfMemory : public Error {
 public:
  explicit OutOfMemory(const std::string& what) : Error(what) {}
};

namespace detail {
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace ember

// EMBER_CHECK(cond, parts...): throws ember::Error built from the streamed parts when cond is false.
#define EMBER_CHECK(cond, ...)                                         \
  do {                                                                 \
    if (!(cond)) throw ::ember::Error(::ember::detail::str_cat(__VA_ARGS__)); \
  } while (0)
