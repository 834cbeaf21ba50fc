// TensorDataset, DataLoader (a prefetching host thread, or device-resident batches), augmentation and
// the gather + normalise step.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "cpp/backend/backend.h"
#include "cpp/backend/data_math.h"
#include "cpp/core/tensor_impl.h"
#include "ember/autograd.h"
#include "ember/data.h"
#include "ember/ops.h"
#include "ember/profile.h"

namespace ember::data {
namespace {

// Philox counters of one loader: bits 63..40 the epoch, 39..38 the stream, 37..0 the position.
// Every random number is then a function of (seed, epoch, stream, position) alone.
constexpr int kEpochShift = 40;
constexpr int64_t kMaxEpoch = (int64_t{1} << (64 - kEpochShift)) - 1;
constexpr int64_t kMaxSamples = int64_t{1} << 38;
enum class Stream : uint64_t { Shuffle = 0, Augment = 1 };

uint64_t counter(int64_t epoch, Stream s, int64_t position) {
  return (static_cast<uint64_t>(epoch) << kEpochShift) | (static_cast<uint64_t>(s) << 38) |
         static_cast<uint64_t>(position);
}

// The order of epoch `epoch` on `device`: a permutation drawn by the device's backend (Philox keys
// sorted stably; the same on every device), or 0..n-1 without shuffling.
Tensor epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch, Device device) {
  if (!shuffle) return arange(n, TensorOptions(DType::I64, device));
  Tensor order = make_empty({n}, DType::I64, device);
  if (n > 0) backend_for(device).random_permutation(order, seed, counter(epoch, Stream::Shuffle, 0));
  return order;
}

void check_shard(const ShardOptions& s, const char* fn) {
  EMBER_CHECK(s.num_replicas >= 1 && s.rank >= 0 && s.rank < s.num_replicas, fn, ": shard rank ", s.rank, " of ",
              s.num_replicas, " replicas, expected num_replicas >= 1 and 0 <= rank < num_replicas");
}

bool sharded(const ShardOptions& s) { return s.num_replicas > 1; }

// The epoch's order restricted to the shard: order[positions].
Tensor shard_order(const Tensor& order, const Tensor& positions) { return index_select(order, 0, positions); }

void check_normalization(double mean, double std, const char* fn) {
  EMBER_CHECK(std::isfinite(mean) && std::isfinite(std) && std > 0, fn, ": mean ", mean, " and std ", std,
              " must be finite with std > 0");
}

BatchParams batch_params(const DataLoaderOptions& o, int64_t epoch, int64_t first) {
  BatchParams p;
  p.first = first;
  p.mean = o.mean;
  p.std = o.std;
  p.augment = o.augment;
  p.seed = o.seed;
  p.augment_counter = counter(epoch, Stream::Augment, 0);
  p.max_degrees = o.augment_options.max_degrees;
  p.max_shift = o.augment_options.max_shift;
  p.max_scale = o.augment_options.max_scale;
  p.crop_padding = o.augment_options.crop_padding;
  p.hflip = o.augment_options.hflip;
  return p;
}

}  // namespace

TensorDataset::TensorDataset(Tensor images, Tensor labels) {
  EMBER_CHECK(images.defined() && labels.defined(), "TensorDataset: images and labels must be defined");
  EMBER_CHECK(images.dtype() == DType::U8 && images.dim() >= 2, "TensorDataset: images must be U8 [N, ...], got ",
              dtype_name(images.dtype()), " ", shape_str(images.shape()));
  EMBER_CHECK(labels.dtype() == DType::I64 && labels.dim() == 1, "TensorDataset: labels must be I64 [N], got ",
              dtype_name(labels.dtype()), " ", shape_str(labels.shape()));
  EMBER_CHECK(images.size(0) == labels.size(0), "TensorDataset: ", images.size(0), " images (shape ",
              shape_str(images.shape()), ") but ", labels.size(0), " labels, expected equal counts");
  EMBER_CHECK(images.size(0) < kMaxSamples, "TensorDataset: ", images.size(0), " samples, expected fewer than 2^38");
  images_ = images.cpu().contiguous();
  labels_ = labels.cpu().contiguous();
}

Tensor gather_normalize(const Tensor& images_u8, const Tensor& indices, double mean, double std) {
  EMBER_CHECK(images_u8.defined() && indices.defined(), "gather_normalize: images and indices must be defined");
  EMBER_CHECK(images_u8.dtype() == DType::U8 && images_u8.dim() >= 1,
              "gather_normalize: images must be U8 [N, ...], got ", dtype_name(images_u8.dtype()), " ",
              shape_str(images_u8.shape()));
  EMBER_CHECK(indices.dtype() == DType::I64 && indices.dim() == 1, "gather_normalize: indices must be I64 [B], got ",
              dtype_name(indices.dtype()), " ", shape_str(indices.shape()));
  EMBER_CHECK(images_u8.device() == indices.device(), "gather_normalize: images on ", images_u8.device(),
              " but indices on ", indices.device(), ", expected one device");
  check_normalization(mean, std, "gather_normalize");
  if (indices.numel() > 0)
    backend_for(indices.device())
        .check_index(indices, {.op = "gather_normalize",
                               .what = "indices",
                               .bound_name = "the number of images",
                               .bound = images_u8.size(0)});
  Shape shape = images_u8.shape();
  shape[0] = indices.numel();
  Tensor out = make_empty(shape, DType::F32, images_u8.device());
  BatchParams p;
  p.mean = mean;
  p.std = std;
  if (out.numel() > 0)
    backend_for(images_u8.device()).gather_batch(out, Tensor(), images_u8.contiguous(), Tensor(), indices, p);
  return out;
}

Tensor rotate_translate(const Tensor& image_u8, double degrees, double dx, double dy) {
  EMBER_CHECK(image_u8.defined() && image_u8.dtype() == DType::U8 && image_u8.dim() == 2,
              "rotate_translate: image must be U8 [rows, cols], got ",
              image_u8.defined() ? detail::str_cat(dtype_name(image_u8.dtype()), " ", shape_str(image_u8.shape()))
                                 : std::string("an undefined tensor"));
  EMBER_CHECK(std::isfinite(degrees) && std::isfinite(dx) && std::isfinite(dy), "rotate_translate: degrees ", degrees,
              ", dx ", dx, ", dy ", dy, " must be finite");
  const Tensor src = image_u8.cpu().contiguous();
  Tensor out = make_empty(src.shape(), DType::U8, Device::cpu());
  const data_math::Warp w = data_math::make_warp(degrees, dx, dy);
  const int64_t rows = src.size(0), cols = src.size(1);
  uint8_t* o = out.data<uint8_t>();
  for (int64_t y = 0; y < rows; ++y)
    for (int64_t x = 0; x < cols; ++x) o[y * cols + x] = data_math::warp_pixel(src.data<uint8_t>(), rows, cols, y, x, w);
  return out.to(image_u8.device());
}

int64_t shard_size(int64_t n, const ShardOptions& shard) {
  check_shard(shard, "shard_size");
  EMBER_CHECK(n >= 0, "shard_size: dataset size ", n, " is negative");
  const int64_t r = shard.num_replicas;
  return shard.drop_last ? n / r : n / r + (n % r != 0 ? 1 : 0);
}

Tensor shard_positions(int64_t n, const ShardOptions& shard) {
  const int64_t m = shard_size(n, shard);
  Tensor pos = make_empty({m}, DType::I64, Device::cpu());
  int64_t* p = pos.data<int64_t>();
  // m * num_replicas <= n + num_replicas - 1, so rank + j * num_replicas does not overflow.
  for (int64_t j = 0; j < m; ++j) p[j] = (shard.rank + j * shard.num_replicas) % n;
  return pos;
}

DistributedSampler::DistributedSampler(int64_t dataset_size, ShardOptions shard, bool shuffle, uint64_t seed)
    : size_(dataset_size), shard_(shard), shuffle_(shuffle), seed_(seed) {
  check_shard(shard_, "DistributedSampler");
  EMBER_CHECK(size_ >= 0, "DistributedSampler: dataset size ", size_, " is negative");
}

Tensor DistributedSampler::indices(int64_t epoch) const {
  EMBER_CHECK(epoch >= 0 && epoch <= kMaxEpoch, "DistributedSampler::indices: epoch ", epoch, ", expected 0 to ",
              kMaxEpoch);
  return shard_order(epoch_order(size_, shuffle_, seed_, epoch, Device::cpu()), shard_positions(size_, shard_));
}

// One running epoch. The host path's worker thread reads only what is fixed while it runs: this
// state's order, the loader's dataset and options.
struct DataLoader::State {
  int64_t epoch = 0;
  int64_t num_batches = 0;
  int64_t next_batch = 0;  // device-resident path: the next batch to gather
  Tensor order;            // the epoch's order, I64 [N]: on the host, or on the device when resident

  std::thread worker;
  std::mutex mu;
  std::condition_variable ready;  // a batch was queued, or the worker finished
  std::condition_variable space;  // the queue shrank, or stop was requested
  std::deque<Batch> queue;
  std::atomic<bool> stop{false};
  bool done = false;
  std::exception_ptr error;

  ~State() {
    if (worker.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu);
        stop = true;
      }
      space.notify_all();
      worker.join();
    }
  }
};

DataLoader::DataLoader(TensorDataset dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  const DataLoaderOptions& o = options_;
  EMBER_CHECK(o.batch_size >= 1, "DataLoader: batch_size is ", o.batch_size, ", expected at least 1");
  EMBER_CHECK(o.prefetch >= 1 && o.prefetch <= 16, "DataLoader: prefetch is ", o.prefetch, ", expected 1 to 16");
  check_normalization(o.mean, o.std, "DataLoader");
  check_shard(o.shard, "DataLoader");
  const AugmentOptions& a = o.augment_options;
  EMBER_CHECK(std::isfinite(a.max_shift) && a.max_shift >= 0 && std::isfinite(a.max_degrees) && a.max_degrees >= 0 &&
                  a.max_degrees <= 180,
              "DataLoader: augment_options max_shift ", a.max_shift, " and max_degrees ", a.max_degrees,
              " must be finite, non-negative, max_degrees at most 180");
  EMBER_CHECK(std::isfinite(a.max_scale) && a.max_scale >= 0 && a.max_scale <= 0.5 && a.crop_padding >= 0 &&
                  a.crop_padding <= 1024,
              "DataLoader: augment_options max_scale ", a.max_scale, " must lie in [0, 0.5] and crop_padding ",
              a.crop_padding, " in [0, 1024]");
  const bool needs_2d = o.augment || o.transform || !o.flatten;
  EMBER_CHECK(!needs_2d || dataset_.images().dim() == 3,
              "DataLoader: augment, transform and flatten = false need images [N, rows, cols], got ",
              shape_str(dataset_.images().shape()));
  EMBER_CHECK(o.source != BatchSource::Resident || !o.transform,
              "DataLoader: source Resident cannot apply a transform (a host function run per sample), expected "
              "source Auto or Prefetch");
  for (int v = 0; v < 256; ++v) lut_[v] = data_math::normalize_pixel(static_cast<uint8_t>(v), o.mean, o.std);
}

DataLoader::~DataLoader() { stop_epoch(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = shard_size(dataset_.size(), options_.shard), b = options_.batch_size;
  // Not (n + b - 1) / b: that overflows for a batch size near INT64_MAX and gives 0 batches.
  return n / b + (!options_.drop_last && n % b != 0 ? 1 : 0);
}

bool DataLoader::device_resident() const {
  if (options_.source != BatchSource::Auto) return options_.source == BatchSource::Resident;
  return !options_.device.is_cpu() && !options_.transform;
}

void DataLoader::set_epoch(int64_t epoch) {
  EMBER_CHECK(epoch >= 0 && epoch <= kMaxEpoch, "DataLoader::set_epoch: epoch ", epoch, ", expected 0 to ", kMaxEpoch);
  stop_epoch();
  next_epoch_ = epoch;
}

void DataLoader::stop_epoch() { state_.reset(); }

DataLoader::Iterator DataLoader::begin() {
  stop_epoch();
  Iterator it;
  it.loader_ = this;
  it.batch_ = next();
  return it;
}

void DataLoader::start_epoch() {
  EMBER_CHECK(next_epoch_ <= kMaxEpoch, "DataLoader: epoch ", next_epoch_, " is past the last one (", kMaxEpoch, ")");
  auto s = std::make_unique<State>();
  s->epoch = next_epoch_++;
  s->num_batches = num_batches();
  if (device_resident()) {
    if (!device_images_.defined()) {
      device_images_ = dataset_.images().to(options_.device);
      device_labels_ = dataset_.labels().to(options_.device);
    }
    // Drawn where the batches are gathered: nothing crosses from the host during the epoch (the
    // unshuffled order is uploaded once and kept).
    if (options_.shuffle) {
      s->order = epoch_order(dataset_.size(), true, options_.seed, s->epoch, options_.device);
    } else {
      if (!device_unshuffled_.defined()) device_unshuffled_ = epoch_order(dataset_.size(), false, 0, 0, options_.device);
      s->order = device_unshuffled_;
    }
    if (sharded(options_.shard)) {
      if (!device_positions_.defined())
        device_positions_ = shard_positions(dataset_.size(), options_.shard).to(options_.device);
      s->order = shard_order(s->order, device_positions_);
    }
  } else {
    s->order = epoch_order(dataset_.size(), options_.shuffle, options_.seed, s->epoch, Device::cpu());
    if (sharded(options_.shard)) s->order = shard_order(s->order, shard_positions(dataset_.size(), options_.shard));
    s->worker = std::thread([this, st = s.get()] { produce(*st); });
  }
  state_ = std::move(s);
}

Batch DataLoader::make_host_batch(const State& s, int64_t b) const {
  const DataLoaderOptions& o = options_;
  const Tensor& images = dataset_.images();
  const int64_t first = b * o.batch_size;
  const int64_t count = std::min(o.batch_size, s.order.numel() - first);
  const int64_t pixels = images.numel() / std::max<int64_t>(images.size(0), 1);
  Shape x_shape = o.flatten ? Shape{count, pixels} : Shape{count, 1, images.size(1), images.size(2)};
  Batch batch{make_empty(x_shape, DType::F32, Device::cpu()), make_empty({count}, DType::I64, Device::cpu())};
  const BatchParams params = batch_params(o, s.epoch, first);
  if (!o.transform) {
    // The CPU backend's primitive: the same code (and numbers) as the device-resident path.
    cpu_backend().gather_batch(batch.x, batch.y, images, dataset_.labels(), s.order, params);
    return batch;
  }
  // With a user transform, sample by sample: warp, transform, normalise (data_math.h, as the primitive).
  float* x = batch.x.data<float>();
  int64_t* y = batch.y.data<int64_t>();
  const uint8_t* all = images.data<uint8_t>();
  const int64_t* labels = dataset_.labels().data<int64_t>();
  const int64_t* order = s.order.data<int64_t>();
  const int64_t rows = images.size(1), cols = images.size(2);
  for (int64_t k = 0; k < count; ++k) {
    if (s.stop.load(std::memory_order_relaxed)) break;  // the batch is dropped unseen
    const int64_t pos = first + k, index = order[pos];
    const uint8_t* px = all + index * pixels;
    // The transform gets its own copy: it may keep or modify the tensor without touching the dataset.
    Tensor in = make_empty({rows, cols}, DType::U8, Device::cpu());
    uint8_t* dst = in.data<uint8_t>();
    if (o.augment) {
      const data_math::Warp w = data_math::random_warp(params.seed, params.augment_counter + static_cast<uint64_t>(pos),
                                                       params.max_degrees, params.max_shift, params.max_scale,
                                                       params.crop_padding, params.hflip);
      for (int64_t yy = 0; yy < rows; ++yy)
        for (int64_t xx = 0; xx < cols; ++xx) dst[yy * cols + xx] = data_math::warp_pixel(px, rows, cols, yy, xx, w);
    } else {
      std::memcpy(dst, px, static_cast<size_t>(pixels));
    }
    Tensor transformed = o.transform(in, index);
    EMBER_CHECK(transformed.defined() && transformed.dtype() == DType::U8 && transformed.shape() == in.shape(),
                "DataLoader: transform returned ",
                transformed.defined()
                    ? detail::str_cat(dtype_name(transformed.dtype()), " ", shape_str(transformed.shape()))
                    : std::string("an undefined tensor"),
                " for sample ", index, ", expected U8 ", shape_str(in.shape()));
    transformed = transformed.cpu().contiguous();
    const uint8_t* t = transformed.data<uint8_t>();
    float* row = x + k * pixels;
    for (int64_t j = 0; j < pixels; ++j) row[j] = lut_[t[j]];
    y[k] = labels[index];
  }
  return batch;
}

void DataLoader::produce(State& s) {
  int64_t b = 0;
  try {
    for (; b < s.num_batches; ++b) {
      {
        std::unique_lock<std::mutex> lock(s.mu);
        s.space.wait(lock, [&] { return s.stop || static_cast<int64_t>(s.queue.size()) < options_.prefetch; });
        if (s.stop) break;
      }
      Batch batch = make_host_batch(s, b);  // outside the lock: the consumer keeps taking batches
      {
        std::lock_guard<std::mutex> lock(s.mu);
        if (s.stop) break;
        s.queue.push_back(std::move(batch));
      }
      s.ready.notify_one();
    }
  } catch (const OutOfMemory&) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.error = std::current_exception();
  } catch (const std::exception& e) {
    // Say where it happened: the consumer sees it from next(), far from the thread that failed.
    std::lock_guard<std::mutex> lock(s.mu);
    s.error = std::make_exception_ptr(
        Error(detail::str_cat("DataLoader: epoch ", s.epoch, ", batch ", b, " (loader thread): ", e.what())));
  } catch (...) {
    std::lock_guard<std::mutex> lock(s.mu);
    s.error = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.done = true;
  }
  s.ready.notify_all();
}

std::optional<Batch> DataLoader::next() {
  profile::Range range("data.next");
  if (!state_) start_epoch();
  State& s = *state_;
  if (device_resident()) {
    if (s.next_batch == s.num_batches) {
      state_.reset();
      return std::nullopt;
    }
    const int64_t first = s.next_batch++ * options_.batch_size;
    const int64_t count = std::min(options_.batch_size, s.order.numel() - first);
    const Tensor& images = device_images_;
    Shape x_shape = images.shape();
    x_shape[0] = count;
    Batch batch{make_empty(x_shape, DType::F32, options_.device), make_empty({count}, DType::I64, options_.device)};
    // One kernel: gather by the epoch's order, augment, convert and normalise, and gather the labels.
    backend_for(options_.device)
        .gather_batch(batch.x, batch.y, images, device_labels_, s.order, batch_params(options_, s.epoch, first));
    if (options_.flatten)
      batch.x = batch.x.reshape({count, -1});
    else
      batch.x = batch.x.unsqueeze(1);
    return batch;
  }
  std::unique_lock<std::mutex> lock(s.mu);
  s.ready.wait(lock, [&] { return !s.queue.empty() || s.done; });
  if (!s.queue.empty()) {
    Batch batch = std::move(s.queue.front());
    s.queue.pop_front();
    lock.unlock();
    s.space.notify_one();
    // Copied to the target here, on the consumer's thread: device streams stay single-threaded.
    if (!options_.device.is_cpu()) batch = Batch{batch.x.to(options_.device), batch.y.to(options_.device)};
    return batch;
  }
  std::exception_ptr error = s.error;
  lock.unlock();
  state_.reset();
  if (error) std::rethrow_exception(error);
  return std::nullopt;
}

}  // namespace ember::data
