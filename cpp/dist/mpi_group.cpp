// The MPI process group: init/finalize, and every collective as a non-blocking MPI call polled against
// the group's deadline, preceded by an exchange of the ranks' headers (collective, dtype, shape).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "cpp/core/tensor_impl.h"
#include "cpp/dist/internal.h"
#include "cpp/dist/nccl.h"
#include "ember/autograd.h"
#include "ember/ops.h"

namespace ember::dist {
namespace {

using Clock = std::chrono::steady_clock;

enum class Kind : int64_t { AllReduce = 1, Broadcast, AllGather, ReduceScatter, Barrier, NcclId };
const char* kind_name(int64_t k) {
  switch (static_cast<Kind>(k)) {
    case Kind::AllReduce: return "all_reduce";
    case Kind::Broadcast: return "broadcast";
    case Kind::AllGather: return "all_gather";
    case Kind::ReduceScatter: return "reduce_scatter";
    case Kind::Barrier: return "barrier";
    case Kind::NcclId: return "NCCL setup";
  }
  return "an unknown collective";
}

// What every rank says about the collective it is entering: compared across ranks before any data
// moves, so a mismatch is reported instead of corrupting memory or hanging.
constexpr int kMaxHeaderDims = 8;
constexpr int kHeaderWords = 6 + kMaxHeaderDims;
struct Header {
  int64_t w[kHeaderWords] = {};
  // kind, sequence number, dtype (-1: none), device type, argument (root or op), ndim, dims...
  static Header make(Kind kind, int64_t seq, const Tensor* t, int64_t arg) {
    Header h;
    h.w[0] = static_cast<int64_t>(kind);
    h.w[1] = seq;
    h.w[2] = t ? static_cast<int64_t>(t->dtype()) : -1;
    h.w[3] = t ? static_cast<int64_t>(t->device().type) : -1;
    h.w[4] = arg;
    h.w[5] = t ? t->dim() : 0;
    // Shapes of more than kMaxHeaderDims dims are compared by their first dims and their numel.
    if (t) {
      const int64_t nd = std::min<int64_t>(t->dim(), kMaxHeaderDims - 1);
      for (int64_t i = 0; i < nd; ++i) h.w[6 + i] = t->size(i);
      h.w[6 + kMaxHeaderDims - 1] = t->numel();
    }
    return h;
  }
  std::string describe() const {
    std::string s = kind_name(w[0]);
    if (w[2] < 0) return s;
    s += ember::detail::str_cat(" of ", dtype_name(static_cast<DType>(w[2])), " [");
    const int64_t nd = std::min<int64_t>(w[5], kMaxHeaderDims - 1);
    for (int64_t i = 0; i < nd; ++i) s += ember::detail::str_cat(i ? ", " : "", w[6 + i]);
    if (w[5] > nd) s += ", ...";
    s += "]";
    if (w[3] >= 0) s += ember::detail::str_cat(" on ", static_cast<DeviceType>(w[3]) == DeviceType::CUDA ? "CUDA" : "CPU");
    const Kind k = static_cast<Kind>(w[0]);
    if (k == Kind::Broadcast) s += ember::detail::str_cat(" from root ", w[4]);
    if (k == Kind::AllReduce || k == Kind::ReduceScatter) s += w[4] == 0 ? " (sum)" : " (average)";
    return s;
  }
};

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return ember::detail::str_cat("MPI error ", code);
  return std::string(buf, static_cast<size_t>(len));
}

MPI_Datatype mpi_dtype(DType dt, const char* what) {
  switch (dt) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I64: return MPI_INT64_T;
    case DType::I32: return MPI_INT32_T;
    case DType::U8: return MPI_UINT8_T;
    default: break;
  }
  throw Error(ember::detail::str_cat("dist: ", what, " of a ", dtype_name(dt),
                              " CPU tensor: MPI collectives take F32, F64, I64, I32 or U8; convert it with to()"));
}

int mpi_count(int64_t n, const char* what) {
  EMBER_CHECK(n <= INT_MAX, "dist: ", what, " of ", n, " elements: MPI counts are int, at most ", INT_MAX,
              " elements per collective; split the tensor");
  return static_cast<int>(n);
}

// A collective wrote into t's storage behind autograd's back: count it as an in-place write, so a
// tensor saved for backward before it is reported stale instead of silently used.
void bump_version(const Tensor& t) { t.impl()->storage->version++; }

void scale(Tensor& t, double s) {
  if (t.numel() == 0) return;
  autograd::NoGradGuard no_grad;
  mul_(t, s);
}

// Between polls of a pending request: yield for the first few milliseconds (a peer a step behind
// arrives within them, and sleeping would add its granularity to every step), then sleep a growing
// interval up to 1 ms, so a rank waiting long on a slow or failed peer leaves the CPU to others.
class Backoff {
 public:
  void pause() {
    if (Clock::now() - start_ < std::chrono::milliseconds(5)) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(sleep_);
    sleep_ = std::min(sleep_ * 2, std::chrono::microseconds(1000));
  }

 private:
  Clock::time_point start_ = Clock::now();
  std::chrono::microseconds sleep_{50};
};

class MpiGroup;
MpiGroup* g_group = nullptr;
std::shared_ptr<ProcessGroup> g_group_owner;
bool g_mpi_initialized_here = false;

class MpiGroup final : public ProcessGroup {
 public:
  MpiGroup(MPI_Comm comm, int rank, int size, int local_rank, double timeout)
      : ProcessGroup(rank, size, local_rank, timeout), comm_(comm) {}
  ~MpiGroup() override = default;

  MPI_Comm comm() const { return comm_; }
  bool broken() const { return !broken_.empty(); }

  // Everything a collective names in its errors.
  std::string where(const Header& h) const {
    return ember::detail::str_cat(h.describe(), " (collective #", h.w[1], ") on rank ", rank_, " of ", size_);
  }

  [[noreturn]] void fail(const std::string& message) {
    if (broken_.empty()) broken_ = message;
    throw Error(message);
  }

  void check_usable(const char* what) const {
    EMBER_CHECK(broken_.empty(), "dist: ", what, " on rank ", rank_, ": the process group failed earlier (", broken_,
                ") and cannot be used again; end the job (dist::finalize() aborts it) and restart from a checkpoint");
  }

  // Polls `req` until it completes, or fails once `deadline` has passed (see Backoff).
  void wait_request(MPI_Request& req, Clock::time_point deadline, const Header& h) {
    Backoff backoff;
    while (!test_request(req, deadline, h)) backoff.pause();
  }

  bool test_request(MPI_Request& req, Clock::time_point deadline, const Header& h) {
    int flag = 0;
    const int rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) fail(ember::detail::str_cat("dist: ", where(h), " failed in MPI: ", mpi_error_string(rc)));
    if (flag) return true;
    if (Clock::now() > deadline)
      fail(ember::detail::str_cat("dist: ", where(h), " did not complete within ", timeout_,
                           " s: another rank failed, exited or never reached this collective (its own error says "
                           "why); raise the timeout with EMBER_DIST_TIMEOUT or ProcessGroup::set_timeout if it is "
                           "only slow"));
    return false;
  }

  void check_rc(int rc, const Header& h, const char* call) {
    if (rc != MPI_SUCCESS) fail(ember::detail::str_cat("dist: ", where(h), ": ", call, " failed: ", mpi_error_string(rc)));
  }

  // Starts the header exchange of the next collective. finish_headers() compares them.
  // The buffers MPI reads and writes while the exchange is in flight live on the heap: an Exchange
  // may be moved (returned, assigned) before it completes, and a vector's move keeps its buffer.
  struct Exchange {
    Header mine;
    std::vector<int64_t> send;
    std::vector<int64_t> all;
    MPI_Request req = MPI_REQUEST_NULL;
    Clock::time_point deadline;
  };
  Exchange start_headers(Kind kind, const Tensor* t, int64_t arg) {
    Exchange x;
    x.mine = Header::make(kind, seq_++, t, arg);
    x.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_));
    x.send.assign(x.mine.w, x.mine.w + kHeaderWords);
    x.all.resize(static_cast<size_t>(kHeaderWords) * size_);
    check_rc(MPI_Iallgather(x.send.data(), kHeaderWords, MPI_INT64_T, x.all.data(), kHeaderWords, MPI_INT64_T, comm_, &x.req),
             x.mine, "MPI_Iallgather (header)");
    return x;
  }
  // Every rank compares every header with rank 0's, so all of them raise the same error.
  void finish_headers(const Exchange& x) {
    const int64_t* h0 = x.all.data();
    for (int r = 1; r < size_; ++r) {
      const int64_t* hr = x.all.data() + static_cast<size_t>(r) * kHeaderWords;
      if (std::equal(h0, h0 + kHeaderWords, hr)) continue;
      Header a, b;
      std::copy(h0, h0 + kHeaderWords, a.w);
      std::copy(hr, hr + kHeaderWords, b.w);
      // Not fail(): every rank saw the same headers and throws here, so the group stays usable.
      throw Error(ember::detail::str_cat("dist: mismatched collectives at #", x.mine.w[1], ": rank 0 called ", a.describe(),
                           " but rank ", r, " called ", b.describe(), " (raised on rank ", rank_, " of ", size_,
                           "); every rank must call the same collectives in the same order, with the same dtype "
                           "and shape"));
    }
  }
  void exchange_headers(Exchange& x) {
    wait_request(x.req, x.deadline, x.mine);
    finish_headers(x);
  }

  static void check_inplace_tensor(const Tensor& t, const char* what) {
    EMBER_CHECK(t.defined(), "dist: ", what, " of an undefined tensor");
    EMBER_CHECK(t.is_contiguous(), "dist: ", what, " works in place on a contiguous tensor, got shape ",
                shape_str(t.shape()), " with strides ", shape_str(t.strides()), "; pass t.contiguous() and copy back");
  }
  void check_average(const Tensor& t, ReduceOp op, const char* what) const {
    EMBER_CHECK(op != ReduceOp::Average || is_floating(t.dtype()), "dist: ", what, " with Average of a ",
                dtype_name(t.dtype()), " tensor: averaging needs a floating dtype (use Sum and divide)");
  }

  detail::NcclComm& nccl(const Tensor& t, const Header& h);

  class AllReduceWork;

  void all_reduce(Tensor& t, ReduceOp op) override { all_reduce_async(t, op)->wait(); }
  std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op) override;

  void broadcast(Tensor& t, int root) override {
    check_usable("broadcast");
    check_inplace_tensor(t, "broadcast");
    EMBER_CHECK(root >= 0 && root < size_, "dist: broadcast from root ", root, " but the group has ranks 0 to ",
                size_ - 1);
    Exchange x = start_headers(Kind::Broadcast, &t, root);
    exchange_headers(x);
    if (t.device().is_cuda()) {
      nccl(t, x.mine).broadcast(t, root, timeout_, where(x.mine))->wait();
      bump_version(t);
      return;
    }
    MPI_Request req;
    check_rc(MPI_Ibcast(t.data_ptr(), mpi_count(t.numel(), "broadcast"), mpi_dtype(t.dtype(), "broadcast"), root,
                        comm_, &req),
             x.mine, "MPI_Ibcast");
    wait_request(req, x.deadline, x.mine);
    bump_version(t);
  }

  Tensor all_gather(const Tensor& in) override {
    check_usable("all_gather");
    EMBER_CHECK(in.defined(), "dist: all_gather of an undefined tensor");
    Exchange x = start_headers(Kind::AllGather, &in, 0);
    exchange_headers(x);
    const Tensor t = in.contiguous();
    Shape out_shape{size_};
    for (int64_t d : t.shape()) out_shape.push_back(d);
    Tensor out = empty(out_shape, t.options());
    if (t.device().is_cuda()) {
      nccl(t, x.mine).all_gather(t, out, timeout_, where(x.mine))->wait();
      return out;
    }
    const MPI_Datatype dt = mpi_dtype(t.dtype(), "all_gather");
    const int count = mpi_count(t.numel(), "all_gather");
    mpi_count(out.numel(), "all_gather");
    MPI_Request req;
    check_rc(MPI_Iallgather(t.data_ptr(), count, dt, out.data_ptr(), count, dt, comm_, &req), x.mine,
             "MPI_Iallgather");
    wait_request(req, x.deadline, x.mine);
    return out;
  }

  Tensor reduce_scatter(const Tensor& in, ReduceOp op) override {
    check_usable("reduce_scatter");
    EMBER_CHECK(in.defined() && in.dim() >= 1, "dist: reduce_scatter needs a tensor of at least one dim (rows), got ",
                in.defined() ? "a 0-d tensor" : "an undefined tensor");
    check_average(in, op, "reduce_scatter");
    Exchange x = start_headers(Kind::ReduceScatter, &in, op == ReduceOp::Sum ? 0 : 1);
    exchange_headers(x);
    const Tensor t = in.contiguous();
    const int64_t rows = t.size(0), inner = rows == 0 ? 0 : t.numel() / rows;
    const RowRange mine = scatter_rows(rows, rank_, size_);
    Shape out_shape = t.shape();
    out_shape[0] = mine.count;
    if (t.device().is_cuda()) {
      // NCCL scatters equal blocks: pad every rank's block to the largest (rows / size, rounded up).
      const int64_t block = scatter_rows(rows, 0, size_).count;
      Shape padded_shape = t.shape();
      padded_shape[0] = block * size_;
      Tensor padded = zeros(padded_shape, t.options());
      for (int r = 0; r < size_; ++r) {
        const RowRange rr = scatter_rows(rows, r, size_);
        if (rr.count > 0) padded.narrow(0, r * block, rr.count).copy_(t.narrow(0, rr.first, rr.count));
      }
      Shape block_shape = t.shape();
      block_shape[0] = block;
      Tensor out = empty(block_shape, t.options());
      nccl(t, x.mine).reduce_scatter(padded, out, op, timeout_, where(x.mine))->wait();
      return out.narrow(0, 0, mine.count).contiguous();
    }
    const MPI_Datatype dt = mpi_dtype(t.dtype(), "reduce_scatter");
    mpi_count(t.numel(), "reduce_scatter");
    std::vector<int> counts(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r) counts[r] = static_cast<int>(scatter_rows(rows, r, size_).count * inner);
    Tensor out = empty(out_shape, t.options());
    // MPI reads the send buffer even where a block is empty: give it a valid pointer.
    MPI_Request req;
    check_rc(MPI_Ireduce_scatter(t.data_ptr(), out.data_ptr(), counts.data(), dt, MPI_SUM, comm_, &req), x.mine,
             "MPI_Ireduce_scatter");
    wait_request(req, x.deadline, x.mine);
    if (op == ReduceOp::Average) scale(out, 1.0 / size_);
    return out;
  }

  void barrier() override {
    check_usable("barrier");
    Exchange x = start_headers(Kind::Barrier, nullptr, 0);
    exchange_headers(x);
    MPI_Request req;
    check_rc(MPI_Ibarrier(comm_, &req), x.mine, "MPI_Ibarrier");
    wait_request(req, x.deadline, x.mine);
  }

  void free_comm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

 private:
  MPI_Comm comm_;
  int64_t seq_ = 0;
  std::string broken_;
  std::unique_ptr<detail::NcclComm> nccl_;
};

// A non-blocking all-reduce. The header exchange before it is blocking: MPI matches collectives by
// the order in which each rank starts them, so every rank must start header k, reduction k, header
// k + 1, ... in that order, whatever its progress (a header exchange advanced from test() would
// start the reductions at different points on different ranks).
class MpiGroup::AllReduceWork final : public Work {
 public:
  AllReduceWork(MpiGroup& g, Tensor t, ReduceOp op) : g_(g), t_(std::move(t)), op_(op) {
    x_ = g_.start_headers(Kind::AllReduce, &t_, op == ReduceOp::Sum ? 0 : 1);
    g_.exchange_headers(x_);
    if (t_.device().is_cuda()) {
      nccl_work_ = g_.nccl(t_, x_.mine).all_reduce(t_, op_, g_.timeout_seconds(), g_.where(x_.mine));
      stage_ = Stage::Nccl;
      return;
    }
    g_.check_rc(MPI_Iallreduce(MPI_IN_PLACE, t_.data_ptr(), mpi_count(t_.numel(), "all_reduce"),
                               mpi_dtype(t_.dtype(), "all_reduce"), MPI_SUM, g_.comm(), &req_),
                x_.mine, "MPI_Iallreduce");
    stage_ = Stage::Data;
  }
  ~AllReduceWork() override {
    // Waiting is the only safe way to drop an operation MPI may still write into t_; a failure here
    // has already broken the group, which is what the next collective reports.
    if (stage_ != Stage::Done && !g_.broken()) try {
        wait();
      } catch (const Error&) {
      }
  }

  bool test() override {
    if (stage_ == Stage::Nccl) {
      if (!nccl_work_->test()) return false;
      bump_version(t_);
      stage_ = Stage::Done;
    }
    if (stage_ == Stage::Data) {
      if (!g_.test_request(req_, x_.deadline, x_.mine)) return false;
      if (op_ == ReduceOp::Average) scale(t_, 1.0 / g_.size());
      bump_version(t_);
      stage_ = Stage::Done;
    }
    return true;
  }

  void wait() override {
    Backoff backoff;
    while (!test()) backoff.pause();
  }

 private:
  enum class Stage { Data, Nccl, Done };

  MpiGroup& g_;
  Tensor t_;
  ReduceOp op_;
  Exchange x_;
  MPI_Request req_ = MPI_REQUEST_NULL;
  std::unique_ptr<Work> nccl_work_;
  Stage stage_ = Stage::Done;
};

std::unique_ptr<Work> MpiGroup::all_reduce_async(Tensor& t, ReduceOp op) {
  check_usable("all_reduce");
  check_inplace_tensor(t, "all_reduce");
  check_average(t, op, "all_reduce");
  if (!t.device().is_cuda()) mpi_dtype(t.dtype(), "all_reduce");
  return std::make_unique<AllReduceWork>(*this, t, op);
}

// The communicator is made on the first CUDA collective: rank 0's NCCL id reaches the others through
// MPI (a broadcast with the group's deadline), then every rank joins on its tensor's GPU.
detail::NcclComm& MpiGroup::nccl(const Tensor& t, const Header& h) {
  if (nccl_) {
    EMBER_CHECK(nccl_->device() == t.device().index, "dist: ", where(h), ": this rank's NCCL communicator is on cuda:",
                nccl_->device(), " but the tensor is on ", t.device().str(),
                "; one GPU per rank: keep every tensor of this rank on cuda:", nccl_->device());
    return *nccl_;
  }
  std::vector<char> id(detail::nccl_unique_id_bytes());
  if (rank_ == 0) id = detail::nccl_make_unique_id();
  Exchange x = start_headers(Kind::NcclId, nullptr, static_cast<int64_t>(id.size()));
  exchange_headers(x);
  MPI_Request req;
  check_rc(MPI_Ibcast(id.data(), static_cast<int>(id.size()), MPI_BYTE, 0, comm_, &req), x.mine, "MPI_Ibcast (NCCL id)");
  wait_request(req, x.deadline, x.mine);
  nccl_ = detail::nccl_comm_create(id, rank_, size_, t.device().index);
  return *nccl_;
}

}  // namespace

bool mpi_available() { return true; }

std::shared_ptr<ProcessGroup> init(const InitOptions& options) {
  if (g_group_owner) return g_group_owner;
  const LaunchEnvironment env = launch_environment();
  const double timeout = detail::default_timeout(options);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Serialized: the thread running backward (and its hooks) calls MPI, one thread at a time.
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    EMBER_CHECK(rc == MPI_SUCCESS, "dist::init: MPI_Init_thread failed: ", mpi_error_string(rc));
    g_mpi_initialized_here = true;
  }
  MPI_Comm comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (env.source != "none")
    EMBER_CHECK(env.rank == rank && env.world_size == size, "dist::init: the launcher's environment (", env.source,
                ") says rank ", env.rank, " of ", env.world_size, " but MPI says rank ", rank, " of ", size,
                "; launch every rank with mpirun (or srun) so that both agree");
  int local_rank = env.local_rank;
  if (env.source == "none") {
    // The ranks on this node, as MPI groups them (shared memory): the rank among them picks the GPU.
    MPI_Comm node;
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
  }
  auto group = std::make_shared<MpiGroup>(comm, rank, size, local_rank, timeout);
  g_group = group.get();
  g_group_owner = group;
  return group;
}

bool is_initialized() { return g_group_owner != nullptr; }

ProcessGroup& default_group() {
  EMBER_CHECK(g_group_owner, "dist: no process group: call dist::init() first");
  return *g_group_owner;
}

void finalize() {
  if (!g_group_owner) return;
  if (g_group->broken()) {
    // An operation that never completed stays posted: MPI_Finalize would wait for it forever.
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  g_group->free_comm();
  g_group = nullptr;
  g_group_owner.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (g_mpi_initialized_here && !finalized) MPI_Finalize();
}

}  // namespace ember::dist
