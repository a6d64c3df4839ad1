// shim.cc — Google Benchmark driver for the C benchmark bodies (cases.c).
// It only registers the cases, forwards the manually measured iteration
// times, and records the context block; nothing is measured here.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdint>

#include "cases.h"

namespace {

const char *const kColdLabel = "cold (fadvise; host cache may remain)";

void RunCase(benchmark::State &state, size_t i)
{
    char err[1024];
    if (xb_case_begin(i, err, sizeof err) != 0) {
        state.SkipWithError(err);
        xb_case_end(i);
        return;
    }
    for (auto _ : state) {
        double sec = 0;
        if (xb_case_iter(i, &sec, err, sizeof err) != 0) {
            state.SkipWithError(err);
            break;
        }
        state.SetIterationTime(sec);
    }
    uint64_t bytes = xb_case_bytes(i);
    if (bytes != 0 && !state.error_occurred())
        state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
    state.counters["bytes_per_iter"] = static_cast<double>(bytes);
    state.counters["threads_used"] = xb_case_threads(i);
    state.counters["items_per_iter"] = xb_case_items(i);
    state.counters["cold"] = xb_case_is_cold(i);
    if (xb_case_is_cold(i)) {
        state.counters["resident_after_evict"] = xb_case_resident_after_evict(i);
        state.SetLabel(kColdLabel);
    } else {
        state.SetLabel("hot");
    }
    xb_case_end(i);
}

benchmark::TimeUnit Unit(int u)
{
    switch (u) {
    case XB_UNIT_NS: return benchmark::kNanosecond;
    case XB_UNIT_US: return benchmark::kMicrosecond;
    default: return benchmark::kMillisecond;
    }
}

}  // namespace

int main(int argc, char **argv)
{
    char err[1024];
    if (xb_init(&argc, argv, err, sizeof err) != 0) {
        std::fprintf(stderr, "expert-bench: %s\n", err);
        return 2;
    }
    if (xb_list_only()) {
        for (size_t i = 0; i < xb_case_count(); i++)
            std::printf("%s\n", xb_case_name(i));
        xb_shutdown();
        return 0;
    }
    for (size_t i = 0; i < xb_case_count(); i++) {
        auto *b = benchmark::RegisterBenchmark(xb_case_name(i),
                                               [i](benchmark::State &st) { RunCase(st, i); });
        b->UseManualTime()->Unit(Unit(xb_case_unit(i)));
        if (double mt = xb_case_min_time(i); mt > 0)
            b->MinTime(mt);
        if (uint64_t n = xb_case_fixed_iterations(i))
            b->Iterations(static_cast<benchmark::IterationCount>(n));
    }
    for (size_t i = 0; i < xb_context_count(); i++)
        benchmark::AddCustomContext(std::string("expert_") + xb_context_key(i),
                                    xb_context_value(i));
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    xb_shutdown();
    return 0;
}
