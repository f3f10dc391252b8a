// The main() of the tokenizer tests (Catch itself is in tests/catch_impl.cpp): when a selected tag
// needs data that is absent, it says which files and exits 77 (ctest: skipped).
#include "common/catch_run.hpp"

#include <cstdio>
#include <string>
#include <vector>

#include "tokenizer_test_data.hpp"

int main(int argc, char** argv) {
  using namespace tokenizer_test_data;
  std::string spec;
  for (int i = 1; i < argc; ++i) spec += std::string(argv[i]) + " ";
  std::vector<std::string> missing;
  auto need = [&](const char* tag, const std::vector<std::string>& files) {
    if (spec.find(tag) == std::string::npos) return;
    for (const auto& f : files)
      if (!file_exists(f)) missing.push_back(f + " (needed by " + tag + ")");
  };
  need("[tok512]", {tok512_path(), text_path("tinystories-sample.txt"), text_path("tinystories-valid-100k.txt")});
  need("[smollm2]", {gguf_path(), text_path("wikitext-2-raw-test.txt"), text_path("tinystories-valid-100k.txt")});
  if (!missing.empty()) {
    for (const auto& m : missing) std::printf("SKIP: missing %s\n", m.c_str());
    std::printf("SKIP: set MEMATTN_DATA_DIR / MEMATTN_MODELS_DIR (scripts/get-models.sh fetches the GGUF)\n");
    return 77;
  }
  return memattn_test::run_catch(argc, argv);
}
