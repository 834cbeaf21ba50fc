// PyTorch's torch.save files (.pth/.pt, the zip format of PyTorch >= 1.6): a safe state_dict reader
// (a zip reader and a restricted unpickler that never runs code) and a writer torch.load reads.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::io {

// Names in file order, as the OrderedDict of a state_dict.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct PthLoadOptions {
  // bf16 and f16 tensors arrive as DType::BF16 / DType::F16 (ember stores them, but its CPU ops do
  // not compute in them); true converts them to F32 exactly (every bf16/f16 value is an f32 value).
  bool half_to_f32 = false;
};

// Loads the state_dict a torch.save(model.state_dict(), path) wrote: a mapping (dict or
// OrderedDict) from names to tensors (plain or nn.Parameter). Each tensor comes back as a
// contiguous CPU tensor with its file dtype (F32, F64, F16, BF16, I64, I32, U8, Bool), whatever its
// strides, storage offset or storage sharing in the file.
//
// Safety: the pickle is read by a restricted unpickler that accepts only collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the typed storages
// (torch.FloatStorage, ...) as globals, and only the opcodes a state_dict needs; anything else
// (os.system, builtins.eval, any other global or opcode) is refused with ember::Error naming it,
// and nothing from the file is ever called. Every zip offset and size, every storage size and
// every tensor's extent (sizes, strides, offset) is checked against the file before anything is
// allocated; the tensors together may not exceed 4x the file's size (repeated views of one
// storage), and one tensor not its storage's element count (expanded, stride-0 views). Stored
// and deflated entries, zip64 and CRC-32 are checked. Errors name the path and the problem.
EMBER_API NamedTensors load_pth(const std::string& path, const PthLoadOptions& options = {});

// Writes `tensors` (any device and strides; names unique and non-empty) as a torch.save archive
// of an OrderedDict state_dict, each tensor with its own storage, which torch.load(path,
// weights_only=True) reads as the same names, shapes, dtypes and bits. Atomic (write_file_atomic).
EMBER_API void save_pth(const std::string& path, const NamedTensors& tensors);

}  // namespace ember::io

namespace ember {
using io::load_pth;
using io::save_pth;
}  // namespace ember
