/*
 * craft.h — shared helpers for the cmocka tests: the independent layout
 * model (conformance/model/xpmodel.h: byte layout, digests, index, parsed
 * model, zstd frames, PRNG), which the tests use to patch files byte for
 * byte, plus small test utilities (temp dirs, the library writer and memory
 * reader wrapped, shell commands).
 */
#ifndef EXPERT_TEST_CRAFT_H
#define EXPERT_TEST_CRAFT_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"
#include "xpmodel.h"

/* Whether a path exists. */
int file_exists(const char *path);

/* TOC entry i of a file image (no bounds checks beyond the header's toc_offset). */
uint8_t *toc_entry(uint8_t *file, uint32_t i);

/* ------------------------------------------------------------ utilities */

/* Temp directory under $TMPDIR (or /tmp): malloc'd path; removed recursively. */
char *tmpdir_make(const char *tag);
void tmpdir_remove(char *dir);
/* malloc'd "dir/name". */
char *path_join(const char *dir, const char *name);
/* A whole file into malloc'd memory / a buffer into a new file: 0 or -1. */
int read_file_bytes(const char *path, uint8_t **data, size_t *size);
int write_file_bytes(const char *path, const void *data, size_t size);
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
/* The same into memory (expert_writer_open_memory): the same bytes. */
expert_status write_expert_image(const expert_writer_options *opt, const char *meta_json,
                                 const tsec *s, size_t n, const expert_private_key *key,
                                 expert_image *out);

/* 4096-aligned copy of a buffer for expert_open_memory (free with free()). */
void *aligned_copy(const void *p, size_t n);

/* Convenience: open a memory image (copied to aligned storage kept in *mem). */
expert_status open_mem(const uint8_t *p, size_t n, unsigned threads, void **mem, expert_reader **r,
                       expert_error *err);

/* Runs a shell command, stdout to out_path (may be NULL); returns the exit status. */
int run_cmd(const char *out_path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
