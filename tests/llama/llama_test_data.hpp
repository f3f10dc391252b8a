// Where the llama tests find real data: MEMATTN_DATA_DIR (environment, else the CMake define),
// MEMATTN_MODELS_DIR (environment, else ~/.cache/memattn/models). A test whose data is absent
// prints why and exits 77 (registered as SKIP_RETURN_CODE 77).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace memattn_llama_test {

inline std::string data_dir() {
  if (const char* e = std::getenv("MEMATTN_DATA_DIR")) return e;
#ifdef MEMATTN_TEST_DATA_DIR
  return MEMATTN_TEST_DATA_DIR;
#else
  return "../shared/data";
#endif
}

inline std::string models_dir() {
  if (const char* e = std::getenv("MEMATTN_MODELS_DIR")) return e;
#ifdef MEMATTN_MODELS_DIR_DEFAULT
  return MEMATTN_MODELS_DIR_DEFAULT;
#endif
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/memattn/models";
}

inline bool exists(const std::string& path) { return static_cast<bool>(std::ifstream(path)); }

// Exits 77 with a message when `path` is missing.
inline void require_file(const std::string& path, const char* what) {
  if (!exists(path)) {
    std::printf("SKIP: %s not found at %s\n", what, path.c_str());
    std::exit(77);
  }
}

}  // namespace memattn_llama_test
