// The NCCL communicator behind ember::dist's process group, as an interface with no CUDA types: the
// implementation lives in cuda/nccl.cpp (CUDA builds that found NCCL), a fallback that says NCCL is
// missing in cpp/dist/no_nccl.cpp.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ember/dist.h"

namespace ember::dist::detail {

// One rank's communicator on one GPU. Each collective is queued on the communicator's own stream
// after the work already queued on the device's compute stream (an event), and the compute stream
// waits for it (another event) before anything queued later; the host returns at once. wait() on
// the returned Work blocks the host until the collective is done, polling NCCL's asynchronous error
// and a deadline `timeout` seconds away (past it the communicator is aborted and Error names `what`).
class NcclComm {
 public:
  virtual ~NcclComm() = default;
  virtual std::unique_ptr<Work> all_reduce(Tensor& t, ReduceOp op, double timeout, const std::string& what) = 0;
  virtual std::unique_ptr<Work> broadcast(Tensor& t, int root, double timeout, const std::string& what) = 0;
  // out: [size * in.numel()] elements (contiguous, same dtype and device).
  virtual std::unique_ptr<Work> all_gather(const Tensor& in, Tensor& out, double timeout, const std::string& what) = 0;
  // in: size * out.numel() elements; rank r gets the op-reduction of the r-th block.
  virtual std::unique_ptr<Work> reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op, double timeout,
                                               const std::string& what) = 0;
  virtual int device() const = 0;
};

// The bytes of an ncclUniqueId (rank 0 makes one; the others receive it through MPI).
size_t nccl_unique_id_bytes();
std::vector<char> nccl_make_unique_id();
// Collective over the `size` ranks: every rank calls it with the same id. Throws ember::Error when
// ember was built without NCCL.
std::unique_ptr<NcclComm> nccl_comm_create(const std::vector<char>& id, int rank, int size, int device);

}  // namespace ember::dist::detail
