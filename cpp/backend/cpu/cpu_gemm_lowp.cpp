// CPU backend: bf16 and f16 GEMMs (autocast's matmul/linear) through oneDNN's matmul, which picks
// AVX512_BF16 / AMX kernels from the CPU's feature bits at run time and accumulates in f32.
// bf16 runs on those kernels directly unless, timed once on this CPU, they are the slower ones
// (bf16_kernels(), cpu_gemm_lowp.h; the convolutions follow the same choice). f16 operands, and
// bf16 ones where oneDNN has no bf16 matmul or its bf16 kernels are the slower, are widened to f32
// first (oneDNN 2.6 has f16 kernels only on AVX512_FP16 CPUs and a slow reference loop elsewhere),
// which is the same arithmetic: 16-bit products are exact in f32, and the sum accumulates in f32
// either way.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_epilogue.h"
#include "cpp/backend/cpu/cpu_gemm_lowp.h"
#include "cpp/backend/cpu/cpu_matmul_dnnl.h"
#include "cpp/backend/cpu/dnnl_common.h"
#include "cpp/backend/gemm_layout.h"
#include "cpp/backend/lowp_math.h"

namespace ember::cpu {
namespace {

using dnnl::memory;


// A matrix operand's oneDNN description: [B?, rows, cols] with ember's strides; a batch stride of 0
// (one matrix shared by the batch) is a batch extent of 1, which oneDNN broadcasts.
memory::desc operand_desc(const GemmLayout& l, int64_t batch, int64_t rows, int64_t cols, memory::data_type dt,
                          bool batched) {
  const int64_t rs = l.trans ? 1 : l.ld, cs = l.trans ? l.ld : 1;
  if (!batched) return memory::desc({rows, cols}, dt, {rs, cs});
  const int64_t b = l.batch_stride == 0 ? 1 : batch;
  const int64_t bs = l.batch_stride == 0 ? rows * cols : l.batch_stride;
  return memory::desc({b, rows, cols}, dt, {bs, rs, cs});
}

using Key = std::array<int64_t, 17>;

struct Entry {
  dnnl::matmul prim;
};

// Primitives are built once per shape, layout and epilogue and kept (a training loop's few shapes).
const Entry& find_or_build(const Key& key, const memory::desc& a, const memory::desc& b, const memory::desc& bias,
                           const memory::desc& c, const dnnl::primitive_attr& attr) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  dnnl::matmul::primitive_desc pd = !bias.is_zero()
                                        ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, bias, c), attr, dnnl_engine())
                                        : dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, dnnl_engine());
  auto e = std::make_unique<Entry>(Entry{dnnl::matmul(pd)});
  return *cache.emplace(key, std::move(e)).first->second;
}

// Whether oneDNN has a bf16 matmul on this CPU (AVX512_BF16, AMX, or its AVX-512 emulation); on
// an AVX2-only CPU it has none, and bf16 then takes the f16 path (widened to f32).
bool bf16_matmul_available() {
  try {
    const memory::desc d({16, 16}, memory::data_type::bf16, {16, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(d, d, d), dnnl_engine());
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

// Best of kReps runs of oneDNN's f32 and bf16 matmul on one compute-bound shape (n x n x n, plain
// layouts, the caller's thread count), alternated so that a busy machine slows both alike:
// {f32 seconds, bf16 seconds}.
std::pair<double, double> time_f32_and_bf16(int64_t n) {
  constexpr int kReps = 7;
  match_omp_threads();
  dnnl::engine& eng = dnnl_engine();
  dnnl::stream s(eng);
  struct Run {
    dnnl::matmul prim;
    std::vector<uint32_t> a, b, c;  // storage for either dtype (4 bytes per f32, 2 per bf16 element)
    std::unordered_map<int, memory> args;
  };
  auto make = [&](memory::data_type dt) {
    const memory::desc d({n, n}, dt, {n, 1});
    auto r = std::make_unique<Run>();
    r->prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(d, d, d), eng));
    // 1.0 in either dtype's pattern (f32 0x3F800000; bf16 0x3F80 in both halves of each word).
    const uint32_t one = dt == memory::data_type::f32 ? 0x3F800000u : 0x3F803F80u;
    r->a.assign(static_cast<size_t>(n * n), one);
    r->b.assign(static_cast<size_t>(n * n), one);
    r->c.assign(static_cast<size_t>(n * n), 0u);
    r->args = {{DNNL_ARG_SRC, memory(d, eng, r->a.data())},
               {DNNL_ARG_WEIGHTS, memory(d, eng, r->b.data())},
               {DNNL_ARG_DST, memory(d, eng, r->c.data())}};
    return r;
  };
  const auto f32 = make(memory::data_type::f32), bf16 = make(memory::data_type::bf16);
  auto once = [&](Run& r) {
    const auto t0 = std::chrono::steady_clock::now();
    r.prim.execute(s, r.args);
    s.wait();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  once(*f32), once(*bf16);  // first touches of the buffers and the kernels' code
  double best_f32 = 1e30, best_bf16 = 1e30;
  for (int i = 0; i < kReps; ++i) {
    best_f32 = std::min(best_f32, once(*f32));
    best_bf16 = std::min(best_bf16, once(*bf16));
  }
  return {best_f32, best_bf16};
}

std::atomic<int> g_forced{-1};

// An f32 copy of a bf16/f16 operand (the f16 path), contiguous.
Tensor widened(const Tensor& t) {
  Tensor w = make_empty(t.shape(), DType::F32, t.device());
  cpu_backend().copy(w, t);
  return w;
}

}  // namespace

void gemm_lowp(const Tensor& out, const Tensor& a_in, const Tensor& b_in, const GemmOptions& o) {
  const DType dt = out.dtype();
  EMBER_CHECK(a_in.dtype() == dt && b_in.dtype() == dt, "gemm (cpu): operands are ", dtype_name(a_in.dtype()),
              " and ", dtype_name(b_in.dtype()), " with output ", dtype_name(dt), "; all three must have one dtype");
  const bool batched = out.dim() == 3;
  const int64_t B = batched ? out.size(0) : 1;
  const int64_t M = out.size(out.dim() - 2), N = out.size(out.dim() - 1);
  const int64_t K = a_in.size(a_in.dim() - 1);
  const EpilogueParts ep = epilogue_parts(o.epilogue, "cpu");

  // The f16 path (and bf16 where oneDNN has no bf16 matmul or its bf16 kernels are the slower,
  // bf16_runs_native()) computes on f32 copies and rounds the result once into `out`.
  const bool widen = dt == DType::F16 || !bf16_runs_native();
  const Tensor a = widen ? widened(a_in) : a_in, b = widen ? widened(b_in) : b_in;
  const Tensor bias = ep.bias ? (widen ? widened(o.bias) : o.bias) : Tensor();
  const Tensor c = widen ? make_empty(out.shape(), DType::F32, out.device()) : out;
  if (widen && o.beta != 0.0) cpu_backend().copy(c, out);
  const memory::data_type mdt = widen ? memory::data_type::f32 : memory::data_type::bf16;

  if (B > 0 && M > 0 && N > 0) {
    if (K == 0) {
      // An empty sum: c = beta * c, then the epilogue below.
      if (o.beta == 0.0) cpu_backend().fill(c, 0.0);
      else cpu_backend().unary(UnaryOp::MulScalar, c, c, {o.beta, 0.0});
      if (ep.bias) {
        const Tensor rows = make_view(c, {B * M, N}, {N, 1}, c.offset());
        cpu_backend().binary(BinaryOp::Add, rows, rows,
                             make_view(bias, {B * M, N}, {0, bias.stride(0)}, bias.offset()), {});
      }
      if (ep.relu && ep.nan_to_zero) cpu_backend().binary(BinaryOp::ReluBackward, c, c, c, {});  // c > 0 ? c : 0
      else if (ep.relu) cpu_backend().unary(UnaryOp::Relu, c, c, {});
    } else {
      const GemmLayout la = gemm_layout_checked(a, "cpu"), lb = gemm_layout_checked(b, "cpu");
      const memory::desc ad = operand_desc(la, B, M, K, mdt, batched);
      const memory::desc bd = operand_desc(lb, B, K, N, mdt, batched);
      const memory::desc cd = batched ? memory::desc({B, M, N}, mdt, {M * N, N, 1}) : memory::desc({M, N}, mdt, {N, 1});
      memory::desc biasd;
      if (ep.bias) {
        const int64_t s = bias.stride(0);
        biasd = batched ? memory::desc({1, 1, N}, mdt, {N * s, N * s, s}) : memory::desc({1, N}, mdt, {N * s, s});
      }
      dnnl::primitive_attr attr;
      dnnl::post_ops po;
      if (o.beta != 0.0) po.append_sum(static_cast<float>(o.beta));
      attr.set_post_ops(po);
      if (o.alpha != 1.0) attr.set_output_scales(0, {static_cast<float>(o.alpha)});
      float alpha_bits = static_cast<float>(o.alpha), beta_bits = static_cast<float>(o.beta);
      int32_t ai, bi;
      std::memcpy(&ai, &alpha_bits, 4);
      std::memcpy(&bi, &beta_bits, 4);
      const Key key{static_cast<int64_t>(mdt), B, M, N, K, la.trans, la.ld, la.batch_stride, lb.trans, lb.ld,
                    lb.batch_stride, static_cast<int64_t>(o.epilogue), ep.bias ? bias.stride(0) : 0, ai, bi,
                    batched, 0};
      try {
        const Entry& e = find_or_build(key, ad, bd, biasd, cd, attr);
        dnnl::stream s(dnnl_engine());
        std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(ad, dnnl_engine(), a.data_ptr())},
                                             {DNNL_ARG_WEIGHTS, memory(bd, dnnl_engine(), b.data_ptr())},
                                             {DNNL_ARG_DST, memory(cd, dnnl_engine(), c.data_ptr())}};
        if (ep.bias) args.emplace(DNNL_ARG_BIAS, memory(biasd, dnnl_engine(), bias.data_ptr()));
        e.prim.execute(s, args);
        s.wait();
      } catch (const dnnl::error& err) {
        throw Error(detail::str_cat("gemm (cpu, oneDNN ", dtype_name(dt), "): ", err.what(), " (status ",
                                    static_cast<int>(err.status), ") for [", M, ", ", K, "] x [", K, ", ", N,
                                    "], batch ", B));
      }
    }
  }
  if (widen) cpu_backend().copy(out, c);
  // ReLU as ember's map rather than a oneDNN post-op, so NaN passes through as everywhere else.
  // (BiasReluNanToZero: out > 0 ? out : 0, which maps NaN to 0, through ReluBackward(out, out).)
  if (ep.relu && K > 0 && B * M * N > 0) {
    if (ep.nan_to_zero) cpu_backend().binary(BinaryOp::ReluBackward, out, out, out, {});
    else cpu_backend().unary(UnaryOp::Relu, out, out, {});
  }

  if (ep.bias_grad) {
    // Row sums of op(a)'s first matrix, accumulated in double (as the f32 path does).
    const int64_t ad = a_in.dim(), rs = a_in.stride(ad - 2), cs = a_in.stride(ad - 1);
    visit_dtype(dt, "gemm", [&]<class T>() {
      if constexpr (is_lowp_v<T>)
        cpu::bias_grad_rows<T>(cpu::ptr<T>(a_in), M, K, rs, cs, cpu::ptr<T>(o.bias_grad), o.bias_grad.stride(0));
    });
  }
}

int parse_bf16_kernels_env(const char* value) {
  if (!value || !*value) return -1;
  const std::string v = value;
  if (v == "native") return 1;
  if (v == "widened") return 0;
  throw Error(detail::str_cat("EMBER_CPU_BF16='", v, "': expected 'native' (oneDNN's bf16 kernels) or 'widened' "
                              "(f32 kernels on widened copies); unset it to let ember time both on this CPU"));
}

const Bf16Kernels& bf16_kernels() {
  static const Bf16Kernels k = [] {
    Bf16Kernels r;
    r.available = bf16_matmul_available();
    const int env = parse_bf16_kernels_env(std::getenv("EMBER_CPU_BF16"));
    if (!r.available) {
      r.native = false;
      r.why = "widened to f32: oneDNN has no bf16 matmul on this CPU";
    } else if (env >= 0) {
      r.native = env == 1;
      r.why = r.native ? "native oneDNN bf16 kernels (EMBER_CPU_BF16=native)" : "widened to f32 (EMBER_CPU_BF16=widened)";
    } else {
      constexpr int64_t n = 256;
      const auto [t32, t16] = time_f32_and_bf16(n);
      const double flop = 2.0 * n * n * n;
      r.f32_gflops = flop / t32 / 1e9;
      r.bf16_gflops = flop / t16 / 1e9;
      r.native = t16 <= kNativeSlowerLimit * t32;
      r.why = detail::str_cat(r.native ? "native oneDNN bf16 kernels" : "widened to f32 (oneDNN f32 kernels)", ": bf16 ",
                              static_cast<int64_t>(r.bf16_gflops + 0.5), " vs f32 ",
                              static_cast<int64_t>(r.f32_gflops + 0.5), " GFLOP/s (matmul ", n, "^3, timed once)");
    }
    return r;
  }();
  return k;
}

bool bf16_runs_native() {
  const int forced = g_forced.load(std::memory_order_relaxed);
  if (forced >= 0) return forced == 1 && bf16_kernels().available;
  return bf16_kernels().native;
}

void force_bf16_kernels_for_testing(int mode) {
  EMBER_CHECK(mode >= -1 && mode <= 1, "force_bf16_kernels_for_testing: mode ", mode,
              " must be -1 (the decision), 0 (widened) or 1 (native)");
  g_forced.store(mode, std::memory_order_relaxed);
}

}  // namespace ember::cpu
