/* read.c — v1 .expert packages (hivellm tar.gz): reading them as a stream
 * into an in-memory v2 image (sign.c: the v1 signature scheme; write.c:
 * writing v1 tar.gz packages for rollback and fixtures). The v1 layer is
 * built on libexpert's public API only: the image comes from a memory
 * writer and is opened with expert_open_memory_owned, whose owner (the
 * v1_source below) carries what is known of the archive.
 *
 * Reading pipeline (nothing touches the disk except reading the input):
 *
 *   file/memory --(SHA-256 for the sidecar)--> zlib inflate (gzip members,
 *   CRC-32 and length checked, trailing data refused, decompressed bytes
 *   bounded) --> libarchive tar reader (regular files only) --> entries in
 *   memory --> safetensors parse + PEFT roles --> in-memory v2 writer (raw
 *   codec; same sections and metadata as `expert-cli pack`) --> reader.
 *
 * gzip is inflated here with zlib rather than by libarchive's gzip filter,
 * which does not check the CRC-32/ISIZE trailer and ignores trailing bytes:
 * a lossless migration must not freeze a corrupted weight into a v2 file. */
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

#include <openssl/evp.h>

#include "v1.h"


#define CREATED_BY "libexpert 2.0.0 (v1 import)"
#define IN_CHUNK (1u << 20)
#define TAR_CHUNK (256u << 10)
#define SIDECAR_MAX 4096u

static const char k_notice[] =
    "v1 .expert package (tar.gz): this format is deprecated and read through a compatibility "
    "layer; convert it with `expert-cli convert IN OUT` (lossless, reversible with --to v1)";

/* ============================================================ utilities */

void *v1_calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    void *p = expert_malloc(count * size);
    if (p != NULL)
        memset(p, 0, count * size);
    return p;
}

char *v1_strndup(const char *s, size_t n)
{
    char *p = n < SIZE_MAX ? expert_malloc(n + 1) : NULL;
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int is_gzip(const void *p, size_t n)
{
    const unsigned char *b = p;
    return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

/* What a reader opened from a v1 package owns (its expert_reader_owner):
 * the v2 image built from the archive, and what is known of the archive. */
typedef struct v1_entry_meta {
    char *name;
    uint64_t size;
    uint32_t mode;
    int64_t mtime;
} v1_entry_meta;

typedef struct v1_source {
    expert_v1_info pub;
    v1_entry_meta *entries; /* archive order */
    expert_image image;
} v1_source;

static void v1_source_free(void *owner)
{
    v1_source *v = owner;
    if (v == NULL)
        return;
    for (uint32_t i = 0; i < v->pub.entry_count; i++)
        expert_free(v->entries[i].name);
    expert_free(v->entries);
    expert_image_free(&v->image);
    expert_free(v);
}

static const v1_source *source_of(const expert_reader *r)
{
    return expert_reader_owner(r, v1_source_free);
}

void v1_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Exactly 2n hex digits -> n bytes. */
int v1_hex_decode(const char *s, size_t len, uint8_t *out, size_t n)
{
    if (len != 2 * n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (uint8_t)(hi * 16 + lo);
    }
    return 1;
}

/* Checks and normalises an archive entry name: leading "./" dropped, and
 * for directories trailing '/'. Refuses what could escape or alias a target
 * directory. Returns NULL (with *why) or a fresh string ("" for the root). */
char *v1_normalize_name(const char *raw, int is_dir, const char **why)
{
    if (raw == NULL || raw[0] == '\0') {
        *why = "empty name";
        return NULL;
    }
    if (raw[0] == '/') {
        *why = "absolute path";
        return NULL;
    }
    const char *p = raw;
    while (p[0] == '.' && p[1] == '/') { /* "./x", ".//x" -> "x" */
        p += 2;
        while (*p == '/')
            p++;
    }
    size_t n = strlen(p);
    if (n >= 2 && ((p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z')) && p[1] == ':') {
        *why = "absolute (drive-letter) path";
        return NULL;
    }
    if (is_dir)
        while (n > 0 && p[n - 1] == '/')
            n--;
    if (n == 0 || (n == 1 && p[0] == '.')) {
        if (is_dir)
            return v1_strndup("", 0);
        *why = "empty name";
        return NULL;
    }
    if (n > EXPERT_MAX_NAME_BYTES) {
        *why = "name longer than 1024 bytes";
        return NULL;
    }
    if (!expert_name_valid(p, n)) {
        *why = "name is not valid UTF-8";
        return NULL;
    }
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)p[i] : '/';
        if (c == '\\') {
            *why = "backslash in name";
            return NULL;
        }
        if (c < 0x20 || c == 0x7F) {
            *why = "control character in name";
            return NULL;
        }
        if (c != '/')
            continue;
        size_t len = i - start;
        if (len == 0) {
            *why = "empty path component";
            return NULL;
        }
        if ((len == 1 && p[start] == '.') || (len == 2 && p[start] == '.' && p[start + 1] == '.')) {
            *why = "'.' or '..' path component";
            return NULL;
        }
        start = i + 1;
    }
    return v1_strndup(p, n);
}

void expert_v1_free(void *p)
{
    expert_free(p);
}

/* ========================================================= gzip source */

typedef struct gz_src {
    int fd;                  /* -1: memory */
    const uint8_t *mem;
    size_t mem_size, mem_pos;
    uint64_t file_pos;
    uint8_t *inbuf;
    int in_eof;
    uint64_t in_bytes;
    EVP_MD_CTX *sha;
    z_stream zs;
    int z_ready;
    int in_member;           /* inside a gzip member */
    int padding;             /* saw zero bytes after the last member */
    uint32_t members;
    int done;
    uint64_t out_bytes, limit;
    uint8_t *outbuf;
    expert_status st;        /* first failure of this layer */
    expert_error e;
} gz_src;

static expert_status gz_fail(gz_src *g, expert_status code, const char *msg)
{
    if (g->st == EXPERT_OK) {
        g->st = code;
        expert_error_set(&g->e, code, g->in_bytes, EXPERT_NO_SECTION, "%s", msg);
    }
    return g->st;
}

static expert_status gz_fill(gz_src *g)
{
    if (g->fd < 0) {
        size_t n = g->mem_size - g->mem_pos;
        if (n > IN_CHUNK)
            n = IN_CHUNK;
        if (n == 0) {
            g->in_eof = 1;
            return EXPERT_OK;
        }
        g->zs.next_in = g->mem + g->mem_pos;
        g->zs.avail_in = (uInt)n;
        g->mem_pos += n;
        g->in_bytes += n;
        return EVP_DigestUpdate(g->sha, g->zs.next_in, n) == 1
                   ? EXPERT_OK
                   : gz_fail(g, EXPERT_E_NOMEM, "hashing failed");
    }
    ssize_t k;
    do
        k = pread(g->fd, g->inbuf, IN_CHUNK, (off_t)g->file_pos);
    while (k < 0 && errno == EINTR);
    if (k < 0)
        return gz_fail(g, EXPERT_E_IO, strerror(errno));
    if (k == 0) {
        g->in_eof = 1;
        return EXPERT_OK;
    }
    g->file_pos += (uint64_t)k;
    g->in_bytes += (uint64_t)k;
    g->zs.next_in = g->inbuf;
    g->zs.avail_in = (uInt)k;
    return EVP_DigestUpdate(g->sha, g->inbuf, (size_t)k) == 1
               ? EXPERT_OK
               : gz_fail(g, EXPERT_E_NOMEM, "hashing failed");
}

/* Inflates up to cap bytes into out; *got = 0 only at the end of the stream. */
static expert_status gz_read(gz_src *g, uint8_t *out, size_t cap, size_t *got)
{
    *got = 0;
    if (g->st != EXPERT_OK)
        return g->st;
    while (!g->done && *got < cap) {
        if (g->zs.avail_in == 0) {
            if (!g->in_eof && gz_fill(g) != EXPERT_OK)
                return g->st;
            if (g->zs.avail_in == 0) {
                if (g->in_member || g->members == 0)
                    return gz_fail(g, EXPERT_E_BAD_ARCHIVE,
                                   "truncated archive: the gzip stream ends early");
                g->done = 1;
                break;
            }
        }
        if (!g->in_member) {
            /* Between members: another gzip member, zero padding, or junk. */
            uint8_t b = g->zs.next_in[0];
            if (g->members > 0 && b == 0) {
                g->padding = 1;
                while (g->zs.avail_in > 0 && g->zs.next_in[0] == 0) {
                    g->zs.next_in++;
                    g->zs.avail_in--;
                }
                continue;
            }
            if (g->members > 0 && (b != 0x1f || g->padding))
                return gz_fail(g, EXPERT_E_BAD_ARCHIVE, "trailing data after the gzip stream");
            if (g->members > 0 && inflateReset(&g->zs) != Z_OK)
                return gz_fail(g, EXPERT_E_NOMEM, "inflateReset failed");
            g->in_member = 1;
        }
        size_t room = cap - *got;
        if (room > UINT32_MAX)
            room = UINT32_MAX;
        g->zs.next_out = out + *got;
        g->zs.avail_out = (uInt)room;
        int zr = inflate(&g->zs, Z_NO_FLUSH);
        size_t n = room - g->zs.avail_out;
        *got += n;
        g->out_bytes += n;
        if (g->out_bytes > g->limit) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "archive expands past the %llu-byte limit (gzip bomb?); raise "
                     "expert_v1_options.max_total_bytes to accept it",
                     (unsigned long long)g->limit);
            return gz_fail(g, EXPERT_E_BAD_ARCHIVE, msg);
        }
        if (zr == Z_STREAM_END) {
            g->in_member = 0;
            g->members++;
        } else if (zr == Z_MEM_ERROR) {
            return gz_fail(g, EXPERT_E_NOMEM, "out of memory inflating");
        } else if (zr == Z_BUF_ERROR) {
            if (g->zs.avail_in != 0 && n == 0)
                return gz_fail(g, EXPERT_E_BAD_ARCHIVE, "corrupt gzip stream");
        } else if (zr != Z_OK) {
        {
            char msg[160];
            snprintf(msg, sizeof msg, "corrupt gzip stream: %s%s",
                     g->zs.msg ? g->zs.msg : "inflate error",
                     zr == Z_DATA_ERROR && g->zs.msg && strstr(g->zs.msg, "check")
                         ? " (CRC-32 or length trailer mismatch)"
                         : "");
            return gz_fail(g, EXPERT_E_BAD_ARCHIVE, msg);
        }
        }
    }
    return EXPERT_OK;
}

static la_ssize_t tar_read_cb(struct archive *a, void *ud, const void **buf)
{
    gz_src *g = ud;
    size_t got = 0;
    if (gz_read(g, g->outbuf, TAR_CHUNK, &got) != EXPERT_OK) {
        archive_set_error(a, EIO, "%s", g->e.message);
        return -1;
    }
    *buf = g->outbuf;
    return (la_ssize_t)got;
}

static expert_status gz_init(gz_src *g, int fd, const void *mem, size_t mem_size, uint64_t limit,
                             expert_error *err)
{
    memset(g, 0, sizeof *g);
    g->fd = fd;
    g->mem = mem;
    g->mem_size = mem_size;
    g->limit = limit;
    g->outbuf = expert_malloc(TAR_CHUNK);
    g->inbuf = fd >= 0 ? expert_malloc(IN_CHUNK) : NULL;
    if (g->outbuf == NULL || (fd >= 0 && g->inbuf == NULL) ||
        (g->sha = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(g->sha, EVP_sha256(), NULL) != 1)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    if (inflateInit2(&g->zs, 16 + MAX_WBITS) != Z_OK) /* gzip wrapper only */
        return FAIL(EXPERT_E_NOMEM, "inflateInit2 failed");
    g->z_ready = 1;
    return EXPERT_OK;
}

static void gz_free(gz_src *g)
{
    if (g->z_ready)
        inflateEnd(&g->zs);
    EVP_MD_CTX_free(g->sha);
    expert_free(g->inbuf);
    expert_free(g->outbuf);
}

/* ======================================================== tar entries */

typedef struct ventry {
    char *name;
    uint8_t *data;
    size_t size;
    uint32_t mode;
    int64_t mtime;
} ventry;

typedef struct v1_load {
    ventry *e;
    uint32_t count, cap;
    uint64_t total;
} v1_load;

static void load_free(v1_load *l)
{
    for (uint32_t i = 0; i < l->count; i++) {
        expert_free(l->e[i].name);
        expert_free(l->e[i].data);
    }
    expert_free(l->e);
    memset(l, 0, sizeof *l);
}

static const char *filetype_name(unsigned t)
{
    switch (t) {
    case AE_IFLNK: return "symbolic link";
    case AE_IFCHR: return "character device";
    case AE_IFBLK: return "block device";
    case AE_IFIFO: return "FIFO";
    case AE_IFSOCK: return "socket";
    default: return "special file";
    }
}

/* Fails with the gzip layer's error when it caused the libarchive failure. */
static expert_status tar_fail(gz_src *g, struct archive *a, const char *what, expert_error *err)
{
    if (g->st != EXPERT_OK) {
        if (err != NULL)
            *err = g->e;
        return g->st;
    }
    const char *msg = archive_error_string(a);
    return FAIL(EXPERT_E_BAD_ARCHIVE, "%s: %s", what, msg ? msg : "malformed tar data");
}

static expert_status read_entry_data(gz_src *g, struct archive *a, ventry *v, uint64_t size,
                                     expert_error *err)
{
    size_t cap = size < (1u << 20) ? (size_t)size : (1u << 20), have = 0;
    v->data = expert_malloc(cap ? cap : 1);
    if (v->data == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory reading '%s'", v->name);
    while (have < size) {
        if (have == cap) {
            size_t ncap = cap * 2 < size ? cap * 2 : (size_t)size;
            uint8_t *grown = expert_realloc(v->data, ncap);
            if (grown == NULL)
                return FAIL(EXPERT_E_NOMEM, "out of memory reading '%s'", v->name);
            v->data = grown;
            cap = ncap;
        }
        la_ssize_t k = archive_read_data(a, v->data + have, cap - have);
        if (k < 0)
            return tar_fail(g, a, "truncated or corrupt archive", err);
        if (k == 0)
            return FAIL(EXPERT_E_BAD_ARCHIVE, "truncated archive: entry '%s' ends after %zu of %llu bytes",
                        v->name, have, (unsigned long long)size);
        have += (size_t)k;
    }
    v->size = have;
    return EXPERT_OK;
}

static int ventry_name_cmp(const void *a, const void *b)
{
    const ventry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Reads every tar entry into memory (regular files only), enforcing limits
 * and name safety, then requires a complete gzip stream. */
static expert_status read_archive(gz_src *g, const expert_v1_options *o, v1_load *l,
                                  expert_error *err)
{
    struct archive *a = archive_read_new();
    if (a == NULL)
        return FAIL(EXPERT_E_NOMEM, "archive_read_new failed");
    expert_status s = EXPERT_OK;
    archive_read_support_format_tar(a); /* ustar, pax, GNU; no other format, no filter */
    if (archive_read_open(a, g, NULL, tar_read_cb, NULL) != ARCHIVE_OK) {
        s = tar_fail(g, a, "not a tar archive", err);
        goto done;
    }
    for (;;) {
        struct archive_entry *ae = NULL;
        int r = archive_read_next_header(a, &ae);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) { /* ARCHIVE_WARN included: damaged headers, odd pax data */
            s = tar_fail(g, a, "malformed tar archive", err);
            goto done;
        }
        const char *raw = archive_entry_pathname(ae);
        unsigned type = archive_entry_filetype(ae);
        const char *why = NULL;
        if (archive_entry_hardlink(ae) != NULL) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "entry '%s' is a hard link (to '%s'): refused",
                     raw ? raw : "", archive_entry_hardlink(ae));
            goto done;
        }
        if (type != AE_IFREG && type != AE_IFDIR) {
            const char *target = archive_entry_symlink(ae);
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "entry '%s' is a %s%s%s: only regular files are allowed",
                     raw ? raw : "", filetype_name(type), target ? " to " : "", target ? target : "");
            goto done;
        }
        char *name = v1_normalize_name(raw, type == AE_IFDIR, &why);
        if (name == NULL) {
            s = why ? FAIL(EXPERT_E_BAD_ARCHIVE, "unsafe entry name '%s': %s", raw ? raw : "", why)
                    : FAIL(EXPERT_E_NOMEM, "out of memory");
            goto done;
        }
        if (type == AE_IFDIR) { /* the old packer writes none; harmless, skipped */
            expert_free(name);
            continue;
        }
        if (archive_entry_sparse_count(ae) > 0) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "entry '%s' is a sparse file: refused", name);
            expert_free(name);
            goto done;
        }
        int64_t ssize = archive_entry_size_is_set(ae) ? archive_entry_size(ae) : -1;
        if (ssize < 0) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "entry '%s' has no valid size", name);
            expert_free(name);
            goto done;
        }
        uint64_t size = (uint64_t)ssize;
        if (size > o->max_entry_bytes || size > SIZE_MAX - 1 || l->total > o->max_total_bytes ||
            size > o->max_total_bytes - l->total) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE,
                     "entry '%s' (%llu bytes) exceeds the size limits (%llu per entry, %llu in "
                     "all; gzip bomb?)",
                     name, (unsigned long long)size, (unsigned long long)o->max_entry_bytes,
                     (unsigned long long)o->max_total_bytes);
            expert_free(name);
            goto done;
        }
        /* The entries are held until the v2 image is built from them, and
         * the image holds them again (raw codec): count both, before the
         * entry is read, so peak memory stays within the limit. */
        if (l->total + size > o->max_total_bytes / 2) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE,
                     "entry '%s' (%llu bytes) would take the package past its memory limit: "
                     "%llu bytes of entries, held twice while the v2 image is built, over %llu "
                     "(max_total_bytes)",
                     name, (unsigned long long)size, (unsigned long long)(l->total + size),
                     (unsigned long long)o->max_total_bytes);
            expert_free(name);
            goto done;
        }
        if (l->count >= o->max_entries) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "more than %u entries", o->max_entries);
            expert_free(name);
            goto done;
        }
        if (l->count == l->cap) {
            uint32_t ncap = l->cap ? l->cap * 2 : 16;
            ventry *grown = expert_realloc(l->e, (size_t)ncap * sizeof *grown);
            if (grown == NULL) {
                expert_free(name);
                s = FAIL(EXPERT_E_NOMEM, "out of memory");
                goto done;
            }
            l->e = grown;
            l->cap = ncap;
        }
        ventry *v = &l->e[l->count++];
        memset(v, 0, sizeof *v);
        v->name = name;
        v->mode = (uint32_t)(archive_entry_perm(ae) & 07777);
        v->mtime = (int64_t)archive_entry_mtime(ae);
        l->total += size;
        s = read_entry_data(g, a, v, size, err);
        if (s != EXPERT_OK)
            goto done;
    }
    /* libarchive accepts a tar that simply stops; the old packer always
     * ends with zero blocks, so a stream that ends where the next header
     * would start was cut. The rest of the gzip stream is inflated too,
     * which checks the last CRC-32 and refuses trailing data. */
    {
        uint64_t eof_at = (uint64_t)archive_read_header_position(a);
        size_t got = 0;
        do {
            if (gz_read(g, g->outbuf, TAR_CHUNK, &got) != EXPERT_OK) {
                s = g->st;
                if (err != NULL)
                    *err = g->e;
                goto done;
            }
        } while (got > 0);
        if (g->out_bytes < eof_at + 512) {
            s = FAIL(EXPERT_E_BAD_ARCHIVE,
                     "truncated archive: the tar stream ends at byte %llu without its "
                     "end-of-archive blocks",
                     (unsigned long long)g->out_bytes);
            goto done;
        }
    }
    /* Duplicate names (after "./" normalisation) would make lookups and
     * extraction ambiguous. */
    if (l->count > 1) {
        ventry **sorted = v1_calloc(l->count, sizeof *sorted);
        if (sorted == NULL) {
            s = FAIL(EXPERT_E_NOMEM, "out of memory");
            goto done;
        }
        for (uint32_t i = 0; i < l->count; i++)
            sorted[i] = &l->e[i];
        qsort(sorted, l->count, sizeof *sorted, ventry_name_cmp);
        for (uint32_t i = 1; i < l->count && s == EXPERT_OK; i++)
            if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
                s = FAIL(EXPERT_E_BAD_ARCHIVE, "duplicate entry name '%s'", sorted[i]->name);
        expert_free(sorted);
    }
done:
    archive_read_free(a);
    return s;
}

static ventry *find_entry(v1_load *l, const char *name)
{
    for (uint32_t i = 0; i < l->count; i++)
        if (strcmp(l->e[i].name, name) == 0)
            return &l->e[i];
    return NULL;
}

/* ====================================================== the v2 image */

const char *v1_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Package name when the manifest has none: the file's base name without
 * ".expert", else "package". */
static char *fallback_name(const char *path)
{
    if (path == NULL)
        return v1_strndup("package", 7);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 7 && strcmp(base + n - 7, ".expert") == 0)
        n -= 7;
    if (n == 0)
        return v1_strndup("package", 7);
    return v1_strndup(base, n);
}

/* Metadata "extra" of an import: the archive's digest, size and entry list
 * (names, sizes, modes, mtimes), so that export can rebuild an equivalent
 * tar.gz. */
static expert_status v1_source_json(const v1_load *l, const v1_source *info, char **out,
                                    expert_error *err)
{
    char hex[65];
    v1_hex_encode(info->pub.archive_sha256, 32, hex);
    json_t *ents = json_array();
    int bad = ents == NULL;
    for (uint32_t i = 0; i < l->count && !bad; i++) {
        json_t *e = json_pack("{s:s, s:I, s:i, s:I}", "name", l->e[i].name, "size",
                              (json_int_t)l->e[i].size, "mode", (int)l->e[i].mode, "mtime",
                              (json_int_t)l->e[i].mtime);
        bad |= e == NULL || json_array_append_new(ents, e) != 0;
    }
    json_t *root = bad ? NULL
                       : json_pack("{s:{s:s, s:I, s:O}}", "v1_source", "sha256", hex, "bytes",
                                   (json_int_t)info->pub.archive_bytes, "entries", ents);
    *out = root != NULL ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    json_decref(ents);
    return *out != NULL ? EXPERT_OK : FAIL(EXPERT_E_NOMEM, "out of memory building metadata");
}

/* The packer is done with a tar entry: free it at once, so the entries and
 * the image are not held in full at the same time. */
static void release_entry(void *user, const expert_pack_progress *p)
{
    v1_load *l = user;
    if (p->file_done) {
        expert_free(l->e[p->file].data);
        l->e[p->file].data = NULL;
    }
}

/* Builds the raw-codec v2 image through the packer, the same sections and
 * metadata as `expert-cli pack` of the extracted directory (spec §9.5). */
static expert_status build_image(v1_load *l, const v1_source *info, const char *path,
                                 const char *base_model, expert_image *image, expert_error *err)
{
    uint64_t hint = l->total + 65536;
    hint += (uint64_t)(l->count + 1) * 512; /* TOC entry, index slots, padding: generous */
    for (uint32_t i = 0; i < l->count; i++)
        hint += 2 * strlen(l->e[i].name);
    if (hint > SIZE_MAX)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, "package too large for this machine");
    expert_pack_file *files = v1_calloc(l->count ? l->count : 1, sizeof *files);
    char *name = fallback_name(path), *extra = NULL;
    expert_writer *w = NULL;
    expert_writer_options wo = {.alignment = 64, .threads = 1};
    expert_status s = files != NULL && name != NULL ? EXPERT_OK : FAIL(EXPERT_E_NOMEM, "out of memory");
    if (s == EXPERT_OK)
        s = v1_source_json(l, info, &extra, err);
    for (uint32_t i = 0; s == EXPERT_OK && i < l->count; i++)
        files[i] = (expert_pack_file){l->e[i].name, l->e[i].data, l->e[i].size};
    if (s == EXPERT_OK)
        s = expert_writer_open_memory(&wo, (size_t)hint, &w, err);
    if (s == EXPERT_OK) {
        expert_pack_options po = {sizeof po, EXPERT_CODEC_RAW, EXPERT_CODEC_RAW, name, base_model,
                                  CREATED_BY, extra, release_entry, l};
        s = expert_pack(w, files, l->count, &po, NULL, err);
        /* the package contradicts itself: for an archive that is BAD_ARCHIVE */
        if (s == EXPERT_E_INVALID_ARGUMENT) {
            s = EXPERT_E_BAD_ARCHIVE;
            if (err != NULL)
                err->code = s;
        }
        if (s == EXPERT_OK)
            s = expert_writer_finish_memory(w, NULL, image, err);
        else
            expert_writer_abort(w);
    }
    expert_free(files);
    expert_free(name);
    free(extra); /* json_dumps allocates with jansson's allocator */
    return s;
}

/* ============================================================= sidecar */

static expert_v1_sidecar check_sidecar(const char *path, const uint8_t digest[32])
{
    size_t n = strlen(path);
    char *sp = expert_malloc(n + 8);
    if (sp == NULL)
        return EXPERT_V1_SIDECAR_NOT_CHECKED;
    memcpy(sp, path, n);
    memcpy(sp + n, ".sha256", 8);
    int fd = open(sp, O_RDONLY | O_CLOEXEC);
    expert_free(sp);
    if (fd < 0)
        return errno == ENOENT ? EXPERT_V1_SIDECAR_ABSENT : EXPERT_V1_SIDECAR_MALFORMED;
    char buf[SIDECAR_MAX + 1];
    size_t have = 0;
    for (;;) {
        ssize_t k = read(fd, buf + have, SIDECAR_MAX + 1 - have);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        have += (size_t)k;
        if (have > SIDECAR_MAX)
            break;
    }
    close(fd);
    uint8_t want[32];
    /* sha256sum format: 64 hex digits, then end, whitespace or " *name". */
    if (have > SIDECAR_MAX || have < 64 || !v1_hex_decode(buf, 64, want, 32) ||
        (have > 64 && buf[64] != ' ' && buf[64] != '\t' && buf[64] != '\n' && buf[64] != '\r'))
        return EXPERT_V1_SIDECAR_MALFORMED;
    return memcmp(want, digest, 32) == 0 ? EXPERT_V1_SIDECAR_MATCH : EXPERT_V1_SIDECAR_STALE_SIGNED;
}

/* ================================================================ open */

static expert_v1_options resolve_options(const expert_v1_options *o)
{
    expert_v1_options r = {0, 0, 0, 0, NULL};
    if (o != NULL)
        r = *o;
    if (r.max_total_bytes == 0)
        r.max_total_bytes = EXPERT_V1_DEFAULT_MAX_TOTAL;
    if (r.max_entry_bytes == 0)
        r.max_entry_bytes = EXPERT_V1_DEFAULT_MAX_ENTRY;
    if (r.max_entries == 0)
        r.max_entries = EXPERT_V1_DEFAULT_MAX_ENTRIES;
    return r;
}

static expert_status open_common_v1(int fd, const char *path, const void *mem, size_t mem_size,
                                    const expert_open_options *opt, const expert_v1_options *v1opt,
                                    expert_reader **out, expert_error *err)
{
    expert_v1_options o = resolve_options(v1opt);
    gz_src g;
    v1_load l;
    v1_source *info = NULL;
    memset(&l, 0, sizeof l);
    *out = NULL;

    expert_status s = gz_init(&g, fd, mem, mem_size, o.max_total_bytes, err);
    if (s == EXPERT_OK)
        s = read_archive(&g, &o, &l, err);
    if (s == EXPERT_OK) {
        info = v1_calloc(1, sizeof *info);
        if (info == NULL)
            s = FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    if (s == EXPERT_OK) {
        /* The whole file is hashed, including anything after the stream. */
        while (s == EXPERT_OK && !g.in_eof)
            if (gz_fill(&g) != EXPERT_OK) {
                s = g.st;
                if (err != NULL)
                    *err = g.e;
            }
        if (s == EXPERT_OK && EVP_DigestFinal_ex(g.sha, info->pub.archive_sha256, NULL) != 1)
            s = FAIL(EXPERT_E_NOMEM, "hashing failed");
        info->pub.archive_bytes = g.in_bytes;
        info->pub.unpacked_bytes = l.total;
        info->entries = v1_calloc(l.count ? l.count : 1, sizeof *info->entries);
        if (s == EXPERT_OK && info->entries == NULL)
            s = FAIL(EXPERT_E_NOMEM, "out of memory");
        for (uint32_t i = 0; s == EXPERT_OK && i < l.count; i++) {
            info->entries[i].name = v1_strndup(l.e[i].name, strlen(l.e[i].name));
            if (info->entries[i].name == NULL) {
                s = FAIL(EXPERT_E_NOMEM, "out of memory");
                break;
            }
            info->entries[i].size = l.e[i].size;
            info->entries[i].mode = l.e[i].mode;
            info->entries[i].mtime = l.e[i].mtime;
            info->pub.entry_count = i + 1;
        }
    }
    if (s == EXPERT_OK) {
        ventry *m = find_entry(&l, MANIFEST_NAME);
        json_t *manifest = NULL;
        if (find_entry(&l, ST_NAME) == NULL)
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "the v1 package has no %s", ST_NAME);
        if (s == EXPERT_OK && m != NULL &&
            (manifest = json_loadb((const char *)m->data, m->size, 0, NULL)) == NULL)
            s = FAIL(EXPERT_E_BAD_ARCHIVE, "%s is not valid JSON", MANIFEST_NAME);
        info->pub.is_signed = find_entry(&l, SIGNATURE_NAME) != NULL ||
                              json_object_get(manifest, "integrity") != NULL;
        json_decref(manifest);
    }
    if (s == EXPERT_OK) {
        info->pub.sidecar = EXPERT_V1_SIDECAR_NOT_CHECKED;
        if (path != NULL && !(o.flags & EXPERT_V1_IGNORE_SIDECAR)) {
            info->pub.sidecar = check_sidecar(path, info->pub.archive_sha256);
            int strict = (o.flags & EXPERT_V1_STRICT_SIDECAR) != 0;
            if (info->pub.sidecar == EXPERT_V1_SIDECAR_STALE_SIGNED &&
                (strict || !info->pub.is_signed)) {
                char hex[65];
                v1_hex_encode(info->pub.archive_sha256, 32, hex);
                s = expert_error_set(err, EXPERT_E_FILE_HASH_MISMATCH, 0, EXPERT_NO_SECTION,
                                 "%s: SHA-256 %s does not match %s.sha256%s", path, hex, path,
                                 info->pub.is_signed ? "" : " (unsigned package: corrupt or altered)");
            } else if (info->pub.sidecar == EXPERT_V1_SIDECAR_MALFORMED && strict) {
                s = FAIL(EXPERT_E_FILE_HASH_MISMATCH, "%s.sha256 is not in sha256sum format", path);
            }
        }
    }
    if (s == EXPERT_OK)
        s = build_image(&l, info, path, o.base_model, &info->image, err);
    load_free(&l);
    gz_free(&g);
    if (s != EXPERT_OK) {
        v1_source_free(info);
        return s;
    }
    return expert_open_memory_owned(info->image.data, info->image.size, opt, v1_source_free, info,
                                    out, err);
}

/* The regular file at path, open, and whether it starts with the gzip magic. */
static expert_status open_input(const char *path, int *fd_out, int *gzip, expert_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FAIL(EXPERT_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return FAIL(EXPERT_E_IO, "%s is not a regular file", path);
    }
    uint8_t magic[2];
    *gzip = pread(fd, magic, 2, 0) == 2 && is_gzip(magic, 2);
    *fd_out = fd;
    return EXPERT_OK;
}

/* v1 from a path; a v2 file (no gzip magic) is opened as v2 when v2_too. */
static expert_status open_path(const char *path, const expert_open_options *opt,
                               const expert_v1_options *v1opt, int v2_too, expert_reader **out,
                               expert_error *err)
{
    if (path == NULL || out == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "path and out are required");
    *out = NULL;
    int fd = -1, gzip = 0;
    V1_TRY(open_input(path, &fd, &gzip, err));
    expert_status s = EXPERT_OK;
    if (gzip)
        s = open_common_v1(fd, path, NULL, 0, opt, v1opt, out, err);
    else if (!v2_too)
        s = FAIL(EXPERT_E_BAD_ARCHIVE, "%s is not a gzip stream (v1 packages are tar.gz)", path);
    close(fd);
    return gzip || !v2_too ? s : expert_open(path, opt, out, err);
}

expert_status expert_open_v1(const char *path, const expert_open_options *opt,
                             const expert_v1_options *v1opt, expert_reader **out,
                             expert_error *err)
{
    return open_path(path, opt, v1opt, 0, out, err);
}

expert_status expert_open_v1_memory(const void *data, size_t size, const expert_open_options *opt,
                                    const expert_v1_options *v1opt, expert_reader **out,
                                    expert_error *err)
{
    if (out == NULL || (data == NULL && size != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    *out = NULL;
    if (!is_gzip(data, size))
        return FAIL(EXPERT_E_BAD_ARCHIVE, "not a gzip stream (v1 packages are tar.gz)");
    return open_common_v1(-1, NULL, data, size, opt, v1opt, out, err);
}

expert_status expert_open_any(const char *path, const expert_open_options *opt,
                              const expert_v1_options *v1opt, expert_reader **out,
                              expert_error *err)
{
    return open_path(path, opt, v1opt, 1, out, err);
}

expert_status expert_open_any_memory(const void *data, size_t size, const expert_open_options *opt,
                                     const expert_v1_options *v1opt, expert_reader **out,
                                     expert_error *err)
{
    return is_gzip(data, size) ? expert_open_v1_memory(data, size, opt, v1opt, out, err)
                               : expert_open_memory(data, size, opt, out, err);
}

/* ========================================================== accessors */

int expert_reader_source_format(const expert_reader *r)
{
    if (r == NULL)
        return 0;
    return source_of(r) != NULL ? 1 : 2;
}

const char *expert_reader_notice(const expert_reader *r)
{
    return source_of(r) != NULL ? k_notice : NULL;
}

expert_status expert_v1_info_get(const expert_reader *r, expert_v1_info *out)
{
    const v1_source *v = source_of(r);
    if (v == NULL || out == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    *out = v->pub;
    return EXPERT_OK;
}

const char *expert_v1_entry_name(const expert_reader *r, uint32_t i)
{
    const v1_source *v = source_of(r);
    if (v == NULL || i >= v->pub.entry_count)
        return NULL;
    return v->entries[i].name;
}
