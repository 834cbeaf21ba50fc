// ember::AsyncRead over its device's HostReader (Backend::make_host_reader): the CPU copies at
// start(); CUDA copies into pinned memory on the device's compute stream (cuda/cuda_backend.cpp).
#include "ember/async_read.h"

#include "cpp/backend/backend.h"
#include "ember/error.h"

namespace ember {

struct AsyncRead::Impl {
  bool pending = false;
  Device device;                       // the reader's device
  std::unique_ptr<HostReader> reader;  // made on the first start(), remade when the device changes
};

AsyncRead::AsyncRead() : impl_(std::make_unique<Impl>()) {}
AsyncRead::~AsyncRead() = default;

void AsyncRead::start(const Tensor& t) {
  EMBER_CHECK(t.defined(), "AsyncRead::start: the tensor is undefined");
  Impl& m = *impl_;
  m.pending = false;  // a start() that throws leaves nothing to get
  const Tensor src = t.contiguous();
  if (!m.reader || m.device != t.device()) {
    // The old reader's destructor waits for a copy still in flight into its buffer.
    m.reader = backend_for(t.device()).make_host_reader(t.device());
    m.device = t.device();
  }
  m.reader->start(src);
  m.pending = true;
}

bool AsyncRead::pending() const { return impl_->pending; }

bool AsyncRead::ready() const { return impl_->pending && impl_->reader->ready(); }

Tensor AsyncRead::get() {
  Impl& m = *impl_;
  EMBER_CHECK(m.pending, "AsyncRead::get: nothing to get; call start(tensor) first");
  m.pending = false;
  return m.reader->get("AsyncRead::get() before the copy arrived");
}

}  // namespace ember
