/* writer.c — building a .expert v2 file (spec §2 canonical layout).
 *
 * Sections are encoded and written as they arrive, each at the next multiple
 * of the file alignment, so memory stays near one section. The structure
 * (metadata, TOC, index, strings) goes at the tail once everything is known;
 * then the header is filled in, the file hash is computed by reading the file
 * back, the structure hash and optional signature follow, and the file is
 * fsynced and linked into place (outfile.h): until then nothing exists at the
 * target path, and an interrupted write leaves no temporary name on Linux. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"
#include "outfile.h"

typedef struct wsection {
    uint8_t entry[XP_TOC_ENTRY_SIZE]; /* final TOC bytes except name_offset */
    char *name;
    uint16_t name_length;
} wsection;

/* Where the bytes go: a temporary file published by rename, or an image in
 * memory handed to the caller. The encoder above never knows which. */
typedef struct sink_ops {
    expert_status (*append)(expert_writer *w, const uint8_t *p, size_t n, expert_error *err);
    expert_status (*put_header)(expert_writer *w, const uint8_t *header, expert_error *err);
    /* every byte after the header, for the file hash */
    expert_status (*hash_body)(expert_writer *w, xp_sha256_ctx *c, expert_error *err);
    /* structural open of what was written, before anything is handed out */
    expert_status (*self_check)(expert_writer *w, expert_error *err);
    void (*drop)(expert_writer *w);
} sink_ops;

struct expert_writer {
    const sink_ops *sink;
    expert_allocator alloc; /* every allocation of this writer, and the memory image */
    uint64_t pos;
    expert_writer_options opt;
    wsection *sections;
    uint32_t count, capacity;
    uint64_t total_decoded;
    uint8_t *metadata;     /* compressed */
    size_t metadata_length;
    size_t metadata_decoded_length;
    uint32_t module_count;
    int failed;            /* a write failed: what was written is unusable */
    /* file sink */
    char *path;
    xp_outfile out;
    int has_out;           /* out holds a temporary to commit or drop */
    /* memory sink: bytes [0, pos) at mem, which is mem_alloc rounded up to the
     * file alignment, so raw sections are as aligned as in a mapped file (§4.7) */
    uint8_t *mem_alloc;
    uint8_t *mem;
    size_t mem_cap;
};

#define FAIL(code, ...) xp_set_error(err, (code), EXPERT_NO_OFFSET, EXPERT_NO_SECTION, __VA_ARGS__)

static expert_status write_all(expert_writer *w, const void *data, size_t length, expert_error *err)
{
    expert_status s = w->sink->append(w, data, length, err);
    if (s != EXPERT_OK)
        w->failed = 1;
    return s;
}

static expert_status sink_write(void *ctx, const uint8_t *data, size_t length, expert_error *err)
{
    return write_all(ctx, data, length, err);
}

/* ------------------------------------------------------------ file sink */

static expert_status file_append(expert_writer *w, const uint8_t *p, size_t length,
                                 expert_error *err)
{
    while (length > 0) {
        ssize_t k = write(w->out.fd, p, length);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return FAIL(EXPERT_E_IO, "write to the temporary file for %s failed: %s", w->path,
                        k < 0 ? strerror(errno) : "no progress");
        p += k;
        length -= (size_t)k;
        w->pos += (uint64_t)k;
    }
    return EXPERT_OK;
}

static expert_status pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off, expert_error *err)
{
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return FAIL(EXPERT_E_IO, "write failed: %s", k < 0 ? strerror(errno) : "no progress");
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return EXPERT_OK;
}

static expert_status file_put_header(expert_writer *w, const uint8_t *header, expert_error *err)
{
    return pwrite_all(w->out.fd, header, XP_HEADER_SIZE, 0, err);
}

/* The bytes are read back (from the page cache): the file hash needs the
 * finished header, which comes last. */
static expert_status file_hash_body(expert_writer *w, xp_sha256_ctx *c, expert_error *err)
{
    uint8_t *buf = xa_malloc(&w->alloc, 1u << 20);
    if (buf == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    expert_status s = EXPERT_OK;
    uint64_t off = XP_HEADER_SIZE;
    while (s == EXPERT_OK && off < w->pos) {
        size_t want = (size_t)(w->pos - off < (1u << 20) ? w->pos - off : (1u << 20));
        ssize_t k = pread(w->out.fd, buf, want, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            s = FAIL(EXPERT_E_IO, "reading back the temporary file for %s failed", w->path);
            break;
        }
        if (xp_sha256_update(c, buf, (size_t)k) != EXPERT_OK)
            s = FAIL(EXPERT_E_NOMEM, "hashing failed");
        off += (uint64_t)k;
    }
    xa_free(&w->alloc, buf);
    return s;
}

static expert_status file_self_check(expert_writer *w, expert_error *err)
{
    expert_reader *check = NULL;
    char self[64];
    xp_outfile_reopen_path(&w->out, self, sizeof self);
    expert_open_options o = {.allocator = &w->alloc};
    expert_status s = expert_open(self, &o, &check, err); /* mmap: touches only the structure */
    expert_close(check);
    return s;
}

static void file_drop(expert_writer *w)
{
    if (w->has_out)
        xp_outfile_abort(&w->out);
    w->has_out = 0;
}

static const sink_ops k_file_sink = {file_append, file_put_header, file_hash_body,
                                     file_self_check, file_drop};

/* ---------------------------------------------------------- memory sink */

static int mem_reserve(expert_writer *w, size_t cap)
{
    size_t a = w->opt.alignment;
    if (cap > SIZE_MAX - a)
        return -1;
    uint8_t *alloc = xa_malloc(&w->alloc, cap + a);
    if (alloc == NULL)
        return -1;
    uint8_t *aligned = alloc + (a - (uintptr_t)alloc % a) % a;
    if (w->pos > 0)
        memcpy(aligned, w->mem, (size_t)w->pos);
    xa_free(&w->alloc, w->mem_alloc);
    w->mem_alloc = alloc;
    w->mem = aligned;
    w->mem_cap = cap;
    return 0;
}

static expert_status mem_append(expert_writer *w, const uint8_t *p, size_t length,
                                expert_error *err)
{
    if (length > w->mem_cap - (size_t)w->pos) {
        size_t cap = w->mem_cap ? w->mem_cap : 4096;
        while (cap - (size_t)w->pos < length) {
            if (cap > SIZE_MAX / 2)
                return FAIL(EXPERT_E_NOMEM, "in-memory image too large");
            cap *= 2;
        }
        if (mem_reserve(w, cap) != 0)
            return FAIL(EXPERT_E_NOMEM, "out of memory building an in-memory image");
    }
    if (length > 0)
        memcpy(w->mem + w->pos, p, length);
    w->pos += length;
    return EXPERT_OK;
}

static expert_status mem_put_header(expert_writer *w, const uint8_t *header, expert_error *err)
{
    (void)err;
    memcpy(w->mem, header, XP_HEADER_SIZE);
    return EXPERT_OK;
}

static expert_status mem_hash_body(expert_writer *w, xp_sha256_ctx *c, expert_error *err)
{
    if (xp_sha256_update(c, w->mem + XP_HEADER_SIZE, (size_t)w->pos - XP_HEADER_SIZE) != EXPERT_OK)
        return FAIL(EXPERT_E_NOMEM, "hashing failed");
    return EXPERT_OK;
}

static expert_status mem_self_check(expert_writer *w, expert_error *err)
{
    expert_reader *check = NULL;
    expert_open_options o = {.allocator = &w->alloc};
    expert_status s = expert_open_memory(w->mem, (size_t)w->pos, &o, &check, err);
    expert_close(check);
    return s;
}

static void mem_drop(expert_writer *w)
{
    xa_free(&w->alloc, w->mem_alloc);
    w->mem_alloc = NULL;
    w->mem = NULL;
}

static const sink_ops k_memory_sink = {mem_append, mem_put_header, mem_hash_body, mem_self_check,
                                       mem_drop};

static expert_status pad_to(expert_writer *w, uint64_t align, expert_error *err)
{
    static const uint8_t zeros[4096];
    uint64_t target;
    if (xp_align_up(w->pos, align, &target))
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "file offset overflow");
    return write_all(w, zeros, (size_t)(target - w->pos), err);
}

static expert_status resolve_options(const expert_writer_options *opt, expert_writer_options *o,
                                    expert_error *err)
{
    *o = (expert_writer_options){0};
    if (opt != NULL && opt->struct_size != 0 && opt->struct_size != sizeof *opt)
        return FAIL(EXPERT_E_INVALID_ARGUMENT,
                    "expert_writer_options.struct_size is %zu, this library's is %zu",
                    opt->struct_size, sizeof *opt);
    if (opt != NULL)
        *o = *opt;
    if (o->alignment == 0)
        o->alignment = 64;
    if (o->frame_size == 0)
        o->frame_size = XP_DEFAULT_FRAME_SIZE;
    if (o->zstd_level == 0)
        o->zstd_level = 9;
    if (o->alignment != 64 && o->alignment != 256 && o->alignment != 4096)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "alignment %u (must be 64, 256 or 4096)", o->alignment);
    if (!xp_is_pow2(o->frame_size) || o->frame_size < XP_MIN_FRAME_SIZE ||
        o->frame_size > XP_MAX_FRAME_SIZE)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "frame size %u (power of two in 64 KiB..64 MiB)",
                    o->frame_size);
    if (o->zstd_level < ZSTD_minCLevel() || o->zstd_level > ZSTD_maxCLevel())
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "zstd level %d out of range", o->zstd_level);
    return EXPERT_OK;
}

/* A writer with its options and allocator resolved, bytes going to `sink`. */
static expert_status writer_new(const expert_writer_options *opt, const sink_ops *sink,
                                expert_writer **out, expert_error *err)
{
    expert_writer_options o;
    XP_TRY(resolve_options(opt, &o, err));
    expert_allocator a = xa_resolve(o.allocator);
    expert_writer *w = xa_calloc(&a, 1, sizeof *w);
    if (w == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    w->alloc = a;
    w->opt = o;
    w->opt.allocator = NULL; /* the copy in w->alloc is the one used */
    w->sink = sink;
    *out = w;
    return EXPERT_OK;
}

/* A writer on `sink` with a placeholder header (rewritten by finish). */
static expert_status writer_start(expert_writer *w, expert_writer **out, expert_error *err)
{
    uint8_t zeros[XP_HEADER_SIZE] = {0};
    expert_status s = write_all(w, zeros, sizeof zeros, err);
    if (s != EXPERT_OK) {
        expert_writer_abort(w);
        return s;
    }
    *out = w;
    return EXPERT_OK;
}

expert_status expert_writer_open(const char *path, const expert_writer_options *opt,
                                 expert_writer **out, expert_error *err)
{
    if (path == NULL || out == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "path and out are required");
    *out = NULL;
    expert_writer *w = NULL;
    XP_TRY(writer_new(opt, &k_file_sink, &w, err));
    w->path = xa_strndup(&w->alloc, path, strlen(path));
    if (w->path == NULL) {
        expert_writer_abort(w);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    int e = xp_outfile_begin(&w->out, path);
    if (e != 0) {
        expert_status s = FAIL(EXPERT_E_IO, "cannot %s for %s: %s", w->out.step, path, strerror(e));
        expert_writer_abort(w);
        return s;
    }
    w->has_out = 1;
    return writer_start(w, out, err);
}

expert_status expert_writer_open_memory(const expert_writer_options *opt, size_t size_hint,
                                        expert_writer **out, expert_error *err)
{
    if (out == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "out is required");
    *out = NULL;
    expert_writer *w = NULL;
    XP_TRY(writer_new(opt, &k_memory_sink, &w, err));
    if (mem_reserve(w, size_hint > XP_HEADER_SIZE ? size_hint : 4096) != 0) {
        expert_writer_abort(w);
        return FAIL(EXPERT_E_NOMEM, "out of memory (%zu-byte image)", size_hint);
    }
    return writer_start(w, out, err);
}

static expert_status check_desc(const expert_writer *w, const expert_section_desc *d,
                                size_t name_length, size_t length, expert_error *err)
{
    if (w->count >= XP_MAX_SECTIONS)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "more than %u sections", XP_MAX_SECTIONS);
    if (!expert_name_valid(d->name, name_length))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "section name must be 1..%u bytes of UTF-8 without NUL",
                    XP_MAX_NAME);
    if (d->codec > EXPERT_CODEC_SHUFFLE_ZSTD)
        return FAIL(EXPERT_E_UNKNOWN_CODEC, "unknown codec %u", d->codec);
    if (d->dtype >= EXPERT_DTYPE_COUNT)
        return FAIL(EXPERT_E_UNKNOWN_DTYPE, "unknown dtype %u", d->dtype);
    if (d->type < 0x8000 && expert_section_type_name(d->type) == NULL)
        return FAIL(EXPERT_E_UNKNOWN_SECTION_TYPE, "unknown section type 0x%04x", d->type);
    if (d->flags != 0) /* spec §2.2: a 2.0 writer writes zero TOC flags */
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "section flags 0x%08x: 2.0 defines none", d->flags);
    if (d->rank > EXPERT_MAX_RANK)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "rank %u (max %d)", d->rank, EXPERT_MAX_RANK);
    if (d->layer != EXPERT_LAYER_NONE && d->layer > XP_MAX_LAYER)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "layer %u out of range", d->layer);
    uint64_t numel = 1, bytes;
    for (unsigned k = 0; k < d->rank; k++)
        if (xp_mul_overflows(numel, d->dims[k], &numel))
            return FAIL(EXPERT_E_SIZE_MISMATCH, "shape overflows");
    for (unsigned k = d->rank; k < EXPERT_MAX_RANK; k++)
        if (d->dims[k] != 0)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "dims beyond rank must be 0");
    if (xp_mul_overflows(numel, expert_dtype_size(d->dtype), &bytes) || bytes != length)
        return FAIL(EXPERT_E_SIZE_MISMATCH, "%zu bytes given for a shape of %llu bytes", length,
                    (unsigned long long)bytes);
    if (length > XP_MAX_SECTION_DECODED || w->total_decoded + length > XP_MAX_TOTAL_DECODED)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "section or total size over the spec limits");
    if ((d->type == EXPERT_SECTION_FILE || d->type == EXPERT_SECTION_SAFETENSORS_HEADER) &&
        (d->dtype != EXPERT_DTYPE_BYTES || d->rank != 1))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "FILE/SAFETENSORS_HEADER sections are BYTES, rank 1");
    return EXPERT_OK;
}

expert_status expert_writer_add(expert_writer *w, const expert_section_desc *desc,
                                const void *data, size_t length, expert_error *err)
{
    if (w == NULL || desc == NULL || desc->name == NULL || (data == NULL && length != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    if (w->failed)
        return FAIL(EXPERT_E_IO, "an earlier write failed; abort this writer");
    size_t name_length = desc->name_length ? desc->name_length : strlen(desc->name);
    XP_TRY(check_desc(w, desc, name_length, length, err));
    if (w->count == w->capacity) {
        uint32_t cap = w->capacity ? w->capacity * 2 : 64;
        wsection *grown = xa_realloc(&w->alloc, w->sections, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        w->sections = grown;
        w->capacity = cap;
    }
    wsection *s = &w->sections[w->count];
    memset(s, 0, sizeof *s);
    s->name = xa_strndup(&w->alloc, desc->name, name_length);
    if (s->name == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    s->name_length = (uint16_t)name_length;

    uint8_t digest[32];
    expert_status st = expert_sha256(data, length, digest);
    uint64_t encoded_length = 0;
    uint32_t frame_size = desc->codec == EXPERT_CODEC_RAW ? 0 : w->opt.frame_size;
    if (st != EXPERT_OK)
        st = FAIL(EXPERT_E_NOMEM, "hashing failed");
    /* Empty sections occupy no bytes and sit at offset 0 (spec §2.2). */
    if (st == EXPERT_OK && length != 0)
        st = pad_to(w, w->opt.alignment, err);
    uint64_t offset = length != 0 ? w->pos : 0;
    if (st == EXPERT_OK)
        st = xp_encode(&w->alloc, desc->codec, expert_dtype_size(desc->dtype), frame_size, w->opt.zstd_level,
                       w->opt.threads, data, length, sink_write, w, &encoded_length, err);
    if (st != EXPERT_OK) {
        xa_free(&w->alloc, s->name);
        return st;
    }
    uint8_t *e = s->entry;
    xp_put16(e + XP_TOC_NAME_LENGTH, s->name_length);
    xp_put16(e + XP_TOC_TYPE, desc->type);
    e[XP_TOC_CODEC] = desc->codec;
    e[XP_TOC_DTYPE] = desc->dtype;
    e[XP_TOC_RANK] = desc->rank;
    xp_put32(e + XP_TOC_FLAGS, desc->flags);
    xp_put32(e + XP_TOC_LAYER, desc->layer);
    xp_put32(e + XP_TOC_MODULE, desc->module);
    xp_put32(e + XP_TOC_FRAME_SIZE, frame_size);
    xp_put64(e + XP_TOC_OFFSET, offset);
    xp_put64(e + XP_TOC_STORED, encoded_length);
    xp_put64(e + XP_TOC_DECODED, length);
    for (unsigned k = 0; k < EXPERT_MAX_RANK; k++)
        xp_put64(e + XP_TOC_DIMS + 8 * k, k < desc->rank ? desc->dims[k] : 0);
    memcpy(e + XP_TOC_SHA256, digest, 32);
    w->total_decoded += length;
    w->count++;
    return EXPERT_OK;
}

expert_status expert_writer_set_metadata(expert_writer *w, const char *json, size_t length,
                                         expert_error *err)
{
    if (w == NULL || json == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    if (length < 2 || length > XP_MAX_METADATA)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "metadata is %zu bytes (limit %u)", length, XP_MAX_METADATA);
    xp_metadata *m = NULL;
    XP_TRY(xp_metadata_parse(&w->alloc, json, length, EXPERT_DEFAULT_MAX_METADATA_ITEMS, &m, EXPERT_NO_OFFSET, err));
    uint32_t modules = xp_metadata_module_count(m);
    xp_metadata_free(m);
    size_t cap = ZSTD_compressBound(length);
    uint8_t *buf = xa_malloc(&w->alloc, cap);
    if (buf == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    /* ZSTD_compress writes the content size into the frame header, which the
     * spec requires for metadata. */
    size_t n = ZSTD_compress(buf, cap, json, length, 19);
    if (ZSTD_isError(n)) {
        xa_free(&w->alloc, buf);
        return FAIL(EXPERT_E_NOMEM, "metadata compression failed: %s", ZSTD_getErrorName(n));
    }
    xa_free(&w->alloc, w->metadata);
    w->metadata = buf;
    w->metadata_length = n;
    w->metadata_decoded_length = length;
    w->module_count = modules;
    return EXPERT_OK;
}

/* The file hash: the header with its hash fields zeroed, then the body. */
static expert_status hash_file(expert_writer *w, const uint8_t *header, uint8_t out[32],
                               expert_error *err)
{
    xp_sha256_ctx *c = NULL;
    if (xp_sha256_new(&c) != EXPERT_OK)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    expert_status s = xp_hash_header(c, header, XP_HEADER_SIZE, 1);
    if (s == EXPERT_OK) {
        s = w->sink->hash_body(w, c, err); /* fills err itself */
        if (s == EXPERT_OK && xp_sha256_final(c, out) != EXPERT_OK)
            s = FAIL(EXPERT_E_NOMEM, "hashing failed");
    } else {
        s = FAIL(s, "hashing failed");
    }
    xp_sha256_free(c);
    return s;
}

static expert_status commit(xp_outfile *o, const char *path, expert_error *err)
{
    int e = xp_outfile_commit(o, 1);
    if (e != 0)
        return FAIL(EXPERT_E_IO, "cannot %s (%s): %s", o->step, path, strerror(e));
    return EXPERT_OK;
}

static expert_status write_structure(expert_writer *w, uint8_t *header, const expert_private_key *key,
                                     expert_error *err)
{
    uint32_t n = w->count;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t module = xp_le32(w->sections[i].entry + XP_TOC_MODULE);
        if (module != EXPERT_MODULE_NONE && module >= w->module_count)
            return xp_set_error(err, EXPERT_E_BAD_TOC, EXPERT_NO_OFFSET, i,
                                "section %u refers to module %u; metadata has %u", i, module,
                                w->module_count);
    }
    /* Strings region and name offsets. */
    uint64_t strings_length = 0;
    for (uint32_t i = 0; i < n; i++) {
        xp_put32(w->sections[i].entry + XP_TOC_NAME_OFFSET, (uint32_t)strings_length);
        strings_length += w->sections[i].name_length;
    }
    if (strings_length > XP_MAX_STRINGS)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "names take %llu bytes (limit %u)",
                    (unsigned long long)strings_length, XP_MAX_STRINGS);
    uint32_t slot_count = xp_index_slot_count(n);
    size_t index_length = 8 + 4 * (size_t)slot_count;
    size_t toc_length = (size_t)n * XP_TOC_ENTRY_SIZE;
    uint8_t *toc = xa_malloc(&w->alloc, toc_length ? toc_length : 1);
    uint8_t *index = xa_calloc(&w->alloc, 1, index_length);
    uint8_t *strings = xa_malloc(&w->alloc, strings_length ? (size_t)strings_length : 1);
    uint32_t *slots = xa_calloc(&w->alloc, slot_count, sizeof *slots);
    uint32_t *scratch = xa_calloc(&w->alloc, slot_count, sizeof *scratch);
    xp_name *names = xa_calloc(&w->alloc, n ? n : 1, sizeof *names);
    uint32_t *order = xa_calloc(&w->alloc, n ? n : 1, sizeof *order);
    expert_status s = EXPERT_OK;
    if (!toc || !index || !strings || !slots || !scratch || !names || !order) {
        s = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto done;
    }
    size_t sp = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = w->sections[i].name;
        uint16_t len = w->sections[i].name_length;
        memcpy(toc + (size_t)i * XP_TOC_ENTRY_SIZE, w->sections[i].entry, XP_TOC_ENTRY_SIZE);
        memcpy(strings + sp, name, len);
        names[i] = (xp_name){name, xp_fnv1a64(name, len), len};
        sp += len;
    }
    /* Duplicate names would make lookups ambiguous: refuse them here. */
    uint32_t dup, first;
    if (xp_names_sort(names, n, order, &dup, &first)) {
        s = xp_set_error(err, EXPERT_E_DUPLICATE_NAME, EXPERT_NO_OFFSET, dup,
                         "section name '%s' given twice", w->sections[dup].name);
        goto done;
    }
    xp_index_build(slots, slot_count, names, n, scratch);
    xp_put32(index, slot_count);
    for (uint32_t k = 0; k < slot_count; k++)
        xp_put32(index + 8 + 4 * (size_t)k, slots[k]);

    uint64_t meta_off, toc_off, index_off, strings_off;
    if ((s = pad_to(w, 8, err)) != EXPERT_OK)
        goto done;
    meta_off = w->pos;
    if ((s = write_all(w, w->metadata, w->metadata_length, err)) != EXPERT_OK ||
        (s = pad_to(w, 8, err)) != EXPERT_OK)
        goto done;
    toc_off = w->pos;
    if ((s = write_all(w, toc, toc_length, err)) != EXPERT_OK || (s = pad_to(w, 8, err)) != EXPERT_OK)
        goto done;
    index_off = w->pos;
    if ((s = write_all(w, index, index_length, err)) != EXPERT_OK)
        goto done;
    strings_off = w->pos;
    if ((s = write_all(w, strings, (size_t)strings_length, err)) != EXPERT_OK)
        goto done;

    memcpy(header + XP_OFF_MAGIC, XP_MAGIC, 8);
    xp_put16(header + XP_OFF_MAJOR, EXPERT_FORMAT_MAJOR);
    xp_put16(header + XP_OFF_MINOR, EXPERT_FORMAT_MINOR);
    xp_put32(header + XP_OFF_HEADER_SIZE, XP_HEADER_SIZE);
    xp_put32(header + XP_OFF_TOC_COUNT, n);
    xp_put32(header + XP_OFF_ALIGNMENT, w->opt.alignment);
    xp_put32(header + XP_OFF_FLAGS, 0);
    xp_put32(header + XP_OFF_TOC_ENTRY_SIZE, XP_TOC_ENTRY_SIZE);
    xp_put64(header + XP_OFF_METADATA_OFFSET, meta_off);
    xp_put64(header + XP_OFF_METADATA_LENGTH, w->metadata_length);
    xp_put64(header + XP_OFF_METADATA_DECODED, w->metadata_decoded_length);
    xp_put64(header + XP_OFF_TOC_OFFSET, toc_off);
    xp_put64(header + XP_OFF_INDEX_OFFSET, index_off);
    xp_put64(header + XP_OFF_INDEX_LENGTH, index_length);
    xp_put64(header + XP_OFF_STRINGS_OFFSET, strings_off);
    xp_put64(header + XP_OFF_STRINGS_LENGTH, strings_length);
    xp_put64(header + XP_OFF_FILE_LENGTH, w->pos);
    if ((s = w->sink->put_header(w, header, err)) != EXPERT_OK)
        goto done;

    /* 1. file hash, 2. structure hash (covers the file hash), 3. signature. */
    uint8_t digest[32];
    if ((s = hash_file(w, header, digest, err)) != EXPERT_OK)
        goto done;
    memcpy(header + XP_OFF_FILE_SHA256, digest, 32);
    xp_sha256_ctx *c = NULL;
    if (xp_sha256_new(&c) != EXPERT_OK) {
        s = FAIL(EXPERT_E_NOMEM, "out of memory");
        goto done;
    }
    s = xp_hash_header(c, header, XP_HEADER_SIZE, 0);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, w->metadata, w->metadata_length);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, toc, toc_length);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, index, index_length);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, strings, (size_t)strings_length);
    if (s == EXPERT_OK)
        s = xp_sha256_final(c, header + XP_OFF_STRUCTURE_SHA256);
    xp_sha256_free(c);
    if (s != EXPERT_OK) {
        s = FAIL(s, "hashing failed");
        goto done;
    }
    if (key != NULL) {
        uint8_t msg[XP_SIGN_DOMAIN_LEN + 32];
        memcpy(msg, XP_SIGN_DOMAIN, XP_SIGN_DOMAIN_LEN);
        memcpy(msg + XP_SIGN_DOMAIN_LEN, header + XP_OFF_STRUCTURE_SHA256, 32);
        if ((s = xp_ed25519_sign(key, msg, sizeof msg, header + XP_OFF_SIGNATURE, err)) != EXPERT_OK)
            goto done;
    }
    s = w->sink->put_header(w, header, err);
done:
    xa_free(&w->alloc, toc);
    xa_free(&w->alloc, index);
    xa_free(&w->alloc, strings);
    xa_free(&w->alloc, slots);
    xa_free(&w->alloc, names);
    xa_free(&w->alloc, order);
    xa_free(&w->alloc, scratch);
    return s;
}

/* Everything finish does before the bytes are handed out, for both sinks.
 * The writer never hands out a file its own reader would reject: the
 * structural check catches module/metadata inconsistencies of the caller. */
static expert_status finish_common(expert_writer *w, const expert_private_key *key,
                                   expert_error *err)
{
    if (w->failed)
        return FAIL(EXPERT_E_IO, "an earlier write failed; nothing was published");
    if (w->metadata == NULL)
        return FAIL(EXPERT_E_BAD_METADATA, "metadata was not set");
    uint8_t header[XP_HEADER_SIZE] = {0};
    XP_TRY(write_structure(w, header, key, err));
    return w->sink->self_check(w, err);
}

expert_status expert_writer_finish(expert_writer *w, const expert_private_key *key,
                                   expert_error *err)
{
    if (w == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    if (w->sink != &k_file_sink) {
        expert_writer_abort(w);
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "a memory writer ends with expert_writer_finish_memory");
    }
    expert_status s = finish_common(w, key, err);
    if (s == EXPERT_OK) {
        w->has_out = 0; /* commit releases it, whatever happens */
        s = commit(&w->out, w->path, err);
    }
    expert_writer_abort(w);
    return s;
}

expert_status expert_writer_finish_memory(expert_writer *w, const expert_private_key *key,
                                          expert_image *out, expert_error *err)
{
    if (w == NULL || out == NULL || w->sink != &k_memory_sink) {
        expert_writer_abort(w);
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "expert_writer_finish_memory needs a memory writer "
                                               "and an image to fill");
    }
    *out = (expert_image){0};
    expert_status s = finish_common(w, key, err);
    if (s == EXPERT_OK) {
        *out = (expert_image){w->mem, (size_t)w->pos, w->mem_alloc, w->alloc};
        w->mem_alloc = NULL;
        w->mem = NULL;
    }
    expert_writer_abort(w);
    return s;
}

void expert_image_free(expert_image *image)
{
    if (image == NULL)
        return;
    xa_free(&image->allocator, image->allocation);
    *image = (expert_image){0};
}

void expert_writer_abort(expert_writer *w)
{
    if (w == NULL)
        return;
    if (w->sink != NULL)
        w->sink->drop(w);
    for (uint32_t i = 0; i < w->count; i++)
        xa_free(&w->alloc, w->sections[i].name);
    xa_free(&w->alloc, w->sections);
    xa_free(&w->alloc, w->metadata);
    xa_free(&w->alloc, w->path);
    expert_allocator a = w->alloc; /* w's own memory goes last */
    xa_free(&a, w);
}

/* ------------------------------------------------------------- signing */

/* Signs the file a symbolic link points to (the link stays), after full
 * validation: a signature must never vouch for content that cannot verify. */
expert_status expert_sign_file(const char *path, const expert_private_key *key, expert_error *err)
{
    if (path == NULL || key == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "path and key are required");
    char *target = realpath(path, NULL);
    if (target == NULL)
        return FAIL(EXPERT_E_IO, "cannot resolve %s: %s", path, strerror(errno));
    expert_reader *r = NULL;
    expert_open_options o = {.flags = EXPERT_OPEN_NO_MMAP, .threads = 1,
                             .max_decoded_bytes = XP_MAX_TOTAL_DECODED};
    expert_status s = expert_open(target, &o, &r, err); /* v2 only: a v1 tar.gz is BAD_MAGIC */
    if (s == EXPERT_OK)
        s = expert_verify_full(r, NULL, err);
    uint8_t sig[64];
    if (s == EXPERT_OK) {
        expert_header_info h;
        expert_header(r, &h);
        uint8_t msg[XP_SIGN_DOMAIN_LEN + 32];
        memcpy(msg, XP_SIGN_DOMAIN, XP_SIGN_DOMAIN_LEN);
        memcpy(msg + XP_SIGN_DOMAIN_LEN, h.structure_sha256, 32);
        s = xp_ed25519_sign(key, msg, sizeof msg, sig, err);
    }
    /* The signed copy replaces the file: a crash leaves the old file or the
     * signed one, never a mix, and keeps the file's mode and owner. */
    xp_outfile out;
    int e = s == EXPERT_OK ? xp_outfile_begin(&out, target) : 0;
    if (e != 0)
        s = FAIL(EXPERT_E_IO, "cannot %s for %s: %s", out.step, target, strerror(e));
    if (s == EXPERT_OK && e == 0) {
        size_t len = 0;
        const uint8_t *data = expert_reader_bytes(r, &len);
        s = pwrite_all(out.fd, data, len, 0, err);
        if (s == EXPERT_OK)
            s = pwrite_all(out.fd, sig, 64, XP_OFF_SIGNATURE, err);
        if (s == EXPERT_OK)
            s = commit(&out, target, err);
        else
            xp_outfile_abort(&out);
    }
    expert_close(r);
    free(target); /* realpath allocates with malloc */
    return s;
}
