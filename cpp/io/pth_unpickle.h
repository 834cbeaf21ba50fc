// Internal: the restricted unpickler for torch.save's data.pkl (a state_dict and nothing else).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ember/dtype.h"

namespace ember::io::detail {

struct PickledStorage {
  std::string key;  // the archive entry <prefix>/data/<key>
  DType dtype;
  int64_t numel;  // elements, as the pickle claims (checked against the entry's size by the caller)
};

struct PickledTensor {
  std::string name;
  size_t storage;  // index into PickledStateDict::storages
  int64_t offset;  // in elements
  std::vector<int64_t> size, stride;
};

struct PickledStateDict {
  std::vector<PickledTensor> tensors;  // in the dict's order
  std::vector<PickledStorage> storages;
};

// Runs the pickle on a stack machine that knows only the opcodes (protocol 2 to 5) and globals a
// state_dict needs: collections.OrderedDict, torch._utils._rebuild_tensor_v2 and _rebuild_parameter,
// torch.<Type>Storage for f32/f64/f16/bf16/i64/i32/u8/bool; storages come in as persistent ids
// ('storage', <Type>Storage, key, location, numel). Nothing is called: the allowed callables are
// interpreted by name. Any other opcode or global, a malformed argument, nesting deeper than 32 or
// a result that is not a mapping of names to tensors throws ember::Error "<who>: ...". Tensor
// geometry (non-negative sizes, strides, offsets) is checked here; extents against storages by the
// caller.
PickledStateDict unpickle_state_dict(std::string_view pickle, const std::string& who);

}  // namespace ember::io::detail
