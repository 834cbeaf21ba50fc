// TensorBoard event files: events.out.tfevents.<time>.<host> in a log folder, one TFRecord per Event
// (u64 length, masked CRC-32C of the length, the serialized Event, masked CRC-32C of it), starting
// with the file_version event "brain.Event:2" as TensorFlow's writers do.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ember::tensorboard {

// Histogram of `values` as TensorBoard draws it: `buckets` equal-width buckets over [min, max]
// (bucket_limit[i] their right edges, the last one max), with count, sum and sum of squares.
struct Histogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> bucket_limit, bucket;
};
Histogram make_histogram(const std::vector<float>& values, int buckets = 30);

class EventWriter {
 public:
  // Creates `dir` (and its parents) when missing and opens a new event file in it; ember::Error when
  // that fails. wall_time is seconds since the epoch.
  explicit EventWriter(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  const std::string& path() const { return path_; }
  void add_scalar(const std::string& tag, double value, int64_t step);
  void add_histogram(const std::string& tag, const Histogram& h, int64_t step);
  // An 8-bit image of height x width x channels (1, 3 or 4) bytes, stored as PNG.
  void add_image(const std::string& tag, const std::vector<uint8_t>& pixels, int64_t height, int64_t width,
                 int channels, int64_t step);
  // Flushes to the OS; each add_* flushes already, so TensorBoard sees an epoch as it ends.
  void flush();

 private:
  void write_record(const std::string& event_bytes);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace ember::tensorboard
