// File I/O: safetensors read/write and an atomic file writer (temp file, fsync, rename, fsync dir).
#pragma once
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ember/device.h"
#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::io {

// Writes `path` atomically: `writer` fills a temporary file in the same directory
// (path + ".tmp.<pid>.<n>"), which is flushed, fsync'ed, closed and renamed over `path`; then the
// directory is fsync'ed so the rename itself survives a crash. If `writer` throws or any step
// fails, the temporary file is removed and whatever was at `path` before is left untouched.
// A process killed mid-write can leave a stale "*.tmp.*" file behind, never a torn `path`; the next
// write of the same `path` removes the temporaries of processes that no longer run.
// The writer should write through write_bytes(), which throws with strerror(errno) on a short
// write; stream errors it does not check are still caught (ferror) before the rename.
// Failures throw ember::Error naming `path`, the failed step and strerror(errno).
EMBER_API void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& writer);

// fwrite of exactly `n` bytes; throws ember::Error with strerror(errno) when fewer are written.
EMBER_API void write_bytes(std::FILE* f, const void* data, size_t n);

// ---- safetensors (https://github.com/huggingface/safetensors) ----
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
//   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
// padded with spaces to a multiple of 8, then the raw little-endian tensor bytes; offsets are
// relative to the start of that data buffer. dtypes: F64 F32 F16 BF16 I64 I32 U8 BOOL.

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // sorted by name
  std::map<std::string, std::string> metadata;          // the "__metadata__" object, if any
};

// Saves `tensors` (any device, any strides; copied to contiguous host bytes one at a time) with
// `metadata`, in name order, contiguous, no gaps, header space-padded to 8 bytes like the
// reference writer. Names must be non-empty, unique, valid UTF-8 and not "__metadata__".
// Written with write_file_atomic().
EMBER_API void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                const std::map<std::string, std::string>& metadata = {});

// Loads every tensor of a safetensors file onto `device`. The whole header is validated before
// any tensor is allocated (sizes, UTF-8, JSON shape of every entry, dtypes, overflow-free
// shapes, offsets that tile the data buffer exactly), so a malformed or hostile file throws
// ember::Error naming the path and the problem and never allocates what it claims.
EMBER_API SafetensorsFile load_safetensors(const std::string& path, Device device = Device::cpu());

// The same, keyed by name (metadata dropped).
EMBER_API std::map<std::string, Tensor> load_safetensors_map(const std::string& path, Device device = Device::cpu());

}  // namespace ember::io
