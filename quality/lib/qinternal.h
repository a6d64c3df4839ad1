/* qinternal.h — shared helpers of the quality library (not installed). */
#ifndef XQ_INTERNAL_H
#define XQ_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "expert_quality.h"

static inline void *xq_malloc(size_t n)
{
    return malloc(n ? n : 1);
}
static inline void *xq_calloc(size_t c, size_t n)
{
    return calloc(c ? c : 1, n ? n : 1);
}
static inline void xq_free(void *p)
{
    free(p);
}

#define XQ_TRY(expr)                                                                              \
    do {                                                                                          \
        expert_status xq_try_status_ = (expr);                                                    \
        if (xq_try_status_ != EXPERT_OK)                                                          \
            return xq_try_status_;                                                                \
    } while (0)

expert_status xq_fail(expert_error *err, expert_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic seconds. */
double xq_now(void);

/* ---- sizes.c: what the v2 writer produces ---- */

typedef struct xq_layout {
    uint32_t alignment;  /* 64, 256, 4096 */
    uint32_t frame_size; /* the writer's default, 1 MiB */
    int level;           /* zstd level for sections */
    uint8_t codec;       /* XQ_CODEC_AUTO or a fixed codec */
} xq_layout;

/* A reusable zstd context for trial encodes (one per thread). */
typedef struct xq_encoder xq_encoder;
xq_encoder *xq_encoder_new(void);
void xq_encoder_free(xq_encoder *e);

/* Stored length of one section as expert_writer_add would write it with the
 * layout's codec policy; *codec gets the chosen codec. enc may be NULL (a
 * temporary context is used). */
expert_status xq_stored_size(const xq_layout *lay, xq_encoder *enc, uint8_t dtype, const void *data,
                             size_t length, uint64_t *stored, uint8_t *codec, expert_error *err);
/* Length of the metadata region the writer produces for this JSON. */
expert_status xq_metadata_size(const char *json, size_t length, uint64_t *out, expert_error *err);
/* File length for sections with these stored lengths, in this order. */
uint64_t xq_file_size(const xq_layout *lay, const uint64_t *stored, size_t nsec,
                      uint64_t names_total, uint64_t metadata_size);
/* Bytes a section adds when appended after `pos` (alignment + data). */
uint64_t xq_section_span(const xq_layout *lay, uint64_t pos, uint64_t stored);

#endif
