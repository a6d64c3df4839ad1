/* sizes.c — byte accounting with the sizes the v2 writer actually produces.
 *
 * Section bodies are encoded as the writer encodes them (see encoded()), the metadata with ZSTD_compress at level 19 as
 * expert_writer_set_metadata does, and the layout follows the writer: a
 * 256-byte header, each non-empty section at the next multiple of the
 * alignment, then metadata, TOC (128 bytes per entry) and index (each at a
 * multiple of 8), and the strings region. The compressor checks its
 * prediction against the written file's length. */
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include <zstd.h>

#include "format.h" /* XP_HEADER_SIZE, XP_TOC_ENTRY_SIZE */
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

/* The writer's encoding (spec §7.2, codec.c): the decoded bytes split into
 * frames of frame_size, each byte-shuffled by element for codec 2, each one
 * zstd frame at the writer's level with the content size recorded, no
 * checksum and no dictionary ID; stored = 4 bytes per frame (the frame
 * table) + the frames. Done here with a reusable context (the writer's
 * encoder allocates a context and a 1 MiB shuffle buffer per call, which
 * dominates for the many small trial encodes of a fit); zstd output depends
 * only on the parameters and the input, and the compressor checks its
 * prediction against the written file. */
struct xq_encoder {
    ZSTD_CCtx *cctx;
    int level;
    uint8_t *shuf, *out;
    size_t shuf_cap, out_cap;
};

xq_encoder *xq_encoder_new(void)
{
    xq_encoder *e = xq_calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    e->cctx = ZSTD_createCCtx();
    if (e->cctx == NULL) {
        xq_free(e);
        return NULL;
    }
    e->level = INT32_MIN;
    return e;
}

void xq_encoder_free(xq_encoder *e)
{
    if (e == NULL)
        return;
    ZSTD_freeCCtx(e->cctx);
    xq_free(e->shuf);
    xq_free(e->out);
    xq_free(e);
}

static int grow(uint8_t **p, size_t *cap, size_t need)
{
    if (*cap >= need)
        return 0;
    uint8_t *q = realloc(*p, need);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = need;
    return 0;
}

static expert_status encoded(const xq_layout *lay, xq_encoder *enc, uint8_t codec, uint8_t dtype,
                             const void *data, size_t length, uint64_t *out, expert_error *err)
{
    if (codec == EXPERT_CODEC_RAW) {
        *out = length;
        return EXPERT_OK;
    }
    xq_encoder *own = NULL;
    if (enc == NULL && (enc = own = xq_encoder_new()) == NULL)
        return xq_fail(err, EXPERT_E_NOMEM, "out of memory");
    expert_status st = EXPERT_OK;
    if (enc->level != lay->level) {
        ZSTD_CCtx_reset(enc->cctx, ZSTD_reset_session_and_parameters);
        if (ZSTD_isError(ZSTD_CCtx_setParameter(enc->cctx, ZSTD_c_compressionLevel, lay->level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(enc->cctx, ZSTD_c_contentSizeFlag, 1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(enc->cctx, ZSTD_c_checksumFlag, 0)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(enc->cctx, ZSTD_c_dictIDFlag, 0)))
            st = xq_fail(err, EXPERT_E_INVALID_ARGUMENT, "zstd level %d rejected", lay->level);
        else
            enc->level = lay->level;
    }
    size_t es = expert_dtype_size(dtype), fs = lay->frame_size;
    int shuffle = codec == EXPERT_CODEC_SHUFFLE_ZSTD && es > 1;
    uint64_t total = 0;
    const uint8_t *p = data;
    for (size_t start = 0; st == EXPERT_OK && start < length; start += fs) {
        size_t len = length - start < fs ? length - start : fs;
        const uint8_t *src = p + start;
        if (grow(&enc->out, &enc->out_cap, ZSTD_compressBound(len)) != 0 ||
            (shuffle && grow(&enc->shuf, &enc->shuf_cap, len) != 0)) {
            st = xq_fail(err, EXPERT_E_NOMEM, "out of memory");
            break;
        }
        if (shuffle) {
            size_t n = len / es;
            for (size_t j = 0; j < es; j++)
                for (size_t i = 0; i < n; i++)
                    enc->shuf[j * n + i] = src[i * es + j];
            src = enc->shuf;
        }
        size_t r = ZSTD_compress2(enc->cctx, enc->out, enc->out_cap, src, len);
        if (ZSTD_isError(r))
            st = xq_fail(err, EXPERT_E_NOMEM, "zstd: %s", ZSTD_getErrorName(r));
        total += 4 + r;
    }
    xq_encoder_free(own);
    *out = total;
    return st;
}

expert_status xq_stored_size(const xq_layout *lay, xq_encoder *enc, uint8_t dtype, const void *data,
                             size_t length, uint64_t *stored, uint8_t *codec, expert_error *err)
{
    if (length == 0) { /* empty sections occupy nothing; the codec does not matter */
        *stored = 0;
        *codec = EXPERT_CODEC_RAW;
        return EXPERT_OK;
    }
    if (lay->codec != XQ_CODEC_AUTO) {
        *codec = lay->codec;
        return encoded(lay, enc, lay->codec, dtype, data, length, stored, err);
    }
    /* auto: the smallest; ties go to the simpler codec (raw < zstd < shuffle+zstd) */
    static const uint8_t order[3] = {EXPERT_CODEC_RAW, EXPERT_CODEC_ZSTD, EXPERT_CODEC_SHUFFLE_ZSTD};
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t n;
        expert_status st = encoded(lay, enc, order[i], dtype, data, length, &n, err);
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
    pos = up(pos, 8) + 8 + 4 * (uint64_t)expert_index_slot_count((uint32_t)nsec);
    return pos + names_total;
}
