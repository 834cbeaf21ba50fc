// EventWriter: Event messages (protobuf, generated from event.proto) in TFRecord framing.
#include "event_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "crc32c.h"
#include "ember/error.h"
#include "png.h"
#include "tensorboard/event.pb.h"  // generated from event.proto (tools/CMakeLists.txt)

namespace ember::tensorboard {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

Histogram make_histogram(const std::vector<float>& values, int buckets) {
  EMBER_CHECK(buckets >= 1, "make_histogram: buckets must be at least 1, got ", buckets);
  Histogram h;
  if (values.empty()) return h;
  h.min = INFINITY;
  h.max = -INFINITY;
  for (float v : values) {
    if (!std::isfinite(v)) continue;  // TensorBoard cannot place them; they stay out of every field
    h.min = std::min<double>(h.min, v);
    h.max = std::max<double>(h.max, v);
    h.num += 1;
    h.sum += v;
    h.sum_squares += static_cast<double>(v) * v;
  }
  if (h.num == 0) return Histogram{};
  const double width = (h.max - h.min) / buckets;
  h.bucket.assign(static_cast<size_t>(buckets), 0.0);
  for (int i = 0; i < buckets; ++i) h.bucket_limit.push_back(i + 1 == buckets ? h.max : h.min + width * (i + 1));
  for (float v : values) {
    if (!std::isfinite(v)) continue;
    int b = width > 0 ? static_cast<int>((v - h.min) / width) : 0;
    h.bucket[static_cast<size_t>(std::clamp(b, 0, buckets - 1))] += 1;
  }
  return h;
}

EventWriter::EventWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EMBER_CHECK(std::filesystem::is_directory(dir), "--tensorboard ", dir, ": cannot create the folder",
              ec ? ": " + ec.message() : std::string(), "; pass a writable folder");
  char host[256] = "localhost";
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  // TensorBoard orders a folder's files by name; the pid keeps two runs started in one second apart.
  path_ = (std::filesystem::path(dir) /
           ("events.out.tfevents." + std::to_string(static_cast<long long>(now_seconds())) + "." + host + "." +
            std::to_string(::getpid())))
              .string();
  file_ = std::fopen(path_.c_str(), "wb");
  EMBER_CHECK(file_, "--tensorboard: cannot create '", path_, "': ", std::strerror(errno));
  Event e;
  e.set_wall_time(now_seconds());
  e.set_file_version("brain.Event:2");
  write_record(e.SerializeAsString());
}

EventWriter::~EventWriter() {
  if (file_) std::fclose(file_);
}

void EventWriter::write_record(const std::string& bytes) {
  std::string rec;
  put_le(rec, bytes.size(), 8);
  put_le(rec, masked_crc32c(rec.data(), 8), 4);
  rec += bytes;
  put_le(rec, masked_crc32c(bytes.data(), bytes.size()), 4);
  errno = 0;
  const bool ok = std::fwrite(rec.data(), 1, rec.size(), file_) == rec.size() && std::fflush(file_) == 0;
  EMBER_CHECK(ok, "--tensorboard: writing '", path_, "' failed: ", std::strerror(errno ? errno : EIO));
}

void EventWriter::flush() {
  EMBER_CHECK(std::fflush(file_) == 0, "--tensorboard: flushing '", path_, "' failed: ", std::strerror(errno));
}

void EventWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  write_record(e.SerializeAsString());
}

void EventWriter::add_histogram(const std::string& tag, const Histogram& h, int64_t step) {
  Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  HistogramProto* p = v->mutable_histo();
  p->set_min(h.min);
  p->set_max(h.max);
  p->set_num(h.num);
  p->set_sum(h.sum);
  p->set_sum_squares(h.sum_squares);
  for (double b : h.bucket_limit) p->add_bucket_limit(b);
  for (double b : h.bucket) p->add_bucket(b);
  write_record(e.SerializeAsString());
}

void EventWriter::add_image(const std::string& tag, const std::vector<uint8_t>& pixels, int64_t height, int64_t width,
                            int channels, int64_t step) {
  Event e;
  e.set_wall_time(now_seconds());
  e.set_step(step);
  Summary::Value* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  Summary::Image* img = v->mutable_image();
  img->set_height(static_cast<int32_t>(height));
  img->set_width(static_cast<int32_t>(width));
  img->set_colorspace(channels);
  img->set_encoded_image_string(encode_png(pixels, height, width, channels));
  write_record(e.SerializeAsString());
}

}  // namespace ember::tensorboard
