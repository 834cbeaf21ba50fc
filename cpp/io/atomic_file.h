// Internal: write_file_atomic with the public caller's name in its error messages.
#pragma once
#include <cstdio>
#include <functional>
#include <string>

namespace ember::io::detail {

// As ember::io::write_file_atomic; errors read "<who>: cannot write '<path>': ...".
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer, const char* who);

}  // namespace ember::io::detail
