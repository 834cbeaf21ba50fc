// safetensors against the official library (PyPI `safetensors`, run by tests/io/safetensors_interop.py
// in the virtual environment tools/setup-python.sh makes): it parses every kind of file ember writes
// (every dtype, views, 0-d and empty tensors, metadata, a training checkpoint) to the same bytes, and
// ember reads what it writes. Skipped, saying why, when that Python is absent; a failure where the
// environment variable EMBER_REQUIRE_PYTHON_CLIENTS=1 is set (CI sets it).
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ember/checkpoint.h"
#include "ember/io.h"
#include "test_util.h"

using namespace ember;
namespace fs = std::filesystem;

namespace {

std::string python() {
  const char* env = std::getenv("EMBER_PYTHON");
  return env && *env ? env : EMBER_PYTHON;
}

std::string script() { return std::string(EMBER_SOURCE_DIR) + "/tests/io/safetensors_interop.py"; }

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a shell command; returns its exit status and its output (stdout and stderr together).
std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, std::strerror(errno)};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class SafetensorsInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto [rc, out] = run(quote(python()) + " -c 'import safetensors, safetensors.numpy, numpy'");
    if (rc != 0) {
      const std::string why = "no official safetensors library for " + python() +
                              " (run tools/setup-python.sh, or set EMBER_PYTHON): " + out.substr(0, 300);
      const char* req = std::getenv("EMBER_REQUIRE_PYTHON_CLIENTS");
      if (req && std::string(req) == "1") FAIL() << why;
      GTEST_SKIP() << why;
    }
    std::string tmpl = (fs::temp_directory_path() / "ember-interop-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // What the official library reads from `file` (see safetensors_interop.py dump).
  nlohmann::json official_dump(const std::string& file) {
    const std::string out = path("dump.json");
    const auto [rc, log] = run(quote(python()) + " " + quote(script()) + " dump " + quote(file) + " " + quote(out));
    EXPECT_EQ(rc, 0) << "the official safetensors library rejected " << file << ":\n" << log;
    if (rc != 0) return {};
    std::ifstream in(out);
    return nlohmann::json::parse(in);
  }

  fs::path dir_;
};

std::string hex_bytes(const Tensor& t) {
  Tensor c = t.cpu().contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  std::string s;
  static const char* digits = "0123456789abcdef";
  for (size_t i = 0; i < static_cast<size_t>(c.numel()) * dtype_size(c.dtype()); ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::vector<int64_t> dims(const Tensor& t) { return std::vector<int64_t>(t.shape().begin(), t.shape().end()); }

// The official reading of a file ember wrote equals, tensor by tensor, the tensors ember wrote.
void expect_official_reads(const nlohmann::json& dump, const std::vector<std::pair<std::string, Tensor>>& written,
                           const std::map<std::string, std::string>& metadata) {
  ASSERT_TRUE(dump.contains("tensors"));
  EXPECT_EQ(dump["tensors"].size(), written.size());
  for (const auto& [name, t] : written) {
    ASSERT_TRUE(dump["tensors"].contains(name)) << name;
    const auto& e = dump["tensors"][name];
    std::string dt = dtype_name(t.dtype());
    for (char& c : dt) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(e["dtype"].get<std::string>(), dt) << name;
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), dims(t)) << name;
    EXPECT_EQ(e["hex"].get<std::string>(), hex_bytes(t)) << name;
  }
  using Metadata = std::map<std::string, std::string>;
  EXPECT_EQ(dump["metadata"].get<Metadata>(), metadata);
}

Tensor bits16(const std::vector<uint16_t>& bits, const Shape& shape, DType dt) {
  Tensor t = empty(shape, dt);
  std::memcpy(t.data_ptr(), bits.data(), bits.size() * 2);
  return t;
}

// The values of a floating tensor as f64, decoding the 16-bit formats from their bits here (IEEE
// binary16: 1 sign, 5 exponent, 10 mantissa bits; bfloat16: the top half of an f32).
std::vector<double> decode_floats(const Tensor& t) {
  if (t.dtype() == DType::F32 || t.dtype() == DType::F64) return t.to(DType::F64).to_vector<double>();
  Tensor c = t.contiguous();
  std::vector<uint16_t> bits(static_cast<size_t>(c.numel()));
  std::memcpy(bits.data(), c.data_ptr(), bits.size() * 2);
  std::vector<double> out;
  for (uint16_t h : bits) {
    if (t.dtype() == DType::BF16) {
      const uint32_t f = uint32_t{h} << 16;
      float v;
      std::memcpy(&v, &f, 4);
      out.push_back(v);
    } else {
      const int e = (h >> 10) & 31, m = h & 1023;
      const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1.0 + m / 1024.0, e - 15);
      out.push_back(h & 0x8000 ? -mag : mag);
    }
  }
  return out;
}

// The values safetensors_interop.py's `write` uses, written out again here.
double float_value(int64_t i) { return static_cast<double>(i % 17) * 0.25 - 2.0; }

}  // namespace

TEST_F(SafetensorsInterop, OfficialLibraryReadsEveryDTypeViewAndMetadataEmberWrites) {
  Tensor base = ember::test::uniform({3, 4}, -2, 2, DType::F32, 11);
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", ember::test::uniform({2, 3}, -1, 1, DType::F32, 1)},
      {"f64", ember::test::uniform({4}, -5, 5, DType::F64, 2)},
      {"bf16", bits16({0x3F80, 0xC040, 0x7F80, 0x0001}, {2, 2}, DType::BF16)},  // 1, -3, inf, a denormal
      {"f16", bits16({0x3C00, 0xC500, 0x7BFF}, {3}, DType::F16)},               // 1, -5, 65504
      {"i64", from_vector<int64_t>({-3, 0, int64_t{1} << 40}, {3})},
      {"i32", from_vector<int32_t>({7, -8, 9, -2147483647 - 1}, {2, 2})},
      {"u8", from_vector<uint8_t>({0, 1, 128, 255, 42}, {5})},
      {"bool", from_vector<bool>({true, false, true}, {3})},
      {"scalar", from_vector<float>({2.5f}, {})},
      {"empty", zeros({0, 3})},
      {"transposed", base.t()},
      {"sliced", base.slice(1, 0, 4, 2)},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "grüße ✓"}, {"empty", ""}};
  const std::string p = path("all.safetensors");
  io::save_safetensors(p, tensors, meta);
  expect_official_reads(official_dump(p), tensors, meta);
}

TEST_F(SafetensorsInterop, OfficialLibraryReadsATrainingCheckpoint) {
  Generator init(5);
  auto model = nn::sequential({std::make_shared<nn::Linear>(4, 8, nn::LinearOptions{.generator = &init}),
                               std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(8, 3, nn::LinearOptions{.generator = &init})});
  optim::Adam opt(model->parameters(), optim::AdamOptions{.lr = 0.01, .amsgrad = true});
  optim::StepLR sched(opt, 2, 0.5);
  Generator data(6);
  Tensor x = randn({16, 4}, DType::F32, &data);
  Tensor y = randint(0, 3, {16}, DType::I64, &data);
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    cross_entropy((*model)(x), y).backward();
    opt.step();
    sched.step();
  }
  const std::string p = path("checkpoint.safetensors");
  save_checkpoint(p, *model, opt, &sched, TrainingState{.epoch = 1, .step = 3});

  // Every tensor and the metadata as ember's reader sees them; the model's own tensors among them.
  const io::SafetensorsFile ours = io::load_safetensors(p);
  const nlohmann::json dump = official_dump(p);
  expect_official_reads(dump, ours.tensors, ours.metadata);
  for (const auto& [name, t] : model->state_dict()) {
    bool found = false;
    for (const auto& [key, entry] : dump["tensors"].items())
      if (key.size() >= name.size() && key.compare(key.size() - name.size(), name.size(), name) == 0 &&
          entry["hex"].get<std::string>() == hex_bytes(t))
        found = true;
    EXPECT_TRUE(found) << "the official reading holds no tensor named *" << name << " with the model's bytes";
  }
}

TEST_F(SafetensorsInterop, EmberReadsWhatTheOfficialLibraryWrites) {
  const std::string p = path("official.safetensors");
  const auto [rc, log] = run(quote(python()) + " " + quote(script()) + " write " + quote(p));
  ASSERT_EQ(rc, 0) << log;
  const io::SafetensorsFile f = io::load_safetensors(p);
  ASSERT_EQ(f.metadata.count("framework"), 1u);
  EXPECT_EQ(f.metadata.at("framework"), "numpy");
  EXPECT_EQ(f.metadata.at("written_by").rfind("safetensors ", 0), 0u) << f.metadata.at("written_by");

  std::map<std::string, Tensor> t(f.tensors.begin(), f.tensors.end());
  ASSERT_EQ(t.size(), 10u);
  std::vector<double> floats;
  for (int64_t i = 0; i < 15; ++i) floats.push_back(float_value(i));
  for (const auto& [name, dt] : std::vector<std::pair<std::string, DType>>{
           {"f64", DType::F64}, {"f32", DType::F32}, {"f16", DType::F16}, {"bf16", DType::BF16}}) {
    ASSERT_EQ(t.at(name).dtype(), dt) << name;
    EXPECT_EQ(t.at(name).shape(), (Shape{3, 5})) << name;
    // Every value is a multiple of 1/4 in [-2, 2]: exact in each of these dtypes.
    EXPECT_EQ(decode_floats(t.at(name)), floats) << name;
  }
  std::vector<int64_t> i64, i32, u8;
  std::vector<bool> b;
  for (int64_t i = 0; i < 4; ++i) i64.push_back(i * (int64_t{1} << 40) - 7);
  for (int64_t i = 0; i < 6; ++i) i32.push_back(i * 100000 - (int64_t{1} << 31));
  for (int64_t i = 0; i < 10; ++i) u8.push_back((i * 37) % 256);
  for (int64_t i = 0; i < 7; ++i) b.push_back(i % 3 == 0);
  ASSERT_EQ(t.at("i64").dtype(), DType::I64);
  EXPECT_EQ(t.at("i64").to_vector<int64_t>(), i64);
  ASSERT_EQ(t.at("i32").dtype(), DType::I32);
  EXPECT_EQ(t.at("i32").shape(), (Shape{2, 3}));
  EXPECT_EQ(t.at("i32").to(DType::I64).to_vector<int64_t>(), i32);
  ASSERT_EQ(t.at("u8").dtype(), DType::U8);
  EXPECT_EQ(t.at("u8").to(DType::I64).to_vector<int64_t>(), u8);
  ASSERT_EQ(t.at("bool").dtype(), DType::Bool);
  EXPECT_EQ(t.at("bool").to_vector<bool>(), b);
  EXPECT_EQ(t.at("scalar").shape(), Shape{});
  EXPECT_EQ(t.at("scalar").item<float>(), 3.5f);
  EXPECT_EQ(t.at("empty").shape(), (Shape{0, 4}));

  // And ember writes it back so that the official library reads the same bytes.
  const std::string again = path("again.safetensors");
  io::save_safetensors(again, f.tensors, f.metadata);
  expect_official_reads(official_dump(again), f.tensors, f.metadata);
}
