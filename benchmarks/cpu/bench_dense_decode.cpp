// CPU dense decode attention (memattn::cpu::dense_decode), one query token, GQA Hq=32 / Hkv=8,
// head_dim 128, over a KV cache of L tokens in fp16 or fp32; reports bytes/s of K+V read.
//
// Peer, measured in the same run: an Eigen fp32 GEMV (y = M x, M row-major [n, 128]) that reads
// exactly as many bytes as the attention case reads of K and V. Decode is bound by reading the
// cache, so the ratio attention / GEMV says how close it gets to what plain Eigen streams on this
// machine. The summary printed after the table lists the ratios. Single-threaded, like memattn.
//
//   bench_dense_decode [--benchmark_filter=fp16] [--benchmark_repetitions=3] ...
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <memattn/memattn.hpp>

namespace {

constexpr std::int64_t kHq = 32, kHkv = 8, kD = 128;
const std::int64_t kLengths[] = {1024, 4096, 16384};
bool g_failed = false;  // a case whose Status was not kSuccess: the process exits 1

template <class T>
std::vector<T> random_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<T> out(n);
  for (auto& x : out) x = memattn::from_float<T>(normal(rng));
  return out;
}

template <class T>
std::int64_t kv_bytes(std::int64_t L) {
  return 2 * kHkv * L * kD * static_cast<std::int64_t>(sizeof(T));
}

template <class T>
void bm_dense_decode(benchmark::State& state, std::int64_t L) {
  const auto k = random_values<T>(static_cast<std::size_t>(kHkv * L * kD), 1);
  const auto v = random_values<T>(k.size(), 2);
  const auto q = random_values<T>(static_cast<std::size_t>(kHq * kD), 3);
  std::vector<T> o(q.size());
  std::vector<float> lse(kHq);

  memattn::attention::DecodeArgs<T> args;
  args.q = memattn::make_view<4>(q.data(), {1, 1, kHq, kD});
  args.k_cache = memattn::make_view<4>(k.data(), {1, kHkv, L, kD});
  args.v_cache = memattn::make_view<4>(v.data(), {1, kHkv, L, kD});
  args.o = memattn::make_view<4>(o.data(), {1, 1, kHq, kD});
  args.lse = memattn::make_view<3>(lse.data(), {1, 1, kHq});

  std::size_t ws_bytes = 0;
  memattn::Status st = memattn::cpu::dense_decode_workspace_size(args, &ws_bytes);
  memattn::HostWorkspace ws_storage(ws_bytes);
  void* ws = ws_storage.data();

  for (auto _ : state) {
    if (st == memattn::Status::kSuccess) st = memattn::cpu::dense_decode(args, ws, ws_bytes);
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  if (st != memattn::Status::kSuccess) {
    g_failed = true;
    state.SkipWithError(memattn::status_message(st));
    return;
  }
  state.SetBytesProcessed(state.iterations() * kv_bytes<T>(L));
  state.counters["kv_MiB"] = static_cast<double>(kv_bytes<T>(L)) / (1 << 20);
}

// y = M x over `bytes` of fp32 (M row-major [bytes / (4 * 128), 128]): the bandwidth peer.
void bm_eigen_gemv(benchmark::State& state, std::int64_t bytes) {
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::int64_t rows = bytes / static_cast<std::int64_t>(sizeof(float) * kD);
  RowMatrix m = RowMatrix::Random(rows, kD);
  Eigen::VectorXf x = Eigen::VectorXf::Random(kD);
  Eigen::VectorXf y(rows);
  for (auto _ : state) {
    y.noalias() = m * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["kv_MiB"] = static_cast<double>(bytes) / (1 << 20);
}

// Console table as usual, then one line per attention case: its rate against the GEMV over the
// same bytes (the median over repetitions when --benchmark_repetitions is given, else the mean).
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // A custom display reporter does not get --benchmark_color: colour only on a terminal.
  RatioReporter() : ConsoleReporter(isatty(fileno(stdout)) ? OO_ColorTabular : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      const auto it = r.counters.find("bytes_per_second");
      if (it == r.counters.end()) continue;  // failed cases set no rate
      const std::string name = r.run_name.str();
      if (rates_.find(name) == rates_.end()) order_.push_back(name);
      Rate& rate = rates_[name];
      if (r.run_type == Run::RT_Iteration) {
        rate.sum += it->second.value;
        rate.n += 1;
      } else if (r.aggregate_name == "median") {
        rate.median = it->second.value;
      }
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    const std::string kAttn = "dense_decode/";
    bool header = false;
    for (const std::string& name : order_) {
      if (name.rfind(kAttn, 0) != 0) continue;
      const Rate& rate = rates_[name];
      const auto peer = rates_.find("eigen_gemv_fp32/same_bytes_as_" + name.substr(kAttn.size()));
      if (peer == rates_.end() || rate.value() <= 0 || peer->second.value() <= 0) continue;
      if (!header) {
        std::printf("\nKV read rate (GB/s = 1e9 B/s) vs an Eigen fp32 GEMV over the same bytes, same run:\n");
        header = true;
      }
      const double a = rate.value() / 1e9, g = peer->second.value() / 1e9;
      std::printf("  %-26s %7.2f GB/s   gemv %7.2f GB/s   ratio %.2f\n", name.c_str(), a, g, a / g);
    }
    std::fflush(stdout);
  }

 private:
  struct Rate {
    double sum = 0;
    int n = 0;
    double median = -1;
    double value() const { return median >= 0 ? median : (n ? sum / n : 0); }
  };
  std::map<std::string, Rate> rates_;
  std::vector<std::string> order_;  // first-seen order = registration order
};

template <class T>
void register_dtype(const char* dtype) {
  for (const std::int64_t L : kLengths) {
    const std::string suffix = std::string(dtype) + "/L:" + std::to_string(L);
    benchmark::RegisterBenchmark(("dense_decode/" + suffix).c_str(),
                                 [L](benchmark::State& s) { bm_dense_decode<T>(s, L); })
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("eigen_gemv_fp32/same_bytes_as_" + suffix).c_str(),
                                 [L](benchmark::State& s) { bm_eigen_gemv(s, kv_bytes<T>(L)); })
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_dtype<memattn::Half>("fp16");
  register_dtype<float>("fp32");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return g_failed ? 1 : 0;
}
