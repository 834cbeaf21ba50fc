// Internal: short quotations for error messages, so text from a hostile file (a 20 MB header, a
// 5 MB tensor name) cannot make a message of the same size.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include "ember/error.h"

namespace ember::detail {

// `s` for a message, cut to `max` characters ("..." and the full length when cut).
inline std::string cut_brief(std::string_view s, size_t max = 64) {
  if (s.size() <= max) return std::string(s);
  return str_cat(s.substr(0, max), "... (", s.size(), " bytes)");
}

// `s` quoted for a message, cut to `max` characters ("..." and the full length when cut), so a
// hostile input cannot make a huge message.
inline std::string quote_brief(std::string_view s, size_t max = 64) {
  if (s.size() <= max) return str_cat("'", s, "'");
  return str_cat("'", s.substr(0, max), "...' (", s.size(), " bytes)");
}

}  // namespace ember::detail
