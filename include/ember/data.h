// ember::data: IDX files (MNIST's format), the MNIST directory loader, TensorDataset and DataLoader.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "ember/device.h"
#include "ember/export.h"
#include "ember/tensor.h"

namespace ember::data {

// ---- IDX files ----
//
// IDX (the MNIST distribution's format): a big-endian header, magic 0x0000TTDD (two zero
// bytes, element type TT, number of dims DD), then DD u32 dims, then the elements row-major. The
// readers accept u8 elements only (type 0x08), raw or gzip-compressed (recognised by the gzip magic
// 1f 8b, whatever the file name), and check everything before allocating: the magic, the dims
// against the bytes actually there, the product of the dims against overflow, and for labels the
// range. A violation throws ember::Error naming the file, the byte offset (of the decompressed data
// for gzip files) and what was expected against what was found.

// Largest decompressed size accepted from a gzip file: the header's claim is checked against it
// before anything is decompressed past the header (a raw file is checked against its own size).
inline constexpr uint64_t kMaxGzipIdxBytes = uint64_t{1} << 30;

// `*-idx3-ubyte[.gz]` (magic 0x00000803): U8 [N, rows, cols].
EMBER_API Tensor read_idx_images(const std::string& path);
// `*-idx1-ubyte[.gz]` (magic 0x00000801): I64 [N], each label in [0, num_classes); num_classes in [1, 256].
EMBER_API Tensor read_idx_labels(const std::string& path, int64_t num_classes = 10);

enum class IdxCompression { Raw, Gzip };
// Writes `t` as an IDX u8 file with t.dim() dims (1 to 255, each below 2^32), atomically (a temporary
// file renamed over `path`). U8 tensors are written as they are; I64/I32 tensors (labels) must hold
// values in [0, 255]. Any device.
EMBER_API void write_idx(const std::string& path, const Tensor& t, IdxCompression compression = IdxCompression::Raw);

struct MnistSplit {
  Tensor images;  // U8 [N, rows, cols]
  Tensor labels;  // I64 [N]
};
struct Mnist {
  MnistSplit train;
  MnistSplit test;
};
// Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
// t10k-labels-idx1-ubyte from `dir`, each raw or with .gz appended (raw preferred when both exist),
// and checks that image and label counts match and that both splits share one image size. A missing
// file raises an Error that names it and `tools/get-data.sh`, which fetches MNIST and Fashion-MNIST.
EMBER_API Mnist load_mnist_dir(const std::string& dir, int64_t num_classes = 10);

// ---- datasets and batches ----

// Images and labels held on the host: images U8 [N, ...] (one sample per row of dim 0, typically
// [N, rows, cols]), labels I64 [N]. Both are made contiguous; the counts must match.
class EMBER_API TensorDataset {
 public:
  TensorDataset(Tensor images, Tensor labels);
  explicit TensorDataset(const MnistSplit& split) : TensorDataset(split.images, split.labels) {}
  int64_t size() const { return images_.size(0); }
  const Tensor& images() const { return images_; }
  const Tensor& labels() const { return labels_; }

 private:
  Tensor images_;
  Tensor labels_;
};

// x = float((images[indices] / 255 - mean) / std) (computed in f64), with images U8 [N, ...] and
// indices I64 [B] on one device; result F32 [B, ...]. One fused pass (the backend's gather_batch, the
// step the DataLoader runs per batch). The indices are checked to lie in [0, N), which reads their
// range back to the host (a synchronisation on a GPU; the DataLoader skips it for its own order).
EMBER_API Tensor gather_normalize(const Tensor& images_u8, const Tensor& indices, double mean, double std);

// Rotates a U8 image [rows, cols] by `degrees` (counter-clockwise as displayed, about the image
// centre) and then shifts it by (dx, dy) pixels (right, down), sampling bilinearly with zeros
// outside the image and rounding to u8. Zero angle and integer shifts move pixels exactly.
EMBER_API Tensor rotate_translate(const Tensor& image_u8, double degrees, double dx, double dy);

// Per-sample random rotation, shift, scaling, crop with padding and horizontal flip, drawn from
// Philox (see DataLoader; the formulas are data_math::random_warp's) and applied in one bilinear
// resampling, as rotate_translate does, on the device that gathers the batch (the same numbers on
// the CPU and on CUDA): bilinear, because nearest-neighbour sampling makes a 2-pixel-wide stroke
// jagged and changes its width under small rotations. Defaults: rotation and shift on, scaling, crop
// and flip off (a mirrored digit is another symbol or none; turn hflip on for datasets where mirror
// images are the same class, such as clothing); no elastic distortion.
struct AugmentOptions {
  double max_shift = 2.0;     // dx, dy uniform in [-max_shift, max_shift] pixels
  double max_degrees = 10.0;  // angle uniform in [-max_degrees, max_degrees]
  double max_scale = 0.0;     // scale uniform in [1 - max_scale, 1 + max_scale] about the centre; <= 0.5
  int64_t crop_padding = 0;   // pad each side with this many zero pixels, crop the image size back at random
  bool hflip = false;         // mirror left-right with probability 1/2
};

// Where batches are assembled (see DataLoader). Auto: Resident for a non-CPU device without a
// transform, else Prefetch. Resident on the CPU gathers in the consumer's thread, with no worker.
enum class BatchSource { Auto, Prefetch, Resident };

// Data-parallel sharding of each epoch's order, as PyTorch's DistributedSampler: rank r of R takes
// positions r, r + R, r + 2R, ... of the epoch's order (shuffled or not). With drop_last the order is
// cut to floor(N / R) * R positions, otherwise it is padded to ceil(N / R) * R by wrapping around to
// its start (position p reads p mod N), so every rank gets the same number of samples: with the same
// seed, the ranks' shards of an epoch are disjoint (without padding) and together are the epoch's order.
struct ShardOptions {
  int64_t num_replicas = 1;  // the world size
  int64_t rank = 0;          // in [0, num_replicas)
  bool drop_last = false;
};
// The samples each rank takes per epoch from a dataset of n samples.
EMBER_API int64_t shard_size(int64_t n, const ShardOptions& shard);
// The positions in an epoch's order that `shard.rank` takes, I64 [shard_size(n, shard)].
EMBER_API Tensor shard_positions(int64_t n, const ShardOptions& shard);

// The sample indices of one rank's shard, epoch by epoch: the DataLoader's own order (see below)
// restricted to the shard. A DataLoader given DataLoaderOptions::shard visits exactly these.
class EMBER_API DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, ShardOptions shard, bool shuffle = true, uint64_t seed = 0);
  int64_t num_samples() const { return shard_size(size_, shard_); }
  // I64 [num_samples()] on the CPU.
  Tensor indices(int64_t epoch) const;

 private:
  int64_t size_;
  ShardOptions shard_;
  bool shuffle_;
  uint64_t seed_;
};

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = false;
  bool drop_last = false;  // drop a last batch smaller than batch_size
  // Seeds the per-epoch permutation and the augmentation (Philox; see DataLoader). The same seed
  // gives the same samples in the same order, epoch by epoch, on any device.
  uint64_t seed = 0;
  Device device = Device::cpu();  // where batches are delivered
  bool flatten = true;            // x [B, rows*cols]; false: x [B, 1, rows, cols]
  double mean = 0.1307;           // MNIST's pixel mean and standard deviation (of pixel / 255)
  double std = 0.3081;
  bool augment = false;  // random rotation and shift per sample (see rotate_translate)
  AugmentOptions augment_options;
  // Called in the loader thread on each sample's U8 image [rows, cols] (after augmentation, before
  // normalisation) with the sample's dataset index; returns a U8 image of the same shape. An
  // exception it throws reaches the consumer from next().
  std::function<Tensor(const Tensor& image_u8, int64_t index)> transform;
  int64_t prefetch = 2;  // batches the loader thread prepares ahead (1 to 16)
  BatchSource source = BatchSource::Auto;
  // This rank's shard of every epoch (data-parallel training; see ShardOptions). Batches, the batch
  // count and the augmentation positions then refer to the shard.
  ShardOptions shard;
};

struct Batch {
  Tensor x;  // F32 [B, rows*cols] or [B, 1, rows, cols], normalised
  Tensor y;  // I64 [B]
};

// Yields an epoch of batches at a time.
//
// Order: epoch e visits the samples in a permutation of [0, N) in which sample i has the sort key
// Philox(seed, counter = e's block + i) (64 bits) and the samples are sorted stably by key: a function
// of (seed, epoch) only, identical on the CPU and on CUDA (where CUB's radix sort draws it), so
// set_epoch(e) replays epoch e exactly (resuming from a checkpoint) and no state hides in the loader.
// Augmentation draws come from the same key in a separate counter block, by position in the epoch.
//
// Two paths (BatchSource):
//  - Prefetch (CPU target, or a transform): a background thread assembles up to `prefetch` batches
//    ahead into a bounded queue (with the CPU backend's gather_batch, or sample by sample around a
//    transform); the consumer copies each to `device`.
//  - Resident (non-CPU target without a transform): the dataset is uploaded once as U8 and the labels
//    as I64; each epoch's order is drawn on the device; each batch (gather by the order, augmentation,
//    conversion, normalisation, and the labels) is one kernel (the backend's gather_batch). Nothing is
//    copied from the host and nothing waits for the device after the first epoch's upload.
//
// Not copyable or movable (the thread refers to the loader). Destroying it, calling set_epoch() or
// begin() mid-epoch stops the thread cleanly.
class EMBER_API DataLoader {
 public:
  DataLoader(TensorDataset dataset, DataLoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const;  // per epoch
  const TensorDataset& dataset() const { return dataset_; }
  const DataLoaderOptions& options() const { return options_; }

  // The next batch of the current epoch (starting epoch `next_epoch()` when none is running), or
  // nullopt once the epoch is exhausted; the call after that starts the following epoch.
  std::optional<Batch> next();
  // The epoch the next started epoch will be (0 at first). Abandons a running epoch.
  void set_epoch(int64_t epoch);
  int64_t next_epoch() const { return next_epoch_; }

  // Range-for over one epoch: begin() abandons a running epoch and starts the next.
  class Iterator {
   public:
    Batch& operator*() { return *batch_; }
    Batch* operator->() { return &*batch_; }
    Iterator& operator++() {
      batch_ = loader_->next();
      return *this;
    }
    bool operator!=(const Iterator& o) const { return batch_.has_value() != o.batch_.has_value(); }

   private:
    friend class DataLoader;
    DataLoader* loader_ = nullptr;
    std::optional<Batch> batch_;
  };
  Iterator begin();
  Iterator end() { return Iterator(); }

 private:
  struct State;
  bool device_resident() const;
  void start_epoch();
  void stop_epoch();
  Batch make_host_batch(const State& s, int64_t b) const;  // runs on the loader thread
  void produce(State& s);                                  // the loader thread's body

  TensorDataset dataset_;
  DataLoaderOptions options_;
  int64_t next_epoch_ = 0;
  float lut_[256];                // normalised value of each u8 pixel (host path)
  std::unique_ptr<State> state_;  // the running epoch, null between epochs
  // Device-resident copies (device-resident path only), made on first use.
  Tensor device_images_;
  Tensor device_labels_;
  Tensor device_unshuffled_;  // 0..N-1 on the device, for loaders that do not shuffle
  Tensor device_positions_;   // shard_positions on the device (sharded loaders only)
};

}  // namespace ember::data
