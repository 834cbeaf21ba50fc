// ember::dist: data-parallel training across processes — the launcher's environment, a process group
// (collectives over MPI for CPU tensors, NCCL for CUDA tensors) and DistributedDataParallel.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::nn {
class Module;
}

namespace ember::dist {

// Where this process sits in the job, read from the launcher's environment:
//  - OpenMPI's mpirun (and srun --mpi=pmix with OpenMPI): OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
//    OMPI_COMM_WORLD_LOCAL_RANK;
//  - otherwise ember's own EMBER_RANK, EMBER_WORLD_SIZE, EMBER_LOCAL_RANK (local rank defaults to the
//    rank), for launchers that set neither (the process must still be started under MPI);
//  - otherwise a single process: rank 0 of 1 (source "none").
// Malformed values (not integers, rank outside [0, size)) throw ember::Error naming the variable.
struct LaunchEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string source = "none";  // "openmpi", "ember" or "none"
};
EMBER_API LaunchEnvironment launch_environment();
// True when a launcher set any of the variables above (the trainer's --distributed autodetection).
EMBER_API bool launched_distributed();

// True when this libember was built with MPI (EMBER_MPI, found by CMake), and with NCCL (CUDA
// builds that found libnccl).
EMBER_API bool mpi_available();
EMBER_API bool nccl_available();

enum class ReduceOp { Sum, Average };

// Default deadline of every collective: 300 s. A collective that has not completed by then (a rank
// that died, hangs or never reached it) throws ember::Error on each rank still waiting, naming the
// collective, its sequence number, the rank and the timeout. The environment variable
// EMBER_DIST_TIMEOUT (seconds) overrides the default at init(); set_timeout() changes it later.
inline constexpr double kDefaultTimeoutSeconds = 300.0;

struct InitOptions {
  double timeout_seconds = 0;  // 0: EMBER_DIST_TIMEOUT when set, else kDefaultTimeoutSeconds
};

// A pending collective (all_reduce_async). wait() returns once it has completed (throwing as the
// blocking collectives do, within the group's timeout); test() polls without blocking. Destroying a
// Work that has not completed waits for it.
class EMBER_API Work {
 public:
  virtual ~Work();
  virtual bool test() = 0;
  virtual void wait() = 0;
};

// The ranks of the job and their collectives. Every rank must call the same collectives in the same
// order with the same dtype and shape (the shapes of all ranks are exchanged and compared first: a
// mismatch throws on every rank, naming both shapes). Tensors are modified in place where the
// signature takes Tensor&, and must then be contiguous. CPU tensors (F32, F64, I64, I32, U8) go
// through MPI; CUDA tensors through NCCL (one GPU per rank: cuda:<local rank>). After a failure the
// group is broken: later collectives throw at once, and finalize() ends the job (MPI_Abort), since MPI
// cannot shut down cleanly with an operation that never completed.
class EMBER_API ProcessGroup {
 public:
  virtual ~ProcessGroup();
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  double timeout_seconds() const { return timeout_; }
  void set_timeout(double seconds);

  // t = op over ranks of t (Average: the sum divided by size(); floating dtypes only).
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  virtual std::unique_ptr<Work> all_reduce_async(Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // t = root's t on every rank.
  virtual void broadcast(Tensor& t, int root = 0) = 0;
  // [size(), ...t.shape]: row r is rank r's t.
  virtual Tensor all_gather(const Tensor& t) = 0;
  // `t` [rows, ...] is reduced over ranks and split by rows: rank r gets rows [begin_r, end_r) of the
  // reduction, where the first rows % size() ranks get rows / size() + 1 rows and the others
  // rows / size() (so any number of rows works, including fewer rows than ranks).
  virtual Tensor reduce_scatter(const Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  virtual void barrier() = 0;

 protected:
  ProcessGroup(int rank, int size, int local_rank, double timeout);
  int rank_;
  int size_;
  int local_rank_;
  double timeout_;
};

// The rows rank `rank` of `size` gets from reduce_scatter of `rows` rows: [first, first + count).
struct RowRange {
  int64_t first = 0;
  int64_t count = 0;
};
EMBER_API RowRange scatter_rows(int64_t rows, int rank, int size);

// Initialises MPI (once per process) and returns the world group, also kept as the default group.
// Throws ember::Error when ember was built without MPI (saying what to install), or when MPI's view
// of the job disagrees with the launcher's environment.
EMBER_API std::shared_ptr<ProcessGroup> init(const InitOptions& options = {});
EMBER_API bool is_initialized();
// The group init() made; throws when init() has not run.
EMBER_API ProcessGroup& default_group();
// Ends MPI (MPI_Finalize; MPI_Abort when the group is broken). Safe to call when not initialised.
EMBER_API void finalize();

// ---- DistributedDataParallel ----

struct DdpOptions {
  int64_t bucket_bytes = 25 * 1024 * 1024;  // gradients are all-reduced in buckets of about this size
  bool broadcast_buffers = true;            // buffers (batch-norm statistics) from rank 0 at construction
};

// Data-parallel training of `module` over `group`: at construction every parameter and buffer is
// broadcast from rank 0 (so every rank starts from rank 0's model or checkpoint). During backward,
// each parameter's gradient is copied into its bucket as soon as it has been accumulated (a
// post-accumulate hook); a bucket whose gradients are all in starts a non-blocking all-reduce
// (average) at once, so communication overlaps the rest of backward. Buckets hold parameters in
// reverse registration order (the order backward produces them). When the last bucket has started,
// the hook waits for all of them and writes the averaged gradients back into each parameter's grad:
// when backward() returns the gradients are the average over ranks, and any optimizer (the fused one
// included) steps unchanged. Every rank must run backward over the same parameters; call
// synchronize() after a backward that left some parameters without a gradient (it all-reduces the
// remaining buckets with zeros for the missing gradients).
class EMBER_API DistributedDataParallel {
 public:
  DistributedDataParallel(std::shared_ptr<nn::Module> module, ProcessGroup& group, DdpOptions options = {});
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  Tensor operator()(const Tensor& input);
  nn::Module& module() { return *module_; }
  const std::shared_ptr<nn::Module>& module_ptr() const { return module_; }
  ProcessGroup& group() { return group_; }
  size_t num_buckets() const;

  // While a NoSync guard lives, backward accumulates gradients locally without communicating
  // (gradient accumulation); the first backward after it all-reduces the accumulated sums.
  class NoSync {
   public:
    explicit NoSync(DistributedDataParallel& ddp);
    ~NoSync();
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    DistributedDataParallel& ddp_;
    bool prev_;
  };
  NoSync no_sync() { return NoSync(*this); }

  // Finishes this iteration's reduction: starts the buckets still waiting (missing gradients as
  // zeros), waits for all and writes the averages back. A no-op when backward already finished it.
  void synchronize();

  // Host time spent waiting for bucket all-reduces to finish (after the last bucket started): the
  // communication backward did not hide.
  double seconds_waiting() const { return seconds_waiting_; }

 private:
  struct Bucket;
  void on_gradient(size_t param_index);
  void launch(Bucket& b);
  void finish();

  std::shared_ptr<nn::Module> module_;
  ProcessGroup& group_;
  DdpOptions options_;
  std::vector<Tensor> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<size_t> bucket_of_;  // parameter index -> bucket
  std::vector<uint64_t> hook_ids_;
  size_t launched_ = 0;
  bool sync_ = true;
  double seconds_waiting_ = 0;
};

}  // namespace ember::dist
