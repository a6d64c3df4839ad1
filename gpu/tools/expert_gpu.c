/* expert_gpu.c — expert-gpu: the GPU path from the command line.
 *
 *   expert-gpu vram FILE...    device bytes per expert (predicted from the file;
 *                              measured with cudaMemGetInfo when a GPU is present)
 *   expert-gpu load FILE...    streaming load: time to first layer, total, bandwidth
 *                              against a plain cudaMemcpy of the same bytes
 *   expert-gpu apply           GPU adapter application throughput vs cuBLAS peak
 *   expert-gpu device          the CUDA device, or why there is none
 *
 * `expert-cli gpu-load` and `expert-cli vram` run this program. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expert.h"
#include "expert_gpu.h"
#include "util.h"

#define TARGET_BYTES_PER_EXPERT 50000000.0 /* the proposal's "< 50 MB" VRAM per expert */
#define EXIT_SKIPPED 77                    /* a device command without a device */

static const char *dtype_label(uint32_t d) { return d == 0 ? "as-stored" : expert_dtype_name(d); }

static int parse_dtype(const cli_cmd *cmd, const char *v, uint32_t *out)
{
    if (v == NULL || strcmp(v, "as-stored") == 0) {
        *out = 0;
        return 0;
    }
    static const struct {
        const char *name;
        uint32_t dtype;
    } k[] = {{"f32", EXPERT_DTYPE_F32}, {"bf16", EXPERT_DTYPE_BF16}, {"f16", EXPERT_DTYPE_F16}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(v, k[i].name) == 0) {
            *out = k[i].dtype;
            return 0;
        }
    return cli_usage_error(cmd, "--dtype: as-stored, f32, bf16 or f16 (got '%s')", v);
}

/* "dora:168,lora:0": module count per adapter kind, as a JSON object. */
static void kinds_json(strbuf *sb, const expert_reader *r)
{
    static const char *const kinds[] = {"lora", "dora", "ia3", "osd"};
    unsigned count[4] = {0};
    for (uint32_t m = 0; m < expert_module_count(r); m++) {
        expert_module_info mi;
        if (expert_module(r, m, &mi) != EXPERT_OK)
            continue;
        for (int k = 0; k < 4; k++)
            if (strcmp(mi.type, kinds[k]) == 0)
                count[k]++;
    }
    sb_puts(sb, "{");
    int first = 1;
    for (int k = 0; k < 4; k++) {
        if (count[k] == 0)
            continue;
        sb_printf(sb, "%s\"%s\":%u", first ? "" : ",", kinds[k], count[k]);
        first = 0;
    }
    sb_puts(sb, "}");
}

static void device_json(strbuf *sb, int have, const expert_gpu_device_info *d,
                        const expert_error *why)
{
    if (!have) {
        sb_puts(sb, "\"device\":null,\"device_error\":");
        sb_json_cstr(sb, why->message);
        return;
    }
    sb_puts(sb, "\"device\":{\"name\":");
    sb_json_cstr(sb, d->name);
    sb_printf(sb,
              ",\"compute_capability\":\"%d.%d\",\"runtime_version\":%d,\"driver_version\":%d,"
              "\"total_bytes\":%llu}",
              d->cc_major, d->cc_minor, d->runtime_version, d->driver_version,
              (unsigned long long)d->total_bytes);
}

/* ------------------------------------------------------------ vram */

static const char k_help_vram[] =
    "Usage: expert-gpu vram FILE... [--dtype as-stored|f32|bf16|f16] [--per-tensor]\n"
    "                       [--experts N] [--predict-only] [--json]\n"
    "\n"
    "Device memory per expert, from the loader's own plan (exact device-buffer\n"
    "accounting: every tensor section, aligned to 256 bytes in one arena, or one\n"
    "allocation per tensor with --per-tensor), beside the dense delta-W a merged\n"
    "runtime would hold instead, for 1 and N (default 10) experts resident, and\n"
    "the proposal's target (< 50 MB = 50e6 bytes per expert) as a verdict.\n"
    "With a CUDA device the same loads are made and cudaMemGetInfo deltas are\n"
    "reported beside the prediction; without one every number is labelled\n"
    "'predicted, not measured'.\n"
    "\n"
    "Exit status: 0 done, 64 usage, 77 never (prediction needs no GPU), else the\n"
    "error class of the first file that fails.\n";

typedef struct measured {
    int have;
    uint64_t one, many; /* cudaMemGetInfo drop with 1 and N experts resident */
} measured;

static expert_status measure_file(const char *path, const expert_gpu_options *o, unsigned n,
                                  measured *m, expert_error *err)
{
    expert_gpu_expert **ex = calloc(n, sizeof *ex);
    expert_reader **rd = calloc(n, sizeof *rd);
    expert_gpu_plan **pl = calloc(n, sizeof *pl);
    if (ex == NULL || rd == NULL || pl == NULL) {
        free(ex), free(rd), free(pl);
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    }
    uint64_t before = 0, after = 0;
    expert_status st = expert_gpu_mem_info(&before, NULL, err);
    for (unsigned i = 0; i < n && st == EXPERT_OK; i++) {
        st = expert_open(path, NULL, &rd[i], err);
        if (st == EXPERT_OK)
            st = expert_gpu_plan_build(rd[i], o, &pl[i], err);
        if (st == EXPERT_OK)
            st = expert_gpu_load(rd[i], pl[i], &ex[i], NULL, err);
        if (st == EXPERT_OK)
            st = expert_gpu_mem_info(&after, NULL, err);
        if (st == EXPERT_OK && i == 0)
            m->one = before > after ? before - after : 0;
    }
    if (st == EXPERT_OK) {
        m->many = before > after ? before - after : 0;
        m->have = 1;
    }
    for (unsigned i = 0; i < n; i++) {
        expert_gpu_expert_free(ex[i]);
        expert_gpu_plan_free(pl[i]);
        expert_close(rd[i]);
    }
    free(ex), free(rd), free(pl);
    return st;
}

static int gpu_vram(const cli_cmd *cmd, int argc, char **argv)
{
    enum { O_DTYPE, O_PER_TENSOR, O_EXPERTS, O_PREDICT, O_JSON, O_N };
    static const cli_opt_spec specs[O_N] = {{"dtype", 0, 1}, {"per-tensor", 0, 0},
                                            {"experts", 0, 1}, {"predict-only", 0, 0},
                                            {"json", 0, 0}};
    cli_opt_val v[O_N];
    const char *pos[256];
    size_t npos = 0;
    int rc = cli_parse(cmd, argc, argv, specs, v, O_N, pos, 1, 256, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    expert_gpu_options o = {0};
    if (parse_dtype(cmd, v[O_DTYPE].value, &o.device_dtype) != 0)
        return CLI_EXIT_USAGE;
    o.per_tensor = v[O_PER_TENSOR].seen;
    uint64_t nexp = 10;
    if (v[O_EXPERTS].seen && cli_parse_u64(cmd, "--experts", v[O_EXPERTS].value, 1, 256, 0,
                                           &nexp) != 0)
        return CLI_EXIT_USAGE;
    int json = v[O_JSON].seen;
    expert_gpu_device_info dev;
    expert_error derr;
    err_clear(&derr);
    int have_gpu = !v[O_PREDICT].seen && expert_gpu_device(0, &dev, &derr) == EXPERT_OK;
    if (v[O_PREDICT].seen)
        err_set(&derr, EXPERT_E_NOT_FOUND, "not asked to measure (--predict-only)");
    strbuf sb;
    sb_init(&sb);
    sb_printf(&sb, "{\"ok\":true,\"command\":\"vram\",\"label\":\"%s\",",
              have_gpu ? "measured" : "predicted, not measured");
    device_json(&sb, have_gpu, &dev, &derr);
    sb_printf(&sb, ",\"device_dtype\":\"%s\",\"layout\":\"%s\",\"experts\":%llu,"
                   "\"target_bytes_per_expert\":%.0f,\"page_bytes\":%llu,\"files\":[",
              dtype_label(o.device_dtype), o.per_tensor ? "per-tensor" : "arena",
              (unsigned long long)nexp, TARGET_BYTES_PER_EXPERT,
              (unsigned long long)EXPERT_GPU_PAGE);
    if (!json) {
        printf("device: %s\n", have_gpu ? dev.name : derr.message);
        printf("device dtype %s, %s layout; %s\n", dtype_label(o.device_dtype),
               o.per_tensor ? "per-tensor" : "arena",
               have_gpu ? "measured with cudaMemGetInfo" : "predicted, not measured");
        printf("%-32s %10s %10s %10s %12s %8s %12s %12s %s\n", "file", "payload", "resident",
               "reserved", "dense dW", "vs dense", "1 expert", "N experts", "< 50 MB");
        printf("(1 expert / N experts: %s)\n",
               have_gpu ? "cudaMemGetInfo drop" : "page-rounded reservation, predicted");
    }
    for (size_t f = 0; f < npos; f++) {
        expert_reader *r = NULL;
        expert_gpu_plan *p = NULL;
        expert_error e;
        err_clear(&e);
        expert_status st = expert_open(pos[f], NULL, &r, &e);
        if (st == EXPERT_OK)
            st = expert_gpu_plan_build(r, &o, &p, &e);
        if (st != EXPERT_OK) {
            sb_free(&sb);
            expert_close(r);
            fput_term(stderr, pos[f], strlen(pos[f]));
            fputs(":\n", stderr);
            return cli_report(json, NULL, st, &e);
        }
        expert_gpu_totals t;
        expert_gpu_plan_totals(p, &t);
        measured m = {0};
        if (have_gpu) {
            st = measure_file(pos[f], &o, (unsigned)nexp, &m, &e);
            if (st != EXPERT_OK) {
                sb_free(&sb);
                expert_gpu_plan_free(p);
                expert_close(r);
                return cli_report(json, NULL, st, &e);
            }
        }
        uint64_t pred_many = t.reserved_bytes * nexp;
        /* Agreement: the drop lies between the bytes requested and their
         * page-rounded reservation (plus one page of driver bookkeeping). */
        int agree1 = m.have && m.one + EXPERT_GPU_PAGE >= t.resident_bytes &&
                     m.one <= t.reserved_bytes + EXPERT_GPU_PAGE;
        int agree_n = m.have && m.many + EXPERT_GPU_PAGE >= t.resident_bytes * nexp &&
                      m.many <= pred_many + EXPERT_GPU_PAGE;
        double ratio = t.dense_delta_bytes ? (double)t.resident_bytes / (double)t.dense_delta_bytes
                                           : 0.0;
        int under = (double)(m.have ? m.one : t.resident_bytes) < TARGET_BYTES_PER_EXPERT;
        sb_printf(&sb, "%s{\"path\":", f ? "," : "");
        sb_json_cstr(&sb, pos[f]);
        sb_puts(&sb, ",\"name\":");
        sb_json_cstr(&sb, expert_name(r));
        sb_printf(&sb, ",\"source_format\":%d,\"kinds\":", expert_reader_source_format(r));
        kinds_json(&sb, r);
        sb_printf(&sb,
                  ",\"tensors\":%llu,\"groups\":%llu,\"payload_bytes\":%llu,"
                  "\"resident_bytes\":%llu,\"reserved_bytes\":%llu,\"allocations\":%llu,"
                  "\"staging_bytes\":%llu,\"scratch_bytes\":%llu,\"dense_delta_bytes\":%llu,"
                  "\"adapter_modules\":%llu,\"resident_vs_dense\":",
                  (unsigned long long)t.tensors, (unsigned long long)t.groups,
                  (unsigned long long)t.payload_bytes, (unsigned long long)t.resident_bytes,
                  (unsigned long long)t.reserved_bytes, (unsigned long long)t.allocations,
                  (unsigned long long)t.staging_bytes, (unsigned long long)t.scratch_bytes,
                  (unsigned long long)t.dense_delta_bytes, (unsigned long long)t.adapter_modules);
        sb_json_double(&sb, ratio);
        sb_printf(&sb, ",\"resident\":[{\"experts\":1,\"predicted_bytes\":%llu,"
                       "\"predicted_reserved_bytes\":%llu",
                  (unsigned long long)t.resident_bytes, (unsigned long long)t.reserved_bytes);
        if (m.have)
            sb_printf(&sb, ",\"measured_bytes\":%llu,\"agree\":%s", (unsigned long long)m.one,
                      agree1 ? "true" : "false");
        sb_printf(&sb, "},{\"experts\":%llu,\"predicted_bytes\":%llu,"
                       "\"predicted_reserved_bytes\":%llu",
                  (unsigned long long)nexp, (unsigned long long)(t.resident_bytes * nexp),
                  (unsigned long long)pred_many);
        if (m.have)
            sb_printf(&sb, ",\"measured_bytes\":%llu,\"agree\":%s", (unsigned long long)m.many,
                      agree_n ? "true" : "false");
        sb_printf(&sb, "}],\"under_target\":%s}", under ? "true" : "false");
        if (!json) {
            char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];
            const char *base = strrchr(pos[f], '/');
            char *shown = term_text(base ? base + 1 : pos[f]);
            printf("%-32.32s %10s %10s %10s %12s %7.2f%% %12s %12s %s\n", shown,
                   fmt_size(t.payload_bytes, b1), fmt_size(t.resident_bytes, b2),
                   fmt_size(t.reserved_bytes, b3), fmt_size(t.dense_delta_bytes, b4),
                   100.0 * ratio, fmt_size(m.have ? m.one : t.reserved_bytes, b5),
                   fmt_size(m.have ? m.many : pred_many, b6), under ? "yes" : "NO");
            term_free(shown);
        }
        expert_gpu_plan_free(p);
        expert_close(r);
    }
    sb_puts(&sb, "]}");
    expert_error e;
    expert_status st = EXPERT_OK;
    if (json)
        st = sb_print_line(&sb, &e);
    sb_free(&sb);
    return st == EXPERT_OK ? 0 : cli_report(json, NULL, st, &e);
}

/* ------------------------------------------------------------ load */

static const char k_help_load[] =
    "Usage: expert-gpu load FILE... [--dtype as-stored|f32|bf16|f16] [--per-tensor]\n"
    "                       [--threads N] [--slots N] [--repeat N] [--json]\n"
    "\n"
    "Streams each expert to the GPU layer by layer (decode and verify on N CPU\n"
    "threads into pinned buffers, cudaMemcpyAsync with double buffering,\n"
    "conversion on the GPU) and reports the median over --repeat runs (default 5)\n"
    "of: time to open (for a v1 tar.gz: gunzip + untar + safetensors parse),\n"
    "time to the first layer resident, total time, achieved bandwidth, and the\n"
    "floor: a plain synchronous cudaMemcpy of the same bytes from pinned memory,\n"
    "in the same run. Give the v1 .expert and its v2 conversion to see both paths\n"
    "side by side. Every run opens the file afresh (page cache warm).\n"
    "\n"
    "Exit status: 0 done, 64 usage, 77 no CUDA device, else the error class.\n";

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int gpu_load(const cli_cmd *cmd, int argc, char **argv)
{
    enum { O_DTYPE, O_PER_TENSOR, O_THREADS, O_SLOTS, O_REPEAT, O_JSON, O_N };
    static const cli_opt_spec specs[O_N] = {{"dtype", 0, 1},   {"per-tensor", 0, 0},
                                            {"threads", 0, 1}, {"slots", 0, 1},
                                            {"repeat", 0, 1},  {"json", 0, 0}};
    cli_opt_val v[O_N];
    const char *pos[64];
    size_t npos = 0;
    int rc = cli_parse(cmd, argc, argv, specs, v, O_N, pos, 1, 64, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    expert_gpu_options o = {0};
    uint64_t threads = 1, slots = 0, repeat = 5;
    if (parse_dtype(cmd, v[O_DTYPE].value, &o.device_dtype) != 0 ||
        (v[O_THREADS].seen && cli_parse_u64(cmd, "--threads", v[O_THREADS].value, 1, 15, 0,
                                            &threads) != 0) ||
        (v[O_SLOTS].seen && cli_parse_u64(cmd, "--slots", v[O_SLOTS].value, 2, 16, 0, &slots) != 0) ||
        (v[O_REPEAT].seen && cli_parse_u64(cmd, "--repeat", v[O_REPEAT].value, 1, 100, 0,
                                           &repeat) != 0))
        return CLI_EXIT_USAGE;
    o.per_tensor = v[O_PER_TENSOR].seen;
    o.decode_threads = (unsigned)threads;
    o.slots = (unsigned)slots;
    int json = v[O_JSON].seen;
    expert_gpu_device_info dev;
    expert_error e;
    err_clear(&e);
    if (expert_gpu_device(0, &dev, &e) != EXPERT_OK) {
        if (json)
            printf("{\"ok\":false,\"skipped\":true,\"reason\":\"no CUDA device\",\"detail\":\"%s\"}\n",
                   e.message);
        else
            fprintf(stderr, "expert-gpu load: SKIPPED: no CUDA device (%s)\n", e.message);
        return EXIT_SKIPPED;
    }
    strbuf sb;
    sb_init(&sb);
    sb_puts(&sb, "{\"ok\":true,\"command\":\"load\",");
    device_json(&sb, 1, &dev, &e);
    sb_printf(&sb, ",\"device_dtype\":\"%s\",\"layout\":\"%s\",\"threads\":%u,\"repeat\":%llu,"
                   "\"files\":[",
              dtype_label(o.device_dtype), o.per_tensor ? "per-tensor" : "arena",
              o.decode_threads, (unsigned long long)repeat);
    if (!json)
        printf("%-32s %6s %10s %10s %10s %10s %10s %10s %8s\n", "file", "format", "bytes",
               "open ms", "first ms", "total ms", "GB/s", "floor GB/s", "of floor");
    for (size_t f = 0; f < npos; f++) {
        double t_open[100], t_first[100], t_total[100], t_floor[1];
        uint64_t bytes = 0;
        int format = 0;
        expert_status st = EXPERT_OK;
        for (unsigned i = 0; i < repeat && st == EXPERT_OK; i++) {
            expert_reader *r = NULL;
            expert_gpu_plan *p = NULL;
            expert_gpu_expert *x = NULL;
            expert_gpu_load_stats ls;
            uint64_t t0 = clock_ns();
            st = expert_open(pos[f], NULL, &r, &e);
            t_open[i] = (double)(clock_ns() - t0) * 1e-9;
            if (st == EXPERT_OK)
                st = expert_gpu_plan_build(r, &o, &p, &e);
            if (st == EXPERT_OK)
                st = expert_gpu_load(r, p, &x, &ls, &e);
            if (st == EXPERT_OK) {
                t_first[i] = ls.first_group_s;
                t_total[i] = ls.total_s;
                bytes = ls.host_bytes;
                format = expert_reader_source_format(r);
            }
            expert_gpu_expert_free(x);
            expert_gpu_plan_free(p);
            expert_close(r);
        }
        if (st == EXPERT_OK && bytes > 0)
            st = expert_gpu_copy_floor(bytes, (unsigned)repeat, &t_floor[0], &e);
        if (st != EXPERT_OK) {
            sb_free(&sb);
            fput_term(stderr, pos[f], strlen(pos[f]));
            fputs(":\n", stderr);
            return cli_report(json, NULL, st, &e);
        }
        double open_s = median(t_open, (unsigned)repeat), first_s = median(t_first, (unsigned)repeat),
               total_s = median(t_total, (unsigned)repeat), floor_s = bytes ? t_floor[0] : 0.0;
        double bw = total_s > 0 ? (double)bytes / total_s * 1e-9 : 0.0;
        double floor_bw = floor_s > 0 ? (double)bytes / floor_s * 1e-9 : 0.0;
        sb_printf(&sb, "%s{\"path\":", f ? "," : "");
        sb_json_cstr(&sb, pos[f]);
        sb_printf(&sb, ",\"source_format\":%d,\"host_bytes\":%llu,\"open_s\":", format,
                  (unsigned long long)bytes);
        sb_json_double(&sb, open_s);
        sb_puts(&sb, ",\"first_layer_s\":");
        sb_json_double(&sb, first_s);
        sb_puts(&sb, ",\"total_s\":");
        sb_json_double(&sb, total_s);
        sb_puts(&sb, ",\"open_plus_load_s\":");
        sb_json_double(&sb, open_s + total_s);
        sb_puts(&sb, ",\"bandwidth_gbps\":");
        sb_json_double(&sb, bw);
        sb_puts(&sb, ",\"floor_memcpy_s\":");
        sb_json_double(&sb, floor_s);
        sb_puts(&sb, ",\"floor_gbps\":");
        sb_json_double(&sb, floor_bw);
        sb_puts(&sb, ",\"of_floor\":");
        sb_json_double(&sb, floor_bw > 0 ? bw / floor_bw : 0.0);
        sb_puts(&sb, "}");
        if (!json) {
            char b[32];
            const char *base = strrchr(pos[f], '/');
            printf("%-32.32s %6s %10s %10.2f %10.3f %10.2f %10.2f %10.2f %7.0f%%\n",
                   base ? base + 1 : pos[f], format == 1 ? "v1" : "v2", fmt_size(bytes, b),
                   open_s * 1e3, first_s * 1e3, total_s * 1e3, bw, floor_bw,
                   floor_bw > 0 ? 100.0 * bw / floor_bw : 0.0);
        }
    }
    sb_puts(&sb, "]}");
    expert_status st = json ? sb_print_line(&sb, &e) : EXPERT_OK;
    sb_free(&sb);
    return st == EXPERT_OK ? 0 : cli_report(json, NULL, st, &e);
}

/* ----------------------------------------------------------- apply */

static const char k_help_apply[] =
    "Usage: expert-gpu apply [--tokens N] [--rank R] [--repeat N] [--json]\n"
    "\n"
    "Throughput of the unmerged forward pass on the GPU for one Qwen3-0.6B-sized\n"
    "module (up_proj: 1024 -> 3072) and each adapter kind (LoRA, DoRA, IA3, OSD\n"
    "with a 1%-dense CSR part), N tokens (default 4096), rank R (default 16):\n"
    "best-of-repeat GFLOP/s counted as 2 flops per multiply-add of the dense and\n"
    "low-rank products, beside cuBLAS SGEMM on 8192^2 in the same run (the\n"
    "device's FP32 peak as cuBLAS reaches it). Correctness against the CPU core\n"
    "is the gpu-device test's job, not this command's.\n"
    "\n"
    "Exit status: 0 done, 64 usage, 77 no CUDA device, else the error class.\n";

static float *rand_host(uint64_t n, uint64_t *state)
{
    float *v = malloc((size_t)n * sizeof *v + 1);
    if (v != NULL)
        for (uint64_t i = 0; i < n; i++) {
            *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
            v[i] = (float)((double)(*state >> 11) / 9007199254740992.0 - 0.5) * 0.1f;
        }
    return v;
}

static float *rand_device(uint64_t n, uint64_t *state, expert_error *err)
{
    float *h = rand_host(n, state);
    void *d = NULL;
    if (h == NULL) {
        err_set(err, EXPERT_E_NOMEM, "out of memory");
        return NULL;
    }
    if (expert_gpu_alloc((size_t)n * sizeof(float), &d, err) != EXPERT_OK ||
        expert_gpu_to_device(d, h, (size_t)n * sizeof(float), err) != EXPERT_OK) {
        expert_gpu_free(d);
        d = NULL;
    }
    free(h);
    return d;
}

static int gpu_apply(const cli_cmd *cmd, int argc, char **argv)
{
    enum { O_TOKENS, O_RANK, O_REPEAT, O_JSON, O_N };
    static const cli_opt_spec specs[O_N] = {
        {"tokens", 0, 1}, {"rank", 0, 1}, {"repeat", 0, 1}, {"json", 0, 0}};
    cli_opt_val v[O_N];
    size_t npos = 0;
    int rc = cli_parse(cmd, argc, argv, specs, v, O_N, NULL, 0, 0, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    uint64_t n = 4096, r = 16, repeat = 10;
    if ((v[O_TOKENS].seen && cli_parse_u64(cmd, "--tokens", v[O_TOKENS].value, 1, 65536, 0, &n)) ||
        (v[O_RANK].seen && cli_parse_u64(cmd, "--rank", v[O_RANK].value, 1, 1024, 0, &r)) ||
        (v[O_REPEAT].seen && cli_parse_u64(cmd, "--repeat", v[O_REPEAT].value, 1, 1000, 0, &repeat)))
        return CLI_EXIT_USAGE;
    int json = v[O_JSON].seen;
    expert_gpu_device_info dev;
    expert_error e;
    err_clear(&e);
    if (expert_gpu_device(0, &dev, &e) != EXPERT_OK) {
        fprintf(stderr, "expert-gpu apply: SKIPPED: no CUDA device (%s)\n", e.message);
        return EXIT_SKIPPED;
    }
    const uint64_t out = 3072, in = 1024;
    uint64_t seed = 1;
    double peak = 0.0;
    expert_status st = expert_gpu_sgemm_peak(8192, 5, &peak, &e);
    float *hA = rand_host(r * in, &seed), *hB = rand_host(out * r, &seed),
          *hm = rand_host(out, &seed), *hl = rand_host(out, &seed), *hU = rand_host(out * r, &seed),
          *hS = rand_host(r, &seed), *hV = rand_host(r * in, &seed), *hval = NULL;
    uint64_t nnz = out * in / 100;
    int64_t *indptr = malloc((size_t)(out + 1) * sizeof *indptr),
            *indices = malloc((size_t)nnz * sizeof *indices);
    hval = rand_host(nnz, &seed);
    float *W = st == EXPERT_OK ? rand_device(out * in, &seed, &e) : NULL;
    float *x = W != NULL ? rand_device(n * in, &seed, &e) : NULL;
    void *y = NULL;
    if (x != NULL)
        st = expert_gpu_alloc((size_t)(n * out) * sizeof(float), &y, &e);
    if (hA == NULL || hB == NULL || hm == NULL || hl == NULL || hU == NULL || hS == NULL ||
        hV == NULL || hval == NULL || indptr == NULL || indices == NULL)
        st = err_set(&e, EXPERT_E_NOMEM, "out of memory");
    else if (W == NULL || x == NULL)
        st = e.code != EXPERT_OK ? e.code : EXPERT_E_NOMEM;
    if (st == EXPERT_OK) {
        uint64_t per_row = nnz / out, k = 0;
        for (uint64_t o = 0; o < out; o++) {
            indptr[o] = (int64_t)k;
            for (uint64_t j = 0; j < per_row; j++)
                indices[k++] = (int64_t)(j * (in / per_row) + o % (in / per_row));
        }
        indptr[out] = (int64_t)k;
        nnz = k;
    }
    static const char *const names[] = {"lora", "dora", "ia3", "osd"};
    double gf[4] = {0}, ms_best[4] = {0};
    for (int kind = 0; kind < 4 && st == EXPERT_OK; kind++) {
        expert_adapter a;
        memset(&a, 0, sizeof a);
        a.kind = (expert_adapter_kind)kind;
        a.out = out;
        a.in = in;
        a.scale = 1.0;
        double flops = 2.0 * (double)n * (double)out * (double)in;
        if (kind <= 1) {
            a.r = r, a.A = hA, a.B = hB, a.magnitude = kind == 1 ? hm : NULL;
            flops += 2.0 * (double)n * (double)r * (double)(in + out);
        } else if (kind == 2) {
            a.l = hl;
        } else {
            a.r = r, a.U = hU, a.S = hS, a.Vt = hV;
            a.sparse = (expert_csr){out, in, nnz, indptr, indices, hval};
            flops += 2.0 * (double)n * ((double)r * (double)(in + out) + (double)nnz);
        }
        expert_gpu_adapter *g = NULL;
        st = expert_gpu_adapter_upload(&a, W, &g, &e);
        double best = 1e30;
        for (unsigned i = 0; i <= repeat && st == EXPERT_OK; i++) {
            uint64_t t0 = clock_ns();
            st = expert_gpu_forward(g, W, NULL, n, x, y, &e);
            if (st == EXPERT_OK)
                st = expert_gpu_sync(&e);
            double s = (double)(clock_ns() - t0) * 1e-9;
            if (i > 0 && s < best) /* the first call warms up cuBLAS / cuSPARSE */
                best = s;
        }
        expert_gpu_adapter_free(g);
        ms_best[kind] = best * 1e3;
        gf[kind] = flops / best * 1e-9;
    }
    expert_gpu_free(W);
    expert_gpu_free(x);
    expert_gpu_free(y);
    free(hA), free(hB), free(hm), free(hl), free(hU), free(hS), free(hV), free(hval);
    free(indptr), free(indices);
    if (st != EXPERT_OK)
        return cli_report(json, NULL, st, &e);
    strbuf sb;
    sb_init(&sb);
    sb_puts(&sb, "{\"ok\":true,\"command\":\"apply\",");
    device_json(&sb, 1, &dev, &e);
    sb_printf(&sb, ",\"tokens\":%llu,\"rank\":%llu,\"out\":%llu,\"in\":%llu,\"osd_nnz\":%llu,"
                   "\"sgemm_peak_gflops\":",
              (unsigned long long)n, (unsigned long long)r, (unsigned long long)out,
              (unsigned long long)in, (unsigned long long)nnz);
    sb_json_double(&sb, peak);
    sb_puts(&sb, ",\"kinds\":[");
    if (!json)
        printf("cuBLAS SGEMM peak (8192^2): %.0f GFLOP/s on %s\n", peak, dev.name);
    for (int k = 0; k < 4; k++) {
        sb_printf(&sb, "%s{\"kind\":\"%s\",\"best_ms\":", k ? "," : "", names[k]);
        sb_json_double(&sb, ms_best[k]);
        sb_puts(&sb, ",\"gflops\":");
        sb_json_double(&sb, gf[k]);
        sb_puts(&sb, ",\"of_peak\":");
        sb_json_double(&sb, peak > 0 ? gf[k] / peak : 0.0);
        sb_puts(&sb, "}");
        if (!json)
            printf("  %-5s %8.3f ms %9.0f GFLOP/s  %5.1f%% of peak\n", names[k], ms_best[k], gf[k],
                   peak > 0 ? 100.0 * gf[k] / peak : 0.0);
    }
    sb_puts(&sb, "]}");
    st = json ? sb_print_line(&sb, &e) : EXPERT_OK;
    sb_free(&sb);
    return st == EXPERT_OK ? 0 : cli_report(json, NULL, st, &e);
}

/* ---------------------------------------------------------- device */

static const char k_help_device[] =
    "Usage: expert-gpu device [--json]\n"
    "\n"
    "The CUDA device this build would use, or why there is none.\n"
    "Exit status: 0 a device is present, 77 none (or built without CUDA).\n";

static int gpu_device(const cli_cmd *cmd, int argc, char **argv)
{
    static const cli_opt_spec specs[1] = {{"json", 0, 0}};
    cli_opt_val v[1];
    size_t npos = 0;
    int rc = cli_parse(cmd, argc, argv, specs, v, 1, NULL, 0, 0, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    expert_gpu_device_info dev;
    expert_error e;
    err_clear(&e);
    int have = expert_gpu_device(0, &dev, &e) == EXPERT_OK;
    strbuf sb;
    sb_init(&sb);
    sb_printf(&sb, "{\"ok\":%s,\"built_with_cuda\":%s,", have ? "true" : "false",
              expert_gpu_built_with_cuda() ? "true" : "false");
    device_json(&sb, have, &dev, &e);
    sb_puts(&sb, "}");
    if (v[0].seen)
        sb_print_line(&sb, &e);
    else if (have)
        printf("%s, compute %d.%d, %.1f GiB\n", dev.name, dev.cc_major, dev.cc_minor,
               (double)dev.total_bytes / 1073741824.0);
    else
        printf("no CUDA device: %s\n", e.message);
    sb_free(&sb);
    return have ? 0 : EXIT_SKIPPED;
}

static const cli_cmd k_cmds[] = {
    {"vram", "device bytes per expert: predicted, and measured with a GPU", k_help_vram, gpu_vram},
    {"load", "stream experts to the GPU; time to first layer, bandwidth vs floor", k_help_load,
     gpu_load},
    {"apply", "GPU adapter application throughput vs cuBLAS peak", k_help_apply, gpu_apply},
    {"device", "the CUDA device, or why there is none", k_help_device, gpu_device},
};

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "Usage: expert-gpu <command> [options]   (CUDA %s)\n\nCommands:\n",
                expert_gpu_built_with_cuda() ? "built in" : "not built");
        for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
            fprintf(f, "  %-7s %s\n", k_cmds[i].name, k_cmds[i].summary);
        fprintf(f, "\n`expert-cli vram` and `expert-cli gpu-load` run this program.\n");
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (strcmp(argv[1], k_cmds[i].name) == 0) {
            int rc = k_cmds[i].run(&k_cmds[i], argc - 1, argv + 1);
            if (fflush(stdout) != 0 && rc == 0)
                rc = EXPERT_E_IO;
            return rc;
        }
    fprintf(stderr, "expert-gpu: unknown command '%s'\n", argv[1]);
    return CLI_EXIT_USAGE;
}
