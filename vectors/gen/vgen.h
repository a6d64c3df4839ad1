/*
 * vgen.h — helpers of the golden-vector generator: byte buffers, the .expert
 * v2 layout rebuilt from the spec (header/TOC offsets, both digests, the
 * canonical index, a flexible serialiser for non-canonical layouts), and
 * hand-built zstd frames (raw and RLE blocks only, so their bytes do not
 * depend on the libzstd version).
 *
 * Parts of this file follow ref/tests/craft.c (hashing, index, model); the
 * layout code is independent of ref/lib so that the vectors test the library
 * against the spec, not against itself.
 */
#ifndef VGEN_H
#define VGEN_H

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

/* ---- growable byte buffer; allocation failure aborts the generator ---- */
typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;
void buf_put(buf *b, const void *p, size_t n);
void buf_zero(buf *b, size_t n);
void buf_byte(buf *b, uint8_t v);
void buf_str(buf *b, const char *s);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(buf *b);
void *xmalloc(size_t n);
void *xcalloc(size_t a, size_t b);
char *xstrdup(const char *s);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

int file_load(const char *path, buf *out);
int file_save(const char *path, const void *p, size_t n);

/* ---- hashing (spec §11) ---- */
void sha256(const void *p, size_t n, uint8_t out[32]);
void hex(const uint8_t *p, size_t n, char *out); /* 2n+1 chars */
void file_sha(const uint8_t *p, size_t n, uint8_t out[32]);
void structure_sha(const uint8_t *p, size_t n, uint8_t out[32]);
/* file_sha256 then structure_sha256, in place (signature kept). */
void rehash(uint8_t *p, size_t n);
/* structure_sha256 only. */
void rehash_structure(uint8_t *p, size_t n);

/* ---- index (spec §8) ---- */
uint64_t fnv1a64(const void *p, size_t n);
uint32_t slot_count(uint32_t toc_count);
uint8_t *index_build(const uint8_t *const *names, const size_t *lens, uint32_t n, size_t *out_len);

/* ---- a parsed file, serialisable with any layout ---- */
typedef struct msec {
    uint8_t e[TOC_ENTRY];
    uint8_t *data; /* stored bytes */
    size_t len;
} msec;

typedef struct model {
    uint8_t header[4096];
    uint32_t header_size;
    msec *sec;
    uint32_t n;
    uint8_t *meta; /* stored metadata */
    size_t meta_len;
    uint64_t meta_dec;
    uint8_t *strings;
    size_t strings_len;
} model;

void model_parse(const uint8_t *p, size_t n, model *m);
void model_free(model *m);
void model_set_name(model *m, uint32_t i, const void *name, size_t len); /* appends to strings */
void model_set_data(model *m, uint32_t i, const void *p, size_t n);      /* stored bytes */
void model_set_meta_stored(model *m, const void *p, size_t n, uint64_t decoded_len);
void model_set_meta_json(model *m, const char *json, size_t len); /* raw-block zstd frame */
void model_add(model *m, const uint8_t entry[TOC_ENTRY], const char *name, const void *p, size_t n);
void model_set_header_size(model *m, uint32_t hs, const uint8_t *ext); /* ext: hs-256 bytes */

#define LAYOUT_MAX_GAPS 8
typedef struct layout {
    int regions_first;     /* metadata, TOC, index, strings, then the sections */
    int reverse_sections;  /* sections in reverse TOC order in the file */
    uint64_t gap_meta, gap_toc, gap_index, gap_strings; /* extra zero bytes before each region */
    uint32_t gap_sec_at[LAYOUT_MAX_GAPS];
    uint64_t gap_sec[LAYOUT_MAX_GAPS]; /* extra zero bytes before section gap_sec_at[k] */
    int ngap_sec;
    const uint8_t *index; /* non-NULL: these index bytes instead of the canonical ones */
    size_t index_len;
} layout;
/* Writes every header length/offset and TOC offset/stored_length, the index
 * (canonical unless overridden), file_length, then both digests. */
void model_serialize(const model *m, const layout *L, buf *out);

/* ---- hand-built zstd frames (RFC 8878), raw and RLE blocks only ---- */
typedef struct zf_opts {
    int window_log;     /* 0: single-segment frame; else a Window_Descriptor of 2^window_log */
    int no_fcs;         /* omit Frame_Content_Size (needs window_log) */
    int fcs_bytes;      /* 0: smallest encoding; else 1 (single segment), 2, 4 or 8 */
    int fcs_set;        /* declare fcs instead of the real length */
    uint64_t fcs;
    uint32_t dict_id;   /* non-zero: a 4-byte Dictionary_ID field */
    int checksum;       /* 1: valid content checksum; 2: wrong checksum */
    size_t block_max;   /* 0: 128 KiB */
    int no_rle;         /* raw blocks only */
    int extra_block_bytes; /* declare a raw block longer than the content left (corrupt) */
} zf_opts;
void zframe(buf *out, const uint8_t *content, size_t n, const zf_opts *o);
uint64_t xxh64(const void *p, size_t n, uint64_t seed);

/* ---- JSON helpers ---- */
void json_str(buf *b, const uint8_t *s, size_t n); /* quoted, escaped */
/* Strips insignificant whitespace from valid JSON (a NUL-terminated copy). */
char *json_minify(const char *s, size_t n);

/* ---- deterministic PRNG (xorshift64*) ---- */
typedef struct prng {
    uint64_t s;
} prng;
uint64_t prng_next(prng *r);
double prng_unit(prng *r); /* [0, 1) */

#endif
