// memattn-llama: a small Llama engine embedding memattn's KV-cache interface.
//
//   memattn-llama generate --model PATH [--tokenizer PATH] --prompt TEXT [--chat] --max-tokens N [--kv SPEC]
//   memattn-llama ppl --model PATH [--tokenizer PATH] --text PATH --ctx N [--chunk C] [--max-tokens N] [--score-from N]
//                     [--prefix P] [--stride S] [--windows W]
//                     [--kv SPEC] [--json] [--raw-text]
//   memattn-llama dump-kv --model PATH [--tokenizer PATH] --text PATH --out FILE [--max-tokens N]
//   memattn-llama policies
//   memattn-llama retrieval-heads --model PATH [--tokenizer PATH] --text PATH --out FILE [--ctx N] [--probes N]
//                        [--needle N] [--budget C] [--window W] [--kernel K] [--heads K] [--windows N]
//                        [--future M] [--raw-text]   (CompressKV's offline head/error table)
//   memattn-llama layer-sensitivity --model PATH [--tokenizer PATH] --text PATH --out FILE [--ctx N] [--samples N]
//                        [--block B] [--sink S] [--overlap PCT] [--simwin N] [--raw-text]  (EpiCache's layer scores)
//   memattn-llama logits --model PATH [--tokenizer PATH] --text PATH --out FILE [--max-tokens N] [--raw-text]
//                        (every position's logits, for comparisons with reference implementations)
// Common: --threads N (default: all cores). Bad input of any kind: a message and exit code 2.
#include <Eigen/Core>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "engine.hpp"
#include "kv_factory.hpp"
#include "model.hpp"
#include "needle.hpp"
#include "thread_pool.hpp"
#include "recording_cache.hpp"
#include "layer_sensitivity.hpp"
#include "retrieval_heads.hpp"
#include "sentence_ends.hpp"
#include "session.hpp"
#include "tasks.hpp"


using namespace memattn_llama;

namespace {

ThreadPool* g_pool = nullptr;  // the process's threads (--threads), shared by GEMMs and the cache

constexpr int kBadInput = 2;

struct Args {
  std::string command;
  std::map<std::string, std::string> opts;
  std::vector<std::string> flags;
  bool has(const std::string& f) const {
    for (const auto& x : flags)
      if (x == f) return true;
    return false;
  }
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? def : it->second;
  }
};

int usage(const char* msg = nullptr) {
  if (msg) std::fprintf(stderr, "memattn-llama: %s\n\n", msg);
  std::fprintf(stderr,
               "usage:\n"
               "  memattn-llama generate --model PATH [--tokenizer PATH] --prompt TEXT [--chat] --max-tokens N [--kv SPEC]\n"
               "  memattn-llama ppl --model PATH [--tokenizer PATH] --text PATH --ctx N [--chunk C] [--max-tokens N]\n"
               "                    [--score-from N]   (NLL only of window positions >= N: the E2 streaming protocol)\n"
               "                    [--prefix P]       (E1: positions < P are the prompt, closed with prompt_end, where a\n"
               "                                        once=1 eviction spec compresses; NLL only of positions >= P)\n"
               "                    [--stride S] [--windows W]  (window starts S tokens apart; at most W windows)\n"
               "                    [--kv SPEC] [--json] [--raw-text]\n"
               "  memattn-llama dump-kv --model PATH [--tokenizer PATH] --text PATH --out FILE [--max-tokens N]\n"
               "  memattn-llama needle --model PATH [--tokenizer PATH] --text PATH [--haystack N] [--depths D,D,..]\n"
               "                    [--codes K] [--seed S] [--kv SPEC] [--chunk C] [--json] [--raw-text]\n"
               "  memattn-llama policies\n"
               "  memattn-llama retrieval-heads --model PATH [--tokenizer PATH] --text PATH --out FILE [--ctx N] [--probes N]\n"
               "                    [--needle N] [--budget C] [--window W] [--kernel K] [--heads K] [--windows N] [--future M] [--raw-text]\n"
               "  memattn-llama layer-sensitivity --model PATH [--tokenizer PATH] --text PATH --out FILE [--ctx N] [--samples N]\n"
               "                    [--block B] [--sink S] [--overlap PCT] [--simwin N] [--raw-text]\n"
               "  memattn-llama logits --model PATH [--tokenizer PATH] --text PATH --out FILE [--max-tokens N] [--raw-text]\n"
               "common: --threads N, --chunk C (prefill chunk, default 256)\n");
  return kBadInput;
}

bool parse_args(int argc, char** argv, Args* a, std::string* err) {
  if (argc < 2) return fail(err, "missing command");
  a->command = argv[1];
  static const char* kFlags[] = {"--chat", "--json", "--raw-text"};
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    bool is_flag = false;
    for (const char* f : kFlags) is_flag |= s == f;
    if (is_flag) {
      a->flags.push_back(s.substr(2));
    } else if (s.rfind("--", 0) == 0 && i + 1 < argc) {
      a->opts[s.substr(2)] = argv[++i];
    } else {
      return fail(err, "unexpected argument '" + s + "'");
    }
  }
  return true;
}

bool parse_int(const Args& a, const std::string& key, int def, int lo, int hi, int* out, std::string* err) {
  const std::string s = a.get(key);
  if (s.empty()) {
    *out = def;
    return true;
  }
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (end == s.c_str() || *end != '\0' || v < lo || v > hi)
    return fail(err, "--" + key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + s + "'");
  *out = static_cast<int>(v);
  return true;
}

bool read_text_file(const std::string& path, std::string* text, std::string* err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(err, "cannot open text file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  *text = ss.str();
  if (text->empty()) return fail(err, "text file '" + path + "' is empty");
  const auto* p = reinterpret_cast<const unsigned char*>(text->data());
  for (std::size_t i = 0; i < text->size();) {
    std::uint32_t cp = 0;
    const int n = tokenizer_detail::utf8_char(p + i, text->size() - i, &cp);
    if (n == 0) return fail(err, "text file '" + path + "' is not valid UTF-8 (byte offset " + std::to_string(i) + ")");
    i += static_cast<std::size_t>(n);
  }
  return true;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += c;
    }
  }
  return o;
}

bool open_session(const Args& a, Session* s, std::string* err) {
  const std::string model = a.get("model");
  if (model.empty()) return fail(err, "--model is required");
  return load_session(model, a.get("tokenizer"), s, err);
}

// The cache the --kv spec asks for, sized for `max_tokens` tokens of one sequence.
bool make_cache(const Args& a, const Session& s, int max_tokens, std::unique_ptr<memattn::cache::KvCache>* cache,
                std::string* err) {
  memattn::cache::CacheShape shape;
  shape.layers = s.model.cfg.layers;
  shape.q_heads = s.model.cfg.heads;
  shape.kv_heads = s.model.cfg.kv_heads;
  shape.head_dim = s.model.cfg.head_dim;
  shape.max_tokens = max_tokens;
  shape.max_sequences = 1;
  std::string why;
  if (!memattn::ok(make_kv_cache(a.get("kv", "full"), shape, g_pool->executor(), cache, &why)))
    return fail(err, "--kv: " + why);
  return true;
}

int report(const std::string& err, int code = kBadInput) {
  std::fprintf(stderr, "memattn-llama: %s\n", err.c_str());
  return code;
}

int cmd_policies() {
  for (const auto& p : kv_policies()) {
    std::printf("%-10s %s\n", p.name, p.help);
    for (const auto& prm : p.params)
      if (prm.text)
        std::printf("    %-10s text (no default)  %s\n", prm.key, prm.help);
      else
        std::printf("    %-10s default %-8g range [%g, %g]%s  %s\n", prm.key, prm.default_value, prm.min_value, prm.max_value,
                  prm.integer ? " integer" : "", prm.help);
  }
  return 0;
}

int cmd_generate(const Args& a) {
  std::string err;
  int max_new = 0, chunk = 0;
  if (!parse_int(a, "max-tokens", 128, 1, 1 << 20, &max_new, &err) || !parse_int(a, "chunk", 256, 1, 1 << 20, &chunk, &err))
    return usage(err.c_str());
  if (!a.opts.count("prompt")) return usage("--prompt is required");
  Session s;
  if (!open_session(a, &s, &err)) return report(err);
  std::unique_ptr<memattn::cache::KvCache> probe;
  if (!make_cache(a, s, s.model.cfg.context, &probe, &err)) return report(err);  // bad --kv fails before any work
  std::string prompt = a.get("prompt");
  bool special = false;
  if (a.has("chat")) {
    if (!s.chat_template) return report("--chat needs a model with a chat template (GGUF instruct models)");
    prompt = s.chat_template(prompt);
    special = true;
  }
  const std::vector<std::int32_t> ids = s.tokenizer->encode(prompt, s.tokenizer->add_bos_default(), special);
  if (ids.empty()) return report("the prompt encodes to no tokens");
  const int context = s.model.cfg.context;
  if (static_cast<int>(ids.size()) >= context)
    return report("prompt has " + std::to_string(ids.size()) + " tokens, the model's context is " + std::to_string(context));
  const int total = std::min<int>(context, static_cast<int>(ids.size()) + max_new);
  std::unique_ptr<memattn::cache::KvCache> c;
  if (!make_cache(a, s, total, &c, &err)) return report(err);
  Engine eng(s.model, *c, g_pool);
  eng.set_sentence_ends(sentence_end_table(*s.tokenizer));
  StreamDecoder dec(*s.tokenizer);
  dec.reset(ids.back());
  if (!a.has("chat")) std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  std::vector<std::int32_t> out;
  std::int32_t stop = s.tokenizer->eos();
  if (a.has("chat") && s.chat_stop >= 0) stop = s.chat_stop;
  const auto t0 = std::chrono::steady_clock::now();
  const bool ok = greedy_generate(eng, 0, ids, max_new, chunk, stop,
                                  [&](std::int32_t id) {
                                    std::fputs(dec.push(id).c_str(), stdout);
                                    std::fflush(stdout);
                                  },
                                  &out, &err);
  std::fputs(dec.flush().c_str(), stdout);
  std::fputs("\n", stdout);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!ok) {
    std::fprintf(stderr, "memattn-llama: %s\n", err.c_str());
    return 1;
  }
  std::fprintf(stderr, "[%zu prompt + %zu generated tokens, %.1f tok/s, kv %s, kv bytes peak %zu]\n", ids.size(), out.size(),
               (ids.size() + out.size()) / secs, c->spec(), c->peak_bytes());
  return 0;
}

int cmd_ppl(const Args& a) {
  std::string err;
  int max_tokens = 0;
  PerplexityOptions po;
  if (!parse_int(a, "ctx", 0, 2, 1 << 24, &po.ctx, &err) || !parse_int(a, "chunk", 256, 1, 1 << 20, &po.chunk, &err) ||
      !parse_int(a, "max-tokens", 0, 0, 1 << 30, &max_tokens, &err) ||
      !parse_int(a, "score-from", 0, 0, 1 << 24, &po.score_from, &err) ||
      !parse_int(a, "prefix", 0, 0, 1 << 24, &po.prefix, &err) || !parse_int(a, "stride", 0, 0, 1 << 24, &po.stride, &err) ||
      !parse_int(a, "windows", 0, 0, 1 << 24, &po.max_windows, &err))
    return usage(err.c_str());
  const int ctx = po.ctx, chunk = po.chunk, score_from = po.score_from, prefix = po.prefix, stride = po.stride;
  if (!a.opts.count("ctx")) return usage("--ctx is required");
  if (score_from >= ctx) return usage("--score-from must be smaller than --ctx");
  if (prefix >= ctx) return usage("--prefix must be smaller than --ctx");
  if (!a.opts.count("text")) return usage("--text is required");
  std::string text;
  if (!read_text_file(a.get("text"), &text, &err)) return report(err);
  Session s;
  if (!open_session(a, &s, &err)) return report(err);
  if (ctx > s.model.cfg.context)
    return report("--ctx " + std::to_string(ctx) + " is larger than the model's context " + std::to_string(s.model.cfg.context));
  std::unique_ptr<memattn::cache::KvCache> cache;
  if (!make_cache(a, s, ctx, &cache, &err)) return report(err);
  if (!a.has("raw-text")) text = normalize_text(text);
  std::vector<std::int32_t> ids = s.tokenizer->encode(text, false);
  if (max_tokens > 0 && static_cast<int>(ids.size()) > max_tokens) ids.resize(static_cast<std::size_t>(max_tokens));
  if (ids.empty()) {
    std::fprintf(stderr, "memattn-llama: the text encodes to no tokens\n");
    return kBadInput;
  }
  Engine eng(s.model, *cache, g_pool);
  eng.set_sentence_ends(sentence_end_table(*s.tokenizer));
  PerplexityResult r;
  const auto t0 = std::chrono::steady_clock::now();
  double last_print = 0;
  const bool tty = isatty(2);
  auto progress = [&](std::int64_t done, std::int64_t total) {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (el < 2.0 || el - last_print < 0.5) return;
    last_print = el;
    const int width = 30, fill = static_cast<int>(width * done / std::max<std::int64_t>(total, 1));
    std::fprintf(stderr, "%s[%s%s] %lld/%lld tokens, %.0f tok/s%s", tty ? "\r" : "", std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), static_cast<long long>(done), static_cast<long long>(total), done / el,
                 tty ? "" : "\n");
    std::fflush(stderr);
  };
  if (!perplexity(eng, ids, s.model.cfg.bos, po, &r, &err, progress)) {
    std::fprintf(stderr, "\nmemattn-llama: %s\n", err.c_str());
    return 1;
  }
  if (last_print > 0 && tty) std::fprintf(stderr, "\n");
  const double tps = static_cast<double>(r.fed) / r.seconds;
  if (a.has("json")) {
    std::printf("{\"ppl\": %.6f, \"tokens\": %lld, \"kv_bytes_peak\": %zu, \"kv_bytes_end\": %zu, \"kv_host_bytes_peak\": %zu, "
                "\"kv_bytes_full\": %zu, \"tokens_per_s\": %.2f, \"kv\": \"%s\", \"model\": \"%s\", \"ctx\": %d, \"chunk\": %d, "
                "\"score_from\": %d, \"prefix\": %d, \"stride\": %d, \"windows\": %lld}\n",
                r.ppl(), static_cast<long long>(r.predicted), r.kv_bytes_peak, r.kv_bytes_end, r.kv_host_bytes_peak,
                r.kv_bytes_full, tps, json_escape(cache->spec()).c_str(), json_escape(s.model.cfg.name).c_str(), ctx, chunk,
                score_from, prefix, stride, static_cast<long long>(r.windows));
  } else {
    std::printf("ppl %.4f over %lld tokens (ctx %d, chunk %d, kv %s): %.1f tok/s, kv bytes peak %zu (full fp16 %zu)\n", r.ppl(),
                static_cast<long long>(r.predicted), ctx, chunk, cache->spec(), tps, r.kv_bytes_peak, r.kv_bytes_full);
    if (r.kv_host_bytes_peak > 0) std::printf("kv host bytes peak %zu (offloaded)\n", r.kv_host_bytes_peak);
  }
  return 0;
}

// Needle in real text (spec eviction.md §7.5 E5): one line per (depth, code), then a summary.
int cmd_needle(const Args& a) {
  std::string err;
  int haystack_len = 0, codes = 0, chunk = 0, seed = 0;
  if (!parse_int(a, "haystack", 3500, 16, 1 << 20, &haystack_len, &err) || !parse_int(a, "codes", 5, 1, 1000, &codes, &err) ||
      !parse_int(a, "chunk", 16, 1, 1 << 20, &chunk, &err) || !parse_int(a, "seed", 1, 0, 1 << 30, &seed, &err))
    return usage(err.c_str());
  if (!a.opts.count("text")) return usage("--text is required");
  std::vector<double> depths;
  {
    std::stringstream ss(a.get("depths", "0.1,0.3,0.5,0.7,0.9"));
    std::string item;
    while (std::getline(ss, item, ',')) {
      char* end = nullptr;
      const double d = std::strtod(item.c_str(), &end);
      if (item.empty() || *end != '\0' || !(d >= 0 && d <= 1)) return usage(("--depths: '" + item + "' is not in [0, 1]").c_str());
      depths.push_back(d);
    }
    if (depths.empty()) return usage("--depths is empty");
  }
  std::string text;
  if (!read_text_file(a.get("text"), &text, &err)) return report(err);
  Session s;
  if (!open_session(a, &s, &err)) return report(err);
  if (!a.has("raw-text")) text = normalize_text(text);
  std::vector<std::int32_t> hay = s.tokenizer->encode(text, false);
  if (static_cast<int>(hay.size()) < haystack_len)
    return report("the text has " + std::to_string(hay.size()) + " tokens, fewer than --haystack " + std::to_string(haystack_len));
  hay.resize(static_cast<std::size_t>(haystack_len));
  const std::int32_t bos = s.model.cfg.bos;
  // Codes: 5 decimal digits from a fixed LCG (portable, so every policy sees the same codes).
  std::uint64_t state = 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(seed);
  auto next_code = [&] {
    std::string c;
    for (int i = 0; i < 5; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      c += static_cast<char>('0' + static_cast<int>((state >> 33) % 10));
    }
    return c;
  };
  std::vector<std::vector<std::string>> code_table(depths.size());
  for (auto& row : code_table)
    for (int i = 0; i < codes; ++i) row.push_back(next_code());
  std::size_t max_len = 0;
  for (std::size_t di = 0; di < depths.size(); ++di)
    for (const auto& code : code_table[di]) {
      const NeedleCase c = make_needle_case(*s.tokenizer, bos, hay, depths[di], code);
      max_len = std::max(max_len, c.prompt.size() + c.answer.size());
    }
  if (max_len > static_cast<std::size_t>(s.model.cfg.context))
    return report("a needle case has " + std::to_string(max_len) + " tokens, more than the model's context " +
                  std::to_string(s.model.cfg.context) + " (lower --haystack)");
  std::unique_ptr<memattn::cache::KvCache> cache;
  if (!make_cache(a, s, static_cast<int>(max_len), &cache, &err)) return report(err);
  Engine eng(s.model, *cache, g_pool);
  const auto digits = digit_token_ids(*s.tokenizer);
  int exact = 0, n = 0;
  double lp_sum = 0, margin_sum = 0;
  int margins = 0;
  const bool json = a.has("json");
  for (std::size_t di = 0; di < depths.size(); ++di)
    for (const auto& code : code_table[di]) {
      const NeedleCase c = make_needle_case(*s.tokenizer, bos, hay, depths[di], code);
      NeedleResult r;
      if (!run_needle_case(eng, c, chunk, digits, &r, &err)) return report(err, 1);
      ++n;
      exact += r.exact ? 1 : 0;
      lp_sum += r.logprob;
      if (!std::isnan(r.margin)) {
        margin_sum += r.margin;
        ++margins;
      }
      if (json) {
        std::printf("{\"depth\": %.2f, \"code\": \"%s\", \"logprob\": %.4f, \"margin\": %.4f, \"exact\": %s, \"kv\": \"%s\"}\n",
                    depths[di], code.c_str(), r.logprob, r.margin, r.exact ? "true" : "false", json_escape(cache->spec()).c_str());
      } else {
        std::printf("depth %.2f code %s: logprob %.3f, digit margin %.3f, %s\n", depths[di], code.c_str(), r.logprob, r.margin,
                    r.exact ? "exact" : "missed");
      }
      std::fflush(stdout);
    }
  if (json) {
    std::printf("{\"summary\": true, \"exact\": %d, \"cases\": %d, \"mean_logprob\": %.4f, \"mean_margin\": %.4f, "
                "\"kv_bytes_peak\": %zu, \"kv\": \"%s\", \"haystack\": %d, \"chunk\": %d}\n",
                exact, n, lp_sum / n, margins ? margin_sum / margins : std::nan(""), cache->peak_bytes(),
                json_escape(cache->spec()).c_str(), haystack_len, chunk);
  } else {
    std::printf("needle: %d/%d exact, mean logprob %.3f, mean digit margin %.3f nats (kv %s, peak %zu bytes)\n", exact, n,
                lp_sum / n, margins ? margin_sum / margins : std::nan(""), cache->spec(), cache->peak_bytes());
  }
  return 0;
}

// Binary format of dump-kv (little-endian):
//   char magic[8] = "MAKVDUMP"; uint32 version = 1; uint32 layers, tokens, q_heads, kv_heads, head_dim;
//   int32 token_ids[tokens];
//   per layer: float32 Q[tokens][q_heads][head_dim], K[tokens][kv_heads][head_dim] (after RoPE),
//              V[tokens][kv_heads][head_dim].
int cmd_dump_kv(const Args& a) {
  std::string err;
  int max_tokens = 0;
  if (!parse_int(a, "max-tokens", 256, 1, 1 << 24, &max_tokens, &err)) return usage(err.c_str());
  if (!a.opts.count("text") || !a.opts.count("out")) return usage("--text and --out are required");
  std::string text;
  if (!read_text_file(a.get("text"), &text, &err)) return report(err);
  Session s;
  if (!open_session(a, &s, &err)) return report(err);
  std::vector<std::int32_t> ids = s.tokenizer->encode(normalize_text(text), true);
  const int n = std::min({static_cast<int>(ids.size()), max_tokens, s.model.cfg.context});
  ids.resize(static_cast<std::size_t>(n));
  std::unique_ptr<memattn::cache::KvCache> cache;
  if (!make_cache(a, s, n, &cache, &err)) return report(err);
  RecordingCache rec(*cache);
  Engine eng(s.model, rec, g_pool);
  if (!eng.forward(0, ids.data(), n, nullptr, true, &err)) {
    std::fprintf(stderr, "memattn-llama: %s\n", err.c_str());
    return 1;
  }
  std::ofstream f(a.get("out"), std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "memattn-llama: cannot write '%s'\n", a.get("out").c_str());
    return kBadInput;
  }
  const auto& c = s.model.cfg;
  const std::uint32_t hdr[6] = {1u, static_cast<std::uint32_t>(c.layers), static_cast<std::uint32_t>(n),
                                static_cast<std::uint32_t>(c.heads), static_cast<std::uint32_t>(c.kv_heads),
                                static_cast<std::uint32_t>(c.head_dim)};
  f.write("MAKVDUMP", 8);
  f.write(reinterpret_cast<const char*>(hdr), sizeof hdr);
  f.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 4));
  for (int l = 0; l < c.layers; ++l)
    for (const auto* v : {&rec.q(l), &rec.k(l), &rec.v(l)})
      f.write(reinterpret_cast<const char*>(v->data()), static_cast<std::streamsize>(v->size() * 4));
  if (!f) {
    std::fprintf(stderr, "memattn-llama: write to '%s' failed\n", a.get("out").c_str());
    return 1;
  }
  std::printf("wrote %s: %d layers x %d tokens (q %d heads, kv %d heads, head_dim %d)\n", a.get("out").c_str(), c.layers, n,
              c.heads, c.kv_heads, c.head_dim);
  return 0;
}

// Binary format of `logits` (little-endian): char magic[8] = "MALOGITS"; uint32 version = 1;
// uint32 tokens, vocab; int32 token_ids[tokens] (BOS first when the tokenizer adds one by default);
// float32 logits[tokens][vocab] (row i predicts token i + 1).
int cmd_logits(const Args& a) {
  std::string err;
  int max_tokens = 0, chunk = 0;
  if (!parse_int(a, "max-tokens", 64, 1, 1 << 24, &max_tokens, &err) || !parse_int(a, "chunk", 256, 1, 1 << 20, &chunk, &err))
    return usage(err.c_str());
  if (!a.opts.count("text") || !a.opts.count("out")) return usage("--text and --out are required");
  std::string text;
  if (!read_text_file(a.get("text"), &text, &err)) return report(err);
  Session s;
  if (!open_session(a, &s, &err)) return report(err);
  if (!a.has("raw-text")) text = normalize_text(text);
  std::vector<std::int32_t> ids = s.tokenizer->encode(text, s.tokenizer->add_bos_default());
  const int n = std::min({static_cast<int>(ids.size()), max_tokens, s.model.cfg.context});
  ids.resize(static_cast<std::size_t>(n));
  std::unique_ptr<memattn::cache::KvCache> cache;
  if (!make_cache(a, s, n, &cache, &err)) return report(err);
  Engine eng(s.model, *cache, g_pool);
  std::ofstream f(a.get("out"), std::ios::binary);
  if (!f) return report("cannot write '" + a.get("out") + "'");
  const std::uint32_t hdr[3] = {1u, static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(s.model.cfg.vocab)};
  f.write("MALOGITS", 8);
  f.write(reinterpret_cast<const char*>(hdr), sizeof hdr);
  f.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * 4));
  Matrix logits;
  for (int i = 0; i < n; i += chunk) {
    const int m = std::min(chunk, n - i);
    if (!eng.forward(0, ids.data() + i, m, &logits, false, &err)) return report(err, 1);
    f.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * 4));
  }
  if (!f) return report("write to '" + a.get("out") + "' failed", 1);
  std::printf("wrote %s: logits of %d tokens x %d vocab\n", a.get("out").c_str(), n, s.model.cfg.vocab);
  return 0;
}

// The session and --text's tokens (no BOS; whitespace-normalised unless --raw-text) of the offline tools.
bool open_with_text(const Args& a, Session* s, std::vector<std::int32_t>* ids, std::string* err) {
  std::string text;
  if (!read_text_file(a.get("text"), &text, err) || !open_session(a, s, err)) return false;
  if (!a.has("raw-text")) text = normalize_text(text);
  *ids = s->tokenizer->encode(text, false);
  return true;
}

// An offline table's model name (the file name, no spaces) and hash (FNV-1a 64 of the file).
bool identify_model(const std::string& path, std::string* name, std::uint64_t* hash, std::string* err) {
  *name = path.substr(path.find_last_of('/') + 1);
  for (char& ch : *name)
    if (ch == ' ' || ch == '\t') ch = '_';
  if (name->empty()) *name = "unknown";
  return file_fnv1a64(path, hash, err);
}

// CompressKV's offline table (retrieval_heads.hpp): head scores from a needle-repeat probe on the
// text, per-layer attention-output errors at --budget; written to --out (evict/compresskv.hpp format).
int cmd_retrieval_heads(const Args& a) {
  std::string err;
  RetrievalHeadsOptions o;
  int budget = 0;
  if (!parse_int(a, "ctx", 512, 16, 1 << 20, &o.ctx, &err) || !parse_int(a, "probes", 8, 1, 1000, &o.probes, &err) ||
      !parse_int(a, "needle", 32, 2, 1 << 20, &o.needle, &err) || !parse_int(a, "budget", 64, 1, 1 << 20, &budget, &err) ||
      !parse_int(a, "window", 8, 1, 4096, &o.window, &err) || !parse_int(a, "kernel", 5, 1, 63, &o.kernel, &err) ||
      !parse_int(a, "heads", 4, 1, 4096, &o.first_k, &err) || !parse_int(a, "windows", 4, 1, 1000, &o.windows, &err) ||
      !parse_int(a, "future", 64, 1, 1 << 20, &o.future, &err) || !parse_int(a, "chunk", 256, 1, 1 << 20, &o.chunk, &err))
    return usage(err.c_str());
  o.budget = budget;
  if (!a.opts.count("text") || !a.opts.count("out")) return usage("--text and --out are required");
  Session s;
  std::vector<std::int32_t> ids;
  if (!open_with_text(a, &s, &ids, &err)) return report(err);
  if (!check_retrieval_options(o, s.model.cfg.context, ids.size(), &err)) return report(err);
  memattn::evict::CompressKvTable table;
  RetrievalHeadsReport rep;
  if (!measure_retrieval_heads(s.model, g_pool, ids, o, &table, &rep, &err)) return report(err, 1);
  if (!identify_model(a.get("model"), &table.model, &table.model_hash, &err)) return report(err);
  std::ofstream f(a.get("out"), std::ios::binary);
  f << memattn::evict::format_compresskv_table(table);
  if (!f) return report("write to '" + a.get("out") + "' failed", 1);
  std::printf("wrote %s: %d layers x %d heads; %lld/%lld successful needle steps\n", a.get("out").c_str(), table.layers,
              table.q_heads, static_cast<long long>(rep.successes), static_cast<long long>(rep.steps));
  for (int l = 0; l < table.layers; ++l) {
    std::printf("  layer %2d  error %.4f  heads", l, table.layer_errors[static_cast<std::size_t>(l)]);
    for (std::int32_t h : memattn::evict::retrieval_heads(table, l, o.first_k))
      std::printf(" %d(%.3f)", h, table.head_scores[static_cast<std::size_t>(l) * table.q_heads + h]);
    std::printf("\n");
  }
  return 0;
}


// EpiCache's offline layer-sensitivity table (layer_sensitivity.hpp): windowed key cosine under
// full causal vs block-masked attention per layer; written to --out (evict/layer_scores.hpp format).
int cmd_layer_sensitivity(const Args& a) {
  std::string err;
  SensitivityOptions o;
  int overlap_pct = 50;
  if (!parse_int(a, "ctx", 1024, 2, 1 << 20, &o.ctx, &err) || !parse_int(a, "samples", 4, 1, 1000, &o.samples, &err) ||
      !parse_int(a, "block", 256, 1, 1 << 20, &o.block, &err) || !parse_int(a, "sink", 32, 0, 1 << 20, &o.sink, &err) ||
      !parse_int(a, "overlap", 50, 0, 100, &overlap_pct, &err) || !parse_int(a, "simwin", 100, 1, 1 << 20, &o.simwin, &err) ||
      !parse_int(a, "chunk", 256, 1, 1 << 20, &o.chunk, &err))
    return usage(err.c_str());
  o.overlap = overlap_pct / 100.0;
  if (!a.opts.count("text") || !a.opts.count("out")) return usage("--text and --out are required");
  Session s;
  std::vector<std::int32_t> ids;
  if (!open_with_text(a, &s, &ids, &err)) return report(err);
  if (!check_sensitivity_options(o, s.model.cfg.context, ids.size(), &err)) return report(err);
  memattn::evict::LayerScoreTable table;
  if (!measure_layer_sensitivity(s.model, g_pool, ids, o, &table, &err)) return report(err, 1);
  if (!identify_model(a.get("model"), &table.model, &table.model_hash, &err)) return report(err);
  std::ofstream f(a.get("out"), std::ios::binary);
  f << memattn::evict::format_layer_score_table(table);
  if (!f) return report("write to '" + a.get("out") + "' failed", 1);
  std::printf("wrote %s: %s\n", a.get("out").c_str(), table.profile.c_str());
  for (std::size_t l = 0; l < table.scores.size(); ++l) std::printf("  layer %2zu  key cosine %.6f\n", l, table.scores[l]);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::string err;
  if (!parse_args(argc, argv, &a, &err)) return usage(err.c_str());
  int threads = 0;
  if (!parse_int(a, "threads", 0, 0, 1024, &threads, &err)) return usage(err.c_str());
  Eigen::setNbThreads(1);  // the engine splits GEMMs across its own threads (engine.hpp matmul)
  ThreadPool pool(threads);
  g_pool = &pool;
  if (a.command == "generate") return cmd_generate(a);
  if (a.command == "ppl") return cmd_ppl(a);
  if (a.command == "needle") return cmd_needle(a);
  if (a.command == "dump-kv") return cmd_dump_kv(a);
  if (a.command == "policies") return cmd_policies();
  if (a.command == "logits") return cmd_logits(a);
  if (a.command == "retrieval-heads") return cmd_retrieval_heads(a);
  if (a.command == "layer-sensitivity") return cmd_layer_sensitivity(a);
  return usage(("unknown command '" + a.command + "'").c_str());
}
