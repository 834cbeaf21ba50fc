// The backend registry: a decorator installed for the CPU wraps the built-in backend and sees every
// primitive of an MLP training step, and every listed elementwise op is run by some op-table row.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/ember.h"
#include "ops/op_table.h"
#include "test_util.h"

namespace ember {
namespace {

// Forwards every primitive to `inner` and counts the calls by primitive and elementwise op.
class CountingBackend final : public Backend {
 public:
  explicit CountingBackend(Backend& inner) : inner_(inner) {}
  std::map<std::string, int> calls;
  std::set<UnaryOp> unary_ops;
  std::set<BinaryOp> binary_ops;

  const char* name() const override { return "counting"; }
  void* allocate(size_t nbytes, Device device) override {
    ++calls["allocate"];
    return inner_.allocate(nbytes, device);
  }
  void deallocate(void* ptr, size_t nbytes, Device device) override {
    ++calls["deallocate"];
    inner_.deallocate(ptr, nbytes, device);
  }
  void synchronize(Device device) override { ++calls["synchronize"], inner_.synchronize(device); }
  void fill(const Tensor& out, double value) override { ++calls["fill"], inner_.fill(out, value); }
  void copy(const Tensor& dst, const Tensor& src) override { ++calls["copy"], inner_.copy(dst, src); }
  void transfer(const Tensor& dst, const Tensor& src) override { ++calls["transfer"], inner_.transfer(dst, src); }
  void random(const Tensor& out, const RandomParams& p) override { ++calls["random"], inner_.random(out, p); }
  void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) override {
    ++calls["unary"];
    unary_ops.insert(op);
    inner_.unary(op, out, in, p);
  }
  void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p) override {
    ++calls["binary"];
    binary_ops.insert(op);
    inner_.binary(op, out, a, b, p);
  }
  void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) override {
    ++calls["where"], inner_.where(out, cond, a, b);
  }
  void reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner) override {
    ++calls["reduce"], inner_.reduce(op, out, in, outer, n, inner);
  }
  void gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) override {
    ++calls["gemm"], inner_.gemm(out, a, b, o);
  }
  void softmax(const Tensor& out, const Tensor& in, bool log) override { ++calls["softmax"], inner_.softmax(out, in, log); }
  void softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log) override {
    ++calls["softmax_backward"], inner_.softmax_backward(grad_in, grad_out, out, log);
  }
  void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& labels,
                             const CrossEntropyOptions& o) override {
    ++calls["cross_entropy_forward"], inner_.cross_entropy_forward(loss, lse, logits, labels, o);
  }
  void cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                              const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o) override {
    ++calls["cross_entropy_backward"], inner_.cross_entropy_backward(grad_logits, grad_loss, logits, lse, labels, o);
  }
  void check_index(const Tensor& index, const IndexCheck& c) override {
    ++calls["check_index"], inner_.check_index(index, c);
  }
  void index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                    int64_t inner) override {
    ++calls["index_select"], inner_.index_select(out, in, index, outer, n, inner);
  }
  void index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                 int64_t inner) override {
    ++calls["index_add"], inner_.index_add(out, src, index, outer, n, inner);
  }
  void optimizer_step(const OptimizerStep& s) override { ++calls["optimizer_step"], inner_.optimizer_step(s); }
  void random_permutation(const Tensor& out, uint64_t seed, uint64_t counter) override {
    ++calls["random_permutation"], inner_.random_permutation(out, seed, counter);
  }
  void gather_batch(const Tensor& x, const Tensor& y, const Tensor& images, const Tensor& labels, const Tensor& order,
                    const BatchParams& p) override {
    ++calls["gather_batch"], inner_.gather_batch(x, y, images, labels, order, p);
  }
  // ---- convolution (conv primitives block) ----
  void conv2d_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const ConvParams& p) override {
    ++calls["conv2d_forward"], inner_.conv2d_forward(y, x, w, bias, p);
  }
  void conv2d_backward_data(const Tensor& dx, const Tensor& dy, const Tensor& w, const ConvParams& p) override {
    ++calls["conv2d_backward_data"], inner_.conv2d_backward_data(dx, dy, w, p);
  }
  void conv2d_backward_weight(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                              const ConvParams& p) override {
    ++calls["conv2d_backward_weight"], inner_.conv2d_backward_weight(dw, db, dy, x, p);
  }
  // ---- end of the conv primitives block ----

 private:
  Backend& inner_;
};

// Installs a CountingBackend around the CPU's for the test's scope. It lives until the process
// ends (static), since the tensors it allocated may outlive the scope.
class Counting {
 public:
  Counting() : backend_(make()) { previous_ = set_backend(DeviceType::CPU, &backend_); }
  ~Counting() { set_backend(DeviceType::CPU, previous_); }
  CountingBackend& operator*() { return backend_; }

 private:
  static CountingBackend& make() {
    static CountingBackend b(backend_for(Device::cpu()));
    b.calls.clear();
    b.unary_ops.clear();
    b.binary_ops.clear();
    return b;
  }
  CountingBackend& backend_;
  Backend* previous_ = nullptr;
};

TEST(BackendRegistry, ADecoratorSeesEveryPrimitiveOfAnMlpStep) {
  // Made before the decorator: the step's own tensors are what it must see.
  Tensor x = test::uniform({8, 6}, -1, 1, DType::F32, 1), y = from_vector<int64_t>({0, 1, 2, 0, 1, 2, 0, 1});
  std::vector<Tensor> params = {test::uniform({5, 6}, -0.5, 0.5, DType::F32, 2), zeros({5}),
                                test::uniform({3, 5}, -0.5, 0.5, DType::F32, 3), zeros({3})};
  for (Tensor& p : params) p.requires_grad_();
  optim::SGD opt(params, {.lr = 0.1});
  const std::vector<float> before = params[0].to_vector<float>();
  {
    Counting counting;
    Tensor loss = cross_entropy(linear(relu(linear(x, params[0], params[1])), params[2], params[3]), y);
    EXPECT_EQ(loss.impl()->storage->owner, &*counting) << "the loss was allocated by the built-in backend";
    loss.backward();
    opt.step();
    const auto& c = (*counting).calls;
    for (const char* primitive : {"allocate", "gemm", "unary", "binary", "reduce", "cross_entropy_forward",
                                  "cross_entropy_backward", "optimizer_step"})
      EXPECT_GT(c.count(primitive) ? c.at(primitive) : 0, 0) << primitive << " did not go through the decorator";
    EXPECT_TRUE((*counting).unary_ops.count(UnaryOp::Relu));
    EXPECT_TRUE((*counting).binary_ops.count(BinaryOp::ReluBackward));
  }
  EXPECT_EQ(backend_for(Device::cpu()).name(), std::string("cpu")) << "the built-in backend is back";
  EXPECT_NE(params[0].to_vector<float>(), before) << "the step through the decorator changed nothing";
}

// Every op in unary_ops.def and binary_ops.def is dispatched by some op-table row (forward or
// backward), so the gradient check and the CUDA parity suite run it: a new listed op without a row
// fails here.
TEST(BackendRegistry, EveryListedElementwiseOpHasAnOpTableRow) {
  Counting counting;
  for (const test::OpRow& row : test::op_table()) {
    std::vector<Tensor> in = test::make_inputs(row, DType::F64);
    for (size_t i = 0; i < in.size(); ++i)
      if (row.inputs[i].differentiable) in[i].requires_grad_();
    Tensor out = row.fn(in);
    if (out.requires_grad()) sum(out).backward();
  }
  for (int i = 0; i < kUnaryOpCount; ++i)
    EXPECT_TRUE((*counting).unary_ops.count(static_cast<UnaryOp>(i)))
        << "UnaryOp " << op_name(static_cast<UnaryOp>(i)) << " (unary_ops.def) is run by no row of tests/ops/op_table.cpp";
  for (int i = 0; i < kBinaryOpCount; ++i)
    EXPECT_TRUE((*counting).binary_ops.count(static_cast<BinaryOp>(i)))
        << "BinaryOp " << op_name(static_cast<BinaryOp>(i))
        << " (binary_ops.def) is run by no row of tests/ops/op_table.cpp";
}

}  // namespace
}  // namespace ember
