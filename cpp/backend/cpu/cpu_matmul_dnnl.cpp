// CPU backend: GEMM through oneDNN's matmul primitive (see cpu_matmul_dnnl.h). One primitive per
// shape, transposes, leading dimensions, types and scales, built once and cached; the scratchpad
// comes from the CPU allocator per call, so concurrent calls of one primitive share nothing.
#include "cpp/backend/cpu/cpu_matmul_dnnl.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "cpp/backend/backend.h"
#include "cpp/backend/cpu/dnnl_common.h"
#include "ember/error.h"

namespace ember::cpu {
namespace {

using dnnl::memory;


memory::data_type dt(MatElem e) { return e == MatElem::BF16 ? memory::data_type::bf16 : memory::data_type::f32; }

struct Entry {
  dnnl::matmul prim;
  memory::desc a, b, c, scratchpad;
};

using Key = std::array<int64_t, 13>;

Key key_of(const MatmulCall& m) {
  int32_t alpha_bits = 0, beta_bits = 0;
  std::memcpy(&alpha_bits, &m.alpha, 4);
  std::memcpy(&beta_bits, &m.beta, 4);
  return {m.M, m.N, m.K, m.ta ? 1 : 0, m.tb ? 1 : 0, m.lda, m.ldb, m.ldc, alpha_bits, beta_bits,
          static_cast<int64_t>(m.a), static_cast<int64_t>(m.b), static_cast<int64_t>(m.c)};
}

dnnl::matmul::primitive_desc primitive_desc_of(const MatmulCall& m, memory::desc& a, memory::desc& b,
                                               memory::desc& c) {
  // Strides describe the transposes: op(A)[i, k] lives at A[i * lda + k] or, transposed, A[k * lda + i].
  a = memory::desc({m.M, m.K}, dt(m.a), m.ta ? memory::dims{1, m.lda} : memory::dims{m.lda, 1});
  b = memory::desc({m.K, m.N}, dt(m.b), m.tb ? memory::dims{1, m.ldb} : memory::dims{m.ldb, 1});
  c = memory::desc({m.M, m.N}, dt(m.c), memory::dims{m.ldc, 1});
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (m.alpha != 1.0f) attr.set_output_scales(0, {m.alpha});
  if (m.beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(m.beta);
    attr.set_post_ops(po);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), attr, dnnl_engine());
}

std::shared_ptr<const Entry> entry_for(const MatmulCall& m) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<const Entry>> cache;
  const Key key = key_of(m);
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  // A process that meets very many shapes (evaluation batches of every size) does not grow forever:
  // past this many the cache starts again (a call running an entry holds it until it returns).
  if (cache.size() >= 4096) cache.clear();
  auto e = std::make_shared<Entry>();
  try {
    const auto pd = primitive_desc_of(m, e->a, e->b, e->c);
    e->prim = dnnl::matmul(pd);
    e->scratchpad = pd.scratchpad_desc();
  } catch (const dnnl::error& err) {
    throw Error(detail::str_cat("gemm (cpu): oneDNN has no matmul for [", m.M, ", ", m.K, "] x [", m.K, ", ", m.N,
                                "] (transposes ", m.ta, ", ", m.tb, "; leading dims ", m.lda, ", ", m.ldb, ", ", m.ldc,
                                "): ", err.what()));
  }
  cache.emplace(key, e);
  return e;
}


}  // namespace

void dnnl_matmul(const MatmulCall& m, const void* A, const void* B, void* C) {
  EMBER_CHECK(m.M > 0 && m.N > 0 && m.K > 0, "gemm (cpu): oneDNN matmul needs positive extents, got M=", m.M,
              ", N=", m.N, ", K=", m.K);
  match_omp_threads();
  const std::shared_ptr<const Entry> ep = entry_for(m);
  const Entry& e = *ep;
  dnnl::engine& eng = dnnl_engine();
  thread_local dnnl::stream s(eng);
  DnnlCallBuffer scratch(e.scratchpad.get_size());
  memory am(e.a, eng, const_cast<void*>(A)), bm(e.b, eng, const_cast<void*>(B)), cm(e.c, eng, C);
  memory sm(e.scratchpad, eng, scratch.ptr);
  e.prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}});
  s.wait();
}

std::string dnnl_isa_name() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "isa " + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa()));
  }
}

std::string dnnl_matmul_kernels() {
  MatmulCall m;
  m.M = 64, m.N = 500, m.K = 784, m.tb = true, m.lda = 784, m.ldb = 784, m.ldc = 500;
  memory::desc a, b, c;
  const auto pd = primitive_desc_of(m, a, b, c);
  const dnnl_version_t* v = dnnl_version();
  return detail::str_cat("oneDNN ", v->major, ".", v->minor, ".", v->patch, " ", pd.impl_info_str());
}

}  // namespace ember::cpu
