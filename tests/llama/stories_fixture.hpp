// stories260K (../shared/data) for the llama tests: paths, one loaded session per test binary,
// the TinyStories sample's tokens, and the 77-exit when the data is absent. Needs Catch2 and the
// engine's session.hpp / tasks.hpp (examples/llama) on the include path.
#pragma once

#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "llama_test_data.hpp"
#include "session.hpp"
#include "tasks.hpp"

namespace memattn_llama_test {

inline std::string stories_model_path() { return data_dir() + "/stories260K/stories260K.bin"; }
inline std::string stories_tok_path() { return data_dir() + "/stories260K/tok512.bin"; }
inline std::string stories_text_path() { return data_dir() + "/text/tinystories-sample.txt"; }

inline const memattn_llama::Session& stories_session() {
  static memattn_llama::Session s;
  static bool loaded = false;
  if (!loaded) {
    std::string err;
    REQUIRE(memattn_llama::load_session(stories_model_path(), stories_tok_path(), &s, &err));
    loaded = true;
  }
  return s;
}

// The sample text, whitespace-normalised, as token ids (no BOS).
inline std::vector<std::int32_t> stories_text_tokens() {
  std::ifstream f(stories_text_path(), std::ios::binary);
  const std::string t(std::istreambuf_iterator<char>(f), {});
  return stories_session().tokenizer->encode(memattn_llama::normalize_text(t), false);
}

// Exits 77 unless the model, tokenizer (and, with `text`, the sample text) are present.
inline void require_stories(bool text) {
  require_file(stories_model_path(), "stories260K checkpoint (../shared/data)");
  require_file(stories_tok_path(), "tok512.bin (../shared/data)");
  if (text) require_file(stories_text_path(), "tinystories-sample.txt (../shared/data)");
}

}  // namespace memattn_llama_test
