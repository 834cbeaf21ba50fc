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
#include <numeric>
#include <thread>

#include "cpp/backend/backend.h"
#include "cpp/backend/philox.h"
#include "cpp/core/tensor_impl.h"
#include "ember/autograd.h"
#include "ember/data.h"
#include "ember/ops.h"

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

// Fisher-Yates from the back: step i swaps element i with a uniform pick from [0, i].
std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (shuffle)
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[philox::integer(seed, counter(epoch, Stream::Shuffle, i), 0, i + 1)]);
  return order;
}

// Bilinear warp of one u8 image: dst(q) = src(T^-1 q), T = shift by (dx, dy) after rotating about the
// centre. Pixels sampled outside the image read as 0 (MNIST's background).
void warp_u8(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols, double degrees, double dx, double dy) {
  const double rad = degrees * (3.14159265358979323846 / 180.0);
  // Exact 1 and 0 at angle 0, so an unrotated shift by whole pixels copies pixels unchanged.
  const double c = std::cos(rad), s = std::sin(rad);
  const double cx = 0.5 * static_cast<double>(cols - 1), cy = 0.5 * static_cast<double>(rows - 1);
  auto at = [&](int64_t y, int64_t x) -> double {
    return (y >= 0 && y < rows && x >= 0 && x < cols) ? static_cast<double>(src[y * cols + x]) : 0.0;
  };
  for (int64_t y = 0; y < rows; ++y) {
    for (int64_t x = 0; x < cols; ++x) {
      // With y pointing down, R = [[c, s], [-s, c]] turns counter-clockwise on screen; its inverse
      // maps an output pixel back to where it came from.
      const double ux = static_cast<double>(x) - cx - dx, uy = static_cast<double>(y) - cy - dy;
      // Clamped to just outside the image (where every tap reads 0) so the casts below stay in range.
      const double sx = std::clamp(c * ux - s * uy + cx, -2.0, static_cast<double>(cols) + 1.0);
      const double sy = std::clamp(s * ux + c * uy + cy, -2.0, static_cast<double>(rows) + 1.0);
      const double fx0 = std::floor(sx), fy0 = std::floor(sy);
      const double fx = sx - fx0, fy = sy - fy0;
      const auto x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
      const double v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) +
                       fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
      dst[y * cols + x] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 255.0)));
    }
  }
}

void check_normalization(double mean, double std, const char* fn) {
  EMBER_CHECK(std::isfinite(mean) && std::isfinite(std) && std > 0, fn, ": mean ", mean, " and std ", std,
              " must be finite with std > 0");
}

// x = (u8 / 255 - mean) / std in f32: a cast, then one scale and one shift (two elementwise ops).
Tensor normalize_u8(const Tensor& u8, double mean, double std) {
  autograd::NoGradGuard no_grad;
  return add(mul(u8.to(DType::F32), 1.0 / (255.0 * std)), -mean / std);
}

// rows of `t` [N, ...] (contiguous) at `indices` [B] on t's device, without checking the index values:
// the loader made them itself (a permutation of [0, N)), and checking would read them back to the
// host, a device synchronization per batch.
Tensor gather_rows_unchecked(const Tensor& t, const Tensor& indices) {
  Shape shape = t.shape();
  shape[0] = indices.numel();
  Tensor out = make_empty(shape, t.dtype(), t.device());
  if (out.numel() > 0) backend_for(t.device()).index_select(out, t, indices, 1, t.size(0), t.numel() / t.size(0));
  return out;
}

// The device-resident batch step in one place, so that a fused backend primitive (gather, cast and
// affine in one kernel) can replace it. `indices` must lie in [0, N).
Tensor gather_normalize_unchecked(const Tensor& images_u8, const Tensor& indices, double mean, double std) {
  return normalize_u8(gather_rows_unchecked(images_u8, indices), mean, std);
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
  if (indices.numel() > 0) {
    autograd::NoGradGuard no_grad;
    const int64_t lo = min(indices).item<int64_t>(), hi = max(indices).item<int64_t>();
    EMBER_CHECK(lo >= 0 && hi < images_u8.size(0), "gather_normalize: indices range over [", lo, ", ", hi,
                "] but there are ", images_u8.size(0), " images, expected indices in [0, ", images_u8.size(0), ")");
  }
  return gather_normalize_unchecked(images_u8.contiguous(), indices.contiguous(), mean, std);
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
  warp_u8(src.data<uint8_t>(), out.data<uint8_t>(), src.size(0), src.size(1), degrees, dx, dy);
  return out.to(image_u8.device());
}

// One running epoch. The host path's worker thread reads only what is fixed while it runs: this
// state's order, the loader's dataset and options.
struct DataLoader::State {
  int64_t epoch = 0;
  int64_t num_batches = 0;
  int64_t next_batch = 0;  // device-resident path: the next batch to gather
  std::vector<int64_t> order;
  Tensor device_order;  // device-resident path: the order, uploaded once per epoch

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
  const AugmentOptions& a = o.augment_options;
  EMBER_CHECK(std::isfinite(a.max_shift) && a.max_shift >= 0 && std::isfinite(a.max_degrees) && a.max_degrees >= 0 &&
                  a.max_degrees <= 180,
              "DataLoader: augment_options max_shift ", a.max_shift, " and max_degrees ", a.max_degrees,
              " must be finite, non-negative, max_degrees at most 180");
  const bool needs_2d = o.augment || o.transform || !o.flatten;
  EMBER_CHECK(!needs_2d || dataset_.images().dim() == 3,
              "DataLoader: augment, transform and flatten = false need images [N, rows, cols], got ",
              shape_str(dataset_.images().shape()));
  EMBER_CHECK(o.source != BatchSource::Resident || (!o.augment && !o.transform),
              "DataLoader: source Resident cannot augment or transform (both run on the host per sample), expected "
              "source Auto or Prefetch");
  for (int v = 0; v < 256; ++v) lut_[v] = static_cast<float>((v / 255.0 - o.mean) / o.std);
}

DataLoader::~DataLoader() { stop_epoch(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_.size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

bool DataLoader::device_resident() const {
  if (options_.source != BatchSource::Auto) return options_.source == BatchSource::Resident;
  return !options_.device.is_cpu() && !options_.augment && !options_.transform;
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
  s->order = epoch_order(dataset_.size(), options_.shuffle, options_.seed, s->epoch);
  if (device_resident()) {
    if (!device_images_.defined()) {
      device_images_ = dataset_.images().to(options_.device);
      device_labels_ = dataset_.labels().to(options_.device);
    }
    s->device_order = from_vector<int64_t>(s->order, {dataset_.size()}, TensorOptions(options_.device));
  } else {
    s->worker = std::thread([this, st = s.get()] { produce(*st); });
  }
  state_ = std::move(s);
}

Batch DataLoader::make_host_batch(const State& s, int64_t b) const {
  const DataLoaderOptions& o = options_;
  const Tensor& images = dataset_.images();
  const int64_t first = b * o.batch_size;
  const int64_t count = std::min(o.batch_size, dataset_.size() - first);
  const int64_t pixels = images.numel() / std::max<int64_t>(images.size(0), 1);
  Shape x_shape = o.flatten ? Shape{count, pixels} : Shape{count, 1, images.size(1), images.size(2)};
  Batch batch{make_empty(x_shape, DType::F32, Device::cpu()), make_empty({count}, DType::I64, Device::cpu())};
  float* x = batch.x.data<float>();
  int64_t* y = batch.y.data<int64_t>();
  const uint8_t* all = images.data<uint8_t>();
  const int64_t* labels = dataset_.labels().data<int64_t>();
  std::vector<uint8_t> warped(static_cast<size_t>(o.augment ? pixels : 0));
  for (int64_t k = 0; k < count; ++k) {
    if (s.stop.load(std::memory_order_relaxed)) break;  // the batch is dropped unseen
    const int64_t pos = first + k, index = s.order[pos];
    const uint8_t* px = all + index * pixels;
    if (o.augment) {
      // Three uniform draws in [0, 1) from one Philox block: angle, dx, dy.
      const philox::U32x4 r = philox::philox4x32_10(o.seed, counter(s.epoch, Stream::Augment, pos));
      auto sym = [](uint32_t w, double m) { return (2.0 * (w * (1.0 / 4294967296.0)) - 1.0) * m; };
      const AugmentOptions& a = o.augment_options;
      warp_u8(px, warped.data(), images.size(1), images.size(2), sym(r.x[0], a.max_degrees), sym(r.x[1], a.max_shift),
              sym(r.x[2], a.max_shift));
      px = warped.data();
    }
    Tensor transformed;
    if (o.transform) {
      // The transform gets its own copy: it may keep or modify the tensor without touching the dataset.
      Tensor in = make_empty({images.size(1), images.size(2)}, DType::U8, Device::cpu());
      std::memcpy(in.data_ptr(), px, static_cast<size_t>(pixels));
      transformed = o.transform(in, index);
      EMBER_CHECK(transformed.defined() && transformed.dtype() == DType::U8 && transformed.shape() == in.shape(),
                  "DataLoader: transform returned ",
                  transformed.defined()
                      ? detail::str_cat(dtype_name(transformed.dtype()), " ", shape_str(transformed.shape()))
                      : std::string("an undefined tensor"),
                  " for sample ", index, ", expected U8 ", shape_str(in.shape()));
      transformed = transformed.cpu().contiguous();
      px = transformed.data<uint8_t>();
    }
    float* row = x + k * pixels;
    for (int64_t j = 0; j < pixels; ++j) row[j] = lut_[px[j]];
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
  if (!state_) start_epoch();
  State& s = *state_;
  if (device_resident()) {
    if (s.next_batch == s.num_batches) {
      state_.reset();
      return std::nullopt;
    }
    const int64_t first = s.next_batch++ * options_.batch_size;
    const int64_t count = std::min(options_.batch_size, dataset_.size() - first);
    const Tensor idx = s.device_order.narrow(0, first, count);
    Batch batch{gather_normalize_unchecked(device_images_, idx, options_.mean, options_.std),
                gather_rows_unchecked(device_labels_, idx)};
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
