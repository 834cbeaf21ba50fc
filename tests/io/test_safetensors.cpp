// safetensors tests: round trips, byte-level compatibility with the format (an independent writer
// and reader in this file), malformed-file rejection, and atomic writes under failure.
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

#include "ember/io.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ember-io-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

// Little-endian u64, byte by byte (independent of the host's byte order).
std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

std::string bytes(std::initializer_list<unsigned> values) {
  std::string s;
  for (unsigned v : values) s.push_back(static_cast<char>(v));
  return s;
}

// A safetensors file from a hand-written header and raw data: length prefix + header + data.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

std::string raw_bytes(const Tensor& t) {
  Tensor c = t.cpu();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * dtype_size(c.dtype()));
}

// A CPU tensor of a 16-bit dtype (which has no C++ element type here) from raw bit patterns.
Tensor from_bits16(const std::vector<uint16_t>& bits, const Shape& shape, DType dt) {
  Tensor t = empty(shape, dt);
  std::memcpy(t.data_ptr(), bits.data(), bits.size() * 2);
  return t;
}

}  // namespace

// ---- round trips ----

TEST_F(SafetensorsTest, RoundTripDTypesShapesViewsAndMetadata) {
  Tensor f32 = ember::test::uniform({2, 3}, -1, 1, DType::F32, 1);
  Tensor f64 = ember::test::uniform({4}, -5, 5, DType::F64, 2);
  Tensor i64 = from_vector<int64_t>({-3, 0, int64_t{1} << 40}, {3});
  Tensor i32 = from_vector<int32_t>({7, -8, 9, -2147483647 - 1}, {2, 2});
  Tensor u8 = from_vector<uint8_t>({0, 1, 128, 255, 42}, {5});
  Tensor b = from_vector<bool>({true, false, true}, {3});
  Tensor bf16 = from_bits16({0x3F80, 0xC040, 0x7F80, 0x0001}, {2, 2}, DType::BF16);  // 1, -3, inf, denormal
  Tensor f16 = from_bits16({0x3C00, 0xC500, 0x7BFF}, {3}, DType::F16);               // 1, -5, 65504
  Tensor scalar = from_vector<float>({2.5f}, {});
  Tensor none = zeros({0, 3});
  Tensor base = ember::test::uniform({3, 4}, -2, 2, DType::F32, 3);
  Tensor transposed = base.t();            // strides [1, 4]
  Tensor sliced = base.slice(1, 0, 4, 2);  // every other column
  Tensor bf16_t = bf16.t();                // non-contiguous in a dtype the CPU copy does not cover
  ASSERT_FALSE(transposed.is_contiguous());
  ASSERT_FALSE(sliced.is_contiguous());
  ASSERT_FALSE(bf16_t.is_contiguous());

  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "grüße ✓"}, {"empty", ""}};
  const std::string p = path("model.safetensors");
  // Deliberately not in name order: the file is written sorted by name.
  io::save_safetensors(p,
                       {{"z.f32", f32},
                        {"f64", f64},
                        {"i64", i64},
                        {"i32", i32},
                        {"u8", u8},
                        {"bool", b},
                        {"bf16", bf16},
                        {"f16", f16},
                        {"scalar", scalar},
                        {"none", none},
                        {"transposed", transposed},
                        {"sliced", sliced},
                        {"bf16_t", bf16_t}},
                       meta);

  io::SafetensorsFile file = io::load_safetensors(p);
  EXPECT_EQ(file.metadata, meta);
  std::vector<std::string> names;
  for (const auto& [name, t] : file.tensors) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"bf16", "bf16_t", "bool", "f16", "f64", "i32", "i64", "none", "scalar",
                                             "sliced", "transposed", "u8", "z.f32"}));

  auto m = io::load_safetensors_map(p);
  auto expect_same = [&](const std::string& name, const Tensor& want) {
    SCOPED_TRACE(name);
    const Tensor& got = m.at(name);
    EXPECT_EQ(got.dtype(), want.dtype());
    EXPECT_EQ(got.shape(), want.shape());
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_EQ(got.device(), Device::cpu());
    if (want.dtype() != DType::BF16 && want.dtype() != DType::F16)
      EXPECT_EQ(raw_bytes(got), raw_bytes(want.contiguous()));
  };
  for (const auto& [name, t] : std::vector<std::pair<std::string, Tensor>>{{"z.f32", f32},
                                                                           {"f64", f64},
                                                                           {"i64", i64},
                                                                           {"i32", i32},
                                                                           {"u8", u8},
                                                                           {"bool", b},
                                                                           {"bf16", bf16},
                                                                           {"f16", f16},
                                                                           {"scalar", scalar},
                                                                           {"none", none},
                                                                           {"transposed", transposed},
                                                                           {"sliced", sliced},
                                                                           {"bf16_t", bf16_t}})
    expect_same(name, t);
  EXPECT_EQ(m.at("i64").to_vector<int64_t>(), (std::vector<int64_t>{-3, 0, int64_t{1} << 40}));
  EXPECT_EQ(m.at("bool").to_vector<bool>(), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(m.at("scalar").item<float>(), 2.5f);
  EXPECT_EQ(m.at("none").numel(), 0);
  // Views are saved in their logical (row-major) order, not their storage order.
  EXPECT_TRUE(ember::test::all_close(m.at("transposed"), transposed.contiguous(), {0, 0}));
  EXPECT_TRUE(ember::test::all_close(m.at("sliced"), sliced.contiguous(), {0, 0}));
  EXPECT_EQ(raw_bytes(m.at("bf16")), bytes({0x80, 0x3F, 0x40, 0xC0, 0x80, 0x7F, 0x01, 0x00}));
  EXPECT_EQ(raw_bytes(m.at("f16")), bytes({0x00, 0x3C, 0x00, 0xC5, 0xFF, 0x7B}));
  // bf16 [[1, -3], [inf, denormal]] transposed is [[1, inf], [-3, denormal]].
  EXPECT_EQ(raw_bytes(m.at("bf16_t")), bytes({0x80, 0x3F, 0x80, 0x7F, 0x40, 0xC0, 0x01, 0x00}));
}

TEST_F(SafetensorsTest, EmptyFileAndOverwrite) {
  const std::string p = path("empty.safetensors");
  io::save_safetensors(p, {});
  // `{}` padded with six spaces to 8 bytes, nothing after it.
  EXPECT_EQ(read_all(p), le64(8) + "{}      ");
  io::SafetensorsFile f = io::load_safetensors(p);
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_TRUE(f.metadata.empty());

  io::save_safetensors(p, {{"x", from_vector<float>({1, 2})}});
  EXPECT_EQ(io::load_safetensors_map(p).at("x").to_vector<float>(), (std::vector<float>{1, 2}));
  EXPECT_EQ(listing(), (std::vector<std::string>{"empty.safetensors"}));  // no temporary left behind
}

TEST_F(SafetensorsTest, CudaRoundTrip) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: saving from and loading onto a GPU runs on a GPU machine";
  Tensor host = ember::test::uniform({3, 5}, -1, 1, DType::F32, 9);
  Tensor dev = host.cuda();
  const std::string p = path("cuda.safetensors");
  io::save_safetensors(p, {{"w", dev}, {"wt", dev.t()}});
  auto m = io::load_safetensors_map(p, Device::cuda(0));
  EXPECT_EQ(m.at("w").device(), Device::cuda(0));
  EXPECT_EQ(raw_bytes(m.at("w")), raw_bytes(host));
  EXPECT_EQ(raw_bytes(m.at("wt")), raw_bytes(host.t().contiguous()));
}

// ---- compatibility with the format, checked by code independent of ember's reader/writer ----

// The file a PyTorch `safetensors.torch.save_file` call writes has this layout; here it is built
// byte by byte: JSON written by hand (entries out of offset order, as any writer may), the
// reference writer's space padding, and little-endian values spelled out as bytes.
TEST_F(SafetensorsTest, LoadsFileFromIndependentWriter) {
  std::string header = R"({"__metadata__":{"format":"pt"},)"
                       R"("w":{"dtype":"F64","shape":[],"data_offsets":[30,38]},)"
                       R"("bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("idx":{"dtype":"I64","shape":[2],"data_offsets":[8,24]},)"
                       R"("half":{"dtype":"F16","shape":[1],"data_offsets":[24,26]},)"
                       R"("bh":{"dtype":"BF16","shape":[1,1],"data_offsets":[26,28]},)"
                       R"("mask":{"dtype":"BOOL","shape":[2],"data_offsets":[28,30]},)"
                       R"("empty":{"dtype":"U8","shape":[0,4],"data_offsets":[38,38]},)"
                       R"("img":{"dtype":"U8","shape":[2,2],"data_offsets":[38,42]},)"
                       R"("cls":{"dtype":"I32","shape":[1],"data_offsets":[42,46]}})";
  while (header.size() % 8) header += ' ';
  const std::string data = bytes({
      0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0,  // bias: 1.0f, -2.5f
      0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // idx: 1
      0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,  //      -2
      0x00, 0x3C,                                      // half: 1.0 (0x3C00)
      0x80, 0xBF,                                      // bh: -1.0 (0xBF80)
      0x01, 0x00,                                      // mask: true, false
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0x3F,  // w: 0.5
      0x00, 0x07, 0x80, 0xFF,                          // img: 0, 7, 128, 255
      0x39, 0x30, 0x00, 0x00,                          // cls: 12345
  });
  ASSERT_EQ(data.size(), 46u);
  const std::string p = path("independent.safetensors");
  write_all(p, le64(header.size()) + header + data);

  io::SafetensorsFile f = io::load_safetensors(p);
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors.size(), 9u);
  auto m = io::load_safetensors_map(p);
  EXPECT_EQ(m.at("bias").dtype(), DType::F32);
  EXPECT_EQ(m.at("bias").to_vector<float>(), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(m.at("idx").to_vector<int64_t>(), (std::vector<int64_t>{1, -2}));
  EXPECT_EQ(m.at("half").dtype(), DType::F16);
  EXPECT_EQ(raw_bytes(m.at("half")), bytes({0x00, 0x3C}));
  EXPECT_EQ(m.at("bh").dtype(), DType::BF16);
  EXPECT_EQ(m.at("bh").shape(), (Shape{1, 1}));
  EXPECT_EQ(raw_bytes(m.at("bh")), bytes({0x80, 0xBF}));
  EXPECT_EQ(m.at("mask").to_vector<bool>(), (std::vector<bool>{true, false}));
  EXPECT_EQ(m.at("w").dim(), 0);
  EXPECT_EQ(m.at("w").item<double>(), 0.5);
  EXPECT_EQ(m.at("empty").shape(), (Shape{0, 4}));
  EXPECT_EQ(m.at("img").to_vector<uint8_t>(), (std::vector<uint8_t>{0, 7, 128, 255}));
  EXPECT_EQ(m.at("cls").to_vector<int32_t>(), (std::vector<int32_t>{12345}));
}

// The reverse: a file ember writes, taken apart by a minimal reader written here.
TEST_F(SafetensorsTest, IndependentReaderParsesEmberFile) {
  const std::string p = path("ember.safetensors");
  io::save_safetensors(p,
                       {{"w", from_vector<float>({1, 2, 3, 4}, {2, 2})},
                        {"step", from_vector<int64_t>({7}, {})},
                        {"b", from_vector<int32_t>({-1}, {1})}},
                       {{"epoch", "3"}});
  const std::string file = read_all(p);
  ASSERT_GE(file.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  EXPECT_EQ(n % 8, 0u) << "the header is padded to 8 bytes like the reference writer";
  ASSERT_LE(8 + n, file.size());
  const std::string header = file.substr(8, n);
  const std::string data = file.substr(8 + n);

  // The reference writer's layout: metadata first, entry keys in the order dtype, shape,
  // data_offsets, compact JSON, spaces only as padding at the end.
  const std::string json_text = header.substr(0, header.find_last_not_of(' ') + 1);
  EXPECT_EQ(json_text, R"({"__metadata__":{"epoch":"3"},)"
                       R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
                       R"("step":{"dtype":"I64","shape":[],"data_offsets":[4,12]},)"
                       R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[12,28]}})");
  EXPECT_LT(header.size() - json_text.size(), 8u);

  const nlohmann::json doc = nlohmann::json::parse(header);
  EXPECT_EQ(doc["__metadata__"]["epoch"], "3");
  EXPECT_EQ(doc["w"]["dtype"], "F32");
  EXPECT_EQ(doc["w"]["shape"], nlohmann::json::array({2, 2}));
  EXPECT_EQ(doc["step"]["dtype"], "I64");
  EXPECT_EQ(doc["step"]["shape"], nlohmann::json::array());
  EXPECT_EQ(doc["b"]["dtype"], "I32");
  ASSERT_EQ(data.size(), 28u) << "data ends exactly at the end of the file";
  auto range = [&](const char* name) {
    const auto& off = doc[name]["data_offsets"];
    return data.substr(off[0].get<size_t>(), off[1].get<size_t>() - off[0].get<size_t>());
  };
  EXPECT_EQ(range("b"), bytes({0xFF, 0xFF, 0xFF, 0xFF}));
  EXPECT_EQ(range("step"), bytes({0x07, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(range("w"), bytes({0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0x40,     // 1, 2
                               0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40}));  // 3, 4
}

// Bytes other than 0/1 in a BOOL tensor read as true (a C++ bool may only hold 0 or 1).
TEST_F(SafetensorsTest, BoolBytesAreNormalized) {
  const std::string p = path("bool.safetensors");
  write_all(p, st_file(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", bytes({0x00, 0x02, 0xFF})));
  EXPECT_EQ(io::load_safetensors_map(p).at("m").to_vector<bool>(), (std::vector<bool>{false, true, true}));
}

// ---- malformed files: each rejected with a message naming the file and the problem ----

namespace {
struct Malformed {
  const char* what;
  std::string bytes;
  std::vector<std::string> needles;
};

// One F32 [2] entry at `offsets`, as a header fragment.
std::string f32_entry(const std::string& name, const std::string& offsets) {
  return "\"" + name + R"(":{"dtype":"F32","shape":[2],"data_offsets":)" + offsets + "}";
}

std::vector<Malformed> malformed_cases() {
  const std::string eight(8, '\x11');
  return {
      {"shorter than the length prefix", "abc", {"3 bytes", "too short"}},
      {"empty file", "", {"0 bytes", "too short"}},
      {"header length past EOF", le64(100) + "{}", {"header length 100", "runs past the end of the file"}},
      {"header length over 100 MB", le64(200'000'000) + "{}", {"header length 200000000", "exceeds the limit"}},
      {"zero-length header", le64(0), {"not valid JSON"}},
      {"invalid UTF-8 byte", st_file("{\"a\xff\":1}", ""), {"not valid UTF-8", "0xff", "offset 3"}},
      {"overlong UTF-8", st_file("{\"\xc0\xaf\":1}", ""), {"not valid UTF-8", "0xc0"}},
      {"UTF-8 surrogate", st_file("{\"\xed\xa0\x80\":1}", ""), {"not valid UTF-8"}},
      {"truncated UTF-8 sequence", st_file("{\"\xe2\x82", ""), {"not valid UTF-8"}},
      {"lone surrogate escape", st_file(R"({"\ud800":1})", ""), {"not valid JSON"}},
      {"not JSON", st_file("{not json", ""), {"not valid JSON"}},
      {"trailing garbage after JSON", st_file("{}x", ""), {"not valid JSON"}},
      {"array at top level", st_file("[1,2]", ""), {"must be a JSON object", "array"}},
      {"string at top level", st_file(R"("hi")", ""), {"must be a JSON object", "string"}},
      {"unknown dtype",
       st_file(R"({"t":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", "x"),
       {"tensor 't'", "unknown dtype 'Q7'", "F64, F32"}},
      {"unsupported dtype",
       st_file(R"({"t":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}})", "x"),
       {"unsupported dtype 'I8'"}},
      {"unsupported float8",
       st_file(R"({"t":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x"),
       {"unsupported dtype 'F8_E4M3'"}},
      {"dtype not a string",
       st_file(R"({"t":{"dtype":5,"shape":[1],"data_offsets":[0,1]}})", "x"),
       {"tensor 't' dtype must be a string", "number"}},
      {"negative shape",
       st_file(R"({"t":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", ""),
       {"tensor 't' shape[0] is -1"}},
      {"fractional shape",
       st_file(R"({"t":{"dtype":"U8","shape":[2.5],"data_offsets":[0,2]}})", "xx"),
       {"shape[0] must be a non-negative integer", "2.5"}},
      {"shape not an array",
       st_file(R"({"t":{"dtype":"U8","shape":3,"data_offsets":[0,3]}})", "xxx"),
       {"shape must be an array"}},
      {"element count overflow",
       st_file(R"({"t":{"dtype":"U8","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})", eight),
       {"tensor 't'", "more elements than fit in 64 bits"}},
      {"byte size overflow",
       st_file(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", eight),
       {"byte size that does not fit in 64 bits"}},
      {"extent beyond int64",
       st_file(R"({"t":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})", eight),
       {"shape[0] is 18446744073709551615"}},
      {"offsets out of bounds",
       st_file("{" + f32_entry("t", "[0,400]") + "}", eight),
       {"tensor 't' data_offsets [0, 400] run past the end of the data buffer (8 bytes"}},
      // A hostile header claiming a 4 TiB tensor: rejected from the header alone, never allocated.
      {"huge claimed tensor",
       st_file(R"({"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}})", eight),
       {"run past the end of the data buffer"}},
      {"offsets begin > end", st_file("{" + f32_entry("t", "[8,0]") + "}", eight), {"[8, 0]: begin is after end"}},
      {"negative offset", st_file("{" + f32_entry("t", "[-8,0]") + "}", eight), {"data_offsets[0] is -8"}},
      {"offsets wrong arity",
       st_file("{" + f32_entry("t", "[0]") + "}", eight),
       {"data_offsets must be an array [begin, end]"}},
      {"byte size mismatch",
       st_file(R"({"fc1.weight":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}})", std::string(100, 'x')),
       {"tensor 'fc1.weight' data_offsets [0, 100] hold 100 bytes but F32 [5, 6] needs 120"}},
      {"overlapping ranges",
       st_file("{" + f32_entry("a", "[0,8]") + "," + f32_entry("b", "[4,12]") + "}", eight + "xxxx"),
       {"tensor 'b' data_offsets [4, 12] overlap tensor 'a' data_offsets [0, 8]"}},
      {"same range twice",
       st_file("{" + f32_entry("a", "[0,8]") + "," + f32_entry("b", "[0,8]") + "}", eight),
       {"overlap"}},
      {"gap between tensors",
       st_file("{" + f32_entry("a", "[0,8]") + "," + f32_entry("b", "[12,20]") + "}", eight + "xxxx" + eight),
       {"gap in the data buffer", "bytes [8, 12)", "tensor 'b'"}},
      {"gap at the start", st_file("{" + f32_entry("a", "[4,12]") + "}", "xxxx" + eight), {"bytes [0, 4)"}},
      {"trailing bytes", st_file("{" + f32_entry("a", "[0,8]") + "}", eight + "zz"), {"2 trailing bytes"}},
      {"data but no tensors", st_file("{}", "zz"), {"2 trailing bytes"}},
      {"duplicate tensor names",
       st_file("{" + f32_entry("a", "[0,8]") + "," + f32_entry("a", "[8,16]") + "}", eight + eight),
       {"duplicate tensor name 'a'"}},
      {"duplicate key in an entry",
       st_file(R"({"t":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}})", eight),
       {"duplicate key 'dtype'", "entry 't'"}},
      {"two metadata objects", st_file(R"({"__metadata__":{},"__metadata__":{}})", ""), {"more than one __metadata__"}},
      {"metadata with a number",
       st_file(R"({"__metadata__":{"epoch":3}})", ""),
       {"__metadata__ value for key 'epoch' must be a string", "number"}},
      {"metadata not an object", st_file(R"({"__metadata__":["a"]})", ""), {"__metadata__ must be an object"}},
      {"missing data_offsets",
       st_file(R"({"t":{"dtype":"F32","shape":[2]}})", eight),
       {"tensor 't' is missing 'data_offsets'"}},
      {"missing dtype", st_file(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", eight), {"is missing 'dtype'"}},
      {"unexpected key",
       st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"foo":1}})", eight),
       {"unexpected key 'foo'"}},
      {"entry not an object", st_file(R"({"t":[1,2]})", ""), {"tensor 't' must be an object"}},
      {"nesting too deep", st_file(R"({"t":{"shape":[[[1]]]}})", ""), {"deeper than 3 levels", "header, tensor entry, shape"}},
  };
}
}  // namespace

TEST_F(SafetensorsTest, RejectsMalformedFiles) {
  const std::vector<Malformed> cases = malformed_cases();
  EXPECT_GE(cases.size(), 15u);
  int i = 0;
  for (const Malformed& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string p = path("bad" + std::to_string(i++) + ".safetensors");
    write_all(p, c.bytes);
    std::vector<std::string> needles = c.needles;
    needles.push_back("load_safetensors: " + p + ": ");
    EXPECT_TRUE(throws_with([&] { io::load_safetensors(p); }, needles));
  }
}

// Every truncation and a thousand seeded byte mutations of a valid file either load or throw
// ember::Error: nothing crashes, hangs or trips the sanitizers.
TEST_F(SafetensorsTest, TruncatedAndMutatedFilesFailCleanly) {
  const std::string good = path("good.safetensors");
  io::save_safetensors(good,
                       {{"a", from_vector<float>({1, 2, 3}, {3})},
                        {"b", from_vector<int64_t>({4, 5}, {1, 2})},
                        {"c", from_vector<bool>({true}, {})}},
                       {{"k", "v"}});
  const std::string original = read_all(good);
  int loaded = 0, rejected = 0, n = 0;
  auto try_load = [&](const std::string& bytes) {
    // A fresh name each time: rewriting one file in place makes ext4 flush it on every close.
    const std::string p = path("mutant" + std::to_string(n++) + ".safetensors");
    write_all(p, bytes);
    try {
      io::load_safetensors(p);
      ++loaded;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      ++rejected;
    }
    fs::remove(p);
  };
  for (size_t len = 0; len < original.size(); ++len) try_load(original.substr(0, len));
  EXPECT_EQ(loaded, 0) << "every truncation is rejected";
  std::mt19937 rng(20240601);
  for (int i = 0; i < 1000; ++i) {
    std::string m = original;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<char>(rng() % 256);
    try_load(m);
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(loaded, 0) << "flips inside tensor data still load";
}

TEST_F(SafetensorsTest, RejectsMissingFilesAndDirectories) {
  const std::string missing = path("missing.safetensors");
  EXPECT_TRUE(throws_with([&] { io::load_safetensors(missing); }, {missing, "cannot open", "No such file"}));
  EXPECT_TRUE(throws_with([&] { io::load_safetensors(dir_.string()); }, {dir_.string(), "not a regular file"}));
}

TEST_F(SafetensorsTest, SaveRejectsBadNames) {
  const std::string p = path("x.safetensors");
  Tensor t = zeros({2});
  EXPECT_TRUE(throws_with(
      [&] {
        io::save_safetensors(p, {{"a", t}, {"b", t}, {"a", t}});
      },
      {"save_safetensors", p, "duplicate tensor name 'a'"}));
  EXPECT_TRUE(throws_with([&] { io::save_safetensors(p, {{"a", t}, {"", t}}); }, {"tensor #1 has an empty name"}));
  EXPECT_TRUE(throws_with([&] { io::save_safetensors(p, {{"__metadata__", t}}); }, {"'__metadata__' is reserved"}));
  EXPECT_TRUE(throws_with([&] { io::save_safetensors(p, {{"bad\xff", t}}); }, {"not valid UTF-8"}));
  EXPECT_TRUE(throws_with([&] { io::save_safetensors(p, {{"u", Tensor()}}); }, {"tensor 'u' is undefined"}));
  EXPECT_TRUE(throws_with([&] { io::save_safetensors(p, {}, {{"k", "\xc0\x80"}}); }, {"metadata value of 'k'"}));
  EXPECT_TRUE(listing().empty()) << "a rejected save creates nothing";
}

// ---- atomic writes ----

TEST_F(SafetensorsTest, AtomicWriterThrowingMidwayLeavesOriginal) {
  const std::string p = path("ckpt.safetensors");
  io::save_safetensors(p, {{"a", from_vector<float>({1, 2, 3})}});
  const std::string before = read_all(p);

  // A writer that fails halfway through, with its own exception type: passed through unchanged.
  EXPECT_THROW(io::write_file_atomic(p,
                                     [](std::FILE* f) {
                                       io::write_bytes(f, "partial", 7);
                                       throw std::runtime_error("writer gave up");
                                     }),
               std::runtime_error);
  EXPECT_EQ(read_all(p), before);
  EXPECT_EQ(listing(), (std::vector<std::string>{"ckpt.safetensors"})) << "temporary file removed";

  // An ember::Error from the writer comes back naming the path and saying nothing changed.
  EXPECT_TRUE(throws_with(
      [&] {
        io::write_file_atomic(p, [](std::FILE* f) {
          io::write_bytes(f, "partial", 7);
          throw Error("tensor copy failed");
        });
      },
      {"write_file_atomic: cannot write '" + p + "'", "tensor copy failed", "left unchanged"}));
  EXPECT_EQ(read_all(p), before);
  EXPECT_EQ(io::load_safetensors_map(p).at("a").to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(listing(), (std::vector<std::string>{"ckpt.safetensors"}));

  // A successful write replaces the file completely.
  io::write_file_atomic(p, [](std::FILE* f) { std::fputs("new contents", f); });
  EXPECT_EQ(read_all(p), "new contents");
  EXPECT_EQ(listing(), (std::vector<std::string>{"ckpt.safetensors"}));
}

// A real I/O failure in the middle of a save: RLIMIT_FSIZE makes the kernel fail writes past a
// size with EFBIG, like a full disk, and (unlike a read-only directory) it binds root too.
TEST_F(SafetensorsTest, AtomicSaveFailingOnWriteLeavesOriginal) {
  const std::string p = path("ckpt.safetensors");
  io::save_safetensors(p, {{"a", from_vector<float>({1, 2, 3})}});
  const std::string before = read_all(p);

  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  struct sigaction ignore {
  }, old_action{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGXFSZ, &ignore, &old_action), 0);  // EFBIG instead of being killed
  rlimit small = old_limit;
  small.rlim_cur = std::min<rlim_t>(64 * 1024, old_limit.rlim_max);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    io::save_safetensors(p, {{"big", zeros({1 << 20})}});  // 4 MiB
  } catch (const Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::sigaction(SIGXFSZ, &old_action, nullptr);

  EXPECT_NE(message.find("save_safetensors: cannot write '" + p + "'"), std::string::npos) << message;
  EXPECT_NE(message.find(std::strerror(EFBIG)), std::string::npos) << message;
  EXPECT_NE(message.find("left unchanged"), std::string::npos) << message;
  EXPECT_EQ(read_all(p), before);
  EXPECT_EQ(io::load_safetensors_map(p).at("a").to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(listing(), (std::vector<std::string>{"ckpt.safetensors"}));
}

// A process killed in the middle of a write (here it exits from inside the writer) leaves the
// old file intact; only a stale temporary file can remain, never a torn target.
TEST_F(SafetensorsTest, AtomicWriteKilledMidwayLeavesOriginal) {
  const std::string p = path("ckpt.safetensors");
  io::save_safetensors(p, {{"a", from_vector<float>({1, 2, 3})}});
  const std::string before = read_all(p);
  EXPECT_EXIT(io::write_file_atomic(p,
                                    [](std::FILE* f) {
                                      io::write_bytes(f, "partial", 7);
                                      std::fflush(f);
                                      ::_exit(7);
                                    }),
              ::testing::ExitedWithCode(7), "");
  EXPECT_EQ(read_all(p), before);
  EXPECT_EQ(io::load_safetensors_map(p).at("a").to_vector<float>(), (std::vector<float>{1, 2, 3}));
  const std::vector<std::string> names = listing();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0], "ckpt.safetensors");
  EXPECT_EQ(names[1].rfind("ckpt.safetensors.tmp.", 0), 0u) << names[1];
  EXPECT_EQ(read_all(path(names[1])), "partial");

  // The next save of the same target removes what the killed writer left (45 kills once left 9
  // such files, 40 MB, forever).
  io::save_safetensors(p, {{"a", from_vector<float>({4, 5})}});
  EXPECT_EQ(listing(), (std::vector<std::string>{"ckpt.safetensors"}));
}

TEST_F(SafetensorsTest, StaleTemporaryCleanupTouchesOnlyDeadWritersOfTheSameTarget) {
  const std::string p = path("ckpt.safetensors");
  // pid_max is at most 2^22 on Linux, so this writer cannot be running.
  const std::string dead = "ckpt.safetensors.tmp.999999999.0";
  const std::string live = "ckpt.safetensors.tmp." + std::to_string(::getppid()) + ".3";  // our parent runs
  const std::vector<std::string> kept = {live, "ckpt.safetensors.tmp.notes", "ckpt.safetensors.tmp.999999999.x",
                                         "other.safetensors.tmp.999999999.0", "ckpt.safetensors.tmp.999999998.1"};
  write_all(path(dead), "stale");
  for (const std::string& k : kept) write_all(path(k), "keep");
  // A link named like a stale temporary is left alone (never followed, never removed).
  fs::remove(path(kept.back()));
  fs::create_symlink(path("ckpt.safetensors.tmp.notes"), path(kept.back()));
  io::save_safetensors(p, {{"a", zeros({2})}});
  std::vector<std::string> expected = kept;
  expected.push_back("ckpt.safetensors");
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(listing(), expected);
}

TEST_F(SafetensorsTest, SaveIntoMissingDirectoryNamesThePath) {
  const std::string p = path("no/such/dir/model.safetensors");
  EXPECT_TRUE(throws_with(
      [&] {
        io::save_safetensors(p, {{"a", zeros({2})}});
      },
      {"save_safetensors: cannot write '" + p + "'", "No such file or directory"}));
  EXPECT_TRUE(listing().empty());
}
