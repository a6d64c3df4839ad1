/* codec.c — section codecs (spec §7): raw, zstd, shuffle+zstd.
 *
 * Compressed sections are a frame table (n × u32 stored frame sizes) followed
 * by n independent zstd frames of frame_size decoded bytes each (the last one
 * shorter). Independence is what lets decode run one frame per thread and
 * lets a streaming reader start before the whole section has arrived. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader: window size check */
#include <zstd.h>

#include "alloc.h"
#include "errors_internal.h"
#include "format.h"

void xp_shuffle(const uint8_t *src, uint8_t *dst, size_t length, size_t elem_size)
{
    if (elem_size <= 1) {
        memcpy(dst, src, length);
        return;
    }
    size_t n = length / elem_size;
    for (size_t j = 0; j < elem_size; j++)
        for (size_t i = 0; i < n; i++)
            dst[j * n + i] = src[i * elem_size + j];
}

void xp_unshuffle(const uint8_t *src, uint8_t *dst, size_t length, size_t elem_size)
{
    if (elem_size <= 1) {
        memcpy(dst, src, length);
        return;
    }
    /* Element-major order: each element's bytes are written together, so the
     * stores are sequential (measured ~8x faster than byte-plane order on F32;
     * the result is identical). Fixed-size cases let the compiler unroll. */
    size_t n = length / elem_size;
    if (elem_size == 2) {
        const uint8_t *p0 = src, *p1 = src + n;
        for (size_t i = 0; i < n; i++) {
            dst[2 * i] = p0[i];
            dst[2 * i + 1] = p1[i];
        }
    } else if (elem_size == 4) {
        const uint8_t *p0 = src, *p1 = src + n, *p2 = src + 2 * n, *p3 = src + 3 * n;
        for (size_t i = 0; i < n; i++) {
            dst[4 * i] = p0[i];
            dst[4 * i + 1] = p1[i];
            dst[4 * i + 2] = p2[i];
            dst[4 * i + 3] = p3[i];
        }
    } else {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < elem_size; j++)
                dst[i * elem_size + j] = src[j * n + i];
    }
}

static uint64_t frame_count(uint64_t decoded_length, uint32_t frame_size)
{
    return decoded_length / frame_size + (decoded_length % frame_size != 0);
}

/* ------------------------------------------------------------------ encode */

typedef struct encode_job {
    const expert_allocator *alloc;
    const uint8_t *data;
    size_t length;
    size_t elem_size;
    uint32_t frame_size;
    int level;
    int shuffle;
    uint64_t nframes;
    uint8_t **frames;     /* per-frame compressed output */
    size_t *frame_sizes;
} encode_job;

typedef struct encode_worker {
    encode_job *job;
    unsigned first, stride;
    expert_status status;
} encode_worker;

static expert_status encode_frame(const encode_job *job, ZSTD_CCtx *cctx, uint8_t *scratch,
                                  uint64_t f)
{
    size_t start = (size_t)(f * job->frame_size);
    size_t len = job->length - start < job->frame_size ? job->length - start : job->frame_size;
    const uint8_t *src = job->data + start;
    if (job->shuffle) {
        xp_shuffle(src, scratch, len, job->elem_size);
        src = scratch;
    }
    size_t cap = ZSTD_compressBound(len);
    uint8_t *out = xa_malloc(job->alloc, cap);
    if (out == NULL)
        return EXPERT_E_NOMEM;
    size_t r = ZSTD_compress2(cctx, out, cap, src, len);
    if (ZSTD_isError(r) || r > UINT32_MAX) {
        xa_free(job->alloc, out);
        return EXPERT_E_NOMEM;
    }
    job->frames[f] = out;
    job->frame_sizes[f] = r;
    return EXPERT_OK;
}

static void *encode_worker_main(void *arg)
{
    encode_worker *w = arg;
    const encode_job *job = w->job;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    uint8_t *scratch = job->shuffle ? xa_malloc(job->alloc, job->frame_size) : NULL;
    w->status = EXPERT_OK;
    if (cctx == NULL || (job->shuffle && scratch == NULL) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, job->level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_dictIDFlag, 0))) {
        w->status = EXPERT_E_NOMEM;
    }
    for (uint64_t f = w->first; w->status == EXPERT_OK && f < job->nframes; f += w->stride)
        w->status = encode_frame(job, cctx, scratch, f);
    xa_free(job->alloc, scratch);
    ZSTD_freeCCtx(cctx);
    return NULL;
}

expert_status xp_encode(const expert_allocator *alloc, uint8_t codec, size_t elem_size, uint32_t frame_size, int level,
                        unsigned threads, const uint8_t *data, size_t length, xp_sink_fn sink,
                        void *sink_ctx, uint64_t *stored_length, expert_error *err)
{
    *stored_length = 0;
    if (codec == EXPERT_CODEC_RAW) {
        *stored_length = length;
        return length ? sink(sink_ctx, data, length, err) : EXPERT_OK;
    }
    encode_job job = {0};
    job.alloc = alloc;
    job.data = data;
    job.length = length;
    job.elem_size = elem_size;
    job.frame_size = frame_size;
    job.level = level;
    job.shuffle = codec == EXPERT_CODEC_SHUFFLE_ZSTD && elem_size > 1;
    job.nframes = frame_count(length, frame_size);
    if (job.nframes > SIZE_MAX / sizeof(uint8_t *))
        return xp_set_error(err, EXPERT_E_LIMIT_EXCEEDED, EXPERT_NO_OFFSET, EXPERT_NO_SECTION,
                            "too many frames");
    job.frames = xa_calloc(alloc, (size_t)job.nframes, sizeof *job.frames);
    job.frame_sizes = xa_calloc(alloc, (size_t)job.nframes, sizeof *job.frame_sizes);
    expert_status s = EXPERT_OK;
    if ((job.nframes && (job.frames == NULL || job.frame_sizes == NULL))) {
        s = EXPERT_E_NOMEM;
        goto done;
    }

    unsigned nthreads = threads > 1 ? threads : 1;
    if (nthreads > job.nframes)
        nthreads = job.nframes ? (unsigned)job.nframes : 1;
    encode_worker workers[64];
    pthread_t tids[64];
    int running[64] = {0};
    if (nthreads > 64)
        nthreads = 64;
    for (unsigned t = 0; t < nthreads; t++) {
        workers[t] = (encode_worker){&job, t, nthreads, EXPERT_OK};
        /* Thread 0 is the caller; a failed pthread_create degrades to doing
         * that worker's frames on the caller thread, never to a failed write. */
        if (t > 0)
            running[t] = pthread_create(&tids[t], NULL, encode_worker_main, &workers[t]) == 0;
    }
    encode_worker_main(&workers[0]);
    for (unsigned t = 1; t < nthreads; t++) {
        if (running[t])
            pthread_join(tids[t], NULL);
        else
            encode_worker_main(&workers[t]);
        if (workers[t].status != EXPERT_OK)
            s = workers[t].status;
    }
    if (workers[0].status != EXPERT_OK)
        s = workers[0].status;
    if (s != EXPERT_OK)
        goto done;

    /* Frame table first, then each frame, freed as soon as it is written:
     * no second copy of the compressed section is ever built. */
    uint64_t total = 4 * job.nframes;
    for (uint64_t f = 0; f < job.nframes; f++)
        total += job.frame_sizes[f];
    uint8_t *table = xa_malloc(alloc, (size_t)(4 * job.nframes));
    if (table == NULL) {
        s = EXPERT_E_NOMEM;
        goto done;
    }
    for (uint64_t f = 0; f < job.nframes; f++)
        xp_put32(table + 4 * f, (uint32_t)job.frame_sizes[f]);
    expert_status ws = job.nframes ? sink(sink_ctx, table, (size_t)(4 * job.nframes), err) : EXPERT_OK;
    xa_free(alloc, table);
    for (uint64_t f = 0; ws == EXPERT_OK && f < job.nframes; f++) {
        ws = sink(sink_ctx, job.frames[f], job.frame_sizes[f], err);
        xa_free(alloc, job.frames[f]);
        job.frames[f] = NULL;
    }
    if (ws != EXPERT_OK) {
        s = ws;
        goto done_sink;
    }
    *stored_length = total;
done:
done_sink:
    if (job.frames != NULL)
        for (uint64_t f = 0; f < job.nframes; f++)
            xa_free(alloc, job.frames[f]);
    xa_free(alloc, job.frames);
    xa_free(alloc, job.frame_sizes);
    if (s == EXPERT_E_IO)
        return s; /* err already filled by the sink */
    if (s == EXPERT_E_NOMEM)
        return xp_set_error(err, s, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "compression failed (out of memory)");
    if (s != EXPERT_OK)
        return xp_set_error(err, s, EXPERT_NO_OFFSET, EXPERT_NO_SECTION, "compression failed");
    return EXPERT_OK;
}

/* ------------------------------------------------------------------ decode */

expert_status xp_frames_parse(const expert_allocator *alloc, const uint8_t *stored, uint64_t stored_length,
                              uint64_t decoded_length, uint32_t frame_size, uint64_t **starts_out,
                              uint64_t *nframes_out, uint64_t file_offset, uint32_t section,
                              expert_error *err)
{
    uint64_t nframes = frame_count(decoded_length, frame_size);
    uint64_t table_bytes;
    if (xp_mul_overflows(nframes, 4, &table_bytes) || table_bytes > stored_length)
        return xp_set_error(err, EXPERT_E_SIZE_MISMATCH, file_offset, section,
                            "frame table (%llu frames) does not fit in %llu stored bytes",
                            (unsigned long long)nframes, (unsigned long long)stored_length);
    uint64_t *starts = xa_malloc(alloc, (size_t)(nframes + 1) * sizeof *starts);
    if (starts == NULL)
        return xp_set_error(err, EXPERT_E_NOMEM, file_offset, section, "out of memory");
    uint64_t pos = table_bytes;
    for (uint64_t f = 0; f < nframes && pos <= stored_length; f++) {
        starts[f] = pos;
        pos += xp_le32(stored + 4 * f); /* each step < 2^32: cannot wrap */
    }
    starts[nframes] = pos;
    if (pos != stored_length) {
        xa_free(alloc, starts);
        return xp_set_error(err, EXPERT_E_SIZE_MISMATCH, file_offset, section,
                            "frame sizes do not add up to the stored length %llu",
                            (unsigned long long)stored_length);
    }
    *starts_out = starts;
    *nframes_out = nframes;
    return EXPERT_OK;
}

/* The frame rules of spec §7.3, checked from the frame header before any
 * decoding: one real zstd frame (no skippable/legacy), content size present
 * and equal to what the TOC implies, no dictionary, window <= 2^27, and the
 * frame ends exactly at the end of its slot. Returns 0 when acceptable. */
int xp_zstd_frame_check(const uint8_t *src, size_t src_len, uint64_t expect, char *why,
                        size_t why_len)
{
    static const uint8_t zstd_magic[4] = {0x28, 0xB5, 0x2F, 0xFD};
    if (src_len < 4 || memcmp(src, zstd_magic, 4) != 0) {
        snprintf(why, why_len, "not a zstd frame (empty, skippable or legacy)");
        return -1;
    }
    ZSTD_frameHeader fh;
    size_t hr = ZSTD_getFrameHeader(&fh, src, src_len);
    if (hr != 0) {
        snprintf(why, why_len, "unreadable frame header");
        return -1;
    }
    if (fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN || fh.frameContentSize != expect) {
        snprintf(why, why_len, "content size %s (expected %llu)",
                 fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN ? "absent" : "wrong",
                 (unsigned long long)expect);
        return -1;
    }
    if (fh.dictID != 0) {
        snprintf(why, why_len, "uses a dictionary");
        return -1;
    }
    if (fh.windowSize > (1ull << XP_ZSTD_WINDOW_LOG_MAX)) {
        snprintf(why, why_len, "window larger than 2^27");
        return -1;
    }
    size_t csize = ZSTD_findFrameCompressedSize(src, src_len);
    if (ZSTD_isError(csize) || csize != src_len) {
        snprintf(why, why_len, "not exactly one zstd frame");
        return -1;
    }
    return 0;
}

expert_status xp_frame_decode(const xp_frame_ctx *fc, ZSTD_DCtx *dctx, uint8_t *scratch,
                              uint64_t f, uint8_t *out, expert_error *err)
{
    const uint8_t *src = fc->stored + fc->starts[f];
    size_t src_len = (size_t)(fc->starts[f + 1] - fc->starts[f]);
    uint64_t start = f * fc->frame_size;
    size_t expect = (size_t)(fc->decoded_length - start < fc->frame_size
                                 ? fc->decoded_length - start
                                 : fc->frame_size);
    uint64_t off = fc->file_offset + fc->starts[f];
    /* Each frame must be exactly one zstd frame, declare its content size and
     * use no dictionary; decoding into a buffer of the expected size then
     * bounds memory whatever the frame claims (no decompression bombs). */
    char why[96];
    if (xp_zstd_frame_check(src, src_len, expect, why, sizeof why) != 0)
        return xp_set_error(err, EXPERT_E_DECODE_FAILED, off, fc->section, "frame %llu: %s",
                            (unsigned long long)f, why);
    uint8_t *dst = fc->shuffle ? scratch : out;
    size_t r = ZSTD_decompressDCtx(dctx, dst, expect, src, src_len);
    if (ZSTD_isError(r) || r != expect)
        return xp_set_error(err, EXPERT_E_DECODE_FAILED, off, fc->section, "frame %llu: %s",
                            (unsigned long long)f,
                            ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short output");
    if (fc->shuffle)
        xp_unshuffle(scratch, out, expect, fc->elem_size);
    return EXPERT_OK;
}

typedef struct decode_worker {
    const xp_frame_ctx *fc;
    xp_dcache *cache;      /* reused context for the caller's thread, or NULL */
    uint8_t *dst;
    uint64_t first, stride;
    expert_status status;
    uint64_t bad_frame;
    expert_error err;
} decode_worker;

/* Creating a zstd context and a scratch buffer costs ~20-30 us, more than
 * decoding a small tensor: readers keep a few of these and reuse them. */
int xp_dcache_fit(xp_dcache *c, size_t scratch_size)
{
    if (c->dctx == NULL && (c->dctx = ZSTD_createDCtx()) == NULL)
        return -1;
    if (c->cap < scratch_size) {
        xa_free(c->alloc, c->scratch);
        c->cap = 0;
        if ((c->scratch = xa_malloc(c->alloc, scratch_size)) == NULL)
            return -1;
        c->cap = scratch_size;
    }
    return 0;
}

uint8_t *xp_dcache_stored(xp_dcache *c, size_t size)
{
    if (c->stored_cap < size) {
        xa_free(c->alloc, c->stored);
        c->stored_cap = 0;
        if ((c->stored = xa_malloc(c->alloc, size)) == NULL)
            return NULL;
        c->stored_cap = size;
    }
    return c->stored;
}

void xp_dcache_release(xp_dcache *c)
{
    ZSTD_freeDCtx(c->dctx);
    xa_free(c->alloc, c->scratch);
    xa_free(c->alloc, c->stored);
    c->dctx = NULL;
    c->scratch = NULL;
    c->stored = NULL;
    c->cap = 0;
    c->stored_cap = 0;
}

static void *decode_worker_main(void *arg)
{
    decode_worker *w = arg;
    const xp_frame_ctx *fc = w->fc;
    xp_dcache own = {.alloc = fc->alloc};
    xp_dcache *c = w->cache != NULL ? w->cache : &own;
    int ok = xp_dcache_fit(c, fc->shuffle ? fc->frame_size : 0) == 0;
    ZSTD_DCtx *dctx = ok ? c->dctx : NULL;
    uint8_t *scratch = ok ? c->scratch : NULL;
    w->status = EXPERT_OK;
    if (!ok)
        w->status = xp_set_error(&w->err, EXPERT_E_NOMEM, fc->file_offset, fc->section,
                                 "out of memory");
    for (uint64_t f = w->first; w->status == EXPERT_OK && f < fc->nframes; f += w->stride) {
        w->status = xp_frame_decode(fc, dctx, scratch, f, w->dst + f * fc->frame_size, &w->err);
        w->bad_frame = f;
    }
    xp_dcache_release(&own);
    return NULL;
}

expert_status xp_decode(const expert_allocator *alloc, uint8_t codec, size_t elem_size, uint32_t frame_size,
                        const uint8_t *stored, uint64_t stored_length, uint8_t *dst,
                        uint64_t decoded_length, unsigned threads, xp_dcache *cache,
                        uint64_t file_offset, uint32_t section, expert_error *err)
{
    if (codec == EXPERT_CODEC_RAW) {
        if (stored_length != decoded_length)
            return xp_set_error(err, EXPERT_E_SIZE_MISMATCH, file_offset, section,
                                "raw section stored %llu != decoded %llu bytes",
                                (unsigned long long)stored_length,
                                (unsigned long long)decoded_length);
        if (decoded_length)
            memcpy(dst, stored, (size_t)decoded_length);
        return EXPERT_OK;
    }
    xp_frame_ctx fc = {stored, NULL, 0, frame_size, decoded_length, elem_size,
                       codec == EXPERT_CODEC_SHUFFLE_ZSTD && elem_size > 1, file_offset, section,
                       alloc};
    XP_TRY(xp_frames_parse(alloc, stored, stored_length, decoded_length, frame_size, &fc.starts,
                           &fc.nframes, file_offset, section, err));
    unsigned nthreads = threads > 1 ? threads : 1;
    if (nthreads > fc.nframes)
        nthreads = fc.nframes ? (unsigned)fc.nframes : 1;
    if (nthreads > 64)
        nthreads = 64;
    decode_worker workers[64];
    pthread_t tids[64];
    int running[64] = {0};
    for (unsigned t = 0; t < nthreads; t++) {
        workers[t] = (decode_worker){.fc = &fc, .cache = t == 0 ? cache : NULL, .dst = dst,
                                     .first = t, .stride = nthreads};
        if (t > 0)
            running[t] = pthread_create(&tids[t], NULL, decode_worker_main, &workers[t]) == 0;
    }
    decode_worker_main(&workers[0]);
    for (unsigned t = 1; t < nthreads; t++) {
        if (running[t])
            pthread_join(tids[t], NULL);
        else
            decode_worker_main(&workers[t]);
    }
    xa_free(alloc, fc.starts);
    /* Report the lowest failing frame so the error does not depend on timing. */
    decode_worker *bad = NULL;
    for (unsigned t = 0; t < nthreads; t++)
        if (workers[t].status != EXPERT_OK && (bad == NULL || workers[t].bad_frame < bad->bad_frame))
            bad = &workers[t];
    if (bad != NULL) {
        if (err != NULL)
            *err = bad->err;
        return bad->status;
    }
    return EXPERT_OK;
}
