// ember::AsyncRead: a device tensor's values on the host without making the host wait.
#pragma once
#include <memory>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember {

// For progress displays in a training loop: start() queues a copy of a (small) tensor into pinned
// host memory behind the work already queued on its device and returns at once; ready() asks,
// without waiting, whether the copy has arrived; get() returns the values as a CPU tensor. A CPU
// tensor is copied at start() and is ready at once.
//
//   AsyncRead loss_reader;
//   ... each refresh: if (loss_reader.ready()) shown = loss_reader.get().item<double>();
//                     if (!loss_reader.pending()) loss_reader.start(running_loss);
//
// The buffer is reused from one start() to the next. Not thread-safe; not copyable.
class EMBER_API AsyncRead {
 public:
  AsyncRead();
  ~AsyncRead();
  AsyncRead(const AsyncRead&) = delete;
  AsyncRead& operator=(const AsyncRead&) = delete;

  // Queues the copy of `t` (any device, dtype and strides; made contiguous on its device first).
  // A copy still pending is dropped (its bytes are overwritten only after it has arrived).
  void start(const Tensor& t);
  // A copy was started and get() has not taken it yet.
  bool pending() const;
  // pending() and the bytes have arrived: get() will not wait.
  bool ready() const;
  // The pending copy's values (a CPU tensor of t's shape and dtype), waiting for it if it has not
  // arrived (a synchronisation, counted and checked by cuda::set_sync_debug_mode). Throws
  // ember::Error when nothing is pending.
  Tensor get();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember
