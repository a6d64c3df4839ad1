/*
 * xpmodel.h — the one independent model of the .expert v2 byte layout,
 * written from specs/binary-format/spec.md and not from ref/lib. It is the
 * second opinion every test tool checks the library against: the unit tests
 * (ref/tests) patch files with it, the vector generator (vectors/gen)
 * builds non-canonical and defective files with it, and the corruption suite
 * and fuzz seeds (conformance/) mutate files with it.
 *
 *   - little-endian access, header and TOC field offsets (spec §3, §5.1);
 *   - a growable byte buffer and whole-file I/O;
 *   - SHA-256 (OpenSSL EVP), file_sha256 / structure_sha256 (§11.1, §11.2);
 *   - FNV-1a 64 and the canonical name index (§8);
 *   - an oracle for the header checks S1–S8 (§12.1);
 *   - a parsed model and a serialiser: canonical layout (§2.2) or, through
 *     xm_layout, any region order, gaps, trailing bytes or index bytes;
 *   - zstd frames: from libzstd, framed sections (§7.2), and frames built by
 *     hand from raw and RLE blocks (RFC 8878) so their bytes do not depend on
 *     the libzstd version and any frame-header field can be set;
 *   - a deterministic PRNG.
 *
 * Allocation failures abort: this is test code, not the library.
 */
#ifndef XPMODEL_H
#define XPMODEL_H

#include <stddef.h>
#include <stdint.h>

/* ---- header field offsets (spec §3) ---- */
#define H_MAGIC 0x00
#define H_MAJOR 0x08
#define H_MINOR 0x0A
#define H_HEADER_SIZE 0x0C
#define H_TOC_COUNT 0x10
#define H_FILE_SHA 0x14
#define H_SIG 0x34
#define H_ALIGN 0x74
#define H_FLAGS 0x78
#define H_TOC_ENTRY_SIZE 0x7C
#define H_STRUCT_SHA 0x80
#define H_META_OFF 0xA0
#define H_META_LEN 0xA8
#define H_META_DEC 0xB0
#define H_TOC_OFF 0xB8
#define H_INDEX_OFF 0xC0
#define H_INDEX_LEN 0xC8
#define H_STR_OFF 0xD0
#define H_STR_LEN 0xD8
#define H_FILE_LEN 0xE0
#define H_RESERVED 0xE8

/* ---- TOC entry field offsets (spec §5.1) ---- */
#define TOC_ENTRY 128
#define T_NAME_OFF 0
#define T_NAME_LEN 4
#define T_TYPE 6
#define T_CODEC 8
#define T_DTYPE 9
#define T_RANK 10
#define T_RES1 11
#define T_FLAGS 12
#define T_LAYER 16
#define T_MODULE 20
#define T_FRAME 24
#define T_RES2 28
#define T_OFFSET 32
#define T_STORED 40
#define T_DECODED 48
#define T_DIMS 56
#define T_SHA 88
#define T_RES3 120

uint16_t rd16(const uint8_t *p);
uint32_t rd32(const uint8_t *p);
uint64_t rd64(const uint8_t *p);
void wr16(uint8_t *p, uint16_t v);
void wr32(uint8_t *p, uint32_t v);
void wr64(uint8_t *p, uint64_t v);

/* ---- memory and buffers ---- */
void *xm_alloc(size_t n); /* zeroed, or abort */
void *xm_dup(const void *p, size_t n);

/* A growable byte buffer, NUL-terminated after any append (for text use). */
typedef struct xb {
    uint8_t *p;
    size_t n, cap;
} xb;
void xb_put(xb *b, const void *p, size_t n);
void xb_zero(xb *b, size_t n);
void xb_u8(xb *b, uint8_t v);
void xb_u32(xb *b, uint32_t v);
void xb_str(xb *b, const char *s);
void xb_printf(xb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
xb xb_copy(const void *p, size_t n);
void xb_free(xb *b);

/* Whole-file I/O; 0 on success. */
int file_load(const char *path, xb *out);
int file_save(const char *path, const void *p, size_t n);

/* ---- hashing (spec §11) ---- */
void sha256(const void *p, size_t n, uint8_t out[32]);
/* file_sha256 of an image: the whole file with 0x14..0x33, 0x34..0x73 and
 * 0x80..0x9F as zero (an image shorter than 0xA0 is hashed as it is). */
void xm_file_sha(const uint8_t *p, size_t n, uint8_t out[32]);
/* structure_sha256: header [0, header_size) with 0x34..0x73 and 0x80..0x9F
 * as zero, then metadata, TOC, index and strings, each clamped to the image
 * so a broken header cannot make it read out of bounds (header_size is taken
 * as 256 when smaller). Returns -1 when something was clamped, else 0. */
int xm_structure_sha(const uint8_t *p, size_t n, uint8_t out[32]);
/* file_sha256 then structure_sha256, written into the header (signature kept). */
void xm_rehash(uint8_t *p, size_t n);
/* structure_sha256 only (the file_sha256 field kept as it is). */
void xm_rehash_structure(uint8_t *p, size_t n);

/* ---- index (spec §8) ---- */
uint64_t fnv1a64(const void *p, size_t n);
uint32_t xm_slot_count(uint32_t toc_count);
uint64_t xm_index_length(uint32_t toc_count);
/* The canonical index region for these names: 8 + 4 * slot_count bytes, malloc'd. */
uint8_t *xm_index_build(const uint8_t *const *names, const size_t *lens, uint32_t n, size_t *out_len);
/* The canonical index computed from an image's own TOC and strings. */
uint8_t *xm_index_of_file(const uint8_t *p, size_t n, size_t *out_len);

/* Spec §12.1 S1–S8 on an image: 0 when they pass, else the class code (§15). */
int xm_oracle_header(const uint8_t *p, size_t n);

/* ---- a parsed file, serialisable with any layout ---- */
typedef struct xm_section {
    uint8_t entry[TOC_ENTRY];
    uint8_t *data; /* stored bytes */
    size_t len;
} xm_section;

/* The alignment used to lay sections out is the header's (64 when the field
 * holds a value the spec does not allow). */
typedef struct xm_model {
    uint8_t header[4096];
    uint32_t header_size;
    xm_section *sec;
    uint32_t n;
    uint8_t *meta; /* stored metadata */
    size_t meta_len;
    uint64_t meta_dec;
    uint8_t *strings;
    size_t strings_len;
} xm_model;

/* Parses an image whose header size and regions lie inside it (sections
 * and regions are copied as stored). 0 on success, -1 otherwise. */
int xm_parse(const uint8_t *p, size_t n, xm_model *m);
void xm_free(xm_model *m);
xm_model xm_clone(const xm_model *m);
/* name of section i (pointer into the strings, length in *len; empty when out of range) */
const uint8_t *xm_name(const xm_model *m, uint32_t i, size_t *len);
void xm_set_name(xm_model *m, uint32_t i, const void *name, size_t len); /* appends to the strings */
void xm_set_section(xm_model *m, uint32_t i, const void *p, size_t n);    /* stored bytes */
void xm_set_meta_stored(xm_model *m, const void *p, size_t n, uint64_t decoded_len);
void xm_set_metadata_json(xm_model *m, const char *json, size_t len); /* libzstd level 3, content size */
/* Appends a section: entry copied, named `name`, stored bytes p[0, n). */
void xm_add_section(xm_model *m, const uint8_t entry[TOC_ENTRY], const char *name, const void *p, size_t n);
void xm_set_header_size(xm_model *m, uint32_t hs, const uint8_t *ext); /* ext: hs - 256 bytes */

#define XM_LAYOUT_MAX_GAPS 8
/* How to lay a model out; all zero is the canonical layout of §2.2. */
typedef struct xm_layout {
    int regions_first;    /* metadata, TOC, index, strings, then the sections */
    int reverse_sections; /* sections in reverse TOC order in the file */
    uint64_t gap_meta, gap_toc, gap_index, gap_strings; /* extra zero bytes after each region's alignment */
    uint32_t gap_sec_at[XM_LAYOUT_MAX_GAPS];
    uint64_t gap_sec[XM_LAYOUT_MAX_GAPS]; /* extra zero bytes after the alignment of section gap_sec_at[k] */
    int ngap_sec;
    uint64_t trailing;    /* zero bytes after the last region, counted in file_length */
    int zero_signature;   /* clear the header's signature bytes */
    const uint8_t *index; /* non-NULL: these index bytes instead of the canonical ones */
    size_t index_len;
} xm_layout;
/* Writes every header offset and length (not header_size), each TOC entry's
 * offset and stored_length, the index, file_length, then both digests. */
void xm_serialize(const xm_model *m, const xm_layout *L, xb *out); /* out: a new buffer */

/* ---- zstd ---- */
/* libzstd at `level`, content size flag and checksum as given; malloc'd. */
uint8_t *xm_zstd(const void *p, size_t n, int level, int content_size, int checksum, size_t *out_len);
/* Stored bytes of a framed section (§7.2): frame table + frames, libzstd at `level`. */
void xm_encode_framed(xb *out, const uint8_t *plain, uint64_t n, uint32_t frame_size, size_t elem, int shuffle,
                      int level);
size_t xm_dtype_size(unsigned dtype); /* 0 if unknown */

/* A frame built by hand (RFC 8878): raw blocks, and RLE blocks for runs of
 * 32 or more equal bytes. All zero: a single-segment frame with the
 * smallest content-size field. */
typedef struct zf_opts {
    int window_log;        /* 0: single-segment frame; else a Window_Descriptor of 2^window_log */
    int no_fcs;            /* omit Frame_Content_Size (needs window_log) */
    int fcs_bytes;         /* 0: smallest encoding; else 1 (single segment), 2, 4 or 8 */
    int fcs_set;           /* declare fcs instead of the real length */
    uint64_t fcs;
    uint32_t dict_id;      /* non-zero: a 4-byte Dictionary_ID field */
    int checksum;          /* 1: valid content checksum; 2: wrong checksum */
    size_t block_max;      /* 0: 128 KiB */
    int no_rle;            /* raw blocks only */
    int extra_block_bytes; /* declare a raw block longer than the content left (corrupt) */
    uint32_t magic;        /* 0: the zstd magic; else this magic number */
} zf_opts;
/* Appends the frame to out; returns -1 (appending nothing) for options no
 * frame can have (a 1-byte FCS without single segment, a single-segment
 * frame without FCS, a window_log outside 10..41). */
int zframe(xb *out, const uint8_t *content, size_t n, const zf_opts *o);
uint64_t xxh64(const void *p, size_t n, uint64_t seed);

/* ---- deterministic PRNG (xorshift64*) ---- */
typedef struct prng {
    uint64_t s;
} prng;
uint64_t prng_next(prng *r);
double prng_unit(prng *r); /* [0, 1) */
void prng_fill(prng *r, void *p, size_t n);

#endif
