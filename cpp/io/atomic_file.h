// Internal: write_file_atomic with the public caller's name in its error messages, and the cleanup
// of temporaries left by killed writers.
#pragma once
#include <cstdio>
#include <functional>
#include <string>

namespace ember::io::detail {

// As ember::io::write_file_atomic; errors read "<who>: cannot write '<path>': ...".
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer, const char* who);

// Removes "<path>.tmp.<pid>.<n>" files beside `path` whose <pid> is no running process: what a
// writer killed mid-save left. Nothing else is touched (not a live writer's file, not another
// target's, not a link or a directory); failures are ignored, as the next save retries.
void remove_stale_temps(const std::string& path);

}  // namespace ember::io::detail
