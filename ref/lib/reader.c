/* reader.c — opening a .expert v2 file and following a byte from disk to a
 * tensor.
 *
 * One file of ~2,100 lines on purpose: structural validation reads top to
 * bottom in the spec's check order (S1-S16), and a reader of this file can
 * follow a byte from the header to a decoded tensor without switching files.
 *
 *   expert_open          map the file (or read() it), then structural
 *                        validation (spec §12.1) in the spec's check order:
 *                        header → limits → region bounds → structure hash →
 *                        metadata → TOC entries → names/index → layout.
 *   expert_read/_view    decode one section; its SHA-256 is checked the first
 *                        time it is decoded (spec §12.2). A reader opened from
 *                        a path takes section bytes with pread (load_section).
 *   expert_read_sections many sections at once, the reader's threads sharing
 *                        them (pool_run, also behind verification).
 *   expert_verify_full   every section, padding, file hash, signature (§12.3).
 *   verified marks       expert_mark_make; a marked open reads header and
 *                        regions by pread into a sparse image (spec §11.7).
 *
 * Every number read from the file is a claim: it is bounded before it is
 * used for arithmetic, allocation or addressing. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"

typedef struct xp_section {
    expert_section_info info;
    atomic_int verified;   /* 1 once the decoded bytes matched sha256 */
} xp_section;

/* What identifies a file's contents without reading them: any write through
 * the file system changes ctime, which no call can set back. */
typedef struct file_id {
    uint64_t dev, ino, size;
    int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
} file_id;

struct expert_reader {
    const uint8_t *data;
    size_t size;
    void *map;             /* mmap base, or NULL */
    uint8_t *owned;        /* read() fallback buffer, or NULL */
    size_t owned_length;
    int owned_mapped;      /* owned is an anonymous mapping (read_buffer) */
    /* Readers opened from a path keep the descriptor: section bytes come by
     * pread into the caller's buffer, not by faulting the mapping in. */
    int fd, has_fd;
    file_id id;            /* the file's identity at open */
    /* Opened with a verified mark (expert_open_options.mark): only the header
     * and regions are in `data` until make_resident reads the rest. */
    int sparse;
    uint8_t *image;        /* the read() buffer's aligned start, when data is ours */
    atomic_int resident;
    atomic_int trusted;    /* an accepted mark stands for every section's hash */
    atomic_int fully_verified; /* expert_verify_full passed and the file did not change */
    unsigned threads;
    uint64_t max_decoded;  /* expert_open_options.max_decoded_bytes, resolved */
    uint32_t max_metadata_items;
    uint64_t total_decoded; /* Σ decoded_length over the sections */

    expert_header_info hdr;
    xp_section *sections;
    uint32_t *layer_order;
    uint32_t slot_count;
    xp_name *names;        /* [section]: name bytes and full hash */
    uint32_t *by_name;     /* sections sorted by name, for lookups */

    int seen_safetensors_header;
    pthread_mutex_t pool_lock; /* guards pool: decode contexts reused across reads */
    int pool_lock_ready;
    xp_dcache *pool;
    uint32_t *module_roles; /* [module * ROLE_N + role] = section index + 1 */
    char *metadata_json;   /* decoded, NUL-terminated */
    size_t metadata_json_length;
    xp_metadata *meta;
    expert_allocator alloc;    /* every allocation of this reader */
    expert_release_fn release; /* expert_open_memory_owned: called with owner at close */
    void *owner;
};

#define FAIL(code, off, sec, ...) xp_set_error(err, (code), (off), (sec), __VA_ARGS__)
#define NOOFF EXPERT_NO_OFFSET
#define NOSEC EXPERT_NO_SECTION

/* ------------------------------------------------------------ utilities */

/* Strict UTF-8 (RFC 3629) without NUL. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1Fu;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0Fu;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07u;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        /* Reject overlong forms, surrogates and values past U+10FFFF. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

int expert_name_valid(const char *name, size_t length)
{
    return name != NULL && length >= 1 && length <= XP_MAX_NAME &&
           utf8_valid((const uint8_t *)name, length);
}

/* [off, off+len) inside [lo, hi]? Overflow-safe. */
static int range_inside(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi)
{
    uint64_t end;
    return !xp_add_overflows(off, len, &end) && off >= lo && end <= hi;
}

static int is_known_type(uint32_t t)
{
    return expert_section_type_name(t) != NULL;
}

/* ------------------------------------------------------ header (§3, §4) */

static expert_status parse_header(expert_reader *r, expert_error *err)
{
    const uint8_t *d = r->data;
    size_t n = r->size;
    /* S1–S4: magic, size, version, header size. */
    if (n < 8 || memcmp(d, XP_MAGIC, 8) != 0)
        return FAIL(EXPERT_E_BAD_MAGIC, 0, NOSEC, "not a .expert v2 file (bad magic)");
    if (n < XP_HEADER_SIZE)
        return FAIL(EXPERT_E_TRUNCATED, n, NOSEC, "file ends inside the header (%zu bytes)", n);
    expert_header_info *h = &r->hdr;
    h->major = xp_le16(d + XP_OFF_MAJOR);
    h->minor = xp_le16(d + XP_OFF_MINOR);
    if (h->major != EXPERT_FORMAT_MAJOR)
        return FAIL(EXPERT_E_UNSUPPORTED_VERSION, XP_OFF_MAJOR, NOSEC,
                    "major version %u (this reader supports %d)", h->major, EXPERT_FORMAT_MAJOR);
    h->header_size = xp_le32(d + XP_OFF_HEADER_SIZE);
    if (h->header_size < XP_HEADER_SIZE || h->header_size > XP_HEADER_SIZE_MAX ||
        h->header_size % 8 != 0)
        return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_HEADER_SIZE, NOSEC,
                    "header_size %u (must be a multiple of 8 in 256..4096)", h->header_size);
    h->file_length = xp_le64(d + XP_OFF_FILE_LENGTH);
    if (h->file_length > n)
        return FAIL(EXPERT_E_TRUNCATED, n, NOSEC, "file is %zu bytes, header says %llu", n,
                    (unsigned long long)h->file_length);
    if (h->file_length < n)
        return FAIL(EXPERT_E_TRAILING_DATA, h->file_length, NOSEC,
                    "%llu bytes after the declared end of file",
                    (unsigned long long)(n - h->file_length));

    /* S6 */
    h->section_count = xp_le32(d + XP_OFF_TOC_COUNT);
    h->alignment = xp_le32(d + XP_OFF_ALIGNMENT);
    h->flags = xp_le32(d + XP_OFF_FLAGS);
    uint32_t entry_size = xp_le32(d + XP_OFF_TOC_ENTRY_SIZE);
    if (h->header_size >= h->file_length)
        return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_HEADER_SIZE, NOSEC,
                    "header_size %u leaves no room for the metadata", h->header_size);
    for (unsigned i = 0; i < XP_RESERVED_LEN; i++)
        if (d[XP_OFF_RESERVED + i] != 0)
            return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_RESERVED + i, NOSEC, "reserved header byte is not zero");
    if (h->alignment != 64 && h->alignment != 256 && h->alignment != 4096)
        return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_ALIGNMENT, NOSEC,
                    "alignment %u (must be 64, 256 or 4096)", h->alignment);
    if (entry_size != XP_TOC_ENTRY_SIZE)
        return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_TOC_ENTRY_SIZE, NOSEC,
                    "toc_entry_size %u (must be 128)", entry_size);
    if ((h->flags & XP_FLAGS_MUST_UNDERSTAND & ~XP_FLAGS_KNOWN) != 0)
        return FAIL(EXPERT_E_UNKNOWN_FLAG, XP_OFF_FLAGS, NOSEC,
                    "unknown must-understand header flags 0x%04x", h->flags & XP_FLAGS_MUST_UNDERSTAND);

    h->metadata_offset = xp_le64(d + XP_OFF_METADATA_OFFSET);
    h->metadata_length = xp_le64(d + XP_OFF_METADATA_LENGTH);
    h->metadata_decoded_length = xp_le64(d + XP_OFF_METADATA_DECODED);
    h->toc_offset = xp_le64(d + XP_OFF_TOC_OFFSET);
    h->index_offset = xp_le64(d + XP_OFF_INDEX_OFFSET);
    h->index_length = xp_le64(d + XP_OFF_INDEX_LENGTH);
    h->strings_offset = xp_le64(d + XP_OFF_STRINGS_OFFSET);
    h->strings_length = xp_le64(d + XP_OFF_STRINGS_LENGTH);
    memcpy(h->file_sha256, d + XP_OFF_FILE_SHA256, 32);
    memcpy(h->structure_sha256, d + XP_OFF_STRUCTURE_SHA256, 32);
    h->is_signed = 0;
    for (unsigned i = 0; i < XP_SIGNATURE_LEN; i++)
        h->is_signed |= d[XP_OFF_SIGNATURE + i] != 0;

    /* S7: limits before any use of the sizes. */
    if (h->section_count > XP_MAX_SECTIONS)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, XP_OFF_TOC_COUNT, NOSEC, "%u sections (limit %u)",
                    h->section_count, XP_MAX_SECTIONS);
    if (h->metadata_length == 0)
        return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_METADATA_LENGTH, NOSEC, "metadata_length is 0");
    if (h->metadata_length > XP_MAX_METADATA)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, XP_OFF_METADATA_LENGTH, NOSEC,
                    "metadata_length %llu (limit %u)", (unsigned long long)h->metadata_length,
                    XP_MAX_METADATA);
    if (h->metadata_decoded_length < 2)
        return FAIL(EXPERT_E_BAD_HEADER, XP_OFF_METADATA_DECODED, NOSEC,
                    "metadata_decoded_length %llu (at least 2)",
                    (unsigned long long)h->metadata_decoded_length);
    if (h->metadata_decoded_length > XP_MAX_METADATA)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, XP_OFF_METADATA_DECODED, NOSEC,
                    "metadata_decoded_length %llu (limit %u)",
                    (unsigned long long)h->metadata_decoded_length, XP_MAX_METADATA);
    if (h->strings_length > XP_MAX_STRINGS)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, XP_OFF_STRINGS_LENGTH, NOSEC,
                    "strings region %llu bytes (limit %u)", (unsigned long long)h->strings_length,
                    XP_MAX_STRINGS);
    r->slot_count = xp_index_slot_count(h->section_count);
    if (h->index_length != 8 + 4 * (uint64_t)r->slot_count)
        return FAIL(EXPERT_E_BAD_INDEX, XP_OFF_INDEX_LENGTH, NOSEC,
                    "index_length %llu (expected %llu for %u sections)",
                    (unsigned long long)h->index_length,
                    (unsigned long long)(8 + 4 * (uint64_t)r->slot_count), h->section_count);

    /* Region bounds and alignment. */
    struct {
        const char *name;
        uint64_t off, len;
        unsigned field;
        int needs_align8;
    } regions[] = {
        {"metadata", h->metadata_offset, h->metadata_length, XP_OFF_METADATA_OFFSET, 1},
        {"TOC", h->toc_offset, (uint64_t)h->section_count * XP_TOC_ENTRY_SIZE, XP_OFF_TOC_OFFSET, 1},
        {"index", h->index_offset, h->index_length, XP_OFF_INDEX_OFFSET, 1},
        {"strings", h->strings_offset, h->strings_length, XP_OFF_STRINGS_OFFSET, 0},
    };
    for (size_t i = 0; i < 4; i++) {
        if (!range_inside(regions[i].off, regions[i].len, h->header_size, h->file_length))
            return FAIL(EXPERT_E_OUT_OF_BOUNDS, regions[i].field, NOSEC,
                        "%s region [%llu, +%llu) outside [%u, %llu)", regions[i].name,
                        (unsigned long long)regions[i].off, (unsigned long long)regions[i].len,
                        h->header_size, (unsigned long long)h->file_length);
        if (regions[i].needs_align8 && regions[i].off % 8 != 0)
            return FAIL(EXPERT_E_MISALIGNED, regions[i].field, NOSEC,
                        "%s region offset %llu is not a multiple of 8", regions[i].name,
                        (unsigned long long)regions[i].off);
    }
    return EXPERT_OK;
}

static expert_status check_structure_hash(expert_reader *r, expert_error *err)
{
    const expert_header_info *h = &r->hdr;
    xp_sha256_ctx *c = NULL;
    if (xp_sha256_new(&c) != EXPERT_OK)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    uint8_t digest[32];
    expert_status s = xp_hash_header(c, r->data, h->header_size, 0);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, r->data + h->metadata_offset, (size_t)h->metadata_length);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, r->data + h->toc_offset,
                             (size_t)h->section_count * XP_TOC_ENTRY_SIZE);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, r->data + h->index_offset, (size_t)h->index_length);
    if (s == EXPERT_OK)
        s = xp_sha256_update(c, r->data + h->strings_offset, (size_t)h->strings_length);
    if (s == EXPERT_OK)
        s = xp_sha256_final(c, digest);
    xp_sha256_free(c);
    if (s != EXPERT_OK)
        return FAIL(s, NOOFF, NOSEC, "hashing failed");
    if (memcmp(digest, h->structure_sha256, 32) != 0)
        return FAIL(EXPERT_E_STRUCTURE_HASH_MISMATCH, XP_OFF_STRUCTURE_SHA256, NOSEC,
                    "structure_sha256 does not match header, metadata, TOC, index and strings");
    return EXPERT_OK;
}

/* ----------------------------------------------------------- metadata (§9) */

static expert_status load_metadata(expert_reader *r, expert_error *err)
{
    const expert_header_info *h = &r->hdr;
    const uint8_t *src = r->data + h->metadata_offset;
    size_t src_len = (size_t)h->metadata_length;
    char why[96];
    if (xp_zstd_frame_check(src, src_len, h->metadata_decoded_length, why, sizeof why) != 0)
        return FAIL(EXPERT_E_BAD_METADATA, h->metadata_offset, NOSEC, "metadata frame: %s", why);
    size_t n = (size_t)h->metadata_decoded_length;
    r->metadata_json = xa_malloc(&r->alloc, n + 1);
    if (r->metadata_json == NULL)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    size_t got = ZSTD_decompress(r->metadata_json, n, src, src_len);
    if (ZSTD_isError(got) || got != n)
        return FAIL(EXPERT_E_BAD_METADATA, h->metadata_offset, NOSEC,
                    "metadata does not decode: %s",
                    ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short output");
    r->metadata_json[n] = '\0';
    r->metadata_json_length = n;
    return xp_metadata_parse(&r->alloc, r->metadata_json, n, r->max_metadata_items, &r->meta,
                             h->metadata_offset, err);
}

/* ------------------------------------------------------------- TOC (§5, §6) */


static int is_float(uint8_t dtype)
{
    return dtype == EXPERT_DTYPE_F32 || dtype == EXPERT_DTYPE_F16 || dtype == EXPERT_DTYPE_BF16 ||
           dtype == EXPERT_DTYPE_F64;
}

/* A path stored as a FILE name must not escape the directory it is
 * extracted into (spec §6.4). */
static int safe_relative_path(const char *p, size_t n)
{
    if (n == 0 || p[0] == '/' || memchr(p, '\\', n) != NULL)
        return 0;
    size_t start = 0;
    for (size_t k = 0; k <= n; k++) {
        if (k == n || p[k] == '/') {
            size_t len = k - start;
            if (len == 0 || (len == 1 && p[start] == '.') ||
                (len == 2 && p[start] == '.' && p[start + 1] == '.'))
                return 0;
            start = k + 1;
        }
    }
    return 1;
}

/* Which module type may own which adapter section type (spec §6.4). */
static int module_owns(const char *mtype, uint16_t t)
{
    if (strcmp(mtype, "lora") == 0)
        return t == EXPERT_SECTION_LORA_A || t == EXPERT_SECTION_LORA_B;
    if (strcmp(mtype, "dora") == 0)
        return t == EXPERT_SECTION_LORA_A || t == EXPERT_SECTION_LORA_B ||
               t == EXPERT_SECTION_DORA_MAGNITUDE;
    if (strcmp(mtype, "ia3") == 0)
        return t == EXPERT_SECTION_IA3_VECTOR;
    return t >= EXPERT_SECTION_OSD_U && t <= EXPERT_SECTION_OSD_SPARSE_VALUES;
}

static int is_adapter_type(uint16_t t)
{
    return (t >= EXPERT_SECTION_LORA_A && t <= EXPERT_SECTION_IA3_VECTOR) ||
           (t >= EXPERT_SECTION_OSD_U && t <= EXPERT_SECTION_OSD_SPARSE_VALUES);
}

static expert_status check_type_rules(expert_reader *r, uint32_t i, uint64_t eoff, expert_error *err)
{
    const expert_section_info *s = &r->sections[i].info;
    const char *tn = expert_section_type_name(s->type);
    int ok = 1;
    switch (s->type) {
    case EXPERT_SECTION_FILE:
    case EXPERT_SECTION_SAFETENSORS_HEADER:
        ok = s->dtype == EXPERT_DTYPE_BYTES && s->rank == 1;
        if (ok && !safe_relative_path(s->name, s->name_length))
            return FAIL(EXPERT_E_BAD_TOC, eoff, i, "%s name '%.*s' is not a safe relative path",
                        tn, (int)s->name_length, s->name);
        if (ok && s->type == EXPERT_SECTION_SAFETENSORS_HEADER) {
            if (r->seen_safetensors_header)
                return FAIL(EXPERT_E_BAD_TOC, eoff, i, "second SAFETENSORS_HEADER section");
            r->seen_safetensors_header = 1;
        }
        break;
    case EXPERT_SECTION_LORA_A:
    case EXPERT_SECTION_LORA_B:
    case EXPERT_SECTION_OSD_U:
    case EXPERT_SECTION_OSD_VT:
    case EXPERT_SECTION_SOFT_PROMPT:
        ok = is_float(s->dtype) && s->rank == 2;
        break;
    case EXPERT_SECTION_OSD_S:
    case EXPERT_SECTION_OSD_SPARSE_VALUES:
        ok = is_float(s->dtype) && s->rank == 1;
        break;
    case EXPERT_SECTION_DORA_MAGNITUDE:
        ok = is_float(s->dtype) && (s->rank == 1 || (s->rank == 2 && s->dims[0] == 1));
        break;
    case EXPERT_SECTION_IA3_VECTOR:
        ok = is_float(s->dtype) && s->rank == 2 && (s->dims[0] == 1 || s->dims[1] == 1);
        break;
    case EXPERT_SECTION_OSD_SPARSE_INDPTR:
    case EXPERT_SECTION_OSD_SPARSE_INDICES:
        ok = (s->dtype == EXPERT_DTYPE_I32 || s->dtype == EXPERT_DTYPE_I64) && s->rank == 1 &&
             (s->type != EXPERT_SECTION_OSD_SPARSE_INDPTR || s->dims[0] >= 1);
        break;
    case EXPERT_SECTION_TENSOR:
        ok = s->dtype != EXPERT_DTYPE_BYTES;
        break;
    default:
        break;
    }
    if (!ok)
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_DTYPE, i,
                    "%s section '%.*s' has dtype %s and rank %u, which the spec does not allow",
                    tn, (int)s->name_length, s->name, expert_dtype_name(s->dtype), s->rank);
    if (is_adapter_type(s->type)) {
        if (s->module == EXPERT_MODULE_NONE)
            return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_MODULE, i,
                        "adapter section '%.*s' belongs to no module", (int)s->name_length, s->name);
        const expert_module_info *m = xp_metadata_module(r->meta, s->module);
        if (!module_owns(m->type, s->type))
            return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_MODULE, i,
                        "a %s module cannot own a %s section", m->type, tn);
        uint32_t want = m->layer < 0 ? EXPERT_LAYER_NONE : (uint32_t)m->layer;
        if (s->layer != want)
            return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_LAYER, i,
                        "section layer differs from its module's layer");
    }
    return EXPERT_OK;
}

static expert_status parse_entry(expert_reader *r, uint32_t i, uint64_t *total_decoded,
                                 expert_error *err)
{
    const expert_header_info *h = &r->hdr;
    uint64_t eoff = h->toc_offset + (uint64_t)i * XP_TOC_ENTRY_SIZE;
    const uint8_t *e = r->data + eoff;
    expert_section_info *s = &r->sections[i].info;
    memset(s, 0, sizeof *s);
    s->index = i;
    uint32_t name_offset = xp_le32(e + XP_TOC_NAME_OFFSET);
    s->name_length = xp_le16(e + XP_TOC_NAME_LENGTH);
    s->type = xp_le16(e + XP_TOC_TYPE);
    s->codec = e[XP_TOC_CODEC];
    s->dtype = e[XP_TOC_DTYPE];
    s->rank = e[XP_TOC_RANK];
    s->flags = xp_le32(e + XP_TOC_FLAGS);
    s->layer = xp_le32(e + XP_TOC_LAYER);
    s->module = xp_le32(e + XP_TOC_MODULE);
    s->frame_size = xp_le32(e + XP_TOC_FRAME_SIZE);
    s->offset = xp_le64(e + XP_TOC_OFFSET);
    s->stored_length = xp_le64(e + XP_TOC_STORED);
    s->decoded_length = xp_le64(e + XP_TOC_DECODED);
    for (unsigned k = 0; k < EXPERT_MAX_RANK; k++)
        s->dims[k] = xp_le64(e + XP_TOC_DIMS + 8 * k);
    memcpy(s->sha256, e + XP_TOC_SHA256, 32);

    /* S11 (a)–(j), in the spec's order. */
    if (e[XP_TOC_RESERVED0] != 0 || xp_le32(e + XP_TOC_RESERVED1) != 0 ||
        xp_le64(e + XP_TOC_RESERVED2) != 0)
        return FAIL(EXPERT_E_BAD_TOC, eoff, i, "reserved TOC field is not zero");
    if (s->codec > EXPERT_CODEC_SHUFFLE_ZSTD)
        return FAIL(EXPERT_E_UNKNOWN_CODEC, eoff + XP_TOC_CODEC, i, "unknown codec %u", s->codec);
    if (s->dtype >= EXPERT_DTYPE_COUNT)
        return FAIL(EXPERT_E_UNKNOWN_DTYPE, eoff + XP_TOC_DTYPE, i, "unknown dtype %u", s->dtype);
    s->known_type = is_known_type(s->type);
    if (!s->known_type && s->type < 0x8000)
        return FAIL(EXPERT_E_UNKNOWN_SECTION_TYPE, eoff + XP_TOC_TYPE, i,
                    "unknown must-understand section type 0x%04x", s->type);
    if ((s->flags & XP_FLAGS_MUST_UNDERSTAND) != 0)
        return FAIL(EXPERT_E_UNKNOWN_FLAG, eoff + XP_TOC_FLAGS, i,
                    "unknown must-understand section flags 0x%04x", s->flags & 0xFFFFu);
    /* (f) rank and dims */
    if (s->rank > EXPERT_MAX_RANK)
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_RANK, i, "rank %u (max %d)", s->rank,
                    EXPERT_MAX_RANK);
    for (unsigned k = s->rank; k < EXPERT_MAX_RANK; k++)
        if (s->dims[k] != 0)
            return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_DIMS + 8 * k, i,
                        "dims[%u] beyond rank %u is not zero", k, s->rank);
    if (s->dtype == EXPERT_DTYPE_BYTES && s->rank != 1)
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_RANK, i, "BYTES sections must have rank 1");
    /* (g) sizes: decoded length must equal numel × element size (checked). */
    if (s->decoded_length > XP_MAX_SECTION_DECODED)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, eoff + XP_TOC_DECODED, i,
                    "decoded length %llu exceeds 4 GiB", (unsigned long long)s->decoded_length);
    if (xp_add_overflows(*total_decoded, s->decoded_length, total_decoded) ||
        *total_decoded > XP_MAX_TOTAL_DECODED)
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, eoff + XP_TOC_DECODED, i,
                    "total decoded size exceeds 64 GiB");
    uint64_t numel = 1;
    for (unsigned k = 0; k < s->rank; k++)
        if (xp_mul_overflows(numel, s->dims[k], &numel))
            return FAIL(EXPERT_E_SIZE_MISMATCH, eoff + XP_TOC_DIMS, i, "shape overflows");
    uint64_t bytes;
    if (xp_mul_overflows(numel, expert_dtype_size(s->dtype), &bytes) || bytes != s->decoded_length)
        return FAIL(EXPERT_E_SIZE_MISMATCH, eoff + XP_TOC_DECODED, i,
                    "decoded length %llu != shape × %zu-byte %s",
                    (unsigned long long)s->decoded_length, expert_dtype_size(s->dtype),
                    expert_dtype_name(s->dtype));
    if (s->codec == EXPERT_CODEC_RAW) {
        if (s->frame_size != 0)
            return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_FRAME_SIZE, i,
                        "frame_size %u on a raw section (must be 0)", s->frame_size);
        if (s->stored_length != s->decoded_length)
            return FAIL(EXPERT_E_SIZE_MISMATCH, eoff + XP_TOC_STORED, i,
                        "raw section stored %llu != decoded %llu bytes",
                        (unsigned long long)s->stored_length, (unsigned long long)s->decoded_length);
    } else if (!xp_is_pow2(s->frame_size) || s->frame_size < XP_MIN_FRAME_SIZE ||
               s->frame_size > XP_MAX_FRAME_SIZE) {
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_FRAME_SIZE, i,
                    "frame_size %u (power of two in 2^16..2^26)", s->frame_size);
    }
    if (s->stored_length == 0 ? s->offset > h->file_length
                              : !range_inside(s->offset, s->stored_length, h->header_size,
                                              h->file_length))
        return FAIL(EXPERT_E_OUT_OF_BOUNDS, eoff + XP_TOC_OFFSET, i,
                    "section [%llu, +%llu) outside the file", (unsigned long long)s->offset,
                    (unsigned long long)s->stored_length);
    /* (h) name */
    if (s->name_length == 0 || s->name_length > XP_MAX_NAME)
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_NAME_LENGTH, i,
                    "name length %u (must be 1..%u)", s->name_length, XP_MAX_NAME);
    if (!range_inside(name_offset, s->name_length, 0, h->strings_length))
        return FAIL(EXPERT_E_OUT_OF_BOUNDS, eoff + XP_TOC_NAME_OFFSET, i,
                    "name [%u, +%u) outside the strings region", name_offset, s->name_length);
    s->name = (const char *)r->data + h->strings_offset + name_offset;
    if (!utf8_valid((const uint8_t *)s->name, s->name_length))
        return FAIL(EXPERT_E_BAD_TOC, h->strings_offset + name_offset, i,
                    "section name is not valid UTF-8 without NUL");
    /* (i) layer and module */
    if (s->layer != EXPERT_LAYER_NONE && s->layer > XP_MAX_LAYER)
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_LAYER, i, "layer %u out of range", s->layer);
    if (s->module != EXPERT_MODULE_NONE && s->module >= xp_metadata_module_count(r->meta))
        return FAIL(EXPERT_E_BAD_TOC, eoff + XP_TOC_MODULE, i,
                    "module %u but metadata lists %u modules", s->module,
                    xp_metadata_module_count(r->meta));
    /* (j) per-type rules, known types only */
    if (s->known_type)
        XP_TRY(check_type_rules(r, i, eoff, err));
    return EXPERT_OK;
}

/* Detects duplicates by sorting, rebuilds the canonical index, then
 * requires the file's index to be byte-identical (spec §8). */
static expert_status check_names_and_index(expert_reader *r, expert_error *err)
{
    const expert_header_info *h = &r->hdr;
    uint32_t n = h->section_count;
    r->names = xa_calloc(&r->alloc, n ? n : 1, sizeof *r->names);
    r->by_name = xa_calloc(&r->alloc, n ? n : 1, sizeof *r->by_name);
    uint32_t *slots = xa_calloc(&r->alloc, r->slot_count, sizeof *slots);
    uint32_t *scratch = xa_calloc(&r->alloc, r->slot_count, sizeof *scratch);
    expert_status s = EXPERT_OK;
    if (r->names == NULL || r->by_name == NULL || slots == NULL || scratch == NULL) {
        s = FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        const expert_section_info *e = &r->sections[i].info;
        r->names[i] = (xp_name){e->name, xp_fnv1a64(e->name, e->name_length), e->name_length};
    }
    uint32_t dup, first;
    if (xp_names_sort(r->names, n, r->by_name, &dup, &first)) {
        const expert_section_info *e = &r->sections[dup].info;
        s = FAIL(EXPERT_E_DUPLICATE_NAME, h->toc_offset + (uint64_t)dup * XP_TOC_ENTRY_SIZE, dup,
                 "section name '%.*s' also used by section %u", (int)e->name_length, e->name, first);
        goto done;
    }
    xp_index_build(slots, r->slot_count, r->names, n, scratch);
    const uint8_t *idx = r->data + h->index_offset;
    if (xp_le32(idx) != r->slot_count || xp_le32(idx + 4) != 0)
        s = FAIL(EXPERT_E_BAD_INDEX, h->index_offset, NOSEC,
                 "index header: %u slots (expected %u), reserved %u", xp_le32(idx), r->slot_count,
                 xp_le32(idx + 4));
    for (uint32_t k = 0; k < r->slot_count && s == EXPERT_OK; k++)
        if (xp_le32(idx + 8 + 4 * (uint64_t)k) != slots[k])
            s = FAIL(EXPERT_E_BAD_INDEX, h->index_offset + 8 + 4 * (uint64_t)k, NOSEC,
                     "index slot %u differs from the canonical index", k);
done:
    xa_free(&r->alloc, slots);
    xa_free(&r->alloc, scratch);
    return s;
}

/* ------------------------------------------------------------ layout (§4) */

typedef struct extent {
    uint64_t off, len;
    int is_section;
    uint32_t section;
} extent;

static int extent_cmp(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : 0;
}

/* Builds the sorted list of occupied byte ranges (header, regions, non-empty
 * sections). Used structurally for overlaps and gaps, and by full
 * verification to find the padding bytes. */
static expert_status build_extents(const expert_reader *r, extent **out, size_t *count)
{
    const expert_header_info *h = &r->hdr;
    size_t cap = (size_t)h->section_count + 5, n = 0;
    extent *ex = xa_malloc(&r->alloc, cap * sizeof *ex);
    if (ex == NULL)
        return EXPERT_E_NOMEM;
    ex[n++] = (extent){0, h->header_size, 0, NOSEC};
    uint64_t rl[4][2] = {{h->metadata_offset, h->metadata_length},
                         {h->toc_offset, (uint64_t)h->section_count * XP_TOC_ENTRY_SIZE},
                         {h->index_offset, h->index_length},
                         {h->strings_offset, h->strings_length}};
    for (int i = 0; i < 4; i++)
        if (rl[i][1] != 0)
            ex[n++] = (extent){rl[i][0], rl[i][1], 0, NOSEC};
    for (uint32_t i = 0; i < h->section_count; i++) {
        const expert_section_info *s = &r->sections[i].info;
        if (s->stored_length != 0)
            ex[n++] = (extent){s->offset, s->stored_length, 1, i};
    }
    qsort(ex, n, sizeof *ex, extent_cmp);
    *out = ex;
    *count = n;
    return EXPERT_OK;
}

static expert_status check_layout(const expert_reader *r, expert_error *err)
{
    const expert_header_info *h = &r->hdr;
    extent *ex = NULL;
    size_t n = 0;
    if (build_extents(r, &ex, &n) != EXPERT_OK)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    expert_status s = EXPERT_OK;
    /* S14a: one owner per byte. */
    for (size_t i = 1; i < n && s == EXPERT_OK; i++)
        if (ex[i].off < ex[i - 1].off + ex[i - 1].len)
            s = FAIL(EXPERT_E_OVERLAP, ex[i].off, ex[i].section,
                     "%s at %llu overlaps the extent [%llu, +%llu)",
                     ex[i].is_section ? "section" : "region", (unsigned long long)ex[i].off,
                     (unsigned long long)ex[i - 1].off, (unsigned long long)ex[i - 1].len);
    /* S14b: section alignment, in TOC order (empty sections included). */
    for (uint32_t i = 0; i < h->section_count && s == EXPERT_OK; i++)
        if (r->sections[i].info.offset % h->alignment != 0)
            s = FAIL(EXPERT_E_MISALIGNED, h->toc_offset + (uint64_t)i * XP_TOC_ENTRY_SIZE + XP_TOC_OFFSET,
                     i, "section offset %llu is not a multiple of %u",
                     (unsigned long long)r->sections[i].info.offset, h->alignment);
    /* S14c: padding may only be what alignment requires — no room to hide data. */
    uint64_t end = h->header_size;
    for (size_t i = 1; i < n && s == EXPERT_OK; i++) { /* ex[0] is the header */
        uint64_t gap = ex[i].off - end;
        uint64_t limit = ex[i].is_section ? h->alignment : 8;
        if (gap >= limit)
            s = FAIL(EXPERT_E_BAD_PADDING, end, ex[i].section,
                     "%llu unused bytes before offset %llu (at most %llu allowed)",
                     (unsigned long long)gap, (unsigned long long)ex[i].off,
                     (unsigned long long)(limit - 1));
        end = ex[i].off + ex[i].len;
    }
    /* S14d */
    if (s == EXPERT_OK && end != h->file_length)
        s = FAIL(EXPERT_E_TRAILING_DATA, end, NOSEC,
                 "%llu bytes after the last region or section",
                 (unsigned long long)(h->file_length - end));
    xa_free(&r->alloc, ex);
    return s;
}

/* S15: every module has exactly the sections its type needs, with shapes
 * that agree with each other and with in/out_features (spec §6.5). */
enum { ROLE_A, ROLE_B, ROLE_M, ROLE_IA3, ROLE_U, ROLE_S, ROLE_VT, ROLE_IP, ROLE_IX, ROLE_V, ROLE_N };

static int role_of(uint16_t t)
{
    switch (t) {
    case EXPERT_SECTION_LORA_A: return ROLE_A;
    case EXPERT_SECTION_LORA_B: return ROLE_B;
    case EXPERT_SECTION_DORA_MAGNITUDE: return ROLE_M;
    case EXPERT_SECTION_IA3_VECTOR: return ROLE_IA3;
    case EXPERT_SECTION_OSD_U: return ROLE_U;
    case EXPERT_SECTION_OSD_S: return ROLE_S;
    case EXPERT_SECTION_OSD_VT: return ROLE_VT;
    case EXPERT_SECTION_OSD_SPARSE_INDPTR: return ROLE_IP;
    case EXPERT_SECTION_OSD_SPARSE_INDICES: return ROLE_IX;
    case EXPERT_SECTION_OSD_SPARSE_VALUES: return ROLE_V;
    default: return -1;
    }
}

static expert_status check_modules(expert_reader *r, expert_error *err)
{
    uint32_t nm = xp_metadata_module_count(r->meta), n = r->hdr.section_count;
    if (nm == 0)
        return EXPERT_OK;
    /* roles[m * ROLE_N + role] = section index + 1, or 0. */
    uint32_t *roles = xa_calloc(&r->alloc, (size_t)nm * ROLE_N, sizeof *roles);
    if (roles == NULL)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    expert_status st = EXPERT_OK;
    uint32_t bad_module = EXPERT_MODULE_NONE;
    for (uint32_t i = 0; i < n; i++) {
        const expert_section_info *s = &r->sections[i].info;
        int role = s->known_type ? role_of(s->type) : -1;
        if (role < 0 || s->module == EXPERT_MODULE_NONE)
            continue;
        uint32_t *slot = &roles[(size_t)s->module * ROLE_N + (size_t)role];
        if (*slot != 0 && s->module < bad_module)
            bad_module = s->module; /* two sections with one role */
        *slot = i + 1;
    }
    for (uint32_t m = 0; m < nm && st == EXPERT_OK; m++) {
        const expert_module_info *mi = xp_metadata_module(r->meta, m);
        const uint32_t *ro = &roles[(size_t)m * ROLE_N];
#define SEC(role) (&r->sections[ro[role] - 1].info)
        const char *why = NULL;
        uint64_t in = 0, out = 0;
        if (m == bad_module) {
            why = "two sections with the same role";
        } else if (strcmp(mi->type, "lora") == 0 || strcmp(mi->type, "dora") == 0) {
            int dora = mi->type[0] == 'd';
            if (!ro[ROLE_A] || !ro[ROLE_B] || (dora != (ro[ROLE_M] != 0)))
                why = dora ? "a dora module needs LORA_A, LORA_B and DORA_MAGNITUDE"
                           : "a lora module needs exactly LORA_A and LORA_B";
            else if (SEC(ROLE_A)->dims[0] != mi->r || SEC(ROLE_B)->dims[1] != mi->r)
                why = "LORA_A/LORA_B rank differs from the module's r";
            else {
                in = SEC(ROLE_A)->dims[1];
                out = SEC(ROLE_B)->dims[0];
                if (dora) {
                    const expert_section_info *mg = SEC(ROLE_M);
                    uint64_t len = mg->rank == 1 ? mg->dims[0] : mg->dims[1];
                    if (len != out)
                        why = "DORA_MAGNITUDE length differs from out_features";
                }
            }
        } else if (strcmp(mi->type, "ia3") == 0) {
            if (!ro[ROLE_IA3])
                why = "an ia3 module needs IA3_VECTOR";
            else {
                const expert_section_info *v = SEC(ROLE_IA3);
                if (mi->feedforward ? v->dims[0] != 1 : v->dims[1] != 1)
                    why = "IA3_VECTOR shape does not match feedforward ([1,in] or [out,1])";
                else if (mi->feedforward)
                    in = v->dims[1];
                else
                    out = v->dims[0];
            }
        } else { /* osd */
            int sparse = (ro[ROLE_IP] != 0) + (ro[ROLE_IX] != 0) + (ro[ROLE_V] != 0);
            if (!ro[ROLE_U] || !ro[ROLE_S] || !ro[ROLE_VT] || (sparse != 0 && sparse != 3))
                why = "an osd module needs OSD_U, OSD_S, OSD_VT and all or none of the sparse sections";
            else if (SEC(ROLE_U)->dims[1] != mi->r || SEC(ROLE_S)->dims[0] != mi->r ||
                     SEC(ROLE_VT)->dims[0] != mi->r)
                why = "OSD factor shapes differ from the module's rank";
            else {
                out = SEC(ROLE_U)->dims[0];
                in = SEC(ROLE_VT)->dims[1];
                if (sparse == 3 && (SEC(ROLE_IP)->dims[0] != out + 1 ||
                                    SEC(ROLE_IX)->dims[0] != SEC(ROLE_V)->dims[0]))
                    why = "CSR section shapes do not match [out+1], [nnz], [nnz]";
            }
        }
#undef SEC
        if (why == NULL && ((in && mi->in_features && mi->in_features != in) ||
                            (out && mi->out_features && mi->out_features != out)))
            why = "in_features/out_features differ from the tensor shapes";
        if (why != NULL)
            st = FAIL(EXPERT_E_BAD_TOC, r->hdr.metadata_offset, NOSEC, "module %u ('%s'): %s", m,
                      mi->path, why);
    }
    r->module_roles = roles;
    return st;
}

/* S16 */
static expert_status check_metadata_links(const expert_reader *r, expert_error *err)
{
    const char *refs[2] = {xp_metadata_adapter_config(r->meta), xp_metadata_source_manifest(r->meta)};
    const char *what[2] = {"adapter_config", "source_manifest"};
    for (int k = 0; k < 2; k++) {
        uint32_t idx;
        if (refs[k] != NULL && (expert_find(r, refs[k], strlen(refs[k]), &idx) != EXPERT_OK ||
                                r->sections[idx].info.type != EXPERT_SECTION_FILE))
            return FAIL(EXPERT_E_BAD_METADATA, r->hdr.metadata_offset, NOSEC,
                        "%s '%s' names no FILE section", what[k], refs[k]);
    }
    return EXPERT_OK;
}

static int layer_cmp(const void *a, const void *b, void *ctx)
{
    const expert_reader *r = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    uint32_t lx = r->sections[x].info.layer, ly = r->sections[y].info.layer;
    if (lx != ly)
        return lx < ly ? -1 : 1; /* EXPERT_LAYER_NONE is UINT32_MAX: sorts last */
    return x < y ? -1 : x > y ? 1 : 0;
}

/* --------------------------------------------------------------- open */

static expert_status structural_validate(expert_reader *r, expert_error *err)
{
    XP_TRY(parse_header(r, err));
    XP_TRY(check_structure_hash(r, err));
    XP_TRY(load_metadata(r, err));
    uint32_t n = r->hdr.section_count;
    r->sections = xa_calloc(&r->alloc, n ? n : 1, sizeof *r->sections);
    r->layer_order = xa_calloc(&r->alloc, n ? n : 1, sizeof *r->layer_order);
    if (r->sections == NULL || r->layer_order == NULL)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        XP_TRY(parse_entry(r, i, &total, err));
    r->total_decoded = total;
    XP_TRY(check_names_and_index(r, err));
    XP_TRY(check_layout(r, err));
    XP_TRY(check_modules(r, err));
    XP_TRY(check_metadata_links(r, err));
    for (uint32_t i = 0; i < n; i++)
        r->layer_order[i] = i;
    qsort_r(r->layer_order, n, sizeof *r->layer_order, layer_cmp, r);
    return EXPERT_OK;
}

static expert_status open_common(expert_reader *r, const expert_open_options *opt,
                                 expert_reader **out, expert_error *err)
{
    r->threads = opt != NULL && opt->threads > 1 ? opt->threads : 1;
    r->max_decoded = opt != NULL && opt->max_decoded_bytes != 0 ? opt->max_decoded_bytes
                                                                : EXPERT_DEFAULT_MAX_DECODED_BYTES;
    r->max_metadata_items = opt != NULL && opt->max_metadata_items != 0
                                ? opt->max_metadata_items
                                : EXPERT_DEFAULT_MAX_METADATA_ITEMS;
    r->pool_lock_ready = pthread_mutex_init(&r->pool_lock, NULL) == 0;
    if (r->threads > 64)
        r->threads = 64;
    expert_status s = structural_validate(r, err);
    if (s != EXPERT_OK) {
        expert_close(r);
        return s;
    }
    *out = r;
    return EXPERT_OK;
}

static expert_status check_options(const expert_open_options *opt, expert_error *err)
{
    if (opt != NULL && opt->struct_size != 0 && opt->struct_size != sizeof *opt)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC,
                    "expert_open_options.struct_size is %zu, this library's is %zu", opt->struct_size,
                    sizeof *opt);
    return EXPERT_OK;
}

static int is_gzip(const uint8_t *p, size_t n)
{
    return n >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

static const char k_gzip_refused[] =
    "a gzip stream, not a .expert v2 file (a v1 tar.gz package? open it with expert_open_v1 or "
    "expert_open_any, or convert it with `expert-cli convert`)";

static expert_status open_image(const void *data, size_t size, const expert_open_options *opt,
                                expert_release_fn release, void *owner, expert_reader **out,
                                expert_error *err)
{
    if (is_gzip(data, size)) { /* v1 is a layer above this one, opened on purpose */
        if (release != NULL)
            release(owner);
        return FAIL(EXPERT_E_BAD_MAGIC, 0, NOSEC, "%s", k_gzip_refused);
    }
    expert_status s = check_options(opt, err);
    expert_allocator a = xa_resolve(opt != NULL ? opt->allocator : NULL);
    expert_reader *r = s == EXPERT_OK ? xa_calloc(&a, 1, sizeof *r) : NULL;
    if (r == NULL) {
        if (release != NULL)
            release(owner);
        return s != EXPERT_OK ? s : FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    }
    r->alloc = a;
    static const uint8_t empty[1] = {0};
    r->data = size ? data : empty;
    r->size = size;
    r->release = release; /* from here expert_close releases, also when open fails */
    r->owner = owner;
    return open_common(r, opt, out, err);
}

expert_status expert_open_memory(const void *data, size_t size, const expert_open_options *opt,
                                 expert_reader **out, expert_error *err)
{
    if (out == NULL || (data == NULL && size != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    *out = NULL;
    return open_image(data, size, opt, NULL, NULL, out, err);
}

expert_status expert_open_memory_owned(const void *data, size_t size,
                                       const expert_open_options *opt, expert_release_fn release,
                                       void *owner, expert_reader **out, expert_error *err)
{
    if (out == NULL || (data == NULL && size != 0) || release == NULL) {
        if (release != NULL)
            release(owner);
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    }
    *out = NULL;
    return open_image(data, size, opt, release, owner, out, err);
}

void *expert_reader_owner(const expert_reader *r, expert_release_fn release)
{
    return r != NULL && release != NULL && r->release == release ? r->owner : NULL;
}

/* ------------------------------------------------------ the file on disk */

static void file_id_of(const struct stat *st, file_id *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_s = (int64_t)st->st_mtim.tv_sec;
    id->mtime_ns = (int64_t)st->st_mtim.tv_nsec;
    id->ctime_s = (int64_t)st->st_ctim.tv_sec;
    id->ctime_ns = (int64_t)st->st_ctim.tv_nsec;
}

static int file_id_equal(const file_id *a, const file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_s == b->mtime_s && a->mtime_ns == b->mtime_ns && a->ctime_s == b->ctime_s &&
           a->ctime_ns == b->ctime_ns;
}

/* 1 when the file the reader was opened from is still the file it opened. */
static int file_unchanged(const expert_reader *r)
{
    struct stat st;
    if (!r->has_fd || fstat(r->fd, &st) != 0)
        return 0;
    file_id now;
    file_id_of(&st, &now);
    return file_id_equal(&now, &r->id);
}

/* `length` bytes at `off`, or -1 with errno set (0 when the file ended first). */
static int pread_exact(int fd, uint8_t *buf, size_t length, uint64_t off)
{
    while (length > 0) {
        ssize_t k = pread(fd, buf, length, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = 0;
            return -1;
        }
        buf += k;
        length -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static const char *read_failure(void)
{
    return errno != 0 ? strerror(errno) : "the file ended early";
}

/* The read() buffer, `length` zero bytes. With the library's built-in
 * allocator it is an anonymous mapping advised for huge pages: malloc would
 * return a fresh mapping of 4 KiB pages anyway (the buffer is far above
 * glibc's mmap threshold), and faulting those in one by one was most of what
 * a NO_MMAP open cost over a mapped one; the pages a sparse image never
 * fills are never faulted at all. A caller's allocator gets the allocation
 * instead: one that reuses its memory pays no page faults. */
static int read_buffer(expert_reader *r, size_t length)
{
    if (xa_is_default(&r->alloc)) {
        void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
#ifdef MADV_HUGEPAGE
            (void)madvise(p, length, MADV_HUGEPAGE); /* advice only: 4 KiB pages still work */
#endif
            r->owned = p;
            r->owned_length = length;
            r->owned_mapped = 1;
            return 0;
        }
    }
    r->owned = xa_calloc(&r->alloc, 1, length);
    return r->owned != NULL ? 0 : -1;
}

/* The header and the four regions, each read to where it lies in the file:
 * all that structural validation reads (spec §12.1). A region the header
 * places outside the file is left zero, for validation to report (S8). */
static int read_structure(expert_reader *r)
{
    uint8_t *d = r->image;
    size_t head = r->size < XP_HEADER_SIZE_MAX ? r->size : XP_HEADER_SIZE_MAX;
    if (pread_exact(r->fd, d, head, 0) != 0)
        return -1;
    if (head < XP_HEADER_SIZE)
        return 0;
    uint64_t toc_length = (uint64_t)xp_le32(d + XP_OFF_TOC_COUNT) * XP_TOC_ENTRY_SIZE;
    const uint64_t region[4][2] = {
        {xp_le64(d + XP_OFF_METADATA_OFFSET), xp_le64(d + XP_OFF_METADATA_LENGTH)},
        {xp_le64(d + XP_OFF_TOC_OFFSET), toc_length},
        {xp_le64(d + XP_OFF_INDEX_OFFSET), xp_le64(d + XP_OFF_INDEX_LENGTH)},
        {xp_le64(d + XP_OFF_STRINGS_OFFSET), xp_le64(d + XP_OFF_STRINGS_LENGTH)}};
    for (int i = 0; i < 4; i++) {
        uint64_t off = region[i][0], len = region[i][1];
        if (len != 0 && range_inside(off, len, 0, r->size) &&
            pread_exact(r->fd, d + off, (size_t)len, off) != 0)
            return -1;
    }
    return 0;
}

/* Fills what a sparse image still lacks (every byte outside the header and
 * the regions), once, for the calls that read section bytes in place. A
 * file changed since open loses the mark's trust: from here its bytes are
 * a private copy, and hashes are checked on them again. */
static expert_status make_resident(expert_reader *r, expert_error *err)
{
    if (!r->sparse || atomic_load(&r->resident))
        return EXPERT_OK;
    if (r->pool_lock_ready)
        pthread_mutex_lock(&r->pool_lock);
    expert_status s = EXPERT_OK;
    if (!atomic_load(&r->resident)) {
        const expert_header_info *h = &r->hdr;
        uint64_t known[5][2] = {{0, h->header_size},
                                {h->metadata_offset, h->metadata_length},
                                {h->toc_offset, (uint64_t)h->section_count * XP_TOC_ENTRY_SIZE},
                                {h->index_offset, h->index_length},
                                {h->strings_offset, h->strings_length}};
        for (int i = 1; i < 5; i++) /* by offset; validation proved they do not overlap */
            for (int j = i; j > 0 && known[j][0] < known[j - 1][0]; j--) {
                uint64_t t0 = known[j][0], t1 = known[j][1];
                known[j][0] = known[j - 1][0], known[j][1] = known[j - 1][1];
                known[j - 1][0] = t0, known[j - 1][1] = t1;
            }
        uint64_t at = 0;
        for (int i = 0; i <= 5 && s == EXPERT_OK; i++) {
            uint64_t next = i < 5 ? known[i][0] : r->size;
            if (next > at && pread_exact(r->fd, r->image + at, (size_t)(next - at), at) != 0)
                s = FAIL(EXPERT_E_IO, at, NOSEC, "cannot read the file: %s", read_failure());
            if (i < 5 && known[i][0] + known[i][1] > at)
                at = known[i][0] + known[i][1];
        }
        if (!file_unchanged(r))
            atomic_store(&r->trusted, 0);
        if (s == EXPERT_OK)
            atomic_store(&r->resident, 1);
    }
    if (r->pool_lock_ready)
        pthread_mutex_unlock(&r->pool_lock);
    return s;
}

/* ------------------------------------------------------ verified marks */

#define MARK_MAGIC "XPMARK\001\000"

static void mark_encode(const expert_reader *r, expert_mark *m)
{
    uint8_t *p = m->bytes;
    memset(m, 0, sizeof *m);
    memcpy(p, MARK_MAGIC, 8);
    xp_put64(p + 8, r->id.dev);
    xp_put64(p + 16, r->id.ino);
    xp_put64(p + 24, r->id.size);
    xp_put64(p + 32, (uint64_t)r->id.mtime_s);
    xp_put64(p + 40, (uint64_t)r->id.mtime_ns);
    xp_put64(p + 48, (uint64_t)r->id.ctime_s);
    xp_put64(p + 56, (uint64_t)r->id.ctime_ns);
    memcpy(p + 64, r->hdr.file_sha256, 32);
    memcpy(p + 96, r->hdr.structure_sha256, 32);
}

/* After structural validation of a sparse image: trusted when the mark
 * names this file as it is now, else an ordinary load of a private copy. */
static expert_status apply_mark(expert_reader *r, const expert_mark *mark, expert_error *err)
{
    expert_mark now;
    mark_encode(r, &now);
    if (memcmp(now.bytes, mark->bytes, sizeof now.bytes) == 0 && file_unchanged(r)) {
        atomic_store(&r->trusted, 1);
        return EXPERT_OK;
    }
    return make_resident(r, err);
}

expert_status expert_mark_make(expert_reader *r, expert_mark *out, expert_error *err)
{
    if (r == NULL || out == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    if (!r->has_fd)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC,
                    "a mark needs a reader opened from a file (expert_open)");
    if (!atomic_load(&r->fully_verified) && !atomic_load(&r->trusted))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC,
                    "the file has not passed full validation (expert_verify_full)");
    if (!file_unchanged(r))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "the file changed since it was opened");
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 ||
        r->id.ctime_s > (int64_t)now.tv_sec - EXPERT_MARK_SETTLE_SECONDS ||
        r->id.mtime_s > (int64_t)now.tv_sec - EXPERT_MARK_SETTLE_SECONDS)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC,
                    "the file changed less than %d s ago: a change now could keep its time stamps",
                    EXPERT_MARK_SETTLE_SECONDS);
    mark_encode(r, out);
    return EXPERT_OK;
}

int expert_reader_trusted(const expert_reader *r)
{
    return r != NULL && atomic_load(&r->trusted);
}

/* ----------------------------------------------------------- expert_open */

expert_status expert_open(const char *path, const expert_open_options *opt, expert_reader **out,
                          expert_error *err)
{
    if (out == NULL || path == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    *out = NULL;
    XP_TRY(check_options(opt, err));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FAIL(EXPERT_E_IO, NOOFF, NOSEC, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return FAIL(EXPERT_E_IO, NOOFF, NOSEC, "%s is not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX - 4096) {
        close(fd);
        return FAIL(EXPERT_E_LIMIT_EXCEEDED, NOOFF, NOSEC, "file too large for this machine");
    }
    { /* a v1 tar.gz is refused before anything is mapped or read */
        uint8_t magic[2];
        if (st.st_size >= 2 && pread(fd, magic, 2, 0) == 2 && is_gzip(magic, 2)) {
            close(fd);
            return FAIL(EXPERT_E_BAD_MAGIC, 0, NOSEC, "%s: %s", path, k_gzip_refused);
        }
    }
    expert_allocator a = xa_resolve(opt != NULL ? opt->allocator : NULL);
    expert_reader *r = xa_calloc(&a, 1, sizeof *r);
    if (r == NULL) {
        close(fd);
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    }
    r->alloc = a;
    r->fd = fd; /* from here expert_close closes it */
    r->has_fd = 1;
    file_id_of(&st, &r->id);
    r->size = (size_t)st.st_size;
    const expert_mark *mark = opt != NULL ? opt->mark : NULL;
    if (mark == NULL && !(opt != NULL && (opt->flags & EXPERT_OPEN_NO_MMAP)) && r->size > 0) {
        void *m = mmap(NULL, r->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            r->map = m;
            r->data = m;
        }
    }
    if (r->map == NULL) {
        /* Into memory: for file systems without mmap, by request, or for a
         * marked load. The buffer starts on a 4096-byte boundary so raw
         * sections keep the alignment the file promises (spec §4.7), as
         * they would in a map. */
        if (read_buffer(r, r->size + 4096) != 0) {
            expert_status s = FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory reading %zu bytes",
                                   r->size);
            expert_close(r);
            return s;
        }
        r->image = r->owned + (4096 - (uintptr_t)r->owned % 4096) % 4096;
        r->data = r->image;
        r->sparse = mark != NULL;
        if ((r->sparse ? read_structure(r) : pread_exact(fd, r->image, r->size, 0)) != 0) {
            expert_status s = FAIL(EXPERT_E_IO, NOOFF, NOSEC, "cannot read %s: %s", path, read_failure());
            expert_close(r);
            return s;
        }
    }
    int used_map = r->map != NULL;
    expert_status s = open_common(r, opt, out, err);
    if (s != EXPERT_OK)
        return s;
    r->hdr.used_mmap = used_map;
    if (mark != NULL && (s = apply_mark(r, mark, err)) != EXPERT_OK) {
        expert_close(r);
        *out = NULL;
    }
    return s;
}

void expert_close(expert_reader *r)
{
    if (r == NULL)
        return;
    if (r->map != NULL)
        munmap(r->map, r->size);
    if (r->has_fd)
        close(r->fd);
    if (r->owned_mapped)
        munmap(r->owned, r->owned_length);
    else
        xa_free(&r->alloc, r->owned);
    xa_free(&r->alloc, r->sections);
    xa_free(&r->alloc, r->layer_order);
    xa_free(&r->alloc, r->names);
    xa_free(&r->alloc, r->by_name);
    xa_free(&r->alloc, r->module_roles);
    while (r->pool != NULL) {
        xp_dcache *c = r->pool;
        r->pool = c->next;
        xp_dcache_release(c);
        xa_free(&r->alloc, c);
    }
    if (r->pool_lock_ready)
        pthread_mutex_destroy(&r->pool_lock);
    xa_free(&r->alloc, r->metadata_json);
    xp_metadata_free(r->meta);
    if (r->release != NULL)
        r->release(r->owner);
    expert_allocator a = r->alloc; /* r's own memory goes last */
    xa_free(&a, r);
}

/* ---------------------------------------------------------- accessors */

void expert_header(const expert_reader *r, expert_header_info *out)
{
    if (r != NULL && out != NULL)
        *out = r->hdr;
}

void expert_reader_limits(const expert_reader *r, expert_limits *out)
{
    if (out == NULL)
        return;
    *out = (expert_limits){
        r != NULL ? r->max_decoded : EXPERT_DEFAULT_MAX_DECODED_BYTES,
        r != NULL ? r->max_metadata_items : EXPERT_DEFAULT_MAX_METADATA_ITEMS,
        XP_MAX_SECTIONS, XP_MAX_NAME, XP_MAX_JSON_DEPTH,
        XP_MAX_METADATA, XP_MAX_STRINGS, XP_MAX_SECTION_DECODED, XP_MAX_TOTAL_DECODED,
        XP_MAX_FRAME_SIZE};
}

/* Every path that decodes section bytes passes here first, so a small file
 * declaring more than the caller accepts costs nothing but this check. */
static expert_status decode_allowed(const expert_reader *r, expert_error *err)
{
    if (r->total_decoded <= r->max_decoded)
        return EXPERT_OK;
    return FAIL(EXPERT_E_LIMIT_EXCEEDED, NOOFF, NOSEC,
                "the sections declare %llu decoded bytes in all, over this reader's limit of %llu "
                "(expert_open_options.max_decoded_bytes)",
                (unsigned long long)r->total_decoded, (unsigned long long)r->max_decoded);
}

uint32_t expert_section_count(const expert_reader *r)
{
    return r != NULL ? r->hdr.section_count : 0;
}

expert_status expert_section(const expert_reader *r, uint32_t index, expert_section_info *out)
{
    if (r == NULL || out == NULL || index >= r->hdr.section_count)
        return EXPERT_E_INVALID_ARGUMENT;
    *out = r->sections[index].info;
    return EXPERT_OK;
}

/* The file's index was checked equal to the canonical one at open, so a
 * probe of it and this search agree; the search stays O(log n) when hostile
 * names share one probe chain. */
expert_status expert_find(const expert_reader *r, const char *name, size_t name_length,
                          uint32_t *index)
{
    if (r == NULL || name == NULL || index == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    return xp_names_find(r->names, r->by_name, r->hdr.section_count, name, name_length, index)
               ? EXPERT_OK
               : EXPERT_E_NOT_FOUND;
}

uint32_t expert_section_in_layer_order(const expert_reader *r, uint32_t i)
{
    if (r == NULL || i >= r->hdr.section_count)
        return EXPERT_NO_SECTION;
    return r->layer_order[i];
}

const char *expert_metadata_json(const expert_reader *r, size_t *length)
{
    if (r == NULL)
        return NULL;
    if (length != NULL)
        *length = r->metadata_json_length;
    return r->metadata_json;
}

const char *expert_name(const expert_reader *r) { return r ? xp_metadata_name(r->meta) : NULL; }
const char *expert_package_version(const expert_reader *r) { return r ? xp_metadata_version(r->meta) : NULL; }
uint32_t expert_module_count(const expert_reader *r) { return r ? xp_metadata_module_count(r->meta) : 0; }

expert_status expert_module(const expert_reader *r, uint32_t index, expert_module_info *out)
{
    if (r == NULL || out == NULL || index >= xp_metadata_module_count(r->meta))
        return EXPERT_E_INVALID_ARGUMENT;
    *out = *xp_metadata_module(r->meta, index);
    return EXPERT_OK;
}

/* ------------------------------------------------------- access (§12.2) */

static expert_status check_hash(expert_reader *r, uint32_t index, const uint8_t *bytes,
                                expert_error *err)
{
    xp_section *sec = &r->sections[index];
    uint8_t digest[32];
    if (expert_sha256(bytes, (size_t)sec->info.decoded_length, digest) != EXPERT_OK)
        return FAIL(EXPERT_E_NOMEM, NOOFF, index, "hashing failed");
    if (memcmp(digest, sec->info.sha256, 32) != 0)
        return FAIL(EXPERT_E_SECTION_HASH_MISMATCH, sec->info.offset, index,
                    "section '%.*s': SHA-256 of the decoded bytes does not match the TOC",
                    (int)sec->info.name_length, sec->info.name);
    atomic_store(&sec->verified, 1);
    return EXPERT_OK;
}

/* A decode context for this call: reused from the pool, or a fresh (empty)
 * one that xp_decode fills; NULL only when even that allocation fails, in
 * which case xp_decode makes its own. */
static xp_dcache *pool_take(expert_reader *r)
{
    xp_dcache *c = NULL;
    if (r->pool_lock_ready) {
        pthread_mutex_lock(&r->pool_lock);
        c = r->pool;
        if (c != NULL)
            r->pool = c->next;
        pthread_mutex_unlock(&r->pool_lock);
    }
    if (c == NULL && (c = xa_calloc(&r->alloc, 1, sizeof *c)) != NULL)
        c->alloc = &r->alloc;
    return c;
}

static void pool_give(expert_reader *r, xp_dcache *c)
{
    if (c == NULL)
        return;
    if (!r->pool_lock_ready) {
        xp_dcache_release(c);
        xa_free(&r->alloc, c);
        return;
    }
    pthread_mutex_lock(&r->pool_lock);
    c->next = r->pool;
    r->pool = c;
    pthread_mutex_unlock(&r->pool_lock);
}

/* Whether reads take a section's stored bytes with pread: for a mapped file
 * that is one copy from the page cache instead of faulting the mapping in
 * page by page (about a third of a hot load), and for a sparse image the
 * bytes are not in memory at all. */
static int reads_by_pread(const expert_reader *r)
{
    return r->has_fd && (r->map != NULL || r->sparse);
}

/* A trusted reader stays trusted only while the file is the one its mark
 * names; checked after the bytes were read, so a change during the read
 * is seen too. */
static int still_trusted(expert_reader *r)
{
    if (!atomic_load(&r->trusted))
        return 0;
    if (file_unchanged(r))
        return 1;
    atomic_store(&r->trusted, 0);
    return 0;
}

/* Decodes section `index` into dst (decoded_length bytes) with `threads`
 * on its frames, and checks its hash (spec §12.2) unless told not to,
 * already verified, or trusted through a mark. `cache` holds the stored
 * bytes of a compressed section read by pread. On failure dst is zeroed:
 * unverified bytes are never handed out. */
static expert_status load_section(expert_reader *r, uint32_t index, uint8_t *dst, unsigned threads,
                                  xp_dcache *cache, uint32_t flags, expert_error *err)
{
    const expert_section_info *s = &r->sections[index].info;
    const uint8_t *stored = r->data + s->offset;
    expert_status st = EXPERT_OK;
    if (reads_by_pread(r)) {
        uint8_t *buf = dst;
        if (s->codec != EXPERT_CODEC_RAW)
            buf = cache != NULL ? xp_dcache_stored(cache, (size_t)s->stored_length) : NULL;
        if (buf == NULL && s->stored_length != 0)
            st = FAIL(EXPERT_E_NOMEM, NOOFF, index, "out of memory");
        else if (pread_exact(r->fd, buf, (size_t)s->stored_length, s->offset) != 0)
            st = FAIL(EXPERT_E_IO, s->offset, index, "cannot read section '%.*s': %s",
                      (int)s->name_length, s->name, read_failure());
        stored = buf;
    }
    if (st == EXPERT_OK && stored != dst)
        st = xp_decode(&r->alloc, s->codec, expert_dtype_size(s->dtype), s->frame_size, stored,
                       s->stored_length, dst, s->decoded_length, threads, cache, s->offset, index,
                       err);
    if (st == EXPERT_OK && !(flags & EXPERT_READ_NO_VERIFY) &&
        !atomic_load(&r->sections[index].verified) && !still_trusted(r))
        st = check_hash(r, index, dst, err);
    if (st != EXPERT_OK && s->decoded_length != 0)
        memset(dst, 0, (size_t)s->decoded_length);
    return st;
}

/* Frees the pooled contexts' buffers, keeping their zstd contexts: after a
 * verification pass they hold two of the largest frames per thread, memory
 * a reader should not keep for its lifetime. */
static void pool_trim(expert_reader *r)
{
    if (r->pool_lock_ready)
        pthread_mutex_lock(&r->pool_lock);
    for (xp_dcache *c = r->pool; c != NULL; c = c->next) {
        ZSTD_DCtx *keep = c->dctx;
        c->dctx = NULL;
        xp_dcache_release(c);
        c->dctx = keep;
    }
    if (r->pool_lock_ready)
        pthread_mutex_unlock(&r->pool_lock);
}

expert_status expert_read(expert_reader *r, uint32_t index, void *dst, size_t dst_capacity,
                          uint32_t flags, expert_error *err)
{
    if (r == NULL || index >= r->hdr.section_count || (dst == NULL && dst_capacity != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    const expert_section_info *s = &r->sections[index].info;
    if (dst_capacity < s->decoded_length)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, index,
                    "buffer of %zu bytes for a %llu-byte section", dst_capacity,
                    (unsigned long long)s->decoded_length);
    XP_TRY(decode_allowed(r, err));
    xp_dcache *cache = s->codec == EXPERT_CODEC_RAW ? NULL : pool_take(r);
    expert_status st = load_section(r, index, dst, r->threads, cache, flags, err);
    pool_give(r, cache);
    return st;
}

expert_status expert_view(expert_reader *r, uint32_t index, const void **data, size_t *length,
                          uint32_t flags, expert_error *err)
{
    if (r == NULL || data == NULL || length == NULL || index >= r->hdr.section_count)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    const expert_section_info *s = &r->sections[index].info;
    if (s->codec != EXPERT_CODEC_RAW)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, index,
                    "section is %s-compressed: use expert_read", expert_codec_name(s->codec));
    XP_TRY(decode_allowed(r, err));
    XP_TRY(make_resident(r, err));
    const uint8_t *p = r->data + s->offset;
    if (!(flags & EXPERT_READ_NO_VERIFY) && !atomic_load(&r->sections[index].verified) &&
        !atomic_load(&r->trusted))
        XP_TRY(check_hash(r, index, p, err));
    *data = p;
    *length = (size_t)s->decoded_length;
    return EXPERT_OK;
}

/* ------------------------------------------------- streaming (§12.2) */

#define RAW_SLICE (1u << 20) /* raw sections reach a sink in slices of this size */

/* Whether streams take a raw section's bytes with pread, a slice at a time
 * into the caller's frame buffer (at least stream_buffer(r, s) bytes),
 * instead of faulting the mapping in. */
static int streams_by_pread(const expert_reader *r)
{
    return r->has_fd && r->map != NULL;
}

static size_t stream_buffer(const expert_reader *r, const expert_section_info *s)
{
    uint64_t n = s->codec != EXPERT_CODEC_RAW ? s->frame_size : streams_by_pread(r) ? RAW_SLICE : 0;
    return (size_t)(s->decoded_length < n ? s->decoded_length : n);
}

/* Decodes one section a frame at a time into `write` (or nowhere when it is
 * NULL), hashing as it goes when `verify`: memory stays at one frame whatever
 * sizes the file claims. frame_buf and scratch hold a frame each. */
static expert_status stream_section(expert_reader *r, uint32_t index, ZSTD_DCtx *dctx,
                                    uint8_t *frame_buf, uint8_t *scratch, expert_write_fn write,
                                    void *user, int verify, expert_error *err)
{
    const expert_section_info *s = &r->sections[index].info;
    const uint8_t *stored = r->data + s->offset;
    int by_pread = s->codec == EXPERT_CODEC_RAW && streams_by_pread(r);
    if (s->codec == EXPERT_CODEC_RAW && write == NULL && !by_pread)
        return verify ? check_hash(r, index, stored, err) : EXPERT_OK;
    xp_frame_ctx fc = {stored, NULL, 0, s->frame_size, s->decoded_length,
                       expert_dtype_size(s->dtype),
                       s->codec == EXPERT_CODEC_SHUFFLE_ZSTD && expert_dtype_size(s->dtype) > 1,
                       s->offset, index, &r->alloc};
    uint64_t step = s->frame_size;
    if (s->codec == EXPERT_CODEC_RAW) {
        fc.nframes = (s->decoded_length + RAW_SLICE - 1) / RAW_SLICE;
        step = RAW_SLICE;
    } else {
        XP_TRY(xp_frames_parse(&r->alloc, stored, s->stored_length, s->decoded_length, s->frame_size,
                               &fc.starts, &fc.nframes, s->offset, index, err));
    }
    xp_sha256_ctx *c = NULL;
    expert_status st = verify ? xp_sha256_new(&c) : EXPERT_OK;
    if (st != EXPERT_OK)
        st = FAIL(EXPERT_E_NOMEM, NOOFF, index, "out of memory");
    for (uint64_t f = 0; st == EXPERT_OK && f < fc.nframes; f++) {
        uint64_t start = f * step;
        size_t len = (size_t)(s->decoded_length - start < step ? s->decoded_length - start : step);
        const uint8_t *bytes = stored + start;
        if (s->codec != EXPERT_CODEC_RAW) {
            st = xp_frame_decode(&fc, dctx, scratch, f, frame_buf, err);
            bytes = frame_buf;
        } else if (by_pread) {
            if (pread_exact(r->fd, frame_buf, len, s->offset + start) != 0)
                st = FAIL(EXPERT_E_IO, s->offset + start, index, "cannot read section '%.*s': %s",
                          (int)s->name_length, s->name, read_failure());
            bytes = frame_buf;
        }
        if (st == EXPERT_OK && verify)
            st = xp_sha256_update(c, bytes, len);
        if (st == EXPERT_OK && write != NULL)
            st = write(user, index, bytes, len, err);
    }
    uint8_t digest[32];
    if (st == EXPERT_OK && verify)
        st = xp_sha256_final(c, digest);
    xp_sha256_free(c);
    xa_free(&r->alloc, fc.starts);
    if (st != EXPERT_OK || !verify)
        return st;
    if (memcmp(digest, s->sha256, 32) != 0)
        return FAIL(EXPERT_E_SECTION_HASH_MISMATCH, s->offset, index,
                    "section '%.*s': SHA-256 of the decoded bytes does not match the TOC",
                    (int)s->name_length, s->name);
    atomic_store(&r->sections[index].verified, 1);
    return EXPERT_OK;
}

expert_status expert_read_stream(expert_reader *r, uint32_t index, expert_write_fn write,
                                 void *user, uint32_t flags, expert_error *err)
{
    if (r == NULL || index >= r->hdr.section_count)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    XP_TRY(decode_allowed(r, err));
    XP_TRY(make_resident(r, err));
    const expert_section_info *s = &r->sections[index].info;
    int verify = !(flags & EXPERT_READ_NO_VERIFY) && !atomic_load(&r->sections[index].verified) &&
                 !atomic_load(&r->trusted);
    ZSTD_DCtx *dctx = NULL;
    uint8_t *frame_buf = NULL, *scratch = NULL;
    size_t n = stream_buffer(r, s); /* a frame's worth, or the whole section when it is smaller */
    if (n != 0) {
        int framed = s->codec != EXPERT_CODEC_RAW;
        dctx = framed ? ZSTD_createDCtx() : NULL;
        frame_buf = xa_malloc(&r->alloc, n);
        scratch = framed ? xa_malloc(&r->alloc, n) : NULL;
        if ((framed && (dctx == NULL || scratch == NULL)) || frame_buf == NULL) {
            ZSTD_freeDCtx(dctx);
            xa_free(&r->alloc, frame_buf);
            xa_free(&r->alloc, scratch);
            return FAIL(EXPERT_E_NOMEM, NOOFF, index, "out of memory");
        }
    }
    expert_status st = stream_section(r, index, dctx, frame_buf, scratch, write, user, verify, err);
    ZSTD_freeDCtx(dctx);
    xa_free(&r->alloc, frame_buf);
    xa_free(&r->alloc, scratch);
    return st;
}

/* ------------------------------------------- many sections (§12.2, 12.3) */

/* The reader's threads over `count` items, for the calls that touch many
 * sections: items are taken in `order` (NULL: 0, 1, ...), each worker with
 * a decode context of its own. The error reported is that of the lowest
 * failing item, so it does not depend on timing, and items after a known
 * failure are skipped: they could not change the report. */
typedef expert_status (*pool_job)(void *ctx, size_t item, xp_dcache *cache, expert_error *err);

typedef struct section_pool {
    expert_reader *r;
    size_t count;
    const size_t *order;
    pool_job job;
    void *ctx;
    atomic_size_t next;
    atomic_size_t first_bad; /* lowest failing item so far, SIZE_MAX if none */
    pthread_mutex_t lock;
    size_t bad_item;
    expert_status bad_status;
    expert_error bad_err;
} section_pool;

static void *pool_worker(void *arg)
{
    section_pool *p = arg;
    xp_dcache *cache = pool_take(p->r);
    for (;;) {
        size_t k = atomic_fetch_add(&p->next, 1);
        if (k >= p->count)
            break;
        size_t item = p->order != NULL ? p->order[k] : k;
        if (item > atomic_load(&p->first_bad))
            continue;
        expert_error e = {0};
        expert_status st = cache == NULL
                               ? xp_set_error(&e, EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory")
                               : p->job(p->ctx, item, cache, &e);
        if (st != EXPERT_OK) {
            pthread_mutex_lock(&p->lock);
            if (p->bad_status == EXPERT_OK || item < p->bad_item) {
                p->bad_item = item;
                p->bad_status = st;
                p->bad_err = e;
                atomic_store(&p->first_bad, item);
            }
            pthread_mutex_unlock(&p->lock);
        }
    }
    pool_give(p->r, cache);
    return NULL;
}

static expert_status pool_run(expert_reader *r, size_t count, const size_t *order, pool_job job,
                              void *ctx, expert_error *err)
{
    section_pool p;
    memset(&p, 0, sizeof p);
    p.r = r;
    p.count = count;
    p.order = order;
    p.job = job;
    p.ctx = ctx;
    atomic_init(&p.next, 0);
    atomic_init(&p.first_bad, SIZE_MAX);
    if (pthread_mutex_init(&p.lock, NULL) != 0)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "cannot create a mutex");
    unsigned n = r->threads < count ? r->threads : (unsigned)count;
    pthread_t tids[64];
    int running[64] = {0};
    for (unsigned t = 1; t < n; t++)
        running[t] = pthread_create(&tids[t], NULL, pool_worker, &p) == 0;
    pool_worker(&p);
    for (unsigned t = 1; t < n; t++)
        if (running[t])
            pthread_join(tids[t], NULL);
    pthread_mutex_destroy(&p.lock);
    if (p.bad_status != EXPERT_OK) {
        if (err != NULL)
            *err = p.bad_err;
        return p.bad_status;
    }
    return EXPERT_OK;
}

/* Verification streams each section a frame at a time (memory: two frames
 * per thread whatever a section claims): the frame goes in cache->stored,
 * the unshuffle scratch in cache->scratch. Full validation adds one item
 * after the sections, the file hash, so that it runs beside them; its
 * result is kept apart, because the spec reports it only after the checks
 * that follow the sections (§12.3). */
typedef struct verify_job {
    expert_reader *r;
    size_t buffer;         /* the largest stream_buffer of any section, or a file-hash slice */
    int file_hash;         /* full validation: item section_count hashes the file */
    expert_status file_status;
    expert_error file_err;
} verify_job;

static expert_status check_file_hash(const expert_reader *r, uint8_t *buf, size_t buf_size,
                                     expert_error *err);

static expert_status verify_one(void *ctx, size_t item, xp_dcache *cache, expert_error *err)
{
    verify_job *j = ctx;
    uint32_t i = (uint32_t)item;
    if (xp_dcache_fit(cache, j->buffer) != 0 || (j->buffer != 0 && xp_dcache_stored(cache, j->buffer) == NULL))
        return FAIL(EXPERT_E_NOMEM, NOOFF, i < j->r->hdr.section_count ? i : NOSEC, "out of memory");
    if (i == j->r->hdr.section_count) {
        j->file_status = check_file_hash(j->r, cache->stored, j->buffer, &j->file_err);
        return EXPERT_OK;
    }
    return stream_section(j->r, i, cache->dctx, cache->stored, cache->scratch, NULL, NULL, 1, err);
}

static expert_status verify_all_sections(expert_reader *r, verify_job *j, expert_error *err)
{
    XP_TRY(make_resident(r, err));
    j->r = r;
    j->buffer = j->file_hash && streams_by_pread(r) ? RAW_SLICE : 0;
    for (uint32_t i = 0; i < r->hdr.section_count; i++) {
        size_t n = stream_buffer(r, &r->sections[i].info);
        j->buffer = n > j->buffer ? n : j->buffer;
    }
    /* The file hash is the longest item: taken first, so that with several
     * threads it runs beside the sections rather than after them. */
    size_t n = r->hdr.section_count, *order = NULL;
    if (j->file_hash) {
        order = xa_calloc(&r->alloc, n + 1, sizeof *order);
        if (order == NULL)
            return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
        order[0] = n;
        for (size_t k = 0; k < n; k++)
            order[k + 1] = k;
    }
    expert_status st = pool_run(r, n + (j->file_hash ? 1 : 0), order, verify_one, j, err);
    xa_free(&r->alloc, order);
    pool_trim(r);
    return st;
}

typedef struct read_job {
    expert_reader *r;
    const expert_read_request *requests;
    uint32_t flags;
} read_job;

static expert_status read_one(void *ctx, size_t item, xp_dcache *cache, expert_error *err)
{
    const read_job *j = ctx;
    const expert_read_request *q = &j->requests[item];
    return load_section(j->r, q->section, q->dst, 1, cache, j->flags, err);
}

/* Items 0..count-1 naming sections (item k names section_of[k]), sorted
 * by the sections' file offsets: a cold file is then read front to back, as
 * the kernel's read-ahead expects (an explicit WILLNEED advice, for the
 * whole range or a window ahead, measured slower than read-ahead). Ties
 * (empty sections share offsets) by section, then item, so that a section
 * named twice sorts next to itself. NULL when out of memory. */
typedef struct order_ctx {
    const expert_reader *r;
    const uint32_t *section_of;
} order_ctx;

static int file_order(const void *a, const void *b, void *ctx)
{
    const order_ctx *o = ctx;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    uint32_t sx = o->section_of[x], sy = o->section_of[y];
    uint64_t ox = o->r->sections[sx].info.offset, oy = o->r->sections[sy].info.offset;
    if (ox != oy)
        return ox < oy ? -1 : 1;
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return x < y ? -1 : x > y;
}

static size_t *items_in_file_order(expert_reader *r, const uint32_t *section_of, size_t count)
{
    size_t *order = xa_calloc(&r->alloc, count ? count : 1, sizeof *order);
    if (order == NULL)
        return NULL;
    for (size_t k = 0; k < count; k++)
        order[k] = k;
    order_ctx o = {r, section_of};
    qsort_r(order, count, sizeof *order, file_order, &o);
    return order;
}

expert_status expert_read_sections(expert_reader *r, const expert_read_request *requests,
                                   size_t count, uint32_t flags, expert_error *err)
{
    if (r == NULL || (requests == NULL && count != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    for (size_t k = 0; k < count; k++) {
        const expert_read_request *q = &requests[k];
        if (q->section >= r->hdr.section_count)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC,
                        "request %zu: section %u of %u", k, q->section, r->hdr.section_count);
        uint64_t need = r->sections[q->section].info.decoded_length;
        if (q->capacity < need || (q->dst == NULL && need != 0))
            return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, q->section,
                        "request %zu: buffer of %zu bytes for a %llu-byte section", k, q->capacity,
                        (unsigned long long)need);
    }
    XP_TRY(decode_allowed(r, err));
    read_job j = {.r = r, .requests = requests, .flags = flags};
    /* in file order when memory allows, else as given */
    uint32_t *section_of = count > 1 ? xa_calloc(&r->alloc, count, sizeof *section_of) : NULL;
    for (size_t k = 0; section_of != NULL && k < count; k++)
        section_of[k] = requests[k].section;
    size_t *order = section_of != NULL ? items_in_file_order(r, section_of, count) : NULL;
    xa_free(&r->alloc, section_of);
    expert_status st = pool_run(r, count, order, read_one, &j, err);
    xa_free(&r->alloc, order);
    if (st != EXPERT_OK)
        for (size_t k = 0; k < count; k++)
            if (requests[k].dst != NULL)
                memset(requests[k].dst, 0, requests[k].capacity);
    return st;
}


typedef struct stream_job {
    expert_reader *r;
    const uint32_t *sections;
    size_t buffer; /* the largest stream_buffer of the sections */
    expert_write_fn write;
    void *user;
    uint32_t flags;
} stream_job;

static expert_status stream_one(void *ctx, size_t item, xp_dcache *cache, expert_error *err)
{
    const stream_job *j = ctx;
    uint32_t i = j->sections[item];
    if (xp_dcache_fit(cache, j->buffer) != 0 ||
        (j->buffer != 0 && xp_dcache_stored(cache, j->buffer) == NULL))
        return FAIL(EXPERT_E_NOMEM, NOOFF, i, "out of memory");
    int verify = !(j->flags & EXPERT_READ_NO_VERIFY) && !atomic_load(&j->r->sections[i].verified) &&
                 !atomic_load(&j->r->trusted);
    return stream_section(j->r, i, cache->dctx, cache->stored, cache->scratch, j->write, j->user,
                          verify, err);
}

expert_status expert_stream_sections(expert_reader *r, const uint32_t *sections, size_t count,
                                     expert_write_fn write, void *user, uint32_t flags,
                                     expert_error *err)
{
    if (r == NULL || (sections == NULL && count != 0))
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    for (size_t k = 0; k < count; k++)
        if (sections[k] >= r->hdr.section_count)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "entry %zu: section %u of %u", k,
                        sections[k], r->hdr.section_count);
    XP_TRY(decode_allowed(r, err));
    XP_TRY(make_resident(r, err));
    stream_job j = {.r = r, .sections = sections, .write = write, .user = user, .flags = flags};
    for (size_t k = 0; k < count; k++) {
        size_t n = stream_buffer(r, &r->sections[sections[k]].info);
        j.buffer = n > j.buffer ? n : j.buffer;
    }
    /* file order, as expert_read_sections takes its requests; a section
     * named twice would reach the sink from two threads at once */
    size_t *order = count > 1 ? items_in_file_order(r, sections, count) : NULL;
    if (count > 1 && order == NULL)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    for (size_t k = 1; k < count; k++)
        if (sections[order[k]] == sections[order[k - 1]]) {
            size_t a = order[k - 1] < order[k] ? order[k - 1] : order[k];
            size_t b = order[k - 1] < order[k] ? order[k] : order[k - 1];
            xa_free(&r->alloc, order);
            return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, sections[a],
                        "entries %zu and %zu: section %u named twice", a, b, sections[a]);
        }
    expert_status st = pool_run(r, count, order, stream_one, &j, err);
    xa_free(&r->alloc, order);
    pool_trim(r);
    return st;
}

/* A sequential reader of an I32/I64 section, one frame in memory at a time:
 * the CSR check must not cost memory proportional to what a file claims.
 * The section's digest was already checked by step 2 of full validation. */
typedef struct int_stream {
    const expert_section_info *s;
    size_t esize;
    uint64_t remaining;     /* elements not yet returned */
    const uint8_t *cur, *end;
    xp_frame_ctx fc;        /* compressed sections only */
    uint64_t next_frame;
    ZSTD_DCtx *dctx;
    uint8_t *buf, *scratch;
} int_stream;

static expert_status int_stream_open(const expert_reader *r, uint32_t idx, int_stream *st,
                                     expert_error *err)
{
    memset(st, 0, sizeof *st);
    const expert_section_info *s = &r->sections[idx].info;
    st->s = s;
    st->esize = expert_dtype_size(s->dtype);
    st->remaining = s->decoded_length / st->esize;
    const uint8_t *stored = r->data + s->offset;
    if (s->codec == EXPERT_CODEC_RAW) {
        st->cur = stored;
        st->end = stored + s->decoded_length;
        return EXPERT_OK;
    }
    st->fc = (xp_frame_ctx){stored, NULL, 0, s->frame_size, s->decoded_length, st->esize,
                            s->codec == EXPERT_CODEC_SHUFFLE_ZSTD && st->esize > 1, s->offset, idx,
                            &r->alloc};
    XP_TRY(xp_frames_parse(&r->alloc, stored, s->stored_length, s->decoded_length, s->frame_size,
                           &st->fc.starts, &st->fc.nframes, s->offset, idx, err));
    st->dctx = ZSTD_createDCtx();
    st->buf = xa_malloc(&r->alloc, s->frame_size);
    st->scratch = xa_malloc(&r->alloc, s->frame_size);
    if (st->dctx == NULL || st->buf == NULL || st->scratch == NULL)
        return FAIL(EXPERT_E_NOMEM, NOOFF, idx, "out of memory");
    return EXPERT_OK;
}

static void int_stream_close(int_stream *st)
{
    xa_free(st->fc.alloc, st->fc.starts);
    xa_free(st->fc.alloc, st->buf);
    xa_free(st->fc.alloc, st->scratch);
    ZSTD_freeDCtx(st->dctx);
}

/* Returns 0 and *v, or 1 at the end of the section, or -1 with *status set. */
static int int_stream_next(int_stream *st, int64_t *v, expert_status *status, expert_error *err)
{
    if (st->remaining == 0)
        return 1;
    if (st->cur == st->end) { /* only compressed sections get here */
        uint64_t f = st->next_frame++;
        uint64_t start = f * st->fc.frame_size;
        size_t len = (size_t)(st->fc.decoded_length - start < st->fc.frame_size
                                  ? st->fc.decoded_length - start
                                  : st->fc.frame_size);
        *status = xp_frame_decode(&st->fc, st->dctx, st->scratch, f, st->buf, err);
        if (*status != EXPERT_OK)
            return -1;
        st->cur = st->buf;
        st->end = st->buf + len; /* frame_size is a multiple of esize: no element straddles */
    }
    *v = st->esize == 4 ? (int64_t)(int32_t)xp_le32(st->cur) : (int64_t)xp_le64(st->cur);
    st->cur += st->esize;
    st->remaining--;
    return 0;
}

/* Spec §10.6: indptr starts at 0, never decreases, ends at nnz; column
 * indices are in range and strictly increase within a row. Both arrays are
 * streamed in order (indptr is non-decreasing, so indices are consumed in
 * order too), so memory is two frames whatever the sizes. */
static expert_status check_one_csr(const expert_reader *r, uint32_t m, const uint32_t *ro,
                                   expert_error *err)
{
    uint32_t ip = ro[ROLE_IP] - 1, ix = ro[ROLE_IX] - 1;
    uint64_t in = r->sections[ro[ROLE_VT] - 1].info.dims[1];
    uint64_t rows = r->sections[ip].info.dims[0] - 1; /* dims[0] >= 1 (S11j) */
    uint64_t nnz = r->sections[ix].info.dims[0];
    int_stream P, X;
    expert_status st = int_stream_open(r, ip, &P, err);
    if (st == EXPERT_OK)
        st = int_stream_open(r, ix, &X, err);
    const char *why = NULL;
    int64_t prev = 0, next = 0, col = 0, last = 0;
    if (st == EXPERT_OK && int_stream_next(&P, &prev, &st, err) == 0 && prev != 0)
        why = "indptr[0] is not 0";
    for (uint64_t row = 0; st == EXPERT_OK && why == NULL && row < rows; row++) {
        if (int_stream_next(&P, &next, &st, err) != 0)
            break;
        if (next < prev || (uint64_t)next > nnz) {
            why = "indptr decreases or exceeds nnz";
            break;
        }
        for (int64_t j = prev; j < next && st == EXPERT_OK && why == NULL; j++) {
            if (int_stream_next(&X, &col, &st, err) != 0)
                break;
            if (col < 0 || (uint64_t)col >= in)
                why = "column index out of range";
            else if (j > prev && col <= last)
                why = "column indices not strictly increasing within a row";
            last = col;
        }
        prev = next;
    }
    if (st == EXPERT_OK && why == NULL && (uint64_t)prev != nnz)
        why = "indptr does not end at nnz";
    int_stream_close(&P);
    int_stream_close(&X);
    if (st != EXPERT_OK)
        return st;
    if (why != NULL)
        return FAIL(EXPERT_E_DECODE_FAILED, r->sections[ip].info.offset, ip,
                    "module %u: invalid CSR: %s", m, why);
    return EXPERT_OK;
}

static expert_status check_csr(expert_reader *r, expert_error *err)
{
    uint32_t nm = xp_metadata_module_count(r->meta);
    for (uint32_t m = 0; m < nm && r->module_roles != NULL; m++) {
        const uint32_t *ro = &r->module_roles[(size_t)m * ROLE_N];
        if (strcmp(xp_metadata_module(r->meta, m)->type, "osd") == 0 && ro[ROLE_IP])
            XP_TRY(check_one_csr(r, m, ro, err));
    }
    return EXPERT_OK;
}

static expert_status check_padding(const expert_reader *r, expert_error *err)
{
    extent *ex = NULL;
    size_t n = 0;
    if (build_extents(r, &ex, &n) != EXPERT_OK)
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    uint64_t end = 0;
    expert_status s = EXPERT_OK;
    for (size_t i = 0; i < n && s == EXPERT_OK; i++) {
        for (uint64_t b = end; b < ex[i].off; b++)
            if (r->data[b] != 0) {
                s = FAIL(EXPERT_E_BAD_PADDING, b, NOSEC, "padding byte at %llu is not zero",
                         (unsigned long long)b);
                break;
            }
        end = ex[i].off + ex[i].len;
    }
    xa_free(&r->alloc, ex);
    return s;
}

static int by_offset(const void *a, const void *b, void *ctx)
{
    const expert_reader *r = ctx;
    uint64_t x = r->sections[*(const uint32_t *)a].info.offset;
    uint64_t y = r->sections[*(const uint32_t *)b].info.offset;
    return x < y ? -1 : x > y;
}

/* Hashes [at, end) of the file: by pread through `buf` when `pread_it`,
 * else from memory. */
static expert_status hash_range(const expert_reader *r, xp_sha256_ctx *c, uint64_t at, uint64_t end,
                                int pread_it, uint8_t *buf, size_t buf_size, expert_error *err)
{
    if (!pread_it)
        return at < end ? xp_sha256_update(c, r->data + at, (size_t)(end - at)) : EXPERT_OK;
    while (at < end) {
        size_t n = (size_t)(end - at < buf_size ? end - at : buf_size);
        if (pread_exact(r->fd, buf, n, at) != 0)
            return FAIL(EXPERT_E_IO, at, NOSEC, "cannot read the file: %s", read_failure());
        XP_TRY(xp_sha256_update(c, buf, n));
        at += n;
    }
    return EXPERT_OK;
}

/* In a mapped file, raw sections' bytes come by pread into `buf` (their
 * verification read them that way: their pages were never faulted in);
 * everything else, compressed sections included, from the mapping, which
 * their verification has faulted in already. */
static expert_status check_file_hash(const expert_reader *r, uint8_t *buf, size_t buf_size,
                                     expert_error *err)
{
    const expert_header_info *h = &r->hdr;
    uint32_t *raw = NULL, nraw = 0;
    if (streams_by_pread(r) && buf != NULL && buf_size != 0) {
        raw = xa_calloc(&r->alloc, h->section_count ? h->section_count : 1, sizeof *raw);
        if (raw == NULL)
            return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
        for (uint32_t i = 0; i < h->section_count; i++)
            if (r->sections[i].info.codec == EXPERT_CODEC_RAW && r->sections[i].info.stored_length != 0)
                raw[nraw++] = i; /* an empty section occupies no bytes (its offset may be any) */
        qsort_r(raw, nraw, sizeof *raw, by_offset, (void *)(uintptr_t)r);
    }
    xp_sha256_ctx *c = NULL;
    if (xp_sha256_new(&c) != EXPERT_OK) {
        xa_free(&r->alloc, raw);
        return FAIL(EXPERT_E_NOMEM, NOOFF, NOSEC, "out of memory");
    }
    uint8_t digest[32];
    expert_status s = xp_hash_header(c, r->data, h->header_size, 1);
    uint64_t at = h->header_size;
    for (uint32_t k = 0; s == EXPERT_OK && k < nraw; k++) {
        const expert_section_info *si = &r->sections[raw[k]].info;
        s = hash_range(r, c, at, si->offset, 0, NULL, 0, err);
        if (s == EXPERT_OK)
            s = hash_range(r, c, si->offset, si->offset + si->stored_length, 1, buf, buf_size, err);
        at = si->offset + si->stored_length;
    }
    if (s == EXPERT_OK)
        s = hash_range(r, c, at, h->file_length, 0, NULL, 0, err);
    xa_free(&r->alloc, raw);
    if (s == EXPERT_E_IO) {
        xp_sha256_free(c);
        return s;
    }
    if (s == EXPERT_OK)
        s = xp_sha256_final(c, digest);
    xp_sha256_free(c);
    if (s != EXPERT_OK)
        return FAIL(s, NOOFF, NOSEC, "hashing failed");
    if (memcmp(digest, h->file_sha256, 32) != 0)
        return FAIL(EXPERT_E_FILE_HASH_MISMATCH, XP_OFF_FILE_SHA256, NOSEC,
                    "file_sha256 does not match the file");
    return EXPERT_OK;
}

expert_status expert_verify_signature(const expert_reader *r, const expert_public_key *key,
                                      expert_error *err)
{
    if (r == NULL || key == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    if (!r->hdr.is_signed)
        return FAIL(EXPERT_E_UNSIGNED, XP_OFF_SIGNATURE, NOSEC,
                    "the file carries no signature (64 zero bytes)");
    uint8_t msg[XP_SIGN_DOMAIN_LEN + 32];
    memcpy(msg, XP_SIGN_DOMAIN, XP_SIGN_DOMAIN_LEN);
    memcpy(msg + XP_SIGN_DOMAIN_LEN, r->hdr.structure_sha256, 32);
    if (xp_ed25519_verify(key, msg, sizeof msg, r->data + XP_OFF_SIGNATURE) != EXPERT_OK)
        return FAIL(EXPERT_E_BAD_SIGNATURE, XP_OFF_SIGNATURE, NOSEC,
                    "Ed25519 signature does not verify with the given public key");
    return EXPERT_OK;
}

expert_status expert_verify_access(expert_reader *r, expert_error *err)
{
    if (r == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    XP_TRY(decode_allowed(r, err));
    verify_job j = {.file_hash = 0};
    return verify_all_sections(r, &j, err);
}

expert_status expert_verify_full(expert_reader *r, const expert_public_key *key, expert_error *err)
{
    if (r == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, NOOFF, NOSEC, "invalid argument");
    XP_TRY(decode_allowed(r, err));
    verify_job j = {.file_hash = 1, .file_status = EXPERT_OK};
    XP_TRY(verify_all_sections(r, &j, err));
    XP_TRY(check_csr(r, err));
    XP_TRY(check_padding(r, err));
    if (j.file_status != EXPERT_OK) {
        if (err != NULL)
            *err = j.file_err;
        return j.file_status;
    }
    if (key != NULL)
        XP_TRY(expert_verify_signature(r, key, err));
    atomic_store(&r->fully_verified, file_unchanged(r));
    return EXPERT_OK;
}

const uint8_t *expert_reader_bytes(const expert_reader *r, size_t *length)
{
    *length = r->size;
    return r->data;
}

const expert_allocator *xp_reader_allocator(const expert_reader *r)
{
    return &r->alloc;
}
