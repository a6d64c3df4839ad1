/* pack.c — `expert-cli pack DIR -o OUT.expert`: turns a PEFT package
 * directory into a .expert v2 file through the library's expert_pack (the
 * same code the v1 import uses, so `pack DIR` and `convert DIR.tar.gz` agree).
 *
 * This file lists and maps the directory's files, shows progress and drops
 * each file's pages once the packer reports them written, so resident memory
 * stays near one section instead of growing to the whole package. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct pack_job {
    /* options */
    const char *dir, *out, *sign_path;
    uint8_t tensor_codec, aux_codec;
    expert_writer_options wopt;
    int json, quiet, progress, force;
    /* inputs: files[i] maps files.items[keep[i]] */
    file_list files;
    expert_pack_file *pfiles;
    size_t pcount;
    /* progress and totals */
    expert_pack_result result;
    uint64_t progress_ns; /* last redraw */
} pack_job;

/* ---------------------------------------------------------------- helpers */

static char *join_path(const char *dir, const char *rel)
{
    size_t dl = strlen(dir), rl = strlen(rel);
    char *p = malloc(dl + rl + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, dl);
    if (dl > 0 && dir[dl - 1] != '/')
        p[dl++] = '/';
    memcpy(p + dl, rel, rl + 1);
    return p;
}

static void warn(const pack_job *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(const pack_job *job, const char *fmt, ...)
{
    va_list ap;
    if (job->quiet)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *msg = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (msg == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    /* the message holds names from the directory */
    fprintf(stderr, "%s pack: warning: ", CLI_NAME);
    fput_term(stderr, msg, (size_t)n);
    fputc('\n', stderr);
    free(msg);
}

/* Maps one listed file read-only, checking it is still the regular file of
 * the listing. Mapping (not reading) lets the kernel page it in as the
 * packer walks it, and drop_pages give it back. */
static expert_status map_file(const pack_job *job, const file_entry *fe, expert_pack_file *out,
                              expert_error *err)
{
    char *path = join_path(job->dir, fe->path);
    struct stat st;
    expert_status s = EXPERT_OK;
    int fd;

    if (path == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    out->name = fe->path;
    out->data = "";
    out->size = 0;
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot open '%s'", path);
    } else if (fstat(fd, &st) != 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot stat '%s'", path);
    } else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != fe->size) {
        s = err_set(err, EXPERT_E_IO, "'%s' changed while packing", path);
    } else if (fe->size > SIZE_MAX) {
        s = err_set(err, EXPERT_E_LIMIT_EXCEEDED, "'%s' is too large", path);
    } else if (fe->size > 0) {
        void *m = mmap(NULL, (size_t)fe->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            s = err_errno(err, EXPERT_E_IO, errno, "cannot map '%s'", path);
        } else {
            out->data = m;
            out->size = fe->size;
        }
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return s;
}

/* Releases mapped pages the packer has finished with. Only whole pages
 * strictly inside the range are dropped (neighbours may still be needed);
 * failure is harmless, it only affects memory use. */
static void drop_pages(const expert_pack_file *f, uint64_t off, uint64_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const unsigned char *base = f->data;
    if (f->size == 0 || len == 0 || off + len > f->size)
        return;
    uintptr_t start = ((uintptr_t)(base + off) + page - 1) / page * page;
    uintptr_t end = (uintptr_t)(base + off + len) / page * page;
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
}

/* The packer's per-section report: drop pages, redraw the one-line counter
 * on a terminal at most every 50 ms. */
static void on_section(void *user, const expert_pack_progress *p)
{
    pack_job *job = user;
    drop_pages(&job->pfiles[p->file], p->offset, p->length);
    if (!job->progress)
        return;
    uint64_t now = clock_ns();
    if (p->sections_done == p->sections_total || now - job->progress_ns >= 50000000u) {
        job->progress_ns = now;
        fprintf(stderr, "\rpacking: %zu/%zu sections", p->sections_done, p->sections_total);
        fflush(stderr);
    }
}

/* Package name: manifest name, else the directory's base name. */
static char *package_name_from_dir(const char *dir)
{
    size_t n = strlen(dir);
    const char *base;
    char *res = NULL, *copy;

    while (n > 1 && dir[n - 1] == '/')
        n--;
    copy = malloc(n + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, dir, n);
    copy[n] = '\0';
    base = strrchr(copy, '/');
    base = base ? base + 1 : copy;
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        char *real = realpath(copy, NULL);
        if (real != NULL) {
            const char *rb = strrchr(real, '/');
            rb = rb ? rb + 1 : real;
            if (*rb != '\0') {
                res = malloc(strlen(rb) + 1);
                if (res != NULL)
                    strcpy(res, rb);
            }
            free(real);
        }
        if (res == NULL) {
            res = malloc(sizeof "package");
            if (res != NULL)
                strcpy(res, "package");
        }
    } else {
        res = malloc(strlen(base) + 1);
        if (res != NULL)
            strcpy(res, base);
    }
    free(copy);
    return res;
}

/* --------------------------------------------------------------- summary */

static expert_status print_summary(pack_job *job, double seconds, int is_signed, expert_error *err)
{
    expert_reader *r = NULL;
    expert_header_info h;
    uint64_t stored = 0;
    char b1[32], b2[32], b3[32], b4[32];
    expert_status s = expert_open(job->out, NULL, &r, err);

    if (s != EXPERT_OK)
        return s;
    expert_header(r, &h);
    for (uint32_t i = 0; i < expert_section_count(r); i++) {
        expert_section_info si;
        if (expert_section(r, i, &si) == EXPERT_OK)
            stored += si.stored_length;
    }
    if (job->json) {
        strbuf sb;
        sb_init(&sb);
        sb_puts(&sb, "{\"ok\":true,\"output\":");
        sb_json_cstr(&sb, job->out);
        sb_printf(&sb, ",\"sections\":%" PRIu32 ",\"tensors\":%zu,\"files\":%zu,\"modules\":%zu",
                  h.section_count, job->result.tensors, job->result.files, job->result.modules);
        sb_printf(&sb, ",\"decoded_bytes\":%" PRIu64 ",\"stored_bytes\":%" PRIu64
                       ",\"file_bytes\":%" PRIu64 ",\"ratio\":",
                  job->result.decoded_bytes, stored, h.file_length);
        sb_json_double(&sb, stored ? (double)job->result.decoded_bytes / (double)stored : 0.0);
        sb_puts(&sb, ",\"seconds\":");
        sb_json_double(&sb, seconds);
        sb_printf(&sb, ",\"signed\":%s}", is_signed ? "true" : "false");
        s = sb_print_line(&sb, err);
        sb_free(&sb);
    } else if (!job->quiet) {
        char *dir = term_text(job->dir), *out = term_text(job->out);
        printf("packed %s -> %s\n", dir, out);
        term_free(dir);
        term_free(out);
        printf("  sections: %" PRIu32 " (%zu tensors%s, %zu files), %zu modules\n", h.section_count,
               job->result.tensors, job->result.tensors ? " + safetensors header" : "", job->result.files,
               job->result.modules);
        printf("  decoded:  %s\n", fmt_size(job->result.decoded_bytes, b1));
        printf("  stored:   %s in sections, file %s (ratio %s)\n", fmt_size(stored, b2),
               fmt_size(h.file_length, b3), fmt_ratio(job->result.decoded_bytes, stored, b4));
        printf("  time:     %.3f s\n", seconds);
        printf("  signed:   %s\n", is_signed ? "yes" : "no");
    }
    expert_close(r);
    return s;
}

/* -------------------------------------------------------------- command */

enum { P_OUT, P_CODEC, P_LEVEL, P_ALIGN, P_FRAME, P_THREADS, P_SIGN, P_JSON, P_QUIET, P_FORCE, P_COUNT };

static const cli_opt_spec k_pack_opts[P_COUNT] = {
    [P_OUT] = {"output", 'o', 1},      [P_CODEC] = {"codec", 0, 1},
    [P_LEVEL] = {"level", 0, 1},       [P_ALIGN] = {"align", 0, 1},
    [P_FRAME] = {"frame-size", 0, 1},  [P_THREADS] = {"threads", 0, 1},
    [P_SIGN] = {"sign", 0, 1},         [P_JSON] = {"json", 0, 0},
    [P_QUIET] = {"quiet", 'q', 0},     [P_FORCE] = {"force", 'f', 0},
};

static int parse_pack_args(const cli_cmd *cmd, int argc, char **argv, pack_job *job)
{
    cli_opt_val v[P_COUNT];
    const char *pos[1];
    size_t npos = 0;
    uint64_t n;
    int rc = cli_parse(cmd, argc, argv, k_pack_opts, v, P_COUNT, pos, 1, 1, &npos);

    if (rc != 0)
        return rc;
    job->dir = pos[0];
    if (!v[P_OUT].seen)
        return cli_usage_error(cmd, "the output file (-o OUT.expert) is required");
    job->out = v[P_OUT].value;
    job->tensor_codec = EXPERT_CODEC_SHUFFLE_ZSTD;
    job->aux_codec = EXPERT_CODEC_ZSTD;
    if (v[P_CODEC].seen) {
        const char *c = v[P_CODEC].value;
        if (strcmp(c, "raw") == 0)
            job->tensor_codec = job->aux_codec = EXPERT_CODEC_RAW;
        else if (strcmp(c, "zstd") == 0)
            job->tensor_codec = EXPERT_CODEC_ZSTD;
        else if (strcmp(c, "shuffle+zstd") == 0)
            job->tensor_codec = EXPERT_CODEC_SHUFFLE_ZSTD;
        else
            return cli_usage_error(cmd, "--codec must be raw, zstd or shuffle+zstd, not '%s'", c);
    }
    if (v[P_LEVEL].seen) {
        if ((rc = cli_parse_u64(cmd, "level", v[P_LEVEL].value, 1, 22, 0, &n)) != 0)
            return rc;
        job->wopt.zstd_level = (int)n;
    }
    if (v[P_ALIGN].seen) {
        if ((rc = cli_parse_u64(cmd, "align", v[P_ALIGN].value, 64, 4096, 0, &n)) != 0)
            return rc;
        if (n != 64 && n != 256 && n != 4096)
            return cli_usage_error(cmd, "--align must be 64, 256 or 4096");
        job->wopt.alignment = (uint32_t)n;
    }
    if (v[P_FRAME].seen) {
        if ((rc = cli_parse_u64(cmd, "frame-size", v[P_FRAME].value, 1u << 16, 1u << 26, 1,
                                &n)) != 0)
            return rc;
        if ((n & (n - 1)) != 0)
            return cli_usage_error(cmd, "--frame-size must be a power of two (64K..64M)");
        job->wopt.frame_size = (uint32_t)n;
    }
    if (v[P_THREADS].seen) {
        if ((rc = cli_parse_u64(cmd, "threads", v[P_THREADS].value, 0, 1024, 0, &n)) != 0)
            return rc;
        job->wopt.threads = (unsigned)n;
    }
    job->sign_path = v[P_SIGN].value;
    job->json = v[P_JSON].seen;
    job->quiet = v[P_QUIET].seen;
    job->force = v[P_FORCE].seen;
    job->progress = !job->quiet && isatty(STDERR_FILENO);
    return 0;
}

static void pack_job_free(pack_job *job)
{
    for (size_t i = 0; i < job->pcount; i++)
        if (job->pfiles[i].size > 0)
            munmap((void *)(uintptr_t)job->pfiles[i].data, (size_t)job->pfiles[i].size);
    free(job->pfiles);
    file_list_free(&job->files);
}

/* Lists and maps the package files, leaving out the output file itself. */
static expert_status map_package(pack_job *job, expert_error *err)
{
    struct stat out_st;
    int have_out = stat(job->out, &out_st) == 0;
    expert_status s = walk_dir(job->dir, &job->files, err);
    if (s != EXPERT_OK)
        return s;
    job->pfiles = calloc(job->files.count ? job->files.count : 1, sizeof *job->pfiles);
    if (job->pfiles == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < job->files.count && s == EXPERT_OK; i++) {
        const file_entry *fe = &job->files.items[i];
        if (have_out && fe->dev == (uint64_t)out_st.st_dev && fe->ino == (uint64_t)out_st.st_ino) {
            warn(job, "skipping '%s': it is the output file", fe->path);
            continue;
        }
        s = map_file(job, fe, &job->pfiles[job->pcount], err);
        job->pcount += s == EXPERT_OK;
    }
    return s;
}

static expert_status run_pack(pack_job *job, expert_private_key *key, expert_error *err)
{
    expert_writer *w = NULL;
    uint64_t t0 = clock_ns();
    char *name = package_name_from_dir(job->dir);
    expert_status s = name != NULL ? map_package(job, err) : err_set(err, EXPERT_E_NOMEM, "out of memory");

    if (s == EXPERT_OK && !job->force && access(job->out, F_OK) == 0)
        s = err_set(err, EXPERT_E_INVALID_ARGUMENT, "'%s' exists (use --force to replace it)",
                    job->out);
    if (s == EXPERT_OK)
        s = expert_writer_open(job->out, &job->wopt, &w, err);
    if (s == EXPERT_OK) {
        expert_pack_options po = {
            .struct_size = sizeof po,
            .tensor_codec = job->tensor_codec,
            .file_codec = job->aux_codec,
            .fallback_name = name,
            .created_by = CLI_NAME " " CLI_VERSION,
            .on_section = on_section,
            .user = job,
        };
        s = expert_pack(w, job->pfiles, job->pcount, &po, &job->result, err);
        if (job->progress && job->result.sections > 0)
            fputc('\n', stderr); /* end the progress line */
        if (s == EXPERT_OK)
            s = expert_writer_finish(w, key, err);
        else
            expert_writer_abort(w);
    }
    free(name);
    if (s != EXPERT_OK)
        return s;
    if (job->result.alpha_defaulted > 0)
        warn(job, "%zu module(s) have no alpha in adapter_config.json (PEFT default 8) or, without "
                  "a config, in manifest.json (alpha = r)",
             job->result.alpha_defaulted);
    return print_summary(job, (double)(clock_ns() - t0) / 1e9, key != NULL, err);
}

int cmd_pack(const cli_cmd *cmd, int argc, char **argv)
{
    pack_job job;
    expert_private_key *key = NULL;
    expert_error err;
    expert_status s = EXPERT_OK;
    int rc;

    memset(&job, 0, sizeof job);
    err_clear(&err);
    rc = parse_pack_args(cmd, argc, argv, &job);
    if (rc != 0)
        return rc == CLI_PARSE_HELP ? 0 : rc;
    if (job.sign_path != NULL)
        s = expert_private_key_load(job.sign_path, &key, &err);
    if (s == EXPERT_OK)
        s = run_pack(&job, key, &err);
    expert_private_key_free(key);
    pack_job_free(&job);
    return s == EXPERT_OK ? 0 : cli_report(job.json, NULL, s, &err);
}
