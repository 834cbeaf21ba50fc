// The layering rule of ARCHITECTURE.md, checked on the sources: nothing in cpp/ includes a CUDA
// header (the runtime, cuBLAS, cuDNN, NVTX, CUB/Thrust, or ember's own cuda/) or branches on
// EMBER_WITH_CUDA; device differences live behind backend.h, and cuda/ implements them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace {

// Whether one source line breaks the rule (an #include of a CUDA header, or a preprocessor
// condition on EMBER_WITH_CUDA).
bool breaks_layering(const std::string& line) {
  static const std::regex cuda_include(
      R"re(^\s*#\s*include\s*[<"](cuda[_.]|cuda/|cublas|cudnn|nvtx|nvToolsExt|cub/|thrust/|curand|cufft|nccl))re");
  static const std::regex cuda_branch(R"re(^\s*#\s*(if|ifdef|ifndef|elif)\b.*\bEMBER_WITH_CUDA\b)re");
  return std::regex_search(line, cuda_include) || std::regex_search(line, cuda_branch);
}

TEST(Layering, TheRuleRecognisesWhatItForbids) {
  for (const char* bad :
       {"#include <cuda_runtime_api.h>", "#include <cuda_runtime.h>", "#include <cuda.h>", "#include \"cuda/check.h\"",
        "#include \"cuda/runtime.h\"", "#include <cublasLt.h>", "#include <cublas_v2.h>", "#include <cudnn.h>",
        "#include <nvtx3/nvToolsExt.h>", "  #  include <cub/cub.cuh>", "#if defined(EMBER_WITH_CUDA)",
        "#ifdef EMBER_WITH_CUDA", "#elif EMBER_WITH_CUDA"})
    EXPECT_TRUE(breaks_layering(bad)) << bad;
  for (const char* fine :
       {"#include \"ember/cuda.h\"", "#include \"cpp/backend/backend.h\"", "#include <cstdint>",
        "// a comment naming cuda/runtime.h", "#if defined(__CUDACC__)", "#include \"cpp/backend/cpu/cpu_backend.h\""})
    EXPECT_FALSE(breaks_layering(fine)) << fine;
}

TEST(Layering, NothingInCppIncludesACudaHeaderOrBranchesOnCuda) {
  const std::filesystem::path root = std::filesystem::path(EMBER_SOURCE_DIR) / "cpp";
  ASSERT_TRUE(std::filesystem::is_directory(root)) << root;
  std::vector<std::string> broken;
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    const std::string ext = entry.path().extension().string();
    if (ext != ".cpp" && ext != ".h" && ext != ".def" && ext != ".cuh" && ext != ".cu" && ext != ".inc") continue;
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    for (int n = 1; std::getline(in, line); ++n)
      if (breaks_layering(line))
        broken.push_back(entry.path().lexically_relative(root.parent_path()).string() + ":" + std::to_string(n) + ": " +
                         line);
  }
  EXPECT_GT(files, 50) << "did not find ember's sources under " << root;
  std::string list;
  for (const std::string& b : broken) list += "\n  " + b;
  EXPECT_TRUE(broken.empty()) << "cpp/ must not include CUDA headers or branch on EMBER_WITH_CUDA (put the device "
                                 "side behind backend.h, implemented in cuda/):"
                              << list;
}

}  // namespace
