/* test_v1_common.h — helpers shared by the v1 compatibility tests: hand-made
 * tar (ustar/GNU headers written byte by byte, so hostile entries need no tar
 * library), gzip through zlib, synthetic PEFT packages (safetensors with real
 * PEFT key names, a manifest with the old packer's quirks,
 * tokenizer/README/grammar/LICENSE); temp dirs, files and buffers come from
 * craft.h. */
#ifndef TEST_V1_COMMON_H
#define TEST_V1_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "craft.h" /* temp dirs, files, run_cmd; xpmodel.h: buffers */
#include "expert_v1.h"

/* ---------------------------------------------------------------- tar */
/* One entry: typeflag '0' file, '1' hard link, '2' symlink, '3' char dev,
 * '4' block dev, '5' dir, '6' fifo, 'S' GNU sparse, 'x' pax header...
 * size is the header's size field (data may be shorter to fake a lie). */
void tar_entry(xb *t, const char *name, char type, const void *data, size_t data_len,
               uint64_t size_field, const char *link);
void tar_file(xb *t, const char *name, const void *data, size_t n);
void tar_pax_path(xb *t, const char *path); /* 'x' header with a path record */
void tar_end(xb *t);                        /* two zero blocks */

/* gzip with zlib (level 6); caller frees. */
uint8_t *gz(const void *p, size_t n, size_t *out_n);

/* ----------------------------------------------------------- packages */
typedef enum { PK_DORA, PK_LORA, PK_IA3 } pkg_kind;

typedef struct pkg_file {
    char name[96];
    uint8_t *data;
    size_t size;
} pkg_file;

typedef struct pkg {
    pkg_file f[24];
    int n;            /* in the old packer's order (manifest first) */
    int tensors;      /* tensors in the safetensors file */
    int modules;
} pkg;

/* Small deterministic package: `layers` layers, q/k/v/o/up/down modules
 * (hidden 64, intermediate 192), rank r, F32. */
void pkg_make(pkg *p, pkg_kind kind, unsigned layers, unsigned r, uint64_t seed);
void pkg_free(pkg *p);
pkg_file *pkg_get(pkg *p, const char *name);
void pkg_set(pkg *p, const char *name, const void *data, size_t n); /* add or replace */
/* tar.gz: by hand (independent of libarchive) or through expert_v1_write_memory. */
uint8_t *pkg_targz(const pkg *p, size_t *n);
uint8_t *pkg_targz_lib(const pkg *p, size_t *n);

/* safetensors builder: tensor specs in file order. */
typedef struct st_spec {
    const char *name;
    const char *dtype; /* "F32" */
    unsigned rank;
    uint64_t dims[4];
} st_spec;
uint8_t *st_build(const st_spec *specs, int n, uint64_t seed, size_t *out_n);

/* Emulates the old `expert-cli sign` on p (adds integrity + signature.sig). */
void pkg_sign_v1(pkg *p, const uint8_t seed[32], char pubkey_text[73]);

/* --------------------------------------------------------- misc */
/* A whole file as a malloc'd buffer (NULL if unreadable). */
uint8_t *read_all(const char *path, size_t *n);
uint64_t rng64(uint64_t *s);

/* Open options that accept v1 tar.gz as well as v2 (EXPERT_OPEN_V1). */

/* Opens memory, asserting the status; returns the reader or NULL. */
expert_status open_v1_mem(const uint8_t *p, size_t n, const expert_v1_options *o,
                          expert_reader **r, expert_error *e);

/* Transcodes every section of r into a real v2 file (zstd / shuffle+zstd),
 * keeping the metadata: a miniature `convert`. */
expert_status transcode_v2(expert_reader *r, const char *path, expert_error *e);

/* Checks against a package (0 = ok, else -1 with a message): every tensor of
 * its safetensors equals its section; every package file rebuilds byte-exact
 * and no other file exists. */
int check_pkg_tensors(expert_reader *r, pkg *p, char *msg, size_t cap);
int check_pkg_files(expert_reader *r, pkg *p, char *msg, size_t cap);
/* Every file of p equals dir/<name> on disk. */
int check_pkg_dir(const char *dir, pkg *p, char *msg, size_t cap);

#endif
