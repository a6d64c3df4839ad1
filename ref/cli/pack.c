/* pack.c — `expert-cli pack DIR -o OUT.expert`: turns a PEFT package
 * directory into a .expert v2 file.
 *
 * Section order: the SAFETENSORS_HEADER of adapter_model.safetensors, its
 * tensors in streaming order (layer, module path, role A < B < magnitude <
 * other; non-layer tensors last), then every other file sorted by path.
 * Peak memory is about one section: the safetensors file is mmapped and
 * other files are read one at a time. */
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

#define SAFETENSORS_NAME "adapter_model.safetensors"
#define MANIFEST_NAME "manifest.json"
#define ADAPTER_CONFIG_NAME "adapter_config.json"
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)
#define NONE_INDEX SIZE_MAX

typedef struct tensor_entry {
    expert_tensor_info info; /* name owned by the safetensors parse */
    char *module_path;       /* from expert_peft_classify */
    expert_peft_role role;
    unsigned role_rank;      /* A 0, B 1, magnitude 2, anything else 3 */
    uint32_t module;         /* index into the module list or EXPERT_MODULE_NONE */
} tensor_entry;

typedef struct module_entry {
    const char *path;        /* borrowed from a tensor_entry */
    uint32_t layer;
    size_t a, b, mag, ia3;   /* tensor indexes, NONE_INDEX when absent */
} module_entry;

typedef struct pack_job {
    /* options */
    const char *dir, *out, *sign_path;
    uint8_t tensor_codec, aux_codec;
    expert_writer_options wopt;
    int json, quiet, progress;
    /* inputs */
    file_list files;
    jl_value *manifest, *adapter_cfg;
    const unsigned char *st_data; /* mmapped adapter_model.safetensors */
    size_t st_size;
    expert_safetensors *st;
    tensor_entry *tensors;
    size_t tensor_count;
    module_entry *modules;
    size_t module_count;
    /* progress and totals */
    size_t sections_total, sections_done, files_packed;
    uint64_t progress_ns; /* last redraw */
    uint64_t decoded_total;
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

/* 1 if path ends with suffix at a '.' component boundary (PEFT's rule for
 * target/feed-forward module names and pattern keys, taken literally). */
static int suffix_match(const char *path, const char *suffix)
{
    size_t pl = strlen(path), sl = strlen(suffix);
    if (sl == 0 || sl > pl || strcmp(path + pl - sl, suffix) != 0)
        return 0;
    return sl == pl || path[pl - sl - 1] == '.';
}

static unsigned role_rank(uint16_t type)
{
    switch (type) {
    case EXPERT_SECTION_LORA_A: return 0;
    case EXPERT_SECTION_LORA_B: return 1;
    case EXPERT_SECTION_DORA_MAGNITUDE: return 2;
    default: return 3;
    }
}

static int has_role(uint16_t type)
{
    return type == EXPERT_SECTION_LORA_A || type == EXPERT_SECTION_LORA_B ||
           type == EXPERT_SECTION_DORA_MAGNITUDE || type == EXPERT_SECTION_IA3_VECTOR;
}

static int tensor_cmp(const void *pa, const void *pb)
{
    const tensor_entry *a = pa, *b = pb;
    int c;
    if (a->role.layer != b->role.layer)
        return a->role.layer < b->role.layer ? -1 : 1;
    c = strcmp(a->module_path, b->module_path);
    if (c != 0)
        return c;
    if (a->role_rank != b->role_rank)
        return a->role_rank < b->role_rank ? -1 : 1;
    return strcmp(a->info.name, b->info.name);
}

/* One-line counter on a terminal, redrawn at most every 50 ms. */
static void progress(pack_job *job)
{
    uint64_t now;
    job->sections_done++;
    if (!job->progress)
        return;
    now = clock_ns();
    if (job->sections_done == job->sections_total || now - job->progress_ns >= 50000000u) {
        job->progress_ns = now;
        fprintf(stderr, "\rpacking: %zu/%zu sections", job->sections_done, job->sections_total);
        fflush(stderr);
    }
}

static void warn(const pack_job *job, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(const pack_job *job, const char *fmt, ...)
{
    va_list ap;
    if (job->quiet)
        return;
    fprintf(stderr, "%s pack: warning: ", CLI_NAME);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ----------------------------------------------------- package JSON files */

static expert_status load_json(const char *dir, const char *name, jl_value **out,
                               expert_error *err)
{
    char *path = join_path(dir, name), *text = NULL;
    char msg[160];
    size_t len = 0;
    expert_status s;

    *out = NULL;
    if (path == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    s = read_small_file(path, CONFIG_MAX_BYTES, &text, &len, err);
    if (s == EXPERT_OK) {
        *out = jl_parse(text, len, msg, sizeof msg);
        if (*out == NULL)
            s = err_set(err, EXPERT_E_INVALID_ARGUMENT, "'%s' is not valid JSON: %s", path, msg);
        else if ((*out)->type != JL_OBJECT)
            s = err_set(err, EXPERT_E_INVALID_ARGUMENT, "'%s' is not a JSON object", path);
    }
    if (s != EXPERT_OK) {
        jl_free(*out);
        *out = NULL;
    }
    free(text);
    free(path);
    return s;
}

/* The base model object of a v1 manifest: schema 1.0 `base_model`, schema
 * 2.0 `base_models[0]`. */
static const jl_value *manifest_base_model(const jl_value *manifest)
{
    const jl_value *bm = jl_get(manifest, "base_model");
    if (bm != NULL && bm->type == JL_OBJECT)
        return bm;
    bm = jl_get(manifest, "base_models");
    if (bm != NULL && bm->type == JL_ARRAY && bm->count > 0 && bm->items[0].type == JL_OBJECT)
        return &bm->items[0];
    return NULL;
}

/* First adapter object of a v1 manifest (schema 1.0 `adapters`, 2.0
 * `base_models[0].adapters`), used as a fallback source of alpha. */
static const jl_value *manifest_adapter(const jl_value *manifest)
{
    const jl_value *list = jl_get(manifest, "adapters");
    if (list == NULL || list->type != JL_ARRAY) {
        const jl_value *bm = manifest_base_model(manifest);
        list = jl_get(bm, "adapters");
    }
    if (list != NULL && list->type == JL_ARRAY && list->count > 0 &&
        list->items[0].type == JL_OBJECT)
        return &list->items[0];
    return NULL;
}

static int is_sha256_hex(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 64;
}

/* Alpha of a LoRA/DoRA module: the first alpha_pattern key matching the
 * module path, else lora_alpha, else the manifest adapter's alpha, else r. */
static double module_alpha(const pack_job *job, const char *path, uint64_t r, int *defaulted)
{
    const jl_value *pat = jl_get(job->adapter_cfg, "alpha_pattern");
    const jl_value *ad;
    double v;

    *defaulted = 0;
    if (pat != NULL && pat->type == JL_OBJECT) {
        for (size_t i = 0; i < pat->count; i++)
            if (pat->items[i].type == JL_NUMBER && suffix_match(path, pat->items[i].key))
                return pat->items[i].number;
    }
    if (jl_get_number(job->adapter_cfg, "lora_alpha", &v))
        return v;
    ad = manifest_adapter(job->manifest);
    if (jl_get_number(ad, "alpha", &v))
        return v;
    *defaulted = 1;
    return (double)r;
}

static int module_listed_feedforward(const pack_job *job, const char *path)
{
    const jl_value *ff = jl_get(job->adapter_cfg, "feedforward_modules");
    if (ff == NULL)
        return 0;
    if (ff->type == JL_STRING)
        return suffix_match(path, ff->string);
    if (ff->type == JL_ARRAY)
        for (size_t i = 0; i < ff->count; i++)
            if (ff->items[i].type == JL_STRING && suffix_match(path, ff->items[i].string))
                return 1;
    return 0;
}

/* ------------------------------------------------------------ safetensors */

static expert_status map_safetensors(pack_job *job, expert_error *err)
{
    char *path = join_path(job->dir, SAFETENSORS_NAME);
    struct stat st;
    expert_status s = EXPERT_OK;
    int fd;

    if (path == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot open '%s'", path);
    } else if (fstat(fd, &st) != 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot stat '%s'", path);
    } else if (!S_ISREG(st.st_mode)) {
        s = err_set(err, EXPERT_E_INVALID_ARGUMENT, "'%s' is not a regular file", path);
    } else if ((uint64_t)st.st_size > SIZE_MAX) {
        s = err_set(err, EXPERT_E_LIMIT_EXCEEDED, "'%s' is too large", path);
    } else if (st.st_size == 0) {
        job->st_data = (const unsigned char *)"";
        job->st_size = 0;
    } else {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            s = err_errno(err, EXPERT_E_IO, errno, "cannot map '%s'", path);
        } else {
            job->st_data = m;
            job->st_size = (size_t)st.st_size;
        }
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return s;
}

/* Releases the mapped pages of a tensor once it is packed, so resident memory
 * stays near one section instead of growing to the whole input file. Only
 * whole pages strictly inside the tensor are dropped (neighbours may still be
 * needed); failure is harmless, it only affects memory use. */
static void drop_pages(const unsigned char *base, size_t size, uint64_t off, uint64_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (size == 0 || len == 0 || off + len > size)
        return;
    uintptr_t start = ((uintptr_t)(base + off) + page - 1) / page * page;
    uintptr_t end = (uintptr_t)(base + off + len) / page * page;
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
}

/* Parses the safetensors file, classifies every key and sorts the tensors
 * into streaming order. */
static expert_status load_tensors(pack_job *job, expert_error *err)
{
    expert_status s;
    uint32_t n;

    s = map_safetensors(job, err);
    if (s != EXPERT_OK)
        return s;
    s = expert_safetensors_parse(job->st_data, job->st_size, &job->st, err);
    if (s != EXPERT_OK)
        return s;
    n = expert_safetensors_count(job->st);
    job->tensors = calloc(n ? n : 1, sizeof *job->tensors);
    if (job->tensors == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        tensor_entry *t = &job->tensors[i];
        size_t cap;
        s = expert_safetensors_tensor(job->st, i, &t->info);
        if (s != EXPERT_OK)
            return err_set(err, s, "cannot read tensor %" PRIu32 " of %s", i, SAFETENSORS_NAME);
        job->tensor_count++;
        cap = strlen(t->info.name) + 1;
        t->module_path = malloc(cap);
        if (t->module_path == NULL)
            return err_set(err, EXPERT_E_NOMEM, "out of memory");
        s = expert_peft_classify(t->info.name, t->module_path, cap, &t->role);
        if (s != EXPERT_OK)
            return err_set(err, s, "cannot classify tensor '%s'", t->info.name);
        t->role_rank = role_rank(t->role.type);
        t->module = EXPERT_MODULE_NONE;
    }
    if (job->tensor_count > 1)
        qsort(job->tensors, job->tensor_count, sizeof *job->tensors, tensor_cmp);
    return EXPERT_OK;
}

/* Groups role tensors into modules (in streaming order) and checks shapes. */
static expert_status build_modules(pack_job *job, expert_error *err)
{
    job->modules = calloc(job->tensor_count ? job->tensor_count : 1, sizeof *job->modules);
    if (job->modules == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    for (size_t i = 0; i < job->tensor_count; i++) {
        tensor_entry *t = &job->tensors[i];
        module_entry *m = NULL;
        size_t *slot;
        if (!has_role(t->role.type))
            continue;
        /* tensors of one module are adjacent after sorting: look at the last */
        if (job->module_count > 0 &&
            strcmp(job->modules[job->module_count - 1].path, t->module_path) == 0)
            m = &job->modules[job->module_count - 1];
        if (m == NULL) {
            m = &job->modules[job->module_count++];
            m->path = t->module_path;
            m->layer = t->role.layer;
            m->a = m->b = m->mag = m->ia3 = NONE_INDEX;
        }
        t->module = (uint32_t)(m - job->modules);
        switch (t->role.type) {
        case EXPERT_SECTION_LORA_A: slot = &m->a; break;
        case EXPERT_SECTION_LORA_B: slot = &m->b; break;
        case EXPERT_SECTION_DORA_MAGNITUDE: slot = &m->mag; break;
        default: slot = &m->ia3; break;
        }
        if (*slot != NONE_INDEX)
            return err_set(err, EXPERT_E_BAD_SAFETENSORS,
                           "module '%s' has two %s tensors ('%s' and '%s')", m->path,
                           expert_section_type_name(t->role.type), job->tensors[*slot].info.name,
                           t->info.name);
        *slot = i;
    }
    for (size_t k = 0; k < job->module_count; k++) {
        const module_entry *m = &job->modules[k];
        if (m->ia3 != NONE_INDEX) {
            const expert_tensor_info *v = &job->tensors[m->ia3].info;
            if (m->a != NONE_INDEX || m->b != NONE_INDEX || m->mag != NONE_INDEX)
                return err_set(err, EXPERT_E_BAD_SAFETENSORS,
                               "module '%s' mixes IA3 and LoRA tensors", m->path);
            if (!((v->rank == 2 && (v->dims[0] == 1 || v->dims[1] == 1)) || v->rank == 1))
                return err_set(err, EXPERT_E_BAD_SAFETENSORS,
                               "'%s': IA3 vector must be [out,1], [1,in] or [n]", v->name);
            continue;
        }
        if (m->a == NONE_INDEX || m->b == NONE_INDEX)
            return err_set(err, EXPERT_E_BAD_SAFETENSORS, "module '%s' lacks its %s tensor",
                           m->path, m->a == NONE_INDEX ? "lora_A" : "lora_B");
        {
            const expert_tensor_info *a = &job->tensors[m->a].info;
            const expert_tensor_info *b = &job->tensors[m->b].info;
            if (a->rank != 2 || b->rank != 2 || a->dims[0] == 0 || a->dims[0] != b->dims[1] ||
                a->dims[1] == 0 || b->dims[0] == 0)
                return err_set(err, EXPERT_E_BAD_SAFETENSORS,
                               "module '%s': lora_A must be [r,in] and lora_B [out,r] with the same r > 0",
                               m->path);
            if (m->mag != NONE_INDEX) {
                const expert_tensor_info *g = &job->tensors[m->mag].info;
                int ok = (g->rank == 1 && g->dims[0] == b->dims[0]) ||
                         (g->rank == 2 && g->dims[0] == 1 && g->dims[1] == b->dims[0]);
                if (!ok)
                    return err_set(err, EXPERT_E_BAD_SAFETENSORS,
                                   "'%s': DoRA magnitude must be [out] or [1,out] with out = %" PRIu64,
                                   g->name, b->dims[0]);
            }
        }
    }
    return EXPERT_OK;
}

/* --------------------------------------------------------------- metadata */

static void module_json(const pack_job *job, const module_entry *m, strbuf *sb, int *alpha_warned)
{
    sb_puts(sb, "{\"path\":");
    sb_json_cstr(sb, m->path);
    if (m->ia3 != NONE_INDEX) {
        const expert_tensor_info *v = &job->tensors[m->ia3].info;
        int ff = module_listed_feedforward(job, m->path) ||
                 (v->rank == 2 && v->dims[0] == 1 && v->dims[1] != 1);
        sb_puts(sb, ",\"type\":\"ia3\"");
        if (m->layer == EXPERT_LAYER_NONE)
            sb_puts(sb, ",\"layer\":null");
        else
            sb_printf(sb, ",\"layer\":%" PRIu32, m->layer);
        if (v->rank == 1)
            sb_printf(sb, ",\"out_features\":%" PRIu64, v->dims[0]);
        else if (ff)
            sb_printf(sb, ",\"in_features\":%" PRIu64, v->dims[1]);
        else
            sb_printf(sb, ",\"out_features\":%" PRIu64, v->dims[0]);
        sb_printf(sb, ",\"feedforward\":%s}", ff ? "true" : "false");
        return;
    }
    {
        const expert_tensor_info *a = &job->tensors[m->a].info;
        const expert_tensor_info *b = &job->tensors[m->b].info;
        int rslora = 0, defaulted = 0;
        double alpha = module_alpha(job, m->path, a->dims[0], &defaulted);
        if (defaulted && !*alpha_warned) {
            warn(job, "no lora_alpha in %s or manifest.json; using alpha = r (scale 1)",
                 ADAPTER_CONFIG_NAME);
            *alpha_warned = 1;
        }
        if (!jl_get_bool(job->adapter_cfg, "use_rslora", &rslora))
            rslora = 0;
        sb_printf(sb, ",\"type\":\"%s\"", m->mag != NONE_INDEX ? "dora" : "lora");
        if (m->layer == EXPERT_LAYER_NONE)
            sb_puts(sb, ",\"layer\":null");
        else
            sb_printf(sb, ",\"layer\":%" PRIu32, m->layer);
        sb_printf(sb, ",\"in_features\":%" PRIu64 ",\"out_features\":%" PRIu64 ",\"r\":%" PRIu64,
                  a->dims[1], b->dims[0], a->dims[0]);
        sb_puts(sb, ",\"alpha\":");
        sb_json_double(sb, alpha);
        sb_printf(sb, ",\"rslora\":%s}", rslora ? "true" : "false");
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

static expert_status build_metadata(pack_job *job, strbuf *sb, expert_error *err)
{
    const char *name = jl_get_string(job->manifest, "name");
    const char *version = jl_get_string(job->manifest, "version");
    const char *description = jl_get_string(job->manifest, "description");
    const jl_value *bm = manifest_base_model(job->manifest);
    char *dir_name = NULL;
    int alpha_warned = 0;

    if (name == NULL || name[0] == '\0') {
        dir_name = package_name_from_dir(job->dir);
        if (dir_name == NULL)
            return err_set(err, EXPERT_E_NOMEM, "out of memory");
        name = dir_name;
    }
    if (version == NULL || version[0] == '\0')
        version = "0.0.0";
    sb_puts(sb, "{\"format\":\"expert-v2\",\"name\":");
    sb_json_cstr(sb, name);
    sb_puts(sb, ",\"version\":");
    sb_json_cstr(sb, version);
    if (description != NULL) {
        sb_puts(sb, ",\"description\":");
        sb_json_cstr(sb, description);
    }
    if (bm != NULL && jl_get_string(bm, "name") != NULL) {
        const char *sha = jl_get_string(bm, "sha256");
        sb_puts(sb, ",\"base_model\":{\"name\":");
        sb_json_cstr(sb, jl_get_string(bm, "name"));
        if (sha != NULL && is_sha256_hex(sha)) {
            sb_puts(sb, ",\"sha256\":");
            sb_json_cstr(sb, sha);
        } else if (sha != NULL && sha[0] != '\0') {
            warn(job, "manifest base model sha256 is not 64 lower-case hex digits; dropped");
        }
        sb_puts(sb, "}");
    }
    if (job->manifest != NULL)
        sb_puts(sb, ",\"source_manifest\":\"" MANIFEST_NAME "\"");
    if (job->adapter_cfg != NULL)
        sb_puts(sb, ",\"adapter_config\":\"" ADAPTER_CONFIG_NAME "\"");
    sb_puts(sb, ",\"created_by\":\"" CLI_NAME " " CLI_VERSION "\",\"modules\":[");
    for (size_t k = 0; k < job->module_count; k++) {
        if (k > 0)
            sb_puts(sb, ",");
        module_json(job, &job->modules[k], sb, &alpha_warned);
    }
    sb_puts(sb, "]}");
    free(dir_name);
    if (sb->failed)
        return err_set(err, EXPERT_E_NOMEM, "out of memory building metadata");
    return EXPERT_OK;
}

/* ---------------------------------------------------------------- writing */

static void desc_init(expert_section_desc *d, const char *name, uint16_t type, uint8_t codec)
{
    memset(d, 0, sizeof *d);
    d->name = name;
    d->name_length = 0;
    d->type = type;
    d->codec = codec;
    d->layer = EXPERT_LAYER_NONE;
    d->module = EXPERT_MODULE_NONE;
}

static expert_status add_bytes(pack_job *job, expert_writer *w, const char *name, uint16_t type,
                               const void *data, size_t len, expert_error *err)
{
    expert_section_desc d;
    expert_status s;
    desc_init(&d, name, type, job->aux_codec);
    d.dtype = EXPERT_DTYPE_BYTES;
    d.rank = 1;
    d.dims[0] = len;
    s = expert_writer_add(w, &d, data, len, err);
    if (s == EXPERT_OK) {
        job->decoded_total += len;
        progress(job);
    }
    return s;
}

static expert_status add_tensors(pack_job *job, expert_writer *w, expert_error *err)
{
    expert_status s;
    uint64_t header_len = expert_safetensors_header_length(job->st);

    s = add_bytes(job, w, SAFETENSORS_NAME, EXPERT_SECTION_SAFETENSORS_HEADER, job->st_data,
                  (size_t)header_len, err);
    for (size_t i = 0; s == EXPERT_OK && i < job->tensor_count; i++) {
        const tensor_entry *t = &job->tensors[i];
        expert_section_desc d;
        desc_init(&d, t->info.name, t->role.type, job->tensor_codec);
        d.dtype = (uint8_t)t->info.dtype;
        d.rank = (uint8_t)t->info.rank;
        d.layer = t->role.layer;
        d.module = t->module;
        memcpy(d.dims, t->info.dims, sizeof d.dims);
        s = expert_writer_add(w, &d, job->st_data + t->info.data_offset,
                              (size_t)t->info.data_length, err);
        if (s == EXPERT_OK) {
            job->decoded_total += t->info.data_length;
            progress(job);
            drop_pages(job->st_data, job->st_size, t->info.data_offset, t->info.data_length);
        }
    }
    return s;
}

/* Reads one package file (checking it is still the regular file we listed)
 * and adds it as a FILE section. */
static expert_status add_file(pack_job *job, expert_writer *w, const file_entry *fe,
                              expert_error *err)
{
    char *path = join_path(job->dir, fe->path);
    unsigned char *buf = NULL;
    struct stat st;
    expert_status s = EXPERT_OK;
    int fd;

    if (path == NULL)
        return err_set(err, EXPERT_E_NOMEM, "out of memory");
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot open '%s'", path);
    } else if (fstat(fd, &st) != 0) {
        s = err_errno(err, EXPERT_E_IO, errno, "cannot stat '%s'", path);
    } else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != fe->size) {
        s = err_set(err, EXPERT_E_IO, "'%s' changed while packing", path);
    } else if (fe->size > SIZE_MAX - 1) {
        s = err_set(err, EXPERT_E_LIMIT_EXCEEDED, "'%s' is too large", path);
    } else if ((buf = malloc((size_t)fe->size + 1)) == NULL) {
        s = err_set(err, EXPERT_E_NOMEM, "out of memory reading '%s'", path);
    } else {
        s = read_full(fd, buf, (size_t)fe->size, path, err);
        if (s == EXPERT_OK)
            s = add_bytes(job, w, fe->path, EXPERT_SECTION_FILE, buf, (size_t)fe->size, err);
        if (s == EXPERT_OK)
            job->files_packed++;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    free(path);
    return s;
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
                  h.section_count, job->tensor_count, job->files_packed, job->module_count);
        sb_printf(&sb, ",\"decoded_bytes\":%" PRIu64 ",\"stored_bytes\":%" PRIu64
                       ",\"file_bytes\":%" PRIu64 ",\"ratio\":",
                  job->decoded_total, stored, h.file_length);
        sb_json_double(&sb, stored ? (double)job->decoded_total / (double)stored : 0.0);
        sb_puts(&sb, ",\"seconds\":");
        sb_json_double(&sb, seconds);
        sb_printf(&sb, ",\"signed\":%s}", is_signed ? "true" : "false");
        s = sb_print_line(&sb, err);
        sb_free(&sb);
    } else if (!job->quiet) {
        printf("packed %s -> %s\n", job->dir, job->out);
        printf("  sections: %" PRIu32 " (%zu tensors%s, %zu files), %zu modules\n", h.section_count,
               job->tensor_count, job->st ? " + safetensors header" : "", job->files_packed,
               job->module_count);
        printf("  decoded:  %s\n", fmt_size(job->decoded_total, b1));
        printf("  stored:   %s in sections, file %s (ratio %s)\n", fmt_size(stored, b2),
               fmt_size(h.file_length, b3), fmt_ratio(job->decoded_total, stored, b4));
        printf("  time:     %.3f s\n", seconds);
        printf("  signed:   %s\n", is_signed ? "yes" : "no");
    }
    expert_close(r);
    return s;
}

/* -------------------------------------------------------------- command */

enum { P_OUT, P_CODEC, P_LEVEL, P_ALIGN, P_FRAME, P_THREADS, P_SIGN, P_JSON, P_QUIET, P_COUNT };

static const cli_opt_spec k_pack_opts[P_COUNT] = {
    [P_OUT] = {"output", 'o', 1},      [P_CODEC] = {"codec", 0, 1},
    [P_LEVEL] = {"level", 0, 1},       [P_ALIGN] = {"align", 0, 1},
    [P_FRAME] = {"frame-size", 0, 1},  [P_THREADS] = {"threads", 0, 1},
    [P_SIGN] = {"sign", 0, 1},         [P_JSON] = {"json", 0, 0},
    [P_QUIET] = {"quiet", 'q', 0},
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
    job->progress = !job->quiet && isatty(STDERR_FILENO);
    return 0;
}

static void pack_job_free(pack_job *job)
{
    for (size_t i = 0; i < job->tensor_count; i++)
        free(job->tensors[i].module_path);
    free(job->tensors);
    free(job->modules);
    expert_safetensors_free(job->st);
    if (job->st_data != NULL && job->st_size > 0)
        munmap((void *)(uintptr_t)job->st_data, job->st_size);
    jl_free(job->manifest);
    jl_free(job->adapter_cfg);
    file_list_free(&job->files);
}

/* Finds a top-level file of the package, or NULL. */
static const file_entry *find_file(const pack_job *job, const char *name)
{
    for (size_t i = 0; i < job->files.count; i++)
        if (strcmp(job->files.items[i].path, name) == 0)
            return &job->files.items[i];
    return NULL;
}

static expert_status run_pack(pack_job *job, expert_private_key *key, expert_error *err)
{
    expert_writer *w = NULL;
    strbuf meta;
    struct stat out_st;
    int have_out = stat(job->out, &out_st) == 0;
    uint64_t t0 = clock_ns();
    expert_status s;

    s = walk_dir(job->dir, &job->files, err);
    if (s != EXPERT_OK)
        return s;
    if (find_file(job, MANIFEST_NAME) != NULL &&
        (s = load_json(job->dir, MANIFEST_NAME, &job->manifest, err)) != EXPERT_OK)
        return s;
    if (find_file(job, ADAPTER_CONFIG_NAME) != NULL &&
        (s = load_json(job->dir, ADAPTER_CONFIG_NAME, &job->adapter_cfg, err)) != EXPERT_OK)
        return s;
    if (find_file(job, SAFETENSORS_NAME) != NULL) {
        if ((s = load_tensors(job, err)) != EXPERT_OK || (s = build_modules(job, err)) != EXPERT_OK)
            return s;
    }
    sb_init(&meta);
    s = build_metadata(job, &meta, err);
    if (s != EXPERT_OK) {
        sb_free(&meta);
        return s;
    }

    /* every listed file is one section; the safetensors file becomes its
     * header section plus one section per tensor */
    job->sections_total = job->files.count + (job->st ? job->tensor_count : 0);
    s = expert_writer_open(job->out, &job->wopt, &w, err);
    if (s == EXPERT_OK)
        s = expert_writer_set_metadata(w, meta.data, meta.len, err);
    sb_free(&meta);
    if (s == EXPERT_OK && job->st != NULL)
        s = add_tensors(job, w, err);
    for (size_t i = 0; s == EXPERT_OK && i < job->files.count; i++) {
        const file_entry *fe = &job->files.items[i];
        if (job->st != NULL && strcmp(fe->path, SAFETENSORS_NAME) == 0)
            continue;
        if (have_out && fe->dev == (uint64_t)out_st.st_dev && fe->ino == (uint64_t)out_st.st_ino) {
            warn(job, "skipping '%s': it is the output file", fe->path);
            job->sections_total--;
            continue;
        }
        s = add_file(job, w, fe, err);
    }
    if (job->progress && job->sections_done > 0)
        fputc('\n', stderr); /* end the progress line */
    if (s != EXPERT_OK) {
        expert_writer_abort(w);
        return s;
    }
    s = expert_writer_finish(w, key, err);
    if (s != EXPERT_OK)
        return s;
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
