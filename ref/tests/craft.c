/* craft.c — see craft.h. */
#include "craft.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zstd.h>

/* ------------------------------------------------------------ LE access */

uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }
void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ------------------------------------------------------------ buffers, files */

void cbuf_free(cbuf *b)
{
    if (!b)
        return;
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

int cbuf_dup(cbuf *dst, const uint8_t *p, size_t n)
{
    dst->p = malloc(n ? n : 1);
    if (!dst->p)
        return -1;
    if (n)
        memcpy(dst->p, p, n);
    dst->n = n;
    return 0;
}

int file_load(const char *path, cbuf *out)
{
    out->p = NULL;
    out->n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return -1;
    }
    long sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    out->p = malloc((size_t)sz + 1);
    if (!out->p) {
        fclose(f);
        return -1;
    }
    out->n = fread(out->p, 1, (size_t)sz, f);
    fclose(f);
    return out->n == (size_t)sz ? 0 : -1;
}

int file_save(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    int rc = fclose(f);
    return (w == n && rc == 0) ? 0 : -1;
}

int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

uint8_t *toc_entry(uint8_t *file, uint32_t i)
{
    return file + rd64(file + H_TOC_OFF) + (uint64_t)i * TOC_ENTRY;
}

/* ------------------------------------------------------------ hashing */

void sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

void craft_file_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    static const uint8_t zero[256];
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    if (n < 0xA0) {
        /* too short to have the fields: hash as is */
        EVP_DigestUpdate(ctx, p, n);
    } else {
        EVP_DigestUpdate(ctx, p, 0x14);
        EVP_DigestUpdate(ctx, zero, 0x74 - 0x14);
        EVP_DigestUpdate(ctx, p + 0x74, 0x80 - 0x74);
        EVP_DigestUpdate(ctx, zero, 0xA0 - 0x80);
        EVP_DigestUpdate(ctx, p + 0xA0, n - 0xA0);
    }
    unsigned int len = 32;
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}

static void update_clamped(EVP_MD_CTX *ctx, const uint8_t *p, size_t n, uint64_t off, uint64_t len)
{
    if (off >= n)
        return;
    if (len > n - off)
        len = n - off;
    EVP_DigestUpdate(ctx, p + off, (size_t)len);
}

void craft_structure_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    static const uint8_t zero[256];
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    if (n >= 256) {
        uint64_t hs = rd32(p + H_HEADER_SIZE);
        if (hs > n)
            hs = n;
        if (hs < 0xA0)
            hs = 0xA0;
        EVP_DigestUpdate(ctx, p, 0x34);
        EVP_DigestUpdate(ctx, zero, 0x74 - 0x34);
        EVP_DigestUpdate(ctx, p + 0x74, 0x80 - 0x74);
        EVP_DigestUpdate(ctx, zero, 0xA0 - 0x80);
        EVP_DigestUpdate(ctx, p + 0xA0, (size_t)hs - 0xA0);
        update_clamped(ctx, p, n, rd64(p + H_META_OFF), rd64(p + H_META_LEN));
        uint64_t toc_len = (uint64_t)rd32(p + H_TOC_COUNT) * TOC_ENTRY;
        update_clamped(ctx, p, n, rd64(p + H_TOC_OFF), toc_len);
        update_clamped(ctx, p, n, rd64(p + H_INDEX_OFF), rd64(p + H_INDEX_LEN));
        update_clamped(ctx, p, n, rd64(p + H_STR_OFF), rd64(p + H_STR_LEN));
    }
    unsigned int len = 32;
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
}

void craft_rehash(uint8_t *p, size_t n)
{
    if (n < 256)
        return;
    uint8_t h[32];
    craft_file_sha(p, n, h);
    memcpy(p + H_FILE_SHA, h, 32);
    craft_structure_sha(p, n, h);
    memcpy(p + H_STRUCT_SHA, h, 32);
}

void craft_rehash_structure(uint8_t *p, size_t n)
{
    if (n < 256)
        return;
    uint8_t h[32];
    craft_structure_sha(p, n, h);
    memcpy(p + H_STRUCT_SHA, h, 32);
}

/* ------------------------------------------------------------ index */

uint64_t fnv1a64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint8_t *craft_index(const uint8_t *const *names, const size_t *lens, uint32_t n, size_t *out_len)
{
    uint64_t slots = 8;
    while (slots < 2 * (uint64_t)n)
        slots <<= 1;
    size_t len = 8 + 4 * (size_t)slots;
    uint8_t *ix = calloc(1, len);
    if (!ix)
        return NULL;
    wr32(ix, (uint32_t)slots);
    uint64_t mask = slots - 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t pos = fnv1a64(names[i], lens[i]) & mask;
        while (rd32(ix + 8 + 4 * pos) != 0)
            pos = (pos + 1) & mask;
        wr32(ix + 8 + 4 * pos, i + 1);
    }
    *out_len = len;
    return ix;
}

uint8_t *craft_index_of_file(const uint8_t *p, size_t n, size_t *out_len)
{
    (void)n;
    uint32_t count = rd32(p + H_TOC_COUNT);
    uint64_t toc = rd64(p + H_TOC_OFF), str = rd64(p + H_STR_OFF);
    const uint8_t **names = calloc(count ? count : 1, sizeof *names);
    size_t *lens = calloc(count ? count : 1, sizeof *lens);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + toc + (uint64_t)i * TOC_ENTRY;
        names[i] = p + str + rd32(e + T_NAME_OFF);
        lens[i] = rd16(e + T_NAME_LEN);
    }
    uint8_t *ix = craft_index((const uint8_t *const *)names, lens, count, out_len);
    free(names);
    free(lens);
    return ix;
}

/* ------------------------------------------------------------ model */

static uint8_t *dup_range(const uint8_t *p, size_t n, uint64_t off, uint64_t len)
{
    if (off > n || len > n - off)
        return NULL;
    uint8_t *d = malloc(len ? (size_t)len : 1);
    if (d && len)
        memcpy(d, p + off, (size_t)len);
    return d;
}

int craft_parse(const uint8_t *p, size_t n, craft_model *m)
{
    memset(m, 0, sizeof *m);
    if (n < 256)
        return -1;
    m->header_size = rd32(p + H_HEADER_SIZE);
    if (m->header_size < 256 || m->header_size > 4096 || m->header_size > n)
        return -1;
    memcpy(m->header, p, m->header_size);
    m->alignment = rd32(p + H_ALIGN);
    m->n = rd32(p + H_TOC_COUNT);
    m->meta_len = rd64(p + H_META_LEN);
    m->meta_decoded_len = rd64(p + H_META_DEC);
    m->meta = dup_range(p, n, rd64(p + H_META_OFF), m->meta_len);
    m->strings_len = rd64(p + H_STR_LEN);
    m->strings = dup_range(p, n, rd64(p + H_STR_OFF), m->strings_len);
    if (!m->meta || !m->strings)
        return -1;
    uint64_t toc = rd64(p + H_TOC_OFF);
    if (toc > n || (uint64_t)m->n * TOC_ENTRY > n - toc)
        return -1;
    m->sec = calloc(m->n ? m->n : 1, sizeof *m->sec);
    if (!m->sec)
        return -1;
    for (uint32_t i = 0; i < m->n; i++) {
        craft_section *s = &m->sec[i];
        memcpy(s->entry, p + toc + (uint64_t)i * TOC_ENTRY, TOC_ENTRY);
        s->len = rd64(s->entry + T_STORED);
        s->data = dup_range(p, n, rd64(s->entry + T_OFFSET), s->len);
        if (!s->data)
            return -1;
    }
    return 0;
}

void craft_model_free(craft_model *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; m->sec && i < m->n; i++)
        free(m->sec[i].data);
    free(m->sec);
    free(m->meta);
    free(m->strings);
    memset(m, 0, sizeof *m);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

int craft_serialize(const craft_model *m, cbuf *out)
{
    uint64_t align = m->alignment ? m->alignment : 64;
    uint64_t *offs = calloc(m->n ? m->n : 1, sizeof *offs);
    const uint8_t **names = calloc(m->n ? m->n : 1, sizeof *names);
    size_t *lens = calloc(m->n ? m->n : 1, sizeof *lens);
    if (!offs || !names || !lens)
        return -1;
    uint64_t pos = m->header_size;
    for (uint32_t i = 0; i < m->n; i++) {
        if (i == m->extra_gap_at)
            pos += m->extra_gap;
        if (m->sec[i].len == 0) {
            offs[i] = 0; /* spec §2.2: an empty section occupies nothing, offset 0 */
        } else {
            pos = align_up(pos, align);
            offs[i] = pos;
            pos += m->sec[i].len;
        }
        uint32_t no = rd32(m->sec[i].entry + T_NAME_OFF);
        size_t nl = rd16(m->sec[i].entry + T_NAME_LEN);
        names[i] = (no <= m->strings_len && nl <= m->strings_len - no) ? m->strings + no : m->strings;
        lens[i] = (no <= m->strings_len && nl <= m->strings_len - no) ? nl : 0;
    }
    uint64_t meta_off = align_up(pos, 8);
    uint64_t toc_off = align_up(meta_off + m->meta_len + m->extra_gap_before_toc, 8);
    uint64_t toc_len = (uint64_t)m->n * TOC_ENTRY;
    size_t ix_len = 0;
    uint8_t *ix = craft_index((const uint8_t *const *)names, lens, m->n, &ix_len);
    uint64_t ix_off = align_up(toc_off + toc_len, 8);
    uint64_t str_off = ix_off + ix_len;
    uint64_t total = str_off + m->strings_len;
    uint8_t *b = calloc(1, (size_t)total);
    if (!b || !ix) {
        free(b);
        free(ix);
        free(offs);
        free(names);
        free(lens);
        return -1;
    }
    memcpy(b, m->header, m->header_size);
    wr32(b + H_TOC_COUNT, m->n);
    wr64(b + H_META_OFF, meta_off);
    wr64(b + H_META_LEN, m->meta_len);
    wr64(b + H_META_DEC, m->meta_decoded_len);
    wr64(b + H_TOC_OFF, toc_off);
    wr64(b + H_INDEX_OFF, ix_off);
    wr64(b + H_INDEX_LEN, ix_len);
    wr64(b + H_STR_OFF, str_off);
    wr64(b + H_STR_LEN, m->strings_len);
    wr64(b + H_FILE_LEN, total);
    for (uint32_t i = 0; i < m->n; i++) {
        if (m->sec[i].len)
            memcpy(b + offs[i], m->sec[i].data, m->sec[i].len);
        uint8_t *e = b + toc_off + (uint64_t)i * TOC_ENTRY;
        memcpy(e, m->sec[i].entry, TOC_ENTRY);
        wr64(e + T_OFFSET, offs[i]);
        wr64(e + T_STORED, m->sec[i].len);
    }
    if (m->meta_len)
        memcpy(b + meta_off, m->meta, m->meta_len);
    memcpy(b + ix_off, ix, ix_len);
    if (m->strings_len)
        memcpy(b + str_off, m->strings, m->strings_len);
    craft_rehash(b, (size_t)total);
    free(ix);
    free(offs);
    free(names);
    free(lens);
    out->p = b;
    out->n = (size_t)total;
    return 0;
}

int craft_set_name(craft_model *m, uint32_t i, const void *name, size_t len)
{
    uint8_t *s = realloc(m->strings, m->strings_len + len + 1);
    if (!s)
        return -1;
    m->strings = s;
    if (len)
        memcpy(s + m->strings_len, name, len);
    wr32(m->sec[i].entry + T_NAME_OFF, (uint32_t)m->strings_len);
    wr16(m->sec[i].entry + T_NAME_LEN, (uint16_t)len);
    m->strings_len += len;
    return 0;
}

uint8_t *zstd_compress_alloc(const void *src, size_t n, int content_size_flag, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(n);
    uint8_t *dst = malloc(cap);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!dst || !cctx) {
        free(dst);
        ZSTD_freeCCtx(cctx);
        return NULL;
    }
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, content_size_flag);
    size_t r;
    if (content_size_flag) {
        r = ZSTD_compress2(cctx, dst, cap, src, n);
    } else {
        /* streaming without a pledged size: no content size in the frame */
        ZSTD_inBuffer in = {src, n, 0};
        ZSTD_outBuffer out = {dst, cap, 0};
        r = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
        if (!ZSTD_isError(r))
            r = r == 0 ? out.pos : (size_t)-1;
    }
    ZSTD_freeCCtx(cctx);
    if (ZSTD_isError(r)) {
        free(dst);
        return NULL;
    }
    *out_len = r;
    return dst;
}

int craft_set_meta_stored(craft_model *m, const void *p, size_t n, uint64_t decoded_len)
{
    uint8_t *d = malloc(n ? n : 1);
    if (!d)
        return -1;
    if (n)
        memcpy(d, p, n);
    free(m->meta);
    m->meta = d;
    m->meta_len = n;
    m->meta_decoded_len = decoded_len;
    return 0;
}

int craft_set_metadata(craft_model *m, const char *json, size_t len)
{
    size_t clen = 0;
    uint8_t *c = zstd_compress_alloc(json, len, 1, &clen);
    if (!c)
        return -1;
    free(m->meta);
    m->meta = c;
    m->meta_len = clen;
    m->meta_decoded_len = len;
    return 0;
}

int craft_set_section_data(craft_model *m, uint32_t i, const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (!d)
        return -1;
    if (n)
        memcpy(d, p, n);
    free(m->sec[i].data);
    m->sec[i].data = d;
    m->sec[i].len = n;
    return 0;
}

int craft_add_section(craft_model *m, const uint8_t entry[TOC_ENTRY], const char *name,
                      const void *p, size_t n)
{
    craft_section *ns = realloc(m->sec, (m->n + 1) * sizeof *ns);
    if (!ns)
        return -1;
    m->sec = ns;
    craft_section *s = &m->sec[m->n];
    memset(s, 0, sizeof *s);
    memcpy(s->entry, entry, TOC_ENTRY);
    m->n++;
    if (craft_set_section_data(m, m->n - 1, p, n) != 0)
        return -1;
    return craft_set_name(m, m->n - 1, name, strlen(name));
}

/* ------------------------------------------------------------ utilities */

uint64_t prng_next(prng *r)
{
    uint64_t x = r->s ? r->s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void prng_fill(prng *r, void *p, size_t n)
{
    uint8_t *b = p;
    while (n >= 8) {
        wr64(b, prng_next(r));
        b += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = prng_next(r);
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)(v >> (8 * i));
    }
}

char *tmpdir_make(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    size_t need = strlen(base) + strlen(tag) + 32;
    char *t = malloc(need);
    if (!t)
        return NULL;
    snprintf(t, need, "%s/expert-%s-XXXXXX", base, tag);
    if (!mkdtemp(t)) {
        free(t);
        return NULL;
    }
    return t;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tmpdir_remove(char *dir)
{
    if (!dir)
        return;
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

char *path_join(const char *dir, const char *name)
{
    size_t need = strlen(dir) + strlen(name) + 2;
    char *p = malloc(need);
    if (p)
        snprintf(p, need, "%s/%s", dir, name);
    return p;
}

int dir_count(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int c = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            c++;
    closedir(d);
    return c;
}

expert_status write_expert(const char *path, const expert_writer_options *opt, const char *meta_json,
                           const tsec *s, size_t n, const expert_private_key *key)
{
    expert_writer *w = NULL;
    expert_error err;
    expert_status st = expert_writer_open(path, opt, &w, &err);
    if (st != EXPERT_OK)
        return st;
    for (size_t i = 0; i < n; i++) {
        static const uint8_t dummy[1];
        st = expert_writer_add(w, &s[i].d, s[i].data ? s[i].data : dummy, s[i].len, &err);
        if (st != EXPERT_OK) {
            fprintf(stderr, "writer_add(%s): %s: %s\n", s[i].d.name, expert_status_name(st),
                    err.message);
            expert_writer_abort(w);
            return st;
        }
    }
    const char *json = meta_json ? meta_json : META_MIN;
    st = expert_writer_set_metadata(w, json, strlen(json), &err);
    if (st != EXPERT_OK) {
        fprintf(stderr, "set_metadata: %s: %s\n", expert_status_name(st), err.message);
        expert_writer_abort(w);
        return st;
    }
    st = expert_writer_finish(w, key, &err);
    if (st != EXPERT_OK)
        fprintf(stderr, "finish: %s: %s\n", expert_status_name(st), err.message);
    return st;
}

void *aligned_copy(const void *p, size_t n)
{
    void *m = NULL;
    if (posix_memalign(&m, 4096, n ? n : 1) != 0)
        return NULL;
    if (n)
        memcpy(m, p, n);
    return m;
}

expert_status open_mem(const uint8_t *p, size_t n, unsigned threads, void **mem, expert_reader **r,
                       expert_error *err)
{
    *mem = aligned_copy(p, n);
    *r = NULL;
    if (!*mem)
        return EXPERT_E_NOMEM;
    expert_open_options o = {.flags = 0, .threads = threads};
    expert_status st = expert_open_memory(*mem, n, &o, r, err);
    if (st != EXPERT_OK) {
        free(*mem);
        *mem = NULL;
    }
    return st;
}

int run_cmd(const char *out_path, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof cmd - 64)
        return -1;
    if (out_path != NULL) {
        size_t k = strlen(cmd);
        snprintf(cmd + k, sizeof cmd - k, " > '%s'", out_path);
    }
    int st = system(cmd);
    return st == -1 ? -1 : (WIFEXITED(st) ? WEXITSTATUS(st) : 128);
}
