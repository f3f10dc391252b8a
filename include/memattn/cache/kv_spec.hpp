// The --kv policy spec language and parameter schemas.
//
//   spec   := policy ('+' policy)*
//   policy := name [':' param (',' param)*]
//   param  := key '=' value
//
// e.g. "full", "kivi:kbits=2,vbits=2,group=32,residual=128", "h2o:budget=512+kivi:kbits=4".
// Names and keys are [a-z0-9_]; values are numbers (integer parameters accept only integers),
// except text parameters (ParamInfo::text, e.g. a table path), which take the raw value: any
// non-empty text without ',' or '+' (the separators), kept verbatim.
// Every policy publishes a PolicyInfo (its parameters, defaults, ranges); resolve() checks a
// parsed policy against it, fills defaults and reports unknown keys or bad values with a message
// that lists what exists. Host-only, allocation is fine here (runs once per cache).
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cache {

struct PolicySpec {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;  // in the order written
};

struct ParamInfo {
  const char* key;
  double default_value;
  double min_value;
  double max_value;
  bool integer;
  const char* help;
  bool text = false;  // value is a string (file path); default empty, range fields unused
  bool quiet = false;  // written back by canonical_spec only when it differs from the default
};

struct PolicyInfo {
  const char* name;
  const char* help;
  std::vector<ParamInfo> params;
};

// Values of every parameter of a policy after defaults were applied.
class ResolvedParams {
 public:
  double get(const std::string& key) const {
    for (const auto& kv : values_)
      if (kv.first == key) return kv.second;
    return NAN;
  }
  int get_int(const std::string& key) const { return static_cast<int>(get(key)); }
  // A switch parameter: present and non-zero (false where the policy has no such parameter).
  bool is_set(const std::string& key) const {
    const double v = get(key);
    return v == v && v != 0;
  }
  void set(const std::string& key, double v) {
    for (auto& kv : values_)
      if (kv.first == key) {
        kv.second = v;
        return;
      }
    values_.emplace_back(key, v);
  }
  const std::vector<std::pair<std::string, double>>& values() const { return values_; }
  // Text parameters ("" when not given).
  std::string get_text(const std::string& key) const {
    for (const auto& kv : texts_)
      if (kv.first == key) return kv.second;
    return std::string();
  }
  void set_text(const std::string& key, const std::string& v) {
    for (auto& kv : texts_)
      if (kv.first == key) {
        kv.second = v;
        return;
      }
    texts_.emplace_back(key, v);
  }

 private:
  std::vector<std::pair<std::string, double>> values_;
  std::vector<std::pair<std::string, std::string>> texts_;
};

namespace detail {
inline bool is_ident_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }
inline bool is_ident(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_ident_char(c)) return false;
  return true;
}
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}
inline std::string format_number(double v) {
  char buf[64];
  if (v == std::floor(v) && std::abs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}
}  // namespace detail

// Parses a spec into its policies (syntax only; names are checked by the registry).
inline Status parse_kv_spec(const std::string& text, std::vector<PolicySpec>* out, std::string* error) {
  out->clear();
  if (text.empty()) {
    *error = "empty --kv spec";
    return Status::kErrorParse;
  }
  for (const std::string& part : detail::split(text, '+')) {
    PolicySpec p;
    const std::size_t colon = part.find(':');
    p.name = part.substr(0, colon);
    if (!detail::is_ident(p.name)) {
      *error = "bad policy name '" + p.name + "' in --kv spec '" + text + "' (expected name[:key=value,...][+...])";
      return Status::kErrorParse;
    }
    if (colon != std::string::npos) {
      const std::string params = part.substr(colon + 1);
      for (const std::string& kv : detail::split(params, ',')) {
        const std::size_t eq = kv.find('=');
        const std::string key = kv.substr(0, eq);
        if (eq == std::string::npos || !detail::is_ident(key) || eq + 1 >= kv.size()) {
          *error = "bad parameter '" + kv + "' of policy '" + p.name + "' (expected key=value)";
          return Status::kErrorParse;
        }
        for (const auto& seen : p.params) {
          if (seen.first == key) {
            *error = "parameter '" + key + "' given twice for policy '" + p.name + "'";
            return Status::kErrorParse;
          }
        }
        p.params.emplace_back(key, kv.substr(eq + 1));
      }
    }
    out->push_back(std::move(p));
  }
  return Status::kSuccess;
}

inline std::string describe_params(const PolicyInfo& info) {
  if (info.params.empty()) return "(no parameters)";
  std::string s;
  for (const ParamInfo& p : info.params) {
    if (!s.empty()) s += ", ";
    s += std::string(p.key) + "=" + (p.text ? std::string("PATH") : detail::format_number(p.default_value));
  }
  return s;
}

// Checks a parsed policy against its schema and fills defaults.
inline Status resolve_params(const PolicySpec& spec, const PolicyInfo& info, ResolvedParams* out, std::string* error) {
  ResolvedParams r;
  for (const ParamInfo& p : info.params)
    if (p.text) {
      r.set_text(p.key, "");
    } else {
      r.set(p.key, p.default_value);
    }
  for (const auto& kv : spec.params) {
    const ParamInfo* found = nullptr;
    for (const ParamInfo& p : info.params)
      if (kv.first == p.key) found = &p;
    if (!found) {
      *error = "policy '" + std::string(info.name) + "' has no parameter '" + kv.first + "'; its parameters: " +
               describe_params(info);
      return Status::kErrorInvalidArgument;
    }
    if (found->text) {
      r.set_text(kv.first, kv.second);  // non-empty and separator-free by construction of the parser
      continue;
    }
    const char* begin = kv.second.c_str();
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(begin, &end);
    const bool numeric = end != begin && *end == '\0' && errno == 0 && std::isfinite(v);
    if (!numeric || (found->integer && v != std::floor(v))) {
      *error = "parameter '" + kv.first + "' of policy '" + info.name + "' must be " +
               (found->integer ? "an integer" : "a number") + ", got '" + kv.second + "'";
      return Status::kErrorInvalidArgument;
    }
    if (v < found->min_value || v > found->max_value) {
      *error = "parameter '" + kv.first + "' of policy '" + info.name + "' must be in [" +
               detail::format_number(found->min_value) + ", " + detail::format_number(found->max_value) + "], got " +
               kv.second;
      return Status::kErrorInvalidArgument;
    }
    r.set(kv.first, v);
  }
  *out = std::move(r);
  return Status::kSuccess;
}

// Canonical text of a resolved policy: name:key=value,... with every parameter, schema order.
inline std::string canonical_spec(const PolicyInfo& info, const ResolvedParams& r) {
  std::string s = info.name;
  char sep = ':';
  for (const ParamInfo& p : info.params) {
    if (p.text && r.get_text(p.key).empty()) continue;  // not given: nothing to write back
    if (p.quiet && !p.text && r.get(p.key) == p.default_value) continue;
    s += sep;
    s += std::string(p.key) + "=" + (p.text ? r.get_text(p.key) : detail::format_number(r.get(p.key)));
    sep = ',';
  }
  return s;
}

}  // namespace cache
MEMATTN_NAMESPACE_END
