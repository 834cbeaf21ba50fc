// ember::dist's NCCL communicator: one per rank and GPU, its collectives on a dedicated stream ordered
// against the device's compute stream by events, completion polled against a deadline.
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "cpp/dist/nccl.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/runtime.h"

namespace ember::dist {

bool nccl_available() { return true; }

namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

#define EMBER_NCCL_CHECK(call)                                                                          \
  do {                                                                                                  \
    const ncclResult_t ember_nccl_status_ = (call);                                                     \
    if (ember_nccl_status_ != ncclSuccess)                                                              \
      ::ember::cuda::throw_library_error("NCCL", static_cast<int>(ember_nccl_status_),                  \
                                         ncclGetErrorString(ember_nccl_status_), #call, __FILE__, __LINE__); \
  } while (0)

ncclDataType_t nccl_dtype(DType dt, const std::string& what) {
  switch (dt) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    case DType::I64: return ncclInt64;
    case DType::I32: return ncclInt32;
    case DType::U8: return ncclUint8;
    default: break;
  }
  throw Error(ember::detail::str_cat("dist: ", what, ": NCCL collectives take F32, F64, F16, BF16, I64, I32 or U8, got ",
                              dtype_name(dt)));
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Sum ? ncclSum : ncclAvg; }

class NcclCommImpl;

// One queued collective: `done` is recorded on the communicator's stream after it.
class NcclWork final : public Work {
 public:
  NcclWork(NcclCommImpl& comm, cudaEvent_t done, double timeout, std::string what)
      : comm_(comm), done_(done), deadline_(Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                              std::chrono::duration<double>(timeout))),
        timeout_(timeout), what_(std::move(what)) {}
  ~NcclWork() override;
  bool test() override;
  void wait() override {
    auto pause = std::chrono::microseconds(10);
    while (!test()) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

 private:
  NcclCommImpl& comm_;
  cudaEvent_t done_;
  Clock::time_point deadline_;
  double timeout_;
  std::string what_;
  bool complete_ = false;
};

class NcclCommImpl final : public NcclComm {
 public:
  NcclCommImpl(const std::vector<char>& id, int rank, int size, int device) : device_(device) {
    EMBER_CHECK(id.size() == sizeof(ncclUniqueId), "dist: NCCL id of ", id.size(), " bytes, expected ",
                sizeof(ncclUniqueId));
    cuda::DeviceGuard guard(device_);
    cuda::device_context(device_);  // the compute stream exists before ours is ordered against it
    ncclUniqueId uid;
    std::memcpy(&uid, id.data(), sizeof(uid));
    // Non-blocking initialisation would let a deadline cover it too; NCCL's blocking init already
    // fails when a peer disappears (its bootstrap socket closes), which is the case that matters.
    EMBER_NCCL_CHECK(ncclCommInitRank(&comm_, size, uid, rank));
    EMBER_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  }
  ~NcclCommImpl() override {
    // Process exit may have unloaded the runtime already: ignore what these return.
    if (aborted_) return;
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }

  int device() const override { return device_; }

  std::unique_ptr<Work> all_reduce(Tensor& t, ReduceOp op, double timeout, const std::string& what) override {
    return enqueue(t.numel(), timeout, what, [&](cudaStream_t s) {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_dtype(t.dtype(), what),
                           nccl_op(op), comm_, s);
    });
  }
  std::unique_ptr<Work> broadcast(Tensor& t, int root, double timeout, const std::string& what) override {
    return enqueue(t.numel(), timeout, what, [&](cudaStream_t s) {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), nccl_dtype(t.dtype(), what),
                           root, comm_, s);
    });
  }
  std::unique_ptr<Work> all_gather(const Tensor& in, Tensor& out, double timeout, const std::string& what) override {
    return enqueue(in.numel(), timeout, what, [&](cudaStream_t s) {
      return ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                           nccl_dtype(in.dtype(), what), comm_, s);
    });
  }
  std::unique_ptr<Work> reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op, double timeout,
                                       const std::string& what) override {
    return enqueue(out.numel(), timeout, what, [&](cudaStream_t s) {
      return ncclReduceScatter(in.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()),
                               nccl_dtype(in.dtype(), what), nccl_op(op), comm_, s);
    });
  }

  // Completion of `done`, NCCL's asynchronous error, or the deadline (then the communicator is
  // aborted, which makes NCCL's kernels on every rank that shares it return).
  bool poll(cudaEvent_t done, Clock::time_point deadline, double timeout, const std::string& what) {
    EMBER_CHECK(!aborted_, "dist: ", what, ": the NCCL communicator was aborted after an earlier failure");
    const cudaError_t q = cudaEventQuery(done);
    if (q == cudaSuccess) return true;
    if (q != cudaErrorNotReady) cuda::throw_cuda_error(q, "cudaEventQuery (NCCL collective)", __FILE__, __LINE__);
    ncclResult_t async = ncclSuccess;
    EMBER_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    if (async != ncclSuccess) {
      abort();
      throw Error(ember::detail::str_cat("dist: ", what, " failed in NCCL: ", ncclGetErrorString(async)));
    }
    if (Clock::now() > deadline) {
      abort();
      throw Error(ember::detail::str_cat("dist: ", what, " did not complete within ", timeout,
                                  " s (NCCL): another rank failed, exited or never reached this collective; the "
                                  "communicator was aborted"));
    }
    return false;
  }

 private:
  template <class Call>
  std::unique_ptr<Work> enqueue(int64_t count, double timeout, const std::string& what, Call call) {
    EMBER_CHECK(!aborted_, "dist: ", what, ": the NCCL communicator was aborted after an earlier failure");
    cuda::DeviceGuard guard(device_);
    cudaStream_t compute = cuda::device_context(device_).stream;
    // Ours waits for what the compute stream has queued (the tensor's producer) ...
    EMBER_CUDA_CHECK(cudaEventRecord(ready_, compute));
    EMBER_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    if (count > 0) EMBER_NCCL_CHECK(call(stream_));  // every rank skips an empty one alike (shapes agree)
    // ... and the compute stream waits for the collective before its next kernel touches the tensor.
    cudaEvent_t done = nullptr;
    EMBER_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    EMBER_CUDA_CHECK(cudaEventRecord(done, stream_));
    EMBER_CUDA_CHECK(cudaStreamWaitEvent(compute, done, 0));
    return std::make_unique<NcclWork>(*this, done, timeout, what);
  }

  void abort() {
    if (aborted_) return;
    aborted_ = true;
    ncclCommAbort(comm_);
  }

  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  bool aborted_ = false;
};

NcclWork::~NcclWork() {
  if (!complete_) try {
      wait();
    } catch (const Error&) {
    }
  cudaEventDestroy(done_);
}

bool NcclWork::test() {
  if (complete_) return true;
  complete_ = comm_.poll(done_, deadline_, timeout_, what_);
  return complete_;
}

}  // namespace

size_t nccl_unique_id_bytes() { return sizeof(ncclUniqueId); }

std::vector<char> nccl_make_unique_id() {
  ncclUniqueId uid;
  EMBER_NCCL_CHECK(ncclGetUniqueId(&uid));
  std::vector<char> id(sizeof(uid));
  std::memcpy(id.data(), &uid, sizeof(uid));
  return id;
}

std::unique_ptr<NcclComm> nccl_comm_create(const std::vector<char>& id, int rank, int size, int device) {
  return std::make_unique<NcclCommImpl>(id, rank, size, device);
}

}  // namespace detail
}  // namespace ember::dist
