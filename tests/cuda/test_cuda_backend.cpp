// CUDA-vs-CPU parity for every primitive of the CUDA backend, plus its allocator, transfers,
// random streams and out-of-memory path. Each test skips itself (with the reason) where no CUDA
// device is available; the availability test runs everywhere, since answering "no" quietly on
// a machine without a GPU is its point.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"
#include "ember/ember.h"
#include "test_util.h"

namespace ember {
namespace {

#define EMBER_SKIP_WITHOUT_CUDA()                 \
  if (!ember::cuda::is_available()) GTEST_SKIP() \
      << "no CUDA device: ember::cuda::is_available() is false on this machine (no GPU or no driver)"

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// libember is built with hidden visibility, so cpu_backend()/cuda_backend() cannot be called from
// here; but a tensor's Storage records the backend that allocated it, and calling a backend's
// virtual functions needs no exported symbol.
Backend& cpu() {
  static Backend* b = empty({1}).impl()->storage->owner;
  return *b;
}
Backend& gpu() {
  static Backend* b = empty({1}, Device::cuda()).impl()->storage->owner;
  return *b;
}
Backend& backend(Device d) { return d.is_cpu() ? cpu() : gpu(); }

const Device kCpu = Device::cpu();
const Device kCuda = Device::cuda();

// Uniform values in [lo, hi) (integers for integer dtypes, coin flips for bool), made on the CPU.
Tensor host_random(const Shape& shape, DType dt, uint64_t seed, double lo = -3.0, double hi = 3.0) {
  Tensor t = empty(shape, TensorOptions(dt));
  RandomParams p;
  p.seed = seed;
  if (dt == DType::Bool) {
    p.kind = RandomKind::Bernoulli;
    p.a = 0.5;
  } else {
    p.kind = is_floating(dt) ? RandomKind::Uniform : RandomKind::Int;
    p.a = lo;
    p.b = hi;
  }
  cpu().random(t, p);
  return t;
}

// An output filled with NaN (77 for integer dtypes, true for bool) so an element a kernel forgets
// to write fails the comparison.
Tensor poisoned(const Shape& shape, DType dt, Device d) {
  return full(shape, is_floating(dt) ? kNaN : 77.0, TensorOptions(dt, d));
}

// A copy of a host tensor on `d` (a new buffer even on the CPU, so in-place primitives on one
// device never touch the other's input).
Tensor on(const Tensor& host, Device d) {
  Tensor t = empty(host.shape(), TensorOptions(host.dtype(), d));
  t.copy_(host);
  return t;
}

// The parity tolerance of the kernels that are not compared bit for bit (all but the optimizer
// and data kernels, which are: see tests/optim and tests/data). Both sides compute f32 in float
// (elementwise_math.h's float overloads), but nvcc contracts multiply-adds in these kernels, CUDA's
// float functions (expf, tanhf, erff, ...) are within 2 ulp of glibc's, and reductions sum in a
// different order: a few ulp per op, which 1e-4 absolute plus relative covers.
double tol_for(DType dt) {
  switch (dt) {
    case DType::F32: return 1e-4;
    case DType::F64: return 1e-10;
    default: return 0.0;
  }
}

// |got - want| <= atol + rtol |want| elementwise; NaN matches NaN and an infinity matches itself.
void expect_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  int reported = 0;
  int64_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool ok = (std::isnan(g[i]) && std::isnan(w[i])) || g[i] == w[i] ||
                    std::abs(g[i] - w[i]) <= atol + rtol * std::abs(w[i]);
    if (!ok) {
      ++bad;
      if (reported++ < 5) ADD_FAILURE() << what << ": element " << i << " is " << g[i] << " on CUDA, " << w[i] << " on the CPU";
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " elements differ";
}

void expect_close(const Tensor& got, const Tensor& want, DType dt, const std::string& what) {
  expect_close(got, want, tol_for(dt), tol_for(dt), what);
}

const DType kAllDtypes[] = {DType::F32, DType::F64, DType::I64, DType::I32, DType::U8, DType::Bool};

// ---- runtime ----

TEST(CudaRuntime, AvailabilityIsQuietAndConsistent) {
  // A CPU-only build (EMBER_CUDA=OFF, as CI's sanitizer build) answers false/0 by construction;
  // tests/core covers that case.
  if (!cuda::is_compiled()) GTEST_SKIP() << "built without the CUDA backend (EMBER_CUDA=OFF)";
  testing::internal::CaptureStderr();
  const bool available = cuda::is_available();
  const int count = cuda::device_count();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(cuda::is_compiled());
  EXPECT_EQ(available, count > 0);
  EXPECT_EQ(err, "") << "is_available() must not print";
  EXPECT_FALSE(cuda::allow_tf32()) << "TF32 must be off by default";
  if (!available) {
    // Without a device every CUDA request fails with an ember::Error that says what to do.
    try {
      empty({4}, TensorOptions(DType::F32, kCuda));
      ADD_FAILURE() << "allocating on cuda:0 without a device must throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is_available"), std::string::npos) << e.what();
    }
    EXPECT_EQ(cuda::memory_stats().allocated, 0u);
    EXPECT_NO_THROW(cuda::synchronize());
    EXPECT_NO_THROW(cuda::empty_cache());
  }
}

TEST(CudaRuntime, BadDeviceIndexIsAnError) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int n = cuda::device_count();
  try {
    empty({4}, TensorOptions(DType::F32, Device::cuda(n)));
    ADD_FAILURE() << "allocating on a device that does not exist must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

// ---- memory ----

TEST(CudaMemory, StatsRiseAndFall) {
  EMBER_SKIP_WITHOUT_CUDA();
  cuda::synchronize();
  const cuda::MemoryStats before = cuda::memory_stats();
  constexpr size_t kBytes = size_t(4) << 20;
  {
    Tensor t = empty({int64_t(kBytes / 4)}, TensorOptions(DType::F32, kCuda));
    const cuda::MemoryStats during = cuda::memory_stats();
    EXPECT_EQ(during.allocated, before.allocated + kBytes);
    EXPECT_GE(during.peak_allocated, during.allocated);
    EXPECT_GE(during.reserved, during.allocated);
    Tensor empty_tensor = empty({0}, TensorOptions(DType::F32, kCuda));  // zero bytes: no allocation
    EXPECT_EQ(cuda::memory_stats().allocated, during.allocated);
  }
  const cuda::MemoryStats after = cuda::memory_stats();
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_GE(after.peak_allocated, before.allocated + kBytes);
  cuda::reset_peak_memory_stats();
  EXPECT_EQ(cuda::memory_stats().peak_allocated, after.allocated);
}

TEST(CudaMemory, EmptyCacheReturnsCachedBlocks) {
  EMBER_SKIP_WITHOUT_CUDA();
  { Tensor t = full({int64_t(64) << 20}, 1.0, TensorOptions(DType::F32, kCuda)); }  // 256 MiB, then freed
  cuda::synchronize();
  const size_t cached = cuda::memory_stats().reserved;
  EXPECT_GE(cached, size_t(256) << 20) << "freed blocks stay cached in the pool";
  cuda::empty_cache();
  const cuda::MemoryStats after = cuda::memory_stats();
  EXPECT_LT(after.reserved, cached);
  EXPECT_GE(after.reserved, after.allocated);
}

TEST(CudaMemory, OutOfMemoryIsReportedAndRecoverable) {
  EMBER_SKIP_WITHOUT_CUDA();
  const cuda::MemoryStats before = cuda::memory_stats();
  const int64_t elements = int64_t(1) << 48;  // 1 PiB of f32
  try {
    empty({elements}, TensorOptions(DType::F32, kCuda));
    ADD_FAILURE() << "a 1 PiB allocation must fail";
  } catch (const OutOfMemory& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("1125899906842624"), std::string::npos) << msg;  // the request in bytes
    EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("free"), std::string::npos) << msg;
    EXPECT_NE(msg.find("reserved"), std::string::npos) << msg;
    EXPECT_NE(msg.find("empty_cache"), std::string::npos) << msg;
    EXPECT_NE(msg.find("exceeds the device's total memory"), std::string::npos) << msg;
  }
  EXPECT_EQ(cuda::memory_stats().allocated, before.allocated);
  EXPECT_EQ(cuda::memory_stats().num_alloc_retries, before.num_alloc_retries);
  // The process keeps working: allocate, run a kernel, read back.
  Tensor t = full({1000}, 2.5, TensorOptions(DType::F32, kCuda));
  const std::vector<float> v = t.to_vector<float>();
  EXPECT_EQ(v.front(), 2.5f);
  EXPECT_EQ(v.back(), 2.5f);
}

// The device's total bytes, from the OutOfMemory message of a request no device can satisfy (0 when
// the message does not say it: the caller's ASSERT_GT fails).
size_t device_total_bytes_from_oom() {
  try {
    empty({int64_t(1) << 48}, TensorOptions(DType::F32, kCuda));
  } catch (const OutOfMemory& e) {
    const std::string msg = e.what();
    const size_t at = msg.find(" in total (");
    EXPECT_NE(at, std::string::npos) << msg;
    if (at != std::string::npos) return std::stoull(msg.substr(at + 11));
  }
  return 0;
}

// Provokes a real allocation failure (the whole device's memory, which the context's own use
// makes impossible): the allocator releases its cache, retries once and throws. The failing CUDA
// call is reported by compute-sanitizer as an API error, so this test is deliberately not named
// Cuda* (the memcheck filter); it runs in the normal suite.
TEST(DeviceMemory, AllocationFailureReleasesCacheRetriesAndThrows) {
  EMBER_SKIP_WITHOUT_CUDA();
  { Tensor warm = full({1 << 20}, 1.0, TensorOptions(DType::F32, kCuda)); }
  const cuda::MemoryStats before = cuda::memory_stats();
  const size_t total_bytes = device_total_bytes_from_oom();
  ASSERT_GT(total_bytes, 0u);
  try {
    empty({int64_t(total_bytes)}, TensorOptions(DType::U8, kCuda));
    ADD_FAILURE() << "allocating the device's entire memory must fail";
  } catch (const OutOfMemory& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::to_string(total_bytes) + " bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("retrying once"), std::string::npos) << msg;
  }
  const cuda::MemoryStats after = cuda::memory_stats();
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_EQ(after.num_alloc_retries, before.num_alloc_retries);
  EXPECT_LE(after.reserved, before.reserved) << "the failed attempt released the cache";
  Tensor t = full({1000}, 4.0, TensorOptions(DType::F32, kCuda));
  EXPECT_EQ(t.to_vector<float>()[999], 4.0f);
}

// The retry after a failed allocation synchronises the device (so queued frees return to the pool
// before it is trimmed): a host wait like any other, which sync debug mode sees. Not Cuda*: the
// failing allocation is an API error under compute-sanitizer.
TEST(DeviceMemory, AllocationRetryIsAHostWaitForSyncDebugMode) {
  EMBER_SKIP_WITHOUT_CUDA();
  const size_t total_bytes = device_total_bytes_from_oom();
  ASSERT_GT(total_bytes, 0u);
  const cuda::TransferStats before = cuda::transfer_stats();
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
  const bool refused = static_cast<bool>(test::throws_with(
      [&] { empty({int64_t(total_bytes)}, TensorOptions(DType::U8, kCuda)); },
      {"an allocation retrying after releasing the memory pool's cache", "makes the host wait"}));
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
  EXPECT_TRUE(refused);
  EXPECT_EQ(cuda::transfer_stats().synchronizations, before.synchronizations);
  // Without the debug mode the retry runs, is counted, and the request still fails as OutOfMemory.
  EXPECT_THROW(empty({int64_t(total_bytes)}, TensorOptions(DType::U8, kCuda)), OutOfMemory);
  EXPECT_EQ(cuda::transfer_stats().synchronizations, before.synchronizations + 1);
}

// ---- transfers, fill, copy ----

TEST(CudaBackend, TransferRoundTripsEveryDtype) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllDtypes) {
    const Tensor host = host_random({3, 5, 7}, dt, 11, -50, 50);
    const Tensor back = host.cuda().cpu();
    expect_close(back, host, 0.0, 0.0, std::string("round trip ") + dtype_name(dt));
  }
  // Larger than the 32 MiB staging chunk: the host->device copy goes through both staging slots.
  const Tensor big = host_random({int64_t(20) << 20}, DType::F32, 12);
  const Tensor big_gpu = big.cuda();
  expect_close(big_gpu.cpu(), big, 0.0, 0.0, "80 MiB round trip");
  // A non-contiguous source, through copy_.
  const Tensor src = host_random({40, 30}, DType::F64, 13);
  Tensor dst = poisoned({30, 40}, DType::F64, kCuda);
  dst.copy_(src.t());
  expect_close(dst.cpu(), src.t().contiguous(), 0.0, 0.0, "copy_ of a transposed host tensor");
  if (cuda::device_count() >= 2) {
    const Tensor peer = big_gpu.to(Device::cuda(1));
    expect_close(peer.cpu(), big, 0.0, 0.0, "cuda:0 -> cuda:1");
  }
}

TEST(CudaBackend, FillMatchesCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllDtypes) {
    for (double value : {0.0, 3.75, -0.0}) {
      if (dt == DType::U8 && value < 0) continue;
      const Tensor want = full({13, 17}, value, TensorOptions(dt));
      expect_close(full({13, 17}, value, TensorOptions(dt, kCuda)), want, 0.0, 0.0,
                   std::string("fill ") + dtype_name(dt));
    }
    // A strided view: every other column of a poisoned buffer; the rest must stay as it was.
    Tensor c = poisoned({9, 10}, dt, kCpu), g = poisoned({9, 10}, dt, kCuda);
    cpu().fill(c.slice(1, 0, 10, 2), 1.0);
    gpu().fill(g.slice(1, 0, 10, 2), 1.0);
    expect_close(g, c, 0.0, 0.0, std::string("strided fill ") + dtype_name(dt));
  }
}

TEST(CudaBackend, CopyCastsBetweenEveryDtypePair) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType from : kAllDtypes) {
    // Values every dtype can hold, so no conversion is out of range.
    const Tensor host = host_random({24, 18}, from, 21, 0.0, 100.0);
    for (DType to : kAllDtypes) {
      const std::string what = std::string("copy ") + dtype_name(from) + " -> " + dtype_name(to);
      for (int layout = 0; layout < 3; ++layout) {
        // 0: contiguous; 1: transposed source; 2: a strided destination slice.
        const Tensor sc = on(host, kCpu), sg = on(host, kCuda);
        Tensor dc, dg;
        if (layout == 2) {
          dc = poisoned({24, 36}, to, kCpu);
          dg = poisoned({24, 36}, to, kCuda);
          cpu().copy(dc.slice(1, 1, 36, 2), sc);
          gpu().copy(dg.slice(1, 1, 36, 2), sg);
        } else {
          const Tensor vc = layout == 1 ? sc.t() : sc, vg = layout == 1 ? sg.t() : sg;
          dc = poisoned(vc.shape(), to, kCpu);
          dg = poisoned(vg.shape(), to, kCuda);
          cpu().copy(dc, vc);
          gpu().copy(dg, vg);
        }
        expect_close(dg, dc, 0.0, 0.0, what + " layout " + std::to_string(layout));
      }
    }
  }
}

TEST(CudaBackend, CopyHandlesManyDimsAndOverlap) {
  EMBER_SKIP_WITHOUT_CUDA();
  // Ten dims with reversed strides cannot be coalesced below the kernel's 8.
  const Tensor host = host_random(Shape(10, 2), DType::F32, 31);
  std::vector<int64_t> rev(10);
  for (int i = 0; i < 10; ++i) rev[i] = 9 - i;
  const Tensor want = host.permute(rev).contiguous();
  const Tensor g = on(host, kCuda).permute(rev);
  Tensor out = poisoned(g.shape(), DType::F32, kCuda);
  gpu().copy(out, g);
  expect_close(out, want, 0.0, 0.0, "10-D permuted copy");
  // A shift within one buffer behaves like memmove.
  Tensor c = on(host_random({100}, DType::I64, 32, 0, 1000), kCpu), d = on(c, kCuda);
  c.narrow(0, 1, 99).copy_(c.narrow(0, 0, 99));
  d.narrow(0, 1, 99).copy_(d.narrow(0, 0, 99));
  expect_close(d, c, 0.0, 0.0, "overlapping copy");
}

// ---- random ----

TEST(CudaBackend, RandomStreamsEqualTheCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::F64}) {
    Generator gc(1234), gg(1234);
    gc.set_state(1234, 777);
    gg.set_state(1234, 777);
    for (int round = 0; round < 2; ++round) {  // the second round continues from the advanced offset
      expect_close(rand({1001}, TensorOptions(dt, kCuda), &gg), rand({1001}, TensorOptions(dt), &gc), 0.0, 0.0,
                   std::string("rand ") + dtype_name(dt));
      // Box-Muller goes through log/cos, whose last bits differ between libm and CUDA.
      expect_close(randn({1001}, TensorOptions(dt, kCuda), &gg), randn({1001}, TensorOptions(dt), &gc), 1e-6,
                   dt == DType::F32 ? 1e-6 : 1e-12, std::string("randn ") + dtype_name(dt));
    }
    EXPECT_EQ(gc.offset(), gg.offset());
  }
  for (DType dt : {DType::I64, DType::I32, DType::U8, DType::F32}) {
    Generator gc(99), gg(99);
    expect_close(randint(-3, 250, {4097}, TensorOptions(dt, kCuda), &gg),
                 randint(-3, 250, {4097}, TensorOptions(dt), &gc), 0.0, 0.0,
                 std::string("randint ") + dtype_name(dt));
  }
  for (RandomKind kind : {RandomKind::Bernoulli, RandomKind::Uniform}) {
    const RandomParams p{kind, kind == RandomKind::Bernoulli ? 0.3 : -2.0, 5.0, 42, 1u << 20};
    Tensor c = poisoned({3000}, DType::F64, kCpu), g = poisoned({3000}, DType::F64, kCuda);
    cpu().random(c, p);
    gpu().random(g, p);
    expect_close(g, c, 0.0, 0.0, "random with a large offset");
  }
}

// ---- elementwise ----

struct UnaryCase {
  UnaryOp op;
  const char* name;
  ElementwiseParams p;
};

// Every listed op (unary_ops.def), with the scalars of those that read them.
ElementwiseParams unary_params(UnaryOp op) {
  switch (op) {
    case UnaryOp::AddScalar: return {1.25, 0};
    case UnaryOp::MulScalar: return {-0.5, 0};
    case UnaryOp::RSubScalar: return {2.0, 0};
    case UnaryOp::RDivScalar: return {3.0, 0};
    case UnaryOp::PowScalar: return {2.5, 0};
    case UnaryOp::RPowScalar: return {1.7, 0};
    case UnaryOp::Clamp: return {-0.5, 0.7};
    case UnaryOp::LeakyRelu: return {0.1, 0};
    default: return {};
  }
}

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = [] {
    std::vector<UnaryCase> c;
    for (int i = 0; i < kUnaryOpCount; ++i) {
      const auto op = static_cast<UnaryOp>(i);
      c.push_back({op, op_name(op), unary_params(op)});
    }
    return c;
  }();
  return cases;
}

// Runs a unary op on both backends over a contiguous input (odd size: the vector path's tail), a
// transposed one and a broadcast one, and compares.
void check_unary(const UnaryCase& c, const Tensor& host) {
  const DType out_dt = c.op == UnaryOp::IsFinite ? DType::Bool : host.dtype();
  const std::string what = std::string(c.name) + " " + dtype_name(host.dtype());
  const std::function<Tensor(const Tensor&)> views[] = {
      [](const Tensor& t) { return t; },
      [](const Tensor& t) { return t.t(); },
      [](const Tensor& t) { return t.narrow(0, 0, 1).expand({t.size(0), t.size(1)}); },
  };
  for (int v = 0; v < 3; ++v) {
    const Tensor xc = views[v](on(host, kCpu)), xg = views[v](on(host, kCuda));
    Tensor oc = poisoned(xc.shape(), out_dt, kCpu), og = poisoned(xg.shape(), out_dt, kCuda);
    cpu().unary(c.op, oc, xc, c.p);
    gpu().unary(c.op, og, xg, c.p);
    expect_close(og, oc, out_dt, what + " view " + std::to_string(v));
  }
}

TEST(CudaBackend, UnaryMatchesCpuForEveryOp) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = host_random({37, 29}, dt, 41);
    // Specials where they matter: zero, infinities and NaN.
    Tensor specials = from_vector<double>({0.0, -0.0, kInf, -kInf, kNaN, 1e-30, -1e30, 88.0, -88.0, 700.0}, {2, 5})
                          .to(dt);
    for (const UnaryCase& c : unary_cases()) {
      SCOPED_TRACE(c.name);
      check_unary(c, x);
      check_unary(c, specials);
    }
  }
  // Integer and bool inputs compute in double and convert back; only ops whose results stay in
  // range are compared (an out-of-range float-to-integer conversion is undefined in C++).
  const std::vector<UnaryOp> int_ops = {UnaryOp::AddScalar, UnaryOp::MulScalar, UnaryOp::Abs,   UnaryOp::Sign,
                                        UnaryOp::Square,    UnaryOp::Clamp,     UnaryOp::Relu,  UnaryOp::Exp,
                                        UnaryOp::Sigmoid,   UnaryOp::Sqrt,      UnaryOp::IsFinite};
  for (DType dt : {DType::I64, DType::I32, DType::U8, DType::Bool}) {
    const Tensor x = host_random({37, 29}, dt, 42, 0, 6);
    for (const UnaryCase& c : unary_cases()) {
      if (std::find(int_ops.begin(), int_ops.end(), c.op) == int_ops.end()) continue;
      SCOPED_TRACE(c.name);
      UnaryCase positive = c;
      if (c.op == UnaryOp::MulScalar) positive.p.alpha = 2.5;
      check_unary(positive, x);
    }
    for (UnaryOp op : {UnaryOp::Neg, UnaryOp::RSubScalar, UnaryOp::LeakyRelu}) {
      if (dt == DType::U8 || dt == DType::Bool) break;  // negative results do not fit
      check_unary({op, "signed op", {1.5, 0}}, host_random({37, 29}, dt, 43, -6, 6));
    }
  }
}

struct BinaryCase {
  BinaryOp op;
  const char* name;
  ElementwiseParams p;
};

// Every listed op (binary_ops.def), with the scalars of those that read them.
const std::vector<BinaryCase>& binary_cases() {
  static const std::vector<BinaryCase> cases = [] {
    std::vector<BinaryCase> c;
    for (int i = 0; i < kBinaryOpCount; ++i) {
      const auto op = static_cast<BinaryOp>(i);
      ElementwiseParams p;
      if (op == BinaryOp::LeakyReluBackward) p = {0.2, 0};
      if (op == BinaryOp::ClampBackward) p = {-0.5, 0.7};
      c.push_back({op, op_name(op), p});
    }
    return c;
  }();
  return cases;
}

// Both operands contiguous (vectorized for f32), a transposed, b broadcast along rows (stride 0),
// and both broadcast from a scalar.
void check_binary(const BinaryCase& c, const Tensor& ha, const Tensor& hb) {
  const DType out_dt = is_comparison(c.op) ? DType::Bool : ha.dtype();
  const std::string what = std::string(c.name) + " " + dtype_name(ha.dtype());
  for (int v = 0; v < 4; ++v) {
    auto view_a = [&](const Tensor& t) {
      if (v == 1) return t.t().t();  // strides as given, exercised below through b
      if (v == 3) return t.narrow(0, 0, 1).narrow(1, 0, 1).expand(t.shape());
      return t;
    };
    auto view_b = [&](const Tensor& t) {
      if (v == 1) return t.t().contiguous().t();  // column-major
      if (v == 2) return t.narrow(0, 2, 1).expand(t.shape());
      if (v == 3) return t.narrow(0, 1, 1).narrow(1, 3, 1).expand(t.shape());
      return t;
    };
    const Tensor ac = view_a(on(ha, kCpu)), ag = view_a(on(ha, kCuda));
    const Tensor bc = view_b(on(hb, kCpu)), bg = view_b(on(hb, kCuda));
    Tensor oc = poisoned(ac.shape(), out_dt, kCpu), og = poisoned(ag.shape(), out_dt, kCuda);
    cpu().binary(c.op, oc, ac, bc, c.p);
    gpu().binary(c.op, og, ag, bg, c.p);
    expect_close(og, oc, out_dt, what + " view " + std::to_string(v));
  }
}

TEST(CudaBackend, BinaryMatchesCpuForEveryOp) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor a = host_random({33, 21}, dt, 51), b = host_random({33, 21}, dt, 52);
    // Equal elements, so the comparisons see ties.
    Tensor b_ties = on(b, kCpu);
    b_ties.narrow(0, 0, 10).copy_(a.narrow(0, 0, 10));
    for (const BinaryCase& c : binary_cases()) {
      SCOPED_TRACE(c.name);
      check_binary(c, a, is_comparison(c.op) || c.op == BinaryOp::Maximum ? b_ties : b);
    }
  }
  const std::vector<BinaryOp> int_ops = {BinaryOp::Add, BinaryOp::Mul, BinaryOp::Maximum, BinaryOp::Minimum,
                                         BinaryOp::Eq,  BinaryOp::Ne,  BinaryOp::Lt,      BinaryOp::Le,
                                         BinaryOp::Gt,  BinaryOp::Ge,  BinaryOp::ReluBackward};
  for (DType dt : {DType::I64, DType::I32, DType::U8, DType::Bool}) {
    const Tensor a = host_random({33, 21}, dt, 53, 0, 9), b = host_random({33, 21}, dt, 54, 0, 9);
    for (const BinaryCase& c : binary_cases()) {
      if (std::find(int_ops.begin(), int_ops.end(), c.op) == int_ops.end()) continue;
      SCOPED_TRACE(c.name);
      check_binary(c, a, b);
    }
    if (dt == DType::I64 || dt == DType::I32) {
      check_binary({BinaryOp::Sub, "Sub", {}}, a, b);
      check_binary({BinaryOp::Div, "Div", {}}, a, host_random({33, 21}, dt, 55, 1, 9));
    }
  }
}

TEST(CudaBackend, WhereMatchesCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (DType dt : kAllDtypes) {
    const Tensor cond = host_random({17, 31}, DType::Bool, 61);
    const Tensor a = host_random({17, 31}, dt, 62, 0, 50), b = host_random({17, 31}, dt, 63, 0, 50);
    for (bool broadcast : {false, true}) {
      auto vc = [&](const Tensor& t) { return broadcast ? t.narrow(0, 3, 1).expand({17, 31}) : t; };
      Tensor oc = poisoned({17, 31}, dt, kCpu), og = poisoned({17, 31}, dt, kCuda);
      // b column-major: every operand takes its own strides.
      cpu().where(oc, vc(on(cond, kCpu)), on(a, kCpu), on(b, kCpu).t().contiguous().t());
      gpu().where(og, vc(on(cond, kCuda)), on(a, kCuda), on(b, kCuda).t().contiguous().t());
      expect_close(og, oc, 0.0, 0.0, std::string("where ") + dtype_name(dt));
    }
  }
}

// ---- reductions ----

TEST(CudaBackend, ReduceMatchesCpuForEveryOp) {
  EMBER_SKIP_WITHOUT_CUDA();
  const ReduceOp ops[] = {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin};
  const char* names[] = {"Sum", "Mean", "Max", "Min", "ArgMax", "ArgMin"};
  // [outer, n, inner]: one long row (split across blocks), many short rows, columns, a long
  // column reduction (split), n == 1, and wide rows.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1 << 20, 1}, {300, 10, 1}, {3, 7, 50}, {2, 30000, 3}, {1000, 1, 1}, {4, 2000, 1}, {2, 100, 33}};
  for (DType dt : {DType::F32, DType::F64, DType::I32, DType::I64, DType::U8}) {
    for (const auto& s : shapes) {
      // Integer data from a small range, so argmax/argmin see ties (the first index must win).
      const Tensor x = host_random({s[0], s[1], s[2]}, dt, 71, 0, is_floating(dt) ? 100 : 7);
      for (int k = 0; k < 6; ++k) {
        if (dt == DType::U8 && ops[k] == ReduceOp::Sum && s[1] > 1) continue;  // wraps: not a meaningful check
        const bool arg = ops[k] == ReduceOp::ArgMax || ops[k] == ReduceOp::ArgMin;
        const DType out_dt = arg ? DType::I64 : dt;
        Tensor oc = poisoned({s[0], s[2]}, out_dt, kCpu), og = poisoned({s[0], s[2]}, out_dt, kCuda);
        cpu().reduce(ops[k], oc, on(x, kCpu), s[0], s[1], s[2]);
        gpu().reduce(ops[k], og, on(x, kCuda), s[0], s[1], s[2]);
        const bool sum = ops[k] == ReduceOp::Sum || ops[k] == ReduceOp::Mean;
        const double tol = sum && dt == DType::F32 ? 1e-4 : sum ? 1e-9 : 0.0;
        expect_close(og, oc, tol, tol,
                     std::string(names[k]) + " " + dtype_name(dt) + " [" + std::to_string(s[0]) + ", " +
                         std::to_string(s[1]) + ", " + std::to_string(s[2]) + "]");
      }
    }
  }
  // NaN propagates (and its first index wins) as on the CPU.
  Tensor x = host_random({4, 300, 2}, DType::F32, 72);
  Tensor xn = on(x, kCpu);
  xn.narrow(1, 120, 1).narrow(0, 1, 1).fill_(kNaN);
  xn.narrow(1, 250, 1).narrow(0, 1, 1).fill_(kNaN);
  xn.narrow(1, 0, 1).narrow(0, 3, 1).fill_(kNaN);
  for (int k = 0; k < 6; ++k) {
    const bool arg = ops[k] == ReduceOp::ArgMax || ops[k] == ReduceOp::ArgMin;
    const DType out_dt = arg ? DType::I64 : DType::F32;
    Tensor oc = poisoned({4, 2}, out_dt, kCpu), og = poisoned({4, 2}, out_dt, kCuda);
    cpu().reduce(ops[k], oc, xn, 4, 300, 2);
    gpu().reduce(ops[k], og, on(xn, kCuda), 4, 300, 2);
    expect_close(og, oc, 1e-4, 1e-4, std::string("NaN ") + names[k]);
  }
  // An empty reduced dim: the sum is 0 and the mean NaN.
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
    Tensor oc = poisoned({3, 2}, DType::F32, kCpu), og = poisoned({3, 2}, DType::F32, kCuda);
    cpu().reduce(op, oc, empty({3, 0, 2}), 3, 0, 2);
    gpu().reduce(op, og, empty({3, 0, 2}, TensorOptions(DType::F32, kCuda)), 3, 0, 2);
    expect_close(og, oc, 0.0, 0.0, "empty reduction");
  }
}

// ---- GEMM ----

struct GemmRun {
  Tensor out, bias_grad;
};

// Runs one GEMM on `d`: a and b are made from host tensors by the view functions (transposes,
// expands), out starts as `init`, and the bias (if any) as `bias_view(bias)`.
GemmRun run_gemm(Device d, const Tensor& ha, const Tensor& hb, const std::function<Tensor(const Tensor&)>& va,
                 const std::function<Tensor(const Tensor&)>& vb, const Tensor& init, GemmOptions o,
                 const Tensor& hbias = Tensor(),
                 const std::function<Tensor(const Tensor&)>& vbias = [](const Tensor& t) { return t; }) {
  const Tensor a = va(on(ha, d)), b = vb(on(hb, d));
  Tensor out = on(init, d);
  if (hbias.defined()) o.bias = vbias(on(hbias, d));
  if (o.epilogue == Epilogue::BiasGradA) o.bias_grad = poisoned({a.size(a.dim() - 2)}, init.dtype(), d);
  backend(d).gemm(out, a, b, o);
  return {out, o.bias_grad};
}

void check_gemm(const std::string& what, const Tensor& ha, const Tensor& hb,
                const std::function<Tensor(const Tensor&)>& va, const std::function<Tensor(const Tensor&)>& vb,
                const Shape& out_shape, const GemmOptions& o, const Tensor& hbias = Tensor(),
                const std::function<Tensor(const Tensor&)>& vbias = [](const Tensor& t) { return t; },
                double tol = -1) {
  const DType dt = ha.dtype();
  // beta == 0 must ignore out entirely, so it starts poisoned; otherwise with values.
  const Tensor init = o.beta == 0.0 ? poisoned(out_shape, dt, kCpu) : host_random(out_shape, dt, 99);
  const GemmRun c = run_gemm(kCpu, ha, hb, va, vb, init, o, hbias, vbias);
  const GemmRun g = run_gemm(kCuda, ha, hb, va, vb, init, o, hbias, vbias);
  const double t = tol >= 0 ? tol : tol_for(dt) * (dt == DType::F64 ? 100 : 1);
  expect_close(g.out, c.out, t, t, what);
  if (o.epilogue == Epilogue::BiasGradA) expect_close(g.bias_grad, c.bias_grad, t, t, what + " bias_grad");
}

const auto kSame = [](const Tensor& t) { return t; };
const auto kTranspose = [](const Tensor& t) { return t.transpose(-1, -2); };

TEST(CudaBackend, GemmMatchesCpuWithEveryLayoutAndEpilogue) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int64_t M = 33, N = 47, K = 65;
  for (DType dt : {DType::F32, DType::F64}) {
    const std::string type = dtype_name(dt);
    const Tensor a = host_random({M, K}, dt, 81, -1, 1), at = host_random({K, M}, dt, 82, -1, 1);
    const Tensor b = host_random({K, N}, dt, 83, -1, 1), bt = host_random({N, K}, dt, 84, -1, 1);
    const Tensor bias = host_random({N}, dt, 85, -1, 1);
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        const std::string layout = type + (ta ? " a^T" : " a") + (tb ? " b^T" : " b");
        const Tensor& ha = ta ? at : a;
        const Tensor& hb = tb ? bt : b;
        const auto va = ta ? std::function<Tensor(const Tensor&)>(kTranspose) : kSame;
        const auto vb = tb ? std::function<Tensor(const Tensor&)>(kTranspose) : kSame;
        check_gemm("plain " + layout, ha, hb, va, vb, {M, N}, {});
        check_gemm("alpha/beta " + layout, ha, hb, va, vb, {M, N}, {.alpha = 1.5, .beta = 0.5});
        for (Epilogue e : {Epilogue::Bias, Epilogue::Relu, Epilogue::BiasRelu, Epilogue::BiasGradA,
                           Epilogue::BiasReluNanToZero}) {
          GemmOptions o;
          o.epilogue = e;
          const bool with_bias = e == Epilogue::Bias || e == Epilogue::BiasRelu || e == Epilogue::BiasReluNanToZero;
          check_gemm(layout + " epilogue " + std::to_string(int(e)), ha, hb, va, vb, {M, N}, o,
                     with_bias ? bias : Tensor());
        }
      }
    }
    // The bias gradient of a linear layer's weight GEMM: dW = dY^T X, bias_grad = column sums of dY.
    GemmOptions bg;
    bg.epilogue = Epilogue::BiasGradA;
    check_gemm(type + " dW = dY^T X", host_random({128, N}, dt, 86, -1, 1), host_random({128, K}, dt, 87, -1, 1),
               kTranspose, kSame, {N, K}, bg);
    bg.alpha = 0.5;
    bg.beta = 1.0;
    check_gemm(type + " bias grad with alpha and beta", host_random({128, N}, dt, 86, -1, 1),
               host_random({128, K}, dt, 87, -1, 1), kTranspose, kSame, {N, K}, bg);
    // A bias with a non-unit stride (every other element of a longer vector), and operands at
    // offsets that break 16-byte alignment: the fallback paths.
    GemmOptions bo;
    bo.epilogue = Epilogue::BiasRelu;
    check_gemm(type + " strided bias", a, b, kSame, kSame, {M, N}, bo, host_random({2 * N}, dt, 88, -1, 1),
               [](const Tensor& t) { return t.slice(0, 0, t.size(0), 2); });
    check_gemm(type + " unaligned views", host_random({M, K + 1}, dt, 89, -1, 1), host_random({K, N + 1}, dt, 90, -1, 1),
               [&](const Tensor& t) { return t.narrow(1, 1, K); }, [&](const Tensor& t) { return t.narrow(1, 1, N); },
               {M, N}, bo, bias);
    // K == 0: out = beta * out, then the epilogue.
    check_gemm(type + " K == 0", host_random({M, 0}, dt, 91), host_random({0, N}, dt, 92), kSame, kSame, {M, N},
               {.alpha = 1.0, .beta = 0.5, .epilogue = Epilogue::Bias}, bias);
    // M == 1 and N == 1 (vector products).
    check_gemm(type + " row vector", host_random({1, K}, dt, 93, -1, 1), b, kSame, kSame, {1, N}, {});
    check_gemm(type + " column vector", a, host_random({K, 1}, dt, 94, -1, 1), kSame, kSame, {M, 1}, {});
  }
}

TEST(CudaBackend, BatchedGemmMatchesCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int64_t B = 5, M = 17, N = 23, K = 31;
  for (DType dt : {DType::F32, DType::F64}) {
    const std::string type = dtype_name(dt);
    const Tensor a3 = host_random({B, M, K}, dt, 101, -1, 1), b3 = host_random({B, K, N}, dt, 102, -1, 1);
    const Tensor a2 = host_random({M, K}, dt, 103, -1, 1), b2 = host_random({K, N}, dt, 104, -1, 1);
    const Tensor bias = host_random({N}, dt, 105, -1, 1);
    check_gemm(type + " batched", a3, b3, kSame, kSame, {B, M, N}, {});
    check_gemm(type + " batched transposed", host_random({B, K, M}, dt, 106, -1, 1),
               host_random({B, N, K}, dt, 107, -1, 1), kTranspose, kTranspose, {B, M, N}, {.alpha = 2.0, .beta = 0.0});
    // Shared operands (batch stride 0): b shared (one collapsed GEMM), a shared (strided batched).
    const auto expand_b = [&](const Tensor& t) { return t.unsqueeze(0).expand({B, K, N}); };
    const auto expand_a = [&](const Tensor& t) { return t.unsqueeze(0).expand({B, M, K}); };
    check_gemm(type + " shared b", a3, b2, kSame, expand_b, {B, M, N}, {});
    check_gemm(type + " shared a", a2, b3, expand_a, kSame, {B, M, N}, {.alpha = 1.0, .beta = 0.25});
    check_gemm(type + " shared b^T", a3, host_random({N, K}, dt, 108, -1, 1), kSame,
               [&](const Tensor& t) { return t.t().unsqueeze(0).expand({B, K, N}); }, {B, M, N}, {});
    // Epilogues over every row of every batch (fused when b is shared, separate kernels otherwise).
    for (Epilogue e : {Epilogue::Bias, Epilogue::Relu, Epilogue::BiasRelu}) {
      GemmOptions o;
      o.epilogue = e;
      const Tensor hb = e == Epilogue::Relu ? Tensor() : bias;
      check_gemm(type + " batched epilogue " + std::to_string(int(e)), a3, b3, kSame, kSame, {B, M, N}, o, hb);
      check_gemm(type + " shared-b epilogue " + std::to_string(int(e)), a3, b2, kSame, expand_b, {B, M, N}, o, hb);
    }
  }
}

TEST(CudaBackend, GemmWithTf32StaysClose) {
  EMBER_SKIP_WITHOUT_CUDA();
  cuda::set_allow_tf32(true);
  EXPECT_TRUE(cuda::allow_tf32());
  // TF32 keeps 10 mantissa bits: about 1e-3 relative per product, averaging out over K.
  check_gemm("tf32", host_random({64, 128}, DType::F32, 111, -1, 1), host_random({128, 96}, DType::F32, 112, -1, 1),
             kSame, kSame, {64, 96}, {}, Tensor(), kSame, 2e-2);
  cuda::set_allow_tf32(false);
  EXPECT_FALSE(cuda::allow_tf32());
}

// ---- softmax and cross-entropy ----

TEST(CudaBackend, SoftmaxForwardAndBackwardMatchCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  // A warp per row (10 and 1000 columns) and a block per row (3000 columns).
  const std::vector<std::array<int64_t, 2>> shapes = {{64, 10}, {7, 1000}, {5, 3000}, {1, 1}};
  for (DType dt : {DType::F32, DType::F64}) {
    for (const auto& s : shapes) {
      for (bool log : {false, true}) {
        const std::string what = std::string(log ? "log_softmax " : "softmax ") + dtype_name(dt) + " [" +
                                 std::to_string(s[0]) + ", " + std::to_string(s[1]) + "]";
        const Tensor x = host_random({s[0], s[1]}, dt, 121, -8, 8);
        Tensor yc = poisoned({s[0], s[1]}, dt, kCpu), yg = poisoned({s[0], s[1]}, dt, kCuda);
        cpu().softmax(yc, x, log);
        gpu().softmax(yg, on(x, kCuda), log);
        expect_close(yg, yc, dt, what);
        const Tensor g = host_random({s[0], s[1]}, dt, 122);
        Tensor gc = poisoned({s[0], s[1]}, dt, kCpu), gg = poisoned({s[0], s[1]}, dt, kCuda);
        cpu().softmax_backward(gc, g, yc, log);
        gpu().softmax_backward(gg, on(g, kCuda), on(yc, kCuda), log);
        expect_close(gg, gc, dt, what + " backward");
      }
    }
  }
}

TEST(CudaBackend, CrossEntropyForwardAndBackwardMatchCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  const std::vector<std::array<int64_t, 2>> shapes = {{64, 10}, {9, 2000}};
  for (DType dt : {DType::F32, DType::F64}) {
    for (const auto& s : shapes) {
      const int64_t N = s[0], C = s[1];
      const Tensor logits = host_random({N, C}, dt, 131, -6, 6);
      Tensor labels = host_random({N}, DType::I64, 132, 0, static_cast<double>(C));
      labels.narrow(0, 2, 1).fill_(-100);  // ignored rows
      labels.narrow(0, 5, 1).fill_(-100);
      const Tensor grad_loss = host_random({N}, dt, 133, 0.1, 2);
      for (double smoothing : {0.0, 0.1}) {
        const std::string what = std::string("cross_entropy ") + dtype_name(dt) + " C=" + std::to_string(C) +
                                 " smoothing " + std::to_string(smoothing);
        const CrossEntropyOptions o{-100, smoothing};
        Tensor lc = poisoned({N}, dt, kCpu), sc = poisoned({N}, dt, kCpu);
        Tensor lg = poisoned({N}, dt, kCuda), sg = poisoned({N}, dt, kCuda);
        cpu().cross_entropy_forward(lc, sc, logits, labels, o);
        gpu().cross_entropy_forward(lg, sg, on(logits, kCuda), on(labels, kCuda), o);
        expect_close(lg, lc, dt, what + " loss");
        expect_close(sg, sc, dt, what + " lse");
        Tensor gc = poisoned({N, C}, dt, kCpu), gg = poisoned({N, C}, dt, kCuda);
        cpu().cross_entropy_backward(gc, grad_loss, logits, sc, labels, o);
        gpu().cross_entropy_backward(gg, on(grad_loss, kCuda), on(logits, kCuda), on(sc, kCuda), on(labels, kCuda), o);
        expect_close(gg, gc, dt, what + " backward");
      }
    }
  }
}

TEST(CudaBackend, CrossEntropyInvalidLabelGivesNaNOnTheGpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  // The CPU throws for a label outside [0, C); a kernel cannot, so the GPU writes NaN into that
  // row's loss (and only that row's), which poisons the mean.
  const Tensor logits = host_random({4, 5}, DType::F32, 141);
  const Tensor labels = from_vector<int64_t>({1, 7, -100, 0}, {4});
  Tensor lc = poisoned({4}, DType::F32, kCpu), sc = poisoned({4}, DType::F32, kCpu);
  EXPECT_THROW(cpu().cross_entropy_forward(lc, sc, logits, labels, {}), Error);
  Tensor lg = poisoned({4}, DType::F32, kCuda), sg = poisoned({4}, DType::F32, kCuda);
  gpu().cross_entropy_forward(lg, sg, on(logits, kCuda), on(labels, kCuda), {});
  const std::vector<float> loss = lg.to_vector<float>();
  EXPECT_FALSE(std::isnan(loss[0]));
  EXPECT_TRUE(std::isnan(loss[1]));
  EXPECT_EQ(loss[2], 0.0f);
  EXPECT_FALSE(std::isnan(loss[3]));
  for (float v : sg.to_vector<float>()) EXPECT_TRUE(std::isfinite(v));
}

// ---- index_select / index_add ----

TEST(CudaBackend, IndexSelectAndIndexAddMatchCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  const Tensor index = from_vector<int64_t>({3, 0, 9, 3, 3, 7}, {6});  // duplicates accumulate in index_add
  // inner 7 (scalar moves), 16 f32 (16-byte vector moves), 1 (a gather of single elements).
  for (int64_t inner : {7, 16, 1}) {
    const int64_t outer = 3, n = 10, k = index.numel();
    for (DType dt : kAllDtypes) {
      const std::string what = std::string(dtype_name(dt)) + " inner " + std::to_string(inner);
      const Tensor in = host_random({outer, n, inner}, dt, 151, 0, 20);
      Tensor oc = poisoned({outer, k, inner}, dt, kCpu), og = poisoned({outer, k, inner}, dt, kCuda);
      cpu().index_select(oc, in, index, outer, n, inner);
      gpu().index_select(og, on(in, kCuda), on(index, kCuda), outer, n, inner);
      expect_close(og, oc, 0.0, 0.0, "index_select " + what);

      if (dt == DType::U8 || dt == DType::Bool) continue;  // no index_add (IndexAddRejectsByteDtypes)
      const Tensor src = host_random({outer, k, inner}, dt, 152, 0, 20);
      Tensor ac = on(in, kCpu), ag = on(in, kCuda);
      cpu().index_add(ac, src, index, outer, n, inner);
      gpu().index_add(ag, on(src, kCuda), on(index, kCuda), outer, n, inner);
      expect_close(ag, ac, dt, "index_add " + what);
    }
  }
}


// U8 and Bool index_add are rejected on every backend (backend.h): the 4-byte compare-and-swap a
// byte add would need reaches past the end of the allocation.
TEST(CudaBackend, IndexAddRejectsByteDtypes) {
  EMBER_SKIP_WITHOUT_CUDA();
  const Tensor index = on(from_vector<int64_t>({0, 2}), kCuda);
  for (DType dt : {DType::U8, DType::Bool}) {
    Tensor out = zeros({3}, TensorOptions(dt, kCuda)), src = zeros({2}, TensorOptions(dt, kCuda));
    EXPECT_THROW(gpu().index_add(out, src, index, 1, 3, 1), Error) << dtype_name(dt);
  }
}

// ---- fixes from the review before the first GPU run (issue 9) ----

// Host-to-device copies back to back reuse the two staging slots, so the third chunk finds its
// slot's event still pending (cudaErrorNotReady): that must not be left as the runtime's last
// error, which the next kernel launch's check would report as its own failure.
TEST(CudaRuntime, BackToBackUploadsLeaveNoErrorForTheNextLaunch) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int64_t n = int64_t(24) << 20;  // 96 MiB of f32: three 32 MiB staging chunks per upload
  const Tensor host = full({n}, 1.5);
  Tensor a = host.to(kCuda);
  Tensor b = host.to(kCuda);
  Tensor c;
  EXPECT_NO_THROW(c = add(a, b));  // a launch, checked with cudaGetLastError
  EXPECT_EQ(c.narrow(0, n - 1, 1).item<float>(), 3.0f);
}

// Logits near 1e4 in f32: (x - m) - log(sum) (math::log_softmax_element) keeps the outputs
// within 1e-5 of the CPU; x - (m + log(sum)) was off by up to 5e-4. The outputs are O(1), x - m is
// exact and the GPU's float sum of exps differs from the CPU's double sum by about 1e-7 relative,
// hence the absolute 1e-5.
TEST(CudaBackend, LogSoftmaxAtLargeLogitsMatchesCpu) {
  EMBER_SKIP_WITHOUT_CUDA();
  for (int64_t cols : {10, 3000}) {  // a warp per row, and a block per row
    const Tensor x = add(host_random({16, cols}, DType::F32, 131, -4, 4), 1e4);
    Tensor yc = poisoned({16, cols}, DType::F32, kCpu), yg = poisoned({16, cols}, DType::F32, kCuda);
    cpu().softmax(yc, x, true);
    gpu().softmax(yg, on(x, kCuda), true);
    expect_close(yg, yc, 1e-5, 0.0, "log_softmax near 1e4, " + std::to_string(cols) + " columns");
  }
}

// The operands of the NaN epilogue tests: a [8, 32] with one NaN (row 3), b [32, 16], and a bias of
// 2 * 16 values (read packed, or with stride 2 for the unfused fallback).
struct NanGemmOperands {
  Tensor a, b, bias;
};
NanGemmOperands nan_gemm_operands() {
  const int64_t M = 8, N = 16, K = 32;
  Tensor a = host_random({M, K}, DType::F32, 95, -1, 1);
  a.narrow(0, 3, 1).narrow(1, 5, 1).fill_(kNaN);
  return {a, host_random({K, N}, DType::F32, 96, -1, 1), host_random({2 * N}, DType::F32, 97, -1, 1)};
}

// A NaN in the product stays NaN through the ReLU epilogues on every path (the cuBLASLt epilogue
// would make it 0): fused bias + kernel ReLU, the unfused fallback (strided bias), and plain ReLU.
// BiasReluNanToZero on CUDA: cuBLASLt's RELU_BIAS epilogue (packed bias) and the unfused fallback
// (strided bias) both give 0 where the product is NaN, and otherwise the CPU's values (f32 tolerance:
// the fused bias is added to the f32 accumulator before its one rounding).
TEST(CudaBackend, GemmBiasReluNanToZeroFusedAndFallbackMapNaNToZero) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int64_t M = 8, N = 16;
  const auto [a, b, bias] = nan_gemm_operands();
  for (bool strided_bias : {false, true}) {
    GemmOptions oc, og;
    oc.epilogue = og.epilogue = Epilogue::BiasReluNanToZero;
    oc.bias = strided_bias ? bias.slice(0, 0, 2 * N, 2) : bias.narrow(0, 0, N);
    og.bias = strided_bias ? on(bias, kCuda).slice(0, 0, 2 * N, 2) : on(bias, kCuda).narrow(0, 0, N);
    Tensor outc = poisoned({M, N}, DType::F32, kCpu), outg = poisoned({M, N}, DType::F32, kCuda);
    cpu().gemm(outc, a, b, oc);
    gpu().gemm(outg, on(a, kCuda), on(b, kCuda), og);
    const std::string what = strided_bias ? "strided bias (fallback)" : "packed bias (RELU_BIAS)";
    const std::vector<float> v = outg.to_vector<float>();
    for (int64_t j = 0; j < N; ++j) EXPECT_EQ(v[3 * N + j], 0.0f) << what << " column " << j;
    expect_close(outg, outc, DType::F32, what);
  }
}

// The fused op on CUDA against its unfused composition on CUDA, forward and gradients, at the MLP's
// layer size (batch 64, 784 -> 500), f32 tolerance (rtol 1.3e-6 scaled as Tol::for_dtype, plus the
// one extra rounding of the unfused bias addition).
TEST(CudaBackend, FusedLinearReluMatchesItsComposition) {
  EMBER_SKIP_WITHOUT_CUDA();
  const Tensor x0 = on(host_random({64, 784}, DType::F32, 41, -1, 1), kCuda);
  const Tensor w0 = on(host_random({500, 784}, DType::F32, 42, -0.05, 0.05), kCuda);
  const Tensor b0 = on(host_random({500}, DType::F32, 43, -0.1, 0.1), kCuda);
  const Tensor dy = on(host_random({64, 500}, DType::F32, 44, -1, 1), kCuda);
  Tensor x1 = x0.clone().requires_grad_(), w1 = w0.clone().requires_grad_(), b1 = b0.clone().requires_grad_();
  Tensor x2 = x0.clone().requires_grad_(), w2 = w0.clone().requires_grad_(), b2 = b0.clone().requires_grad_();
  Tensor fused = fused_linear_relu(x1, w1, b1);
  Tensor composed = relu(linear(x2, w2, b2));
  expect_close(fused, composed, DType::F32, "forward");
  sum(mul(fused, dy)).backward();
  sum(mul(composed, dy)).backward();
  expect_close(x1.grad(), x2.grad(), DType::F32, "dx");
  expect_close(w1.grad(), w2.grad(), DType::F32, "dw");
  expect_close(b1.grad(), b2.grad(), DType::F32, "db");
}

// ---- fused_linear_relu_linear and the ReLU-mask epilogues (RELU_AUX_BIAS, DRELU_BGRAD) ----

// Small integers: every product and sum below is exact in f32 on both engines (TF32 is off), so the
// CPU's values, masks and column sums are the GPU's exactly, whichever cuBLASLt kernel runs.
Tensor small_ints(const Shape& shape, int64_t salt) {
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(static_cast<int64_t>(i * 5 + i / 7 + salt * 13) % 7 - 3);
  return from_vector<float>(v, shape);
}

// The forward epilogue fused (packed bias: RELU_AUX_BIAS) and unfused (strided bias: the GEMM, the
// bias and ReLU kernels and relu_mask_write), and the backward fused (packed bias_grad: DRELU_BGRAD)
// and unfused (strided bias_grad: relu_mask_apply and the column-sum reduction), against the CPU,
// exactly. This also checks that cuBLASLt's bit mask has relu_mask.h's layout (the CPU's mask, fed to
// DRELU_BGRAD, must select the same elements; and cuBLASLt's own mask must equal the CPU's in every
// bit below N: cuBLASLt may leave the padding bits alone). N = 200: mask rows of 32 bytes, 256 bits.
TEST(CudaBackend, GemmReluMaskEpiloguesMatchCpuExactly) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int64_t M = 6, K = 5, N = 200, K2 = 7, ld = 32;
  // Half-integer biases: no pre-activation is exactly 0, where the docs do not say which way
  // cuBLASLt's mask bit goes (ember's: 0 > 0 is false).
  const Tensor a = small_ints({M, K}, 1), b = small_ints({K, N}, 2), bias2 = add(small_ints({2 * N}, 3), 0.5);
  GemmOptions oc;
  oc.epilogue = Epilogue::BiasReluNanToZeroMask;
  oc.bias = bias2.narrow(0, 0, N).contiguous();
  oc.relu_mask = full({M, ld}, 0xAB, DType::U8);
  Tensor outc = poisoned({M, N}, DType::F32, kCpu);
  cpu().gemm(outc, a, b, oc);
  const std::vector<uint8_t> mc = oc.relu_mask.to_vector<uint8_t>();
  for (bool strided : {false, true}) {
    const std::string what = strided ? "strided bias (fallback kernels)" : "packed bias (RELU_AUX_BIAS)";
    GemmOptions og;
    og.epilogue = Epilogue::BiasReluNanToZeroMask;
    og.bias = strided ? on(bias2, kCuda).slice(0, 0, 2 * N, 2) : on(oc.bias, kCuda);
    og.relu_mask = full({M, ld}, 0xAB, TensorOptions(DType::U8, kCuda));
    Tensor outg = poisoned({M, N}, DType::F32, kCuda);
    // The CPU's reference for a strided bias uses the same values (bias2's even elements).
    GemmOptions ref = oc;
    ref.bias = bias2.slice(0, 0, 2 * N, 2).contiguous();
    ref.relu_mask = full({M, ld}, 0xAB, DType::U8);
    Tensor outr = poisoned({M, N}, DType::F32, kCpu);
    cpu().gemm(outr, a, b, strided ? ref : oc);
    gpu().gemm(outg, on(a, kCuda), on(b, kCuda), og);
    expect_close(outg, outr, 0.0, 0.0, what + " out");
    const std::vector<uint8_t> mg = og.relu_mask.to_vector<uint8_t>(),
                               mr = (strided ? ref : oc).relu_mask.to_vector<uint8_t>();
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j)
        EXPECT_EQ((mg[i * ld + j / 8] >> (j % 8)) & 1, (mr[i * ld + j / 8] >> (j % 8)) & 1)
            << what << " mask bit " << i << ", " << j;
  }
  // Backward: the CPU's mask applied on both engines.
  const Tensor a2 = small_ints({M, K2}, 4), b2 = small_ints({K2, N}, 5);
  GemmOptions dc;
  dc.epilogue = Epilogue::DReluBiasGrad;
  dc.relu_mask = oc.relu_mask;
  dc.bias_grad = poisoned({N}, DType::F32, kCpu);
  Tensor gc = poisoned({M, N}, DType::F32, kCpu);
  cpu().gemm(gc, a2, b2, dc);
  for (bool strided : {false, true}) {
    const std::string what = strided ? "strided bias_grad (fallback kernels)" : "packed bias_grad (DRELU_BGRAD)";
    GemmOptions dg;
    dg.epilogue = Epilogue::DReluBiasGrad;
    dg.relu_mask = on(oc.relu_mask, kCuda);
    const Tensor grad2 = poisoned({2 * N}, DType::F32, kCuda);
    dg.bias_grad = strided ? grad2.slice(0, 0, 2 * N, 2) : grad2.narrow(0, 0, N);
    Tensor gg = poisoned({M, N}, DType::F32, kCuda);
    gpu().gemm(gg, on(a2, kCuda), on(b2, kCuda), dg);
    expect_close(gg, gc, 0.0, 0.0, what + " out");
    expect_close(dg.bias_grad.contiguous(), dc.bias_grad, 0.0, 0.0, what + " bias_grad");
  }
}

// The MLP's inputs (x [rows, in], w1, b1, w2, b2, dy) on the host, drawn so that comparing two engines
// through the ReLU is sound: no pre-activation within kKinkMargin of 0, where the engines' different
// f32 summation orders (differences of order 1e-7 here: sqrt(K) roundings of values below 1) could
// flip a mask bit and so a whole gradient element. The first seed from `seed` on that gives such
// inputs is used (checked on the CPU, so it is the same choice on every machine).
constexpr double kKinkMargin = 2e-5;
struct MlpInputs {
  Tensor x, w1, b1, w2, b2, dy;
};
double min_abs_pre_activation(const MlpInputs& m) {
  double lo = std::numeric_limits<double>::infinity();
  for (double v : linear(m.x.to(DType::F64), m.w1.to(DType::F64), m.b1.to(DType::F64)).to_vector<double>())
    lo = std::min(lo, std::abs(v));
  return lo;
}
MlpInputs mlp_inputs(int64_t rows, int64_t in, int64_t hidden, int64_t out, uint64_t seed) {
  for (uint64_t s = seed; s < seed + 100 * 8; s += 8) {
    MlpInputs m{host_random({rows, in}, DType::F32, s, -1, 1),       host_random({hidden, in}, DType::F32, s + 1, -0.05, 0.05),
                host_random({hidden}, DType::F32, s + 2, -0.1, 0.1), host_random({out, hidden}, DType::F32, s + 3, -0.1, 0.1),
                host_random({out}, DType::F32, s + 4, -0.1, 0.1),     host_random({rows, out}, DType::F32, s + 5, -1, 1)};
    if (min_abs_pre_activation(m) > kKinkMargin) return m;
  }
  ADD_FAILURE() << "no seed in 100 gives pre-activations at least " << kKinkMargin << " from 0";
  return {};
}

// y and the gradients of sum(y * dy) for x, w1, b1, w2, b2, on device d, through the two-layer op or
// its composite.
std::vector<Tensor> mlp_run(const MlpInputs& m, Device d, bool fused) {
  Tensor x = on(m.x, d).requires_grad_(), w1 = on(m.w1, d).requires_grad_(), b1 = on(m.b1, d).requires_grad_();
  Tensor w2 = on(m.w2, d).requires_grad_(), b2 = on(m.b2, d).requires_grad_();
  Tensor y = fused ? fused_linear_relu_linear(x, w1, b1, w2, b2) : linear(fused_linear_relu(x, w1, b1), w2, b2);
  sum(mul(y, on(m.dy, d))).backward();
  return {y, x.grad(), w1.grad(), b1.grad(), w2.grad(), b2.grad()};
}
const char* kMlpWhat[6] = {"y", "dx", "dw1", "db1", "dw2", "db2"};

// CUDA fused against the CPU (the op table's f32 tolerance, 1e-4: the GEMMs sum up to 784 terms in
// another order) and against the CUDA composite linear(fused_linear_relu(...)) (the same tolerance:
// RELU_AUX_BIAS and DRELU_BGRAD may pick other kernels than RELU_BIAS and the plain GEMM), at
// ember-mnist's MLP (batch 64, 784-500-10) and at a small odd shape (hidden 37: a partial mask byte).
TEST(CudaBackend, FusedLinearReluLinearMatchesCpuAndCudaComposite) {
  const MlpInputs shapes[] = {mlp_inputs(64, 784, 500, 10, 200), mlp_inputs(13, 20, 37, 6, 210)};
  for (const MlpInputs& m : shapes) ASSERT_TRUE(m.x.defined());
  EMBER_SKIP_WITHOUT_CUDA();
  for (const MlpInputs& m : shapes) {
    const std::string shape = shape_str(m.x.shape()) + " hidden " + std::to_string(m.w1.size(0));
    const std::vector<Tensor> g = mlp_run(m, kCuda, true), c = mlp_run(m, kCpu, true), gc = mlp_run(m, kCuda, false);
    EXPECT_EQ(g[0].grad_fn()->name(), "fused_linear_relu_linear");
    for (int k = 0; k < 6; ++k) {
      expect_close(g[k], c[k], DType::F32, shape + " CUDA vs CPU " + kMlpWhat[k]);
      expect_close(g[k], gc[k], DType::F32, shape + " CUDA fused vs CUDA composite " + kMlpWhat[k]);
    }
  }
}

// A NaN in b1 makes a column of pre-activations NaN: 0 after the ReLU on CUDA too (RELU_AUX_BIAS's
// semantics), its mask bits 0, so b1's and w1's gradients there are exactly 0, and everything else
// is the CPU's (f32 tolerance).
TEST(CudaBackend, FusedLinearReluLinearZeroesNaNPreActivations) {
  MlpInputs m = mlp_inputs(16, 30, 40, 5, 220);
  ASSERT_TRUE(m.x.defined());
  EMBER_SKIP_WITHOUT_CUDA();
  m.b1.narrow(0, 7, 1).fill_(kNaN);
  const std::vector<Tensor> g = mlp_run(m, kCuda, true), c = mlp_run(m, kCpu, true);
  for (int k = 0; k < 6; ++k) expect_close(g[k], c[k], DType::F32, std::string("NaN column ") + kMlpWhat[k]);
  EXPECT_EQ(g[3].to_vector<float>()[7], 0.0f);
  for (float v : g[2].narrow(0, 7, 1).to_vector<float>()) EXPECT_EQ(v, 0.0f);
}

TEST(CudaBackend, GemmReluEpiloguesPassNaNOn) {
  EMBER_SKIP_WITHOUT_CUDA();
  const int64_t M = 8, N = 16;
  const auto [a, b, bias] = nan_gemm_operands();
  for (Epilogue e : {Epilogue::Relu, Epilogue::BiasRelu}) {
    for (bool strided_bias : {false, true}) {
      if (e == Epilogue::Relu && strided_bias) continue;
      GemmOptions oc, og;
      oc.epilogue = og.epilogue = e;
      if (e == Epilogue::BiasRelu) {
        const Tensor bc = strided_bias ? bias.slice(0, 0, 2 * N, 2) : bias.narrow(0, 0, N);
        oc.bias = bc;
        og.bias = strided_bias ? on(bias, kCuda).slice(0, 0, 2 * N, 2) : on(bias, kCuda).narrow(0, 0, N);
      }
      Tensor outc = poisoned({M, N}, DType::F32, kCpu), outg = poisoned({M, N}, DType::F32, kCuda);
      cpu().gemm(outc, a, b, oc);
      gpu().gemm(outg, on(a, kCuda), on(b, kCuda), og);
      const std::string what = "epilogue " + std::to_string(int(e)) + (strided_bias ? " strided bias" : "");
      const std::vector<float> v = outg.to_vector<float>();
      for (int64_t j = 0; j < N; ++j) EXPECT_TRUE(std::isnan(v[3 * N + j])) << what << " column " << j;
      expect_close(outg, outc, DType::F32, what);
    }
  }
}

// Index checks on the device make the host wait for nothing: a bad value is recorded there and
// raised, naming the op, the value and the bound, at the next host wait; the next check works.
TEST(CudaIndexCheck, BadValuesRaiseAtTheNextHostWait) {
  EMBER_SKIP_WITHOUT_CUDA();
  const Tensor weight = on(host_random({5, 3}, DType::F32, 161), kCuda);
  const Tensor bad = on(from_vector<int64_t>({0, 4, 7, 1}), kCuda);
  const Tensor images = zeros({6, 4}, TensorOptions(DType::U8, kCuda));
  const Tensor log_probs = on(host_random({4, 3}, DType::F32, 162), kCuda);
  const Tensor labels = on(from_vector<int64_t>({0, -100, 3, 1}), kCuda);
  struct Case {
    const char* name;
    std::function<Tensor()> run;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"index_select", [&] { return index_select(weight, 0, bad); },
       {"index_select: index values hold 7 at position 2", "size of the indexed dim is 5", "[0, 5)", "cuda:0"}},
      {"embedding", [&] { return embedding(weight, bad); }, {"index_select", "hold 7", "[0, 5)"}},
      {"one_hot", [&] { return one_hot(bad, 6); }, {"one_hot: labels hold 7 at position 2", "num_classes is 6"}},
      {"nll_loss", [&] { return nll_loss(log_probs, labels); },
       {"nll_loss: labels hold 3 at position 2", "number of classes is 3", "ignore_index"}},
      {"gather_normalize", [&] { return data::gather_normalize(images, bad, 0.5, 0.25); },
       {"gather_normalize: indices hold 7 at position 2", "number of images is 6"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    cuda::synchronize();
    const cuda::TransferStats before = cuda::transfer_stats();
    cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
    Tensor out;
    bool queued = true;
    try {
      out = c.run();
    } catch (const Error& e) {
      queued = false;
      ADD_FAILURE() << "the op made the host wait or threw at once: " << e.what();
    }
    cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
    if (!queued) continue;
    const cuda::TransferStats after = cuda::transfer_stats();
    EXPECT_EQ(after.device_to_host_copies, before.device_to_host_copies);
    EXPECT_EQ(after.synchronizations, before.synchronizations);
    EXPECT_TRUE(test::throws_with([&] { cuda::synchronize(); }, c.needles));
    // Raised once: the flag is re-armed, and a good call goes through.
    EXPECT_NO_THROW(cuda::synchronize());
  }
  // A read of a value is a host wait too.
  (void)index_select(weight, 0, bad);
  EXPECT_TRUE(test::throws_with([&] { (void)sum(weight).item<double>(); }, {"index_select", "hold 7", "a read"}));
  const Tensor good = on(from_vector<int64_t>({4, 0}), kCuda);
  EXPECT_EQ(index_select(weight, 0, good).cpu().to_vector<float>(),
            index_select(weight.cpu(), 0, good.cpu()).to_vector<float>());
}

// Scratch buffers (here the keys and CUB workspace of the permutation sort) are not tensors:
// memory_stats().allocated and its peak count live tensor bytes only.
TEST(CudaMemory, ScratchIsNotCountedAsTensorBytes) {
  EMBER_SKIP_WITHOUT_CUDA();
  Tensor out = empty({100000}, TensorOptions(DType::I64, kCuda));
  cuda::synchronize();
  cuda::reset_peak_memory_stats();
  const cuda::MemoryStats before = cuda::memory_stats();
  gpu().random_permutation(out, 5, 0);
  const cuda::MemoryStats after = cuda::memory_stats();
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_EQ(after.peak_allocated, before.allocated) << "scratch memory was counted as tensor bytes";
  const std::vector<int64_t> p = out.to_vector<int64_t>();
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100000; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
}

}  // namespace
}  // namespace ember
