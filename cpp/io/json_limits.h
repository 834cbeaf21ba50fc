// Internal, header-only: the one way ember parses JSON it did not write itself (safetensors headers,
// checkpoint metadata, the trainer's history), with limits on size and nesting, and short quotations
// of values and texts for error messages. nlohmann's parser keeps its own stack, but dump() and any
// decoder that walks the result recurse, so depth is bounded before anything walks it.
#pragma once
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "cpp/core/text_brief.h"
#include "ember/error.h"

namespace ember::detail {

struct JsonLimits {
  size_t max_bytes = size_t{16} << 20;  // text longer than this is refused unread
  int max_depth = 32;                   // objects and arrays open at once
  const char* depth_hint = "";          // appended to the depth error, e.g. what the levels are
};

// A JSON value for a message, cut to `max` characters. Safe on anything parse_json_limited returned
// (its depth is bounded, so the recursive dump is too).
inline std::string json_brief(const nlohmann::json& v, size_t max = 64) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > max) s = str_cat(s.substr(0, max - 3), "...");
  return s;
}

// Parses `text`; throws ember::Error starting with `who` when the text is larger than the limit,
// holds a NUL byte (nlohmann stops at one and would accept whatever follows), nests deeper than the
// limit, or is not JSON. `extra`, when given, sees every parse event after the depth check (as
// nlohmann's parser callback: return false to drop a value; throw to refuse the text).
inline nlohmann::json parse_json_limited(std::string_view text, const JsonLimits& limits, const std::string& who,
                                         const nlohmann::json::parser_callback_t& extra = nullptr) {
  using json = nlohmann::json;
  if (text.size() > limits.max_bytes)
    throw Error(str_cat(who, " is ", text.size(), " bytes of JSON, more than the limit of ", limits.max_bytes));
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    throw Error(str_cat(who, " holds a NUL byte at offset ", nul, " of ", text.size(),
                        "; JSON text cannot contain one (a damaged or padded file?)"));
  // nlohmann reports the depth of the containers already open when one starts.
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= limits.max_depth)
      throw Error(str_cat(who, " nests objects or arrays deeper than ", limits.max_depth, " levels",
                          limits.depth_hint));
    return extra ? extra(depth, event, parsed) : true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    // nlohmann quotes the last token read, which may be most of the text: keep the message short.
    throw Error(str_cat(who, " is not valid JSON: ", std::string_view(e.what()).substr(0, 240)));
  }
}

}  // namespace ember::detail
