// Strict number and word parsing for the versioned text tables the offline tools write
// (evict/compresskv.hpp, evict/layer_scores.hpp): a whole token must be the number, in range
// and finite, or the table is rejected.
#pragma once

#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {
namespace table_text {

inline bool parse_double(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(*v);
}

inline bool parse_int(const std::string& s, long long lo, long long hi, long long* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtoll(s.c_str(), &end, 10);
  return end == s.c_str() + s.size() && *v >= lo && *v <= hi;
}

inline std::vector<std::string> words(const std::string& line) {
  std::istringstream is(line);
  std::vector<std::string> w;
  for (std::string x; is >> x;) w.push_back(x);
  return w;
}

// The significant lines of `text` (blank lines and '#' comments dropped, CR stripped) with their
// 1-based line numbers, so that messages point at the file's real line.
inline void significant_lines(const std::string& text, std::vector<std::string>* lines, std::vector<int>* line_no) {
  std::istringstream is(text);
  int n = 0;
  for (std::string line; std::getline(is, line);) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::vector<std::string> w = words(line);
    if (w.empty() || w[0][0] == '#') continue;
    lines->push_back(line);
    line_no->push_back(n);
  }
}

// "model_hash <16 lower-case hex digits>" value check.
inline bool is_hash16(const std::string& s) {
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace table_text
}  // namespace evict
MEMATTN_NAMESPACE_END
