// PyTorch .pth files: the fixtures tools/make-fixtures.py wrote with torch.save (strides, offsets,
// shared storages, every dtype, deflated entries, torchvision-layout ResNets whose outputs must
// match PyTorch's), ember -> .pth -> ember round trips, and hostile archives built byte by byte.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ember/models.h"
#include "ember/pth.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) { return std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/pth/" + name; }

const Tensor& get(const io::NamedTensors& sd, const std::string& name) {
  for (const auto& [n, t] : sd)
    if (n == name) return t;
  throw std::runtime_error("no tensor " + name);
}

template <class T> std::vector<T> values(const Tensor& t) {
  std::vector<T> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.data_ptr(), out.size() * sizeof(T));
  return out;
}

// ---------------------------------------------------------------- fixtures written by torch.save

// tools/make-fixtures.py's layout_dict(), recomputed: base = arange(24) * 0.5 - 3 and its views.
void expect_layout(const io::NamedTensors& sd) {
  const std::vector<std::string> names = {"base", "transposed", "offset_slice", "strided", "param", "scalar", "empty",
                                          "f64",  "f16",        "bf16",         "i64",     "i32",   "u8",    "bool"};
  ASSERT_EQ(sd.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(sd[i].first, names[i]) << "file order kept";
  auto base = [](int64_t k) { return static_cast<float>(k) * 0.5f - 3.0f; };
  for (const auto& [n, t] : sd) EXPECT_TRUE(t.is_contiguous()) << n;
  std::vector<float> b = values<float>(get(sd, "base"));
  ASSERT_EQ(b.size(), 24u);
  for (int64_t k = 0; k < 24; ++k) EXPECT_EQ(b[k], base(k));
  const Tensor& tr = get(sd, "transposed");
  ASSERT_EQ(tr.shape(), (Shape{6, 4}));
  std::vector<float> trv = values<float>(tr);
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(trv[i * 4 + j], base(j * 6 + i));
  std::vector<float> sl = values<float>(get(sd, "offset_slice"));
  ASSERT_EQ(sl.size(), 6u);
  for (int64_t k = 0; k < 6; ++k) EXPECT_EQ(sl[k], base(5 + k));
  const Tensor& st = get(sd, "strided");
  ASSERT_EQ(st.shape(), (Shape{3, 3}));
  std::vector<float> stv = values<float>(st);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(stv[i * 3 + j], base((i + 1) * 6 + 2 * j));
  std::vector<float> p = values<float>(get(sd, "param"));
  ASSERT_EQ(get(sd, "param").shape(), (Shape{2, 3}));
  for (int64_t k = 0; k < 6; ++k) EXPECT_EQ(p[k], static_cast<float>(k) / 4);
  EXPECT_EQ(get(sd, "scalar").shape(), Shape{});
  EXPECT_EQ(values<float>(get(sd, "scalar"))[0], 2.5f);
  EXPECT_EQ(get(sd, "empty").shape(), (Shape{0, 3}));

  EXPECT_EQ(get(sd, "f64").dtype(), DType::F64);
  EXPECT_EQ(get(sd, "f16").dtype(), DType::F16);
  EXPECT_EQ(get(sd, "bf16").dtype(), DType::BF16);
  EXPECT_EQ(get(sd, "i64").dtype(), DType::I64);
  EXPECT_EQ(get(sd, "i32").dtype(), DType::I32);
  EXPECT_EQ(get(sd, "u8").dtype(), DType::U8);
  EXPECT_EQ(get(sd, "bool").dtype(), DType::Bool);
  std::vector<double> f64 = values<double>(get(sd, "f64"));
  std::vector<uint16_t> f16 = values<uint16_t>(get(sd, "f16")), bf16 = values<uint16_t>(get(sd, "bf16"));
  std::vector<int64_t> i64 = values<int64_t>(get(sd, "i64"));
  std::vector<int32_t> i32 = values<int32_t>(get(sd, "i32"));
  std::vector<uint8_t> u8 = values<uint8_t>(get(sd, "u8")), bl = values<uint8_t>(get(sd, "bool"));
  for (int64_t n = 0; n < 10; ++n) {
    const float v = static_cast<float>(n) * 0.25f - 1.0f;  // exact in f16 and bf16 as well
    EXPECT_EQ(f64[n], static_cast<double>(n) * 0.25 - 1);
    uint32_t fb;
    std::memcpy(&fb, &v, 4);
    EXPECT_EQ(bf16[n], fb >> 16) << "bf16 #" << n;
    // f16 of v by hand: v = ±m * 2^e with m in [1, 2), 10 mantissa bits (all values here normal).
    uint16_t h = 0;
    if (v != 0) {
      int e = 0;
      const double m = std::frexp(std::fabs(v), &e);  // m in [0.5, 1)
      h = static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) | static_cast<int>((m * 2 - 1) * 1024));
    }
    EXPECT_EQ(f16[n], h) << "f16 #" << n;
    EXPECT_EQ(i64[n], n * 1'000'000'007 - 3);
    EXPECT_EQ(i32[n], n * 7 - 20);
    EXPECT_EQ(u8[n], n * 25);
    EXPECT_EQ(bl[n], n % 3 == 0 ? 1 : 0);
  }
}

TEST(PthFixture, Torch113LayoutStridesOffsetsSharedStoragesEveryDType) { expect_layout(load_pth(fixture("layout.pth"))); }
TEST(PthFixture, Torch2Layout) { expect_layout(load_pth(fixture("layout-torch2.pth"))); }
TEST(PthFixture, DeflatedEntries) { expect_layout(load_pth(fixture("layout-deflated.pth"))); }

TEST(PthFixture, HalfToF32OnRequest) {
  io::NamedTensors sd = load_pth(fixture("layout.pth"), {.half_to_f32 = true});
  for (const char* n : {"f16", "bf16"}) {
    const Tensor& t = get(sd, n);
    ASSERT_EQ(t.dtype(), DType::F32) << n;
    std::vector<float> v = t.to_vector<float>();
    for (int64_t k = 0; k < 10; ++k) EXPECT_EQ(v[k], static_cast<float>(k) * 0.25f - 1.0f) << n;
  }
  EXPECT_EQ(get(sd, "f64").dtype(), DType::F64) << "only half types convert";
}

// A torchvision-layout ResNet written by torch.save loads strictly and computes PyTorch's output
// (eval mode) within f32 tolerance |ember - torch| <= 1e-5 + 1e-4 |torch|.
void expect_matches_torch(const std::string& name, models::ResNetOptions o) {
  auto model = std::make_shared<models::ResNet>(o);
  io::NamedTensors sd = load_pth(fixture(name + ".pth"));
  nn::LoadResult r = model->load_state_dict(sd, /*strict=*/true);
  EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty());
  model->eval();
  io::NamedTensors io = load_pth(fixture(name + "-io.pth"));
  Tensor y = (*model)(get(io, "input"));
  EXPECT_TRUE(test::all_close(y, get(io, "output"), {1e-5, 1e-4})) << name;
}

TEST(PthFixture, ResNetBasicBlockLayoutMatchesPyTorch) {
  models::ResNetOptions o;
  o.widths = {4, 8, 8, 16};
  o.num_classes = 5;
  expect_matches_torch("resnet_basic", o);
}

TEST(PthFixture, ResNetBottleneckLayoutMatchesPyTorch) {
  models::ResNetOptions o;
  o.block = models::BlockKind::Bottleneck;
  o.layers = {1, 2, 1, 1};
  o.widths = {2, 4, 4, 8};
  o.num_classes = 3;
  expect_matches_torch("resnet_bottleneck", o);
}

TEST(PthFixture, ResNetGrayscaleInputMatchesPyTorch) {
  models::ResNetOptions o;
  o.layers = {1, 1, 1, 1};
  o.widths = {4, 4, 8, 8};
  o.in_channels = 1;
  o.num_classes = 10;
  expect_matches_torch("resnet_gray", o);
}

TEST(PthFixture, WrongArchitectureListsMissingUnexpectedAndMisShapedKeys) {
  models::ResNetOptions o;
  o.widths = {4, 8, 8, 32};  // layer4 and fc wider than the file's
  o.num_classes = 5;
  o.layers = {2, 2, 2, 1};  // layer4.1 missing from the model
  models::ResNet model(o);
  io::NamedTensors sd = load_pth(fixture("resnet_basic.pth"));
  EXPECT_TRUE(throws_with([&] { model.load_state_dict(sd); },
                          {"unexpected key(s): \"layer4.1.conv1.weight\"", "size mismatch for \"fc.weight\"",
                           "the state dict has shape [5, 16], the module has [5, 32]"}));
  sd.erase(sd.begin());  // conv1.weight
  EXPECT_TRUE(throws_with([&] { model.load_state_dict(sd); }, {"missing key(s): \"conv1.weight\""}));
}

// Full-size torchvision resnet18 (tools/make-fixtures.py --resnet18 PREFIX; not in the repository).
TEST(PthResNet18, TorchvisionStateDictMatchesPyTorch) {
  const char* prefix = std::getenv("EMBER_RESNET18");
  if (!prefix) GTEST_SKIP() << "set EMBER_RESNET18=PREFIX after tools/make-fixtures.py --resnet18 PREFIX";
  auto model = models::resnet18();
  model->load_state_dict(load_pth(std::string(prefix) + ".pth"));
  model->eval();
  io::NamedTensors io = load_pth(std::string(prefix) + "-io.pth");
  Tensor y = (*model)(get(io, "input"));
  std::vector<float> a = y.to_vector<float>(), b = get(io, "output").to_vector<float>();
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::fabs(a[i] - b[i])));
    max_ref = std::max(max_ref, static_cast<double>(std::fabs(b[i])));
  }
  std::printf("resnet18 vs PyTorch: max |diff| %.3g (max |output| %.3g) over %zu outputs\n", max_diff, max_ref, a.size());
  EXPECT_TRUE(test::all_close(y, get(io, "output"), {1e-4, 1e-4}));
}

// ---------------------------------------------------------------- round trips

class PthTemp : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ember-pth-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  if (!a.is_contiguous() || !b.is_contiguous()) return false;
  const size_t n = static_cast<size_t>(a.numel()) * dtype_size(a.dtype());
  return n == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), n) == 0;
}

TEST_F(PthTemp, RoundTripIsBitExactForEveryDTypeAndLayout) {
  // Every tensor of the torch-written fixture (f16/bf16 bit patterns included), plus NaN, -0 and
  // infinities, and a non-contiguous ember view.
  io::NamedTensors sd = load_pth(fixture("layout.pth"));
  sd.emplace_back("special", from_vector<float>({NAN, -0.0f, INFINITY, -INFINITY, 1e-45f}, {5}));
  Tensor m = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  sd.emplace_back("view", m.transpose(0, 1));
  save_pth(path("rt.pth"), sd);
  io::NamedTensors back = load_pth(path("rt.pth"));
  ASSERT_EQ(back.size(), sd.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(back[i].first, sd[i].first);
    EXPECT_TRUE(same_bytes(sd[i].second.contiguous(), back[i].second)) << sd[i].first;
  }
  EXPECT_EQ(get(back, "view").to_vector<double>(), (std::vector<double>{1, 4, 2, 5, 3, 6}));
}

TEST_F(PthTemp, ModelStateDictRoundTripsAndLoads) {
  models::ResNetOptions o;
  o.widths = {4, 8, 8, 16};
  o.num_classes = 5;
  Generator g(3);
  o.generator = &g;
  models::ResNet a(o);
  save_pth(path("m.pth"), a.state_dict());
  models::ResNetOptions o2 = o;
  Generator g2(4);
  o2.generator = &g2;
  models::ResNet b(o2);
  b.load_state_dict(load_pth(path("m.pth")));
  nn::StateDict sa = a.state_dict(), sb = b.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(same_bytes(sa[i].second, sb[i].second)) << sa[i].first;
}

TEST_F(PthTemp, SaveRefusesDuplicateAndEmptyNames) {
  Tensor t = zeros({2});
  EXPECT_TRUE(throws_with([&] { save_pth(path("d.pth"), {{"a", t}, {"a", t}}); }, {"duplicate tensor name 'a'"}));
  EXPECT_TRUE(throws_with([&] { save_pth(path("e.pth"), {{"", t}}); }, {"empty name"}));
  EXPECT_FALSE(fs::exists(path("d.pth")));
}

// torch.load(weights_only=True) reads ember's file: run when a Python with torch is at hand.
TEST_F(PthTemp, TorchLoadsEmberFileWeightsOnly) {
  const char* py = std::getenv("EMBER_TORCH_PYTHON");
  const std::string python = py ? py : "/usr/bin/python3";
  if (std::system((python + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << python << " has no torch (set EMBER_TORCH_PYTHON)";
  io::NamedTensors sd = load_pth(fixture("layout.pth"));
  Tensor m = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  sd.emplace_back("view", m.transpose(0, 1));
  save_pth(path("e.pth"), sd);
  // Python recomputes layout_dict()'s values and compares them bit for bit.
  const std::string script = path("check.py");
  std::ofstream(script) << R"(import sys, importlib.util, torch
spec = importlib.util.spec_from_file_location("mf", sys.argv[2])
mf = importlib.util.module_from_spec(spec); spec.loader.exec_module(mf)
want = mf.layout_dict()
want["view"] = torch.arange(1., 7.).view(2, 3).t()
got = torch.load(sys.argv[1], weights_only=True)
assert list(got) == list(want), (list(got), list(want))
for k in want:
    a, b = got[k], want[k].detach()
    assert a.dtype == b.dtype and a.shape == b.shape, k
    assert torch.equal(a.contiguous().view(-1).view(torch.uint8) if a.numel() else a, b.contiguous().view(-1).view(torch.uint8) if b.numel() else b), k
print("ok")
)";
  const std::string cmd = python + " " + script + " " + path("e.pth") + " " + std::string(EMBER_SOURCE_DIR) +
                          "/tools/make-fixtures.py";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// ---------------------------------------------------------------- hostile archives

uint32_t crc32_of(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
  }
  return ~c;
}
void le(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

struct ZipFile {
  std::string bytes;
  size_t cd_offset = 0;
  std::vector<size_t> local_at, central_at;
};

// A zip of stored entries, built by hand (the test's own writer, independent of ember's).
ZipFile make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  ZipFile z;
  for (const auto& [name, data] : entries) {
    z.local_at.push_back(z.bytes.size());
    std::string& s = z.bytes;
    le(s, 0x04034b50, 4);
    le(s, 20, 2);
    le(s, 0, 2);
    le(s, 0, 2);
    le(s, 0, 4);
    le(s, crc32_of(data), 4);
    le(s, data.size(), 4);
    le(s, data.size(), 4);
    le(s, name.size(), 2);
    le(s, 0, 2);
    s += name;
    s += data;
  }
  z.cd_offset = z.bytes.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& [name, data] = entries[i];
    z.central_at.push_back(z.bytes.size());
    std::string& s = z.bytes;
    le(s, 0x02014b50, 4);
    le(s, 20, 2);
    le(s, 20, 2);
    le(s, 0, 2);
    le(s, 0, 2);
    le(s, 0, 4);
    le(s, crc32_of(data), 4);
    le(s, data.size(), 4);
    le(s, data.size(), 4);
    le(s, name.size(), 2);
    le(s, 0, 2);
    le(s, 0, 2);
    le(s, 0, 2);
    le(s, 0, 2);
    le(s, 0, 4);
    le(s, z.local_at[i], 4);
    s += name;
  }
  const size_t cd_size = z.bytes.size() - z.cd_offset;
  le(z.bytes, 0x06054b50, 4);
  le(z.bytes, 0, 4);
  le(z.bytes, entries.size(), 2);
  le(z.bytes, entries.size(), 2);
  le(z.bytes, cd_size, 4);
  le(z.bytes, z.cd_offset, 4);
  le(z.bytes, 0, 2);
  return z;
}

void put_le(std::string& s, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s[at + i] = static_cast<char>(v >> (8 * i));
}

// Pickle pieces (protocol 2), written as torch.save writes them.
std::string G(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
std::string U(const std::string& s) {
  std::string o = "X";
  le(o, s.size(), 4);
  return o + s;
}
std::string I(int64_t v) {
  std::string o = "\x8a\x08";
  le(o, static_cast<uint64_t>(v), 8);
  return o;
}
std::string ints(const std::vector<int64_t>& v) {
  std::string o = "(";
  for (int64_t x : v) o += I(x);
  return o + "t";
}
const std::string kOD = G("collections", "OrderedDict") + ")R";
std::string tensor(const std::string& key, int64_t numel, const std::vector<int64_t>& size,
                   const std::vector<int64_t>& stride, int64_t offset = 0, const std::string& type = "FloatStorage") {
  return G("torch._utils", "_rebuild_tensor_v2") + "((" + U("storage") + G("torch", type) + U(key) + U("cpu") + I(numel) +
         "tQ" + I(offset) + ints(size) + ints(stride) + "\x89" + kOD + "tR";
}
std::string state_dict(const std::string& items) { return "\x80\x02" + kOD + "(" + items + "u."; }

class PthHostile : public PthTemp {
 protected:
  // The archive of `pickle` and storages "archive/data/<k>" (float bytes 0, 1, 2, ...).
  ZipFile archive(const std::string& pickle, const std::vector<std::pair<std::string, size_t>>& storages = {{"0", 4}}) {
    std::vector<std::pair<std::string, std::string>> e = {{"archive/data.pkl", pickle}};
    for (const auto& [key, n] : storages) {
      std::string data;
      for (size_t k = 0; k < n; ++k) {
        const float v = static_cast<float>(k);
        data.append(reinterpret_cast<const char*>(&v), 4);
      }
      e.emplace_back("archive/data/" + key, data);
    }
    e.emplace_back("archive/version", "3\n");
    return make_zip(e);
  }
  std::string write(const std::string& bytes) {
    const std::string p = path("h" + std::to_string(n_++) + ".pth");
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  // load_pth must throw ember::Error with every needle, in a message of bounded size.
  ::testing::AssertionResult refused(const std::string& bytes, const std::vector<std::string>& needles) {
    const std::string p = write(bytes);
    std::string msg;
    auto r = throws_with([&] {
      try {
        load_pth(p);
      } catch (const Error& e) {
        msg = e.what();
        throw;
      }
    }, needles);
    if (r && msg.size() > 1500) return ::testing::AssertionFailure() << "message of " << msg.size() << " bytes";
    return r;
  }
  int n_ = 0;
};

const std::string kGood = state_dict(U("w") + tensor("0", 4, {2, 2}, {2, 1}));

TEST_F(PthHostile, TheGoodArchiveLoads) {
  io::NamedTensors sd = load_pth(write(archive(kGood).bytes));
  ASSERT_EQ(sd.size(), 1u);
  EXPECT_EQ(sd[0].first, "w");
  EXPECT_EQ(sd[0].second.to_vector<float>(), (std::vector<float>{0, 1, 2, 3}));
}

TEST_F(PthHostile, OsSystemGlobal) {
  const std::string p = "\x80\x02" + G("os", "system") + "(" + U("touch /tmp/ember-pwned") + "tR.";
  EXPECT_TRUE(refused(archive(p).bytes, {"global 'os.system' is not allowed", "data.pkl byte 2"}));
}

TEST_F(PthHostile, BuiltinsEvalGlobal) {
  const std::string p = "\x80\x02" + G("builtins", "eval") + "(" + U("1+1") + "tR.";
  EXPECT_TRUE(refused(archive(p).bytes, {"global 'builtins.eval' is not allowed"}));
}

TEST_F(PthHostile, StackGlobalOfPosixSystem) {
  const std::string p = "\x80\x04" + std::string("\x8c\x05posix\x8c\x06system\x93") + "(" + U("id") + "tR.";
  EXPECT_TRUE(refused(archive(p).bytes, {"global 'posix.system' is not allowed"}));
}

TEST_F(PthHostile, TorchGlobalOutsideTheAllowList) {
  const std::string p = state_dict(U("w") + G("torch", "load") + "(" + U("x") + "tR");
  EXPECT_TRUE(refused(archive(p).bytes, {"global 'torch.load' is not allowed"}));
}

TEST_F(PthHostile, ReduceOnAStorageType) {
  const std::string p = state_dict(U("w") + G("torch", "FloatStorage") + ")R");
  EXPECT_TRUE(refused(archive(p).bytes, {"torch.FloatStorage called through REDUCE"}));
}

TEST_F(PthHostile, ReduceOnANonCallable) {
  const std::string p = state_dict(U("w") + U("not a function") + ")R");
  EXPECT_TRUE(refused(archive(p).bytes, {"REDUCE on a str"}));
}

TEST_F(PthHostile, InstNewobjAndExtOpcodes) {
  EXPECT_TRUE(refused(archive("\x80\x02(ios\nsystem\n.").bytes, {"opcode 0x69 (INST) is not allowed"}));
  EXPECT_TRUE(refused(archive("\x80\x02" + kOD + ")\x81.").bytes, {"(NEWOBJ) is not allowed"}));
  EXPECT_TRUE(refused(archive("\x80\x02\x82\x01.").bytes, {"(EXT1) is not allowed"}));
  EXPECT_TRUE(refused(archive("\x80\x02" + std::string("S'x'\n.")).bytes, {"(STRING) is not allowed"}));
}

TEST_F(PthHostile, TruncatedPickle) {
  EXPECT_TRUE(refused(archive(kGood.substr(0, kGood.size() / 2)).bytes, {"truncated"}));
}

TEST_F(PthHostile, TruncatedZip) {
  const std::string b = archive(kGood).bytes;
  EXPECT_TRUE(refused(b.substr(0, b.size() / 2), {"no zip end-of-central-directory record"}));
  EXPECT_TRUE(refused(b.substr(0, 3), {"not a zip archive"}));
}

TEST_F(PthHostile, CentralDirectoryPastTheEnd) {
  ZipFile z = archive(kGood);
  put_le(z.bytes, z.bytes.size() - 22 + 16, 0x7FFFFFF0, 4);
  EXPECT_TRUE(refused(z.bytes, {"central directory", "runs past"}));
}

TEST_F(PthHostile, EntryCountBeyondTheDirectory) {
  ZipFile z = archive(kGood);
  put_le(z.bytes, z.bytes.size() - 22 + 8, 0xFFF0, 2);
  put_le(z.bytes, z.bytes.size() - 22 + 10, 0xFFF0, 2);
  EXPECT_TRUE(refused(z.bytes, {"claims 65520 entries"}));
}

TEST_F(PthHostile, EntrySizePastTheFile) {
  ZipFile z = archive(kGood);
  // Entry #1 (the storage): sizes of 4 GB - 1 in the central directory.
  put_le(z.bytes, z.central_at[1] + 20, 0xFFFFFFFE, 4);
  put_le(z.bytes, z.central_at[1] + 24, 0xFFFFFFFE, 4);
  EXPECT_TRUE(refused(z.bytes, {"entry 'archive/data/0' (4294967294 bytes", "runs past the data area"}));
}

TEST_F(PthHostile, Zip64SizesThatOverflow) {
  // A zip64 extra field claiming 2^64 - 1 bytes: offset + size must not wrap around.
  std::vector<std::pair<std::string, std::string>> e = {{"archive/data.pkl", kGood}, {"archive/data/0", std::string(16, 'a')}};
  ZipFile z = make_zip(e);
  std::string s = z.bytes;
  // Rebuild the second central entry with a zip64 extra field.
  const size_t c = z.central_at[1];
  const size_t end = s.size() - 22;
  std::string entry = s.substr(c, end - c);
  put_le(entry, 20, 0xFFFFFFFF, 4);
  put_le(entry, 24, 0xFFFFFFFF, 4);
  put_le(entry, 30, 20, 2);
  std::string extra;
  le(extra, 1, 2);
  le(extra, 16, 2);
  le(extra, ~uint64_t{0}, 8);
  le(extra, ~uint64_t{0}, 8);
  entry += extra;
  std::string out = s.substr(0, c) + entry + s.substr(end);
  put_le(out, out.size() - 22 + 12, out.size() - 22 - z.cd_offset, 4);
  EXPECT_TRUE(refused(out, {"archive/data/0", "runs past the data area"}));
}

TEST_F(PthHostile, LocalHeaderOffsetOutside) {
  ZipFile z = archive(kGood);
  put_le(z.bytes, z.central_at[0] + 42, 0x7FFFFFFF, 4);
  EXPECT_TRUE(refused(z.bytes, {"local header offset 2147483647 lies outside"}));
}

TEST_F(PthHostile, CrcMismatch) {
  ZipFile z = archive(kGood);
  z.bytes[z.local_at[1] + 30 + std::string("archive/data/0").size()] ^= 0x55;
  EXPECT_TRUE(refused(z.bytes, {"archive/data/0", "CRC-32"}));
}

TEST_F(PthHostile, DeflateRatioBeyondDeflatesLimit) {
  ZipFile z = archive(kGood);
  put_le(z.bytes, z.central_at[1] + 10, 8, 2);  // deflated
  put_le(z.bytes, z.central_at[1] + 24, 1'000'000'000, 4);
  EXPECT_TRUE(refused(z.bytes, {"beyond deflate's maximal ratio"}));
}

TEST_F(PthHostile, UnknownCompressionAndEncryption) {
  ZipFile z = archive(kGood);
  put_le(z.bytes, z.central_at[1] + 10, 12, 2);
  EXPECT_TRUE(refused(z.bytes, {"compression method 12"}));
  ZipFile y = archive(kGood);
  put_le(y.bytes, y.central_at[1] + 8, 1, 2);
  EXPECT_TRUE(refused(y.bytes, {"encrypted"}));
}

TEST_F(PthHostile, DuplicateEntries) {
  ZipFile z = make_zip({{"archive/data.pkl", kGood}, {"archive/data/0", std::string(16, 0)}, {"archive/data/0", "x"}});
  EXPECT_TRUE(refused(z.bytes, {"entry 'archive/data/0' appears twice"}));
}

TEST_F(PthHostile, StorageShorterThanItsTensor) {
  const std::string p = state_dict(U("w") + tensor("0", 4, {3, 2}, {2, 1}));
  EXPECT_TRUE(refused(archive(p).bytes, {"tensor 'w'", "reaches element 5", "which has 4 elements"}));
  const std::string q = state_dict(U("w") + tensor("0", 4, {2}, {1}, 3));
  EXPECT_TRUE(refused(archive(q).bytes, {"the storage is shorter than its tensor"}));
}

TEST_F(PthHostile, StorageEntrySizeDisagrees) {
  const std::string p = state_dict(U("w") + tensor("0", 100, {2}, {1}));
  EXPECT_TRUE(refused(archive(p).bytes, {"storage '0' claims 100 f32 elements but its entry holds 16 bytes"}));
  const std::string q = state_dict(U("w") + tensor("7", 4, {2}, {1}));
  EXPECT_TRUE(refused(archive(q).bytes, {"storage '7' has no entry archive/data/7"}));
}

TEST_F(PthHostile, NegativeStrideSizeAndOffset) {
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", 4, {2}, {-1}))).bytes, {"negative value -1"}));
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", 4, {-2}, {1}))).bytes, {"negative value -2"}));
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", 4, {2}, {1}, -1))).bytes, {"negative storage offset -1"}));
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", -4, {2}, {1}))).bytes, {"negative element count -4"}));
}

TEST_F(PthHostile, GeometryThatOverflows) {
  const int64_t big = int64_t{1} << 62;
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", 4, {big, 8}, {1, 1}))).bytes, {"overflows"}));
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", 4, {3, 3}, {big, big}))).bytes, {"overflows"}));
}

TEST_F(PthHostile, ExpandedViewAndAmplification) {
  EXPECT_TRUE(refused(archive(state_dict(U("w") + tensor("0", 4, {1000000}, {0}))).bytes, {"an expanded view"}));
  // 400 names for one 64 KiB storage: 25 MB of tensors from a 100 KB file.
  std::string items;
  for (int k = 0; k < 400; ++k) items += U("w" + std::to_string(k)) + tensor("0", 16384, {16384}, {1});
  EXPECT_TRUE(refused(archive(state_dict(items), {{"0", 16384}}).bytes, {"more than 4x the file's"}));
}

TEST_F(PthHostile, DeepNesting) {
  EXPECT_TRUE(refused(archive("\x80\x02" + std::string(100, '(') + ".").bytes, {"more than 32 nested MARKs"}));
  std::string p = "\x80\x02N";
  for (int k = 0; k < 100; ++k) p += "\x85";  // TUPLE1 around the last value, 100 deep
  EXPECT_TRUE(refused(archive(p + ".").bytes, {"nested deeper than 32 levels"}));
}

TEST_F(PthHostile, RecursiveContainers) {
  // l = []; l.append(l)
  EXPECT_TRUE(refused(archive("\x80\x02]q\x00h\x00" "a."s).bytes, {"cannot hold itself"}));
  // l = []; t = (l,); l.append(t)
  EXPECT_TRUE(refused(archive("\x80\x02]q\x00h\x00\x85" "a."s).bytes, {"already inside another value"}));
}

TEST_F(PthHostile, MemoAndStackMisuse) {
  EXPECT_TRUE(refused(archive("\x80\x02h\x07.").bytes, {"GET of memo entry 7, which was never PUT"}));
  EXPECT_TRUE(refused(archive("\x80\x02R.").bytes, {"stack underflow"}));
  EXPECT_TRUE(refused(archive("\x80\x02NN.").bytes, {"STOP with 2 values on the stack"}));
}

TEST_F(PthHostile, NotAStateDict) {
  EXPECT_TRUE(refused(archive("\x80\x02].").bytes, {"holds a list, not a state_dict"}));
  EXPECT_TRUE(refused(archive(state_dict(U("epoch") + "K\x03")).bytes, {"entry 'epoch' is a int, not a tensor"}));
  EXPECT_TRUE(refused(archive(state_dict("K\x01" + tensor("0", 4, {2}, {1}))).bytes, {"dict key of type int"}));
}

TEST_F(PthHostile, MalformedTensorArguments) {
  const std::string pid = "((" + U("storage") + G("torch", "FloatStorage") + U("0") + U("cpu") + I(4) + "tQ";
  const std::string rebuild = G("torch._utils", "_rebuild_tensor_v2");
  EXPECT_TRUE(refused(archive(state_dict(U("w") + rebuild + pid + I(0) + "tR")).bytes, {"takes 6 or 7 arguments"}));
  EXPECT_TRUE(refused(archive(state_dict(U("w") + rebuild + "(" + U("x") + I(0) + ints({2}) + ints({1}) + "\x89" + kOD +
                                         "tR"))
                          .bytes,
                      {"argument 0 (storage) must be a storage, not a str"}));
  EXPECT_TRUE(refused(archive(state_dict(U("w") + rebuild + pid + I(0) + ints({2, 2}) + ints({1}) + "\x89" + kOD + "tR"))
                          .bytes,
                      {"size has 2 dimensions but stride has 1"}));
  // Backward hooks that are not empty.
  const std::string hooks = "}" + U("h") + "Ns";
  EXPECT_TRUE(refused(archive(state_dict(U("w") + rebuild + pid + I(0) + ints({2}) + ints({1}) + "\x89" + hooks + "tR"))
                          .bytes,
                      {"backward hooks must be an empty OrderedDict"}));
  // A persistent id that is not a storage tuple.
  EXPECT_TRUE(refused(archive(state_dict(U("w") + U("x") + "Q")).bytes, {"persistent id must be ('storage'"}));
}

TEST_F(PthHostile, LegacyFormatBigEndianAndMissingPickle) {
  EXPECT_TRUE(refused("\x80\x02\x8a\x0a", {"legacy (pre-1.6) pickle format"}));
  std::vector<std::pair<std::string, std::string>> e = {{"archive/data.pkl", kGood}, {"archive/byteorder", "big"}};
  EXPECT_TRUE(refused(make_zip(e).bytes, {"byte order 'big'"}));
  EXPECT_TRUE(refused(make_zip({{"archive/other", "x"}}).bytes, {"no <archive>/data.pkl entry"}));
}

TEST_F(PthHostile, NotARegularFile) {
  EXPECT_TRUE(throws_with([&] { load_pth(dir_.string()); }, {"not a regular file"}));
  EXPECT_TRUE(throws_with([&] { load_pth(path("absent.pth")); }, {"absent.pth"}));
}

}  // namespace
