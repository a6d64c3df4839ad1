/* merge.c — `expert-cli merge EXPERT --base BASE.safetensors -o MERGED.safetensors`:
 * every base weight an adapter module targets is replaced by its merged
 * weight W' (spec §10, computed by the library's fusion, expert_adapter.h);
 * IA³ modules with feedforward false also scale the layer's bias. Every other
 * tensor is copied byte for byte, and so is the safetensors header (shapes,
 * dtypes and offsets do not change), so the result is a standard safetensors
 * file in the base's dtype.
 *
 * Name mapping (PEFT): module path `base_model.model.<P>` targets the base
 * tensor `<P>.weight` (and `<P>.bias` for IA³); a path without that prefix
 * targets `<path>.weight`.
 *
 * Rounding: W' is computed in binary64 and rounded to binary32 (RNE) by the
 * library; for BF16/F16 bases that binary32 value is rounded again to the
 * base dtype (RNE). The output is written atomically (temp file, fsync,
 * rename) and peak memory is one tensor (the base is mmapped). */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "expert_adapter.h"

const char cli_help_merge[] =
    "Usage: expert-cli merge EXPERT --base BASE.safetensors -o MERGED.safetensors [options]\n"
    "\n"
    "Writes BASE with every weight an adapter module of EXPERT targets replaced by\n"
    "its merged weight W' (spec §10: LoRA/rsLoRA W + s·B·A; DoRA\n"
    "diag(m/‖W + ΔW‖_row)·(W + ΔW); IA³ rows and bias, or columns, scaled by l;\n"
    "OSD W + U·diag(S)·Vt + Sp). All other tensors, the header and its\n"
    "__metadata__ are copied byte for byte. The module path\n"
    "'base_model.model.<P>' targets '<P>.weight' (and '<P>.bias' for IA³); a path\n"
    "without that prefix targets '<path>.weight'.\n"
    "\n"
    "Arithmetic: binary64, rounded once to F32 (round to nearest even); for BF16\n"
    "and F16 bases the F32 value is rounded again to the base dtype (RNE).\n"
    "Supported base dtypes: F32, BF16, F16.\n"
    "\n"
    "Options:\n"
    "  --base FILE         the base model's safetensors file (required)\n"
    "  -o, --output FILE   the merged safetensors file (written atomically)\n"
    "  --force             overwrite an existing output\n"
    "  --fan-in-fan-out    base weights are stored [in, out] (GPT-2 Conv1D)\n"
    "  --json              print the result as one JSON object\n"
    "  -q, --quiet         no summary\n"
    "  -h, --help          this help\n";

enum { M_BASE, M_OUT, M_FORCE, M_FIFO, M_JSON, M_QUIET, M_COUNT };
static const cli_opt_spec k_merge_opts[M_COUNT] = {
    [M_BASE] = {"base", 0, 1},          [M_OUT] = {"output", 'o', 1}, [M_FORCE] = {"force", 'f', 0},
    [M_FIFO] = {"fan-in-fan-out", 0, 0}, [M_JSON] = {"json", 0, 0},    [M_QUIET] = {"quiet", 'q', 0},
};

#define NO_MODULE UINT32_MAX

typedef struct merge_job {
    const char *expert_path, *base_path, *out_path;
    int force, fifo, json, quiet;
    expert_reader *r;
    const uint8_t *base;
    size_t base_size;
    expert_safetensors *st;
    uint32_t ntensors;
    uint32_t *weight_of; /* per tensor: module whose weight it is, or NO_MODULE */
    uint32_t *bias_of;   /* per tensor: ia3 module whose bias it is, or NO_MODULE */
    uint32_t merged, biases, copied;
} merge_job;

static int is_float_dtype(expert_dtype d)
{
    return d == EXPERT_DTYPE_F32 || d == EXPERT_DTYPE_BF16 || d == EXPERT_DTYPE_F16;
}

static expert_status find_tensor(const merge_job *job, const char *name, uint32_t *out)
{
    for (uint32_t i = 0; i < job->ntensors; i++) {
        expert_tensor_info ti;
        if (expert_safetensors_tensor(job->st, i, &ti) == EXPERT_OK && strcmp(ti.name, name) == 0) {
            *out = i;
            return EXPERT_OK;
        }
    }
    return EXPERT_E_NOT_FOUND;
}

/* "<base name>.<suffix>" for a module path, PEFT prefix stripped first. */
static expert_status locate(const merge_job *job, const char *path, const char *suffix,
                            uint32_t *out, char *name, size_t cap)
{
    static const char prefix[] = "base_model.model.";
    size_t pl = sizeof prefix - 1;
    if (strncmp(path, prefix, pl) == 0) {
        snprintf(name, cap, "%s.%s", path + pl, suffix);
        if (find_tensor(job, name, out) == EXPERT_OK)
            return EXPERT_OK;
    }
    char alt[1200];
    snprintf(alt, sizeof alt, "%s.%s", path, suffix);
    if (find_tensor(job, alt, out) == EXPERT_OK) {
        snprintf(name, cap, "%s", alt);
        return EXPERT_OK;
    }
    return EXPERT_E_NOT_FOUND;
}

static expert_status plan(merge_job *job, expert_error *err)
{
    uint32_t nm = expert_module_count(job->r);
    job->ntensors = expert_safetensors_count(job->st);
    job->weight_of = malloc(((size_t)job->ntensors + 1) * sizeof *job->weight_of);
    job->bias_of = malloc(((size_t)job->ntensors + 1) * sizeof *job->bias_of);
    if (job->weight_of == NULL || job->bias_of == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < job->ntensors; i++)
        job->weight_of[i] = job->bias_of[i] = NO_MODULE;
    if (nm == 0)
        return err_set(err, EXPERT_E_INVALID_ARGUMENT, "'%s' has no adapter modules", job->expert_path);
    for (uint32_t m = 0; m < nm; m++) {
        expert_module_info mi;
        expert_tensor_info ti;
        char name[1200];
        uint32_t t;
        if (expert_module(job->r, m, &mi) != EXPERT_OK)
            return err_set(err, EXPERT_E_INVALID_ARGUMENT, "module %u unreadable", m);
        if (locate(job, mi.path, "weight", &t, name, sizeof name) != EXPERT_OK)
            return err_set(err, EXPERT_E_NOT_FOUND,
                           "module %u ('%s'): no base tensor '%s.weight' in '%s'", m, mi.path,
                           strncmp(mi.path, "base_model.model.", 17) == 0 ? mi.path + 17 : mi.path,
                           job->base_path);
        if (job->weight_of[t] != NO_MODULE)
            return err_set(err, EXPERT_E_INVALID_ARGUMENT,
                           "modules %u and %u both target base tensor '%s'", job->weight_of[t], m,
                           name);
        expert_safetensors_tensor(job->st, t, &ti);
        if (ti.rank != 2 || !is_float_dtype(ti.dtype))
            return err_set(err, EXPERT_E_INVALID_ARGUMENT,
                           "base tensor '%s' is %s of rank %u; merge needs a 2-D F32, BF16 or F16 weight",
                           name, expert_dtype_name(ti.dtype), ti.rank);
        job->weight_of[t] = m;
        if (strcmp(mi.type, "ia3") == 0 && !mi.feedforward &&
            locate(job, mi.path, "bias", &t, name, sizeof name) == EXPERT_OK) {
            expert_safetensors_tensor(job->st, t, &ti);
            if (ti.rank != 1 || !is_float_dtype(ti.dtype))
                return err_set(err, EXPERT_E_INVALID_ARGUMENT,
                               "base bias '%s' is not a 1-D F32, BF16 or F16 tensor", name);
            job->bias_of[t] = m;
        }
    }
    return EXPERT_OK;
}

static void transpose(const float *src, float *dst, size_t rows, size_t cols)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            dst[j * rows + i] = src[i * cols + j];
}

/* Decodes tensor ti, applies module m (weight or bias), encodes into `out`. */
static expert_status merge_tensor(merge_job *job, const expert_tensor_info *ti, uint32_t m,
                                  int is_bias, uint8_t *out, expert_error *err)
{
    expert_adapter *a = NULL;
    expert_status s = expert_adapter_load(job->r, m, &a, err);
    if (s != EXPERT_OK)
        return s;
    uint64_t numel = is_bias ? ti->dims[0] : ti->dims[0] * ti->dims[1];
    uint64_t rows = job->fifo ? ti->dims[1] : ti->dims[0];
    uint64_t cols = job->fifo ? ti->dims[0] : ti->dims[1];
    float *w = malloc((size_t)numel * sizeof *w + 1), *t = NULL;
    if (w == NULL) {
        expert_adapter_free(a);
        return err_set(err, EXPERT_E_NOMEM, "out of memory for '%s'", ti->name);
    }
    s = expert_floats_decode(ti->dtype, job->base + ti->data_offset, (size_t)numel, w, err);
    if (s == EXPERT_OK && is_bias) {
        /* spec §10.5, feedforward false: b'[o] = l[o]·b[o] (one exact product, rounded once) */
        if (a->out != 0 && a->out != numel)
            s = err_set(err, EXPERT_E_INVALID_ARGUMENT, "bias '%s' has %" PRIu64 " entries, module %u has out %" PRIu64,
                        ti->name, numel, m, a->out);
        for (uint64_t o = 0; s == EXPERT_OK && o < numel; o++)
            w[o] = (float)((double)a->l[o] * (double)w[o]);
    } else if (s == EXPERT_OK) {
        if (a->kind == EXPERT_ADAPTER_IA3) { /* the vector gives one dimension only */
            if (a->in == 0)
                a->in = cols;
            if (a->out == 0)
                a->out = rows;
        }
        if (a->out != rows || a->in != cols)
            s = err_set(err, EXPERT_E_INVALID_ARGUMENT,
                        "module %u ('%s') is [out %" PRIu64 ", in %" PRIu64 "] but base tensor '%s' is "
                        "[%" PRIu64 ", %" PRIu64 "]%s",
                        m, a->path, a->out, a->in, ti->name, ti->dims[0], ti->dims[1],
                        job->fifo ? " (read as [in, out])" : "");
        if (s == EXPERT_OK && job->fifo) {
            t = malloc((size_t)numel * sizeof *t + 1);
            if (t == NULL)
                s = err_set(err, EXPERT_E_NOMEM, "out of memory");
            else
                transpose(w, t, (size_t)ti->dims[0], (size_t)ti->dims[1]);
        }
        if (s == EXPERT_OK)
            s = expert_adapter_merge(a, t != NULL ? t : w, NULL, err);
        if (s == EXPERT_OK && t != NULL)
            transpose(t, w, (size_t)rows, (size_t)cols);
    }
    if (s == EXPERT_OK)
        s = expert_floats_encode(ti->dtype, w, (size_t)numel, out, err);
    free(t);
    free(w);
    expert_adapter_free(a);
    return s;
}

static expert_status write_output(merge_job *job, expert_error *err)
{
    const char *slash = strrchr(job->out_path, '/');
    const char *leaf = slash ? slash + 1 : job->out_path;
    char *dir = slash ? strndup(job->out_path, (size_t)(slash - job->out_path + (slash == job->out_path)))
                      : strdup(".");
    if (dir == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    if (*leaf == '\0') {
        free(dir);
        return err_set(err, EXPERT_E_INVALID_ARGUMENT, "'%s' is not a file name", job->out_path);
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        expert_status s = err_errno(err, EXPERT_E_IO, errno, "cannot open directory '%s'", dir);
        free(dir);
        return s;
    }
    free(dir);
    if (!job->force) {
        struct stat st;
        if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            close(dirfd);
            return err_set(err, EXPERT_E_IO, "'%s' already exists (use --force to overwrite)",
                           job->out_path);
        }
    }
    atomic_file af;
    expert_status s = atomic_begin(&af, dirfd, leaf, job->out_path, err);
    if (s != EXPERT_OK) {
        close(dirfd);
        return s;
    }
    /* Header bytes verbatim: nothing about shapes, dtypes or offsets changes. */
    s = atomic_write(&af, job->base, (size_t)expert_safetensors_header_length(job->st), err);
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (uint32_t i = 0; s == EXPERT_OK && i < job->ntensors; i++) {
        expert_tensor_info ti;
        expert_safetensors_tensor(job->st, i, &ti);
        uint32_t m = job->weight_of[i] != NO_MODULE ? job->weight_of[i] : job->bias_of[i];
        if (m == NO_MODULE) {
            s = atomic_write(&af, job->base + ti.data_offset, (size_t)ti.data_length, err);
            job->copied++;
            continue;
        }
        if (ti.data_length > cap) {
            free(buf);
            cap = (size_t)ti.data_length;
            buf = malloc(cap);
            if (buf == NULL) {
                s = err_set(err, EXPERT_E_NOMEM, "out of memory");
                break;
            }
        }
        s = merge_tensor(job, &ti, m, job->weight_of[i] == NO_MODULE, buf, err);
        if (s == EXPERT_OK)
            s = atomic_write(&af, buf, (size_t)ti.data_length, err);
        if (job->weight_of[i] != NO_MODULE)
            job->merged++;
        else
            job->biases++;
    }
    free(buf);
    if (s == EXPERT_OK)
        s = atomic_commit(&af, job->force, err);
    else
        atomic_abort(&af);
    close(dirfd);
    return s;
}

static expert_status map_base(merge_job *job, expert_error *err)
{
    int fd = open(job->base_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(err, EXPERT_E_IO, errno, "cannot open '%s'", job->base_path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        return err_set(err, EXPERT_E_IO, "'%s' is not a non-empty regular file", job->base_path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return err_errno(err, EXPERT_E_IO, errno, "cannot map '%s'", job->base_path);
    job->base = p;
    job->base_size = (size_t)st.st_size;
    return expert_safetensors_parse(job->base, job->base_size, &job->st, err);
}

static void print_summary(const merge_job *job, double secs)
{
    if (job->json) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,\"output\":");
        sb_json_cstr(&sb, job->out_path);
        sb_printf(&sb, ",\"modules\":%u,\"weights_merged\":%u,\"biases_scaled\":%u,"
                       "\"tensors_copied\":%u,\"bytes\":%zu,\"seconds\":",
                  expert_module_count(job->r), job->merged, job->biases, job->copied, job->base_size);
        sb_json_double(&sb, secs);
        sb_puts(&sb, "}");
        sb_print_line(&sb, NULL);
        sb_free(&sb);
    } else if (!job->quiet) {
        char sz[32];
        printf("merged %u modules into %u weights (%u biases scaled), copied %u tensors;\n"
               "wrote %s (%s) in %.2f s\n",
               expert_module_count(job->r), job->merged, job->biases, job->copied, job->out_path,
               fmt_size(job->base_size, sz), secs);
    }
}

int cmd_merge(const cli_cmd *cmd, int argc, char **argv)
{
    cli_opt_val v[M_COUNT];
    const char *pos[1];
    size_t npos = 0;
    merge_job job;
    expert_error err;
    memset(&job, 0, sizeof job);
    err_clear(&err);
    int rc = cli_parse(cmd, argc, argv, k_merge_opts, v, M_COUNT, pos, 1, 1, &npos);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (!v[M_BASE].seen)
        return cli_usage_error(cmd, "the base model (--base BASE.safetensors) is required");
    if (!v[M_OUT].seen)
        return cli_usage_error(cmd, "the output file (-o MERGED.safetensors) is required");
    job.expert_path = pos[0];
    job.base_path = v[M_BASE].value;
    job.out_path = v[M_OUT].value;
    job.force = v[M_FORCE].seen;
    job.fifo = v[M_FIFO].seen;
    job.json = v[M_JSON].seen;
    job.quiet = v[M_QUIET].seen;

    uint64_t t0 = clock_ns();
    expert_status s = expert_open(job.expert_path, NULL, &job.r, &err);
    if (s == EXPERT_OK)
        s = map_base(&job, &err);
    if (s == EXPERT_OK)
        s = plan(&job, &err);
    if (s == EXPERT_OK)
        s = write_output(&job, &err);
    if (s == EXPERT_OK)
        print_summary(&job, (double)(clock_ns() - t0) / 1e9);
    rc = s == EXPERT_OK ? 0 : cli_report(job.json, NULL, s, &err);
    free(job.weight_of);
    free(job.bias_of);
    expert_safetensors_free(job.st);
    if (job.base != NULL)
        munmap((void *)(uintptr_t)job.base, job.base_size);
    expert_close(job.r);
    return rc;
}
