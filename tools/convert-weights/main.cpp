// convert-weights: PyTorch .pth/.pt state_dicts <-> safetensors, printing each tensor's name,
// shape and dtype. The direction follows the file extensions; one path only lists a file.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "ember/io.h"
#include "ember/pth.h"

namespace {

enum class Format { Pth, Safetensors };

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Format format_of(const std::string& path) {
  if (ends_with(path, ".pth") || ends_with(path, ".pt") || ends_with(path, ".bin")) return Format::Pth;
  if (ends_with(path, ".safetensors")) return Format::Safetensors;
  throw ember::Error("convert-weights: cannot tell the format of '" + path +
                     "' from its extension: use .pth/.pt/.bin (PyTorch torch.save) or .safetensors");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Converts PyTorch state_dict files (.pth/.pt, torch.save's zip format) to safetensors and back; "
               "prints each tensor's name, shape and dtype. With one path, only lists it."};
  std::string in, out;
  bool half_to_f32 = false, quiet = false;
  app.add_option("input", in, "file to read (.pth/.pt/.bin or .safetensors)")->required();
  app.add_option("output", out, "file to write (the other format)");
  app.add_flag("--half-to-f32", half_to_f32, "convert f16/bf16 tensors to f32 (exact)");
  app.add_flag("-q,--quiet", quiet, "do not list the tensors");
  CLI11_PARSE(app, argc, argv);
  try {
    const Format from = format_of(in);
    if (!out.empty() && format_of(out) == from)
      throw ember::Error("convert-weights: '" + in + "' and '" + out + "' have the same format; nothing to convert");
    ember::io::NamedTensors tensors;
    if (from == Format::Pth) {
      tensors = ember::load_pth(in, {.half_to_f32 = half_to_f32});
    } else {
      for (auto& [name, t] : ember::io::load_safetensors(in).tensors) tensors.emplace_back(name, std::move(t));
      if (half_to_f32) throw ember::Error("convert-weights: --half-to-f32 applies to .pth input only");
    }
    int64_t values = 0;
    for (const auto& [name, t] : tensors) {
      values += t.numel();
      if (!quiet) std::printf("%-60s %-20s %s\n", name.c_str(), ember::shape_str(t.shape()).c_str(), ember::dtype_name(t.dtype()));
    }
    std::printf("%zu tensors, %lld values\n", tensors.size(), static_cast<long long>(values));
    if (out.empty()) return 0;
    if (from == Format::Pth) ember::io::save_safetensors(out, tensors);  // safetensors sorts by name
    else ember::save_pth(out, tensors);
    std::printf("wrote %s\n", out.c_str());
  } catch (const ember::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
