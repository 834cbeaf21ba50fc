// DistributedDataParallel: broadcast from rank 0, then gradients averaged in buckets that start their
// all-reduce from post-accumulate hooks as soon as they fill.
#include <algorithm>
#include <chrono>

#include "ember/autograd.h"
#include "ember/dist.h"
#include "ember/nn.h"
#include "ember/ops.h"
#include "ember/profile.h"

namespace ember::dist {

// Parameters of one dtype and device, packed into one flat buffer that is all-reduced at once.
struct DistributedDataParallel::Bucket {
  std::vector<size_t> params;   // indices into params_
  std::vector<int64_t> offset;  // each parameter's first element in flat
  Tensor flat;
  std::vector<char> arrived;  // per parameter: its gradient is in flat this iteration
  size_t pending = 0;         // parameters whose gradient has not arrived this iteration
  bool launched = false;
  std::unique_ptr<Work> work;
};

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<nn::Module> module, ProcessGroup& group,
                                                 DdpOptions options)
    : module_(std::move(module)), group_(group), options_(options) {
  EMBER_CHECK(module_ != nullptr, "DistributedDataParallel: the module is null");
  EMBER_CHECK(options_.bucket_bytes >= 1, "DistributedDataParallel: bucket_bytes is ", options_.bucket_bytes,
              ", expected at least 1");
  {
    // Every rank starts from rank 0's values (its initialisation, or the checkpoint it loaded). The
    // header exchange of each broadcast also checks that every rank built the same model.
    autograd::NoGradGuard no_grad;
    for (Tensor& p : module_->parameters()) group_.broadcast(p, 0);
    if (options_.broadcast_buffers)
      for (Tensor& b : module_->buffers()) group_.broadcast(b, 0);
  }
  for (const Tensor& p : module_->parameters())
    if (p.requires_grad()) params_.push_back(p);

  // Reverse registration order: backward reaches the last layers first, so their bucket fills first.
  bucket_of_.resize(params_.size());
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    const int64_t nbytes = p.numel() * static_cast<int64_t>(dtype_size(p.dtype()));
    Bucket* b = buckets_.empty() ? nullptr : buckets_.back().get();
    const bool fits = b && bytes + nbytes <= options_.bucket_bytes;
    const bool same_kind = b && params_[b->params.front()].dtype() == p.dtype() &&
                           params_[b->params.front()].device() == p.device();
    if (!fits || !same_kind) {
      buckets_.push_back(std::make_unique<Bucket>());
      b = buckets_.back().get();
      bytes = 0;
    }
    b->offset.push_back(b->params.empty() ? 0 : b->offset.back() + params_[b->params.back()].numel());
    b->params.push_back(k);
    bytes += nbytes;
    bucket_of_[k] = buckets_.size() - 1;
  }
  for (auto& b : buckets_) {
    const Tensor& last = params_[b->params.back()];
    b->flat = zeros({b->offset.back() + last.numel()}, TensorOptions(last.dtype(), last.device()));
    b->pending = b->params.size();
    b->arrived.assign(b->params.size(), 0);
  }
  for (size_t k = 0; k < params_.size(); ++k)
    hook_ids_.push_back(autograd::register_post_accumulate_grad_hook(params_[k], [this, k](const Tensor&) {
      on_gradient(k);
    }));
}

DistributedDataParallel::~DistributedDataParallel() {
  for (size_t k = 0; k < params_.size(); ++k) autograd::remove_post_accumulate_grad_hook(params_[k], hook_ids_[k]);
}

Tensor DistributedDataParallel::operator()(const Tensor& input) { return (*module_)(input); }

size_t DistributedDataParallel::num_buckets() const { return buckets_.size(); }

void DistributedDataParallel::on_gradient(size_t k) {
  if (!sync_) return;
  // MPI progresses non-blocking collectives only inside MPI calls: each hook polls the buckets in
  // flight, which moves them from the header exchange to the reduction and on, while backward runs.
  for (auto& bp : buckets_)
    if (bp->work) bp->work->test();
  Bucket& b = *buckets_[bucket_of_[k]];
  EMBER_CHECK(!b.launched, "DistributedDataParallel: a second gradient for parameter ", k, " (shape ",
              shape_str(params_[k].shape()),
              ") arrived after its bucket was reduced in this iteration; run one backward per step, or accumulate "
              "inside no_sync()");
  const size_t slot = static_cast<size_t>(std::find(b.params.begin(), b.params.end(), k) - b.params.begin());
  const Tensor& p = params_[k];
  b.flat.narrow(0, b.offset[slot], p.numel()).copy_(p.grad().reshape({p.numel()}));
  b.arrived[slot] = 1;
  if (--b.pending == 0) launch(b);
}

void DistributedDataParallel::launch(Bucket& b) {
  b.launched = true;
  b.work = group_.all_reduce_async(b.flat, ReduceOp::Average);
  // When the last bucket has started, backward is all but over: wait here, so that backward()
  // returns with averaged gradients and the optimizer needs no call of ours.
  if (++launched_ == buckets_.size()) finish();
}

void DistributedDataParallel::finish() {
  autograd::NoGradGuard no_grad;
  {
    profile::Range range("ddp.wait");
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& b : buckets_) b->work->wait();
    seconds_waiting_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  for (auto& bp : buckets_) {
    Bucket& b = *bp;
    b.work.reset();
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      Tensor p = params_[b.params[slot]];
      Tensor avg = b.flat.narrow(0, b.offset[slot], p.numel()).reshape(p.shape());
      if (p.grad().defined())
        p.grad().copy_(avg);
      else
        p.set_grad(avg.clone());
    }
    b.launched = false;
    b.pending = b.params.size();
    b.arrived.assign(b.params.size(), 0);
  }
  launched_ = 0;
}

void DistributedDataParallel::synchronize() {
  if (launched_ == 0 && std::all_of(buckets_.begin(), buckets_.end(),
                                    [](const auto& b) { return b->pending == b->params.size(); }))
    return;  // nothing arrived this iteration (or backward already finished it)
  autograd::NoGradGuard no_grad;
  // In bucket order, the same on every rank: a parameter without a gradient contributes zeros.
  for (auto& bp : buckets_) {
    Bucket& b = *bp;
    if (b.launched) continue;
    for (size_t slot = 0; slot < b.params.size(); ++slot)
      if (!b.arrived[slot]) b.flat.narrow(0, b.offset[slot], params_[b.params[slot]].numel()).zero_();
    launch(b);
  }
}

DistributedDataParallel::NoSync::NoSync(DistributedDataParallel& ddp) : ddp_(ddp), prev_(ddp.sync_) {
  ddp_.sync_ = false;
}
DistributedDataParallel::NoSync::~NoSync() { ddp_.sync_ = prev_; }

}  // namespace ember::dist
