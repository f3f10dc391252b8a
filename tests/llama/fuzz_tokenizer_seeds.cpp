// Writes seed inputs for fuzz_tokenizer.cpp into the folder given as argument (scripts/fuzz.sh
// runs it): mode byte + a llama2.c tokenizer file (synthetic, and the real tok512.bin when
// ../shared/data or $MEMATTN_DATA_DIR has it), texts for both encoders, and a small BPE vocabulary.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "llama/tokenizer_synthetic.hpp"

namespace {
int n_written = 0;
void write(const std::string& dir, const std::string& content) {
  const std::string path = dir + "/seed-" + std::to_string(n_written++);
  std::ofstream f(path, std::ios::binary);
  f << content;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  write(dir, std::string(1, '\0') + tokenizer_synthetic::llama2c_file());
  const char* env = std::getenv("MEMATTN_DATA_DIR");
  const std::string data = env && *env ? env : "../shared/data";
  std::ifstream tok(data + "/stories260K/tok512.bin", std::ios::binary);
  if (tok) {
    std::stringstream ss;
    ss << tok.rdbuf();
    write(dir, std::string(1, '\0') + ss.str());
  }
  const char* texts[] = {
      "Once upon a time, there was a little girl named Lily.",
      "I'm sure they'll say it's 12345 fine!!  \n\n\ttab",
      "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xff\xfe \xc3",
      "<|im_start|>user\nhi<|im_end|>\n<user> aaaa abc hello",
      "  a\xc2\xa0" "b\xe3\x80\x80" "c\xe2\x80\xa8 x\xc2\xb2 \xd9\xa3",
  };
  for (const char* t : texts) {
    write(dir, std::string("\x01") + t);
    write(dir, std::string("\x02") + t);
  }
  write(dir, std::string("\x03\x01") + "h\ne\nl\no\nhe\nhel\nhell\nhello\n<|x|>\n\nh e\nhe l\nhel l\nhell o\n");
  write(dir, std::string("\x03\x02") + "a\nb\nab\n<s>\n\na b\n");
  std::printf("%d seeds\n", n_written);
  return 0;
}
