// The tensor-core Lightning prefill (linear_prefill.cuh) run by the CPU emulator (simt.hpp) on
// every CI run, through the wrapper's own checks, plan, parameters and launch sequence
// (cuda/linear_params.cuh): single pass and sequence-parallel, against the fp64 recurrence with
// the GPU test's thresholds (output rel-RMS 5e-3, state 1e-3), NaN padding, sentinel rows.
#include "emu/simt.hpp"  // first: it defines the CUDA built-ins the kernel headers use

#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "common/linear_problem.hpp"
#include "emu/emu_launch.hpp"
#include "memattn/cuda/linear_params.cuh"

namespace {

using memattn::BFloat16;
using memattn::Half;
using memattn::Status;
using memattn::linear::FeatureMap;
using memattn::linear::Schedule;
using memattn_test::LinearConfig;
using memattn_test::LinearProblem;
namespace ld = memattn::cuda::linear_detail;
namespace mk = memattn::kernels;

constexpr double kOut = 5e-3, kState = 1e-3;
constexpr int kSms = 132;  // the plan's SM count (an H100 / H200)

template <class T>
Status emulated_prefill(const memattn::linear::LinearArgs<T>& a, std::vector<unsigned char>* ws) {
  memattn::linear::LinearDims d;
  MEMATTN_RETURN_IF_ERROR(ld::check_linear(a, false, &d));
  memattn::cuda::LinearPlan pl;
  MEMATTN_RETURN_IF_ERROR(ld::make_plan(a, d, kSms, &pl));
  ws->assign(pl.workspace_bytes + memattn::kWorkspaceAlign, 0);  // carved from an aligned base, as cudaMalloc's
  unsigned char* base = ws->data() + (memattn::kWorkspaceAlign - reinterpret_cast<std::uintptr_t>(ws->data()) % memattn::kWorkspaceAlign) % memattn::kWorkspaceAlign;
  mk::LinearPrefillParams p = ld::prefill_params(a, d);
  memattn::Workspace w(base, pl.workspace_bytes);
  memattn::linear::plan_workspace(w, pl, d, a.normalize, &p.seg_prefix, &p.ws_S, &p.ws_z, &p.z0);
  MEMATTN_RETURN_IF_ERROR(w.status());
  return ld::dispatch_fm(a.feature_map, d.dk, [&](auto tag) {
    return ld::prefill_phases<T, decltype(tag)>(p, pl, memattn_emu_test::emu_launch);
  });
}

template <class T>
void check_prefill(const LinearConfig& c, Schedule s, int seg) {
  LinearProblem<T> p(c);
  const auto ref = p.reference();
  auto a = p.host_args();
  a.host.cu_seqlens = p.cu.empty() ? nullptr : p.cu.data();
  a.host.seq_lens = p.lens.empty() ? nullptr : p.lens.data();
  a.host.slot_in = p.slot_in.data();
  a.host.decay_rate = c.decay.empty() ? nullptr : c.decay.data();
  a.schedule = s;
  a.seg_len = seg;
  std::vector<unsigned char> ws;
  REQUIRE(emulated_prefill(a, &ws) == Status::kSuccess);
  const auto eo = p.compare_output(p.o, ref);
  INFO("schedule " << static_cast<int>(s) << " seg " << seg << " CTAs reversed " << memattn_emu::reverse_ctas() << " output: " << eo.describe());
  CHECK(eo.within(kOut));
  if (c.stateful) {
    const auto es = p.compare_state(p.pool, ref);
    INFO("state: " << es.describe());
    CHECK(es.within(kState));
    if (c.normalize) CHECK(p.compare_z(p.zpool, ref).within(kState));
  }
  const T sentinel = memattn::from_float<T>(c.sentinel);
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < ref.o.size(); ++i)
    if (std::isnan(ref.o[i]) && std::memcmp(&p.o[i], &sentinel, sizeof(T)) != 0) ++bad;
  CHECK(bad == 0);  // padding rows keep the sentinel
}

}  // namespace

TEST_CASE("emulated linear prefill: Taylor (BASED), both schedules, against fp64", "[emu][linear][taylor]") {
  // the GPU test's [taylor] case with shorter sequences (the emulator runs one thread at a time);
  // CTAs in launch order and reversed (in-place state slots: a race shows in one of them)
  for (Schedule s : {Schedule::kSinglePass, Schedule::kSequenceParallel})
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    LinearConfig c;
    c.fm = FeatureMap::kTaylor2;
    c.Dk = 16;
    c.Dv = 64;
    c.Hq = 4;
    c.Hk = 2;
    c.normalize = true;
    c.eps = 1e-12f;
    c.lens = {300, 17, 600};
    c.decay = {0.f, 1e-3f};
    check_prefill<BFloat16>(c, s, 256);
    c.Dv = 112;
    c.gqa = memattn::linear::GqaState::kPerQueryHead;
    c.decay = {0.f, 1e-3f, 0.01f, 0.1f};
    check_prefill<Half>(c, s, 256);
  }
}

TEST_CASE("emulated linear prefill: identity and elu+1 maps, varlen, decay, both schedules", "[emu][linear]") {
  for (Schedule s : {Schedule::kSinglePass, Schedule::kSequenceParallel})
  for (bool reverse : {false, true}) {
    memattn_emu::ReverseCtas order(reverse);
    LinearConfig c;
    c.Hq = 4;
    c.Hk = 2;
    c.varlen = true;
    c.fused = true;
    c.lens = {1, 63, 65, 200, 0, 300};
    c.decay = {0.05f, 1e-3f};
    c.Dk = 64;
    c.Dv = 64;
    check_prefill<BFloat16>(c, s, 128);
    c.fm = FeatureMap::kEluPlusOne;
    c.normalize = true;
    c.Dv = 112;
    check_prefill<Half>(c, s, 64);
  }
}
