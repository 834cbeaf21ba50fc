// CPU backend: unary and binary maps and where(), over the arithmetic in elementwise_math.h.
#include <algorithm>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/cpu/cpu_simd.h"
#include "cpp/backend/elementwise_math.h"

namespace ember {
namespace {

// Whether every operand is contiguous (the inputs then have out's shape and layout), so the map is
// one flat loop over [0, numel): vectorised, and split across set_num_threads cores when large.
// Other layouts (broadcast inputs with stride 0, transposed views) walk their offsets on one thread.
bool flat(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (!t->is_contiguous()) return false;
  return true;
}

// Whether out may be written in vector order: each input is out itself (in place) or shares no byte
// with it. A partial overlap keeps the element-by-element order of the plain loop.
bool vector_safe(const Tensor& out, std::initializer_list<const Tensor*> ins) {
  const char* o = static_cast<const char*>(out.data_ptr());
  const size_t bytes = static_cast<size_t>(out.numel()) * dtype_size(out.dtype());
  for (const Tensor* t : ins) {
    const char* p = static_cast<const char*>(t->data_ptr());
    const size_t pb = static_cast<size_t>(t->numel()) * dtype_size(t->dtype());
    if (p != o && p < o + bytes && o < p + pb) return false;
  }
  return true;
}

// f32 and bf16 maps run at the CPU's widest instruction set (cpu_simd.h): `f` captures its pointers
// and scalars by value, so the dispatched loop holds them in registers; `omp simd` since out is
// either an input itself or disjoint from them (vector_safe). Elementwise, so every level gives the
// baseline loop's bits (no FMA contraction in this file: CMakeLists.txt). Other dtypes: the plain loop.
template <class T, class F>
void flat_loop(int64_t n, bool simd_ok, const F& f) {
  cpu::parallel_for(n, n, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>) {
      if (simd_ok) {
        cpu::simd_dispatch([&] {
          const F fn = f;
          const int64_t b = begin, e = end;
#pragma omp simd
          for (int64_t k = b; k < e; ++k) fn(k);
        });
        return;
      }
    }
    for (int64_t k = begin; k < end; ++k) f(k);
  });
}

// A map writing o[k] = T(compute(k)) over [0, n). bf16 outputs go through blocks of 512 f32 results
// narrowed together by cpu::narrow_to_bf16 (AVX512_BF16's conversion where the CPU has it): the
// rounding written out per element is most of a bf16 map's instructions (a bf16 relu took 1.5x an
// f32 one on half the bytes). The same bits either way; in place is safe (a block is computed before
// it is written), and a partial overlap keeps the element-by-element loop.
template <class T, class G>
void map_flat(int64_t n, bool simd_ok, T* o, const G& compute) {
  if constexpr (std::is_same_v<T, bf16>) {
    if (simd_ok) {
      cpu::parallel_for(n, n, [&](int64_t begin, int64_t end) {
        constexpr int64_t kBlock = 512;
        float block[kBlock];
        for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
          const int64_t len = std::min(kBlock, end - b0);
          cpu::simd_dispatch([&] {
            const G fn = compute;
            float* __restrict dst = block;
            const int64_t first = b0, count = len;
#pragma omp simd
            for (int64_t k = 0; k < count; ++k) dst[k] = fn(first + k);
          });
          cpu::narrow_to_bf16(block, o + b0, len);
        }
      });
      return;
    }
  }
  flat_loop<T>(n, simd_ok, [=](int64_t k) { o[k] = static_cast<T>(compute(k)); });
}

template <UnaryOp OP>
void unary_loop(const Tensor& out, const Tensor& in, const ElementwiseParams& p) {
  cpu::visit_dtype(in.dtype(), "unary", [&]<class T>() {
    using C = math::compute_t<T>;
    const T* x = cpu::ptr<T>(in);
    const C a = static_cast<C>(p.alpha), b = static_cast<C>(p.beta);
    if constexpr (OP == UnaryOp::IsFinite) {
      bool* o = cpu::ptr<bool>(out);
      cpu::for_each_offset<2>(out.shape(), {&out.strides(), &in.strides()}, [&](const std::array<int64_t, 2>& i) {
        o[i[0]] = math::is_finite(static_cast<double>(x[i[1]]));
      });
    } else {
      T* o = cpu::ptr<T>(out);
      if (flat({&out, &in})) {
        map_flat<T>(out.numel(), vector_safe(out, {&in}), o,
                    [=](int64_t k) { return math::unary<OP, C>(static_cast<C>(x[k]), a, b); });
        return;
      }
      cpu::for_each_offset<2>(out.shape(), {&out.strides(), &in.strides()}, [&](const std::array<int64_t, 2>& i) {
        o[i[0]] = static_cast<T>(math::unary<OP, C>(static_cast<C>(x[i[1]]), a, b));
      });
    }
  });
}

template <BinaryOp OP>
void binary_loop(const Tensor& out, const Tensor& at, const Tensor& bt, const ElementwiseParams& p) {
  cpu::visit_dtype(at.dtype(), "binary", [&]<class T>() {
    using C = math::compute_t<T>;
    const T* x = cpu::ptr<T>(at);
    const T* y = cpu::ptr<T>(bt);
    const C a = static_cast<C>(p.alpha), b = static_cast<C>(p.beta);
    const std::array<const Shape*, 3> strides{&out.strides(), &at.strides(), &bt.strides()};
    if constexpr (math::is_comparison<OP>) {
      bool* o = cpu::ptr<bool>(out);
      cpu::for_each_offset<3>(out.shape(), strides, [&](const std::array<int64_t, 3>& i) {
        o[i[0]] = math::compare<OP, T>(x[i[1]], y[i[2]]);
      });
    } else {
      T* o = cpu::ptr<T>(out);
      if (flat({&out, &at, &bt})) {
        map_flat<T>(out.numel(), vector_safe(out, {&at, &bt}), o, [=](int64_t k) {
          return math::binary<OP, C>(static_cast<C>(x[k]), static_cast<C>(y[k]), a, b);
        });
        return;
      }
      cpu::for_each_offset<3>(out.shape(), strides, [&](const std::array<int64_t, 3>& i) {
        o[i[0]] = static_cast<T>(math::binary<OP, C>(static_cast<C>(x[i[1]]), static_cast<C>(y[i[2]]), a, b));
      });
    }
  });
}

// The dispatch tables, one entry per listed op in list order (so indexed by the enum's value).
using UnaryLoop = void (*)(const Tensor&, const Tensor&, const ElementwiseParams&);
constexpr UnaryLoop kUnaryLoops[] = {
#define EMBER_UNARY_OP(NAME, STR) &unary_loop<UnaryOp::NAME>,
#include "cpp/backend/unary_ops.def"
#undef EMBER_UNARY_OP
};
using BinaryLoop = void (*)(const Tensor&, const Tensor&, const Tensor&, const ElementwiseParams&);
constexpr BinaryLoop kBinaryLoops[] = {
#define EMBER_BINARY_OP(NAME, STR, COMPARES) &binary_loop<BinaryOp::NAME>,
#include "cpp/backend/binary_ops.def"
#undef EMBER_BINARY_OP
};
static_assert(std::size(kUnaryLoops) == kUnaryOpCount && std::size(kBinaryLoops) == kBinaryOpCount);

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) {
  kUnaryLoops[op_index(op, "cpu")](out, in, p);
}

void CpuBackend::binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b,
                        const ElementwiseParams& p) {
  kBinaryLoops[op_index(op, "cpu")](out, a, b, p);
}

void CpuBackend::where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  cpu::visit_dtype(out.dtype(), "where", [&]<class T>() {
    T* o = cpu::ptr<T>(out);
    const bool* c = cpu::ptr<bool>(cond);
    const T* x = cpu::ptr<T>(a);
    const T* y = cpu::ptr<T>(b);
    if (flat({&out, &cond, &a, &b})) {
      flat_loop<T>(out.numel(), vector_safe(out, {&cond, &a, &b}), [=](int64_t k) { o[k] = c[k] ? x[k] : y[k]; });
      return;
    }
    cpu::for_each_offset<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                            [&](const std::array<int64_t, 4>& i) { o[i[0]] = c[i[1]] ? x[i[2]] : y[i[3]]; });
  });
}

}  // namespace ember
