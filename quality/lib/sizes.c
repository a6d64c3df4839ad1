/* sizes.c — byte accounting with the sizes the v2 writer actually produces.
 *
 * Section bodies are encoded with the writer's own encoder (xp_encode from
 * the core library: same codec, frame size and zstd level as
 * expert_writer_add), the metadata with ZSTD_compress at level 19 as
 * expert_writer_set_metadata does, and the layout follows the writer: a
 * 256-byte header, each non-empty section at the next multiple of the
 * alignment, then metadata, TOC (128 bytes per entry) and index (each at a
 * multiple of 8), and the strings region. The compressor checks its
 * prediction against the written file's length. */
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include <zstd.h>

#include "format.h"
#include "qinternal.h"

expert_status xq_fail(expert_error *err, expert_status code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        err->offset = EXPERT_NO_OFFSET;
        err->section = EXPERT_NO_SECTION;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

double xq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The writer's encoder hands the stored bytes to a sink; only their count matters here. */
static expert_status count_sink(void *ctx, const uint8_t *data, size_t length, expert_error *err)
{
    (void)data;
    (void)err;
    *(uint64_t *)ctx += length;
    return EXPERT_OK;
}

static expert_status encoded(const xq_layout *lay, uint8_t codec, uint8_t dtype, const void *data,
                             size_t length, uint64_t *out, expert_error *err)
{
    if (codec == EXPERT_CODEC_RAW) {
        *out = length;
        return EXPERT_OK;
    }
    uint64_t counted = 0, stored = 0;
    expert_status st = xp_encode(codec, expert_dtype_size(dtype), lay->frame_size, lay->level, 1, data,
                                 length, count_sink, &counted, &stored, err);
    *out = stored;
    return st;
}

expert_status xq_stored_size(const xq_layout *lay, uint8_t dtype, const void *data, size_t length,
                             uint64_t *stored, uint8_t *codec, expert_error *err)
{
    if (length == 0) { /* empty sections occupy nothing; the codec does not matter */
        *stored = 0;
        *codec = EXPERT_CODEC_RAW;
        return EXPERT_OK;
    }
    if (lay->codec != XQ_CODEC_AUTO) {
        *codec = lay->codec;
        return encoded(lay, lay->codec, dtype, data, length, stored, err);
    }
    /* auto: the smallest; ties go to the simpler codec (raw < zstd < shuffle+zstd) */
    static const uint8_t order[3] = {EXPERT_CODEC_RAW, EXPERT_CODEC_ZSTD, EXPERT_CODEC_SHUFFLE_ZSTD};
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t n;
        expert_status st = encoded(lay, order[i], dtype, data, length, &n, err);
        if (st != EXPERT_OK)
            return st;
        if (n < best) {
            best = n;
            *codec = order[i];
        }
    }
    *stored = best;
    return EXPERT_OK;
}

expert_status xq_metadata_size(const char *json, size_t length, uint64_t *out, expert_error *err)
{
    size_t cap = ZSTD_compressBound(length);
    void *buf = xq_malloc(cap);
    if (buf == NULL)
        return xq_fail(err, EXPERT_E_NOMEM, "out of memory");
    size_t n = ZSTD_compress(buf, cap, json, length, 19); /* as expert_writer_set_metadata */
    xq_free(buf);
    if (ZSTD_isError(n))
        return xq_fail(err, EXPERT_E_NOMEM, "metadata compression failed");
    *out = n;
    return EXPERT_OK;
}

static uint64_t up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

uint64_t xq_section_span(const xq_layout *lay, uint64_t pos, uint64_t stored)
{
    return stored == 0 ? 0 : up(pos, lay->alignment) - pos + stored;
}

uint64_t xq_file_size(const xq_layout *lay, const uint64_t *stored, size_t nsec,
                      uint64_t names_total, uint64_t metadata_size)
{
    uint64_t pos = XP_HEADER_SIZE;
    for (size_t i = 0; i < nsec; i++)
        pos += xq_section_span(lay, pos, stored[i]);
    pos = up(pos, 8) + metadata_size;
    pos = up(pos, 8) + (uint64_t)nsec * XP_TOC_ENTRY_SIZE;
    pos = up(pos, 8) + 8 + 4 * (uint64_t)xp_index_slot_count((uint32_t)nsec);
    return pos + names_total;
}
