/* expert_quality.c — expert-quality: the LAPACK-backed commands of the
 * reference tools. `expert-cli compress` and `expert-cli diff` exec this
 * program with the same arguments (ref/cli/compress.c), so messages use the
 * expert-cli conventions (util.c): exit 0, 64 for usage errors, else the
 * numeric error class; --json gives one object on stdout.
 *
 *   expert-quality compress IN -o OUT --method svd|osd --budget B [...]
 *   expert-quality diff A B [--base BASE] [--json]
 *   expert-quality rsvd-check IN [--base BASE] [--k K] [...]   randomized vs exact SVD
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cblas.h>

#include "expert_quality.h"
#include "util.h"

static const char k_help_compress[] =
    "Usage: expert-quality compress IN.expert -o OUT.expert --method svd|osd --budget BYTES|RATIO\n"
    "         [--score magnitude|gradient --grads FILE] [--base FILE] [--svd auto|exact|randomized]\n"
    "         [--oversample P] [--power-iters Q] [--seed S] [--codec C] [--level N]\n"
    "         [--candidates N] [--threads N] [--force] [--modules] [--json] [-q]\n"
    "Full description: expert-cli help compress\n";
static const char k_help_diff[] =
    "Usage: expert-quality diff A.expert B.expert [--base BASE.safetensors] [--json]\n"
    "Full description: expert-cli help diff\n";
static const char k_help_rsvd[] =
    "Usage: expert-quality rsvd-check IN.expert [--base BASE.safetensors] [--k K]\n"
    "         [--oversample P] [--power-iters Q] [--seed S] [--max-modules N] [--json]\n"
    "\n"
    "For each module's dense change ΔW (LoRA s·B·A formed densely; DoRA with --base its\n"
    "W' − W), the top-k SVD by LAPACK sgesdd and by the randomized method (Halko et al.),\n"
    "with times and errors: max relative error of the k singular values and the\n"
    "relative Frobenius error ‖ΔW − U_k S_k V_kᵀ‖/‖ΔW‖ of both rank-k reconstructions.\n"
    "k defaults to 16.\n";

/* ---------------------------------------------------------------- compress */

enum {
    C_OUT, C_METHOD, C_BUDGET, C_SCORE, C_GRADS, C_BASE, C_SVD, C_OVER, C_POWER, C_SEED,
    C_CODEC, C_LEVEL, C_CANDS, C_THREADS, C_FORCE, C_MODULES, C_JSON, C_QUIET, C_COUNT
};
static const cli_opt_spec k_copts[C_COUNT] = {
    [C_OUT] = {"output", 'o', 1},     [C_METHOD] = {"method", 0, 1},    [C_BUDGET] = {"budget", 0, 1},
    [C_SCORE] = {"score", 0, 1},      [C_GRADS] = {"grads", 0, 1},      [C_BASE] = {"base", 0, 1},
    [C_SVD] = {"svd", 0, 1},          [C_OVER] = {"oversample", 0, 1},  [C_POWER] = {"power-iters", 0, 1},
    [C_SEED] = {"seed", 0, 1},        [C_CODEC] = {"codec", 0, 1},      [C_LEVEL] = {"level", 0, 1},
    [C_CANDS] = {"candidates", 0, 1}, [C_THREADS] = {"threads", 0, 1},  [C_FORCE] = {"force", 'f', 0},
    [C_MODULES] = {"modules", 0, 0},  [C_JSON] = {"json", 0, 0},        [C_QUIET] = {"quiet", 'q', 0},
};

/* "1/8", "0.125" -> ratio; "123456", "4M" -> bytes. */
static int parse_budget(const cli_cmd *cmd, const char *t, xq_compress_opts *o)
{
    const char *slash = strchr(t, '/');
    if (slash != NULL || strchr(t, '.') != NULL) {
        char *end;
        double num = strtod(t, &end), den = 1.0;
        if (slash != NULL) {
            if (end != slash)
                return cli_usage_error(cmd, "--budget: '%s' is not a ratio like 1/8", t);
            den = strtod(slash + 1, &end);
        }
        if (*end != '\0' || !(num > 0) || !(den > 0) || !isfinite(num / den) || num / den > 16.0)
            return cli_usage_error(cmd, "--budget: '%s' is not a ratio in (0, 16]", t);
        o->budget_ratio = num / den;
        return 0;
    }
    uint64_t n;
    int rc = cli_parse_u64(cmd, "budget", t, 1, UINT64_C(1) << 40, 1, &n);
    if (rc == 0)
        o->budget_bytes = n;
    return rc;
}

static void json_report(const xq_report *r, const char *in, const char *out)
{
    strbuf sb;
    sb_init(&sb);
    sb_puts(&sb, "{\"ok\":true,\"input\":");
    sb_json_cstr(&sb, in);
    sb_puts(&sb, ",\"output\":");
    sb_json_cstr(&sb, out);
    sb_printf(&sb, ",\"method\":\"%s\",\"input_bytes\":%" PRIu64 ",\"reference_bytes\":%" PRIu64
                   ",\"budget_bytes\":%" PRIu64 ",\"file_bytes\":%" PRIu64 ",\"predicted_bytes\":%" PRIu64,
              r->method, r->input_size, r->reference_size, r->budget, r->file_size, r->predicted_size);
    sb_puts(&sb, ",\"budget_use\":");
    sb_json_double(&sb, (double)r->file_size / (double)r->budget);
    sb_puts(&sb, ",\"rel_fro_all\":");
    sb_json_double(&sb, r->rel_fro_all);
    sb_puts(&sb, ",\"seconds\":{\"total\":");
    sb_json_double(&sb, r->seconds);
    sb_puts(&sb, ",\"decompose\":");
    sb_json_double(&sb, r->seconds_decompose);
    sb_puts(&sb, ",\"fit\":");
    sb_json_double(&sb, r->seconds_fit);
    sb_puts(&sb, ",\"write\":");
    sb_json_double(&sb, r->seconds_write);
    sb_printf(&sb, "},\"dropped_sections\":%u,\"modules\":[", r->dropped_sections);
    for (size_t i = 0; i < r->module_count; i++) {
        const xq_module_report *m = &r->modules[i];
        sb_puts(&sb, i ? ",{\"path\":" : "{\"path\":");
        sb_json_cstr(&sb, m->path);
        sb_printf(&sb, ",\"from\":\"%s\",\"to\":\"%s\",\"out\":%" PRIu64 ",\"in\":%" PRIu64
                       ",\"src_rank\":%" PRIu64 ",\"svd_rank\":%" PRIu64 ",\"rank\":%" PRIu64
                       ",\"kept\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64
                       ",\"target\":%" PRIu64 ",\"dense_route\":%s,\"rel_fro\":",
                  m->src_type, m->out_type, m->out, m->in, m->src_rank, m->svd_rank, m->rank,
                  m->kept, m->total, m->bytes, m->target, m->dense_route ? "true" : "false");
        sb_json_double(&sb, m->rel_fro);
        sb_puts(&sb, "}");
    }
    sb_puts(&sb, "]}");
    sb_print_line(&sb, NULL);
    sb_free(&sb);
}

static void text_report(const xq_report *r, const char *in, const char *out, int per_module)
{
    char a[32], b[32], c[32];
    size_t comp = 0, copied = 0, dropped = 0;
    uint64_t rmin = UINT64_MAX, rmax = 0;
    double dens = 0.0;
    uint64_t kept = 0, total = 0;
    for (size_t i = 0; i < r->module_count; i++) {
        const xq_module_report *m = &r->modules[i];
        if (strcmp(m->out_type, "ia3") == 0) {
            copied++;
        } else if (strcmp(m->out_type, "dropped") == 0) {
            dropped++;
        } else {
            comp++;
            rmin = m->rank < rmin ? m->rank : rmin;
            rmax = m->rank > rmax ? m->rank : rmax;
            kept += m->kept;
            total += m->total;
        }
    }
    if (total > 0)
        dens = (double)kept / (double)total;
    char *in_text = term_text(in), *out_text = term_text(out);
    printf("%s -> %s: %s\n", in_text, out_text, r->method);
    term_free(in_text);
    term_free(out_text);
    printf("  budget %s (%" PRIu64 " B; reference %s), file %s (%" PRIu64 " B, %.2f%% of budget)\n",
           fmt_size(r->budget, a), r->budget, fmt_size(r->reference_size, b), fmt_size(r->file_size, c),
           r->file_size, 100.0 * (double)r->file_size / (double)r->budget);
    if (comp > 0) {
        if (total > 0)
            printf("  modules: %zu compressed (k %" PRIu64 "..%" PRIu64 ", %.1f%% of factor entries kept)",
                   comp, rmin, rmax, 100.0 * dens);
        else
            printf("  modules: %zu compressed (rank %" PRIu64 "..%" PRIu64 ")", comp, rmin, rmax);
    } else {
        printf("  modules: none compressed");
    }
    printf(", %zu copied (ia3), %zu dropped\n", copied, dropped);
    printf("  relative Frobenius error of ΔW (pooled over modules): %.6f\n", r->rel_fro_all);
    printf("  time %.2f s (decompose %.2f, fit %.2f, write %.2f)\n", r->seconds, r->seconds_decompose,
           r->seconds_fit, r->seconds_write);
    if (r->dropped_sections)
        printf("  note: %u non-adapter sections of the input are not carried over\n", r->dropped_sections);
    if (!per_module)
        return;
    printf("  %-58s %-5s %-5s %9s %5s %5s %8s %10s %9s\n", "module", "from", "to", "out x in", "r_src",
           "rank", "kept%", "bytes", "rel_fro");
    for (size_t i = 0; i < r->module_count; i++) {
        const xq_module_report *m = &r->modules[i];
        char shape[48];
        snprintf(shape, sizeof shape, "%" PRIu64 "x%" PRIu64, m->out, m->in);
        printf("  %-58s %-5s %-5s %9s %5" PRIu64 " %5" PRIu64 " %8.2f %10" PRIu64 " %9.6f\n", m->path,
               m->src_type, m->out_type, shape, m->src_rank, m->rank,
               m->total ? 100.0 * (double)m->kept / (double)m->total : 100.0, m->bytes, m->rel_fro);
    }
}

static int q_compress(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[C_COUNT];
    const char *pos[1];
    size_t npos = 0;
    uint64_t n;
    int rc = cli_parse(cmd, argc, argv, k_copts, v, C_COUNT, pos, 1, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    xq_compress_opts o;
    memset(&o, 0, sizeof o);
    o.codec = XQ_CODEC_AUTO;
    if (!v[C_OUT].seen)
        return cli_usage_error(cmd, "the output file (-o OUT.expert) is required");
    if (!v[C_METHOD].seen)
        return cli_usage_error(cmd, "--method svd|osd is required");
    if (strcmp(v[C_METHOD].value, "svd") == 0)
        o.method = XQ_METHOD_SVD;
    else if (strcmp(v[C_METHOD].value, "osd") == 0)
        o.method = XQ_METHOD_OSD;
    else
        return cli_usage_error(cmd, "--method must be svd or osd, not '%s'", v[C_METHOD].value);
    if (!v[C_BUDGET].seen)
        return cli_usage_error(cmd, "--budget BYTES|RATIO is required");
    if ((rc = parse_budget(cmd, v[C_BUDGET].value, &o)) != 0)
        return rc;
    if (v[C_SCORE].seen) {
        if (o.method != XQ_METHOD_OSD)
            return cli_usage_error(cmd, "--score applies to --method osd only");
        if (strcmp(v[C_SCORE].value, "magnitude") == 0)
            o.score = XQ_SCORE_MAGNITUDE;
        else if (strcmp(v[C_SCORE].value, "gradient") == 0)
            o.score = XQ_SCORE_GRADIENT;
        else
            return cli_usage_error(cmd, "--score must be magnitude or gradient");
    }
    if (o.score == XQ_SCORE_GRADIENT && !v[C_GRADS].seen)
        return cli_usage_error(cmd, "--score gradient needs --grads FILE");
    if (v[C_GRADS].seen && o.score != XQ_SCORE_GRADIENT)
        return cli_usage_error(cmd, "--grads is used with --score gradient");
    o.grads_path = v[C_GRADS].value;
    o.base_path = v[C_BASE].value;
    if (v[C_SVD].seen) {
        if (strcmp(v[C_SVD].value, "auto") == 0)
            o.svd.method = XQ_SVD_AUTO;
        else if (strcmp(v[C_SVD].value, "exact") == 0)
            o.svd.method = XQ_SVD_EXACT;
        else if (strcmp(v[C_SVD].value, "randomized") == 0)
            o.svd.method = XQ_SVD_RANDOMIZED;
        else
            return cli_usage_error(cmd, "--svd must be auto, exact or randomized");
    }
    if (v[C_OVER].seen) {
        if ((rc = cli_parse_u64(cmd, "oversample", v[C_OVER].value, 1, 1000, 0, &n)) != 0)
            return rc;
        o.svd.oversample = (unsigned)n;
    }
    if (v[C_POWER].seen) {
        if ((rc = cli_parse_u64(cmd, "power-iters", v[C_POWER].value, 0, 100, 0, &n)) != 0)
            return rc;
        o.svd.power_iters = n == 0 ? UINT32_MAX : (unsigned)n;
    }
    if (v[C_SEED].seen) {
        if ((rc = cli_parse_u64(cmd, "seed", v[C_SEED].value, 0, UINT64_MAX, 0, &n)) != 0)
            return rc;
        o.svd.seed = n;
    }
    if (v[C_CODEC].seen) {
        const char *c = v[C_CODEC].value;
        if (strcmp(c, "auto") == 0)
            o.codec = XQ_CODEC_AUTO;
        else if (strcmp(c, "raw") == 0)
            o.codec = EXPERT_CODEC_RAW;
        else if (strcmp(c, "zstd") == 0)
            o.codec = EXPERT_CODEC_ZSTD;
        else if (strcmp(c, "shuffle+zstd") == 0)
            o.codec = EXPERT_CODEC_SHUFFLE_ZSTD;
        else
            return cli_usage_error(cmd, "--codec must be auto, raw, zstd or shuffle+zstd");
    }
    if (v[C_LEVEL].seen) {
        if ((rc = cli_parse_u64(cmd, "level", v[C_LEVEL].value, 1, 22, 0, &n)) != 0)
            return rc;
        o.zstd_level = (int)n;
    }
    if (v[C_CANDS].seen) {
        if ((rc = cli_parse_u64(cmd, "candidates", v[C_CANDS].value, 1, 64, 0, &n)) != 0)
            return rc;
        o.max_candidates = (unsigned)n;
    }
    if (v[C_THREADS].seen) {
        if ((rc = cli_parse_u64(cmd, "threads", v[C_THREADS].value, 1, 64, 0, &n)) != 0)
            return rc;
        o.threads = (unsigned)n;
    }
    int json = v[C_JSON].seen;
    expert_error err;
    err_clear(&err);
    struct stat sb;
    if (!v[C_FORCE].seen && stat(v[C_OUT].value, &sb) == 0) {
        err_set(&err, EXPERT_E_IO, "'%s' already exists (use --force to overwrite)", v[C_OUT].value);
        return cli_report(json, NULL, EXPERT_E_IO, &err);
    }
    xq_report rep;
    expert_status s = xq_compress(pos[0], v[C_OUT].value, &o, &rep, &err);
    if (s != EXPERT_OK)
        return cli_report(json, NULL, s, &err);
    if (json)
        json_report(&rep, pos[0], v[C_OUT].value);
    else if (!v[C_QUIET].seen)
        text_report(&rep, pos[0], v[C_OUT].value, v[C_MODULES].seen);
    xq_report_free(&rep);
    return 0;
}

/* -------------------------------------------------------------------- diff */

enum { D_BASE, D_JSON, D_COUNT };
static const cli_opt_spec k_dopts[D_COUNT] = {[D_BASE] = {"base", 0, 1}, [D_JSON] = {"json", 0, 0}};

static int q_diff(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[D_COUNT];
    const char *pos[2];
    size_t npos = 0;
    int rc = cli_parse(cmd, argc, argv, k_dopts, v, D_COUNT, pos, 2, 2, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    expert_error err;
    err_clear(&err);
    xq_diff_result res;
    expert_status s = xq_diff(pos[0], pos[1], v[D_BASE].value, &res, &err);
    if (s != EXPERT_OK)
        return cli_report(v[D_JSON].seen, NULL, s, &err);
    double mean = 0, mx = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < res.count; i++)
        if (!isnan(res.rows[i].rel_fro)) {
            mean += res.rows[i].rel_fro;
            mx = res.rows[i].rel_fro > mx ? res.rows[i].rel_fro : mx;
            cnt++;
        }
    mean = cnt ? mean / (double)cnt : NAN;
    if (v[D_JSON].seen) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,\"a\":");
        sb_json_cstr(&sb, pos[0]);
        sb_puts(&sb, ",\"b\":");
        sb_json_cstr(&sb, pos[1]);
        sb_printf(&sb, ",\"only_a\":%zu,\"only_b\":%zu,\"rel_fro_pooled\":", res.only_a, res.only_b);
        sb_json_double(&sb, res.rel_fro_all);
        sb_puts(&sb, ",\"rel_fro_mean\":");
        sb_json_double(&sb, mean);
        sb_puts(&sb, ",\"rel_fro_max\":");
        sb_json_double(&sb, mx);
        sb_puts(&sb, ",\"modules\":[");
        for (size_t i = 0; i < res.count; i++) {
            const xq_diff_row *r = &res.rows[i];
            sb_puts(&sb, i ? ",{\"path\":" : "{\"path\":");
            sb_json_cstr(&sb, r->path);
            sb_printf(&sb, ",\"a\":\"%s\",\"b\":\"%s\",\"out\":%" PRIu64 ",\"in\":%" PRIu64 ",\"rel_fro\":",
                      r->type_a, r->type_b, r->out, r->in);
            sb_json_double(&sb, r->rel_fro);
            sb_puts(&sb, ",\"rel_spec\":");
            sb_json_double(&sb, r->rel_spec);
            sb_puts(&sb, ",\"norm_fro\":");
            sb_json_double(&sb, r->norm_fro);
            sb_puts(&sb, ",\"norm_spec\":");
            sb_json_double(&sb, r->norm_spec);
            sb_printf(&sb, ",\"spectral_exact\":%s,\"note\":", r->spec_iters == 0 ? "true" : "false");
            sb_json_cstr(&sb, r->note);
            sb_puts(&sb, "}");
        }
        sb_puts(&sb, "]}");
        sb_print_line(&sb, NULL);
        sb_free(&sb);
    } else {
        printf("%-62s %-5s %-5s %10s %10s  %s\n", "module", "A", "B", "rel_fro", "rel_spec", "note");
        for (size_t i = 0; i < res.count; i++) {
            const xq_diff_row *r = &res.rows[i];
            char *path = term_text(r->path), *note = term_text(r->note);
            printf("%-62s %-5s %-5s %10.6f %10.6f  %s\n", path, r->type_a, r->type_b, r->rel_fro,
                   r->rel_spec, note);
            term_free(path);
            term_free(note);
        }
        printf("%zu modules compared (%zu only in A, %zu only in B); relative Frobenius error: "
               "pooled %.6f, mean %.6f, max %.6f; %.2f s\n",
               res.count, res.only_a, res.only_b, res.rel_fro_all, mean, mx, res.seconds);
    }
    xq_diff_free(&res);
    return 0;
}

/* -------------------------------------------------------------- rsvd-check */

enum { R_BASE, R_K, R_OVER, R_POWER, R_SEED, R_MAX, R_JSON, R_COUNT };
static const cli_opt_spec k_ropts[R_COUNT] = {
    [R_BASE] = {"base", 0, 1},  [R_K] = {"k", 0, 1},   [R_OVER] = {"oversample", 0, 1},
    [R_POWER] = {"power-iters", 0, 1}, [R_SEED] = {"seed", 0, 1}, [R_MAX] = {"max-modules", 0, 1},
    [R_JSON] = {"json", 0, 0},
};

static double recon_error(size_t m, size_t n, size_t k, const float *D, const float *U, const float *S,
                          const float *Vt, double norm2)
{
    float *R = malloc(m * n * sizeof *R), *P = calloc(m * k + 1, sizeof *P);
    if (R == NULL || P == NULL) {
        free(R);
        free(P);
        return NAN;
    }
    memcpy(R, D, m * n * sizeof *R);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < k; j++)
            P[i * k + j] = U[i * k + j] * S[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, -1.0f, P, (int)k, Vt,
                (int)n, 1.0f, R, (int)n);
    double ss = 0;
    for (size_t i = 0; i < m * n; i++)
        ss += (double)R[i] * (double)R[i];
    free(R);
    free(P);
    return sqrt(ss / norm2);
}

static int q_rsvd(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[R_COUNT];
    const char *pos[1];
    size_t npos = 0;
    uint64_t n, k = 16, maxm = UINT64_MAX;
    int rc = cli_parse(cmd, argc, argv, k_ropts, v, R_COUNT, pos, 1, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    xq_svd_opts ro = {XQ_SVD_RANDOMIZED, 0, 0, 0}, eo = {XQ_SVD_EXACT, 0, 0, 0};
    if (v[R_K].seen && (rc = cli_parse_u64(cmd, "k", v[R_K].value, 1, 4096, 0, &k)) != 0)
        return rc;
    if (v[R_OVER].seen) {
        if ((rc = cli_parse_u64(cmd, "oversample", v[R_OVER].value, 1, 1000, 0, &n)) != 0)
            return rc;
        ro.oversample = (unsigned)n;
    }
    if (v[R_POWER].seen) {
        if ((rc = cli_parse_u64(cmd, "power-iters", v[R_POWER].value, 0, 100, 0, &n)) != 0)
            return rc;
        ro.power_iters = n == 0 ? UINT32_MAX : (unsigned)n;
    }
    if (v[R_SEED].seen && (rc = cli_parse_u64(cmd, "seed", v[R_SEED].value, 0, UINT64_MAX, 0, &ro.seed)) != 0)
        return rc;
    if (v[R_MAX].seen && (rc = cli_parse_u64(cmd, "max-modules", v[R_MAX].value, 1, UINT32_MAX, 0, &maxm)) != 0)
        return rc;
    int json = v[R_JSON].seen;
    expert_error err;
    err_clear(&err);
    expert_reader *r = NULL;
    expert_status s = expert_open(pos[0], NULL, &r, &err);
    expert_safetensors *st = NULL;
    uint8_t *base = NULL;
    size_t base_len = 0;
    if (s == EXPERT_OK && v[R_BASE].seen) {
        char *text = NULL;
        s = read_small_file(v[R_BASE].value, SIZE_MAX / 2, &text, &base_len, &err);
        base = (uint8_t *)text;
        if (s == EXPERT_OK)
            s = expert_safetensors_parse(base, base_len, &st, &err);
    }
    strbuf sb;
    sb_init(&sb);
    if (json)
        sb_puts(&sb, "{\"ok\":true,\"modules\":[");
    else
        printf("%-58s %11s %4s %9s %9s %12s %12s %12s\n", "module", "shape", "k", "exact_s", "rand_s",
               "max_sv_rel", "fro_exact", "fro_rand");
    double te = 0, tr = 0, worst_sv = 0, worst_ratio = 0;
    uint32_t nm = s == EXPERT_OK ? expert_module_count(r) : 0, done = 0;
    for (uint32_t i = 0; s == EXPERT_OK && i < nm && done < maxm; i++) {
        expert_adapter *a = NULL;
        s = expert_adapter_load(r, i, &a, &err);
        if (s != EXPERT_OK)
            break;
        size_t m = (size_t)a->out, nn = (size_t)a->in, kk = (size_t)k;
        if (a->kind == EXPERT_ADAPTER_IA3 || (a->kind == EXPERT_ADAPTER_DORA && st == NULL) || m == 0 || nn == 0) {
            expert_adapter_free(a);
            continue;
        }
        if (kk > (m < nn ? m : nn))
            kk = m < nn ? m : nn;
        float *W = NULL, *D = malloc(m * nn * sizeof *D);
        if (a->kind == EXPERT_ADAPTER_DORA) {
            char name[1200];
            const char *p = strncmp(a->path, "base_model.model.", 17) == 0 ? a->path + 17 : a->path;
            snprintf(name, sizeof name, "%s.weight", p);
            uint32_t cnt = expert_safetensors_count(st);
            for (uint32_t t = 0; t < cnt; t++) {
                expert_tensor_info ti;
                if (expert_safetensors_tensor(st, t, &ti) == EXPERT_OK && strcmp(ti.name, name) == 0 &&
                    ti.rank == 2 && ti.dims[0] == m && ti.dims[1] == nn) {
                    W = malloc(m * nn * sizeof *W);
                    if (W != NULL)
                        expert_floats_decode(ti.dtype, base + ti.data_offset, m * nn, W, NULL);
                }
            }
            if (W == NULL)
                s = err_set(&err, EXPERT_E_NOT_FOUND, "no base weight '%s'", name);
        }
        float *Ue = malloc(m * kk * sizeof *Ue), *Se = malloc(kk * sizeof *Se), *Ve = malloc(kk * nn * sizeof *Ve);
        float *Ur = malloc(m * kk * sizeof *Ur), *Sr = malloc(kk * sizeof *Sr), *Vr = malloc(kk * nn * sizeof *Vr);
        if (s == EXPERT_OK && (!D || !Ue || !Se || !Ve || !Ur || !Sr || !Vr))
            s = err_set(&err, EXPERT_E_NOMEM, "out of memory");
        if (s == EXPERT_OK)
            s = expert_adapter_delta(a, W, D, &err);
        double t0 = 0, t1 = 0, t2 = 0;
        if (s == EXPERT_OK) {
            t0 = (double)clock_ns() / 1e9;
            s = xq_svd_dense(m, nn, D, kk, &eo, Ue, Se, Ve, &err);
            t1 = (double)clock_ns() / 1e9;
        }
        if (s == EXPERT_OK) {
            s = xq_svd_dense(m, nn, D, kk, &ro, Ur, Sr, Vr, &err);
            t2 = (double)clock_ns() / 1e9;
        }
        if (s == EXPERT_OK) {
            double norm2 = 0, sv = 0;
            for (size_t q = 0; q < m * nn; q++)
                norm2 += (double)D[q] * (double)D[q];
            for (size_t j = 0; j < kk; j++)
                if (Se[j] > 0) {
                    double d = fabs((double)Sr[j] - (double)Se[j]) / (double)Se[0];
                    sv = d > sv ? d : sv;
                }
            double fe = norm2 > 0 ? recon_error(m, nn, kk, D, Ue, Se, Ve, norm2) : 0;
            double fr = norm2 > 0 ? recon_error(m, nn, kk, D, Ur, Sr, Vr, norm2) : 0;
            te += t1 - t0;
            tr += t2 - t1;
            worst_sv = sv > worst_sv ? sv : worst_sv;
            if (fe > 0 && fr / fe - 1.0 > worst_ratio)
                worst_ratio = fr / fe - 1.0;
            if (json) {
                sb_puts(&sb, done ? ",{\"path\":" : "{\"path\":");
                sb_json_cstr(&sb, a->path);
                sb_printf(&sb, ",\"out\":%zu,\"in\":%zu,\"k\":%zu,\"exact_s\":", m, nn, kk);
                sb_json_double(&sb, t1 - t0);
                sb_puts(&sb, ",\"randomized_s\":");
                sb_json_double(&sb, t2 - t1);
                sb_puts(&sb, ",\"max_sv_rel_err\":");
                sb_json_double(&sb, sv);
                sb_puts(&sb, ",\"rel_fro_exact\":");
                sb_json_double(&sb, fe);
                sb_puts(&sb, ",\"rel_fro_randomized\":");
                sb_json_double(&sb, fr);
                sb_puts(&sb, "}");
            } else {
                char shape[32];
                snprintf(shape, sizeof shape, "%zux%zu", m, nn);
                printf("%-58s %11s %4zu %9.4f %9.4f %12.3e %12.6f %12.6f\n", a->path, shape, kk, t1 - t0,
                       t2 - t1, sv, fe, fr);
            }
            done++;
        }
        free(W);
        free(D);
        free(Ue);
        free(Se);
        free(Ve);
        free(Ur);
        free(Sr);
        free(Vr);
        expert_adapter_free(a);
    }
    expert_safetensors_free(st);
    free(base);
    expert_close(r);
    if (s != EXPERT_OK) {
        sb_free(&sb);
        return cli_report(json, NULL, s, &err);
    }
    if (json) {
        sb_puts(&sb, "],\"exact_seconds\":");
        sb_json_double(&sb, te);
        sb_puts(&sb, ",\"randomized_seconds\":");
        sb_json_double(&sb, tr);
        sb_puts(&sb, ",\"worst_sv_rel_err\":");
        sb_json_double(&sb, worst_sv);
        sb_puts(&sb, ",\"worst_fro_excess\":");
        sb_json_double(&sb, worst_ratio);
        sb_puts(&sb, "}");
        sb_print_line(&sb, NULL);
    } else {
        printf("%u modules: exact %.2f s, randomized %.2f s; worst singular value error %.3e (relative "
               "to sigma_1); worst excess Frobenius error of the randomized rank-k reconstruction "
               "%.3e (relative)\n",
               done, te, tr, worst_sv, worst_ratio);
    }
    sb_free(&sb);
    return 0;
}

/* -------------------------------------------------------------------- main */

static const cli_cmd k_cmds[] = {
    {"compress", "re-fit an expert into a byte budget (svd | osd)", k_help_compress, q_compress},
    {"diff", "per-module error between two experts' weight changes", k_help_diff, q_diff},
    {"rsvd-check", "randomized vs exact SVD on an expert's modules", k_help_rsvd, q_rsvd},
};

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "Usage: expert-quality <command> [options]   (version " XQ_VERSION ")\n\nCommands:\n");
        for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
            fprintf(f, "  %-11s %s\n", k_cmds[i].name, k_cmds[i].summary);
        fprintf(f, "\nUsually run as `expert-cli compress` / `expert-cli diff`.\n");
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (strcmp(argv[1], k_cmds[i].name) == 0) {
            int rc = k_cmds[i].run(&k_cmds[i], argc - 1, argv + 1);
            if (fflush(stdout) != 0 && rc == 0)
                rc = EXPERT_E_IO;
            return rc;
        }
    fprintf(stderr, "expert-quality: unknown command '%s'\n", argv[1]);
    return CLI_EXIT_USAGE;
}
