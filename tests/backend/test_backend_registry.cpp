// The backend registry: a decorator installed for the CPU wraps the built-in backend and sees every
// primitive of an MLP training step, and every listed elementwise op is run by some op-table row.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/backend/forwarding_backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/ember.h"
#include "ops/op_table.h"
#include "test_util.h"

namespace ember {
namespace {

// Forwards every primitive to `inner` through ForwardingBackend, counting the calls by primitive
// (its one hook) and by elementwise op (two primitives overridden to read their arguments).
class CountingBackend final : public ForwardingBackend {
 public:
  explicit CountingBackend(Backend& inner) : ForwardingBackend(inner) {}
  std::map<std::string, int> calls;
  std::set<UnaryOp> unary_ops;
  std::set<BinaryOp> binary_ops;

  const char* name() const override { return "counting"; }
  void around(Primitive p, const PrimitiveCall& call) override {
    ++calls[primitive_name(p)];
    call();
  }
  void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) override {
    unary_ops.insert(op);
    ForwardingBackend::unary(op, out, in, p);
  }
  void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p) override {
    binary_ops.insert(op);
    ForwardingBackend::binary(op, out, a, b, p);
  }
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

// ---- the primitive list: every primitive reaches the decorator, supports(), unsupported primitives ----

// A reader that holds nothing (the recording backend's make_host_reader).
class NullReader final : public HostReader {
 public:
  void start(const Tensor&) override {}
  bool ready() override { return true; }
  Tensor get(const char*) override { return Tensor(); }
};

// What the recording backend's primitives return: a recognisable pointer, a reader, or nothing.
void* const kSentinel = reinterpret_cast<void*>(uintptr_t{64});
template <class R>
R recorded_result() {
  if constexpr (std::is_same_v<R, void*>) return kSentinel;
  else if constexpr (std::is_same_v<R, std::unique_ptr<HostReader>>) return std::make_unique<NullReader>();
  else if constexpr (!std::is_void_v<R>) return R{};
}

// Implements every primitive of primitives.def by recording its name and touching nothing.
class RecordingBackend final : public Backend {
 public:
  std::vector<Primitive> seen;
  const char* name() const override { return "recording"; }
  bool supports(Primitive) const override { return true; }
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) \
  RET NAME PARAMS override {                               \
    seen.push_back(Primitive::NAME);                       \
    return recorded_result<RET>();                         \
  }
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
};

// The decorator hook's view: the primitives it wrapped, and whether each call ran inside it.
class HookBackend final : public ForwardingBackend {
 public:
  explicit HookBackend(RecordingBackend& inner) : ForwardingBackend(inner), inner_(inner) {}
  std::vector<Primitive> wrapped;
  bool inner_ran_inside = true;
  void around(Primitive p, const PrimitiveCall& call) override {
    wrapped.push_back(p);
    const size_t before = inner_.seen.size();
    call();
    inner_ran_inside = inner_ran_inside && inner_.seen.size() == before + 1 && inner_.seen.back() == p;
  }

 private:
  RecordingBackend& inner_;
};

// Calls primitive `f` of `b` with value-initialised arguments (nothing reads them here) and checks
// that a result the recording backend made comes back.
template <class R, class... A>
void call_with_defaults(Backend& b, R (Backend::*f)(A...), const char* name) {
  if constexpr (std::is_same_v<R, void*>)
    EXPECT_EQ((b.*f)(std::decay_t<A>{}...), kSentinel) << name << " lost its result";
  else if constexpr (std::is_same_v<R, std::unique_ptr<HostReader>>)
    EXPECT_NE((b.*f)(std::decay_t<A>{}...), nullptr) << name << " lost its result";
  else
    (b.*f)(std::decay_t<A>{}...);
}

TEST(BackendPrimitives, TheDecoratorHookSeesEveryPrimitiveAndPassesResultsBack) {
  RecordingBackend inner;
  HookBackend hook(inner);
  std::vector<Primitive> called;
#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS) \
  called.push_back(Primitive::NAME);                       \
  call_with_defaults(hook, &Backend::NAME, #NAME);
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE
  ASSERT_EQ(called.size(), static_cast<size_t>(kPrimitiveCount));
  EXPECT_EQ(hook.wrapped, called) << "a primitive bypassed ForwardingBackend::around";
  EXPECT_EQ(inner.seen, called) << "a primitive was not forwarded to the inner backend";
  EXPECT_TRUE(hook.inner_ran_inside) << "a forwarded call ran outside its around()";
  for (int i = 0; i < kPrimitiveCount; ++i) {
    EXPECT_STRNE(primitive_name(static_cast<Primitive>(i)), "unknown");
    EXPECT_TRUE(hook.supports(static_cast<Primitive>(i))) << "supports() is not forwarded";
  }
  EXPECT_STREQ(hook.name(), "recording");
  EXPECT_STREQ(primitive_name(static_cast<Primitive>(kPrimitiveCount)), "unknown");
}

TEST(BackendPrimitives, TheCpuSupportsEveryPrimitiveAndCudaItsColumn) {
  const Backend& cpu = backend_for(Device::cpu());
  for (int i = 0; i < kPrimitiveCount; ++i)
    EXPECT_TRUE(cpu.supports(static_cast<Primitive>(i))) << primitive_name(static_cast<Primitive>(i));
  EXPECT_FALSE(cpu.supports(static_cast<Primitive>(kPrimitiveCount)));
  if (!cuda::is_compiled()) GTEST_SKIP() << "a CPU-only build: no CUDA backend to ask";
  const Backend& gpu = backend_for(Device::cuda());  // asking supports() needs no device
  for (int i = 0; i < kPrimitiveCount; ++i)
    EXPECT_EQ(gpu.supports(static_cast<Primitive>(i)), kPrimitiveOnCuda[i]) << primitive_name(static_cast<Primitive>(i));
}

// Supports a subset: memory, fill and copy, run by the CPU; every other primitive keeps Backend's
// default, which throws.
class SubsetBackend final : public Backend {
 public:
  const char* name() const override { return "subset"; }
  bool supports(Primitive p) const override {
    return p == Primitive::allocate || p == Primitive::deallocate || p == Primitive::fill || p == Primitive::copy;
  }
  void* allocate(size_t nbytes, Device device) override { return cpu_.allocate(nbytes, device); }
  void deallocate(void* ptr, size_t nbytes, Device device) override { cpu_.deallocate(ptr, nbytes, device); }
  void fill(const Tensor& out, double value) override { cpu_.fill(out, value); }
  void copy(const Tensor& dst, const Tensor& src) override { cpu_.copy(dst, src); }

 private:
  Backend& cpu_ = backend_for(Device::cpu());
};

TEST(BackendPrimitives, APrimitiveABackendLacksThrowsAnErrorNamingItAndTheBackend) {
  static SubsetBackend subset;  // outlives the tensors it allocates
  Tensor a = from_vector<float>({1, 2, 3, 4}, {2, 2}), b = from_vector<float>({1, 0, 0, 1}, {2, 2});
  Backend* previous = set_backend(DeviceType::CPU, &subset);
  Tensor z;
  EXPECT_NO_THROW(z = zeros({3})) << "a supported primitive threw";
  EXPECT_TRUE(test::throws_with([&] { (void)matmul(a, b); }, {"gemm: the subset backend does not implement", "x.cpu()"}));
  EXPECT_TRUE(test::throws_with([&] { subset.softmax(Tensor(), Tensor(), false); },
                                {"softmax", "subset", "supports(Primitive::softmax)"}));
  set_backend(DeviceType::CPU, previous);
  EXPECT_EQ(z.impl()->storage->owner, &subset);
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_FALSE(subset.supports(Primitive::gemm));
  EXPECT_TRUE(subset.supports(Primitive::fill));
}


// Every random fill names the generator that reserved its counters (RandomParams::generator), so a
// CUDA graph capture can read that generator's counter from device memory at each replay.
class RandomRecorder final : public ForwardingBackend {
 public:
  explicit RandomRecorder(Backend& inner) : ForwardingBackend(inner) {}
  void random(const Tensor& out, const RandomParams& p) override {
    fills.push_back({p.generator, p.seed, p.offset, out.numel()});
    ForwardingBackend::random(out, p);
  }
  struct Fill {
    Generator* generator;
    uint64_t seed, offset;
    int64_t numel;
  };
  std::vector<Fill> fills;
};

TEST(BackendRegistry, RandomFillsNameTheirGenerator) {
  static RandomRecorder rec(backend_for(Device::cpu()));  // outlives the tensors it allocated
  rec.fills.clear();
  Backend* previous = set_backend(DeviceType::CPU, &rec);
  Generator g(21);
  Tensor x = ones({4, 3, 2, 2});
  (void)dropout(x, 0.5, true, &g);
  (void)dropout2d(x, 0.5, true, &g);
  (void)rand({5}, DType::F32, &g);
  (void)randn({2}, DType::F32, &g);
  (void)nn::init::uniform_(empty({3}), -1.0, 1.0, &g);
  (void)dropout(x, 0.5, true);  // the default generator
  set_backend(DeviceType::CPU, previous);
  ASSERT_EQ(rec.fills.size(), 6u);
  // Counters follow each other: 48 (dropout), 12 (dropout2d's [4, 3, 1, 1] mask), 5, 2, 3.
  const uint64_t offsets[] = {0, 48, 60, 65, 67};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(rec.fills[i].generator, &g) << i;
    EXPECT_EQ(rec.fills[i].seed, 21u) << i;
    EXPECT_EQ(rec.fills[i].offset, offsets[i]) << i;
  }
  EXPECT_EQ(g.offset(), 70u);
  EXPECT_EQ(rec.fills[5].generator, &default_generator());
}

}  // namespace
}  // namespace ember
