// Internal: opening a file ember reads (IDX, safetensors, checkpoints), refusing anything but a
// regular file before a read can block on it.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

namespace ember::io::detail {

// Opens `path` for reading and returns the stream and, in `size`, its byte size. The open itself is
// non-blocking, so a named pipe (which would block until a writer appears), a device or a directory
// is refused with ember::Error "<who>: not a regular file (a FIFO), expected <expected>" rather
// than hanging. Failures name strerror(errno) after `who`.
std::FILE* open_regular_file(const std::string& path, const std::string& who, const char* expected, uint64_t& size);

}  // namespace ember::io::detail
