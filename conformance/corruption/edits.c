/* edits.c — targeted edits of the corruption suite. Each edit changes one
 * thing in a valid base file, recomputes the digests where the point is to
 * reach a deeper check (otherwise STRUCTURE_HASH_MISMATCH would mask it), and
 * states the class and validation level the spec requires (§12, §15).
 * One file (~1,200 lines): the edit table reads as a list against the
 * spec's check order; each edit is a few lines and they share helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zstd.h>

#include "corrupt.h"

#define C(x) CLS(EXPERT_E_##x)

int heavy_skip(const base *b)
{
    return b->is_vector && !g.exhaustive;
}

static void expect_set(expect *e, int level, uint64_t mask)
{
    memset(e, 0, sizeof *e);
    e->level = level;
    e->mask = mask;
}

static void copy_img(const base *b, xb *out)
{
    out->n = 0;
    xb_put(out, b->img, b->n);
}

/* A hand-built frame of raw blocks; the options used here are all valid ones. */
static void raw_frame(xb *f, const void *content, size_t n, const zf_opts *o)
{
    if (zframe(f, content, n, o) != 0)
        abort();
}

static uint8_t *entry_of(xb *out, const base *b, uint32_t i)
{
    return out->p + b->toc_off + (uint64_t)i * TOC_ENTRY;
}

static int is_adapter(uint16_t t) { return (t >= 0x10 && t <= 0x13) || (t >= 0x20 && t <= 0x25); }

static int referenced(const base *b, uint32_t i)
{
    size_t l;
    const uint8_t *nm = xm_name(&b->m, i, &l);
    for (int k = 0; k < b->nref; k++)
        if (strlen(b->referenced[k]) == l && memcmp(b->referenced[k], nm, l) == 0)
            return 1;
    return 0;
}

/* section selectors */
enum { SEL_FIRST, SEL_FRAMED, SEL_RAW, SEL_RAW_NONCSR, SEL_ADAPTER, SEL_FREEFILE, SEL_NOMODULE, SEL_RANK1_FRAMED,
       SEL_LORA_B, SEL_EMPTY, SEL_NONEMPTY };

static int select_section(const base *b, int sel)
{
    for (uint32_t i = 0; i < b->m.n; i++) {
        const uint8_t *e = b->m.sec[i].entry;
        uint16_t t = rd16(e + T_TYPE);
        uint8_t codec = e[T_CODEC];
        uint64_t dec = rd64(e + T_DECODED), st = rd64(e + T_STORED);
        uint32_t mod = rd32(e + T_MODULE);
        switch (sel) {
        case SEL_FIRST: return 0;
        case SEL_FRAMED: if (codec != 0 && dec > 0) return (int)i; break;
        case SEL_RAW: if (codec == 0 && st > 0) return (int)i; break;
        case SEL_RAW_NONCSR: if (codec == 0 && st > 0 && t != 0x23 && t != 0x24) return (int)i; break;
        case SEL_ADAPTER: if (is_adapter(t)) return (int)i; break;
        case SEL_FREEFILE: if (t == 1 && !referenced(b, i)) return (int)i; break;
        case SEL_NOMODULE: if (mod == UINT32_MAX && t < 0x8000) return (int)i; break;
        case SEL_RANK1_FRAMED:
            if (codec != 0 && dec > 0 && e[T_RANK] == 1 && mod == UINT32_MAX && t < 0x8000 &&
                t != 0x23 && t != 0x24)
                return (int)i;
            break;
        case SEL_LORA_B: if (t == 0x11) return (int)i; break;
        case SEL_EMPTY: if (st == 0) return (int)i; break;
        case SEL_NONEMPTY: if (st > 0) return (int)i; break;
        }
    }
    return -1;
}

/* ------------------------------------------------------ header patches */

enum { OP_SET, OP_OR, OP_ADD, OP_SUB, OP_COPY };

typedef struct hpatch {
    const char *name;
    unsigned off, width;
    int op;
    uint64_t v;
    int level; /* used when S1–S8 pass */
    uint64_t mask;
} hpatch;

static const hpatch k_hpatch[] = {
    {"hdr/major=3", H_MAJOR, 2, OP_SET, 3, LV_S, 0},
    {"hdr/major=0", H_MAJOR, 2, OP_SET, 0, LV_S, 0},
    {"hdr/minor=7 (valid)", H_MINOR, 2, OP_SET, 7, LV_NONE, 0},
    {"hdr/header_size=252", H_HEADER_SIZE, 4, OP_SET, 252, LV_S, 0},
    {"hdr/header_size=257", H_HEADER_SIZE, 4, OP_SET, 257, LV_S, 0},
    {"hdr/header_size=4104", H_HEADER_SIZE, 4, OP_SET, 4104, LV_S, 0},
    {"hdr/header_size=2^32-8", H_HEADER_SIZE, 4, OP_SET, 0xFFFFFFF8u, LV_S, 0},
    {"hdr/alignment=128", H_ALIGN, 4, OP_SET, 128, LV_S, 0},
    {"hdr/alignment=0", H_ALIGN, 4, OP_SET, 0, LV_S, 0},
    {"hdr/flags bit 0", H_FLAGS, 4, OP_OR, 1, LV_S, 0},
    {"hdr/flags bit 15", H_FLAGS, 4, OP_OR, 0x8000, LV_S, 0},
    {"hdr/flags bit 16 (must-ignore)", H_FLAGS, 4, OP_OR, 0x10000, LV_NONE, 0},
    {"hdr/flags bit 31 (must-ignore)", H_FLAGS, 4, OP_OR, 0x80000000u, LV_NONE, 0},
    {"hdr/toc_entry_size=64", H_TOC_ENTRY_SIZE, 4, OP_SET, 64, LV_S, 0},
    {"hdr/reserved 0xE8", H_RESERVED, 1, OP_SET, 1, LV_S, 0},
    {"hdr/reserved 0xFF", 0xFF, 1, OP_SET, 0x80, LV_S, 0},
    {"hdr/toc_count=65537", H_TOC_COUNT, 4, OP_SET, 65537, LV_S, 0},
    {"hdr/toc_count=2^32-1", H_TOC_COUNT, 4, OP_SET, 0xFFFFFFFFu, LV_S, 0},
    {"hdr/toc_count+1", H_TOC_COUNT, 4, OP_ADD, 1, LV_S, ANY_CLASS},
    {"hdr/metadata_length=0", H_META_LEN, 8, OP_SET, 0, LV_S, 0},
    {"hdr/metadata_length=2^24+1", H_META_LEN, 8, OP_SET, (1u << 24) + 1, LV_S, 0},
    {"hdr/metadata_length=2^64-1", H_META_LEN, 8, OP_SET, UINT64_MAX, LV_S, 0},
    {"hdr/metadata_decoded_length=1", H_META_DEC, 8, OP_SET, 1, LV_S, 0},
    {"hdr/metadata_decoded_length=2^24+1", H_META_DEC, 8, OP_SET, (1u << 24) + 1, LV_S, 0},
    {"hdr/metadata_decoded_length=2^64-1", H_META_DEC, 8, OP_SET, UINT64_MAX, LV_S, 0},
    {"hdr/metadata_decoded_length+1 (lie)", H_META_DEC, 8, OP_ADD, 1, LV_S, C(BAD_METADATA)},
    {"hdr/metadata_decoded_length-1 (lie)", H_META_DEC, 8, OP_SUB, 1, LV_S, C(BAD_METADATA)},
    {"hdr/strings_length=2^26+1", H_STR_LEN, 8, OP_SET, (1u << 26) + 1, LV_S, 0},
    {"hdr/strings_length=2^64-1", H_STR_LEN, 8, OP_SET, UINT64_MAX, LV_S, 0},
    {"hdr/index_length+4", H_INDEX_LEN, 8, OP_ADD, 4, LV_S, 0},
    {"hdr/index_length=2^64-4", H_INDEX_LEN, 8, OP_SET, UINT64_MAX - 3, LV_S, 0},
    {"hdr/metadata_offset+1", H_META_OFF, 8, OP_ADD, 1, LV_S, 0},
    {"hdr/metadata_offset=0", H_META_OFF, 8, OP_SET, 0, LV_S, 0},
    {"hdr/metadata_offset=2^64-8 (wraps)", H_META_OFF, 8, OP_SET, UINT64_MAX - 7, LV_S, 0},
    {"hdr/toc_offset=2^64-8 (wraps)", H_TOC_OFF, 8, OP_SET, UINT64_MAX - 7, LV_S, 0},
    {"hdr/toc_offset+4", H_TOC_OFF, 8, OP_ADD, 4, LV_S, 0},
    {"hdr/index_offset=2^64-8 (wraps)", H_INDEX_OFF, 8, OP_SET, UINT64_MAX - 7, LV_S, 0},
    {"hdr/index_offset+4", H_INDEX_OFF, 8, OP_ADD, 4, LV_S, 0},
    {"hdr/strings_offset=2^64-1 (wraps)", H_STR_OFF, 8, OP_SET, UINT64_MAX, LV_S, 0},
    {"hdr/strings_offset past EOF", H_STR_OFF, 8, OP_ADD, 1, LV_S, ANY_CLASS},
    {"hdr/file_length+1", H_FILE_LEN, 8, OP_ADD, 1, LV_S, 0},
    {"hdr/file_length-1", H_FILE_LEN, 8, OP_SUB, 1, LV_S, 0},
    {"hdr/file_length=2^64-1", H_FILE_LEN, 8, OP_SET, UINT64_MAX, LV_S, 0},
    /* metadata region moved onto the TOC: a region that does not hold a zstd frame */
    {"layout/metadata_offset=toc_offset", H_META_OFF, 8, OP_COPY, H_TOC_OFF, LV_S, C(BAD_METADATA)},
};

static uint64_t rdn(const uint8_t *p, unsigned w)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < w; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void wrn(uint8_t *p, unsigned w, uint64_t v)
{
    for (unsigned i = 0; i < w; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int edit_hpatch(const base *b, int arg, xb *out, expect *e)
{
    const hpatch *h = &k_hpatch[arg];
    copy_img(b, out);
    uint8_t *p = out->p + h->off;
    uint64_t v = rdn(p, h->width);
    switch (h->op) {
    case OP_SET: v = h->v; break;
    case OP_OR: v |= h->v; break;
    case OP_ADD: v += h->v; break;
    case OP_SUB: v -= h->v; break;
    case OP_COPY: v = rdn(out->p + h->v, h->width); break;
    }
    wrn(p, h->width, v);
    xm_rehash(out->p, out->n);
    int o = xm_oracle_header(out->p, out->n);
    if (o != 0)
        expect_set(e, LV_S, CLS(o));
    else
        expect_set(e, h->level, h->mask);
    return 0;
}

/* ------------------------------------------------------ TOC patches */

enum { V_LIT, V_STRLEN, V_MODCOUNT, V_PAST_EOF, V_WRAP_ALIGN, V_FLIP };

typedef struct tpatch {
    const char *name;
    int sel;
    unsigned off, width;
    int op;
    int vkind;
    uint64_t v;
    int level;
    uint64_t mask;
} tpatch;

#define TP(n, s, o, w, op, v, lv, m) {n, s, o, w, op, V_LIT, v, lv, m}
static const tpatch k_tpatch[] = {
    TP("toc/reserved byte 11", SEL_FIRST, T_RES1, 1, OP_SET, 1, LV_S, C(BAD_TOC)),
    TP("toc/reserved bytes 28-31", SEL_FIRST, T_RES2, 4, OP_SET, 0x01000000u, LV_S, C(BAD_TOC)),
    TP("toc/reserved byte 127", SEL_FIRST, 127, 1, OP_SET, 0x80, LV_S, C(BAD_TOC)),
    TP("toc/codec=3", SEL_FIRST, T_CODEC, 1, OP_SET, 3, LV_S, C(UNKNOWN_CODEC)),
    TP("toc/codec=255", SEL_FIRST, T_CODEC, 1, OP_SET, 255, LV_S, C(UNKNOWN_CODEC)),
    TP("toc/dtype=14", SEL_FIRST, T_DTYPE, 1, OP_SET, 14, LV_S, C(UNKNOWN_DTYPE)),
    TP("toc/dtype=255", SEL_FIRST, T_DTYPE, 1, OP_SET, 255, LV_S, C(UNKNOWN_DTYPE)),
    TP("toc/section_type=0", SEL_FIRST, T_TYPE, 2, OP_SET, 0, LV_S, C(UNKNOWN_SECTION_TYPE)),
    TP("toc/section_type=0x0003", SEL_FIRST, T_TYPE, 2, OP_SET, 3, LV_S, C(UNKNOWN_SECTION_TYPE)),
    TP("toc/section_type=0x7FFF", SEL_FIRST, T_TYPE, 2, OP_SET, 0x7FFF, LV_S, C(UNKNOWN_SECTION_TYPE)),
    TP("toc/adapter section made must-ignore (0x8000)", SEL_ADAPTER, T_TYPE, 2, OP_SET, 0x8000, LV_S, C(BAD_TOC)),
    TP("toc/free FILE made must-ignore (valid)", SEL_FREEFILE, T_TYPE, 2, OP_SET, 0xFFFF, LV_NONE, 0),
    TP("toc/flags bit 0", SEL_FIRST, T_FLAGS, 4, OP_OR, 1, LV_S, C(UNKNOWN_FLAG)),
    TP("toc/flags bit 15", SEL_FIRST, T_FLAGS, 4, OP_OR, 0x8000, LV_S, C(UNKNOWN_FLAG)),
    TP("toc/flags bit 16 (must-ignore)", SEL_FIRST, T_FLAGS, 4, OP_OR, 0x10000, LV_NONE, 0),
    TP("toc/rank=5", SEL_FIRST, T_RANK, 1, OP_SET, 5, LV_S, C(BAD_TOC)),
    TP("toc/rank=255", SEL_FIRST, T_RANK, 1, OP_SET, 255, LV_S, C(BAD_TOC)),
    TP("toc/dims[3] beyond rank", SEL_FIRST, T_DIMS + 24, 8, OP_SET, 1, LV_S, C(BAD_TOC)),
    TP("toc/decoded_length=2^32+1", SEL_FIRST, T_DECODED, 8, OP_SET, (UINT64_C(1) << 32) + 1, LV_S, C(LIMIT_EXCEEDED)),
    TP("toc/decoded_length=2^64-1", SEL_FIRST, T_DECODED, 8, OP_SET, UINT64_MAX, LV_S, C(LIMIT_EXCEEDED)),
    TP("toc/decoded_length+1 (shape lie)", SEL_NONEMPTY, T_DECODED, 8, OP_ADD, 1, LV_S, C(SIZE_MISMATCH)),
    TP("toc/dims[0]=2^63 (numel overflow)", SEL_NONEMPTY, T_DIMS, 8, OP_SET, UINT64_C(1) << 63, LV_S, C(SIZE_MISMATCH)),
    TP("toc/raw stored_length+1", SEL_RAW, T_STORED, 8, OP_ADD, 1, LV_S, C(SIZE_MISMATCH)),
    TP("toc/raw stored_length=2^64-1", SEL_RAW, T_STORED, 8, OP_SET, UINT64_MAX, LV_S, C(SIZE_MISMATCH)),
    TP("toc/raw frame_size=65536", SEL_RAW, T_FRAME, 4, OP_SET, 65536, LV_S, C(BAD_TOC)),
    TP("toc/framed frame_size=0", SEL_FRAMED, T_FRAME, 4, OP_SET, 0, LV_S, C(BAD_TOC)),
    TP("toc/framed frame_size=32768", SEL_FRAMED, T_FRAME, 4, OP_SET, 32768, LV_S, C(BAD_TOC)),
    TP("toc/framed frame_size=65537", SEL_FRAMED, T_FRAME, 4, OP_SET, 65537, LV_S, C(BAD_TOC)),
    TP("toc/framed frame_size=2^27", SEL_FRAMED, T_FRAME, 4, OP_SET, 1u << 27, LV_S, C(BAD_TOC)),
    TP("toc/framed stored_length=2^64-1 (wraps)", SEL_FRAMED, T_STORED, 8, OP_SET, UINT64_MAX, LV_S, C(OUT_OF_BOUNDS)),
    TP("toc/name_length=0", SEL_FIRST, T_NAME_LEN, 2, OP_SET, 0, LV_S, C(BAD_TOC)),
    TP("toc/name_length=1025", SEL_FIRST, T_NAME_LEN, 2, OP_SET, 1025, LV_S, C(BAD_TOC)),
    TP("toc/name_length=65535", SEL_FIRST, T_NAME_LEN, 2, OP_SET, 65535, LV_S, C(BAD_TOC)),
    {"toc/name_offset=strings_length", SEL_FIRST, T_NAME_OFF, 4, OP_SET, V_STRLEN, 0, LV_S, C(OUT_OF_BOUNDS)},
    TP("toc/name_offset=2^32-1 (wraps)", SEL_FIRST, T_NAME_OFF, 4, OP_SET, 0xFFFFFFFFu, LV_S, C(OUT_OF_BOUNDS)),
    TP("toc/layer=65536", SEL_FIRST, T_LAYER, 4, OP_SET, 65536, LV_S, C(BAD_TOC)),
    TP("toc/layer=2^32-2", SEL_FIRST, T_LAYER, 4, OP_SET, 0xFFFFFFFEu, LV_S, C(BAD_TOC)),
    {"toc/module=module count", SEL_NOMODULE, T_MODULE, 4, OP_SET, V_MODCOUNT, 0, LV_S, C(BAD_TOC)},
    TP("toc/module=2^32-2", SEL_FIRST, T_MODULE, 4, OP_SET, 0xFFFFFFFEu, LV_S, C(BAD_TOC)),
    TP("toc/adapter module=NONE", SEL_ADAPTER, T_MODULE, 4, OP_SET, 0xFFFFFFFFu, LV_S, C(BAD_TOC)),
    TP("toc/adapter layer+1 (module layer mismatch)", SEL_ADAPTER, T_LAYER, 4, OP_ADD, 1, LV_S, C(BAD_TOC)),
    TP("toc/adapter dtype=BYTES", SEL_ADAPTER, T_DTYPE, 1, OP_SET, 0, LV_S, C(BAD_TOC)),
    TP("toc/adapter dtype=I32", SEL_ADAPTER, T_DTYPE, 1, OP_SET, 9, LV_S, C(BAD_TOC) | C(SIZE_MISMATCH)),
    TP("toc/LORA_B retyped LORA_A (module composition)", SEL_LORA_B, T_TYPE, 2, OP_SET, 0x10, LV_S, C(BAD_TOC)),
    {"layout/section offset past EOF", SEL_NONEMPTY, T_OFFSET, 8, OP_SET, V_PAST_EOF, 0, LV_S, C(OUT_OF_BOUNDS)},
    {"layout/section offset=2^64-alignment (wraps)", SEL_NONEMPTY, T_OFFSET, 8, OP_SET, V_WRAP_ALIGN, 0, LV_S, C(OUT_OF_BOUNDS)},
    {"layout/empty section offset past EOF", SEL_EMPTY, T_OFFSET, 8, OP_SET, V_PAST_EOF, 0, LV_S, C(OUT_OF_BOUNDS)},
    TP("layout/empty section offset=8 (misaligned)", SEL_EMPTY, T_OFFSET, 8, OP_SET, 8, LV_S, C(MISALIGNED)),
    TP("layout/empty section offset=alignment (valid)", SEL_EMPTY, T_OFFSET, 8, OP_SET, 4096, LV_NONE, 0),
    {"toc/sha256 bit flip (rehashed)", SEL_FIRST, T_SHA, 1, OP_SET, V_FLIP, 0, LV_A, C(SECTION_HASH_MISMATCH)},
};

static int edit_tpatch(const base *b, int arg, xb *out, expect *e)
{
    const tpatch *t = &k_tpatch[arg];
    int i = select_section(b, t->sel);
    if (i < 0 || b->m.n == 0)
        return -1;
    const uint8_t *be = b->m.sec[i].entry;
    if (t->off == T_DIMS + 24 && be[T_RANK] >= 4)
        return -1;
    if (t->off == T_DIMS && be[T_RANK] == 0)
        return -1;
    copy_img(b, out);
    uint8_t *p = entry_of(out, b, (uint32_t)i) + t->off;
    uint64_t v = rdn(p, t->width), al = rd32(b->m.header + H_ALIGN), fl = b->n;
    uint64_t lit = t->v;
    switch (t->vkind) {
    case V_STRLEN: lit = b->m.strings_len; break;
    case V_MODCOUNT: lit = b->module_count; break;
    case V_PAST_EOF: lit = (fl + al) / al * al; break;
    case V_WRAP_ALIGN: lit = (uint64_t)0 - al; break;
    case V_FLIP: lit = v ^ 0x10; break;
    }
    switch (t->op) {
    case OP_SET: v = lit; break;
    case OP_OR: v |= lit; break;
    case OP_ADD: v += lit; break;
    case OP_SUB: v -= lit; break;
    }
    if (t->off == T_OFFSET && t->vkind == V_LIT && t->v == 4096)
        v = al; /* "offset = alignment" for an empty section */
    wrn(p, t->width, v);
    xm_rehash(out->p, out->n);
    expect_set(e, t->level, t->mask);
    return 0;
}

/* ------------------------------------------------------ layout edits */

/* extents of a base in file order, for the overlap/misalignment edits */
static int next_gap_after(const base *b, uint32_t i, uint64_t *before, uint64_t *after)
{
    uint64_t s = rd64(b->m.sec[i].entry + T_OFFSET), end = s + b->m.sec[i].len;
    uint64_t prev_end = b->m.header_size, next = b->n;
    uint64_t r[4][2] = {{b->meta_off, b->m.meta_len}, {b->toc_off, (uint64_t)b->m.n * TOC_ENTRY},
                        {b->index_off, b->index_len}, {b->str_off, b->m.strings_len}};
    for (int k = 0; k < 4; k++) {
        if (r[k][1] == 0)
            continue;
        if (r[k][0] >= end && r[k][0] < next)
            next = r[k][0];
        if (r[k][0] + r[k][1] <= s && r[k][0] + r[k][1] > prev_end)
            prev_end = r[k][0] + r[k][1];
    }
    for (uint32_t j = 0; j < b->m.n; j++) {
        if (j == i || b->m.sec[j].len == 0)
            continue;
        uint64_t o = rd64(b->m.sec[j].entry + T_OFFSET), oe = o + b->m.sec[j].len;
        if (o >= end && o < next)
            next = o;
        if (oe <= s && oe > prev_end)
            prev_end = oe;
    }
    *before = s - prev_end;
    *after = next - end;
    return 0;
}

static int edit_misaligned(const base *b, int arg, xb *out, expect *e)
{
    (void)arg;
    for (uint32_t i = 0; i < b->m.n; i++) {
        if (b->m.sec[i].len == 0)
            continue;
        uint64_t before, after;
        next_gap_after(b, i, &before, &after);
        int64_t delta = after >= 8 ? 8 : before >= 8 ? -8 : 0;
        if (delta == 0)
            continue;
        copy_img(b, out);
        uint8_t *p = entry_of(out, b, i) + T_OFFSET;
        wr64(p, rd64(p) + (uint64_t)delta);
        xm_rehash(out->p, out->n);
        expect_set(e, LV_S, C(MISALIGNED));
        return 0;
    }
    return -1;
}

static int edit_overlap(const base *b, int arg, xb *out, expect *e)
{
    for (uint32_t i = 0; i < b->m.n; i++) {
        for (uint32_t j = i + 1; j < b->m.n; j++) {
            if (b->m.sec[i].len == 0 || b->m.sec[j].len == 0)
                continue;
            uint64_t target = arg == 0 ? rd64(b->m.sec[i].entry + T_OFFSET)
                                       : b->toc_off / rd32(b->m.header + H_ALIGN) * rd32(b->m.header + H_ALIGN);
            if (target < b->m.header_size || target + b->m.sec[j].len > b->n)
                continue;
            copy_img(b, out);
            wr64(entry_of(out, b, j) + T_OFFSET, target);
            xm_rehash(out->p, out->n);
            expect_set(e, LV_S, C(OVERLAP));
            return 0;
        }
    }
    return -1;
}

static int edit_serialize(const base *b, int arg, xb *out, expect *e)
{
    xm_model m = xm_clone(&b->m);
    xm_layout L = {0};
    uint8_t ext[24];
    switch (arg) {
    case 0: L.gap_meta = 8; expect_set(e, LV_S, C(BAD_PADDING)); break;
    case 1: L.trailing = 1; expect_set(e, LV_S, C(TRAILING_DATA)); break;
    case 2: L.regions_first = 1; expect_set(e, LV_NONE, 0); break;
    case 3: /* header extension: 24 bytes of anything, hashed */
        for (int k = 0; k < 24; k++)
            ext[k] = (uint8_t)((k + 256) * 13 + 1);
        xm_set_header_size(&m, 280, ext);
        expect_set(e, LV_NONE, 0);
        break;
    case 4: /* bytes in the strings region that belong to no name */
        m.strings = realloc(m.strings, m.strings_len + 5);
        memcpy(m.strings + m.strings_len, "\xff\x00zz\x01", 5);
        m.strings_len += 5;
        expect_set(e, LV_NONE, 0);
        break;
    }
    xb_free(out);
    xm_serialize(&m, &L, out);
    xm_free(&m);
    return 0;
}

static int edit_append(const base *b, int arg, xb *out, expect *e)
{
    (void)arg;
    copy_img(b, out);
    xb_u8(out, 0);
    expect_set(e, LV_S, C(TRAILING_DATA));
    return 0;
}

static int edit_total_decoded(const base *b, int arg, xb *out, expect *e)
{
    (void)arg;
    if (b->m.n < 17)
        return -1;
    for (uint32_t i = 0; i < 17; i++) {
        const uint8_t *en = b->m.sec[i].entry;
        if (en[T_CODEC] == 0 || en[T_RANK] == 0 || rd16(en + T_TYPE) >= 0x8000)
            return -1;
    }
    copy_img(b, out);
    for (uint32_t i = 0; i < 17; i++) {
        uint8_t *en = entry_of(out, b, i);
        unsigned r = en[T_RANK];
        size_t el = xm_dtype_size(en[T_DTYPE]);
        for (unsigned k = 0; k + 1 < r; k++)
            wr64(en + T_DIMS + 8 * k, 1);
        wr64(en + T_DIMS + 8 * (r - 1), (UINT64_C(1) << 32) / el);
        wr64(en + T_DECODED, UINT64_C(1) << 32);
    }
    xm_rehash(out->p, out->n);
    expect_set(e, LV_S, C(LIMIT_EXCEEDED));
    return 0;
}

/* ------------------------------------------------------ frames */

/* frame 0 of section i as stored (decompressed, still shuffled) */
static uint8_t *frame0_content(const base *b, uint32_t i, size_t *len)
{
    const xm_section *s = &b->m.sec[i];
    uint64_t dec = rd64(s->entry + T_DECODED);
    uint32_t fs = rd32(s->entry + T_FRAME);
    uint64_t nf = (dec - 1) / fs + 1;
    size_t L = (size_t)(dec < fs ? dec : fs);
    uint8_t *t = xm_alloc(L);
    size_t c = rd32(s->data);
    size_t r = ZSTD_decompress(t, L, s->data + 4 * nf, c);
    if (ZSTD_isError(r) || r != L)
        abort();
    *len = L;
    return t;
}

static const uint8_t *g_bomb, *g_bomb_nofcs;
static size_t g_bomb_n, g_bomb_nofcs_n;
#define BOMB_SIZE ((size_t)64 << 20)

static void make_bombs(void)
{
    if (g_bomb)
        return;
    uint8_t *z = calloc(1, BOMB_SIZE);
    if (!z)
        abort();
    g_bomb = xm_zstd(z, BOMB_SIZE, 1, 1, 0, &g_bomb_n);
    g_bomb_nofcs = xm_zstd(z, BOMB_SIZE, 1, 0, 0, &g_bomb_nofcs_n);
    free(z);
}

enum { FR_FCS_PLUS, FR_FCS_ABSENT, FR_DICT, FR_WIN28, FR_WIN27, FR_CKSUM_BAD, FR_CKSUM_OK,
       FR_SKIPPABLE, FR_LEGACY, FR_TRAILING, FR_TWO, FR_EMPTY, FR_RAWBLOCKS, FR_BOMB, FR_BOMB_NOFCS,
       FR_SHORT, FR_TABLE_PLUS, FR_TABLE_SHORT, FR_TABLE_HUGE, FR_FCS_MINUS, FR_N };
static const char *k_frame_names[FR_N] = {
    "frame/content size L+1", "frame/content size absent", "frame/dictionary id",
    "frame/window 2^28", "frame/window 2^27 (valid)", "frame/checksum wrong",
    "frame/checksum right (valid)", "frame/skippable frame", "frame/legacy magic",
    "frame/trailing bytes in slot", "frame/two frames in one slot", "frame/empty slot (c_0 = 0)",
    "frame/hand-built raw blocks (valid)", "frame/zstd bomb 64 MiB (content size present)",
    "frame/zstd bomb 64 MiB (no content size)", "frame/content shorter than declared",
    "frame/table c_0+1", "frame/stored shorter than table", "frame/table c_0=2^32-1",
    "frame/content size L-1"};

static int edit_frame(const base *b, int arg, xb *out, expect *e)
{
    int si = select_section(b, SEL_FRAMED);
    if (si < 0)
        return -1;
    uint32_t i = (uint32_t)si;
    const xm_section *s = &b->m.sec[i];
    uint64_t dec = rd64(s->entry + T_DECODED);
    uint32_t fs = rd32(s->entry + T_FRAME);
    uint64_t nf = (dec - 1) / fs + 1;
    size_t c0 = rd32(s->data);
    size_t L = 0;
    uint8_t *t = frame0_content(b, i, &L);
    xb f = {0};
    zf_opts o = {.no_rle = 1};
    expect_set(e, LV_A, C(DECODE_FAILED));
    switch (arg) {
    case FR_FCS_PLUS: o.fcs_set = 1; o.fcs = L + 1; o.window_log = 17; raw_frame(&f, t, L, &o); break;
    case FR_FCS_MINUS: o.fcs_set = 1; o.fcs = L - 1; o.window_log = 17; raw_frame(&f, t, L, &o); break;
    case FR_FCS_ABSENT: o.no_fcs = 1; o.window_log = 17; raw_frame(&f, t, L, &o); break;
    case FR_DICT: o.dict_id = 7; raw_frame(&f, t, L, &o); break;
    case FR_WIN28: o.window_log = 28; raw_frame(&f, t, L, &o); break;
    case FR_WIN27: o.window_log = 27; raw_frame(&f, t, L, &o);
        expect_set(e, LV_NONE, 0); break;
    case FR_CKSUM_BAD: o.checksum = 2; raw_frame(&f, t, L, &o); break;
    case FR_CKSUM_OK: {
        size_t cl;
        uint8_t *c = xm_zstd(t, L, 3, 1, 1, &cl);
        xb_put(&f, c, cl);
        free(c);
        expect_set(e, LV_NONE, 0);
        break;
    }
    case FR_SKIPPABLE: o.magic = 0x184D2A50u; raw_frame(&f, t, L, &o); break;
    case FR_LEGACY: o.magic = 0xFD2FB527u; raw_frame(&f, t, L, &o); break;
    case FR_TRAILING: raw_frame(&f, t, L, &o); xb_put(&f, "xyz", 3); break;
    case FR_TWO:
        if (L < 2) { free(t); return -1; }
        raw_frame(&f, t, L / 2, &o); raw_frame(&f, t + L / 2, L - L / 2, &o); break;
    case FR_EMPTY: break;
    case FR_RAWBLOCKS: raw_frame(&f, t, L, &o); expect_set(e, LV_NONE, 0); break;
    case FR_BOMB: case FR_BOMB_NOFCS:
        if (heavy_skip(b)) { free(t); return -1; }
        make_bombs();
        if (arg == FR_BOMB)
            xb_put(&f, g_bomb, g_bomb_n);
        else
            xb_put(&f, g_bomb_nofcs, g_bomb_nofcs_n);
        break;
    case FR_SHORT:
        if (L < 2) { free(t); return -1; }
        o.fcs_set = 1; o.fcs = L; o.window_log = 17; raw_frame(&f, t, L - 1, &o); break;
    case FR_TABLE_PLUS: case FR_TABLE_SHORT: case FR_TABLE_HUGE: break;
    }
    free(t);
    xb st = {0};
    if (arg == FR_TABLE_SHORT) {
        xb_put(&st, s->data, 2);
    } else if (arg == FR_TABLE_PLUS || arg == FR_TABLE_HUGE) {
        xb_put(&st, s->data, s->len);
        wr32(st.p, arg == FR_TABLE_PLUS ? (uint32_t)c0 + 1 : 0xFFFFFFFFu);
    } else {
        xb_put(&st, s->data, (size_t)(4 * nf));
        wr32(st.p, (uint32_t)f.n);
        xb_put(&st, f.p, f.n);
        xb_put(&st, s->data + 4 * nf + c0, s->len - 4 * nf - c0);
    }
    if (arg == FR_TABLE_PLUS || arg == FR_TABLE_SHORT || arg == FR_TABLE_HUGE)
        expect_set(e, LV_A, C(SIZE_MISMATCH));
    xm_model m = xm_clone(&b->m);
    xm_set_section(&m, i, st.p, st.n);
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
    xb_free(&st);
    xb_free(&f);
    return 0;
}

/* decoded_length lies on a rank-1 section without module: with the same
 * frame count the last frame's content size is wrong (DECODE_FAILED); with
 * another frame count the frame table no longer adds up (SIZE_MISMATCH). */
static int edit_decoded_lie(const base *b, int arg, xb *out, expect *e)
{
    int si = select_section(b, SEL_RANK1_FRAMED);
    if (si < 0)
        return -1;
    xm_model m = xm_clone(&b->m);
    uint8_t *en = m.sec[si].entry;
    uint64_t dec = rd64(en + T_DECODED), fs = rd32(en + T_FRAME);
    size_t el = xm_dtype_size(en[T_DTYPE]);
    uint64_t nd = arg == 0 ? dec + el : arg == 1 ? dec - el : dec + fs;
    if (nd == 0) {
        xm_free(&m);
        return -1;
    }
    wr64(en + T_DECODED, nd);
    wr64(en + T_DIMS, nd / el);
    uint64_t n0 = (dec - 1) / fs + 1, n1 = (nd - 1) / fs + 1;
    expect_set(e, LV_A, n0 == n1 ? C(DECODE_FAILED) : C(SIZE_MISMATCH));
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
    return 0;
}

/* ------------------------------------------------------ metadata */

static void meta_replace(const base *b, xb *out, const void *stored, size_t n, uint64_t dec)
{
    xm_model m = xm_clone(&b->m);
    xm_set_meta_stored(&m, stored, n, dec);
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
}

static void meta_json(const base *b, xb *out, const char *json, size_t n)
{
    xm_model m = xm_clone(&b->m);
    xm_set_metadata_json(&m, json, n);
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
}

enum { MF_NOT_ZSTD, MF_NO_FCS, MF_TRAILING, MF_TWO, MF_SKIPPABLE_FIRST, MF_BOMB, MF_BOMB_NOFCS,
       MF_WIN28, MF_DICT, MF_CKSUM_BAD, MF_CKSUM_OK, MF_RAWBLOCKS, MF_N };
static const char *k_meta_frame_names[MF_N] = {
    "meta/not a zstd frame", "meta/content size absent", "meta/trailing byte",
    "meta/two frames", "meta/skippable frame first", "meta/zstd bomb 64 MiB (content size present)",
    "meta/zstd bomb 64 MiB (no content size)", "meta/window 2^28", "meta/dictionary id",
    "meta/checksum wrong", "meta/checksum right (valid)", "meta/hand-built raw blocks (valid)"};

static int edit_meta_frame(const base *b, int arg, xb *out, expect *e)
{
    if ((arg == MF_BOMB || arg == MF_BOMB_NOFCS || b->m.meta_dec > (1u << 20)) && heavy_skip(b))
        return -1;
    size_t jl = 0;
    char *j = meta_json_of(b, &jl);
    if (!j)
        return -1;
    xb f = {0};
    size_t cl;
    uint8_t *c;
    zf_opts o = {.no_rle = 1};
    expect_set(e, LV_S, C(BAD_METADATA));
    switch (arg) {
    case MF_NOT_ZSTD: xb_put(&f, j, jl); break;
    case MF_NO_FCS: c = xm_zstd(j, jl, 3, 0, 0, &cl); xb_put(&f, c, cl); free(c); break;
    case MF_TRAILING: c = xm_zstd(j, jl, 3, 1, 0, &cl); xb_put(&f, c, cl); xb_u8(&f, 0); free(c); break;
    case MF_TWO:
        raw_frame(&f, j, jl / 2, &o);
        raw_frame(&f, j + jl / 2, jl - jl / 2, &o);
        break;
    case MF_SKIPPABLE_FIRST:
        xb_u32(&f, 0x184D2A50u);
        xb_u32(&f, 4);
        xb_u32(&f, 0);
        raw_frame(&f, j, jl, &o);
        break;
    case MF_BOMB: case MF_BOMB_NOFCS: {
        /* the JSON followed by 64 MiB of spaces: valid JSON, enormous */
        char *big = malloc(jl + BOMB_SIZE);
        if (!big)
            abort();
        memcpy(big, j, jl);
        memset(big + jl, ' ', BOMB_SIZE);
        c = xm_zstd(big, jl + BOMB_SIZE, 1, arg == MF_BOMB, 0, &cl);
        free(big);
        xb_put(&f, c, cl);
        free(c);
        break;
    }
    case MF_WIN28: o.window_log = 28; raw_frame(&f, j, jl, &o); break;
    case MF_DICT: o.dict_id = 0x10000; raw_frame(&f, j, jl, &o); break;
    case MF_CKSUM_BAD: o.checksum = 2; raw_frame(&f, j, jl, &o); break;
    case MF_CKSUM_OK: c = xm_zstd(j, jl, 3, 1, 1, &cl); xb_put(&f, c, cl); free(c);
        expect_set(e, LV_NONE, 0); break;
    case MF_RAWBLOCKS: raw_frame(&f, j, jl, &o); expect_set(e, LV_NONE, 0); break;
    }
    meta_replace(b, out, f.p, f.n, jl);
    xb_free(&f);
    free(j);
    return 0;
}

/* JSON text edits: insert a member at the start of the top-level object,
 * or wrap/prefix/suffix the document. */
enum { J_INSERT, J_PREFIX, J_SUFFIX, J_WRAP, J_NEST, J_MODULES };
typedef struct jedit {
    const char *name;
    int kind;
    const char *text;
    size_t text_len; /* 0: strlen */
    int arg;
    int level;
    uint64_t mask;
} jedit;

#define JB(n, k, t) {n, k, t, 0, 0, LV_S, C(BAD_METADATA)}
#define JOK(n, k, t) {n, k, t, 0, 0, LV_NONE, 0}
static const jedit k_jedit[] = {
    {"json/nested 100,000 deep", J_NEST, NULL, 0, 100000, LV_S, C(BAD_METADATA)},
    {"json/nested depth 33", J_NEST, NULL, 0, 32, LV_S, C(BAD_METADATA)},
    {"json/nested depth 32 (valid)", J_NEST, NULL, 0, 31, LV_NONE, 0},
    JB("json/duplicate key", J_INSERT, "\"name\":\"dup\""),
    JB("json/duplicate key after unescaping", J_INSERT, "\"n\\u0061me\":\"dup\""),
    JB("json/duplicate key nested", J_INSERT, "\"zz\":{\"a\":1,\"a\":2}"),
    JB("json/duplicate key in array element", J_INSERT, "\"zz\":[{\"b\":1,\"b\":1}]"),
    JB("json/invalid UTF-8 overlong", J_INSERT, "\"zz\":\"\xC0\xAF\""),
    JB("json/invalid UTF-8 surrogate", J_INSERT, "\"zz\":\"\xED\xA0\x80\""),
    JB("json/invalid UTF-8 > U+10FFFF", J_INSERT, "\"zz\":\"\xF4\x90\x80\x80\""),
    JB("json/invalid UTF-8 0xFF", J_INSERT, "\"zz\":\"\xFF\""),
    JB("json/invalid UTF-8 truncated", J_INSERT, "\"zz\":\"\xE2\x82\""),
    JB("json/invalid UTF-8 in key", J_INSERT, "\"\xC3\":1"),
    JOK("json/4-byte UTF-8 (valid)", J_INSERT, "\"zz\":\"\xF0\x9F\x98\x80\""),
    JB("json/byte-order mark", J_PREFIX, "\xEF\xBB\xBF"),
    JB("json/NaN", J_INSERT, "\"zz\":NaN"),
    JB("json/Infinity", J_INSERT, "\"zz\":Infinity"),
    JB("json/-Infinity", J_INSERT, "\"zz\":-Infinity"),
    JB("json/1e999", J_INSERT, "\"zz\":1e999"),
    JB("json/-1e999", J_INSERT, "\"zz\":-1e999"),
    JB("json/1.8e308 (rounds to infinity)", J_INSERT, "\"zz\":1.8e308"),
    JOK("json/1.7976931348623157e308 (valid)", J_INSERT, "\"zz\":1.7976931348623157e308"),
    JOK("json/1e-400 (underflow, valid)", J_INSERT, "\"zz\":1e-400"),
    JOK("json/-0 (valid)", J_INSERT, "\"zz\":-0"),
    JOK("json/integer 1e20 written out (valid)", J_INSERT, "\"zz\":100000000000000000000"),
    JOK("json/integer -2^63-1 written out (valid)", J_INSERT, "\"zz\":-9223372036854775809"),
    JB("json/escaped NUL in value", J_INSERT, "\"zz\":\"a\\u0000b\""),
    JB("json/escaped NUL in key", J_INSERT, "\"z\\u0000z\":1"),
    JB("json/lone high surrogate", J_INSERT, "\"zz\":\"\\ud800\""),
    JB("json/lone low surrogate", J_INSERT, "\"zz\":\"\\udc00x\""),
    JOK("json/surrogate pair (valid)", J_INSERT, "\"zz\":\"\\ud83d\\ude00\""),
    {"json/raw NUL byte in string", J_INSERT, "\"zz\":\"a\0b\"", 10, 0, LV_S, C(BAD_METADATA)},
    JB("json/raw control byte in string", J_INSERT, "\"zz\":\"a\x01" "b\""),
    JB("json/single quotes", J_INSERT, "'zz':1"),
    JB("json/comment", J_INSERT, "/*c*/\"zz\":1"),
    JB("json/double comma", J_INSERT, "\"zz\":1,"),
    JB("json/top level array", J_WRAP, NULL),
    JB("json/trailing garbage", J_SUFFIX, "x"),
    JB("json/two documents", J_SUFFIX, "{}"),
    JOK("json/surrounding whitespace (valid)", J_SUFFIX, " \r\n\t"),
    JOK("json/unknown member (valid)", J_INSERT, "\"zz_future\":{\"a\":[1,2,{\"b\":null}]}"),
    {"json/70,000 modules without sections", J_MODULES, NULL, 0, 70000, LV_S, C(BAD_TOC)},
};

static int edit_json(const base *b, int arg, xb *out, expect *e)
{
    const jedit *je = &k_jedit[arg];
    if ((je->kind == J_MODULES || b->m.meta_dec > (1u << 20)) && heavy_skip(b))
        return -1;
    size_t jl = 0;
    char *j = meta_json_of(b, &jl);
    if (!j)
        return -1;
    const char *brace = memchr(j, '{', jl);
    if (!brace) {
        free(j);
        return -1;
    }
    size_t at = (size_t)(brace - j) + 1;
    xb d = {0};
    size_t tl = je->text ? (je->text_len ? je->text_len : strlen(je->text)) : 0;
    switch (je->kind) {
    case J_INSERT:
        xb_put(&d, j, at);
        xb_put(&d, je->text, tl);
        xb_u8(&d, ',');
        xb_put(&d, j + at, jl - at);
        break;
    case J_PREFIX: xb_put(&d, je->text, tl); xb_put(&d, j, jl); break;
    case J_SUFFIX: xb_put(&d, j, jl); xb_put(&d, je->text, tl); break;
    case J_WRAP: xb_u8(&d, '['); xb_put(&d, j, jl); xb_u8(&d, ']'); break;
    case J_NEST:
        xb_put(&d, j, at);
        xb_str(&d, "\"zz\":");
        for (int k = 0; k < je->arg; k++)
            xb_u8(&d, '[');
        for (int k = 0; k < je->arg; k++)
            xb_u8(&d, ']');
        xb_u8(&d, ',');
        xb_put(&d, j + at, jl - at);
        break;
    case J_MODULES: {
        const char *mk = strstr(j, "\"modules\":[");
        if (!mk) {
            free(j);
            return -1;
        }
        size_t mat = (size_t)(mk - j) + strlen("\"modules\":[");
        xb_put(&d, j, mat);
        char tmp[128];
        for (int k = 0; k < je->arg; k++) {
            int n = snprintf(tmp, sizeof tmp,
                             "{\"path\":\"zz.%d\",\"type\":\"ia3\",\"layer\":null,\"feedforward\":false},", k);
            xb_put(&d, tmp, (size_t)n);
        }
        if (j[mat] == ']')
            d.n--; /* no comma before the closing bracket */
        xb_put(&d, j + mat, jl - mat);
        break;
    }
    }
    meta_json(b, out, (const char *)d.p, d.n);
    expect_set(e, je->level, je->mask);
    xb_free(&d);
    free(j);
    return 0;
}

/* schema edits through jansson: load, change, dump */
enum { JS_FORMAT, JS_NAME_EMPTY, JS_MODULES_OBJECT, JS_MOD_TYPE, JS_MOD_LAYER, JS_MOD_R0,
       JS_EXTRA_ARRAY, JS_MOD_UNKNOWN, JS_AC_MISSING, JS_AC_NOT_FILE, JS_DUP_PATH, JS_N };
static const char *k_schema_names[JS_N] = {
    "schema/format=expert-v3", "schema/name empty", "schema/modules is an object",
    "schema/module type lorax", "schema/module layer 65536", "schema/lora r=0",
    "schema/extra is an array", "schema/unknown module member (valid)",
    "schema/adapter_config names no section (S16)", "schema/adapter_config names a tensor (S16)",
    "schema/duplicate module path"};

static int edit_schema(const base *b, int arg, xb *out, expect *e)
{
    if (b->m.meta_dec > (1u << 20) && heavy_skip(b))
        return -1;
    size_t jl = 0;
    char *j = meta_json_of(b, &jl);
    json_t *root = j ? json_loadb(j, jl, 0, NULL) : NULL;
    free(j);
    if (!root)
        return -1;
    json_t *mods = json_object_get(root, "modules");
    json_t *m0 = json_array_get(mods, 0);
    int ok = 1;
    expect_set(e, LV_S, C(BAD_METADATA));
    switch (arg) {
    case JS_FORMAT: json_object_set_new(root, "format", json_string("expert-v3")); break;
    case JS_NAME_EMPTY: json_object_set_new(root, "name", json_string("")); break;
    case JS_MODULES_OBJECT: json_object_set_new(root, "modules", json_object()); break;
    case JS_MOD_TYPE: ok = m0 != NULL; if (ok) json_object_set_new(m0, "type", json_string("lorax")); break;
    case JS_MOD_LAYER: ok = m0 != NULL; if (ok) json_object_set_new(m0, "layer", json_integer(65536)); break;
    case JS_MOD_R0:
        ok = m0 && json_object_get(m0, "r");
        if (ok) json_object_set_new(m0, "r", json_integer(0));
        break;
    case JS_EXTRA_ARRAY: json_object_set_new(root, "extra", json_array()); break;
    case JS_MOD_UNKNOWN:
        ok = m0 != NULL;
        if (ok) json_object_set_new(m0, "zz_future", json_integer(1));
        expect_set(e, LV_NONE, 0);
        break;
    case JS_AC_MISSING: json_object_set_new(root, "adapter_config", json_string("no/such/file.json")); break;
    case JS_AC_NOT_FILE: {
        ok = 0;
        for (uint32_t i = 0; i < b->m.n && !ok; i++) {
            if (rd16(b->m.sec[i].entry + T_TYPE) == 1)
                continue;
            size_t l;
            const uint8_t *nm = xm_name(&b->m, i, &l);
            json_object_set_new(root, "adapter_config", json_stringn((const char *)nm, l));
            ok = 1;
        }
        break;
    }
    case JS_DUP_PATH:
        ok = json_array_size(mods) >= 2;
        if (ok)
            json_object_set(json_array_get(mods, 1), "path", json_object_get(m0, "path"));
        break;
    }
    char *s = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!s)
        return -1;
    meta_json(b, out, s, strlen(s));
    free(s);
    return 0;
}

/* ------------------------------------------------------ names, index */

enum { NM_DUP, NM_FF, NM_NUL, NM_OVERLONG, NM_SURROGATE, NM_DOTDOT, NM_ABS, NM_BACKSLASH,
       NM_EMPTYCOMP, NM_DOT, NM_1024, NM_1025, NM_N };
static const char *k_name_names[NM_N] = {
    "name/duplicate", "name/invalid UTF-8 0xFF", "name/contains NUL", "name/overlong UTF-8",
    "name/UTF-8 surrogate", "name/FILE path ../x", "name/FILE path /abs", "name/FILE path a\\b",
    "name/FILE path a//b", "name/FILE path ./a", "name/1024 bytes (valid)", "name/1025 bytes"};

static int edit_name(const base *b, int arg, xb *out, expect *e)
{
    if (b->m.n == 0)
        return -1;
    xm_model m = xm_clone(&b->m);
    int i = 0;
    const char *nm = NULL;
    size_t nl = 0;
    char big[1100];
    expect_set(e, LV_S, C(BAD_TOC));
    switch (arg) {
    case NM_DUP:
        if (m.n < 2) { xm_free(&m); return -1; }
        memcpy(m.sec[1].entry + T_NAME_OFF, m.sec[0].entry + T_NAME_OFF, 6);
        expect_set(e, LV_S, C(DUPLICATE_NAME));
        break;
    case NM_FF: nm = "abc\xff"; break;
    case NM_NUL: nm = "a\0b"; nl = 3; break;
    case NM_OVERLONG: nm = "a\xC0\xAF"; break;
    case NM_SURROGATE: nm = "a\xED\xA0\x80"; break;
    default:
        i = select_section(b, SEL_FREEFILE);
        if (i < 0) { xm_free(&m); return -1; }
        switch (arg) {
        case NM_DOTDOT: nm = "../x"; break;
        case NM_ABS: nm = "/abs"; break;
        case NM_BACKSLASH: nm = "a\\b"; break;
        case NM_EMPTYCOMP: nm = "a//b"; break;
        case NM_DOT: nm = "./a"; break;
        case NM_1024: case NM_1025:
            nl = arg == NM_1024 ? 1024 : 1025;
            memset(big, 'n', nl);
            nm = big;
            if (arg == NM_1024)
                expect_set(e, LV_NONE, 0);
            break;
        }
    }
    if (nm)
        xm_set_name(&m, (uint32_t)i, nm, nl ? nl : strlen(nm));
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
    return 0;
}

static int edit_index(const base *b, int arg, xb *out, expect *e)
{
    copy_img(b, out);
    uint8_t *ix = out->p + b->index_off;
    uint32_t slots = rd32(ix);
    switch (arg) {
    case 0: { /* swap the first two used slots */
        int a = -1, c = -1;
        for (uint32_t k = 0; k < slots; k++)
            if (rd32(ix + 8 + 4 * k)) {
                if (a < 0) a = (int)k; else { c = (int)k; break; }
            }
        if (c < 0)
            return -1;
        uint32_t va = rd32(ix + 8 + 4 * a), vc = rd32(ix + 8 + 4 * c);
        wr32(ix + 8 + 4 * a, vc);
        wr32(ix + 8 + 4 * c, va);
        break;
    }
    case 1: wr32(ix + 4, 1); break;            /* reserved */
    case 2: wr32(ix, slots * 2); break;        /* slot_count */
    case 3: wr32(ix + 8 + 4 * (slots - 1), rd32(ix + 8 + 4 * (slots - 1)) ? 0 : 1); break;
    }
    xm_rehash(out->p, out->n);
    expect_set(e, LV_S, C(BAD_INDEX));
    return 0;
}

static int edit_second_st_header(const base *b, int arg, xb *out, expect *e)
{
    (void)arg;
    int has = 0;
    for (uint32_t i = 0; i < b->m.n; i++)
        has |= rd16(b->m.sec[i].entry + T_TYPE) == 2;
    int f = select_section(b, SEL_FREEFILE);
    if (!has || f < 0)
        return -1;
    copy_img(b, out);
    wr16(entry_of(out, b, (uint32_t)f) + T_TYPE, 2);
    xm_rehash(out->p, out->n);
    expect_set(e, LV_S, C(BAD_TOC));
    return 0;
}

/* ------------------------------------------------------ trust */

/* Ed25519 group order L, little-endian */
static const uint8_t k_L[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                                0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0,
                                0, 0, 0, 0, 0, 0, 0, 0x10};

enum { TR_OTHER_FILE, TR_OTHER_KEY, TR_STRIPPED, TR_S_PLUS_L, TR_R_ZERO, TR_SWAP, TR_SWAP_NO_STRUCT,
       TR_SWAP_NO_FILE, TR_FILE_FIELD, TR_KEY_UNSIGNED, TR_PADDING, TR_N };
static const char *k_trust_names[TR_N] = {
    "trust/signature from another file", "trust/signature by another key",
    "trust/signature stripped", "trust/signature S+L (malleated)", "trust/signature R = 0",
    "trust/section and its TOC digest changed, digests recomputed",
    "trust/section and its TOC digest changed, structure hash stale",
    "trust/section, TOC digest and structure hash changed, file hash stale",
    "trust/file_sha256 changed, structure hash recomputed", "trust/key given for an unsigned file",
    "trust/non-zero padding byte, file hash recomputed"};

static int find_padding_byte(const base *b, uint64_t *pos)
{
    /* a byte outside every extent */
    for (uint64_t p = b->m.header_size; p < b->n; p++) {
        int inside = 0;
        uint64_t r[4][2] = {{b->meta_off, b->m.meta_len}, {b->toc_off, (uint64_t)b->m.n * TOC_ENTRY},
                            {b->index_off, b->index_len}, {b->str_off, b->m.strings_len}};
        for (int k = 0; k < 4 && !inside; k++)
            inside = p >= r[k][0] && p < r[k][0] + r[k][1];
        for (uint32_t i = 0; i < b->m.n && !inside; i++) {
            uint64_t o = rd64(b->m.sec[i].entry + T_OFFSET);
            inside = b->m.sec[i].len && p >= o && p < o + b->m.sec[i].len;
        }
        if (!inside) {
            *pos = p;
            return 0;
        }
    }
    return -1;
}

static int edit_trust(const base *b, int arg, xb *out, expect *e)
{
    int sig = b->key >= 0; /* signed with a key we hold */
    copy_img(b, out);
    uint8_t *s = out->p + H_SIG;
    switch (arg) {
    case TR_OTHER_FILE: {
        if (!sig)
            return -1;
        const base *o = NULL;
        for (int k = 0; k < g.nbases && !o; k++)
            if (&g.bases[k] != b && g.bases[k].key == b->key &&
                memcmp(g.bases[k].img + H_STRUCT_SHA, b->img + H_STRUCT_SHA, 32) != 0)
                o = &g.bases[k];
        if (!o)
            return -1;
        memcpy(s, o->img + H_SIG, 64);
        expect_set(e, LV_K, C(BAD_SIGNATURE));
        return 0;
    }
    case TR_OTHER_KEY:
        if (!sig || b->sibling < 0)
            return -1;
        memcpy(s, g.bases[b->sibling].img + H_SIG, 64);
        expect_set(e, LV_K, C(BAD_SIGNATURE));
        return 0;
    case TR_STRIPPED:
        if (!sig)
            return -1;
        memset(s, 0, 64);
        expect_set(e, LV_K, C(UNSIGNED));
        return 0;
    case TR_S_PLUS_L: {
        if (!sig)
            return -1;
        unsigned carry = 0;
        for (int k = 0; k < 32; k++) {
            unsigned v = s[32 + k] + k_L[k] + carry;
            s[32 + k] = (uint8_t)v;
            carry = v >> 8;
        }
        expect_set(e, LV_K, C(BAD_SIGNATURE));
        return 0;
    }
    case TR_R_ZERO:
        if (!sig)
            return -1;
        memset(s, 0, 32);
        expect_set(e, LV_K, C(BAD_SIGNATURE));
        return 0;
    case TR_SWAP: case TR_SWAP_NO_STRUCT: case TR_SWAP_NO_FILE: {
        int i = select_section(b, SEL_RAW_NONCSR);
        if (i < 0)
            return -1;
        uint64_t off = rd64(b->m.sec[i].entry + T_OFFSET);
        out->p[off] ^= 0x01;
        uint8_t d[32];
        sha256(out->p + off, b->m.sec[i].len, d);
        memcpy(entry_of(out, b, (uint32_t)i) + T_SHA, d, 32);
        if (arg == TR_SWAP) {
            xm_rehash(out->p, out->n);
            if (sig)
                expect_set(e, LV_K, C(BAD_SIGNATURE));
            else
                expect_set(e, LV_NONE, 0); /* a different valid file: only a signature can tell */
        } else if (arg == TR_SWAP_NO_STRUCT) {
            expect_set(e, LV_S, C(STRUCTURE_HASH_MISMATCH));
        } else {
            xm_rehash_structure(out->p, out->n);
            expect_set(e, LV_F, C(FILE_HASH_MISMATCH));
        }
        return 0;
    }
    case TR_FILE_FIELD:
        out->p[H_FILE_SHA + 5] ^= 0x40;
        xm_rehash_structure(out->p, out->n);
        expect_set(e, LV_F, C(FILE_HASH_MISMATCH));
        return 0;
    case TR_KEY_UNSIGNED:
        if (sig || b->n < 256 || memcmp(b->img + H_SIG, (uint8_t[64]){0}, 64) != 0)
            return -1;
        expect_set(e, LV_K, C(UNSIGNED));
        return 0;
    case TR_PADDING: {
        uint64_t p;
        if (find_padding_byte(b, &p) != 0)
            return -1;
        out->p[p] = 0x5A;
        xm_rehash(out->p, out->n);
        expect_set(e, LV_F, C(BAD_PADDING));
        return 0;
    }
    }
    return -1;
}

/* ------------------------------------------------------ CSR */

enum { CSR_DECREASING, CSR_START, CSR_END, CSR_INDEX_RANGE, CSR_INDEX_NEG, CSR_NOT_INCREASING,
       CSR_HUGE, CSR_N };
static const char *k_csr_names[CSR_N] = {
    "csr/indptr decreasing", "csr/indptr[0] = 1", "csr/indptr[out] != nnz",
    "csr/column index = in", "csr/column index -1", "csr/column indices not increasing",
    "csr/indptr 2^31-1"};

static int edit_csr(const base *b, int arg, xb *out, expect *e)
{
    int ip = -1, ix = -1;
    for (uint32_t i = 0; i < b->m.n; i++) {
        uint16_t t = rd16(b->m.sec[i].entry + T_TYPE);
        if (t == 0x23 && ip < 0) ip = (int)i;
        if (t == 0x24 && ix < 0) ix = (int)i;
    }
    if (ip < 0 || ix < 0)
        return -1;
    int which = arg <= CSR_END || arg == CSR_HUGE ? ip : ix;
    size_t len;
    uint8_t *p = plain_of(b, (uint32_t)which, &len);
    const uint8_t *en = b->m.sec[which].entry;
    size_t el = xm_dtype_size(en[T_DTYPE]);
    size_t cnt = len / el;
#define GET(k) (el == 4 ? (int64_t)(int32_t)rd32(p + 4 * (k)) : (int64_t)rd64(p + 8 * (k)))
#define PUT(k, v) (el == 4 ? wr32(p + 4 * (k), (uint32_t)(int32_t)(v)) : wr64(p + 8 * (k), (uint64_t)(v)))
    int ok = 1;
    switch (arg) {
    case CSR_DECREASING: ok = cnt >= 3 && GET(1) > 0; if (ok) PUT(2, GET(1) - 1); break;
    case CSR_START: PUT(0, 1); break;
    case CSR_END: PUT(cnt - 1, GET(cnt - 1) + 1); break;
    case CSR_HUGE: ok = cnt >= 2; if (ok) PUT(1, 0x7FFFFFFF); break;
    case CSR_INDEX_RANGE: ok = cnt >= 1; if (ok) PUT(0, 1000000); break;
    case CSR_INDEX_NEG: ok = cnt >= 1; if (ok) PUT(0, -1); break;
    case CSR_NOT_INCREASING: {
        size_t pl;
        uint8_t *pp = plain_of(b, (uint32_t)ip, &pl);
        size_t pe = xm_dtype_size(b->m.sec[ip].entry[T_DTYPE]), rows = pl / pe;
        ok = 0;
        for (size_t r = 0; r + 1 < rows && !ok; r++) {
            int64_t a = pe == 4 ? (int64_t)(int32_t)rd32(pp + 4 * r) : (int64_t)rd64(pp + 8 * r);
            int64_t z = pe == 4 ? (int64_t)(int32_t)rd32(pp + 4 * (r + 1)) : (int64_t)rd64(pp + 8 * (r + 1));
            if (z - a >= 2 && a >= 0 && (size_t)z <= cnt) {
                PUT(a + 1, GET(a));
                ok = 1;
            }
        }
        free(pp);
        break;
    }
    }
#undef GET
#undef PUT
    if (!ok) {
        free(p);
        return -1;
    }
    xm_model m = xm_clone(&b->m);
    uint8_t *me = m.sec[which].entry;
    sha256(p, len, me + T_SHA);
    if (me[T_CODEC] == 0) {
        xm_set_section(&m, (uint32_t)which, p, len);
    } else {
        xb st = {0};
        xm_encode_framed(&st, p, len, rd32(me + T_FRAME), el, me[T_CODEC] == 2, 3);
        xm_set_section(&m, (uint32_t)which, st.p, st.n);
        xb_free(&st);
    }
    xb_free(out);
    xm_serialize(&m, NULL, out);
    xm_free(&m);
    free(p);
    expect_set(e, LV_F, C(DECODE_FAILED));
    return 0;
}

/* ------------------------------------------------------ the table */

#define N_HP (sizeof k_hpatch / sizeof k_hpatch[0])
#define N_TP (sizeof k_tpatch / sizeof k_tpatch[0])
#define N_JE (sizeof k_jedit / sizeof k_jedit[0])

static edit *g_table;
static size_t g_count;

static void add(const char *name, const char *group, edit_fn fn, int arg)
{
    g_table = realloc(g_table, (g_count + 1) * sizeof *g_table);
    g_table[g_count++] = (edit){name, group, fn, arg};
}

const edit *edits_table(size_t *n)
{
    if (g_table == NULL) {
        for (size_t k = 0; k < N_HP; k++)
            add(k_hpatch[k].name, "edit/header", edit_hpatch, (int)k);
        for (size_t k = 0; k < N_TP; k++)
            add(k_tpatch[k].name, "edit/toc", edit_tpatch, (int)k);
        add("layout/section overlaps another section", "edit/layout", edit_overlap, 0);
        add("layout/section overlaps the TOC region", "edit/layout", edit_overlap, 1);
        add("layout/section offset misaligned by 8", "edit/layout", edit_misaligned, 0);
        add("layout/8-byte gap before the metadata", "edit/layout", edit_serialize, 0);
        add("layout/byte after the strings, inside file_length", "edit/layout", edit_serialize, 1);
        add("layout/regions before sections (valid)", "edit/layout", edit_serialize, 2);
        add("layout/header extension 24 bytes (valid)", "edit/layout", edit_serialize, 3);
        add("layout/unreferenced bytes in strings (valid)", "edit/layout", edit_serialize, 4);
        add("layout/byte appended after file_length", "edit/layout", edit_append, 0);
        add("limits/sum of decoded lengths > 2^36", "edit/limits", edit_total_decoded, 0);
        add("size/decoded_length+e, same frame count", "edit/frames", edit_decoded_lie, 0);
        add("size/decoded_length-e, same frame count", "edit/frames", edit_decoded_lie, 1);
        add("size/decoded_length+frame_size, one more frame", "edit/frames", edit_decoded_lie, 2);
        for (int k = 0; k < FR_N; k++)
            add(k_frame_names[k], "edit/frames", edit_frame, k);
        for (int k = 0; k < MF_N; k++)
            add(k_meta_frame_names[k], "edit/metadata-frame", edit_meta_frame, k);
        for (size_t k = 0; k < N_JE; k++)
            add(k_jedit[k].name, "edit/metadata-json", edit_json, (int)k);
        for (int k = 0; k < JS_N; k++)
            add(k_schema_names[k], "edit/metadata-schema", edit_schema, k);
        for (int k = 0; k < NM_N; k++)
            add(k_name_names[k], "edit/names", edit_name, k);
        add("index/two slots swapped", "edit/index", edit_index, 0);
        add("index/reserved word", "edit/index", edit_index, 1);
        add("index/slot_count doubled", "edit/index", edit_index, 2);
        add("index/last slot changed", "edit/index", edit_index, 3);
        add("toc/second SAFETENSORS_HEADER", "edit/toc", edit_second_st_header, 0);
        for (int k = 0; k < TR_N; k++)
            add(k_trust_names[k], "trust", edit_trust, k);
        for (int k = 0; k < CSR_N; k++)
            add(k_csr_names[k], "edit/csr", edit_csr, k);
    }
    *n = g_count;
    return g_table;
}
