// The op table shared by the op suites: each row names an op, the inputs it takes (shape and value
// range) and a function computing it with ember ops. The gradient check (f64, CPU) and the
// CUDA-vs-CPU parity suite both run every row; adding an op adds one row.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"

namespace ember::test {

struct InputSpec {
  Shape shape;
  double lo = -1.0;
  double hi = 1.0;
  bool differentiable = true;  // false: integer/label inputs (made by `make`), no gradient
  std::function<Tensor(DType)> make = nullptr;
};

struct OpRow {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  // Parity tolerance on CUDA (f32, TF32 off). Larger only where accumulation order differs; the
  // row says why.
  double cuda_tol = 1e-4;
};

// Inputs for a row: seeded, never all zeros, in the row's dtype (labels stay I64).
inline std::vector<Tensor> make_inputs(const OpRow& row, DType dt, uint64_t seed = 7) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < row.inputs.size(); ++i) {
    const InputSpec& s = row.inputs[i];
    if (s.make) xs.push_back(s.make(dt));
    else xs.push_back(uniform(s.shape, s.lo, s.hi, dt, seed + 101 * i));
  }
  return xs;
}

std::vector<OpRow> op_table();

// Rows kept in their own files (one per op family helper), appended to op_table(), with
// references from f64 host tensors to the expected f64 tensor.
using TensorRef = std::function<Tensor(const std::vector<Tensor>&)>;
std::vector<OpRow> poolnorm_op_rows();  // op_table_poolnorm.cpp
std::map<std::string, TensorRef> poolnorm_references();

// gtest prints a row by its name.
inline void PrintTo(const OpRow& row, std::ostream* os) { *os << row.name; }

}  // namespace ember::test
