// ember's own CPU loops at every instruction set this CPU supports (ember/cpu_isa.h: baseline
// x86-64, AVX2, AVX-512F) against plain scalar loops written here: the optimizer updates, the
// f32 <-> bf16 / f16 casts, the f32 / bf16 elementwise maps and the GEMM epilogues. Each must give
// the scalar loop's bits exactly (elementwise arithmetic; the bias-gradient sums keep their order).
// The bf16 maps narrow blocks of 512 f32 results at once (cpu::narrow_to_bf16), so the larger sizes
// cross block boundaries.
// Sizes run across every vector width's tail (1 ... 67 elements, and larger odd sizes). On a CPU with
// AVX512_BF16 the avx512f level's f32 -> bf16 cast uses vcvtne2ps2bf16 (with a scalar path for
// blocks holding subnormals, which the instruction flushes): both paths are covered.
// This file is compiled with -ffp-contract=off (tests/CMakeLists.txt), so the reference loops
// round every product and sum as the library's do.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/backend/elementwise_math.h"
#include "cpp/backend/lowp_math.h"
#include "cpp/backend/optim_math.h"
#include "cpp/core/tensor_impl.h"
#include "ember/cpu_info.h"
#include "ember/cpu_isa.h"
#include "ember/ember.h"

namespace ember {
namespace {

Backend& cpu() {
  static Backend* b = empty({1}).impl()->storage->owner;
  return *b;
}

// Every level this CPU runs, widest last; the level in use is put back afterwards.
struct IsaScope {
  CpuKernelIsa saved = cpu_kernel_isa();
  ~IsaScope() { set_cpu_kernel_isa(saved); }
};
std::vector<CpuKernelIsa> levels() {
  std::vector<CpuKernelIsa> v;
  for (int i = 0; i <= static_cast<int>(cpu_kernel_isa_supported()); ++i) v.push_back(static_cast<CpuKernelIsa>(i));
  return v;
}

// Sizes across the tails of 4-, 8- and 16-lane loops, and a few larger odd ones.
std::vector<int64_t> sizes() {
  std::vector<int64_t> s;
  for (int64_t n = 1; n <= 67; ++n) s.push_back(n);
  for (int64_t n : {127, 128, 129, 1000, 4099}) s.push_back(n);
  return s;
}

template <class T>
bool same_bits(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    // Any NaN matches any NaN: which operand's payload survives may depend on the operand order
    // the compiler chose, which the arithmetic does not fix.
    if (std::isnan(a) && std::isnan(b)) return true;
  }
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T>
std::vector<T> read(const Tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data_ptr(), v.size() * sizeof(T));
  return v;
}
template <class T>
Tensor write(const std::vector<T>& v, DType dt) {
  Tensor t = empty({static_cast<int64_t>(v.size())}, TensorOptions(dt));
  std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(T));
  return t;
}

TEST(CpuKernelIsa, DetectionAgreesWithCpuInfo) {
  const CpuInfo& info = cpu_info();
  const CpuKernelIsa expected = info.avx512f ? CpuKernelIsa::Avx512 : info.avx2 ? CpuKernelIsa::Avx2 : CpuKernelIsa::Baseline;
  EXPECT_EQ(cpu_kernel_isa_supported(), expected) << info.flags();
  EXPECT_STREQ(cpu_kernel_isa_name(CpuKernelIsa::Baseline), "baseline");
  EXPECT_STREQ(cpu_kernel_isa_name(CpuKernelIsa::Avx2), "avx2");
  EXPECT_STREQ(cpu_kernel_isa_name(CpuKernelIsa::Avx512), "avx512f");
  IsaScope scope;
  for (CpuKernelIsa l : levels()) {
    set_cpu_kernel_isa(l);
    EXPECT_EQ(cpu_kernel_isa(), l);
  }
  if (cpu_kernel_isa_supported() != CpuKernelIsa::Avx512) {
    try {
      set_cpu_kernel_isa(CpuKernelIsa::Avx512);
      FAIL() << "a level above the CPU's was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("wider than this CPU supports"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(set_cpu_kernel_isa(static_cast<CpuKernelIsa>(7)), Error);
}

// ---- optimizer updates ----

struct OptimCase {
  const char* name;
  OptimizerAlgo algo;
  int states;  // mask of the state slots in use
  OptimizerHyper h;
};

std::vector<OptimCase> optim_cases() {
  std::vector<OptimCase> v;
  OptimizerHyper adam;
  adam.step_size = 1e-3 / (1 - 0.9 * 0.9 * 0.9);
  adam.beta1_complement = 0.1;
  adam.beta2 = 0.999;
  adam.beta2_complement = 0.001;
  adam.eps = 1e-8;
  adam.bias_correction2_sqrt = std::sqrt(1 - std::pow(0.999, 3));
  v.push_back({"adam", OptimizerAlgo::Adam, 3, adam});
  OptimizerHyper adamw = adam;
  adamw.weight_decay = 0.01;
  adamw.decoupled_weight_decay = true;
  adamw.decay_factor = 1 - 1e-3 * 0.01;
  v.push_back({"adamw", OptimizerAlgo::Adam, 3, adamw});
  OptimizerHyper ams = adam;
  ams.amsgrad = true;
  ams.weight_decay = 0.05;  // L2
  ams.maximize = true;
  ams.beta1_complement = 0.7;  // lerp's other branch (|w| >= 0.5)
  v.push_back({"adam_amsgrad_l2_maximize", OptimizerAlgo::Adam, 7, ams});
  OptimizerHyper sgd;
  sgd.step_size = 0.1;
  sgd.momentum = 0.9;
  sgd.dampening_complement = 0.75;
  sgd.nesterov = true;
  sgd.weight_decay = 1e-4;
  v.push_back({"sgd_nesterov", OptimizerAlgo::Sgd, 1, sgd});
  OptimizerHyper sgd_first = sgd;
  sgd_first.first_step = true;
  v.push_back({"sgd_first_step", OptimizerAlgo::Sgd, 1, sgd_first});
  OptimizerHyper plain;
  plain.step_size = 0.05;
  v.push_back({"sgd_plain", OptimizerAlgo::Sgd, 0, plain});
  OptimizerHyper rms;
  rms.step_size = 0.01;
  rms.beta2 = 0.99;
  rms.beta2_complement = 0.01;
  rms.eps = 1e-8;
  rms.momentum = 0.5;
  rms.centered = true;
  v.push_back({"rmsprop_centered_momentum", OptimizerAlgo::Rmsprop, 7, rms});
  OptimizerHyper ada;
  ada.step_size = 0.01 / (1 + 2 * 0.001);
  ada.eps = 1e-10;
  ada.weight_decay = 0.1;
  v.push_back({"adagrad", OptimizerAlgo::Adagrad, 1, ada});
  return v;
}

template <class T>
void check_optimizer(const OptimCase& c, int64_t n, std::mt19937& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<T> p(n), g(n), s[3];
  for (int64_t i = 0; i < n; ++i) {
    p[i] = static_cast<T>(nd(rng));
    g[i] = static_cast<T>(nd(rng) * 1e-2);
  }
  // Gradient specials: zeros of both signs, a subnormal, an infinity, a NaN.
  if (n > 5) {
    g[0] = T(0), g[1] = -T(0), g[2] = std::numeric_limits<T>::denorm_min(), g[3] = std::numeric_limits<T>::infinity();
    g[4] = std::numeric_limits<T>::quiet_NaN();
  }
  for (int k = 0; k < 3; ++k) {
    if (!(c.states >> k & 1)) continue;
    s[k].resize(n);
    // Second moments (Adam's exp_avg_sq and max, RMSprop's square_avg, Adagrad's sum) must be >= 0.
    const bool nonneg = (c.algo == OptimizerAlgo::Adam && k >= 1) || (c.algo != OptimizerAlgo::Sgd && k == 0);
    for (int64_t i = 0; i < n; ++i) s[k][i] = static_cast<T>(nonneg ? std::abs(nd(rng)) * 1e-4 : nd(rng) * 1e-2);
  }
  // The reference: optim_math's element function in a plain loop, here.
  std::vector<T> rp = p, rs[3] = {s[0], s[1], s[2]};
  const optim_math::Scalars<T> sc = optim_math::cast_scalars<T>(c.h);
  for (int64_t i = 0; i < n; ++i) {
    T* b[3];
    for (int k = 0; k < 3; ++k) b[k] = rs[k].empty() ? nullptr : rs[k].data();
    switch (c.algo) {
      case OptimizerAlgo::Sgd: optim_math::update_element<OptimizerAlgo::Sgd, T>(rp.data(), g.data(), b[0], b[1], b[2], i, sc); break;
      case OptimizerAlgo::Adam: optim_math::update_element<OptimizerAlgo::Adam, T>(rp.data(), g.data(), b[0], b[1], b[2], i, sc); break;
      case OptimizerAlgo::Rmsprop: optim_math::update_element<OptimizerAlgo::Rmsprop, T>(rp.data(), g.data(), b[0], b[1], b[2], i, sc); break;
      case OptimizerAlgo::Adagrad: optim_math::update_element<OptimizerAlgo::Adagrad, T>(rp.data(), g.data(), b[0], b[1], b[2], i, sc); break;
    }
  }
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::F64;
  for (CpuKernelIsa l : levels()) {
    set_cpu_kernel_isa(l);
    OptimizerStep step;
    step.algo = c.algo;
    OptimizerParam e;
    e.param = write(p, dt);
    e.grad = write(g, dt);
    for (int k = 0; k < 3; ++k)
      if (!s[k].empty()) e.state[k] = write(s[k], dt);
    e.hyper = c.h;
    step.params.push_back(e);
    cpu().optimizer_step(step);
    const std::vector<T> got = read<T>(e.param);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_TRUE(same_bits(got[i], rp[i])) << c.name << " " << dtype_name(dt) << " at " << cpu_kernel_isa_name(l)
                                             << ", n " << n << ", param[" << i << "] " << got[i] << " vs " << rp[i];
    for (int k = 0; k < 3; ++k) {
      if (s[k].empty()) continue;
      const std::vector<T> st = read<T>(e.state[k]);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_TRUE(same_bits(st[i], rs[k][i])) << c.name << " at " << cpu_kernel_isa_name(l) << ", n " << n
                                                 << ", state " << k << "[" << i << "] " << st[i] << " vs " << rs[k][i];
    }
  }
}

TEST(CpuKernels, OptimizerUpdatesMatchScalarLoopAtEveryLevel) {
  IsaScope scope;
  std::mt19937 rng(13);
  for (const OptimCase& c : optim_cases())
    for (int64_t n : sizes()) {
      check_optimizer<float>(c, n, rng);
      check_optimizer<double>(c, n, rng);
    }
}

// ---- casts ----

// f32 -> bf16, written here differently from lowp_math.h (compare the dropped half with one half
// of an ulp instead of adding a bias): round to nearest, ties to even; NaN kept, made quiet.
uint16_t ref_bf16(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  uint32_t hi = u >> 16;
  const uint32_t lo = u & 0xffffu;
  if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) ++hi;  // a carry into the exponent is right (up to inf)
  return static_cast<uint16_t>(hi);
}

std::vector<uint32_t> cast_inputs(int64_t n, std::mt19937& rng) {
  // Edge values first: zeros, subnormals (smallest, largest, and ones rounding to bf16
  // subnormals or to zero), the normal range's ends, values that round up to inf, infinities,
  // quiet and signalling NaNs (one whose payload lies only in the dropped bits), exact ties of
  // both parities, one ulp either side of a tie.
  const uint32_t edges[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007fffffu, 0x807fffffu, 0x00008000u,
                            0x00018000u, 0x00007fffu, 0x00800000u, 0x80800000u, 0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u,
                            0x7f7f7fffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,
                            0x7fa00000u, 0x7fffffffu, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf808000u,
                            0xbf818000u, 0x3f800000u, 0x477ff000u, 0x477fefffu, 0x38800000u, 0x337fffffu, 0x33000001u};
  std::vector<uint32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = i < static_cast<int64_t>(std::size(edges)) ? edges[i] : static_cast<uint32_t>(rng());
  return v;
}

TEST(CpuKernels, CastsMatchScalarConversionAtEveryLevel) {
  IsaScope scope;
  std::mt19937 rng(7);
  std::vector<int64_t> ns = sizes();
  ns.push_back(35);  // exactly the edge list
  for (int64_t n : ns) {
    // Edge values at every position of the vector, not only the first lanes: rotate them.
    std::vector<uint32_t> bits = cast_inputs(std::max<int64_t>(n, 35), rng);
    std::rotate(bits.begin(), bits.begin() + static_cast<int64_t>(n % 17) % static_cast<int64_t>(bits.size()), bits.end());
    bits.resize(static_cast<size_t>(n));
    std::vector<float> f(bits.size());
    std::memcpy(f.data(), bits.data(), bits.size() * 4);
    std::vector<uint16_t> h(bits.size());
    // 16-bit patterns: the edge values' top halves (bf16's specials) and bottom halves (f16
    // subnormals and more), and random ones.
    for (size_t i = 0; i < bits.size(); ++i) h[i] = static_cast<uint16_t>(i % 2 ? bits[i] : bits[i] >> 16);
    const Tensor src = write(f, DType::F32), src16 = write(h, DType::BF16), srch = write(h, DType::F16);
    for (CpuKernelIsa l : levels()) {
      set_cpu_kernel_isa(l);
      const std::vector<uint16_t> b = read<uint16_t>(src.to(DType::BF16));
      const std::vector<uint16_t> hf = read<uint16_t>(src.to(DType::F16));
      const std::vector<uint32_t> back = read<uint32_t>(src16.to(DType::F32));
      const std::vector<uint32_t> backh = read<uint32_t>(srch.to(DType::F32));
      for (size_t i = 0; i < bits.size(); ++i) {
        ASSERT_EQ(b[i], ref_bf16(bits[i])) << std::hex << "f32 0x" << bits[i] << " -> bf16 at " << cpu_kernel_isa_name(l)
                                           << ", n " << std::dec << n << ", index " << i;
        // bf16 -> f32 is exact: the 16 bits on top, zeros below (a NaN's payload and sign kept).
        ASSERT_EQ(back[i], static_cast<uint32_t>(h[i]) << 16) << std::hex << "bf16 0x" << h[i] << " at " << cpu_kernel_isa_name(l);
        // f16, at each level against the scalar conversion (checked against formulas in
        // test_mixed_precision.cpp).
        ASSERT_EQ(hf[i], lowp::float_to_f16_bits(f[i])) << std::hex << "f32 0x" << bits[i] << " -> f16 at " << cpu_kernel_isa_name(l);
        const float want = lowp::f16_bits_to_float(h[i]);
        uint32_t wb;
        std::memcpy(&wb, &want, 4);
        ASSERT_EQ(backh[i], wb) << std::hex << "f16 0x" << h[i] << " at " << cpu_kernel_isa_name(l);
      }
    }
  }
}

// The same without subnormals: AVX512_BF16's instruction path (where the CPU has it) converts
// blocks of 32 that hold none, and must then give the same bits on NaNs, infinities, ties and
// values rounding up to inf.
TEST(CpuKernels, CastBlocksWithoutSubnormalsMatchScalarConversion) {
  IsaScope scope;
  std::mt19937 rng(8);
  const uint32_t edges[] = {0x00000000u, 0x80000000u, 0x00800000u, 0x80800000u, 0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u,
                            0x7f7f7fffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,
                            0x7fa00000u, 0x7fffffffu, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf808000u,
                            0xbf818000u, 0x3f800000u, 0x00ff8000u, 0x00fe8000u, 0x80ff8000u};
  for (int64_t n : {32, 64, 65, 96, 100, 1000, 4099}) {
    std::vector<uint32_t> bits(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      uint32_t u = static_cast<uint32_t>(rng());
      if ((u & 0x7f800000u) == 0) u |= 0x00800000u;  // no subnormals
      bits[i] = i % 3 == 0 ? edges[(i / 3) % std::size(edges)] : u;
    }
    std::vector<float> f(bits.size());
    std::memcpy(f.data(), bits.data(), bits.size() * 4);
    const Tensor src = write(f, DType::F32);
    for (CpuKernelIsa l : levels()) {
      set_cpu_kernel_isa(l);
      const std::vector<uint16_t> b = read<uint16_t>(src.to(DType::BF16));
      for (size_t i = 0; i < bits.size(); ++i)
        ASSERT_EQ(b[i], ref_bf16(bits[i])) << std::hex << "f32 0x" << bits[i] << " -> bf16 at " << cpu_kernel_isa_name(l)
                                           << ", n " << std::dec << n << ", index " << i;
    }
  }
}

// ---- elementwise maps ----

template <class T>
std::vector<T> elementwise_input(int64_t n, std::mt19937& rng, double scale) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(static_cast<float>(nd(rng)));
  if (n > 4) {
    v[1] = static_cast<T>(-0.0f);
    // Subnormal inputs (and so subnormal results): the bf16 maps' AVX512_BF16 narrowing flushes
    // them, so their blocks must take the scalar rounding.
    v[2] = static_cast<T>(1.0e-39f);
    v[3] = static_cast<T>(-3.0e-39f);
    v[n / 2] = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
    v[n - 1] = static_cast<T>(std::numeric_limits<float>::infinity());
  }
  return v;
}

template <class T, BinaryOp OP>
void check_binary(int64_t n, std::mt19937& rng, const ElementwiseParams& prm) {
  using C = math::compute_t<T>;
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  const std::vector<T> x = elementwise_input<T>(n, rng, 2.0), y = elementwise_input<T>(n, rng, 0.5);
  std::vector<T> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    want[i] = static_cast<T>(math::binary<OP, C>(static_cast<C>(x[i]), static_cast<C>(y[i]), static_cast<C>(prm.alpha),
                                                 static_cast<C>(prm.beta)));
  for (CpuKernelIsa l : levels()) {
    set_cpu_kernel_isa(l);
    const Tensor a = write(x, dt), b = write(y, dt);
    Tensor out = empty({n}, TensorOptions(dt));
    cpu().binary(OP, out, a, b, prm);
    // In place too (out is the first input): the same bits.
    cpu().binary(OP, a, a, b, prm);
    const std::vector<T> got = read<T>(out), got_inplace = read<T>(a);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(same_bits(static_cast<float>(got[i]), static_cast<float>(want[i])))
          << op_name(OP) << " " << dtype_name(dt) << " at " << cpu_kernel_isa_name(l) << ", n " << n << ", [" << i
          << "] " << static_cast<float>(got[i]) << " vs " << static_cast<float>(want[i]);
      ASSERT_TRUE(same_bits(static_cast<float>(got_inplace[i]), static_cast<float>(want[i])))
          << op_name(OP) << " in place at " << cpu_kernel_isa_name(l) << ", n " << n << ", [" << i << "]";
    }
  }
}

template <class T, UnaryOp OP>
void check_unary(int64_t n, std::mt19937& rng, const ElementwiseParams& prm) {
  using C = math::compute_t<T>;
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  const std::vector<T> x = elementwise_input<T>(n, rng, 3.0);
  std::vector<T> want(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    want[i] = static_cast<T>(math::unary<OP, C>(static_cast<C>(x[i]), static_cast<C>(prm.alpha), static_cast<C>(prm.beta)));
  for (CpuKernelIsa l : levels()) {
    set_cpu_kernel_isa(l);
    const Tensor a = write(x, dt);
    Tensor out = empty({n}, TensorOptions(dt));
    cpu().unary(OP, out, a, prm);
    const std::vector<T> got = read<T>(out);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_TRUE(same_bits(static_cast<float>(got[i]), static_cast<float>(want[i])))
          << op_name(OP) << " " << dtype_name(dt) << " at " << cpu_kernel_isa_name(l) << ", n " << n << ", [" << i
          << "] " << static_cast<float>(got[i]) << " vs " << static_cast<float>(want[i]);
  }
}

template <class T>
void check_elementwise_dtype(int64_t n, std::mt19937& rng) {
  check_binary<T, BinaryOp::Add>(n, rng, {});
  check_binary<T, BinaryOp::Sub>(n, rng, {});
  check_binary<T, BinaryOp::Mul>(n, rng, {});
  check_binary<T, BinaryOp::Div>(n, rng, {});
  check_binary<T, BinaryOp::Maximum>(n, rng, {});
  check_binary<T, BinaryOp::ReluBackward>(n, rng, {});
  check_binary<T, BinaryOp::SigmoidBackward>(n, rng, {});
  check_binary<T, BinaryOp::ClampBackward>(n, rng, {-0.5, 0.75});
  check_unary<T, UnaryOp::Relu>(n, rng, {});
  check_unary<T, UnaryOp::Neg>(n, rng, {});
  check_unary<T, UnaryOp::MulScalar>(n, rng, {0.3, 0.0});
  check_unary<T, UnaryOp::AddScalar>(n, rng, {-1.25, 0.0});
  check_unary<T, UnaryOp::Square>(n, rng, {});
  check_unary<T, UnaryOp::Abs>(n, rng, {});
  check_unary<T, UnaryOp::Clamp>(n, rng, {-1.0, 2.0});
  check_unary<T, UnaryOp::LeakyRelu>(n, rng, {0.01, 0.0});
  check_unary<T, UnaryOp::Exp>(n, rng, {});
  check_unary<T, UnaryOp::Tanh>(n, rng, {});
}

TEST(CpuKernels, ElementwiseMatchesScalarLoopAtEveryLevel) {
  IsaScope scope;
  std::mt19937 rng(3);
  for (int64_t n : sizes()) {
    check_elementwise_dtype<float>(n, rng);
    check_elementwise_dtype<bf16>(n, rng);
  }
}

// An output that partly overlaps an input (a view one element along) is written in element order,
// as the plain loop does, at every level: each element reads the one just written.
TEST(CpuKernels, PartlyOverlappingOutputKeepsElementOrder) {
  IsaScope scope;
  const int64_t n = 100;
  for (CpuKernelIsa l : levels()) {
    set_cpu_kernel_isa(l);
    std::vector<float> init(static_cast<size_t>(n + 1));
    for (int64_t i = 0; i <= n; ++i) init[i] = static_cast<float>(i % 7) - 2.5f;
    const Tensor buf = write(init, DType::F32);
    const Tensor ones = full({n}, 1.0);
    cpu().binary(BinaryOp::Add, buf.narrow(0, 1, n), buf.narrow(0, 0, n), ones, {});
    std::vector<float> want = init;
    for (int64_t i = 0; i < n; ++i) want[i + 1] = want[i] + 1.0f;
    const std::vector<float> got = read<float>(buf);
    for (int64_t i = 0; i <= n; ++i) ASSERT_EQ(got[i], want[i]) << "at " << cpu_kernel_isa_name(l) << ", [" << i << "]";
  }
}

// ---- GEMM epilogues ----

template <class T>
void check_epilogues(int64_t M, int64_t N, int64_t K, std::mt19937& rng) {
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  const TensorOptions o(DType::F32);
  const Tensor a = randn({M, K}, o).to(dt), w = randn({N, K}, o).to(dt), bias = randn({N}, o).to(dt);
  // The product alone, then bias and ReLU applied here.
  Tensor plain = empty({M, N}, TensorOptions(dt));
  cpu().gemm(plain, a, w.t(), {});
  const std::vector<T> p = read<T>(plain), bv = read<T>(bias);
  std::vector<T> want(p.size());
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      // The f32 path adds the bias to the f32 product; the bf16 path gets it from oneDNN, so only
      // f32 is compared with a sum formed here (bf16: the levels against each other, below).
      const float v = static_cast<float>(p[i * N + j]) + static_cast<float>(bv[j]);
      want[i * N + j] = static_cast<T>(v < 0.0f ? 0.0f : v);
    }
  // The bias gradient of dY^T X: dY's column sums, in double, in row order.
  const Tensor dy = randn({K, M}, o).to(dt), x = randn({K, N}, o).to(dt);
  const std::vector<T> dyv = read<T>(dy);
  std::vector<T> want_db(static_cast<size_t>(M));
  for (int64_t i = 0; i < M; ++i) {
    double acc = 0.0;
    for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(static_cast<float>(dyv[k * M + i]));
    want_db[i] = static_cast<T>(acc);
  }
  std::vector<T> first;
  for (CpuKernelIsa l : levels()) {
    set_cpu_kernel_isa(l);
    Tensor out = empty({M, N}, TensorOptions(dt));
    GemmOptions go;
    go.epilogue = Epilogue::BiasRelu;
    go.bias = bias;
    cpu().gemm(out, a, w.t(), go);
    const std::vector<T> got = read<T>(out);
    if (first.empty()) first = got;
    for (size_t i = 0; i < got.size(); ++i) {
      if constexpr (std::is_same_v<T, float>)
        ASSERT_TRUE(same_bits(got[i], want[i])) << "bias+relu at " << cpu_kernel_isa_name(l) << ", " << M << "x" << N
                                                << "x" << K << ", [" << i << "]";
      ASSERT_TRUE(same_bits(static_cast<float>(got[i]), static_cast<float>(first[i])))
          << dtype_name(dt) << " bias+relu differs between levels at " << cpu_kernel_isa_name(l) << ", [" << i << "]";
    }
    Tensor dw = empty({M, N}, TensorOptions(dt)), db = empty({M}, TensorOptions(dt));
    GemmOptions bo;
    bo.epilogue = Epilogue::BiasGradA;
    bo.bias_grad = db;
    cpu().gemm(dw, dy.t(), x, bo);
    const std::vector<T> gdb = read<T>(db);
    for (int64_t i = 0; i < M; ++i)
      ASSERT_TRUE(same_bits(static_cast<float>(gdb[i]), static_cast<float>(want_db[i])))
          << dtype_name(dt) << " bias gradient at " << cpu_kernel_isa_name(l) << ", " << M << "x" << N << "x" << K
          << ", [" << i << "] " << static_cast<float>(gdb[i]) << " vs " << static_cast<float>(want_db[i]);
  }
}

TEST(CpuKernels, GemmEpiloguesMatchScalarLoopAtEveryLevel) {
  IsaScope scope;
  manual_seed(5);
  std::mt19937 rng(5);
  for (int64_t M : {1, 3, 17, 64})
    for (int64_t N : {1, 7, 16, 33, 500})
      for (int64_t K : {1, 9, 64}) {
        check_epilogues<float>(M, N, K, rng);
        check_epilogues<bf16>(M, N, K, rng);
      }
}

// ---- AccumulateGrad ----

// A leaf's first gradient is taken as is only when nothing else holds it; a gradient the caller
// passed in, or one another tensor's retained gradient shares, is copied.
TEST(AccumulateGrad, CopiesAGradientSomethingElseHolds) {
  Tensor x = randn({2, 3}).requires_grad_();
  Tensor g = full({2, 3}, 2.0);
  x.backward(g);
  ASSERT_TRUE(x.grad().defined());
  EXPECT_FALSE(x.grad().shares_storage(g));
  g.fill_(5.0);
  for (float v : x.grad().to_vector<float>()) EXPECT_EQ(v, 2.0f);

  // mul's backward makes a fresh gradient that only the engine holds: kept without a copy, and
  // still the right values.
  Tensor w = randn({4}).requires_grad_();
  Tensor c = full({4}, 3.0);
  sum(mul(w, c)).backward();
  for (float v : w.grad().to_vector<float>()) EXPECT_EQ(v, 3.0f);
}

}  // namespace
}  // namespace ember
