/*
 * xpmodel.h — an independent model of the .expert v2 byte layout, written
 * from specs/binary-format/spec.md (not from ref/lib), for the corruption
 * suite and the fuzz harnesses:
 *
 *   - little-endian helpers, SHA-256 (OpenSSL EVP), FNV-1a 64;
 *   - file_sha256 / structure_sha256 of an image (§11.1, §11.2) and rehash;
 *   - an oracle for the header checks S1–S8 of §12.1, which gives the exact
 *     class a reader must report for a header mutation (S9, the structure
 *     hash, catches everything else in header and regions);
 *   - a parsed model (header, sections, metadata, strings) and a serialiser
 *     to the canonical layout of §2.2 with the canonical index (§8.2), with a
 *     few knobs for non-canonical layouts;
 *   - hand-built zstd frames (raw blocks) with any frame-header fields, and
 *     the frame table of §7.2.
 *
 * Allocation failures abort: this is test code, not the library.
 */
#ifndef XPMODEL_H
#define XPMODEL_H

#include <stddef.h>
#include <stdint.h>

/* header fields (spec §3) */
enum {
    XM_H_MAGIC = 0x00, XM_H_MAJOR = 0x08, XM_H_MINOR = 0x0A, XM_H_HEADER_SIZE = 0x0C,
    XM_H_TOC_COUNT = 0x10, XM_H_FILE_SHA = 0x14, XM_H_SIG = 0x34, XM_H_ALIGN = 0x74,
    XM_H_FLAGS = 0x78, XM_H_TOC_ENTRY_SIZE = 0x7C, XM_H_STRUCT_SHA = 0x80,
    XM_H_META_OFF = 0xA0, XM_H_META_LEN = 0xA8, XM_H_META_DEC = 0xB0, XM_H_TOC_OFF = 0xB8,
    XM_H_INDEX_OFF = 0xC0, XM_H_INDEX_LEN = 0xC8, XM_H_STR_OFF = 0xD0, XM_H_STR_LEN = 0xD8,
    XM_H_FILE_LEN = 0xE0, XM_H_RESERVED = 0xE8
};
/* TOC entry fields (spec §5.1) */
enum {
    XM_TOC = 128, XM_T_NAME_OFF = 0, XM_T_NAME_LEN = 4, XM_T_TYPE = 6, XM_T_CODEC = 8,
    XM_T_DTYPE = 9, XM_T_RANK = 10, XM_T_RES1 = 11, XM_T_FLAGS = 12, XM_T_LAYER = 16,
    XM_T_MODULE = 20, XM_T_FRAME = 24, XM_T_RES2 = 28, XM_T_OFFSET = 32, XM_T_STORED = 40,
    XM_T_DECODED = 48, XM_T_DIMS = 56, XM_T_SHA = 88, XM_T_RES3 = 120
};

uint16_t xm_rd16(const uint8_t *p);
uint32_t xm_rd32(const uint8_t *p);
uint64_t xm_rd64(const uint8_t *p);
void xm_wr16(uint8_t *p, uint16_t v);
void xm_wr32(uint8_t *p, uint32_t v);
void xm_wr64(uint8_t *p, uint64_t v);

/* growable byte buffer */
typedef struct xb {
    uint8_t *p;
    size_t n, cap;
} xb;
void xb_put(xb *b, const void *p, size_t n);
void xb_zero(xb *b, size_t n);
void xb_u8(xb *b, uint8_t v);
void xb_u32(xb *b, uint32_t v);
void xb_str(xb *b, const char *s);
void xb_free(xb *b);
void *xm_alloc(size_t n);    /* calloc or abort */
void *xm_dup(const void *p, size_t n);

void xm_sha256(const void *p, size_t n, uint8_t out[32]);
uint64_t xm_fnv1a64(const void *p, size_t n);

/* Digests of an image. structure: -1 when a region lies outside the image. */
void xm_file_sha(const uint8_t *p, size_t n, uint8_t out[32]);
int xm_structure_sha(const uint8_t *p, size_t n, uint8_t out[32]);
/* file_sha256 then structure_sha256, written into the header (signature kept). */
void xm_rehash(uint8_t *p, size_t n);
/* structure_sha256 only (file_sha256 field kept as is). */
void xm_rehash_structure(uint8_t *p, size_t n);

/* Spec §12.1 S1–S8 on an image: 0 when they pass, else the class code (§15). */
int xm_oracle_header(const uint8_t *p, size_t n);
/* index_length a file with `count` sections must have (§8.1). */
uint64_t xm_index_length(uint32_t count);
/* canonical index region (§8.2) for the names of a model / an image */
void xm_index_build(xb *out, const uint8_t *const *names, const size_t *lens, uint32_t n);

/* ---- parsed model ---- */
typedef struct xm_section {
    uint8_t entry[XM_TOC];
    uint8_t *data; /* stored bytes */
    size_t len;
} xm_section;

typedef struct xm_model {
    uint8_t header[4096];
    uint32_t header_size;
    uint32_t alignment;
    xm_section *sec;
    uint32_t n;
    uint8_t *meta;
    size_t meta_len;
    uint64_t meta_dec;
    uint8_t *strings;
    size_t strings_len;
    /* serialisation knobs (0 = canonical) */
    uint64_t gap_before_meta;   /* extra zero bytes before the metadata */
    uint64_t trailing;          /* zero bytes appended after the strings (inside file_length) */
    int regions_first;          /* regions right after the header, sections after them */
    int keep_signature;         /* copy the header's signature bytes (else zero) */
} xm_model;

/* Parses a structurally valid image. 0 on success. */
int xm_parse(const uint8_t *p, size_t n, xm_model *m);
void xm_free(xm_model *m);
xm_model xm_clone(const xm_model *m);
/* Canonical layout, canonical index, file and structure digests. */
void xm_serialize(const xm_model *m, xb *out);
void xm_set_section(xm_model *m, uint32_t i, const void *p, size_t n);
void xm_set_metadata_json(xm_model *m, const char *json, size_t len);
void xm_set_meta_stored(xm_model *m, const void *p, size_t n, uint64_t decoded);
/* name of section i (pointer into the strings, length in *len) */
const uint8_t *xm_name(const xm_model *m, uint32_t i, size_t *len);
/* appends a name to the strings region and points entry i at it */
void xm_set_name(xm_model *m, uint32_t i, const void *name, size_t len);

/* zstd with libzstd (content size flag as given); malloc'd */
uint8_t *xm_zstd(const void *p, size_t n, int level, int content_size, int checksum, size_t *out_len);

/* A hand-built zstd frame of raw blocks. */
typedef struct xm_frame_opts {
    int fcs;              /* 0: absent, 1: the true size, 2: `fcs_value` */
    uint64_t fcs_value;
    int single_segment;   /* 1: no window descriptor (requires fcs) */
    unsigned window_log;  /* when !single_segment: 10..41 */
    uint32_t dict_id;     /* 0: none */
    int checksum;         /* 0: none, 1: 4 arbitrary (wrong) bytes */
    uint32_t magic;       /* 0: zstd magic */
} xm_frame_opts;
void xm_frame_raw(xb *out, const void *data, size_t n, const xm_frame_opts *o);

/* Stored bytes of a framed section (§7.2): table + frames, libzstd level `level`. */
void xm_encode_framed(xb *out, const uint8_t *plain, uint64_t n, uint32_t frame_size, size_t elem,
                      int shuffle, int level);
size_t xm_dtype_size(unsigned dtype); /* 0 if unknown */

#endif
