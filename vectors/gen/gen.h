/* gen.h — shared declarations of the golden-vector generator (vectors/gen). */
#ifndef GEN_H
#define GEN_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "vgen.h"

#define KEY1_PRIV "keys/rfc8032-test1.pem"
#define KEY1_PUB "keys/rfc8032-test1.pub.pem"
#define KEY2_PRIV "keys/rfc8032-test2.pem"
#define KEY2_PUB "keys/rfc8032-test2.pub.pem"
#define KEY_X25519 "keys/x25519.pub.pem"
#define KEY_GARBAGE "keys/garbage.pub.pem"
#define KEY_TWO_BLOCKS "keys/two-blocks.pub.pem"
#define KEY_DER_TRAILING "keys/der-trailing-byte.pub.pem"

extern const char *g_out;

/* arena: everything allocated here is freed at exit */
void *A(size_t n);
char *AS(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *strrep(const char *s, const char *from, const char *to); /* exactly one occurrence */
void arena_free(void);

void out_write(const char *rel, const void *p, size_t n);
void out_sums(void);

typedef struct vec {
    const char *name, *group, *desc;
    const char *file, *expect, *key, *error, *level, *note, *request;
    int shuffle;
    /* `testee rebuild FILE rebuild`: an accept vector gives the file's
     * length and SHA-256, a reject vector the class at level "rebuild" */
    const char *rebuild, *rebuild_sha256;
    uint64_t rebuild_length;
} vec;
#define MAX_VECS 1024
extern vec g_vecs[MAX_VECS];
extern int g_nvecs;

/* one section for the reference writer */
typedef struct S {
    const char *name;
    size_t name_len; /* 0 = strlen */
    uint16_t type;
    uint8_t codec, dtype, rank;
    uint32_t flags, layer, module;
    uint64_t dims[4];
    const uint8_t *data;
    size_t len;
} S;

/* one file for the reference writer */
typedef struct F {
    const char *meta;
    S *s;
    int n;
    uint32_t align, frame; /* 0: writer defaults */
    int sign;              /* 0, 1 (TEST 1 key) or 2 (TEST 2 key) */
} F;

size_t esize(uint8_t dtype);
const char *dtype_lc(uint8_t dtype);
uint8_t *mkdata(uint8_t dtype, uint64_t numel, uint64_t seed);
S tensor(const char *name, uint8_t dtype, uint8_t codec, uint8_t rank, uint64_t d0, uint64_t d1, uint64_t d2,
         uint64_t d3, uint64_t seed);
S adapter(const char *name, uint16_t type, uint8_t dtype, uint32_t layer, uint32_t module, uint8_t rank, uint64_t d0,
          uint64_t d1, uint64_t seed);
S file_sec(const char *name, const char *text);
S bytes_sec(const char *name, uint16_t type, const void *data, size_t len);
S raw_sec(const char *name, uint16_t type, uint8_t dtype, uint8_t rank, const uint64_t *dims, const void *data,
          size_t len);

void write_keys(void);
void sign_buf(xb *b, int which);                                     /* tag || structure_sha256 */
void sign_raw(xb *b, int which, const uint8_t *msg, size_t n);       /* any message */

int build_try(const F *f, xb *out); /* reference writer; -1 if it refuses */
void build(const F *f, xb *out);    /* reference writer, byte for byte */
void build_norm(const F *f, xb *out); /* writer output with the metadata re-encoded as a raw-block frame */
void normalize(xb *b);
char *meta_text(const uint8_t *p, size_t n, size_t *len);
xb dupb(const xb *b);
uint8_t *E(xb *b, uint32_t i); /* TOC entry i */
void fix(xb *b);               /* recompute file_sha256 then structure_sha256 */
void set_sha_from_raw(xb *b, uint32_t i);
void model_compact_strings(xm_model *m);
void model_rename(xm_model *m, uint32_t i, const void *name, size_t len);

void accept_vec(const char *name, const char *desc, const xb *b, const char *key);
/* A file valid at every level whose package file `section` cannot be rebuilt (spec §10.7). */
void rebuild_reject_vec(const char *name, const char *desc, const xb *b, const char *error,
                        const char *section);
void reject_vec(const char *name, const char *desc, const xb *b, const char *error, const char *level,
                const char *key);
void impl_vec(const char *name, const char *desc, const xb *b, const char *note, const char *key);
void write_vec(const char *name, const char *desc, const char *request_json, const char *key);
void write_manifest(void);
void write_readme(void);

/* vector groups (gen_*.c) */
void gen_accept(const char *spec_dir);
void gen_reject(void);
void gen_impl(void);
void gen_write(void);

/* shared bases (gen_bases.c) */
extern const char *META_MIN;
extern const char *META_B; /* metadata of base_b() */
xb base_b(void);          /* LoRA module + FILEs + TENSOR, raw, normalized */
xb base_b_meta(const char *meta);
xb base_empty(void);      /* no sections */
xb base_z(int codec);     /* hand-built zstd frames: 2-frame F32 section + 1-frame U16 section */
void framed(xb *out, const uint8_t *data, size_t len, uint32_t F, size_t es, int shuffle, int bad_frame,
            const zf_opts *bad_opts, void (*mangle)(xb *frame, int idx));
#endif
