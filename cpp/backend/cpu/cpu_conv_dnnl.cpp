// CPU backend: f32, bf16 and f16 convolutions through oneDNN (the library PyTorch's CPU build uses).
// Each shape, direction and dtype gets its primitive, the memory formats oneDNN chose for it and
// the reorders between those and ember's NCHW / OIHW, built once and cached, so a training loop
// creates none. bf16/f16: every tensor (source, weights, bias, destination and their gradients) is
// in the 16-bit dtype; oneDNN accumulates in f32 and rounds each output once. Where oneDNN has no
// optimised 16-bit kernel on this CPU (it would decline, or offer only its reference loop) the
// entry is empty and the caller widens to f32 (cpu_conv.cpp).
//
// Layouts of the 16-bit convolutions: their activations (source, destination and their gradients)
// are asked for in channels-last (NHWC), where oneDNN 2.6's bf16 kernels are fastest here
// (tools/bench/conv_layers measurements in the notes: conv2 of the MNIST CNN 10.4 ms for the three
// directions vs 14.9 ms in its blocked nChw16c), and converted from/to ember's NCHW by a 16-bit
// transpose in this file: oneDNN 2.6 has no fast 16-bit reorder (its bf16 nchw <-> nChw16c / nhwc
// reorders run its generic "jit:uni" path at ~3 GB/s, 1.6-4 ms per activation of that layer,
// while its f32 ones run at 70-160 GB/s), and the transpose is pure data movement (bit patterns
// copied, no rounding). Weights keep oneDNN's own layouts and reorders (they are small).
#include <emmintrin.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cpp/backend/backend.h"
#include "cpp/backend/cpu/cpu_conv.h"
#include "cpp/backend/cpu/cpu_parallel.h"
#include "cpp/backend/cpu/dnnl_common.h"
#include "ember/error.h"
#include "ember/tensor.h"

namespace ember::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;


enum class Kind : int64_t { Forward, BackwardData, BackwardWeight };

// One operand of a cached primitive: ember's plain layout, the primitive's, and the reorder
// between them when they differ (user -> primitive for inputs, primitive -> user for the output).
struct Slot {
  int arg = 0;
  memory::desc user, prim;
  bool output = false;
  std::optional<dnnl::reorder> reorder;
  // A 16-bit activation that the primitive reads or writes as NHWC: ember's transpose instead of a
  // oneDNN reorder, over n images of c channels and hw positions.
  bool permute = false;
  int64_t n = 0, c = 0, hw = 0;
};

struct Entry {
  dnnl::primitive prim;
  std::vector<Slot> slots;
  memory::desc scratchpad;
};

using Key = std::array<int64_t, 20>;

Key key_of(Kind kind, const ConvGeometry& g, bool bias, DType dt) {
  const ConvParams& p = g.p;
  return {static_cast<int64_t>(kind), static_cast<int64_t>(dt), g.n, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.h_out, g.w_out,
          p.stride[0], p.stride[1], p.pad_begin[0], p.pad_begin[1], p.pad_end[0], p.pad_end[1],
          p.dilation[0], p.dilation[1], p.groups * 2 + (bias ? 1 : 0)};
}

// oneDNN requires (in + pad_l + pad_r - extent) / stride + 1 == out exactly (integer division).
// The op layer's shapes always allow that with the given pad_end, except conv_transpose2d's
// output_padding >= stride (allowed when smaller than the dilation): its extra rows are reached
// by no window, so a smaller pad_end describes the same convolution. Negative: none fits.
int64_t effective_pad_end(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t dilation, int64_t pb,
                          int64_t pe) {
  const int64_t extent = dilation * (k - 1) + 1;
  if ((in + pb + pe - extent) / stride + 1 == out) return pe;
  return (out - 1) * stride + extent - in - pb;
}

struct Descs {
  memory::desc src, wei, dst, bias, any_src, any_wei, any_dst;  // any_src/any_dst: NHWC if channels_last
  memory::dims strides, dilates, pad_l, pad_r;
};

memory::data_type dnnl_type(DType dt) {
  switch (dt) {
    case DType::BF16: return memory::data_type::bf16;
    case DType::F16: return memory::data_type::f16;
    default: return memory::data_type::f32;
  }
}

std::optional<Descs> descs_of(const ConvGeometry& g, bool bias, DType dtype, bool channels_last) {
  const ConvParams& p = g.p;
  const int64_t pr0 = effective_pad_end(g.h, g.h_out, g.kh, p.stride[0], p.dilation[0], p.pad_begin[0], p.pad_end[0]);
  const int64_t pr1 = effective_pad_end(g.w, g.w_out, g.kw, p.stride[1], p.dilation[1], p.pad_begin[1], p.pad_end[1]);
  if (pr0 < 0 || pr1 < 0) return std::nullopt;
  const auto f32 = dnnl_type(dtype);  // the element type of every operand (f32, bf16 or f16)
  const memory::dims src{g.n, g.c_in, g.h, g.w}, dst{g.n, g.c_out, g.h_out, g.w_out};
  const int64_t G = p.groups;
  const memory::dims wei = G == 1 ? memory::dims{g.c_out, g.c_in, g.kh, g.kw}
                                  : memory::dims{G, g.c_out / G, g.c_in / G, g.kh, g.kw};
  Descs d;
  d.src = memory::desc(src, f32, tag::nchw);
  d.dst = memory::desc(dst, f32, tag::nchw);
  d.wei = memory::desc(wei, f32, G == 1 ? tag::oihw : tag::goihw);
  if (bias) d.bias = memory::desc({g.c_out}, f32, tag::x);
  d.any_src = memory::desc(src, f32, channels_last ? tag::nhwc : tag::any);
  d.any_dst = memory::desc(dst, f32, channels_last ? tag::nhwc : tag::any);
  d.any_wei = memory::desc(wei, f32, tag::any);
  d.strides = {p.stride[0], p.stride[1]};
  d.dilates = {p.dilation[0] - 1, p.dilation[1] - 1};
  d.pad_l = {p.pad_begin[0], p.pad_begin[1]};
  d.pad_r = {pr0, pr1};
  return d;
}

Slot slot(int arg, const memory::desc& user, const memory::desc& prim, bool output) {
  Slot s{arg, user, prim, output, std::nullopt};
  const memory::dims dims = user.dims();
  const auto dt = user.data_type();
  if (user != prim && dims.size() == 4 && (dt == memory::data_type::bf16 || dt == memory::data_type::f16) &&
      user == memory::desc(dims, dt, tag::nchw) && prim == memory::desc(dims, dt, tag::nhwc)) {
    s.permute = true;
    s.n = dims[0];
    s.c = dims[1];
    s.hw = dims[2] * dims[3];
    return s;
  }
  if (user != prim) {
    dnnl::engine& e = dnnl_engine();
    s.reorder = output ? dnnl::reorder(dnnl::reorder::primitive_desc(e, prim, e, user))
                       : dnnl::reorder(dnnl::reorder::primitive_desc(e, user, e, prim));
  }
  return s;
}

dnnl::convolution_forward::primitive_desc forward_pd(const Descs& d, bool bias, const dnnl::primitive_attr& attr) {
  const auto alg = dnnl::algorithm::convolution_direct;
  const auto prop = dnnl::prop_kind::forward_training;
  auto desc = bias ? dnnl::convolution_forward::desc(prop, alg, d.any_src, d.any_wei, d.bias, d.any_dst, d.strides,
                                                      d.dilates, d.pad_l, d.pad_r)
                   : dnnl::convolution_forward::desc(prop, alg, d.any_src, d.any_wei, d.any_dst, d.strides, d.dilates,
                                                      d.pad_l, d.pad_r);
  return dnnl::convolution_forward::primitive_desc(desc, attr, dnnl_engine());
}

// Whether a primitive oneDNN offers for a 16-bit dtype is its reference loop (orders of magnitude
// slower than its f32 JIT kernels): ember then widens to f32 instead.
bool is_reference(const char* impl) { return std::string_view(impl).starts_with("ref"); }

std::unique_ptr<Entry> build(Kind kind, const Descs& d, bool bias, bool lowp) {
  dnnl::primitive_attr attr;
  // The caller passes the scratchpad: concurrent calls of one cached primitive then share nothing.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto e = std::make_unique<Entry>();
  const auto fwd = forward_pd(d, bias, attr);
  if (lowp && is_reference(fwd.impl_info_str())) return nullptr;
  switch (kind) {
    case Kind::Forward: {
      e->prim = dnnl::convolution_forward(fwd);
      e->slots.push_back(slot(DNNL_ARG_SRC, d.src, fwd.src_desc(), false));
      e->slots.push_back(slot(DNNL_ARG_WEIGHTS, d.wei, fwd.weights_desc(), false));
      if (bias) e->slots.push_back(slot(DNNL_ARG_BIAS, d.bias, fwd.bias_desc(), false));
      e->slots.push_back(slot(DNNL_ARG_DST, d.dst, fwd.dst_desc(), true));
      e->scratchpad = fwd.scratchpad_desc();
      break;
    }
    case Kind::BackwardData: {
      dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, d.any_src, d.any_wei, d.any_dst,
                                                 d.strides, d.dilates, d.pad_l, d.pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(desc, attr, dnnl_engine(), fwd);
      if (lowp && is_reference(pd.impl_info_str())) return nullptr;
      e->prim = dnnl::convolution_backward_data(pd);
      e->slots.push_back(slot(DNNL_ARG_DIFF_DST, d.dst, pd.diff_dst_desc(), false));
      e->slots.push_back(slot(DNNL_ARG_WEIGHTS, d.wei, pd.weights_desc(), false));
      e->slots.push_back(slot(DNNL_ARG_DIFF_SRC, d.src, pd.diff_src_desc(), true));
      e->scratchpad = pd.scratchpad_desc();
      break;
    }
    case Kind::BackwardWeight: {
      const auto alg = dnnl::algorithm::convolution_direct;
      auto desc = bias ? dnnl::convolution_backward_weights::desc(alg, d.any_src, d.any_wei, d.bias, d.any_dst, d.strides,
                                                                   d.dilates, d.pad_l, d.pad_r)
                       : dnnl::convolution_backward_weights::desc(alg, d.any_src, d.any_wei, d.any_dst, d.strides,
                                                                   d.dilates, d.pad_l, d.pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(desc, attr, dnnl_engine(), fwd);
      if (lowp && is_reference(pd.impl_info_str())) return nullptr;
      e->prim = dnnl::convolution_backward_weights(pd);
      e->slots.push_back(slot(DNNL_ARG_DIFF_DST, d.dst, pd.diff_dst_desc(), false));
      e->slots.push_back(slot(DNNL_ARG_SRC, d.src, pd.src_desc(), false));
      e->slots.push_back(slot(DNNL_ARG_DIFF_WEIGHTS, d.wei, pd.diff_weights_desc(), true));
      if (bias) e->slots.push_back(slot(DNNL_ARG_DIFF_BIAS, d.bias, pd.diff_bias_desc(), true));
      e->scratchpad = pd.scratchpad_desc();
      break;
    }
  }
  return e;
}

// The cache: entries are built under the lock and never removed, so a found entry stays valid.
// A 16-bit case oneDNN has no kernel for on this CPU (status unimplemented: an AVX2-only CPU has no
// bf16 convolution, and oneDNN 2.6 no f16 one without AVX512_FP16) is cached as null like the f32
// cases it takes no padding for; any other oneDNN error propagates.
Entry* find_or_build(Kind kind, const ConvGeometry& g, bool bias, DType dt) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Entry>> cache;  // null: oneDNN takes no such case
  const Key key = key_of(kind, g, bias, dt);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  const bool lowp = dt != DType::F32;
  std::unique_ptr<Entry> e;
  // 16-bit: channels-last activations first, then oneDNN's choice of layouts, then none (widened).
  for (const bool channels_last : lowp ? std::vector<bool>{true, false} : std::vector<bool>{false}) {
    if (const auto d = descs_of(g, bias, dt, channels_last)) {
      try {
        e = build(kind, *d, bias, lowp);
      } catch (const dnnl::error& err) {
        if (!lowp || err.status != dnnl_unimplemented) throw;
      }
    }
    if (e) break;
  }
  return cache.emplace(key, std::move(e)).first->second.get();
}

// 16-bit NCHW <-> NHWC: per image, a transpose of the [c, hw] (or [hw, c]) matrix in 8 x 8 blocks,
// each through SSE2's 16/32/64-bit unpacks (x86-64's baseline, so no dispatch): 17-20 GB/s here
// against 3-5 GB/s for a scalar tiled loop. Bit patterns are copied, nothing is rounded.
// dst [cols, rows] = the transpose of src [rows, cols], 16-bit elements.
void transpose16(const uint16_t* src, uint16_t* dst, int64_t rows, int64_t cols) {
  const int64_t r8 = rows - rows % 8, c8 = cols - cols % 8;
  for (int64_t r0 = 0; r0 < r8; r0 += 8) {
    for (int64_t c0 = 0; c0 < c8; c0 += 8) {
      const uint16_t* s = src + r0 * cols + c0;
      __m128i a0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 0 * cols)), a1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 1 * cols));
      __m128i a2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * cols)), a3 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 3 * cols));
      __m128i a4 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 4 * cols)), a5 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 5 * cols));
      __m128i a6 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 6 * cols)), a7 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 7 * cols));
      __m128i t0 = _mm_unpacklo_epi16(a0, a1), t1 = _mm_unpackhi_epi16(a0, a1), t2 = _mm_unpacklo_epi16(a2, a3), t3 = _mm_unpackhi_epi16(a2, a3);
      __m128i t4 = _mm_unpacklo_epi16(a4, a5), t5 = _mm_unpackhi_epi16(a4, a5), t6 = _mm_unpacklo_epi16(a6, a7), t7 = _mm_unpackhi_epi16(a6, a7);
      __m128i u0 = _mm_unpacklo_epi32(t0, t2), u1 = _mm_unpackhi_epi32(t0, t2), u2 = _mm_unpacklo_epi32(t1, t3), u3 = _mm_unpackhi_epi32(t1, t3);
      __m128i u4 = _mm_unpacklo_epi32(t4, t6), u5 = _mm_unpackhi_epi32(t4, t6), u6 = _mm_unpacklo_epi32(t5, t7), u7 = _mm_unpackhi_epi32(t5, t7);
      uint16_t* d = dst + c0 * rows + r0;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 0 * rows), _mm_unpacklo_epi64(u0, u4));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 1 * rows), _mm_unpackhi_epi64(u0, u4));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * rows), _mm_unpacklo_epi64(u1, u5));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 3 * rows), _mm_unpackhi_epi64(u1, u5));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 4 * rows), _mm_unpacklo_epi64(u2, u6));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 5 * rows), _mm_unpackhi_epi64(u2, u6));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 6 * rows), _mm_unpacklo_epi64(u3, u7));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 7 * rows), _mm_unpackhi_epi64(u3, u7));
    }
    for (int64_t r = r0; r < r0 + 8; ++r)
      for (int64_t c = c8; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  }
  for (int64_t r = r8; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// n images of [rows, cols] -> n images of [cols, rows], the images split across threads.
void transpose_images(const uint16_t* src, uint16_t* dst, int64_t n, int64_t rows, int64_t cols) {
  cpu::parallel_for(n, n * rows * cols, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) transpose16(src + i * rows * cols, dst + i * rows * cols, rows, cols);
  });
}

// An input operand in the layout its primitive reads: ember's memory itself when the layouts
// agree, else a converted copy (ember's transpose for 16-bit NHWC, oneDNN's reorder otherwise).
struct Converted {
  memory::desc desc;  // the primitive's layout (a second primitive reading this desc can share it)
  memory mem;
  std::unique_ptr<DnnlCallBuffer> buffer;
};

Converted convert_input(const Slot& sl, const void* ptr, dnnl::stream& s) {
  dnnl::engine& eng = dnnl_engine();
  Converted c;
  c.desc = sl.prim;
  void* user_ptr = const_cast<void*>(ptr);
  if (!sl.permute && !sl.reorder) {
    c.mem = memory(sl.user, eng, user_ptr);
    return c;
  }
  c.buffer = std::make_unique<DnnlCallBuffer>(sl.prim.get_size());
  c.mem = memory(sl.prim, eng, c.buffer->ptr);
  if (sl.permute)  // NCHW -> NHWC
    transpose_images(static_cast<const uint16_t*>(ptr), static_cast<uint16_t*>(c.buffer->ptr), sl.n, sl.c, sl.hw);
  else {
    memory user(sl.user, eng, user_ptr);
    sl.reorder->execute(s, user, c.mem);
  }
  return c;
}

// Runs `e` on the operands (in the entry's slot order), converting in and out where needed. With
// `shared_first`: the first slot's input already converted (by convert_input, for another
// primitive), used as it is when the layouts agree.
void run(const Entry& e, const std::vector<void*>& ptrs, const Converted* shared_first = nullptr) {
  dnnl::engine& eng = dnnl_engine();
  dnnl::stream s(eng);
  std::unordered_map<int, memory> args;
  std::vector<Converted> inputs;
  inputs.reserve(e.slots.size());
  std::vector<std::unique_ptr<DnnlCallBuffer>> buffers;
  std::vector<std::pair<const Slot*, std::pair<memory, memory>>> outputs;
  std::vector<std::pair<const Slot*, std::pair<uint16_t*, uint16_t*>>> permuted_outputs;  // (NHWC buffer, user)
  for (size_t i = 0; i < e.slots.size(); ++i) {
    const Slot& sl = e.slots[i];
    if (!sl.output) {
      if (i == 0 && shared_first && shared_first->desc == sl.prim) {
        args.emplace(sl.arg, shared_first->mem);
      } else {
        inputs.push_back(convert_input(sl, ptrs[i], s));
        args.emplace(sl.arg, inputs.back().mem);
      }
      continue;
    }
    memory user(sl.user, eng, ptrs[i]);
    if (!sl.permute && !sl.reorder) {
      args.emplace(sl.arg, user);
      continue;
    }
    buffers.push_back(std::make_unique<DnnlCallBuffer>(sl.prim.get_size()));
    void* buf = buffers.back()->ptr;
    if (sl.permute) permuted_outputs.push_back({&sl, {static_cast<uint16_t*>(buf), static_cast<uint16_t*>(ptrs[i])}});
    else outputs.push_back({&sl, {memory(sl.prim, eng, buf), user}});
    args.emplace(sl.arg, memory(sl.prim, eng, buf));
  }
  DnnlCallBuffer scratch(e.scratchpad.get_size());
  args.emplace(DNNL_ARG_SCRATCHPAD, memory(e.scratchpad, eng, scratch.ptr));
  e.prim.execute(s, args);
  for (auto& [sl, mems] : outputs) sl->reorder->execute(s, mems.first, mems.second);
  s.wait();
  for (auto& [sl, bufs] : permuted_outputs) transpose_images(bufs.first, bufs.second, sl->n, sl->hw, sl->c);  // NHWC -> NCHW
}

template <class F>
bool guarded(const char* what, const ConvGeometry& g, DType dt, F&& f) {
  try {
    return f();
  } catch (const dnnl::error& err) {
    throw Error(detail::str_cat("conv2d (cpu, oneDNN, ", dtype_name(dt), ") ", what, ": ", err.what(), " (status ",
                                static_cast<int>(err.status), ") for input [", g.n, ", ", g.c_in, ", ", g.h, ", ",
                                g.w, "], weight [", g.c_out, ", ", g.c_in / g.p.groups, ", ", g.kh, ", ", g.kw,
                                "], groups ", g.p.groups));
  }
}

}  // namespace

bool dnnl_conv_forward(const ConvGeometry& g, DType dt, void* y, const void* x, const void* w, const void* bias) {
  return guarded("forward", g, dt, [&] {
    Entry* e = find_or_build(Kind::Forward, g, bias != nullptr, dt);
    if (!e) return false;
    std::vector<void*> ptrs{const_cast<void*>(x), const_cast<void*>(w)};
    if (bias) ptrs.push_back(const_cast<void*>(bias));
    ptrs.push_back(y);
    run(*e, ptrs);
    return true;
  });
}

bool dnnl_conv_backward_data(const ConvGeometry& g, DType dt, void* dx, const void* dy, const void* w) {
  return guarded("backward data", g, dt, [&] {
    Entry* e = find_or_build(Kind::BackwardData, g, false, dt);
    if (!e) return false;
    run(*e, {const_cast<void*>(dy), const_cast<void*>(w), dx});
    return true;
  });
}

bool dnnl_conv_backward_weight(const ConvGeometry& g, DType dt, void* dw, void* db, const void* dy, const void* x) {
  return guarded("backward weight", g, dt, [&] {
    Entry* e = find_or_build(Kind::BackwardWeight, g, db != nullptr, dt);
    if (!e) return false;
    std::vector<void*> ptrs{const_cast<void*>(dy), const_cast<void*>(x), dw};
    if (db) ptrs.push_back(db);
    run(*e, ptrs);
    return true;
  });
}

bool dnnl_conv_backward(const ConvGeometry& g, DType dt, void* dx, void* dw, void* db, const void* dy, const void* x,
                        const void* w) {
  return guarded("backward", g, dt, [&] {
    Entry* ed = find_or_build(Kind::BackwardData, g, false, dt);
    Entry* ew = find_or_build(Kind::BackwardWeight, g, db != nullptr, dt);
    if (!ed || !ew) return false;
    // dy is the first operand of both primitives: converted once when they read the same layout.
    dnnl::stream s(dnnl_engine());
    const Converted cdy = convert_input(ed->slots[0], dy, s);
    s.wait();
    run(*ed, {const_cast<void*>(dy), const_cast<void*>(w), dx}, &cdy);
    std::vector<void*> ptrs{const_cast<void*>(dy), const_cast<void*>(x), dw};
    if (db) ptrs.push_back(db);
    run(*ew, ptrs, &cdy);
    return true;
  });
}

bool dnnl_conv_has_kernel(const ConvGeometry& g, DType dt, bool bias) {
  return guarded("probe", g, dt, [&] {
    return find_or_build(Kind::Forward, g, bias, dt) && find_or_build(Kind::BackwardData, g, false, dt) &&
           find_or_build(Kind::BackwardWeight, g, bias, dt);
  });
}

}  // namespace ember::cpu
