// Writes fuzz/corpus/<target>/ seeds: a valid file of each kind, and structure-aware hostile ones
// (deep nesting, huge shapes and counts, gzip, NUL bytes, duplicate keys, retyped tensors), each a
// few hundred bytes, so libFuzzer starts from the shapes the readers must refuse.
// Usage: fuzz_make_seeds DIR   (writes DIR/idx, DIR/safetensors, DIR/checkpoint)
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "ember/data.h"
#include "ember/io.h"
#include "fuzz_model.h"

namespace fs = std::filesystem;
using namespace ember;

namespace {

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// `bytes` as a gzip file, through zlib (not ember's writer, which only writes valid IDX).
void write_gz(const std::string& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  if (!f || gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) != static_cast<int>(bytes.size()) ||
      gzclose(f) != Z_OK) {
    std::perror(p.c_str());
    std::exit(1);
  }
}

std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

std::string nested(const std::string& open, const std::string& inner, const std::string& close, int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  s += inner;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

void idx_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  const Tensor images = from_vector<uint8_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                              21, 22, 23},
                                             {2, 3, 4});
  data::write_idx((dir / "images").string(), images);
  data::write_idx((dir / "images.gz").string(), images, data::IdxCompression::Gzip);
  data::write_idx((dir / "labels").string(), from_vector<int64_t>({1, 2, 9}, {3}));
  data::write_idx((dir / "labels.gz").string(), from_vector<int64_t>({0, 7}, {2}), data::IdxCompression::Gzip);
  write_all((dir / "dims-overflow").string(), be32(0x803) + be32(0x80000000) + be32(0x80000000) + be32(0x80000000));
  write_all((dir / "labels-claim-2e28").string(), be32(0x801) + be32(1u << 28) + "\x01\x02\x03");
  write_all((dir / "truncated").string(), read_all((dir / "images").string()).substr(0, 20));
  // gzip files whose IDX header claims far more than the stream holds (and past deflate's ratio).
  write_gz((dir / "gz-claims-1e9").string(), be32(0x803) + be32(1000) + be32(1000) + be32(1000) + "x");
  write_gz((dir / "gz-labels-claim-2e28").string(), be32(0x801) + be32(1u << 28) + std::string(64, '\0'));
}

void safetensors_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  io::save_safetensors((dir / "valid").string(),
                       {{"w", from_vector<float>({1, 2, 3, 4}, {2, 2})}, {"b", from_vector<int64_t>({5}, {1})}},
                       {{"format", "pt"}});
  write_all((dir / "deep").string(), st_file(nested("[", "1", "]", 64), ""));
  write_all((dir / "huge-shape").string(),
            st_file(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})", std::string(16, 'x')));
  write_all((dir / "nul").string(), st_file(std::string("{}") + '\0' + "<html>", ""));
  write_all((dir / "duplicate").string(),
            st_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "z"));
  write_all((dir / "metadata").string(), st_file(R"({"__metadata__":{"k":"v","n":"[[[[1]]]]"}})", ""));
}

void checkpoint_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  fuzz::CheckpointObjects o;
  Generator g(3);
  Tensor loss = cross_entropy((*o.model)(randn({4, 3}, DType::F32, &g)), randint(0, 2, {4}, DType::I64, &g));
  loss.backward();
  o.opt->step();
  o.sched->step();
  const std::string valid = (dir / "valid").string();
  save_checkpoint(valid, *o.model, *o.opt, o.sched.get(), {.epoch = 1, .step = 2, .extra = {{"note", "seed"}}});
  auto edited = [&](const std::string& name, const std::string& key, const std::string& value) {
    io::SafetensorsFile f = io::load_safetensors(valid);
    f.metadata[key] = value;
    io::save_safetensors((dir / name).string(), f.tensors, f.metadata);
  };
  edited("deep-options", "optimizer",
         R"({"type":"Adam","param_groups":[{"options":{"lr":)" + nested("[", "1", "]", 40) + R"(},"params":[0,1,2,3]}]})");
  edited("deep-scheduler", "scheduler", nested(R"({"type":"StepLR","children":[)", R"({"type":"StepLR"})", "]}", 20));
  edited("nan-gamma", "scheduler",
         R"({"type":"StepLR","values":{"gamma":"nan","step_size":2,"last_epoch":1,"step_count":2},)"
         R"("lists":{"base_lrs":[0.01],"last_lr":[0.01]},"children":[]})");
  edited("negative-step", "step", "-3");
  edited("bad-generator", "generator", R"({"seed":-1,"offset":0})");
  io::SafetensorsFile f = io::load_safetensors(valid);
  for (auto& [name, t] : f.tensors)
    if (name == "0.weight") t = t.to(DType::I32);
  io::save_safetensors((dir / "retyped").string(), f.tensors, f.metadata);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const fs::path out(argv[1]);
  idx_seeds(out / "idx");
  safetensors_seeds(out / "safetensors");
  checkpoint_seeds(out / "checkpoint");
  return 0;
}
