// The fuzz targets' shared harness: each input becomes a file (ember's readers take paths) in a
// per-process scratch file on tmpfs when there is one, and every reader's failure must be an
// ember::Error; anything else escapes to libFuzzer, which reports it.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ember/error.h"

namespace ember::fuzz {

// Inputs above 1 MB are skipped: the readers' limits scale with the file, and big inputs only slow
// the search.
constexpr size_t kMaxInput = size_t{1} << 20;

inline const std::string& scratch_path(const char* name) {
  static const std::string path = [&] {
    const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/ember-fuzz-" + name + "-" + std::to_string(::getpid());
  }();
  return path;
}

// Writes the input to the scratch file; aborts (a harness fault, not a finding) if it cannot.
inline const std::string& write_input(const char* name, const uint8_t* data, size_t size) {
  const std::string& path = scratch_path(name);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(data, 1, size, f) != size || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

// Runs `fn`, which may fail only with ember::Error.
template <class F>
void expect_only_ember_errors(F&& fn) {
  try {
    fn();
  } catch (const ember::Error&) {
  }
}

}  // namespace ember::fuzz
