// The measurement behind the CPU GEMM's library choice (issue 13): the f32 GEMM shapes of the MNIST
// MLP and the CNN's fully connected layers, through every candidate side by side in one run:
//   openblas           Debian's OpenBLAS, the core it detected (cblas_sgemm)
//   openblas-prescott  the same library with OPENBLAS_CORETYPE=Prescott (what a CPU it does not
//                      recognise gets: the SSE3 kernels); measured in a child process of this one,
//                      since OpenBLAS reads the variable in its constructor at load time
//   dnnl-sgemm         oneDNN's dnnl_sgemm (JIT kernels chosen from CPUID)
//   dnnl-matmul        oneDNN's matmul primitive, one built per shape up front (as a cache would)
//   blis               BLIS (Debian's libblis4-openmp), loaded with dlopen when installed
// Build and run (not part of the CMake build; a one-off measurement tool):
//   g++ -O2 -std=c++20 -fopenmp tools/bench/gemm_candidates.cpp -I/usr/include/x86_64-linux-gnu/openblas-pthread \
//       -lopenblas -ldnnl -ldl -o /tmp/gemm_candidates && /tmp/gemm_candidates
#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>
#include <unistd.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

extern "C" char* openblas_get_corename();

namespace {

struct Shape {
  const char* name;
  bool ta, tb;  // C[M,N] = op(A) op(B), row-major
  int64_t M, N, K;
};

// The GEMMs of one training step of the MLP 784-500-10 at batch 64 (the first layer's input needs
// no gradient), the evaluation batch, and the CNN's fc1 (9216 -> 128) / fc2 (128 -> 10) at batch 64.
const std::vector<Shape> kShapes = {
    {"mlp fc1 fwd  X.W1^T", false, true, 64, 500, 784},     {"mlp fc1 dW1  dY^T.X", true, false, 500, 784, 64},
    {"mlp fc2 fwd  H.W2^T", false, true, 64, 10, 500},      {"mlp fc2 dH   dY.W2", false, false, 64, 500, 10},
    {"mlp fc2 dW2  dY^T.H", true, false, 10, 500, 64},      {"mlp eval fc1 (10000)", false, true, 10000, 500, 784},
    {"mlp eval fc2 (10000)", false, true, 10000, 10, 500},  {"cnn fc1 fwd", false, true, 64, 128, 9216},
    {"cnn fc1 dX", false, false, 64, 9216, 128},            {"cnn fc1 dW", true, false, 128, 9216, 64},
    {"cnn fc2 fwd", false, true, 64, 10, 128},              {"cnn fc2 dW", true, false, 10, 128, 64},
};

// At one thread the calling thread's CPU time (the machine is shared: time spent descheduled is not
// the kernel's); at more, wall time.
bool g_cpu_clock = true;
double now() {
  if (g_cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The fastest of 15 timings, each the mean of enough calls to take ~10 ms (the least disturbed by
// other processes).
double time_call(const std::function<void()>& fn) {
  fn();
  const double t0 = now();
  fn();
  const double one = std::max(now() - t0, 1e-7);
  const int reps = std::max(1, static_cast<int>(0.01 / one));
  std::vector<double> t;
  for (int r = 0; r < 15; ++r) {
    const double s = now();
    for (int i = 0; i < reps; ++i) fn();
    t.push_back((now() - s) / reps);
  }
  std::sort(t.begin(), t.end());
  return t[0];
}

struct Buffers {
  std::vector<float> a, b, c;
  explicit Buffers(const Shape& s) : a(s.M * s.K), b(s.K * s.N), c(s.M * s.N) {
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7) % 13) * 0.01f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 5) % 11) * 0.01f;
  }
};
int64_t lda(const Shape& s) { return s.ta ? s.M : s.K; }
int64_t ldb(const Shape& s) { return s.tb ? s.K : s.N; }

double run_openblas(const Shape& s) {
  Buffers b(s);
  return time_call([&] {
    cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, s.M, s.N, s.K,
                1.0f, b.a.data(), lda(s), b.b.data(), ldb(s), 0.0f, b.c.data(), s.N);
  });
}

double run_dnnl_sgemm(const Shape& s) {
  Buffers b(s);
  return time_call([&] {
    dnnl_sgemm(s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', s.M, s.N, s.K, 1.0f, b.a.data(), lda(s), b.b.data(), ldb(s), 0.0f,
               b.c.data(), s.N);
  });
}

double run_dnnl_matmul(const Shape& s) {
  using dnnl::memory;
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  static dnnl::stream strm(eng);
  Buffers b(s);
  const auto f32 = memory::data_type::f32;
  const memory::desc ad({s.M, s.K}, f32, s.ta ? memory::dims{1, s.M} : memory::dims{s.K, 1});
  const memory::desc bd({s.K, s.N}, f32, s.tb ? memory::dims{1, s.K} : memory::dims{s.N, 1});
  const memory::desc cd({s.M, s.N}, f32, memory::dims{s.N, 1});
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), eng);
  const dnnl::matmul mm(pd);
  memory am(ad, eng, b.a.data()), bm(bd, eng, b.b.data()), cm(cd, eng, b.c.data());
  std::vector<char> scratch(pd.scratchpad_desc().get_size());
  memory sm(pd.scratchpad_desc(), eng, scratch.data());
  return time_call([&] {
    mm.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, sm}});
    strm.wait();
  });
}

// BLIS's typed API: bli_sgemm(transa, transb, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc).
using bli_sgemm_t = void (*)(int, int, int64_t, int64_t, int64_t, const float*, const float*, int64_t, int64_t,
                             const float*, int64_t, int64_t, const float*, float*, int64_t, int64_t);
using bli_set_threads_t = void (*)(int64_t);
void* blis_handle() {
  static void* h = dlopen("libblis.so.4", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  return h;
}
double run_blis(const Shape& s) {
  auto fn = reinterpret_cast<bli_sgemm_t>(dlsym(blis_handle(), "bli_sgemm"));
  Buffers b(s);
  const float one = 1.0f, zero = 0.0f;
  // The matrices as stored (no transpose flag): strides describe op(A) directly.
  const int64_t rsa = s.ta ? 1 : s.K, csa = s.ta ? s.M : 1, rsb = s.tb ? 1 : s.N, csb = s.tb ? s.K : 1;
  return time_call([&] {
    fn(0 /* BLIS_NO_TRANSPOSE */, 0, s.M, s.N, s.K, &one, b.a.data(), rsa, csa, b.b.data(), rsb, csb, &zero,
       b.c.data(), s.N, 1);
  });
}

double gflops(const Shape& s, double t) { return 2.0 * s.M * s.N * s.K / t / 1e9; }

}  // namespace

int main(int argc, char** argv) {
  // Child mode: only OpenBLAS, one line of seconds per shape (the parent set OPENBLAS_CORETYPE).
  if (argc == 3 && std::strcmp(argv[1], "--openblas-only") == 0) {
    const int threads = std::atoi(argv[2]);
    g_cpu_clock = threads == 1;
    openblas_set_num_threads(threads);
    std::printf("%s\n", openblas_get_corename());
    for (const Shape& s : kShapes) std::printf("%.9g\n", run_openblas(s));
    return 0;
  }
  std::printf("# OpenBLAS core detected: %s; oneDNN %d.%d.%d, ISA %d (dnnl_get_effective_cpu_isa); BLIS %s\n",
              openblas_get_corename(), dnnl_version()->major, dnnl_version()->minor, dnnl_version()->patch,
              static_cast<int>(dnnl_get_effective_cpu_isa()), blis_handle() ? "loaded" : "not installed");
  if (blis_handle()) {
    auto* arch = reinterpret_cast<int (*)()>(dlsym(blis_handle(), "bli_arch_query_id"));
    auto* str = reinterpret_cast<const char* (*)(int)>(dlsym(blis_handle(), "bli_arch_string"));
    if (arch && str) std::printf("# BLIS arch: %s\n", str(arch()));
  }
  for (const int threads : {1, 2}) {
    // The Prescott column from a child process: OPENBLAS_CORETYPE is read when OpenBLAS loads.
    std::vector<double> prescott;
    std::string pres_core;
    {
      const std::string exe = std::string("OPENBLAS_CORETYPE=Prescott ") + "/proc/" + std::to_string(getpid()) +
                        "/exe --openblas-only " + std::to_string(threads);
      if (FILE* p = popen(exe.c_str(), "r")) {
        char line[256];
        if (std::fgets(line, sizeof line, p)) pres_core = std::strtok(line, "\n");
        while (std::fgets(line, sizeof line, p)) prescott.push_back(std::atof(line));
        pclose(p);
      }
    }
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
    g_cpu_clock = threads == 1;
    auto blis_threads =
        reinterpret_cast<bli_set_threads_t>(blis_handle() ? dlsym(blis_handle(), "bli_thread_set_num_threads") : nullptr);
    if (blis_threads) blis_threads(threads);
    std::printf("\n## %d thread(s), GFLOP/s (best of 15; thread CPU time at 1 thread, wall time at 2); Prescott child reports core '%s'\n", threads,
                pres_core.c_str());
    std::printf("%-24s %5s %5s %5s | %9s %9s %9s %9s %9s\n", "shape", "M", "N", "K", "openblas", "ob-presc",
                "dnnl-sgemm", "dnnl-mm", "blis");
    for (size_t i = 0; i < kShapes.size(); ++i) {
      const Shape& s = kShapes[i];
      const double ob = run_openblas(s), ds = run_dnnl_sgemm(s), dm = run_dnnl_matmul(s);
      const double bl = blis_handle() ? run_blis(s) : 0.0;
      std::printf("%-24s %5lld %5lld %5lld | %9.1f %9.1f %9.1f %9.1f %9.1f\n", s.name, (long long)s.M, (long long)s.N,
                  (long long)s.K, gflops(s, ob), i < prescott.size() ? gflops(s, prescott[i]) : 0.0, gflops(s, ds),
                  gflops(s, dm), bl > 0 ? gflops(s, bl) : 0.0);
    }
  }
  return 0;
}
