/*
 * craft.h — shared helpers for the cmocka tests: an independent
 * re-implementation of the .expert v2 byte layout (design notes), used to
 * patch files byte-for-byte and recompute their hashes, plus small test
 * utilities (temp dirs, deterministic PRNG, writer wrapper).
 *
 * Nothing here calls into ref/lib except the writer/reader wrappers at the
 * bottom; the layout, index and hashing code is written from the design
 * notes so the tests check the library against the notes, not against itself.
 */
#ifndef EXPERT_TEST_CRAFT_H
#define EXPERT_TEST_CRAFT_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"

/* ------------------------------------------------------------ layout */

/* Header field offsets (design notes, "Header: 256 bytes at offset 0"). */
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

/* TOC entry field offsets (128-byte entries). */
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

/* A growable byte buffer. */
typedef struct cbuf {
    uint8_t *p;
    size_t n;
} cbuf;

void cbuf_free(cbuf *b);
int cbuf_dup(cbuf *dst, const uint8_t *p, size_t n);

/* Whole-file I/O; 0 on success. */
int file_load(const char *path, cbuf *out);
int file_save(const char *path, const void *p, size_t n);
int file_exists(const char *path);

/* TOC entry i of a file image (no bounds checks beyond the header's toc_offset). */
uint8_t *toc_entry(uint8_t *file, uint32_t i);

/* SHA-256 through OpenSSL EVP (independent of expert_sha256). */
void sha256(const void *p, size_t n, uint8_t out[32]);

/* file_sha256 of an image: whole file with 0x14..0x33, 0x34..0x73, 0x80..0x9F as zero. */
void craft_file_sha(const uint8_t *p, size_t n, uint8_t out[32]);
/* structure_sha256 of an image: header [0,header_size) with 0x34..0x73 and
 * 0x80..0x9F as zero, then metadata, TOC, index, strings (ranges clamped to
 * the image so a broken header cannot make it read out of bounds). */
void craft_structure_sha(const uint8_t *p, size_t n, uint8_t out[32]);
/* Recompute file_sha256 then structure_sha256 in place (signature kept). */
void craft_rehash(uint8_t *p, size_t n);
/* Recompute structure_sha256 only (file_sha256 field kept as is). */
void craft_rehash_structure(uint8_t *p, size_t n);

/* FNV-1a 64 over bytes. */
uint64_t fnv1a64(const void *p, size_t n);
/* Canonical index region for the given names (design notes, "Index").
 * Returns a malloc'd buffer of 8 + 4*slot_count bytes. */
uint8_t *craft_index(const uint8_t *const *names, const size_t *lens, uint32_t n, size_t *out_len);
/* The canonical index computed from an image's own TOC and strings. */
uint8_t *craft_index_of_file(const uint8_t *p, size_t n, size_t *out_len);

/* A parsed file: every part separately, so a test can change one thing and
 * serialise the rest canonically. */
typedef struct craft_section {
    uint8_t entry[TOC_ENTRY];
    uint8_t *data; /* stored bytes */
    size_t len;
} craft_section;

typedef struct craft_model {
    uint8_t header[4096];
    uint32_t header_size;
    uint32_t alignment;
    craft_section *sec;
    uint32_t n;
    uint8_t *meta; /* stored (zstd) metadata */
    size_t meta_len;
    uint64_t meta_decoded_len;
    uint8_t *strings;
    size_t strings_len;
    /* serialisation knobs (0 = canonical) */
    size_t extra_gap_before_toc;  /* zero bytes inserted between metadata and TOC */
    size_t extra_gap;             /* zero bytes inserted before section extra_gap_at */
    uint32_t extra_gap_at;
} craft_model;

/* Parse a well-formed image (as written by the library). 0 on success. */
int craft_parse(const uint8_t *p, size_t n, craft_model *m);
void craft_model_free(craft_model *m);
/* Canonical layout (spec §2.2): header | non-empty sections at multiples of
 * the alignment (empty sections: offset 0, no space) | metadata, TOC, index
 * at multiples of 8 | strings; canonical
 * index; every header length/offset rewritten; hashes recomputed. */
int craft_serialize(const craft_model *m, cbuf *out);
/* Append a name to the strings region and point entry i at it. */
int craft_set_name(craft_model *m, uint32_t i, const void *name, size_t len);
/* Replace the stored metadata by zstd(json) (content size present). */
int craft_set_metadata(craft_model *m, const char *json, size_t len);
/* Replace the stored metadata bytes verbatim. */
int craft_set_meta_stored(craft_model *m, const void *p, size_t n, uint64_t decoded_len);
/* Replace the stored bytes of section i (stored_length follows). */
int craft_set_section_data(craft_model *m, uint32_t i, const void *p, size_t n);
/* Append a section (entry copied, then named `name`, stored bytes = p[0,n)). */
int craft_add_section(craft_model *m, const uint8_t entry[TOC_ENTRY], const char *name,
                      const void *p, size_t n);
/* zstd-compress (level 3, content size present) into a malloc'd buffer. */
uint8_t *zstd_compress_alloc(const void *src, size_t n, int content_size_flag, size_t *out_len);

/* ------------------------------------------------------------ utilities */

/* Deterministic xorshift64* PRNG. */
typedef struct prng {
    uint64_t s;
} prng;
uint64_t prng_next(prng *r);
void prng_fill(prng *r, void *p, size_t n);

/* Temp directory under $TMPDIR (or /tmp): malloc'd path; removed recursively. */
char *tmpdir_make(const char *tag);
void tmpdir_remove(char *dir);
/* malloc'd "dir/name". */
char *path_join(const char *dir, const char *name);
/* Number of directory entries other than . and .. */
int dir_count(const char *dir);

/* One section to write. */
typedef struct tsec {
    expert_section_desc d;
    const void *data;
    size_t len;
} tsec;

#define META_MIN "{\"format\":\"expert-v2\",\"name\":\"t\",\"version\":\"1\",\"modules\":[]}"

/* Writes a file with the library writer; returns the first failing status. */
expert_status write_expert(const char *path, const expert_writer_options *opt, const char *meta_json,
                           const tsec *s, size_t n, const expert_private_key *key);

/* 4096-aligned copy of a buffer for expert_open_memory (free with free()). */
void *aligned_copy(const void *p, size_t n);

/* Convenience: open a memory image (copied to aligned storage kept in *mem). */
expert_status open_mem(const uint8_t *p, size_t n, unsigned threads, void **mem, expert_reader **r,
                       expert_error *err);

/* Runs a shell command, stdout to out_path (may be NULL); returns the exit status. */
int run_cmd(const char *out_path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
