/* write.c — writing v1 tar.gz packages the way the old packer did (GNU
 * tar headers, gzip), from entries or from any reader's package files
 * (rollback of a v2 file to v1). Files are replaced atomically by
 * outfile.h, as every output of the project is. */
#define ZLIB_CONST
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "outfile.h"
#include "v1.h"

/* ====================================================== writing v1 */

typedef struct gz_sink {
    int fd;                /* -1: memory */
    uint8_t *mem;
    size_t len, cap;
    z_stream zs;
    int z_ready;
    uint8_t *outbuf;
    expert_status st;
    expert_error e;
} gz_sink;

#define SINK_CHUNK (256u << 10)

static int sink_emit(gz_sink *k, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    if (k->fd < 0) {
        if (n > k->cap - k->len) {
            size_t cap = k->cap ? k->cap : 65536;
            while (cap - k->len < n) {
                if (cap > SIZE_MAX / 2)
                    return -1;
                cap *= 2;
            }
            uint8_t *g = expert_realloc(k->mem, cap);
            if (g == NULL) {
                expert_error_set(&k->e, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                             "out of memory");
                k->st = EXPERT_E_NOMEM;
                return -1;
            }
            k->mem = g;
            k->cap = cap;
        }
        memcpy(k->mem + k->len, p, n);
        k->len += n;
        return 0;
    }
    while (n > 0) {
        ssize_t w = write(k->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            k->st = EXPERT_E_IO;
            expert_error_set(&k->e, EXPERT_E_IO, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "write failed: %s",
                         w < 0 ? strerror(errno) : "no progress");
            return -1;
        }
        p += w;
        n -= (size_t)w;
        k->len += (size_t)w;
    }
    return 0;
}

static int sink_deflate(gz_sink *k, const void *data, size_t n, int flush)
{
    const uint8_t *p = data;
    do {
        size_t step = n > UINT32_MAX ? UINT32_MAX : n;
        k->zs.next_in = p;
        k->zs.avail_in = (uInt)step;
        int last = flush && step == n;
        do {
            k->zs.next_out = k->outbuf;
            k->zs.avail_out = SINK_CHUNK;
            int zr = deflate(&k->zs, last ? Z_FINISH : Z_NO_FLUSH);
            if (zr == Z_STREAM_ERROR) {
                k->st = EXPERT_E_NOMEM;
                expert_error_set(&k->e, EXPERT_E_NOMEM, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                             "deflate failed");
                return -1;
            }
            if (sink_emit(k, k->outbuf, SINK_CHUNK - k->zs.avail_out) != 0)
                return -1;
        } while (k->zs.avail_out == 0);
        if (step > 0) /* p may be NULL for the final flush */
            p += step;
        n -= step;
    } while (n > 0);
    return 0;
}

static la_ssize_t tar_write_cb(struct archive *a, void *ud, const void *buf, size_t n)
{
    gz_sink *k = ud;
    if (sink_deflate(k, buf, n, 0) != 0) {
        archive_set_error(a, EIO, "%s", k->e.message);
        return -1;
    }
    return (la_ssize_t)n;
}

static expert_status write_tar_gz(gz_sink *k, const expert_v1_entry *entries, size_t count,
                                  const expert_v1_write_options *opt, expert_error *err)
{
    int level = opt != NULL && opt->gzip_level != 0 ? opt->gzip_level : 6;
    if (level < 1 || level > 9)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "gzip level %d (must be 1..9)", level);
    for (size_t i = 0; i < count; i++) {
        const char *why = NULL;
        if (entries[i].name == NULL || (entries[i].data == NULL && entries[i].size != 0))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "entry %zu has no name or data", i);
        char *norm = v1_normalize_name(entries[i].name, 0, &why);
        int same = norm != NULL && strcmp(norm, entries[i].name) == 0;
        expert_free(norm);
        if (!same)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "unsafe entry name '%s'%s%s", entries[i].name,
                        why ? ": " : "", why ? why : "");
        for (size_t j = 0; j < i; j++)
            if (strcmp(entries[j].name, entries[i].name) == 0)
                return FAIL(EXPERT_E_INVALID_ARGUMENT, "entry name '%s' given twice", entries[i].name);
    }
    k->outbuf = expert_malloc(SINK_CHUNK);
    if (k->outbuf == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    /* gzip wrapper (windowBits 15+16), memLevel 8, default strategy: zlib's
     * defaults, as flate2 uses them. */
    if (deflateInit2(&k->zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return FAIL(EXPERT_E_NOMEM, "deflateInit2 failed");
    k->z_ready = 1;
    struct archive *a = archive_write_new();
    if (a == NULL)
        return FAIL(EXPERT_E_NOMEM, "archive_write_new failed");
    expert_status s = EXPERT_OK;
    /* GNU headers; no 10 KiB record padding (the tar crate writes none):
     * entries, then two zero blocks. */
    if (archive_write_set_format_gnutar(a) != ARCHIVE_OK || archive_write_set_bytes_per_block(a, 0) != ARCHIVE_OK ||
        archive_write_open(a, k, NULL, tar_write_cb, NULL) != ARCHIVE_OK) {
        s = FAIL(EXPERT_E_IO, "cannot start the tar stream: %s", archive_error_string(a));
        goto done;
    }
    int64_t def_mtime = opt != NULL ? opt->mtime : 0;
    for (size_t i = 0; i < count && s == EXPERT_OK; i++) {
        struct archive_entry *e = archive_entry_new();
        if (e == NULL) {
            s = FAIL(EXPERT_E_NOMEM, "out of memory");
            break;
        }
        archive_entry_set_pathname(e, entries[i].name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, (__LA_MODE_T)(entries[i].mode ? entries[i].mode & 07777 : 0644));
        archive_entry_set_size(e, (la_int64_t)entries[i].size);
        archive_entry_set_mtime(e, (time_t)(entries[i].mtime ? entries[i].mtime : def_mtime), 0);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        if (archive_write_header(a, e) != ARCHIVE_OK) {
            s = k->st != EXPERT_OK ? k->st
                                   : FAIL(EXPERT_E_IO, "tar header for '%s': %s", entries[i].name,
                                          archive_error_string(a));
        } else {
            const uint8_t *p = entries[i].data;
            size_t left = entries[i].size;
            while (left > 0 && s == EXPERT_OK) {
                size_t step = left > (1u << 24) ? (1u << 24) : left;
                la_ssize_t w = archive_write_data(a, p, step);
                if (w <= 0)
                    s = k->st != EXPERT_OK ? k->st
                                           : FAIL(EXPERT_E_IO, "tar data for '%s': %s",
                                                  entries[i].name, archive_error_string(a));
                else {
                    p += w;
                    left -= (size_t)w;
                }
            }
        }
        archive_entry_free(e);
    }
    if (s == EXPERT_OK && archive_write_close(a) != ARCHIVE_OK)
        s = k->st != EXPERT_OK ? k->st : FAIL(EXPERT_E_IO, "closing the tar stream: %s", archive_error_string(a));
    if (s == EXPERT_OK && sink_deflate(k, NULL, 0, 1) != 0)
        s = k->st;
    if (s != EXPERT_OK && k->st == s && err != NULL)
        *err = k->e;
done:
    archive_write_free(a);
    return s;
}

static void sink_free(gz_sink *k)
{
    if (k->z_ready)
        deflateEnd(&k->zs);
    expert_free(k->outbuf);
}

expert_status expert_v1_write_memory(const expert_v1_entry *entries, size_t count,
                                     const expert_v1_write_options *opt, void **data,
                                     size_t *size, expert_error *err)
{
    if ((entries == NULL && count != 0) || data == NULL || size == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    gz_sink k;
    memset(&k, 0, sizeof k);
    k.fd = -1;
    expert_status s = write_tar_gz(&k, entries, count, opt, err);
    sink_free(&k);
    if (s != EXPERT_OK) {
        expert_free(k.mem);
        return s;
    }
    *data = k.mem;
    *size = k.len;
    return EXPERT_OK;
}

expert_status expert_v1_write(const char *path, const expert_v1_entry *entries, size_t count,
                              const expert_v1_write_options *opt, expert_error *err)
{
    if (path == NULL || (entries == NULL && count != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    xp_outfile o;
    int e = xp_outfile_begin(&o, path);
    if (e != 0)
        return FAIL(EXPERT_E_IO, "cannot %s for %s: %s", o.step, path, strerror(e));
    gz_sink k;
    memset(&k, 0, sizeof k);
    k.fd = o.fd;
    expert_status s = write_tar_gz(&k, entries, count, opt, err);
    sink_free(&k);
    if (s != EXPERT_OK) {
        xp_outfile_abort(&o);
        return s;
    }
    e = xp_outfile_commit(&o, 1);
    return e == 0 ? EXPERT_OK : FAIL(EXPERT_E_IO, "cannot %s (%s): %s", o.step, path, strerror(e));
}

/* ============================================================ export */

/* The old packer's order: manifest, the fixed file list, soft prompts and
 * others, grammar, tests/, LICENSE, then signature.sig (added by sign). */
static unsigned packer_rank(const char *name)
{
    static const char *const fixed[] = {MANIFEST_NAME,          ST_NAME,
                                        ADAPTER_CONFIG_NAME,    "special_tokens_map.json",
                                        "tokenizer_config.json", "tokenizer.json",
                                        "training_args.bin",     "vocab.json",
                                        "README.md"};
    for (unsigned i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(name, fixed[i]) == 0)
            return i;
    if (strcmp(name, "grammar.gbnf") == 0)
        return 20;
    if (strncmp(name, "tests/", 6) == 0)
        return 21;
    if (strcmp(name, "LICENSE") == 0)
        return 22;
    if (strcmp(name, SIGNATURE_NAME) == 0)
        return 23;
    return 10;
}

static int pfile_order_cmp(const void *a, const void *b)
{
    const v1_pfile *x = a, *y = b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return strcmp(x->name, y->name);
}

static expert_status export_prepare(expert_reader *r, v1_pfiles *pf, expert_v1_entry **out,
                                    expert_error *err)
{
    V1_TRY(v1_collect_files(r, 1, pf, err));
    /* Original archive order and modes, when the image came from v1. */
    size_t mlen = 0;
    const char *mj = expert_metadata_json(r, &mlen);
    json_t *meta = mj ? json_loadb(mj, mlen, 0, NULL) : NULL;
    const json_t *ents = json_object_get(json_object_get(json_object_get(meta, "extra"), "v1_source"),
                                         "entries");
    for (uint32_t i = 0; i < pf->count; i++) {
        v1_pfile *f = &pf->f[i];
        f->order = 1000u + packer_rank(f->name);
        for (size_t k = 0; json_is_array(ents) && k < json_array_size(ents); k++) {
            const json_t *e = json_array_get(ents, k);
            const char *nm = v1_jstr(e, "name");
            if (nm == NULL || strcmp(nm, f->name) != 0)
                continue;
            const json_t *mode = json_object_get(e, "mode"), *mt = json_object_get(e, "mtime");
            f->order = (unsigned)k;
            if (json_is_integer(mode) && json_integer_value(mode) > 0 && json_integer_value(mode) <= 07777)
                f->mode = (uint32_t)json_integer_value(mode);
            if (json_is_integer(mt))
                f->mtime = (int64_t)json_integer_value(mt);
            break;
        }
    }
    json_decref(meta);
    qsort(pf->f, pf->count, sizeof *pf->f, pfile_order_cmp);
    expert_v1_entry *e = v1_calloc(pf->count ? pf->count : 1, sizeof *e);
    if (e == NULL) {
        v1_pfiles_free(pf);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < pf->count; i++) {
        e[i].name = pf->f[i].name;
        e[i].data = pf->f[i].data;
        e[i].size = pf->f[i].size;
        e[i].mode = pf->f[i].mode;
        e[i].mtime = pf->f[i].mtime;
    }
    *out = e;
    return EXPERT_OK;
}

expert_status expert_export_v1(expert_reader *r, const char *path,
                               const expert_v1_write_options *opt, expert_error *err)
{
    if (r == NULL || path == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    v1_pfiles pf;
    expert_v1_entry *e = NULL;
    memset(&pf, 0, sizeof pf);
    V1_TRY(export_prepare(r, &pf, &e, err));
    expert_status s = expert_v1_write(path, e, pf.count, opt, err);
    expert_free(e);
    v1_pfiles_free(&pf);
    return s;
}

expert_status expert_export_v1_memory(expert_reader *r, const expert_v1_write_options *opt,
                                      void **data, size_t *size, expert_error *err)
{
    if (r == NULL || data == NULL || size == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    v1_pfiles pf;
    expert_v1_entry *e = NULL;
    memset(&pf, 0, sizeof pf);
    V1_TRY(export_prepare(r, &pf, &e, err));
    expert_status s = expert_v1_write_memory(e, pf.count, opt, data, size, err);
    expert_free(e);
    v1_pfiles_free(&pf);
    return s;
}
