/* xpmodel.c — see xpmodel.h. Written from the spec, independent of ref/lib. */
#include "xpmodel.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zstd.h>

/* ------------------------------------------------------------ LE access */

uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
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

/* ------------------------------------------------------------ memory, buffers, files */

static void oom(size_t n)
{
    fprintf(stderr, "xpmodel: out of memory (%zu bytes)\n", n);
    abort();
}

void *xm_alloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *xm_dup(const void *p, size_t n)
{
    void *d = xm_alloc(n);
    if (n)
        memcpy(d, p, n);
    return d;
}

static void xb_reserve(xb *b, size_t extra)
{
    if (b->cap > b->n && b->cap - b->n > extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n <= extra) {
        if (cap > SIZE_MAX / 2)
            oom(extra);
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL)
        oom(cap);
    b->p = p;
    b->cap = cap;
}

void xb_put(xb *b, const void *p, size_t n)
{
    xb_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
}

void xb_zero(xb *b, size_t n)
{
    xb_reserve(b, n);
    memset(b->p + b->n, 0, n + 1);
    b->n += n;
}

void xb_u8(xb *b, uint8_t v) { xb_put(b, &v, 1); }
void xb_u32(xb *b, uint32_t v)
{
    uint8_t t[4];
    wr32(t, v);
    xb_put(b, t, 4);
}
void xb_str(xb *b, const char *s) { xb_put(b, s, strlen(s)); }

void xb_printf(xb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0)
        abort();
    xb_reserve(b, (size_t)k);
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

xb xb_copy(const void *p, size_t n)
{
    xb b = {0};
    xb_put(&b, p, n);
    return b;
}

void xb_free(xb *b)
{
    if (b == NULL)
        return;
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int file_load(const char *path, xb *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint8_t tmp[65536];
    size_t k;
    xb_put(out, "", 0);
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
        xb_put(out, tmp, k);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        xb_free(out);
    return bad ? -1 : 0;
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
/* ------------------------------------------------------------ hashing */

typedef struct sha {
    EVP_MD_CTX *c;
} sha;
static void sha_init(sha *s)
{
    s->c = EVP_MD_CTX_new();
    if (s->c == NULL || EVP_DigestInit_ex(s->c, EVP_sha256(), NULL) != 1)
        abort();
}
static void sha_upd(sha *s, const void *p, size_t n)
{
    if (n && EVP_DigestUpdate(s->c, p, n) != 1)
        abort();
}
static void sha_zero(sha *s, size_t n)
{
    static const uint8_t z[128];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        sha_upd(s, z, k);
        n -= k;
    }
}
static void sha_fin(sha *s, uint8_t out[32])
{
    unsigned len = 32;
    if (EVP_DigestFinal_ex(s->c, out, &len) != 1)
        abort();
    EVP_MD_CTX_free(s->c);
}

void sha256(const void *p, size_t n, uint8_t out[32])
{
    sha s;
    sha_init(&s);
    sha_upd(&s, p, n);
    sha_fin(&s, out);
}

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

void xm_file_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    sha s;
    sha_init(&s);
    if (n < 0xA0) { /* not a real file: hash what is there */
        sha_upd(&s, p, n);
        sha_fin(&s, out);
        return;
    }
    sha_upd(&s, p, 0x14);
    sha_zero(&s, 0x74 - 0x14);
    sha_upd(&s, p + 0x74, 0x80 - 0x74);
    sha_zero(&s, 0x20);
    sha_upd(&s, p + 0xA0, n - 0xA0);
    sha_fin(&s, out);
}

static int in_image(uint64_t off, uint64_t len, size_t n)
{
    return off <= n && len <= n - off;
}

/* Hashes p[off, off + len) clamped to the image; 0 when nothing was clamped. */
static int sha_clamped(sha *s, const uint8_t *p, size_t n, uint64_t off, uint64_t len)
{
    if (in_image(off, len, n)) {
        sha_upd(s, p + off, (size_t)len);
        return 0;
    }
    if (off < n)
        sha_upd(s, p + off, n - (size_t)off);
    return -1;
}

int xm_structure_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    sha s;
    sha_init(&s);
    int clamped = 0;
    if (n >= 256) {
        uint64_t hs = rd32(p + H_HEADER_SIZE);
        if (hs > n || hs < 256) {
            hs = hs > n ? n : 256;
            clamped = -1;
        }
        sha_upd(&s, p, 0x34);
        sha_zero(&s, 0x74 - 0x34);
        sha_upd(&s, p + 0x74, 0x80 - 0x74);
        sha_zero(&s, 0xA0 - 0x80);
        sha_upd(&s, p + 0xA0, (size_t)hs - 0xA0);
        clamped |= sha_clamped(&s, p, n, rd64(p + H_META_OFF), rd64(p + H_META_LEN));
        clamped |= sha_clamped(&s, p, n, rd64(p + H_TOC_OFF), (uint64_t)rd32(p + H_TOC_COUNT) * TOC_ENTRY);
        clamped |= sha_clamped(&s, p, n, rd64(p + H_INDEX_OFF), rd64(p + H_INDEX_LEN));
        clamped |= sha_clamped(&s, p, n, rd64(p + H_STR_OFF), rd64(p + H_STR_LEN));
    } else {
        clamped = -1;
    }
    sha_fin(&s, out);
    return clamped;
}

void xm_rehash(uint8_t *p, size_t n)
{
    if (n < 256)
        return;
    uint8_t d[32];
    xm_file_sha(p, n, d);
    memcpy(p + H_FILE_SHA, d, 32);
    xm_rehash_structure(p, n);
}

void xm_rehash_structure(uint8_t *p, size_t n)
{
    if (n < 256)
        return;
    uint8_t d[32];
    xm_structure_sha(p, n, d);
    memcpy(p + H_STRUCT_SHA, d, 32);
}

/* ------------------------------------------------------------ oracle */

uint32_t xm_slot_count(uint32_t toc_count)
{
    uint64_t s = 8;
    while (s < 2 * (uint64_t)toc_count)
        s <<= 1;
    return (uint32_t)s;
}

uint64_t xm_index_length(uint32_t toc_count) { return 8 + 4 * (uint64_t)xm_slot_count(toc_count); }

/* class codes of spec §15 */
enum {
    C_BAD_MAGIC = 10, C_UNSUPPORTED_VERSION = 11, C_TRUNCATED = 12, C_TRAILING_DATA = 13,
    C_BAD_HEADER = 14, C_OUT_OF_BOUNDS = 15, C_MISALIGNED = 17, C_BAD_INDEX = 19,
    C_UNKNOWN_FLAG = 23, C_LIMIT_EXCEEDED = 26
};

int xm_oracle_header(const uint8_t *p, size_t n)
{
    static const uint8_t magic[8] = {0x48, 0x4C, 0x4C, 0x4D, 0x45, 0x58, 0x50, 0x00};
    if (n < 8 || memcmp(p, magic, 8) != 0)
        return C_BAD_MAGIC; /* S1 */
    if (n < 256)
        return C_TRUNCATED; /* S2 */
    if (rd16(p + H_MAJOR) != 2)
        return C_UNSUPPORTED_VERSION; /* S3 */
    uint32_t hs = rd32(p + H_HEADER_SIZE);
    if (hs < 256 || hs > 4096 || hs % 8 != 0)
        return C_BAD_HEADER; /* S4 */
    uint64_t fl = rd64(p + H_FILE_LEN);
    if ((uint64_t)n < fl)
        return C_TRUNCATED; /* S5 */
    if ((uint64_t)n > fl)
        return C_TRAILING_DATA;
    if (hs >= fl)
        return C_BAD_HEADER; /* S6a */
    for (int i = H_RESERVED; i < 256; i++)
        if (p[i] != 0)
            return C_BAD_HEADER; /* S6b */
    uint32_t al = rd32(p + H_ALIGN);
    if (al != 64 && al != 256 && al != 4096)
        return C_BAD_HEADER; /* S6c */
    if (rd32(p + H_TOC_ENTRY_SIZE) != 128)
        return C_BAD_HEADER; /* S6d */
    if (rd32(p + H_FLAGS) & 0xFFFFu)
        return C_UNKNOWN_FLAG; /* S6e */
    uint32_t count = rd32(p + H_TOC_COUNT);
    if (count > 65536)
        return C_LIMIT_EXCEEDED; /* S7a */
    uint64_t ml = rd64(p + H_META_LEN), md = rd64(p + H_META_DEC);
    if (ml == 0)
        return C_BAD_HEADER; /* S7b */
    if (ml > (1u << 24))
        return C_LIMIT_EXCEEDED;
    if (md < 2)
        return C_BAD_HEADER; /* S7c */
    if (md > (1u << 24))
        return C_LIMIT_EXCEEDED;
    if (rd64(p + H_STR_LEN) > (1u << 26))
        return C_LIMIT_EXCEEDED; /* S7d */
    if (rd64(p + H_INDEX_LEN) != xm_index_length(count))
        return C_BAD_INDEX; /* S7e */
    uint64_t r[4][2] = {{rd64(p + H_META_OFF), ml},
                        {rd64(p + H_TOC_OFF), (uint64_t)count * TOC_ENTRY},
                        {rd64(p + H_INDEX_OFF), rd64(p + H_INDEX_LEN)},
                        {rd64(p + H_STR_OFF), rd64(p + H_STR_LEN)}};
    for (int i = 0; i < 4; i++) { /* S8 */
        uint64_t off = r[i][0], len = r[i][1];
        if (off < hs)
            return C_OUT_OF_BOUNDS;
        if (len == 0 ? off > fl : (len > UINT64_MAX - off || off + len > fl))
            return C_OUT_OF_BOUNDS;
        if (i < 3 && off % 8 != 0)
            return C_MISALIGNED;
    }
    return 0;
}

uint8_t *xm_index_build(const uint8_t *const *names, const size_t *lens, uint32_t n, size_t *out_len)
{
    uint64_t slots = xm_slot_count(n), mask = slots - 1;
    size_t len = 8 + 4 * (size_t)slots;
    uint8_t *ix = xm_alloc(len);
    wr32(ix, (uint32_t)slots);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t pos = fnv1a64(names[i], lens[i]) & mask;
        while (rd32(ix + 8 + 4 * pos) != 0)
            pos = (pos + 1) & mask;
        wr32(ix + 8 + 4 * pos, i + 1);
    }
    *out_len = len;
    return ix;
}

uint8_t *xm_index_of_file(const uint8_t *p, size_t n, size_t *out_len)
{
    uint32_t count = n >= 256 ? rd32(p + H_TOC_COUNT) : 0;
    uint64_t toc = n >= 256 ? rd64(p + H_TOC_OFF) : 0, str = n >= 256 ? rd64(p + H_STR_OFF) : 0;
    uint64_t str_len = n >= 256 ? rd64(p + H_STR_LEN) : 0;
    if (!in_image(toc, (uint64_t)count * TOC_ENTRY, n) || !in_image(str, str_len, n))
        count = 0;
    const uint8_t **names = xm_alloc((count ? count : 1) * sizeof *names);
    size_t *lens = xm_alloc((count ? count : 1) * sizeof *lens);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + toc + (uint64_t)i * TOC_ENTRY;
        uint32_t off = rd32(e + T_NAME_OFF);
        size_t len = rd16(e + T_NAME_LEN);
        int ok = off <= str_len && len <= str_len - off;
        names[i] = ok ? p + str + off : p;
        lens[i] = ok ? len : 0;
    }
    uint8_t *ix = xm_index_build(names, lens, count, out_len);
    free(names);
    free(lens);
    return ix;
}

/* ------------------------------------------------------------ model */

static uint8_t *dup_range(const uint8_t *p, size_t n, uint64_t off, uint64_t len)
{
    return in_image(off, len, n) ? xm_dup(p + off, (size_t)len) : NULL;
}

int xm_parse(const uint8_t *p, size_t n, xm_model *m)
{
    memset(m, 0, sizeof *m);
    if (n < 256)
        return -1;
    m->header_size = rd32(p + H_HEADER_SIZE);
    if (m->header_size < 256 || m->header_size > 4096 || m->header_size > n)
        return -1;
    memcpy(m->header, p, m->header_size);
    m->n = rd32(p + H_TOC_COUNT);
    m->meta_len = (size_t)rd64(p + H_META_LEN);
    m->meta_dec = rd64(p + H_META_DEC);
    m->meta = dup_range(p, n, rd64(p + H_META_OFF), m->meta_len);
    m->strings_len = (size_t)rd64(p + H_STR_LEN);
    m->strings = dup_range(p, n, rd64(p + H_STR_OFF), m->strings_len);
    uint64_t toc = rd64(p + H_TOC_OFF);
    if (!m->meta || !m->strings || !in_image(toc, (uint64_t)m->n * TOC_ENTRY, n)) {
        xm_free(m); /* no sections yet */
        return -1;
    }
    m->sec = xm_alloc((m->n ? m->n : 1) * sizeof *m->sec);
    for (uint32_t i = 0; i < m->n; i++) {
        xm_section *s = &m->sec[i];
        memcpy(s->entry, p + toc + (uint64_t)i * TOC_ENTRY, TOC_ENTRY);
        s->len = (size_t)rd64(s->entry + T_STORED);
        s->data = dup_range(p, n, rd64(s->entry + T_OFFSET), s->len);
        if (!s->data) {
            xm_free(m); /* the entries not reached hold no data */
            return -1;
        }
    }
    return 0;
}

void xm_free(xm_model *m)
{
    for (uint32_t i = 0; m->sec && i < m->n; i++)
        free(m->sec[i].data);
    free(m->sec);
    free(m->meta);
    free(m->strings);
    memset(m, 0, sizeof *m);
}

xm_model xm_clone(const xm_model *m)
{
    xm_model c = *m;
    c.sec = xm_alloc((m->n ? m->n : 1) * sizeof *c.sec);
    for (uint32_t i = 0; i < m->n; i++) {
        c.sec[i] = m->sec[i];
        c.sec[i].data = xm_dup(m->sec[i].data, m->sec[i].len);
    }
    c.meta = xm_dup(m->meta, m->meta_len);
    c.strings = xm_dup(m->strings, m->strings_len);
    return c;
}

const uint8_t *xm_name(const xm_model *m, uint32_t i, size_t *len)
{
    uint32_t off = rd32(m->sec[i].entry + T_NAME_OFF);
    size_t l = rd16(m->sec[i].entry + T_NAME_LEN);
    if (off > m->strings_len || l > m->strings_len - off) {
        *len = 0;
        return m->strings;
    }
    *len = l;
    return m->strings + off;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void xm_serialize(const xm_model *m, const xm_layout *L, xb *out)
{
    static const xm_layout canonical;
    if (!L)
        L = &canonical;
    uint64_t align = rd32(m->header + H_ALIGN);
    if (align != 64 && align != 256 && align != 4096)
        align = 64; /* a defective alignment field: lay out at 64 */
    uint64_t *offs = xm_alloc((m->n ? m->n : 1) * sizeof *offs);
    const uint8_t **names = xm_alloc((m->n ? m->n : 1) * sizeof *names);
    size_t *lens = xm_alloc((m->n ? m->n : 1) * sizeof *lens);
    for (uint32_t i = 0; i < m->n; i++)
        names[i] = xm_name(m, i, &lens[i]);
    size_t ix_len = 0;
    uint8_t *ix_own = NULL;
    const uint8_t *ix;
    if (L->index) {
        ix = L->index;
        ix_len = L->index_len;
    } else {
        ix = ix_own = xm_index_build(names, lens, m->n, &ix_len);
    }
    uint64_t toc_len = (uint64_t)m->n * TOC_ENTRY;
    uint64_t pos = m->header_size;
    uint64_t meta_off = 0, toc_off = 0, ix_off = 0, str_off = 0;

    for (int pass = 0; pass < 2; pass++) {
        int do_regions = L->regions_first ? pass == 0 : pass == 1;
        if (do_regions) {
            meta_off = align_up(pos, 8) + L->gap_meta;
            pos = meta_off + m->meta_len;
            toc_off = align_up(pos, 8) + L->gap_toc;
            pos = toc_off + toc_len;
            ix_off = align_up(pos, 8) + L->gap_index;
            pos = ix_off + ix_len;
            str_off = pos + L->gap_strings;
            pos = str_off + m->strings_len;
        } else {
            for (uint32_t k = 0; k < m->n; k++) {
                uint32_t i = L->reverse_sections ? m->n - 1 - k : k;
                uint64_t extra = 0;
                for (int g = 0; g < L->ngap_sec; g++)
                    if (L->gap_sec_at[g] == i)
                        extra += L->gap_sec[g];
                if (m->sec[i].len == 0) {
                    offs[i] = 0; /* empty: occupies nothing (spec §2.2) */
                } else {
                    offs[i] = align_up(pos, align) + extra;
                    pos = offs[i] + m->sec[i].len;
                }
            }
        }
    }
    uint64_t total = pos + L->trailing;
    memset(out, 0, sizeof *out);
    xb_zero(out, (size_t)total);
    uint8_t *b = out->p;
    memcpy(b, m->header, m->header_size);
    if (L->zero_signature)
        memset(b + H_SIG, 0, 64);
    wr32(b + H_TOC_COUNT, m->n);
    wr64(b + H_META_OFF, meta_off);
    wr64(b + H_META_LEN, m->meta_len);
    wr64(b + H_META_DEC, m->meta_dec);
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
    xm_rehash(b, (size_t)total);
    free(ix_own);
    free(offs);
    free(names);
    free(lens);
}

void xm_set_section(xm_model *m, uint32_t i, const void *p, size_t n)
{
    free(m->sec[i].data);
    m->sec[i].data = xm_dup(p, n);
    m->sec[i].len = n;
}

void xm_set_meta_stored(xm_model *m, const void *p, size_t n, uint64_t decoded)
{
    free(m->meta);
    m->meta = xm_dup(p, n);
    m->meta_len = n;
    m->meta_dec = decoded;
}

void xm_set_metadata_json(xm_model *m, const char *json, size_t len)
{
    size_t cl = 0;
    uint8_t *c = xm_zstd(json, len, 3, 1, 0, &cl);
    free(m->meta);
    m->meta = c;
    m->meta_len = cl;
    m->meta_dec = len;
}

void xm_set_name(xm_model *m, uint32_t i, const void *name, size_t len)
{
    uint8_t *s = realloc(m->strings, m->strings_len + len + 1);
    if (s == NULL)
        abort();
    m->strings = s;
    memcpy(s + m->strings_len, name, len);
    wr32(m->sec[i].entry + T_NAME_OFF, (uint32_t)m->strings_len);
    wr16(m->sec[i].entry + T_NAME_LEN, (uint16_t)len);
    m->strings_len += len;
}

void xm_add_section(xm_model *m, const uint8_t entry[TOC_ENTRY], const char *name, const void *p, size_t n)
{
    xm_section *ns = realloc(m->sec, (m->n + 1) * sizeof *ns);
    if (!ns)
        oom((m->n + 1) * sizeof *ns);
    m->sec = ns;
    xm_section *s = &m->sec[m->n];
    memset(s, 0, sizeof *s);
    memcpy(s->entry, entry, TOC_ENTRY);
    m->n++;
    xm_set_section(m, m->n - 1, p, n);
    xm_set_name(m, m->n - 1, name, strlen(name));
}

void xm_set_header_size(xm_model *m, uint32_t hs, const uint8_t *ext)
{
    m->header_size = hs;
    wr32(m->header + H_HEADER_SIZE, hs);
    if (hs > 256)
        memcpy(m->header + 256, ext, hs - 256);
}

/* ------------------------------------------------------------ zstd */

uint8_t *xm_zstd(const void *p, size_t n, int level, int content_size, int checksum, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(n);
    uint8_t *dst = xm_alloc(cap);
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (c == NULL)
        abort();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, content_size);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum);
    ZSTD_CCtx_setParameter(c, ZSTD_c_dictIDFlag, 0);
    size_t r;
    if (content_size) {
        r = ZSTD_compress2(c, dst, cap, p, n);
    } else { /* streaming without a pledged size: the frame has no content size */
        ZSTD_inBuffer in = {p, n, 0};
        ZSTD_outBuffer out = {dst, cap, 0};
        r = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
        r = ZSTD_isError(r) || r != 0 ? (size_t)-1 : out.pos;
    }
    ZSTD_freeCCtx(c);
    if (ZSTD_isError(r))
        abort();
    *out_len = r;
    return dst;
}

size_t xm_dtype_size(unsigned dtype)
{
    static const size_t e[14] = {1, 4, 2, 2, 8, 1, 1, 2, 2, 4, 4, 8, 8, 1};
    return dtype < 14 ? e[dtype] : 0;
}

void xm_encode_framed(xb *out, const uint8_t *plain, uint64_t n, uint32_t frame_size, size_t elem,
                      int shuffle, int level)
{
    uint64_t nf = n == 0 ? 0 : (n - 1) / frame_size + 1;
    size_t table = out->n;
    xb_zero(out, (size_t)(4 * nf));
    uint8_t *tmp = shuffle && elem > 1 ? xm_alloc(frame_size) : NULL;
    for (uint64_t f = 0; f < nf; f++) {
        size_t len = (size_t)(n - f * frame_size < frame_size ? n - f * frame_size : frame_size);
        const uint8_t *src = plain + f * frame_size;
        if (tmp) {
            size_t cnt = len / elem;
            for (size_t j = 0; j < elem; j++)
                for (size_t i = 0; i < cnt; i++)
                    tmp[j * cnt + i] = src[i * elem + j];
            src = tmp;
        }
        size_t cl = 0;
        uint8_t *c = xm_zstd(src, len, level, 1, 0, &cl);
        wr32(out->p + table + 4 * f, (uint32_t)cl);
        xb_put(out, c, cl);
        free(c);
    }
    free(tmp);
}

/* ------------------------------------------------------------ zstd frames */

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t xround(uint64_t acc, uint64_t lane) { return rotl(acc + lane * P2, 31) * P1; }
static uint64_t xmerge(uint64_t acc, uint64_t v)
{
    acc ^= xround(0, v);
    return acc * P1 + P4;
}

uint64_t xxh64(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data, *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        while (end - p >= 32) {
            v1 = xround(v1, rd64(p));
            v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16));
            v4 = xround(v4, rd64(p + 24));
            p += 32;
        }
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = xmerge(h, v1);
        h = xmerge(h, v2);
        h = xmerge(h, v3);
        h = xmerge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)n;
    while (end - p >= 8) {
        h ^= xround(0, rd64(p));
        h = rotl(h, 27) * P1 + P4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)rd32(p) * P1;
        h = rotl(h, 23) * P2 + P3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * P5;
        h = rotl(h, 11) * P1;
        p++;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

static void block_header(xb *out, int last, int type, size_t size)
{
    uint32_t v = (uint32_t)last | ((uint32_t)type << 1) | ((uint32_t)size << 3);
    uint8_t b[3] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16)};
    xb_put(out, b, 3);
}

int zframe(xb *out, const uint8_t *c, size_t n, const zf_opts *o)
{
    static const zf_opts none;
    if (!o)
        o = &none;
    uint64_t fcs = o->fcs_set ? o->fcs : (uint64_t)n;
    int single = o->window_log == 0;
    int fcs_bytes = 0;
    if (!o->no_fcs) {
        if (o->fcs_bytes)
            fcs_bytes = o->fcs_bytes;
        else if (single && fcs < 256)
            fcs_bytes = 1;
        else if (fcs >= 256 && fcs < 65536 + 256)
            fcs_bytes = 2;
        else if (fcs <= 0xFFFFFFFFull)
            fcs_bytes = 4;
        else
            fcs_bytes = 8;
    }
    int fcs_flag = fcs_bytes == 8 ? 3 : fcs_bytes == 4 ? 2 : fcs_bytes == 2 ? 1 : 0;
    if ((fcs_bytes == 1 && !single) || (o->no_fcs && single) ||
        (!single && (o->window_log < 10 || o->window_log > 41)))
        return -1;
    uint8_t f[8];
    wr32(f, o->magic ? o->magic : 0xFD2FB528u);
    xb_put(out, f, 4);
    uint8_t fhd = (uint8_t)((fcs_flag << 6) | (single << 5) | ((o->checksum ? 1 : 0) << 2) |
                            (o->dict_id ? 3 : 0));
    xb_u8(out, fhd);
    if (!single) {
        xb_u8(out, (uint8_t)((o->window_log - 10) << 3)); /* mantissa 0 */
    }
    if (o->dict_id) {
        uint8_t d[4];
        wr32(d, o->dict_id);
        xb_put(out, d, 4);
    }
    if (fcs_bytes == 1) {
        xb_u8(out, (uint8_t)fcs);
    } else if (fcs_bytes == 2) {
        wr16(f, (uint16_t)(fcs - 256));
        xb_put(out, f, 2);
    } else if (fcs_bytes == 4) {
        wr32(f, (uint32_t)fcs);
        xb_put(out, f, 4);
    } else if (fcs_bytes == 8) {
        wr64(f, fcs);
        xb_put(out, f, 8);
    }
    size_t bmax = o->block_max ? o->block_max : 128 * 1024;
    if (n == 0) {
        block_header(out, 1, 0, 0);
    } else {
        size_t i = 0;
        while (i < n) {
            /* a run of equal bytes becomes an RLE block */
            size_t run = 1;
            while (i + run < n && c[i + run] == c[i] && run < bmax)
                run++;
            size_t len;
            int type;
            if (!o->no_rle && run >= 32) {
                len = run;
                type = 1;
            } else {
                /* raw up to the next run of >= 32 equal bytes */
                len = 0;
                while (i + len < n && len < bmax) {
                    if (!o->no_rle) {
                        size_t r = 1;
                        while (i + len + r < n && c[i + len + r] == c[i + len] && r < 32)
                            r++;
                        if (r >= 32 && len > 0)
                            break;
                    }
                    len++;
                }
                type = 0;
            }
            int last = i + len == n;
            if (type == 1) {
                block_header(out, last, 1, len);
                xb_u8(out, c[i]);
            } else {
                size_t declared = len + (last ? (size_t)o->extra_block_bytes : 0);
                block_header(out, last, 0, declared);
                xb_put(out, c + i, len);
            }
            i += len;
        }
    }
    if (o->checksum) {
        uint32_t x = (uint32_t)xxh64(c, n, 0);
        if (o->checksum == 2)
            x ^= 0x5A5A5A5Au;
        wr32(f, x);
        xb_put(out, f, 4);
    }
    return 0;
}

/* ------------------------------------------------------------ PRNG */

uint64_t prng_next(prng *r)
{
    uint64_t x = r->s ? r->s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

double prng_unit(prng *r) { return (double)(prng_next(r) >> 11) / 9007199254740992.0; }

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
