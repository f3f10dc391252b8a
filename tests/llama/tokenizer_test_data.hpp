// Where the tokenizer tests find their data (llama_test_data.hpp: MEMATTN_DATA_DIR and
// MEMATTN_MODELS_DIR from the environment, else the CMake defines), and file helpers.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "llama_test_data.hpp"

namespace tokenizer_test_data {

inline std::string data_dir() { return memattn_llama_test::data_dir(); }
inline std::string models_dir() { return memattn_llama_test::models_dir(); }
inline std::string tok512_path() { return data_dir() + "/stories260K/tok512.bin"; }
inline std::string text_path(const char* name) { return data_dir() + "/text/" + name; }
inline std::string gguf_path() { return models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }

inline bool file_exists(const std::string& p) { return memattn_llama_test::exists(p); }
inline std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace tokenizer_test_data
