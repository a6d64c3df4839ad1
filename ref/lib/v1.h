/* v1.h — internal glue between v1.c (v1 tar.gz compatibility) and the
 * reader and writer: an in-memory writer sink, a reader that owns its image
 * and carries the v1 provenance, and the open-time dispatch on gzip magic. */
#ifndef EXPERT_V1_INTERNAL_H
#define EXPERT_V1_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "expert_v1.h"

#include <jansson.h>

typedef struct xp_v1_entry {
    char *name;
    uint64_t size;
    uint32_t mode;
    int64_t mtime;
} xp_v1_entry;

/* What a v1 reader remembers about its source archive (immutable after open). */
typedef struct xp_v1_info {
    expert_v1_info pub;
    xp_v1_entry *entries; /* archive order */
} xp_v1_info;

void xp_v1_info_free(xp_v1_info *v);

/* 1 if the bytes start with the gzip magic 1f 8b. */
static inline int xp_is_gzip(const void *p, size_t n)
{
    const unsigned char *b = p;
    return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

/* v1.c: open a v1 package from an open file descriptor (read to EOF from
 * offset 0; the caller keeps and closes fd) or from memory. */
expert_status xp_v1_open_fd(int fd, const char *path, const expert_open_options *opt,
                            const expert_v1_options *v1opt, expert_reader **out,
                            expert_error *err);
expert_status xp_v1_open_memory(const void *data, size_t size, const expert_open_options *opt,
                                const expert_v1_options *v1opt, expert_reader **out,
                                expert_error *err);

/* reader.c: opens the image at `image` (inside the allocation `alloc`, which
 * the reader takes ownership of: freed with xp_free at close, and on
 * failure), attaching v1 provenance (owned too, may be NULL). */
expert_status xp_reader_open_owned(uint8_t *alloc, const uint8_t *image, size_t size,
                                   const expert_open_options *opt, xp_v1_info *v1,
                                   expert_reader **out, expert_error *err);
/* reader.c: the v1 provenance of a reader, NULL for a v2 file. */
const xp_v1_info *xp_reader_v1(const expert_reader *r);

/* writer.c: a writer whose file is built in memory (no temporary file).
 * size_hint preallocates. finish hands the image to the caller: `image`
 * (aligned to the file alignment) inside the allocation `alloc` (release
 * with xp_free); the writer is freed either way. */
expert_status xp_writer_open_memory(const expert_writer_options *opt, size_t size_hint,
                                    expert_writer **out, expert_error *err);
expert_status xp_writer_finish_memory(expert_writer *w, const expert_private_key *key,
                                      uint8_t **alloc, const uint8_t **image, size_t *size,
                                      expert_error *err);

/* ------------------------------------------- shared by v1_read/sign/write */

#define ST_NAME "adapter_model.safetensors"
#define MANIFEST_NAME "manifest.json"
#define ADAPTER_CONFIG_NAME "adapter_config.json"
#define SIGNATURE_NAME "signature.sig"

/* Lower-case hex of n bytes into out (2n+1 chars); exactly 2n hex digits
 * back to n bytes (1 on success). */
void xp_hex_encode(const uint8_t *p, size_t n, char *out);
int xp_hex_decode(const char *s, size_t len, uint8_t *out, size_t n);
/* An archive entry name checked and normalised (NULL with *why if unsafe). */
char *xp_v1_normalize_name(const char *raw, int is_dir, const char **why);
/* A string member of a JSON object, or NULL. */
const char *xp_jstr(const json_t *o, const char *key);

/* Every package file of a reader (FILE sections and rebuilt safetensors),
 * in TOC order. */
typedef struct xp_v1_pfile {
    char *name;
    uint8_t *data;
    size_t size;
    uint32_t mode;
    int64_t mtime;
    int has_meta;
    unsigned order;
} xp_v1_pfile;

typedef struct xp_v1_pfiles {
    xp_v1_pfile *f;
    uint32_t count;
} xp_v1_pfiles;

void xp_v1_pfiles_free(xp_v1_pfiles *p);
/* Every package file of a reader, rebuilt; require_all: a section that
 * belongs to no file is an error (a v1 package could not hold it). */
expert_status xp_v1_collect_files(expert_reader *r, int require_all, xp_v1_pfiles *out,
                                  expert_error *err);

#endif
