/* xpmodel.c — see xpmodel.h. Written from the spec, independent of ref/lib. */
#include "xpmodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zstd.h>

uint16_t xm_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t xm_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t xm_rd64(const uint8_t *p) { return (uint64_t)xm_rd32(p) | (uint64_t)xm_rd32(p + 4) << 32; }
void xm_wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
void xm_wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
void xm_wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void *xm_alloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "xpmodel: out of memory (%zu bytes)\n", n);
        abort();
    }
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
    if (b->cap - b->n >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        fprintf(stderr, "xpmodel: out of memory\n");
        abort();
    }
    b->p = p;
    b->cap = cap;
}
void xb_put(xb *b, const void *p, size_t n)
{
    xb_reserve(b, n);
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}
void xb_zero(xb *b, size_t n)
{
    xb_reserve(b, n);
    memset(b->p + b->n, 0, n);
    b->n += n;
}
void xb_u8(xb *b, uint8_t v) { xb_put(b, &v, 1); }
void xb_u32(xb *b, uint32_t v)
{
    uint8_t t[4];
    xm_wr32(t, v);
    xb_put(b, t, 4);
}
void xb_str(xb *b, const char *s) { xb_put(b, s, strlen(s)); }
void xb_free(xb *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
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

void xm_sha256(const void *p, size_t n, uint8_t out[32])
{
    sha s;
    sha_init(&s);
    sha_upd(&s, p, n);
    sha_fin(&s, out);
}

uint64_t xm_fnv1a64(const void *p, size_t n)
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

int xm_structure_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    if (n < 256)
        return -1;
    uint32_t hs = xm_rd32(p + XM_H_HEADER_SIZE);
    uint64_t r[4][2] = {{xm_rd64(p + XM_H_META_OFF), xm_rd64(p + XM_H_META_LEN)},
                        {xm_rd64(p + XM_H_TOC_OFF), (uint64_t)xm_rd32(p + XM_H_TOC_COUNT) * XM_TOC},
                        {xm_rd64(p + XM_H_INDEX_OFF), xm_rd64(p + XM_H_INDEX_LEN)},
                        {xm_rd64(p + XM_H_STR_OFF), xm_rd64(p + XM_H_STR_LEN)}};
    if (hs < 256 || hs > n)
        return -1;
    for (int i = 0; i < 4; i++)
        if (!in_image(r[i][0], r[i][1], n))
            return -1;
    sha s;
    sha_init(&s);
    sha_upd(&s, p, 0x34);
    sha_zero(&s, 0x40);
    sha_upd(&s, p + 0x74, 0x80 - 0x74);
    sha_zero(&s, 0x20);
    sha_upd(&s, p + 0xA0, hs - 0xA0);
    for (int i = 0; i < 4; i++)
        sha_upd(&s, p + r[i][0], (size_t)r[i][1]);
    sha_fin(&s, out);
    return 0;
}

void xm_rehash(uint8_t *p, size_t n)
{
    uint8_t d[32];
    xm_file_sha(p, n, d);
    memcpy(p + XM_H_FILE_SHA, d, 32);
    xm_rehash_structure(p, n);
}

void xm_rehash_structure(uint8_t *p, size_t n)
{
    uint8_t d[32];
    if (xm_structure_sha(p, n, d) == 0)
        memcpy(p + XM_H_STRUCT_SHA, d, 32);
}

/* ------------------------------------------------------------ oracle */

uint64_t xm_index_length(uint32_t count)
{
    uint64_t s = 8;
    while (s < 2 * (uint64_t)count)
        s <<= 1;
    return 8 + 4 * s;
}

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
    if (xm_rd16(p + XM_H_MAJOR) != 2)
        return C_UNSUPPORTED_VERSION; /* S3 */
    uint32_t hs = xm_rd32(p + XM_H_HEADER_SIZE);
    if (hs < 256 || hs > 4096 || hs % 8 != 0)
        return C_BAD_HEADER; /* S4 */
    uint64_t fl = xm_rd64(p + XM_H_FILE_LEN);
    if ((uint64_t)n < fl)
        return C_TRUNCATED; /* S5 */
    if ((uint64_t)n > fl)
        return C_TRAILING_DATA;
    if (hs >= fl)
        return C_BAD_HEADER; /* S6a */
    for (int i = XM_H_RESERVED; i < 256; i++)
        if (p[i] != 0)
            return C_BAD_HEADER; /* S6b */
    uint32_t al = xm_rd32(p + XM_H_ALIGN);
    if (al != 64 && al != 256 && al != 4096)
        return C_BAD_HEADER; /* S6c */
    if (xm_rd32(p + XM_H_TOC_ENTRY_SIZE) != 128)
        return C_BAD_HEADER; /* S6d */
    if (xm_rd32(p + XM_H_FLAGS) & 0xFFFFu)
        return C_UNKNOWN_FLAG; /* S6e */
    uint32_t count = xm_rd32(p + XM_H_TOC_COUNT);
    if (count > 65536)
        return C_LIMIT_EXCEEDED; /* S7a */
    uint64_t ml = xm_rd64(p + XM_H_META_LEN), md = xm_rd64(p + XM_H_META_DEC);
    if (ml == 0)
        return C_BAD_HEADER; /* S7b */
    if (ml > (1u << 24))
        return C_LIMIT_EXCEEDED;
    if (md < 2)
        return C_BAD_HEADER; /* S7c */
    if (md > (1u << 24))
        return C_LIMIT_EXCEEDED;
    if (xm_rd64(p + XM_H_STR_LEN) > (1u << 26))
        return C_LIMIT_EXCEEDED; /* S7d */
    if (xm_rd64(p + XM_H_INDEX_LEN) != xm_index_length(count))
        return C_BAD_INDEX; /* S7e */
    uint64_t r[4][2] = {{xm_rd64(p + XM_H_META_OFF), ml},
                        {xm_rd64(p + XM_H_TOC_OFF), (uint64_t)count * XM_TOC},
                        {xm_rd64(p + XM_H_INDEX_OFF), xm_rd64(p + XM_H_INDEX_LEN)},
                        {xm_rd64(p + XM_H_STR_OFF), xm_rd64(p + XM_H_STR_LEN)}};
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

void xm_index_build(xb *out, const uint8_t *const *names, const size_t *lens, uint32_t n)
{
    uint64_t len = xm_index_length(n), slots = (len - 8) / 4, mask = slots - 1;
    size_t base = out->n;
    xb_zero(out, (size_t)len);
    uint8_t *ix = out->p + base;
    xm_wr32(ix, (uint32_t)slots);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t p = xm_fnv1a64(names[i], lens[i]) & mask;
        while (xm_rd32(ix + 8 + 4 * p) != 0)
            p = (p + 1) & mask;
        xm_wr32(ix + 8 + 4 * p, i + 1);
    }
}

/* ------------------------------------------------------------ model */

int xm_parse(const uint8_t *p, size_t n, xm_model *m)
{
    memset(m, 0, sizeof *m);
    if (xm_oracle_header(p, n) != 0)
        return -1;
    m->header_size = xm_rd32(p + XM_H_HEADER_SIZE);
    memcpy(m->header, p, m->header_size);
    m->alignment = xm_rd32(p + XM_H_ALIGN);
    m->n = xm_rd32(p + XM_H_TOC_COUNT);
    m->meta_len = (size_t)xm_rd64(p + XM_H_META_LEN);
    m->meta_dec = xm_rd64(p + XM_H_META_DEC);
    m->meta = xm_dup(p + xm_rd64(p + XM_H_META_OFF), m->meta_len);
    m->strings_len = (size_t)xm_rd64(p + XM_H_STR_LEN);
    m->strings = xm_dup(p + xm_rd64(p + XM_H_STR_OFF), m->strings_len);
    uint64_t toc = xm_rd64(p + XM_H_TOC_OFF);
    m->sec = xm_alloc((m->n ? m->n : 1) * sizeof *m->sec);
    m->keep_signature = 1;
    for (uint32_t i = 0; i < m->n; i++) {
        xm_section *s = &m->sec[i];
        memcpy(s->entry, p + toc + (uint64_t)i * XM_TOC, XM_TOC);
        uint64_t off = xm_rd64(s->entry + XM_T_OFFSET), len = xm_rd64(s->entry + XM_T_STORED);
        if (!in_image(off, len, n)) {
            xm_free(m);
            return -1;
        }
        s->len = (size_t)len;
        s->data = xm_dup(p + off, s->len);
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
    uint32_t off = xm_rd32(m->sec[i].entry + XM_T_NAME_OFF);
    size_t l = xm_rd16(m->sec[i].entry + XM_T_NAME_LEN);
    if (off > m->strings_len || l > m->strings_len - off) {
        *len = 0;
        return m->strings;
    }
    *len = l;
    return m->strings + off;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void xm_serialize(const xm_model *m, xb *out)
{
    uint64_t al = m->alignment ? m->alignment : 64;
    uint32_t n = m->n;
    uint64_t *offs = xm_alloc((n ? n : 1) * sizeof *offs);
    const uint8_t **names = xm_alloc((n ? n : 1) * sizeof *names);
    size_t *lens = xm_alloc((n ? n : 1) * sizeof *lens);
    for (uint32_t i = 0; i < n; i++)
        names[i] = xm_name(m, i, &lens[i]);
    xb ix = {0};
    xm_index_build(&ix, names, lens, n);
    uint64_t toc_len = (uint64_t)n * XM_TOC;
    uint64_t pos = m->header_size, meta_off, toc_off, ix_off, str_off, end;
    if (m->regions_first) {
        meta_off = align_up(pos + m->gap_before_meta, 8);
        toc_off = align_up(meta_off + m->meta_len, 8);
        ix_off = align_up(toc_off + toc_len, 8);
        str_off = ix_off + ix.n;
        pos = str_off + m->strings_len;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (m->sec[i].len == 0) {
            offs[i] = 0;
            continue;
        }
        pos = align_up(pos, al);
        offs[i] = pos;
        pos += m->sec[i].len;
    }
    if (!m->regions_first) {
        meta_off = align_up(pos + m->gap_before_meta, 8);
        toc_off = align_up(meta_off + m->meta_len, 8);
        ix_off = align_up(toc_off + toc_len, 8);
        str_off = ix_off + ix.n;
        pos = str_off + m->strings_len;
    }
    end = pos + m->trailing;
    out->n = 0;
    xb_zero(out, (size_t)end);
    uint8_t *b = out->p;
    memcpy(b, m->header, m->header_size);
    if (!m->keep_signature)
        memset(b + XM_H_SIG, 0, 64);
    xm_wr32(b + XM_H_HEADER_SIZE, m->header_size);
    xm_wr32(b + XM_H_TOC_COUNT, n);
    xm_wr64(b + XM_H_META_OFF, meta_off);
    xm_wr64(b + XM_H_META_LEN, m->meta_len);
    xm_wr64(b + XM_H_META_DEC, m->meta_dec);
    xm_wr64(b + XM_H_TOC_OFF, toc_off);
    xm_wr64(b + XM_H_INDEX_OFF, ix_off);
    xm_wr64(b + XM_H_INDEX_LEN, ix.n);
    xm_wr64(b + XM_H_STR_OFF, str_off);
    xm_wr64(b + XM_H_STR_LEN, m->strings_len);
    xm_wr64(b + XM_H_FILE_LEN, end);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = b + toc_off + (uint64_t)i * XM_TOC;
        memcpy(e, m->sec[i].entry, XM_TOC);
        xm_wr64(e + XM_T_OFFSET, offs[i]);
        xm_wr64(e + XM_T_STORED, m->sec[i].len);
        if (m->sec[i].len)
            memcpy(b + offs[i], m->sec[i].data, m->sec[i].len);
    }
    memcpy(b + meta_off, m->meta, m->meta_len);
    memcpy(b + ix_off, ix.p, ix.n);
    if (m->strings_len)
        memcpy(b + str_off, m->strings, m->strings_len);
    xm_rehash(b, (size_t)end);
    xb_free(&ix);
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
    xm_wr32(m->sec[i].entry + XM_T_NAME_OFF, (uint32_t)m->strings_len);
    xm_wr16(m->sec[i].entry + XM_T_NAME_LEN, (uint16_t)len);
    m->strings_len += len;
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

void xm_frame_raw(xb *out, const void *data, size_t n, const xm_frame_opts *o)
{
    uint8_t t[8];
    xm_wr32(t, o->magic ? o->magic : 0xFD2FB528u);
    xb_put(out, t, 4);
    uint64_t fcs = o->fcs == 2 ? o->fcs_value : n;
    int single = o->single_segment && o->fcs != 0;
    unsigned fcs_code = 0, fcs_bytes = 0;
    if (o->fcs) {
        if (fcs < 256 && single) {
            fcs_code = 0;
            fcs_bytes = 1;
        } else if (fcs >= 256 && fcs < 65536 + 256) {
            fcs_code = 1;
            fcs_bytes = 2;
        } else if (fcs <= 0xFFFFFFFFu) {
            fcs_code = 2;
            fcs_bytes = 4;
        } else {
            fcs_code = 3;
            fcs_bytes = 8;
        }
    }
    unsigned did_code = o->dict_id == 0 ? 0 : o->dict_id < 256 ? 1 : o->dict_id < 65536 ? 2 : 3;
    uint8_t fhd = (uint8_t)(fcs_code << 6 | (single ? 1u : 0u) << 5 | (o->checksum ? 1u : 0u) << 2 |
                            did_code);
    xb_u8(out, fhd);
    if (!single) {
        unsigned wl = o->window_log ? o->window_log : 17;
        xb_u8(out, (uint8_t)((wl - 10) << 3)); /* mantissa 0 */
    }
    if (did_code) {
        unsigned nb = did_code == 1 ? 1 : did_code == 2 ? 2 : 4;
        xm_wr32(t, o->dict_id);
        xb_put(out, t, nb);
    }
    if (fcs_bytes) {
        uint64_t v = fcs_bytes == 2 ? fcs - 256 : fcs;
        xm_wr64(t, v);
        xb_put(out, t, fcs_bytes);
    }
    /* raw blocks of at most 128 KiB (and never larger than the window) */
    const uint8_t *d = data;
    size_t left = n;
    do {
        size_t k = left < (1u << 17) ? left : (1u << 17);
        if (!single && o->window_log && o->window_log < 17 && k > (1u << o->window_log))
            k = (size_t)1 << o->window_log;
        uint32_t last = k == left;
        uint32_t bh = last | 0u << 1 | (uint32_t)k << 3;
        uint8_t h[3] = {(uint8_t)bh, (uint8_t)(bh >> 8), (uint8_t)(bh >> 16)};
        xb_put(out, h, 3);
        xb_put(out, d, k);
        d += k;
        left -= k;
    } while (left > 0);
    if (o->checksum)
        xb_u32(out, 0xDEADBEEFu);
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
        xm_wr32(out->p + table + 4 * f, (uint32_t)cl);
        xb_put(out, c, cl);
        free(c);
    }
    free(tmp);
}
