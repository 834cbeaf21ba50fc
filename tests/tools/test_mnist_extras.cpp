// Issue 17's training extras and TensorBoard logs: the validation helpers against hand-worked
// histories, the event writer read back by an independent decoder (bitwise CRC-32C, TFRecord framing,
// a hand-written protobuf wire reader, PNG through zlib), and ember-mnist's --val-split,
// --early-stopping, --folds, --l1 and --tensorboard on a tiny dataset.
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "ember/data.h"
#include "ember/io.h"
#include "test_util.h"
#include "tools/mnist/validation.h"
#include "tools/tensorboard/crc32c.h"
#include "tools/tensorboard/event_writer.h"

using namespace ember;
namespace fs = std::filesystem;

namespace {

// ---- the independent decoder ----

// CRC-32C one bit at a time (no table): the definition, to check the writer's table against.
uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}
uint32_t masked(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }

uint64_t le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
  return v;
}

// A protobuf message as (field number -> raw values): varints as numbers, fixed64/fixed32 as their
// bits, length-delimited fields as bytes.
struct Field {
  int wire = 0;
  uint64_t num = 0;
  std::string bytes;
};
using Message = std::multimap<int, Field>;

Message parse(const std::string& s) {
  Message m;
  size_t i = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (i >= s.size() || shift > 63) throw std::runtime_error("bad varint");
      const auto b = static_cast<unsigned char>(s[i++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < s.size()) {
    const uint64_t key = varint();
    Field f;
    f.wire = static_cast<int>(key & 7);
    if (f.wire == 0) f.num = varint();
    else if (f.wire == 1) { f.num = le(s, i, 8); i += 8; }
    else if (f.wire == 5) { f.num = le(s, i, 4); i += 4; }
    else if (f.wire == 2) {
      const uint64_t n = varint();
      if (i + n > s.size()) throw std::runtime_error("truncated field");
      f.bytes = s.substr(i, n);
      i += n;
    } else throw std::runtime_error("unknown wire type");
    if (i > s.size()) throw std::runtime_error("truncated");
    m.emplace(static_cast<int>(key >> 3), f);
  }
  return m;
}
double as_double(uint64_t bits) { double d; std::memcpy(&d, &bits, 8); return d; }
float as_float(uint64_t bits) { const auto b = static_cast<uint32_t>(bits); float f; std::memcpy(&f, &b, 4); return f; }
std::vector<double> packed_doubles(const std::string& b) {
  std::vector<double> v;
  for (size_t i = 0; i + 8 <= b.size(); i += 8) v.push_back(as_double(le(b, i, 8)));
  return v;
}

struct Value {
  std::string tag;
  std::optional<float> simple;
  Message histo, image;
  bool has_histo = false, has_image = false;
};
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<Value> values;
};

// Every record of an event file, each CRC checked.
::testing::AssertionResult read_events(const std::string& path, std::vector<Event>& out) {
  std::ifstream in(path, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(in)), {});
  size_t at = 0;
  while (at < s.size()) {
    if (at + 12 > s.size()) return ::testing::AssertionFailure() << "truncated header at " << at;
    const uint64_t n = le(s, at, 8);
    if (masked(crc32c_bitwise(s.substr(at, 8))) != le(s, at + 8, 4))
      return ::testing::AssertionFailure() << "length CRC wrong at " << at;
    if (at + 12 + n + 4 > s.size()) return ::testing::AssertionFailure() << "truncated record at " << at;
    const std::string data = s.substr(at + 12, n);
    if (masked(crc32c_bitwise(data)) != le(s, at + 12 + n, 4))
      return ::testing::AssertionFailure() << "data CRC wrong at " << at;
    at += 12 + n + 4;
    Event e;
    for (const auto& [k, f] : parse(data)) {
      if (k == 1) e.wall_time = as_double(f.num);
      if (k == 2) e.step = static_cast<int64_t>(f.num);
      if (k == 3) e.file_version = f.bytes;
      if (k == 5)
        for (const auto& [vk, vf] : parse(f.bytes)) {
          if (vk != 1) continue;
          Value v;
          for (const auto& [fk, ff] : parse(vf.bytes)) {
            if (fk == 1) v.tag = ff.bytes;
            if (fk == 2 && ff.wire == 5) v.simple = as_float(ff.num);
            if (fk == 4) { v.image = parse(ff.bytes); v.has_image = true; }
            if (fk == 5) { v.histo = parse(ff.bytes); v.has_histo = true; }
          }
          e.values.push_back(v);
        }
    }
    out.push_back(e);
  }
  return ::testing::AssertionSuccess();
}

// An 8-bit PNG's pixels (filter type 0 rows only, as ember writes them), checking the chunk CRCs.
::testing::AssertionResult decode_png(const std::string& png, int64_t& h, int64_t& w, int& channels,
                                      std::vector<uint8_t>& px) {
  if (png.compare(0, 8, std::string("\x89PNG\r\n\x1a\n", 8)) != 0) return ::testing::AssertionFailure() << "signature";
  auto be = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(png[at + i]);
    return v;
  };
  std::string idat;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    const uint32_t n = be(at);
    const std::string type = png.substr(at + 4, 4), body = png.substr(at + 4, 4 + n);
    if (::crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())) != be(at + 8 + n))
      return ::testing::AssertionFailure() << "chunk " << type << " CRC";
    if (type == "IHDR") {
      w = be(at + 8);
      h = be(at + 12);
      const int color = png[at + 17];
      if (png[at + 16] != 8) return ::testing::AssertionFailure() << "bit depth";
      channels = color == 0 ? 1 : color == 2 ? 3 : color == 6 ? 4 : -1;
    }
    if (type == "IDAT") idat += png.substr(at + 8, n);
    at += 12 + n;
  }
  const size_t row = static_cast<size_t>(w * channels);
  std::string raw(static_cast<size_t>(h) * (row + 1), '\0');
  uLongf raw_size = raw.size();
  if (uncompress(reinterpret_cast<Bytef*>(raw.data()), &raw_size, reinterpret_cast<const Bytef*>(idat.data()),
                 idat.size()) != Z_OK || raw_size != raw.size())
    return ::testing::AssertionFailure() << "inflate";
  px.clear();
  for (int64_t y = 0; y < h; ++y) {
    if (raw[static_cast<size_t>(y) * (row + 1)] != 0) return ::testing::AssertionFailure() << "filter type";
    px.insert(px.end(), raw.begin() + static_cast<std::ptrdiff_t>(y * (row + 1) + 1),
              raw.begin() + static_cast<std::ptrdiff_t>((y + 1) * (row + 1)));
  }
  return ::testing::AssertionSuccess();
}

std::string only_event_file(const std::string& dir) {
  std::string found;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) {
      EXPECT_TRUE(found.empty()) << "two event files in " << dir;
      found = e.path().string();
    }
  return found;
}

fs::path temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "ember-extras-XXXXXX").string();
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

mnist::EpochStats epoch_with_val(int64_t epoch, double val_acc) {
  mnist::EpochStats s;
  s.epoch = epoch;
  s.val_acc = val_acc;
  s.val_loss = 1 - val_acc;
  return s;
}

}  // namespace

// ---- validation helpers ----

TEST(MnistValidation, BestEpochAndEarlyStoppingFollowTheHistory) {
  std::vector<mnist::EpochStats> h;
  for (double a : {0.5, 0.7, 0.7, 0.6}) h.push_back(epoch_with_val(static_cast<int64_t>(h.size()) + 1, a));
  EXPECT_EQ(mnist::best_val_epoch(h), 2);  // the first of the tied best
  EXPECT_TRUE(mnist::should_stop_early(h, 2));  // epochs 3 and 4 after the best
  EXPECT_FALSE(mnist::should_stop_early(h, 3));
  EXPECT_FALSE(mnist::should_stop_early(h, 0));  // off
  h.push_back(epoch_with_val(5, 0.8));
  EXPECT_EQ(mnist::best_val_epoch(h), 5);
  EXPECT_FALSE(mnist::should_stop_early(h, 1));
  EXPECT_EQ(mnist::best_val_epoch({}), 0);
  EXPECT_EQ(mnist::best_checkpoint_path("out/run.safetensors"), "out/run.best.safetensors");
  EXPECT_EQ(mnist::best_checkpoint_path("out.d/run"), "out.d/run.best");
  const auto [mean, sd] = mnist::mean_std({0.9, 0.8, 1.0});
  EXPECT_NEAR(mean, 0.9, 1e-15);
  EXPECT_NEAR(sd, std::sqrt((0.01 + 0 + 0.01) / 2), 1e-15);
}

TEST(MnistValidation, HoldOutIsStratifiedAndFoldsCoverTheTrainingSet) {
  data::Mnist ds;
  std::vector<uint8_t> px(40 * 4);
  std::vector<int64_t> y(40);
  for (size_t i = 0; i < 40; ++i) {
    y[i] = static_cast<int64_t>(i % 4);
    for (size_t k = 0; k < 4; ++k) px[i * 4 + k] = static_cast<uint8_t>(i);  // the pixels name the sample
  }
  ds.train = {from_vector<uint8_t>(px, {40, 2, 2}), from_vector<int64_t>(y)};
  mnist::Config cfg;
  cfg.val_split = 0.2;
  data::Mnist split = ds;
  const auto val = mnist::hold_out_validation(cfg, split);
  ASSERT_TRUE(val.has_value());
  EXPECT_EQ(val->labels.size(0), 8);  // 2 of each class's 10
  EXPECT_EQ(split.train.labels.size(0), 32);
  std::map<int64_t, int> per_class;
  for (int64_t l : val->labels.to_vector<int64_t>()) ++per_class[l];
  for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(per_class[c], 2);
  // Each image still carries its own label: pixel value i has label i % 4.
  const auto vpx = val->images.to_vector<uint8_t>();
  const auto vy = val->labels.to_vector<int64_t>();
  for (size_t j = 0; j < vy.size(); ++j) EXPECT_EQ(vpx[j * 4] % 4, vy[j]);
  // --folds 4: the validation folds partition the 40 images.
  std::vector<int> seen(40, 0);
  for (int64_t k = 0; k < 4; ++k) {
    mnist::Config f;
    f.folds = 4;
    f.fold_index = k;
    data::Mnist d = ds;
    const auto v = mnist::hold_out_validation(f, d);
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(v->labels.size(0) + d.train.labels.size(0), 40);
    for (uint8_t p : v->images.to_vector<uint8_t>()) ++seen[p];
  }
  for (int s : seen) EXPECT_EQ(s, 4);  // each image's 4 pixels, once
  mnist::Config none;
  data::Mnist d = ds;
  EXPECT_FALSE(mnist::hold_out_validation(none, d).has_value());
}

// ---- --l1 ----

// The penalty's gradient is lambda * sign(w) on top of the data gradient, element by element.
TEST(MnistValidation, L1PenaltyAddsLambdaSignToTheGradient) {
  manual_seed(3);
  auto lin = std::make_shared<nn::Linear>(5, 3);
  const Tensor x = test::uniform({4, 5}, -1, 1, DType::F32, 9);
  const Tensor y = from_vector<int64_t>({0, 2, 1, 2});
  const double lambda = 0.03;
  cross_entropy((*lin)(x), y).backward();
  std::vector<std::vector<float>> plain;
  for (const Tensor& p : lin->parameters()) plain.push_back(p.grad().to_vector<float>());
  for (Tensor p : lin->parameters()) p.set_grad(zeros_like(p));
  add(cross_entropy((*lin)(x), y), optim::l1_penalty(lin->parameters(), lambda)).backward();
  size_t i = 0;
  for (const Tensor& p : lin->parameters()) {
    const auto w = p.to_vector<float>(), g = p.grad().to_vector<float>();
    for (size_t k = 0; k < w.size(); ++k) {
      const double sign = w[k] > 0 ? 1 : w[k] < 0 ? -1 : 0;
      EXPECT_NEAR(g[k], plain[i][k] + lambda * sign, 1e-6) << "parameter " << i << " element " << k;
    }
    ++i;
  }
}

// ---- TensorBoard ----

TEST(TensorBoard, Crc32cMatchesRfc3720AndTheBitwiseDefinition) {
  EXPECT_EQ(tensorboard::crc32c("123456789", 9), 0xE3069283u);
  const std::string s = "ember writes TFRecords";
  EXPECT_EQ(tensorboard::crc32c(s.data(), s.size()), crc32c_bitwise(s));
  EXPECT_EQ(tensorboard::masked_crc32c(s.data(), s.size()), masked(crc32c_bitwise(s)));
  // Running CRC: two halves give the whole.
  EXPECT_EQ(tensorboard::crc32c(s.data() + 5, s.size() - 5, tensorboard::crc32c(s.data(), 5)), crc32c_bitwise(s));
}

TEST(TensorBoard, HistogramFollowsItsDefinition) {
  const std::vector<float> v = {-1.0f, -0.5f, 0.0f, 0.25f, 1.0f, 1.0f};
  const tensorboard::Histogram h = tensorboard::make_histogram(v, 4);
  EXPECT_EQ(h.min, -1.0);
  EXPECT_EQ(h.max, 1.0);
  EXPECT_EQ(h.num, 6.0);
  EXPECT_DOUBLE_EQ(h.sum, 0.75);
  EXPECT_DOUBLE_EQ(h.sum_squares, 1 + 0.25 + 0 + 0.0625 + 1 + 1);
  EXPECT_EQ(h.bucket_limit, (std::vector<double>{-0.5, 0.0, 0.5, 1.0}));
  // Buckets of width 0.5 from -1: [-1,-0.5) {-1}, [-0.5,0) {-0.5}, [0,0.5) {0, 0.25}, [0.5,1] {1, 1}.
  EXPECT_EQ(h.bucket, (std::vector<double>{1, 1, 2, 2}));
}

TEST(TensorBoard, EventFileDecodesWithAnIndependentReader) {
  const fs::path dir = temp_dir();
  std::vector<uint8_t> px = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170};
  std::string path;
  {
    tensorboard::EventWriter w((dir / "logs").string());
    path = w.path();
    w.add_scalar("train/loss", 0.125, 1);
    w.add_scalar("val/accuracy", 0.75, 2);
    w.add_histogram("weights/fc", tensorboard::make_histogram({0.0f, 1.0f, 2.0f}, 2), 3);
    w.add_image("img", px, 2, 3, 3, 4);
  }
  EXPECT_EQ(only_event_file((dir / "logs").string()), path);
  std::vector<Event> ev;
  ASSERT_TRUE(read_events(path, ev));
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[0].file_version, "brain.Event:2");
  EXPECT_GT(ev[0].wall_time, 1.6e9);
  ASSERT_EQ(ev[1].values.size(), 1u);
  EXPECT_EQ(ev[1].step, 1);
  EXPECT_EQ(ev[1].values[0].tag, "train/loss");
  EXPECT_EQ(ev[1].values[0].simple, 0.125f);
  EXPECT_EQ(ev[2].step, 2);
  EXPECT_EQ(ev[2].values[0].tag, "val/accuracy");
  EXPECT_EQ(ev[2].values[0].simple, 0.75f);
  const Value& hv = ev[3].values[0];
  EXPECT_EQ(ev[3].step, 3);
  ASSERT_TRUE(hv.has_histo);
  // proto3: a field at its default (0) is not written, and a reader takes it as 0.
  auto dbl = [&](int k) {
    const auto it = hv.histo.find(k);
    return it == hv.histo.end() ? 0.0 : as_double(it->second.num);
  };
  EXPECT_EQ(dbl(1), 0.0);  // min (absent: 0)
  EXPECT_EQ(dbl(2), 2.0);  // max
  EXPECT_EQ(dbl(3), 3.0);  // num
  EXPECT_EQ(dbl(4), 3.0);  // sum
  EXPECT_EQ(dbl(5), 5.0);  // sum of squares
  EXPECT_EQ(packed_doubles(hv.histo.find(6)->second.bytes), (std::vector<double>{1.0, 2.0}));
  EXPECT_EQ(packed_doubles(hv.histo.find(7)->second.bytes), (std::vector<double>{1.0, 2.0}));
  const Value& iv = ev[4].values[0];
  ASSERT_TRUE(iv.has_image);
  EXPECT_EQ(iv.image.find(1)->second.num, 2u);  // height
  EXPECT_EQ(iv.image.find(2)->second.num, 3u);  // width
  EXPECT_EQ(iv.image.find(3)->second.num, 3u);  // colorspace RGB
  int64_t h = 0, w = 0;
  int c = 0;
  std::vector<uint8_t> back;
  ASSERT_TRUE(decode_png(iv.image.find(4)->second.bytes, h, w, c, back));
  EXPECT_EQ(h, 2);
  EXPECT_EQ(w, 3);
  EXPECT_EQ(c, 3);
  EXPECT_EQ(back, px);
  fs::remove_all(dir);
}

#ifdef EMBER_MNIST_BIN

namespace {

struct CliRun {
  int rc = -1;
  std::string out;
};

class MnistExtras : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    // 64 training and 20 test 4x4 images whose class shows in the pixels (as tests/tools/test_mnist_cli.cpp).
    const std::string data = path("data");
    fs::create_directories(data);
    auto split = [&](const std::string& prefix, int64_t n) {
      std::vector<uint8_t> px(static_cast<size_t>(n * 16));
      std::vector<int64_t> y(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        y[i] = i % 10;
        for (int64_t k = 0; k < 16; ++k) px[i * 16 + k] = static_cast<uint8_t>(k == y[i] ? 250 : (i * 7 + k) % 40);
      }
      data::write_idx(data + "/" + prefix + "-images-idx3-ubyte", from_vector<uint8_t>(px, {n, 4, 4}));
      data::write_idx(data + "/" + prefix + "-labels-idx1-ubyte", from_vector<int64_t>(y, {n}));
    };
    split("train", 64);
    split("t10k", 20);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  CliRun run(const std::string& args) const {
    const std::string log = path("log.txt");
    const std::string cmd = std::string("'") + EMBER_MNIST_BIN + "' --data '" + path("data") +
                            "' --device cpu --hidden 8 --threads 1 " + args + " > '" + log + "' 2>&1 < /dev/null";
    const int status = std::system(cmd.c_str());
    CliRun r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream in(log);
    r.out.assign(std::istreambuf_iterator<char>(in), {});
    return r;
  }
  std::vector<nlohmann::json> jsonl(const std::string& p) const {
    std::vector<nlohmann::json> v;
    std::ifstream in(p);
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line));
    return v;
  }
  fs::path dir_;
};

}  // namespace

// --val-split: validation figures every epoch, the test set only at the end (with the best epoch's
// weights), the best checkpoint beside --save, and the split stratified (64 images of classes
// 0..9: classes 0-3 hold 7, 4-9 hold 6; round(0.25 * 7) = round(0.25 * 6) = 2 each: 20 held out).
TEST_F(MnistExtras, ValidationSplitKeepsTheTestSetForTheEnd) {
  const std::string m = path("m.jsonl"), ck = path("ck.safetensors");
  const CliRun r = run("--epochs 3 --val-split 0.25 --metrics-out '" + m + "' --save '" + ck + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("(44 train / 20 test)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("best epoch by validation"), std::string::npos) << r.out;
  const auto lines = jsonl(m);
  ASSERT_EQ(lines.size(), 4u);
  int64_t best = 0;
  double best_acc = -1;
  for (int e = 0; e < 3; ++e) {
    EXPECT_TRUE(lines[e]["test_accuracy"].is_null()) << lines[e];
    ASSERT_TRUE(lines[e]["val_accuracy"].is_number()) << lines[e];
    const double a = lines[e]["val_accuracy"].get<double>();
    // 20 validation images: the accuracy is a multiple of 1/20.
    EXPECT_NEAR(a * 20, std::round(a * 20), 1e-9);
    if (a > best_acc) {
      best_acc = a;
      best = e + 1;
    }
  }
  EXPECT_EQ(lines[3]["best_epoch"], best);
  EXPECT_TRUE(lines[3]["test_accuracy"].is_number());
  // The best checkpoint was written after the best epoch: its history ends there.
  const std::string best_ck = path("ck.best.safetensors");
  ASSERT_TRUE(fs::exists(best_ck));
  const auto hist = nlohmann::json::parse(io::load_safetensors(best_ck).metadata.at("extra.history"));
  EXPECT_EQ(static_cast<int64_t>(hist.size()), best);
  EXPECT_EQ(hist.back().size(), 10u);  // val loss and accuracy kept in the history rows
}

TEST_F(MnistExtras, EarlyStoppingStopsPatienceEpochsAfterTheBest) {
  const std::string m = path("m.jsonl");
  const CliRun r = run("--epochs 60 --lr 0.05 --val-split 0.25 --early-stopping 2 --quiet --metrics-out '" + m + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  const auto lines = jsonl(m);
  const size_t epochs = lines.size() - 1;
  ASSERT_LT(epochs, 60u) << r.out;
  int64_t best = 0;
  double best_acc = -1;
  for (size_t e = 0; e < epochs; ++e)
    if (lines[e]["val_accuracy"].get<double>() > best_acc) {
      best_acc = lines[e]["val_accuracy"].get<double>();
      best = static_cast<int64_t>(e) + 1;
    }
  EXPECT_EQ(static_cast<int64_t>(epochs) - best, 2);
}

TEST_F(MnistExtras, FoldsReportEachFoldAndTheMeanAndStd) {
  const std::string m = path("cv.jsonl");
  const CliRun r = run("--folds 3 --epochs 2 --quiet --metrics-out '" + m + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("3-fold cross-validation"), std::string::npos) << r.out;
  const auto lines = jsonl(m);
  ASSERT_EQ(lines.size(), 4u);
  std::vector<double> acc;
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(lines[k]["type"], "fold");
    EXPECT_EQ(lines[k]["fold"], k + 1);
    acc.push_back(lines[k]["val_accuracy"].get<double>());
  }
  const double mean = (acc[0] + acc[1] + acc[2]) / 3;
  double ss = 0;
  for (double a : acc) ss += (a - mean) * (a - mean);
  EXPECT_NEAR(lines[3]["val_accuracy_mean"].get<double>(), mean, 1e-12);
  EXPECT_NEAR(lines[3]["val_accuracy_std"].get<double>(), std::sqrt(ss / 2), 1e-12);
  char shown[64];
  std::snprintf(shown, sizeof shown, "mean %.2f%% +- %.2f%%", 100 * mean, 100 * std::sqrt(ss / 2));
  EXPECT_NE(r.out.find(shown), std::string::npos) << r.out;
}

TEST_F(MnistExtras, FlagsThatDoNotGoTogetherAreRefused) {
  CliRun r = run("--epochs 1 --early-stopping 2");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("--early-stopping watches the validation accuracy"), std::string::npos) << r.out;
  r = run("--epochs 1 --folds 3 --save '" + path("x.safetensors") + "'");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.out.find("--save and --resume do not apply"), std::string::npos) << r.out;
  r = run("--epochs 1 --val-split 0.95");
  EXPECT_NE(r.rc, 0);
  r = run("--epochs 1 --l1 -1");
  EXPECT_NE(r.rc, 0);
}

// --l1 trains (the penalty changes the weights: a run with it ends elsewhere than one without).
TEST_F(MnistExtras, L1FlagChangesTheRun) {
  const std::string a = path("a.safetensors"), b = path("b.safetensors");
  ASSERT_EQ(run("--epochs 1 --quiet --save '" + a + "'").rc, 0);
  const CliRun r = run("--epochs 1 --quiet --l1 0.01 --save '" + b + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  auto weight = [](const std::string& file) {
    for (const auto& [name, t] : io::load_safetensors(file).tensors)
      if (name == "0.weight") return t.to_vector<float>();
    ADD_FAILURE() << file << " has no 0.weight";
    return std::vector<float>();
  };
  const auto wa = weight(a), wb = weight(b);
  double l1a = 0, l1b = 0;
  for (float v : wa) l1a += std::abs(v);
  for (float v : wb) l1b += std::abs(v);
  EXPECT_LT(l1b, l1a);  // the penalty pulls the weights' L1 norm down
}

// --tensorboard: the event file's scalars match the metrics JSONL epoch by epoch; histograms of every
// parameter's weights and gradients each epoch; the final test figures and the confusion image.
TEST_F(MnistExtras, TensorBoardLogMatchesTheMetrics) {
  const std::string m = path("m.jsonl"), tb = path("tb");
  const CliRun r = run("--epochs 2 --val-split 0.25 --quiet --metrics-out '" + m + "' --tensorboard '" + tb + "'");
  ASSERT_EQ(r.rc, 0) << r.out;
  const std::string file = only_event_file(tb);
  ASSERT_FALSE(file.empty());
  std::vector<Event> ev;
  ASSERT_TRUE(read_events(file, ev));
  EXPECT_EQ(ev.front().file_version, "brain.Event:2");
  std::map<std::pair<std::string, int64_t>, const Value*> by;
  for (const Event& e : ev)
    for (const Value& v : e.values) EXPECT_TRUE(by.emplace(std::make_pair(v.tag, e.step), &v).second) << v.tag;
  const auto lines = jsonl(m);
  for (int64_t step = 1; step <= 2; ++step) {
    const nlohmann::json& j = lines[static_cast<size_t>(step - 1)];
    for (const auto& [tag, key] : std::vector<std::pair<std::string, std::string>>{
             {"train/loss", "train_loss"}, {"train/accuracy", "train_accuracy"}, {"val/loss", "val_loss"},
             {"val/accuracy", "val_accuracy"}, {"learning_rate", "lr"}, {"images_per_s", "images_per_s"}}) {
      auto it = by.find({tag, step});
      ASSERT_NE(it, by.end()) << tag << " at step " << step;
      ASSERT_TRUE(it->second->simple.has_value());
      EXPECT_EQ(*it->second->simple, static_cast<float>(j[key].get<double>())) << tag;
    }
    // 16-8-10 MLP: weights/biases of both layers, each with its gradient; the counts add up.
    double weights = 0, grads = 0;
    for (const auto& [key, v] : by)
      if (key.second == step && v->has_histo) {
        const double num = as_double(v->histo.find(3)->second.num);
        if (key.first.rfind("weights/", 0) == 0) weights += num;
        if (key.first.rfind("gradients/", 0) == 0) grads += num;
      }
    EXPECT_EQ(weights, 16 * 8 + 8 + 8 * 10 + 10);
    EXPECT_EQ(grads, weights);
  }
  EXPECT_EQ(by.count({"test/accuracy", 1}), 0u);  // the test set waits for the end
  const nlohmann::json& summary = lines.back();
  ASSERT_NE(by.find({"test/accuracy", 2}), by.end());
  EXPECT_EQ(*by.at({"test/accuracy", 2})->simple, static_cast<float>(summary["test_accuracy"].get<double>()));
  const Value* img = by.at({"test/confusion_matrix", 2});
  ASSERT_TRUE(img->has_image);
  int64_t h = 0, w = 0;
  int c = 0;
  std::vector<uint8_t> px;
  ASSERT_TRUE(decode_png(img->image.find(4)->second.bytes, h, w, c, px));
  ASSERT_EQ(h, 160);
  ASSERT_EQ(w, 160);
  ASSERT_EQ(c, 3);
  // Cell (label l, prediction p), 16 px square: red = round(255 * (1 - count / row total)).
  const auto cm = summary["confusion_matrix"];
  for (int l = 0; l < 10; ++l) {
    double row = 0;
    for (int p = 0; p < 10; ++p) row += cm[l][p].get<double>();
    for (int p = 0; p < 10; ++p) {
      const double f = row > 0 ? cm[l][p].get<double>() / row : 0;
      EXPECT_EQ(px[static_cast<size_t>(((l * 16 + 8) * 160 + p * 16 + 8) * 3)], std::lround(255 * (1 - f)))
          << "cell " << l << "," << p;
    }
  }
}

#endif  // EMBER_MNIST_BIN
