// CPU backend: allocation, host readers, fill, copy/cast, random fills.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/philox.h"
#include "ember/debug.h"

namespace ember {

void* CpuBackend::allocate(size_t nbytes, Device) {
  // 64-byte alignment suits AVX-512 loads and OpenBLAS.
  void* p = nbytes > SIZE_MAX - 63 ? nullptr : std::aligned_alloc(64, nbytes == 0 ? 64 : (nbytes + 63) / 64 * 64);
  if (!p)
    throw OutOfMemory(detail::str_cat("cpu: failed to allocate ", nbytes, " bytes (",
                                      static_cast<double>(nbytes) / double(1 << 30),
                                      " GiB) of host memory; use smaller tensors or batches"));
  const size_t rounded = nbytes == 0 ? 64 : (nbytes + 63) / 64 * 64;
  if (debug::poison_allocations()) std::memset(p, 0xFF, rounded);
  return p;
}

void CpuBackend::deallocate(void* ptr, size_t, Device) { std::free(ptr); }

void CpuBackend::synchronize(Device) {}  // the CPU's work is done when its call returns

namespace {
// A CPU tensor is copied at start() (so later writes to it do not show) and is ready at once.
class CpuHostReader final : public HostReader {
 public:
  void start(const Tensor& src) override {
    copy_ = make_empty(src.shape(), src.dtype(), Device::cpu());
    backend_for(Device::cpu()).copy(copy_, src);
  }
  bool ready() override { return true; }
  Tensor get(const char*) override { return std::exchange(copy_, Tensor()); }

 private:
  Tensor copy_;
};
}  // namespace

std::unique_ptr<HostReader> CpuBackend::make_host_reader(Device) { return std::make_unique<CpuHostReader>(); }

void CpuBackend::fill(const Tensor& out, double value) {
  cpu::visit_dtype(out.dtype(), "fill", [&]<class T>() {
    T v = static_cast<T>(value);
    T* o = cpu::ptr<T>(out);
    cpu::for_each_offset<1>(out.shape(), {&out.strides()}, [&](const std::array<int64_t, 1>& i) { o[i[0]] = v; });
  });
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  if (overlapping_views(dst, src) && !(dst.is_contiguous() && src.is_contiguous() && dst.dtype() == src.dtype())) {
    // The strided loop would read elements it has already overwritten: go through a temporary
    // (contiguous same-dtype views take memmove below, which handles the overlap itself).
    Tensor tmp = make_empty(src.shape(), src.dtype(), src.device());
    copy(tmp, src);
    copy(dst, tmp);
    return;
  }
  cpu::visit_dtype(dst.dtype(), "copy", [&]<class D>() {
    cpu::visit_dtype(src.dtype(), "copy", [&]<class S>() {
      D* d = cpu::ptr<D>(dst);
      const S* s = cpu::ptr<S>(src);
      if constexpr (std::is_same_v<D, S>) {
        if (dst.is_contiguous() && src.is_contiguous()) {
          std::memmove(d, s, static_cast<size_t>(dst.numel()) * sizeof(D));
          return;
        }
      }
      cpu::for_each_offset<2>(dst.shape(), {&dst.strides(), &src.strides()},
                              [&](const std::array<int64_t, 2>& i) { d[i[0]] = static_cast<D>(s[i[1]]); });
    });
  });
}

void CpuBackend::transfer(const Tensor& dst, const Tensor& src) {
  // Host to host: both are plain memory.
  std::memcpy(dst.impl()->data(), src.impl()->data(), static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype()));
}

void CpuBackend::random(const Tensor& out, const RandomParams& p) {
  cpu::visit_dtype(out.dtype(), "random", [&]<class T>() {
    T* o = cpu::ptr<T>(out);
    const int64_t n = out.numel();
    switch (p.kind) {
      case RandomKind::Uniform:
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(p.a + (p.b - p.a) * philox::uniform(p.seed, p.offset + i));
        return;
      case RandomKind::Normal:
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(p.a + p.b * philox::normal(p.seed, p.offset + i));
        return;
      case RandomKind::Int: {
        auto lo = static_cast<int64_t>(p.a), hi = static_cast<int64_t>(p.b);
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(philox::integer(p.seed, p.offset + i, lo, hi));
        return;
      }
      case RandomKind::Bernoulli:
        for (int64_t i = 0; i < n; ++i) o[i] = static_cast<T>(philox::uniform(p.seed, p.offset + i) < p.a ? 1 : 0);
        return;
    }
    throw_unhandled("random", "RandomKind", static_cast<int>(p.kind), "cpu");
  });
}

}  // namespace ember
