/* vgen.c — see vgen.h. */
#include "vgen.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

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

/* ------------------------------------------------------------ memory, buffers */

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("expert-vectors-gen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

void *xcalloc(size_t a, size_t b)
{
    void *p = calloc(a ? a : 1, b ? b : 1);
    if (!p)
        die("out of memory");
    return p;
}

char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *d = xmalloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

static void buf_reserve(buf *b, size_t extra)
{
    if (b->cap - b->n >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        die("out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
}

void buf_put(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n + 1);
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0; /* always NUL-terminated for text use */
}

void buf_zero(buf *b, size_t n)
{
    buf_reserve(b, n + 1);
    memset(b->p + b->n, 0, n + 1);
    b->n += n;
}

void buf_byte(buf *b, uint8_t v) { buf_put(b, &v, 1); }
void buf_str(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0)
        die("printf failed");
    buf_reserve(b, (size_t)k + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int file_load(const char *path, buf *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint8_t tmp[65536];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_put(out, tmp, k);
    int bad = ferror(f);
    fclose(f);
    if (out->p == NULL)
        buf_put(out, "", 0);
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

void sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 32;
    if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1)
        die("SHA-256 failed");
}

void hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

void file_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    static const uint8_t zero[128];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    if (n < 0xA0) {
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

void structure_sha(const uint8_t *p, size_t n, uint8_t out[32])
{
    static const uint8_t zero[128];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    if (n >= 256) {
        uint64_t hs = rd32(p + H_HEADER_SIZE);
        if (hs > n)
            hs = n;
        if (hs < 256)
            hs = 256;
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

void rehash(uint8_t *p, size_t n)
{
    if (n < 256)
        return;
    uint8_t h[32];
    file_sha(p, n, h);
    memcpy(p + H_FILE_SHA, h, 32);
    structure_sha(p, n, h);
    memcpy(p + H_STRUCT_SHA, h, 32);
}

void rehash_structure(uint8_t *p, size_t n)
{
    if (n < 256)
        return;
    uint8_t h[32];
    structure_sha(p, n, h);
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

uint32_t slot_count(uint32_t toc_count)
{
    uint64_t s = 8;
    while (s < 2 * (uint64_t)toc_count)
        s <<= 1;
    return (uint32_t)s;
}

uint8_t *index_build(const uint8_t *const *names, const size_t *lens, uint32_t n, size_t *out_len)
{
    uint64_t slots = slot_count(n);
    size_t len = 8 + 4 * (size_t)slots;
    uint8_t *ix = xcalloc(1, len);
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

/* ------------------------------------------------------------ model */

static uint8_t *dup_range(const uint8_t *p, size_t n, uint64_t off, uint64_t len)
{
    if (off > n || len > n - off)
        die("model_parse: range [%llu, +%llu) outside a %zu-byte image", (unsigned long long)off,
            (unsigned long long)len, n);
    uint8_t *d = xmalloc((size_t)len);
    if (len)
        memcpy(d, p + off, (size_t)len);
    return d;
}

void model_parse(const uint8_t *p, size_t n, model *m)
{
    memset(m, 0, sizeof *m);
    if (n < 256)
        die("model_parse: image too short");
    m->header_size = rd32(p + H_HEADER_SIZE);
    if (m->header_size < 256 || m->header_size > 4096 || m->header_size > n)
        die("model_parse: bad header size");
    memcpy(m->header, p, m->header_size);
    m->n = rd32(p + H_TOC_COUNT);
    m->meta_len = rd64(p + H_META_LEN);
    m->meta_dec = rd64(p + H_META_DEC);
    m->meta = dup_range(p, n, rd64(p + H_META_OFF), m->meta_len);
    m->strings_len = rd64(p + H_STR_LEN);
    m->strings = dup_range(p, n, rd64(p + H_STR_OFF), m->strings_len);
    uint64_t toc = rd64(p + H_TOC_OFF);
    m->sec = xcalloc(m->n, sizeof *m->sec);
    for (uint32_t i = 0; i < m->n; i++) {
        msec *s = &m->sec[i];
        uint8_t *e = dup_range(p, n, toc + (uint64_t)i * TOC_ENTRY, TOC_ENTRY);
        memcpy(s->e, e, TOC_ENTRY);
        free(e);
        s->len = rd64(s->e + T_STORED);
        s->data = dup_range(p, n, rd64(s->e + T_OFFSET), s->len);
    }
}

void model_free(model *m)
{
    for (uint32_t i = 0; m->sec && i < m->n; i++)
        free(m->sec[i].data);
    free(m->sec);
    free(m->meta);
    free(m->strings);
    memset(m, 0, sizeof *m);
}

void model_set_name(model *m, uint32_t i, const void *name, size_t len)
{
    uint8_t *s = realloc(m->strings, m->strings_len + len + 1);
    if (!s)
        die("out of memory");
    m->strings = s;
    if (len)
        memcpy(s + m->strings_len, name, len);
    wr32(m->sec[i].e + T_NAME_OFF, (uint32_t)m->strings_len);
    wr16(m->sec[i].e + T_NAME_LEN, (uint16_t)len);
    m->strings_len += len;
}

void model_set_data(model *m, uint32_t i, const void *p, size_t n)
{
    uint8_t *d = xmalloc(n);
    if (n)
        memcpy(d, p, n);
    free(m->sec[i].data);
    m->sec[i].data = d;
    m->sec[i].len = n;
}

void model_set_meta_stored(model *m, const void *p, size_t n, uint64_t decoded_len)
{
    uint8_t *d = xmalloc(n);
    if (n)
        memcpy(d, p, n);
    free(m->meta);
    m->meta = d;
    m->meta_len = n;
    m->meta_dec = decoded_len;
}

void model_set_meta_json(model *m, const char *json, size_t len)
{
    buf f = {0};
    zf_opts o = {0};
    zframe(&f, (const uint8_t *)json, len, &o);
    model_set_meta_stored(m, f.p, f.n, len);
    buf_free(&f);
}

void model_add(model *m, const uint8_t entry[TOC_ENTRY], const char *name, const void *p, size_t n)
{
    msec *ns = realloc(m->sec, (m->n + 1) * sizeof *ns);
    if (!ns)
        die("out of memory");
    m->sec = ns;
    msec *s = &m->sec[m->n];
    memset(s, 0, sizeof *s);
    memcpy(s->e, entry, TOC_ENTRY);
    m->n++;
    model_set_data(m, m->n - 1, p, n);
    model_set_name(m, m->n - 1, name, strlen(name));
}

void model_set_header_size(model *m, uint32_t hs, const uint8_t *ext)
{
    m->header_size = hs;
    wr32(m->header + H_HEADER_SIZE, hs);
    if (hs > 256)
        memcpy(m->header + 256, ext, hs - 256);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

void model_serialize(const model *m, const layout *L, buf *out)
{
    static const layout canonical;
    if (!L)
        L = &canonical;
    uint64_t align = rd32(m->header + H_ALIGN);
    if (align != 64 && align != 256 && align != 4096)
        align = 64; /* a defective alignment field: lay out at 64 */
    uint64_t *offs = xcalloc(m->n, sizeof *offs);
    const uint8_t **names = xcalloc(m->n, sizeof *names);
    size_t *lens = xcalloc(m->n, sizeof *lens);
    for (uint32_t i = 0; i < m->n; i++) {
        uint32_t no = rd32(m->sec[i].e + T_NAME_OFF);
        size_t nl = rd16(m->sec[i].e + T_NAME_LEN);
        int ok = no <= m->strings_len && nl <= m->strings_len - no;
        names[i] = ok ? m->strings + no : m->strings;
        lens[i] = ok ? nl : 0;
    }
    size_t ix_len = 0;
    uint8_t *ix_own = NULL;
    const uint8_t *ix;
    if (L->index) {
        ix = L->index;
        ix_len = L->index_len;
    } else {
        ix = ix_own = index_build(names, lens, m->n, &ix_len);
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
    uint64_t total = pos;
    memset(out, 0, sizeof *out);
    buf_zero(out, (size_t)total);
    uint8_t *b = out->p;
    memcpy(b, m->header, m->header_size);
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
        memcpy(e, m->sec[i].e, TOC_ENTRY);
        wr64(e + T_OFFSET, offs[i]);
        wr64(e + T_STORED, m->sec[i].len);
    }
    if (m->meta_len)
        memcpy(b + meta_off, m->meta, m->meta_len);
    memcpy(b + ix_off, ix, ix_len);
    if (m->strings_len)
        memcpy(b + str_off, m->strings, m->strings_len);
    rehash(b, (size_t)total);
    free(ix_own);
    free(offs);
    free(names);
    free(lens);
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

static void block_header(buf *out, int last, int type, size_t size)
{
    uint32_t v = (uint32_t)last | ((uint32_t)type << 1) | ((uint32_t)size << 3);
    uint8_t b[3] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16)};
    buf_put(out, b, 3);
}

void zframe(buf *out, const uint8_t *c, size_t n, const zf_opts *o)
{
    static const zf_opts none;
    if (!o)
        o = &none;
    static const uint8_t magic[4] = {0x28, 0xB5, 0x2F, 0xFD};
    buf_put(out, magic, 4);
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
    if (fcs_bytes == 1 && !single)
        die("zframe: a 1-byte FCS needs a single-segment frame");
    if (o->no_fcs && single)
        die("zframe: a single-segment frame always has an FCS");
    uint8_t fhd = (uint8_t)((fcs_flag << 6) | (single << 5) | ((o->checksum ? 1 : 0) << 2) |
                            (o->dict_id ? 3 : 0));
    buf_byte(out, fhd);
    if (!single) {
        if (o->window_log < 10 || o->window_log > 41)
            die("zframe: window_log %d", o->window_log);
        buf_byte(out, (uint8_t)((o->window_log - 10) << 3)); /* mantissa 0 */
    }
    if (o->dict_id) {
        uint8_t d[4];
        wr32(d, o->dict_id);
        buf_put(out, d, 4);
    }
    uint8_t f[8];
    if (fcs_bytes == 1) {
        buf_byte(out, (uint8_t)fcs);
    } else if (fcs_bytes == 2) {
        wr16(f, (uint16_t)(fcs - 256));
        buf_put(out, f, 2);
    } else if (fcs_bytes == 4) {
        wr32(f, (uint32_t)fcs);
        buf_put(out, f, 4);
    } else if (fcs_bytes == 8) {
        wr64(f, fcs);
        buf_put(out, f, 8);
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
                buf_byte(out, c[i]);
            } else {
                size_t declared = len + (last ? (size_t)o->extra_block_bytes : 0);
                block_header(out, last, 0, declared);
                buf_put(out, c + i, len);
            }
            i += len;
        }
    }
    if (o->checksum) {
        uint32_t x = (uint32_t)xxh64(c, n, 0);
        if (o->checksum == 2)
            x ^= 0x5A5A5A5Au;
        wr32(f, x);
        buf_put(out, f, 4);
    }
}

/* ------------------------------------------------------------ JSON */

void json_str(buf *b, const uint8_t *s, size_t n)
{
    buf_byte(b, '"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            buf_byte(b, '\\');
            buf_byte(b, c);
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_byte(b, c);
        }
    }
    buf_byte(b, '"');
}

char *json_minify(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    size_t k = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            d[k++] = c;
            if (c == '\\' && i + 1 < n)
                d[k++] = s[++i];
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
            d[k++] = c;
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            d[k++] = c;
        }
    }
    d[k] = 0;
    return d;
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
