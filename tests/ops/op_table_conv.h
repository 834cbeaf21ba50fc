// The convolution rows of the op table (conv2d, conv_transpose2d, conv1d) and their naive-loop
// references, kept apart from op_table.cpp so other op families can add theirs without conflicts.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "ops/op_table.h"

namespace ember::test {

std::vector<OpRow> conv_op_rows();
// One reference per row: the f64 inputs in, the expected output out, by direct loops.
using TensorRef = std::function<Tensor(const std::vector<Tensor>&)>;
std::map<std::string, TensorRef> conv_references();

}  // namespace ember::test
