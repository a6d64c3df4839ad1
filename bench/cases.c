/* cases.c — benchmark bodies (C), driven by shim.cc through cases.h.
 *
 * Dataset: a manifest (JSON, written by bench/run) lists generated experts,
 * each as a v1 tar.gz, its adapter_model.safetensors, and v2 files packed
 * raw, zstd and shuffle+zstd. One expert has role "main" (the full case
 * matrix); the others ("scale") get a reduced set to show how cost grows.
 *
 * Every case times one iteration itself (CLOCK_MONOTONIC) after untimed
 * preparation:
 *   hot   the file was read once when the case started (page cache warm);
 *   cold  posix_fadvise(DONTNEED) on the file before every iteration. The
 *         guest page cache is emptied (checked with mincore), but a VM host
 *         may still cache the disk image: "cold (fadvise; host cache may
 *         remain)".
 * Destination buffers are one node-local, pre-faulted arena shared by every
 * format, so v1, safetensors and v2 materialize the same tensors into the
 * same memory.
 *
 * What each operation times (v2 file F):
 *   open           expert_open (mmap + structural validation); close untimed
 *   lookup         open + expert_find + expert_read (verified) of one tensor
 *                  in the middle layer; close untimed
 *   find           expert_find on an open reader, per lookup (hot only)
 *   tensors_*      open + expert_read of every tensor section into the arena
 *                  (verify / noverify; t1 = calling thread, tN = N pinned
 *                  threads sharing the sections) + close
 *   all_verify_t1  the same for every section (tensors and package files)
 *   *_nommap       the same with EXPERT_OPEN_NO_MMAP (read() into memory)
 *   readall_*      open (N threads) + expert_read_sections of every tensor
 *                  section (the library's pool across sections) + close;
 *                  verify: hashes checked; marked: opened with a verified
 *                  mark made untimed at case start (pread, no hashing);
 *                  destinations, allocated in the timed region and freed
 *                  untimed: _malloc (glibc may reuse pages it kept), _fresh
 *                  (a new anonymous mapping, 4 KiB pages, faulted on first
 *                  touch), _fresh_thp (the same advised MADV_HUGEPAGE)
 *   stream         open + every layer's sections in layer order into one
 *                  reused layer buffer (bandwidth) + close
 *   first_layer    open + the first layer's sections (verified); close untimed
 * Baselines on the same tensors:
 *   v1 targz_extract  the old runtime: gzip+tar extraction of the whole
 *                  package to a temporary directory (libarchive, write()),
 *                  then read() adapter_model.safetensors, parse it, and copy
 *                  every tensor into the arena; removing the directory is
 *                  untimed
 *   v1 libexpert   expert_open_v1 on the tar.gz (in-memory v1 compat) + read of
 *                  every tensor section (verified) + close
 *   st mmap        mmap adapter_model.safetensors + parse + copy of every
 *                  tensor into the arena + munmap
 *   floor read     read() of the file's bytes into the arena (8 MiB chunks)
 * Micro-cases (hot, what bounds the loads): SHA-256, memcpy, zstd decode with
 * a reused context, the library's unshuffle and a reference unshuffle, the
 * library's fixed cost per small section, jansson parse of the metadata and
 * the structure hash.
 * One file (~1,200 lines): every case is timed by the same loop, side by
 * side, and the case table is easiest to audit in one place. */
#include "cases.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <zstd.h>

#include <expert.h>
#include <expert_v1.h>

#include "sys.h"

/* The library's unshuffle (codec.c) is internal: the benchmark links the
 * library's objects statically (expert_internal in ref/meson.build). */
#include "format.h"

/* Reference unshuffle: output-order loop, one read stream per byte plane. */
static void unshuffle_fast(const uint8_t *restrict src, uint8_t *restrict dst, size_t length,
                           size_t es)
{
    size_t n = length / es;
    if (es == 4) {
        const uint8_t *s0 = src, *s1 = src + n, *s2 = src + 2 * n, *s3 = src + 3 * n;
        for (size_t i = 0; i < n; i++) {
            dst[4 * i] = s0[i];
            dst[4 * i + 1] = s1[i];
            dst[4 * i + 2] = s2[i];
            dst[4 * i + 3] = s3[i];
        }
    } else if (es == 2) {
        const uint8_t *s0 = src, *s1 = src + n;
        for (size_t i = 0; i < n; i++) {
            dst[2 * i] = s0[i];
            dst[2 * i + 1] = s1[i];
        }
    } else {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < es; j++)
                dst[i * es + j] = src[j * n + i];
    }
}

/* ============================================================ dataset */

enum { F_V1, F_ST, F_RAW, F_ZSTD, F_SHUF, F_COUNT };
static const char *const k_fmt_name[F_COUNT] = {"v1", "st", "raw", "zstd", "shuf"};

typedef struct item {
    uint32_t idx;
    uint64_t off, len;
} item;

typedef struct plan {
    item *tensors, *all, *stream;
    uint32_t nt, na, ns, nfirst;
    uint64_t tensor_bytes, all_bytes, stream_bytes, first_bytes, layer_buf;
    uint32_t lookup_idx;
    char *lookup_name;
    size_t lookup_len;
    uint64_t lookup_bytes;
    char **names;
    size_t *name_lens;
    uint32_t nnames;
    uint32_t small_idx;    /* smallest compressed tensor section (micro) */
    uint64_t small_len;
    uint64_t structure_bytes;
} plan;

typedef struct xb_expert {
    char id[96];
    int main_role;
    size_t elem;           /* dtype size */
    char path[F_COUNT][PATH_MAX];
    plan plans[F_COUNT];   /* F_RAW..F_SHUF; F_V1 via the library's v1 compat */
    int have_plan[F_COUNT];
    uint64_t st_tensor_bytes;
} xb_expert;

static xb_expert *g_experts;
static size_t g_nexperts;
static char g_tmp_dir[PATH_MAX];
static char g_data_dir[PATH_MAX];
static int g_list_only;
static unsigned g_threads;
static long g_cold_latency_iters = 20;
static double g_slow_min_time = 0.4;

static uint8_t *g_arena;
static size_t g_arena_size;
static uint8_t *g_stage;   /* v1: the extracted safetensors file is read here; memcpy source */
static size_t g_stage_size;

/* ============================================================== cases */

enum {
    K_V2, K_V1_TARGZ, K_V1_LIB, K_ST_MMAP, K_FLOOR, K_MICRO
};
enum {
    OP_OPEN, OP_LOOKUP, OP_FIND, OP_TENSORS, OP_ALL, OP_STREAM, OP_FIRST, OP_READALL
};
/* Where a readall case's destinations come from. */
enum {
    DST_ARENA, /* the shared pre-faulted arena (what every other load case uses) */
    DST_MALLOC, /* malloc'd each iteration (glibc may hand back pages it kept) */
    DST_FRESH,  /* an anonymous mapping each iteration, 4 KiB pages: fresh pages */
    DST_THP     /* the same advised for huge pages */
};
enum {
    M_SHA, M_MEMCPY, M_ZSTD, M_UNSHUF_LIB, M_UNSHUF_FAST, M_LIB_SMALL, M_ZSTD_SMALL, M_JSON,
    M_STRUCT_SHA, M_DCTX
};

typedef struct xb_case {
    char name[256];
    int kind, op, fmt, cold, verify, nommap, unit;
    int marked, dst;       /* readall: opened with a verified mark; DST_* */
    unsigned threads;
    xb_expert *e;
    const char *path;
    plan *pl;
    uint64_t bytes;
    uint32_t items;        /* sections read (loads), lookups (find), creates (dctx) per iteration */
    size_t micro_len;
    double resident;
    /* per-invocation state */
    expert_reader *r;
    uint8_t *map;
    size_t map_len;
    char *json;
    size_t json_len;
    expert_mark mark;      /* readall marked: made once per invocation */
    expert_read_request *req;
    uint64_t dst_size;
} xb_case;

static xb_case *g_cases;
static size_t g_ncases, g_capcases;

static void set_err(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

static xb_case *add_case(const char *fmt, ...)
{
    if (g_ncases == g_capcases) {
        size_t cap = g_capcases ? 2 * g_capcases : 128;
        xb_case *n = realloc(g_cases, cap * sizeof *n);
        if (n == NULL)
            abort();
        g_cases = n;
        g_capcases = cap;
    }
    xb_case *c = &g_cases[g_ncases++];
    memset(c, 0, sizeof *c);
    c->resident = -1;
    c->threads = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof c->name, fmt, ap);
    va_end(ap);
    return c;
}

/* ============================================================ plans */

static int is_tensor_type(uint16_t t)
{
    return t != EXPERT_SECTION_FILE && t != EXPERT_SECTION_SAFETENSORS_HEADER;
}

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static int build_plan(const char *path, plan *p, char *err, size_t errlen)
{
    expert_reader *r = NULL;
    expert_error e;
    memset(p, 0, sizeof *p);
    if (expert_open_any(path, NULL, NULL, &r, &e) != EXPERT_OK) { /* plans are made for v1 inputs too */
        set_err(err, errlen, "%s: %s: %s", path, expert_status_name(e.code), e.message);
        return -1;
    }
    uint32_t n = expert_section_count(r);
    p->tensors = calloc(n ? n : 1, sizeof *p->tensors);
    p->all = calloc(n ? n : 1, sizeof *p->all);
    p->stream = calloc(n ? n : 1, sizeof *p->stream);
    p->names = calloc(n ? n : 1, sizeof *p->names);
    p->name_lens = calloc(n ? n : 1, sizeof *p->name_lens);
    if (!p->tensors || !p->all || !p->stream || !p->names || !p->name_lens) {
        expert_close(r);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    uint64_t toff = 0, aoff = 0;
    p->small_idx = UINT32_MAX;
    for (uint32_t i = 0; i < n; i++) {
        expert_section_info s;
        expert_section(r, i, &s);
        p->names[i] = malloc(s.name_length + 1u);
        memcpy(p->names[i], s.name, s.name_length);
        p->names[i][s.name_length] = 0;
        p->name_lens[i] = s.name_length;
        p->all[p->na++] = (item){i, aoff, s.decoded_length};
        aoff += align64(s.decoded_length);
        p->all_bytes += s.decoded_length;
        if (is_tensor_type(s.type)) {
            p->tensors[p->nt++] = (item){i, toff, s.decoded_length};
            toff += align64(s.decoded_length);
            p->tensor_bytes += s.decoded_length;
            if (s.codec != EXPERT_CODEC_RAW && (p->small_idx == UINT32_MAX || s.decoded_length < p->small_len)) {
                p->small_idx = i;
                p->small_len = s.decoded_length;
            }
        }
    }
    p->nnames = n;
    /* Streaming order: layer sections only, one reused layer buffer. */
    uint32_t cur_layer = EXPERT_LAYER_NONE, first_layer = EXPERT_LAYER_NONE;
    uint64_t loff = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = expert_section_in_layer_order(r, k);
        expert_section_info s;
        expert_section(r, i, &s);
        if (s.layer == EXPERT_LAYER_NONE)
            continue;
        if (s.layer != cur_layer) {
            cur_layer = s.layer;
            loff = 0;
        }
        if (first_layer == EXPERT_LAYER_NONE)
            first_layer = s.layer;
        p->stream[p->ns++] = (item){i, loff, s.decoded_length};
        loff += align64(s.decoded_length);
        if (loff > p->layer_buf)
            p->layer_buf = loff;
        p->stream_bytes += s.decoded_length;
        if (s.layer == first_layer) {
            p->nfirst++;
            p->first_bytes += s.decoded_length;
        }
    }
    /* Lookup target: the middle streamed section (a mid-layer tensor). */
    if (p->ns) {
        item it = p->stream[p->ns / 2];
        p->lookup_idx = it.idx;
        p->lookup_name = p->names[it.idx];
        p->lookup_len = p->name_lens[it.idx];
        p->lookup_bytes = it.len;
    } else if (p->nt) {
        p->lookup_idx = p->tensors[0].idx;
        p->lookup_name = p->names[p->lookup_idx];
        p->lookup_len = p->name_lens[p->lookup_idx];
        p->lookup_bytes = p->tensors[0].len;
    }
    expert_header_info h;
    expert_header(r, &h);
    p->structure_bytes = h.header_size + h.metadata_length + (uint64_t)h.section_count * 128u +
                         h.index_length + h.strings_length;
    expert_close(r);
    return 0;
}

/* ========================================================= manifest */

static int load_manifest(const char *path, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (root == NULL) {
        set_err(err, errlen, "manifest %s: %s (line %d)", path, je.text, je.line);
        return -1;
    }
    const char *tmp = json_string_value(json_object_get(root, "tmp_dir"));
    const char *data = json_string_value(json_object_get(root, "data_dir"));
    snprintf(g_tmp_dir, sizeof g_tmp_dir, "%s", tmp ? tmp : "/tmp");
    snprintf(g_data_dir, sizeof g_data_dir, "%s", data ? data : ".");
    json_t *ex = json_object_get(root, "experts");
    size_t n = json_array_size(ex);
    if (n == 0) {
        json_decref(root);
        set_err(err, errlen, "manifest %s lists no experts", path);
        return -1;
    }
    g_experts = calloc(n, sizeof *g_experts);
    g_nexperts = n;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(ex, i);
        xb_expert *e = &g_experts[i];
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *role = json_string_value(json_object_get(o, "role"));
        const char *dtype = json_string_value(json_object_get(o, "dtype"));
        snprintf(e->id, sizeof e->id, "%s", id ? id : "?");
        e->main_role = role && strcmp(role, "main") == 0;
        e->elem = dtype && strcmp(dtype, "f32") == 0 ? 4 : 2;
        json_t *files = json_object_get(o, "files");
        for (int f = 0; f < F_COUNT; f++) {
            const char *p = json_string_value(json_object_get(files, k_fmt_name[f]));
            if (p == NULL) {
                json_decref(root);
                set_err(err, errlen, "manifest: expert %s has no '%s' file", e->id, k_fmt_name[f]);
                return -1;
            }
            snprintf(e->path[f], sizeof e->path[f], "%s", p);
        }
    }
    json_decref(root);
    return 0;
}

/* ===================================================== case matrix */

static xb_case *add_v2(xb_expert *e, int fmt, int op, int cold, int verify, unsigned threads,
                       int nommap)
{
    static const char *const opn[] = {"open", "lookup", "find", "tensors", "all", "stream",
                                      "first_layer", "readall"};
    char opname[64];
    if (op == OP_TENSORS || op == OP_ALL || op == OP_READALL)
        snprintf(opname, sizeof opname, "%s_%s_t%u%s", opn[op], verify ? "verify" : "noverify",
                 threads, nommap ? "_nommap" : "");
    else
        snprintf(opname, sizeof opname, "%s", opn[op]);
    xb_case *c = add_case("v2/%s/%s/%s/%s", e->id, k_fmt_name[fmt], opname, cold ? "cold" : "hot");
    c->kind = K_V2;
    c->op = op;
    c->fmt = fmt;
    c->cold = cold;
    c->verify = verify;
    c->threads = threads;
    c->nommap = nommap;
    c->e = e;
    c->path = e->path[fmt];
    c->pl = &e->plans[fmt];
    switch (op) {
    case OP_OPEN: c->unit = XB_UNIT_US; break;
    case OP_LOOKUP: c->unit = XB_UNIT_US; c->bytes = c->pl->lookup_bytes; c->items = 1; break;
    case OP_FIND: c->unit = XB_UNIT_US; c->items = c->pl->nnames; break;
    case OP_TENSORS: case OP_READALL:
        c->unit = XB_UNIT_MS; c->bytes = c->pl->tensor_bytes; c->items = c->pl->nt; break;
    case OP_ALL: c->unit = XB_UNIT_MS; c->bytes = c->pl->all_bytes; c->items = c->pl->na; break;
    case OP_STREAM: c->unit = XB_UNIT_MS; c->bytes = c->pl->stream_bytes; c->items = c->pl->ns; break;
    case OP_FIRST: c->unit = XB_UNIT_US; c->bytes = c->pl->first_bytes; c->items = c->pl->nfirst; break;
    }
    return c;
}

/* expert_read_sections of every tensor section (the library's worker pool
 * across sections), opened with `threads`; verified, or marked (opened with
 * a verified mark: no hashing), into destinations of kind `dst`. */
static void add_readall(xb_expert *e, int fmt, int cold, int marked, unsigned threads, int dst)
{
    static const char *const dstn[] = {"", "_malloc", "_fresh", "_fresh_thp"};
    xb_case *c = add_v2(e, fmt, OP_READALL, cold, 1, threads, 0);
    snprintf(c->name, sizeof c->name, "v2/%s/%s/readall_%s_t%u%s/%s", e->id, k_fmt_name[fmt],
             marked ? "marked" : "verify", threads, dstn[dst], cold ? "cold" : "hot");
    c->marked = marked;
    c->dst = dst;
}

static void add_base(xb_expert *e, int kind, int fmt, int cold)
{
    xb_case *c;
    if (kind == K_V1_TARGZ)
        c = add_case("v1/%s/targz_extract/load/%s", e->id, cold ? "cold" : "hot");
    else if (kind == K_V1_LIB)
        c = add_case("v1/%s/libexpert/load/%s", e->id, cold ? "cold" : "hot");
    else if (kind == K_ST_MMAP)
        c = add_case("st/%s/mmap/tensors/%s", e->id, cold ? "cold" : "hot");
    else
        c = add_case("floor/%s/%s/read/%s", e->id, k_fmt_name[fmt], cold ? "cold" : "hot");
    c->kind = kind;
    c->fmt = fmt;
    c->cold = cold;
    c->e = e;
    c->unit = XB_UNIT_MS;
    c->path = e->path[kind == K_FLOOR ? fmt : kind == K_ST_MMAP ? F_ST : F_V1];
    c->pl = kind == K_V1_LIB ? &e->plans[F_V1] : NULL;
    c->bytes = kind == K_FLOOR ? xs_file_size(c->path)
               : kind == K_V1_LIB ? e->plans[F_V1].tensor_bytes
                                  : e->st_tensor_bytes;
    if (kind == K_V1_LIB)
        c->items = e->plans[F_V1].nt;
}

static void add_micro(xb_expert *e, int op, int fmt, size_t len, const char *what)
{
    xb_case *c = add_case("micro/%s/%s", e->id, what);
    c->kind = K_MICRO;
    c->op = op;
    c->fmt = fmt;
    c->e = e;
    c->micro_len = len;
    c->path = e->path[fmt];
    c->pl = &e->plans[fmt];
    c->unit = XB_UNIT_US;
    switch (op) {
    case M_SHA: case M_MEMCPY: case M_UNSHUF_LIB: case M_UNSHUF_FAST: c->bytes = len; break;
    case M_ZSTD: c->bytes = c->pl->tensor_bytes; c->unit = XB_UNIT_MS; break;
    case M_LIB_SMALL: case M_ZSTD_SMALL: c->bytes = c->pl->small_len; break;
    case M_JSON: break;
    case M_STRUCT_SHA: c->bytes = c->pl->structure_bytes; break;
    case M_DCTX: c->unit = XB_UNIT_US; c->items = 64; break;
    }
    if (op == M_MEMCPY)
        c->unit = XB_UNIT_MS;
}

static void build_cases(void)
{
    unsigned N = g_threads;
    for (size_t x = 0; x < g_nexperts; x++) {
        xb_expert *e = &g_experts[x];
        if (e->main_role) {
            for (int fmt = F_RAW; fmt <= F_SHUF; fmt++) {
                for (int cold = 0; cold <= 1; cold++) {
                    add_v2(e, fmt, OP_OPEN, cold, 1, 1, 0);
                    add_v2(e, fmt, OP_LOOKUP, cold, 1, 1, 0);
                    add_v2(e, fmt, OP_FIRST, cold, 1, 1, 0);
                    add_v2(e, fmt, OP_TENSORS, cold, 1, 1, 0);
                    add_v2(e, fmt, OP_TENSORS, cold, 0, 1, 0);
                    if (N > 1) {
                        add_v2(e, fmt, OP_TENSORS, cold, 1, N, 0);
                        add_v2(e, fmt, OP_TENSORS, cold, 0, N, 0);
                    }
                    if (fmt != F_ZSTD)
                        add_v2(e, fmt, OP_TENSORS, cold, 1, 1, 1);
                    add_v2(e, fmt, OP_ALL, cold, 1, 1, 0);
                    add_v2(e, fmt, OP_STREAM, cold, 1, 1, 0);
                }
                add_v2(e, fmt, OP_FIND, 0, 1, 1, 0);
                if (fmt == F_ZSTD)
                    continue;
                for (int marked = 0; marked <= 1; marked++) {
                    add_readall(e, fmt, 0, marked, 1, DST_ARENA);
                    if (N > 1)
                        add_readall(e, fmt, 0, marked, N, DST_ARENA);
                    add_readall(e, fmt, 1, marked, N, DST_ARENA);
                }
                add_readall(e, fmt, 0, 0, 1, DST_MALLOC);
                add_readall(e, fmt, 0, 0, 1, DST_FRESH);
                add_readall(e, fmt, 0, 0, 1, DST_THP);
                add_readall(e, fmt, 0, 1, N, DST_FRESH);
                add_readall(e, fmt, 0, 1, N, DST_THP);
            }
            for (int cold = 0; cold <= 1; cold++) {
                add_base(e, K_V1_TARGZ, F_V1, cold);
                add_base(e, K_V1_LIB, F_V1, cold);
                add_base(e, K_ST_MMAP, F_ST, cold);
                for (int fmt = 0; fmt < F_COUNT; fmt++)
                    add_base(e, K_FLOOR, fmt, cold);
            }
            add_micro(e, M_SHA, F_RAW, 1u << 20, "sha256_1MiB");
            add_micro(e, M_SHA, F_RAW, (size_t)e->plans[F_RAW].lookup_bytes, "sha256_section");
            add_micro(e, M_MEMCPY, F_RAW, (size_t)e->plans[F_RAW].tensor_bytes, "memcpy_tensors");
            add_micro(e, M_ZSTD, F_ZSTD, 0, "zstd_decode_tensors_zstd");
            add_micro(e, M_ZSTD, F_SHUF, 0, "zstd_decode_tensors_shuf");
            add_micro(e, M_UNSHUF_LIB, F_SHUF, 1u << 20, "unshuffle_lib_1MiB");
            add_micro(e, M_UNSHUF_FAST, F_SHUF, 1u << 20, "unshuffle_reference_1MiB");
            add_micro(e, M_LIB_SMALL, F_SHUF, 0, "lib_read_smallest_section_noverify");
            add_micro(e, M_ZSTD_SMALL, F_SHUF, 0, "zstd_decode_smallest_section");
            add_micro(e, M_JSON, F_RAW, 0, "jansson_parse_metadata");
            add_micro(e, M_STRUCT_SHA, F_RAW, 0, "sha256_structure");
            add_micro(e, M_DCTX, F_RAW, 0, "zstd_dctx_create_free");
        } else {
            for (int fmt = F_RAW; fmt <= F_SHUF; fmt += F_SHUF - F_RAW) {
                for (int cold = 0; cold <= 1; cold++)
                    add_v2(e, fmt, OP_TENSORS, cold, 1, 1, 0);
                add_v2(e, fmt, OP_OPEN, 0, 1, 1, 0);
                add_v2(e, fmt, OP_FIRST, 0, 1, 1, 0);
            }
            for (int cold = 0; cold <= 1; cold++) {
                add_base(e, K_V1_TARGZ, F_V1, cold);
                add_base(e, K_FLOOR, F_RAW, cold);
                add_base(e, K_FLOOR, F_SHUF, cold);
            }
            add_base(e, K_ST_MMAP, F_ST, 0);
        }
    }
}

/* ======================================================= operations */

static int v2_open(xb_case *c, expert_reader **r, char *err, size_t errlen)
{
    expert_open_options o = {.flags = c->nommap ? EXPERT_OPEN_NO_MMAP : 0,
                             .threads = c->op == OP_READALL ? c->threads : 1,
                             .mark = c->marked ? &c->mark : NULL};
    expert_error e;
    if (expert_open(c->path, &o, r, &e) != EXPERT_OK) {
        set_err(err, errlen, "expert_open %s: %s: %s", c->path, expert_status_name(e.code),
                e.message);
        return -1;
    }
    return 0;
}

typedef struct mt_job {
    expert_reader *r;
    const item *items;
    uint32_t n;
    uint32_t flags;
    uint8_t *dst;
    atomic_uint next;
    atomic_int failed;
    expert_error err;
} mt_job;

static void mt_task(void *arg, unsigned k)
{
    (void)k;
    mt_job *j = arg;
    for (;;) {
        uint32_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->n || atomic_load(&j->failed))
            return;
        const item *it = &j->items[i];
        expert_error e;
        if (expert_read(j->r, it->idx, j->dst + it->off, (size_t)it->len, j->flags, &e) !=
            EXPERT_OK) {
            if (atomic_exchange(&j->failed, 1) == 0)
                j->err = e;
            return;
        }
    }
}

static int read_items(expert_reader *r, const item *items, uint32_t n, uint32_t flags,
                      unsigned threads, char *err, size_t errlen)
{
    mt_job j = {.r = r, .items = items, .n = n, .flags = flags, .dst = g_arena};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    xs_pool_run(threads, mt_task, &j);
    if (atomic_load(&j.failed)) {
        set_err(err, errlen, "expert_read: %s: %s", expert_status_name(j.err.code), j.err.message);
        return -1;
    }
    return 0;
}

static int run_v2(xb_case *c, double *sec, char *err, size_t errlen)
{
    plan *p = c->pl;
    expert_reader *r = NULL;
    expert_error e;
    uint32_t flags = c->verify ? 0 : EXPERT_READ_NO_VERIFY;
    double t0 = xs_now(), t1;
    int rc = 0;
    switch (c->op) {
    case OP_OPEN:
        rc = v2_open(c, &r, err, errlen);
        t1 = xs_now();
        break;
    case OP_LOOKUP: {
        uint32_t idx;
        rc = v2_open(c, &r, err, errlen);
        if (rc == 0 && expert_find(r, p->lookup_name, p->lookup_len, &idx) != EXPERT_OK) {
            set_err(err, errlen, "expert_find: %s not found", p->lookup_name);
            rc = -1;
        }
        if (rc == 0 && expert_read(r, idx, g_arena, (size_t)p->lookup_bytes, 0, &e) != EXPERT_OK) {
            set_err(err, errlen, "expert_read: %s", e.message);
            rc = -1;
        }
        t1 = xs_now();
        break;
    }
    case OP_FIND: {
        uint32_t idx, sum = 0;
        for (uint32_t i = 0; i < p->nnames; i++) {
            if (expert_find(c->r, p->names[i], p->name_lens[i], &idx) != EXPERT_OK) {
                set_err(err, errlen, "expert_find: %s not found", p->names[i]);
                return -1;
            }
            sum += idx;
        }
        t1 = xs_now();
        if (sum == UINT32_MAX)
            fputc(0, stderr); /* keep the loop */
        *sec = t1 - t0;   /* one pass over every name: sections_per_iter lookups */
        return 0;
    }
    case OP_TENSORS:
    case OP_ALL:
        rc = v2_open(c, &r, err, errlen);
        if (rc == 0)
            rc = read_items(r, c->op == OP_ALL ? p->all : p->tensors,
                            c->op == OP_ALL ? p->na : p->nt, flags, c->threads, err, errlen);
        expert_close(r);
        r = NULL;
        t1 = xs_now();
        break;
    case OP_STREAM:
    case OP_FIRST: {
        rc = v2_open(c, &r, err, errlen);
        uint32_t n = c->op == OP_FIRST ? p->nfirst : p->ns;
        for (uint32_t k = 0; rc == 0 && k < n; k++) {
            const item *it = &p->stream[k];
            if (expert_read(r, it->idx, g_arena + it->off, (size_t)it->len, 0, &e) != EXPERT_OK) {
                set_err(err, errlen, "expert_read: %s", e.message);
                rc = -1;
            }
        }
        if (c->op == OP_STREAM) {
            expert_close(r);
            r = NULL;
        }
        t1 = xs_now();
        break;
    }
    case OP_READALL: {
        void *fresh = NULL;
        uint8_t *base = g_arena;
        if (c->dst == DST_MALLOC) {
            base = fresh = malloc((size_t)c->dst_size);
        } else if (c->dst == DST_FRESH || c->dst == DST_THP) {
            fresh = mmap(NULL, (size_t)c->dst_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (fresh == MAP_FAILED)
                fresh = NULL;
            else
                (void)madvise(fresh, (size_t)c->dst_size,
                              c->dst == DST_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
            base = fresh;
        }
        if (base == NULL) {
            set_err(err, errlen, "cannot allocate %llu bytes", (unsigned long long)c->dst_size);
            return -1;
        }
        for (uint32_t k = 0; k < p->nt; k++)
            c->req[k].dst = base + p->tensors[k].off;
        rc = v2_open(c, &r, err, errlen);
        if (rc == 0 && c->marked && !expert_reader_trusted(r)) {
            set_err(err, errlen, "%s: the mark was not accepted", c->path);
            rc = -1;
        }
        if (rc == 0 && expert_read_sections(r, c->req, p->nt, 0, &e) != EXPERT_OK) {
            set_err(err, errlen, "expert_read_sections: %s: %s", expert_status_name(e.code),
                    e.message);
            rc = -1;
        }
        expert_close(r);
        r = NULL;
        t1 = xs_now();
        if (c->dst == DST_MALLOC)
            free(fresh);
        else if (fresh != NULL)
            munmap(fresh, (size_t)c->dst_size);
        break;
    }
    default:
        t1 = t0;
    }
    expert_close(r);
    *sec = t1 - t0;
    return rc;
}

/* A mark for a readall case's file: full validation once, untimed. A file
 * written in the last EXPERT_MARK_SETTLE_SECONDS cannot be marked yet (the
 * dataset may just have been generated): wait for it once. */
static int make_mark(xb_case *c, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        expert_reader *r = NULL;
        expert_error e;
        expert_status s = expert_open(c->path, NULL, &r, &e);
        if (s == EXPERT_OK)
            s = expert_verify_full(r, NULL, &e);
        if (s == EXPERT_OK)
            s = expert_mark_make(r, &c->mark, &e);
        expert_close(r);
        if (s == EXPERT_OK)
            return 0;
        if (attempt == 0 && strstr(e.message, "less than") != NULL) {
            sleep(EXPERT_MARK_SETTLE_SECONDS + 1);
            continue;
        }
        set_err(err, errlen, "marking %s: %s: %s", c->path, expert_status_name(e.code), e.message);
        return -1;
    }
    return -1;
}

static int readall_begin(xb_case *c, char *err, size_t errlen)
{
    const plan *p = c->pl;
    c->req = calloc(p->nt ? p->nt : 1, sizeof *c->req);
    if (c->req == NULL) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    c->dst_size = 0;
    for (uint32_t k = 0; k < p->nt; k++) {
        c->req[k] = (expert_read_request){.section = p->tensors[k].idx,
                                          .capacity = (size_t)p->tensors[k].len};
        if (p->tensors[k].off + p->tensors[k].len > c->dst_size)
            c->dst_size = p->tensors[k].off + p->tensors[k].len;
    }
    return c->marked ? make_mark(c, err, errlen) : 0;
}

/* ---- v1: the old runtime's load (extract to a directory, then parse). */

typedef struct extracted {
    char dir[PATH_MAX];
    char names[64][256];
    int n;
} extracted;

static void extracted_remove(extracted *x)
{
    char p[PATH_MAX + 300];
    for (int i = 0; i < x->n; i++) {
        snprintf(p, sizeof p, "%s/%s", x->dir, x->names[i]);
        unlink(p);
    }
    if (x->dir[0])
        rmdir(x->dir);
    x->n = 0;
    x->dir[0] = 0;
}

static int v1_extract(const char *path, extracted *x, char *err, size_t errlen)
{
    if (strlen(g_tmp_dir) + 11 >= sizeof x->dir) {
        set_err(err, errlen, "temporary directory path too long");
        return -1;
    }
    memcpy(x->dir, g_tmp_dir, strlen(g_tmp_dir));
    memcpy(x->dir + strlen(g_tmp_dir), "/v1-XXXXXX", 11);
    if (mkdtemp(x->dir) == NULL) {
        set_err(err, errlen, "mkdtemp %s: %s", x->dir, strerror(errno));
        x->dir[0] = 0;
        return -1;
    }
    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        set_err(err, errlen, "libarchive: %s", archive_error_string(a));
        archive_read_free(a);
        return -1;
    }
    struct archive_entry *ent;
    int rc = 0, ar;
    while (rc == 0 && (ar = archive_read_next_header(a, &ent)) == ARCHIVE_OK) {
        if (archive_entry_filetype(ent) != AE_IFREG)
            continue;
        const char *name = archive_entry_pathname(ent);
        if (strncmp(name, "./", 2) == 0)
            name += 2;
        if (*name == 0 || strchr(name, '/') != NULL || strcmp(name, "..") == 0 || x->n >= 64) {
            set_err(err, errlen, "v1: unexpected entry '%s'", name);
            rc = -1;
            break;
        }
        snprintf(x->names[x->n], sizeof x->names[x->n], "%s", name);
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", x->dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            set_err(err, errlen, "create %s: %s", p, strerror(errno));
            rc = -1;
            break;
        }
        x->n++;
        const void *buf;
        size_t size;
        la_int64_t off;
        while ((ar = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
            const uint8_t *b = buf;
            while (size) {
                ssize_t w = write(fd, b, size);
                if (w <= 0) {
                    rc = -1;
                    break;
                }
                b += w;
                size -= (size_t)w;
            }
            if (rc)
                break;
        }
        close(fd);
        if (rc == 0 && ar != ARCHIVE_EOF) {
            set_err(err, errlen, "libarchive: %s", archive_error_string(a));
            rc = -1;
        }
    }
    archive_read_free(a);
    return rc;
}

static int read_whole(const char *path, uint8_t *buf, size_t cap, size_t *len, char *err,
                      size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t got = 0;
    for (;;) {
        size_t want = cap - got < (8u << 20) ? cap - got : (8u << 20);
        if (want == 0)
            break;
        ssize_t k = read(fd, buf + got, want);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    /* Must have reached EOF. */
    char probe;
    ssize_t more = read(fd, &probe, 1);
    close(fd);
    if (more != 0) {
        set_err(err, errlen, "%s does not fit the %zu-byte buffer", path, cap);
        return -1;
    }
    *len = got;
    return 0;
}

static int copy_tensors(const uint8_t *data, size_t size, char *err, size_t errlen)
{
    expert_safetensors *st = NULL;
    expert_error e;
    if (expert_safetensors_parse(data, size, &st, &e) != EXPERT_OK) {
        set_err(err, errlen, "safetensors: %s", e.message);
        return -1;
    }
    uint32_t n = expert_safetensors_count(st);
    uint64_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        expert_tensor_info t;
        expert_safetensors_tensor(st, i, &t);
        memcpy(g_arena + off, data + t.data_offset, (size_t)t.data_length);
        off += align64(t.data_length);
    }
    expert_safetensors_free(st);
    return 0;
}

static int run_base(xb_case *c, double *sec, char *err, size_t errlen)
{
    double t0 = xs_now(), t1;
    int rc = 0;
    switch (c->kind) {
    case K_V1_TARGZ: {
        extracted x = {0};
        rc = v1_extract(c->path, &x, err, errlen);
        size_t len = 0;
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, "%s/adapter_model.safetensors", x.dir);
        if (rc == 0)
            rc = read_whole(p, g_stage, g_stage_size, &len, err, errlen);
        if (rc == 0)
            rc = copy_tensors(g_stage, len, err, errlen);
        t1 = xs_now();
        extracted_remove(&x);
        break;
    }
    case K_V1_LIB: {
        expert_reader *r = NULL;
        expert_error e;
        expert_open_options o = {.threads = 1};
        if (expert_open_v1(c->path, &o, NULL, &r, &e) != EXPERT_OK) {
            set_err(err, errlen, "expert_open (v1) %s: %s", expert_status_name(e.code), e.message);
            rc = -1;
        } else {
            rc = read_items(r, c->pl->tensors, c->pl->nt, 0, 1, err, errlen);
        }
        expert_close(r);
        t1 = xs_now();
        break;
    }
    case K_ST_MMAP: {
        int fd = open(c->path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            set_err(err, errlen, "open %s: %s", c->path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        size_t size = (size_t)st.st_size;
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (m == MAP_FAILED) {
            set_err(err, errlen, "mmap %s: %s", c->path, strerror(errno));
            return -1;
        }
        rc = copy_tensors(m, size, err, errlen);
        munmap(m, size);
        t1 = xs_now();
        break;
    }
    case K_FLOOR: {
        size_t len;
        rc = read_whole(c->path, g_arena, g_arena_size, &len, err, errlen);
        t1 = xs_now();
        break;
    }
    default:
        t1 = t0;
    }
    *sec = t1 - t0;
    return rc;
}

/* ---- micro-cases */

static int zstd_decode_all(xb_case *c, ZSTD_DCtx *d, int only_small, char *err, size_t errlen)
{
    plan *p = c->pl;
    for (uint32_t k = 0; k < p->nt; k++) {
        const item *it = &p->tensors[k];
        if (only_small && it->idx != p->small_idx)
            continue;
        expert_section_info s;
        expert_section(c->r, it->idx, &s);
        if (s.codec == EXPERT_CODEC_RAW) {
            memcpy(g_arena + it->off, c->map + s.offset, (size_t)s.decoded_length);
            continue;
        }
        uint64_t nf = s.decoded_length / s.frame_size + (s.decoded_length % s.frame_size != 0);
        const uint8_t *base = c->map + s.offset;
        uint64_t pos = 4 * nf;
        for (uint64_t f = 0; f < nf; f++) {
            uint32_t fs = (uint32_t)base[4 * f] | (uint32_t)base[4 * f + 1] << 8 |
                          (uint32_t)base[4 * f + 2] << 16 | (uint32_t)base[4 * f + 3] << 24;
            uint64_t start = f * s.frame_size;
            size_t want = (size_t)(s.decoded_length - start < s.frame_size
                                       ? s.decoded_length - start
                                       : s.frame_size);
            uint8_t *dst = only_small ? g_stage : g_arena + it->off + start;
            size_t r = ZSTD_decompressDCtx(d, dst, want, base + pos, fs);
            if (ZSTD_isError(r) || r != want) {
                set_err(err, errlen, "zstd: %s", ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short");
                return -1;
            }
            if (only_small && s.codec == EXPERT_CODEC_SHUFFLE_ZSTD)
                unshuffle_fast(g_stage, g_arena + it->off + start, want, c->e->elem);
            pos += fs;
        }
    }
    return 0;
}

static ZSTD_DCtx *g_dctx;

static int run_micro(xb_case *c, double *sec, char *err, size_t errlen)
{
    double t0, t1;
    int rc = 0;
    uint8_t digest[32];
    expert_error e;
    switch (c->op) {
    case M_SHA:
        t0 = xs_now();
        expert_sha256(g_arena, c->micro_len, digest);
        t1 = xs_now();
        break;
    case M_MEMCPY:
        t0 = xs_now();
        memcpy(g_arena, g_stage, c->micro_len);
        t1 = xs_now();
        break;
    case M_ZSTD:
    case M_ZSTD_SMALL:
        t0 = xs_now();
        rc = zstd_decode_all(c, g_dctx, c->op == M_ZSTD_SMALL, err, errlen);
        t1 = xs_now();
        break;
    case M_UNSHUF_LIB:
        t0 = xs_now();
        xp_unshuffle(g_stage, g_arena, c->micro_len, c->e->elem);
        t1 = xs_now();
        break;
    case M_UNSHUF_FAST:
        t0 = xs_now();
        unshuffle_fast(g_stage, g_arena, c->micro_len, c->e->elem);
        t1 = xs_now();
        break;
    case M_LIB_SMALL:
        t0 = xs_now();
        if (expert_read(c->r, c->pl->small_idx, g_arena, (size_t)c->pl->small_len,
                        EXPERT_READ_NO_VERIFY, &e) != EXPERT_OK) {
            set_err(err, errlen, "expert_read: %s", e.message);
            rc = -1;
        }
        t1 = xs_now();
        break;
    case M_JSON: {
        t0 = xs_now();
        json_error_t je;
        json_t *j = json_loadb(c->json, c->json_len, JSON_REJECT_DUPLICATES, &je); /* as metadata.c */
        t1 = xs_now();
        if (j == NULL) {
            set_err(err, errlen, "jansson: %s", je.text);
            rc = -1;
        }
        json_decref(j);
        break;
    }
    case M_STRUCT_SHA:
        t0 = xs_now();
        /* The tail of the file: metadata, TOC, index, strings (+ header-sized slack). */
        expert_sha256(c->map + c->map_len - c->pl->structure_bytes,
                      (size_t)c->pl->structure_bytes, digest);
        t1 = xs_now();
        break;
    case M_DCTX: {
        enum { K = 64 };
        t0 = xs_now();
        for (int k = 0; k < K; k++) {
            ZSTD_DCtx *d = ZSTD_createDCtx();
            ZSTD_freeDCtx(d);
        }
        t1 = xs_now();
        *sec = t1 - t0;   /* items_per_iter = K */
        return 0;
    }
    default:
        t0 = t1 = 0;
    }
    *sec = t1 - t0;
    return rc;
}

/* ============================================================ the API */

static int map_file(xb_case *c, char *err, size_t errlen)
{
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        set_err(err, errlen, "open %s: %s", c->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    c->map_len = (size_t)st.st_size;
    void *m = mmap(NULL, c->map_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        set_err(err, errlen, "mmap %s: %s", c->path, strerror(errno));
        return -1;
    }
    c->map = m;
    return 0;
}

int xb_case_begin(size_t i, char *err, size_t errlen)
{
    xb_case *c = &g_cases[i];
    if (c->path && c->kind != K_MICRO) {
        if (c->cold) {
            xs_evict(c->path);
            c->resident = xs_resident_fraction(c->path);
        } else if (xs_warm(c->path) != 0) {
            set_err(err, errlen, "cannot read %s", c->path);
            return -1;
        }
    }
    if (c->kind == K_V2 && c->op == OP_FIND)
        return v2_open(c, &c->r, err, errlen);
    if (c->kind == K_V2 && c->op == OP_READALL)
        return readall_begin(c, err, errlen);
    if (c->kind == K_MICRO) {
        if (c->op == M_SHA || c->op == M_MEMCPY || c->op == M_UNSHUF_LIB ||
            c->op == M_UNSHUF_FAST || c->op == M_DCTX)
            return 0;
        expert_error e;
        if (expert_open(c->path, NULL, &c->r, &e) != EXPERT_OK) {
            set_err(err, errlen, "expert_open %s: %s", c->path, e.message);
            return -1;
        }
        if (c->op == M_JSON) {
            size_t n;
            const char *j = expert_metadata_json(c->r, &n);
            c->json = malloc(n + 1);
            memcpy(c->json, j, n + 1);
            c->json_len = n;
        }
        if ((c->op == M_ZSTD || c->op == M_ZSTD_SMALL || c->op == M_STRUCT_SHA) &&
            map_file(c, err, errlen) != 0)
            return -1;
        if ((c->op == M_LIB_SMALL || c->op == M_ZSTD_SMALL) && c->pl->small_idx == UINT32_MAX) {
            set_err(err, errlen, "%s has no compressed tensor section", c->path);
            return -1;
        }
    }
    return 0;
}

void xb_case_end(size_t i)
{
    xb_case *c = &g_cases[i];
    expert_close(c->r);
    c->r = NULL;
    if (c->map)
        munmap(c->map, c->map_len);
    c->map = NULL;
    free(c->json);
    c->json = NULL;
    free(c->req);
    c->req = NULL;
}

int xb_case_iter(size_t i, double *sec, char *err, size_t errlen)
{
    xb_case *c = &g_cases[i];
    if (c->cold && c->path && xs_evict(c->path) != 0) {
        set_err(err, errlen, "posix_fadvise(DONTNEED) failed on %s", c->path);
        return -1;
    }
    switch (c->kind) {
    case K_V2: return run_v2(c, sec, err, errlen);
    case K_MICRO: return run_micro(c, sec, err, errlen);
    default: return run_base(c, sec, err, errlen);
    }
}

size_t xb_case_count(void) { return g_ncases; }
const char *xb_case_name(size_t i) { return g_cases[i].name; }
int xb_case_unit(size_t i) { return g_cases[i].unit; }
int xb_case_is_cold(size_t i) { return g_cases[i].cold; }
unsigned xb_case_threads(size_t i) { return g_cases[i].threads; }
uint64_t xb_case_bytes(size_t i) { return g_cases[i].bytes; }
uint32_t xb_case_items(size_t i) { return g_cases[i].items; }
double xb_case_resident_after_evict(size_t i) { return g_cases[i].resident; }
int xb_list_only(void) { return g_list_only; }

/* v1 loads take 0.2-2 s an iteration: a longer minimum time averages at least
 * two iterations per repetition where it is affordable. 0 = the global one. */
double xb_case_min_time(size_t i)
{
    const xb_case *c = &g_cases[i];
    return c->kind == K_V1_TARGZ || c->kind == K_V1_LIB ? g_slow_min_time : 0;
}

/* Cold latency cases (open, lookup, first layer) spend most of each iteration
 * in the untimed eviction: a fixed iteration count keeps the wall time bounded. */
uint64_t xb_case_fixed_iterations(size_t i)
{
    const xb_case *c = &g_cases[i];
    if (c->kind == K_V2 && c->cold && (c->op == OP_OPEN || c->op == OP_LOOKUP || c->op == OP_FIRST))
        return g_cold_latency_iters > 0 ? (uint64_t)g_cold_latency_iters : 0;
    return 0;
}

size_t xb_context_count(void) { return xs_context_count(); }
const char *xb_context_key(size_t i) { return xs_context_key(i); }
const char *xb_context_value(size_t i) { return xs_context_value(i); }

static const char *arg_value(const char *a, const char *name)
{
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && a[n] == '=' ? a + n + 1 : NULL;
}

int xb_init(int *argc, char **argv, char *err, size_t errlen)
{
    const char *manifest = NULL, *pin = "node";
    int node = -1;
    long threads = 0;
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i], *v;
        if ((v = arg_value(a, "--xb-manifest")))
            manifest = v;
        else if ((v = arg_value(a, "--xb-pin")))
            pin = v;
        else if ((v = arg_value(a, "--xb-node")))
            node = atoi(v);
        else if ((v = arg_value(a, "--xb-threads")))
            threads = atol(v);
        else if ((v = arg_value(a, "--xb-slow-min-time")))
            g_slow_min_time = atof(v);
        else if ((v = arg_value(a, "--xb-cold-latency-iters")))
            g_cold_latency_iters = atol(v);
        else if (strcmp(a, "--xb-list") == 0)
            g_list_only = 1;
        else
            argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    if (manifest == NULL) {
        set_err(err, errlen, "--xb-manifest=PATH is required (bench/run writes it)");
        return -1;
    }
    if (strcmp(pin, "node") != 0 && strcmp(pin, "pu") != 0) {
        set_err(err, errlen, "--xb-pin must be node or pu");
        return -1;
    }
    if (xs_topology_init(node, pin, err, errlen) != 0)
        return -1;
    g_threads = threads > 0 ? (unsigned)threads : xs_node_pus();
    if (load_manifest(manifest, err, errlen) != 0)
        return -1;

    /* Plans and buffer sizes. */
    size_t need = 0, stage = 1u << 20;
    for (size_t x = 0; x < g_nexperts; x++) {
        xb_expert *e = &g_experts[x];
        for (int f = 0; f < F_COUNT; f++) {
            uint64_t fsz = xs_file_size(e->path[f]);
            if (fsz == 0) {
                set_err(err, errlen, "missing or empty file %s", e->path[f]);
                return -1;
            }
            if (fsz > need)
                need = (size_t)fsz;
            if (f == F_ST && fsz > stage)
                stage = (size_t)fsz;
            if (f == F_ST)
                continue;
            if (build_plan(e->path[f], &e->plans[f], err, errlen) != 0)
                return -1;
            e->have_plan[f] = 1;
            uint64_t al = 0;
            for (uint32_t k = 0; k < e->plans[f].na; k++)
                al += align64(e->plans[f].all[k].len);
            if (al > need)
                need = (size_t)al;
        }
        /* Safetensors tensor bytes = the v2 tensor bytes (same tensors). */
        e->st_tensor_bytes = e->plans[F_RAW].tensor_bytes;
    }
    if (stage < (1u << 20))
        stage = 1u << 20;
    g_arena_size = need + (1u << 20);
    g_stage_size = stage + (1u << 20);
    if (!g_list_only) {
        g_arena = xs_alloc(g_arena_size);
        g_stage = xs_alloc(g_stage_size);
        if (g_arena == NULL || g_stage == NULL) {
            set_err(err, errlen, "cannot allocate %zu + %zu bytes", g_arena_size, g_stage_size);
            return -1;
        }
        /* Something plausible to hash, copy and unshuffle. */
        for (size_t k = 0; k < g_stage_size; k++)
            g_stage[k] = (uint8_t)(k * 2654435761u >> 13);
        for (size_t k = 0; k < (1u << 20); k++)
            g_arena[k] = (uint8_t)(k * 40503u >> 7);
        if (xs_pool_init(g_threads) != 0) {
            set_err(err, errlen, "cannot start %u worker threads", g_threads);
            return -1;
        }
        g_dctx = ZSTD_createDCtx();
    }
    build_cases();

    xs_context_collect(g_data_dir);
    xs_context_add("threads_N", "%u", g_threads);
    xs_context_add("arena_bytes", "%zu", g_arena_size);
    xs_context_add("tmp_dir_v1_extraction", "%s", g_tmp_dir);
    xs_context_add("unshuffle_lib_symbol", "%s", "xp_unshuffle, linked from libexpert's objects");
    xs_context_add("cold_method", "posix_fadvise(POSIX_FADV_DONTNEED) on the file before every "
                                  "iteration; guest cache checked with mincore; a VM host may "
                                  "still cache the image: cold (fadvise; host cache may remain)");
    return 0;
}

void xb_shutdown(void)
{
    xs_pool_fini();
    if (g_dctx)
        ZSTD_freeDCtx(g_dctx);
    xs_free(g_arena, g_arena_size);
    xs_free(g_stage, g_stage_size);
    for (size_t x = 0; x < g_nexperts; x++)
        for (int f = 0; f < F_COUNT; f++) {
            plan *p = &g_experts[x].plans[f];
            if (!g_experts[x].have_plan[f])
                continue;
            for (uint32_t k = 0; k < p->nnames; k++)
                free(p->names[k]);
            free(p->names);
            free(p->name_lens);
            free(p->tensors);
            free(p->all);
            free(p->stream);
        }
    free(g_experts);
    free(g_cases);
    xs_context_free();
    xs_topology_fini();
}
