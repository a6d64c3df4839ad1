/* cases.h — the C benchmark bodies behind the Google Benchmark shim.
 *
 * The shim (shim.cc) only registers and drives; everything measured lives in
 * C (cases.c, sys.c). Timing is manual: each iteration does its untimed
 * preparation (cold: evict the file's pages), then times only the measured
 * part with CLOCK_MONOTONIC and hands the seconds back to the shim, which
 * passes them to State::SetIterationTime. */
#ifndef XB_CASES_H
#define XB_CASES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { XB_UNIT_NS = 0, XB_UNIT_US = 1, XB_UNIT_MS = 2 };

/* Consumes the --xb-* arguments from argv (argc updated). Reads the dataset
 * manifest, discovers the topology, pins this thread, allocates buffers and
 * builds the case list. Returns 0, or -1 with a message in err. */
int xb_init(int *argc, char **argv, char *err, size_t errlen);
void xb_shutdown(void);
/* 1 when --xb-list was given: print the case names and exit. */
int xb_list_only(void);

size_t xb_case_count(void);
const char *xb_case_name(size_t i);
int xb_case_unit(size_t i);
int xb_case_is_cold(size_t i);
unsigned xb_case_threads(size_t i);
/* Bytes processed per iteration (0 = no throughput). */
uint64_t xb_case_bytes(size_t i);
/* Operations per iteration: sections read (loads), lookups (find), context
 * creations (dctx); 0 when not applicable. */
uint32_t xb_case_items(size_t i);
/* Minimum time per repetition for the case (seconds), 0 = the global one. */
double xb_case_min_time(size_t i);
/* Fixed iteration count for the case, 0 = let Google Benchmark choose. */
uint64_t xb_case_fixed_iterations(size_t i);
/* Per-invocation setup/teardown (untimed). */
int xb_case_begin(size_t i, char *err, size_t errlen);
/* One iteration: untimed preparation, then the timed body. */
int xb_case_iter(size_t i, double *seconds, char *err, size_t errlen);
/* Fraction of the file resident right after the last eviction (cold cases;
 * -1 when not measured). */
double xb_case_resident_after_evict(size_t i);
void xb_case_end(size_t i);

/* Context block: flat key/value strings recorded in every result file. */
size_t xb_context_count(void);
const char *xb_context_key(size_t i);
const char *xb_context_value(size_t i);

#ifdef __cplusplus
}
#endif
#endif
