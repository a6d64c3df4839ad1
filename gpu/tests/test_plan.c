/* test_plan.c — the CPU half of the GPU path: the plan (what goes to the
 * device, in which order, at which offsets, how many bytes) and the
 * streaming scheduler driven by a fake copy engine.
 *
 * The fake engine defers every queued copy until the group's event is waited
 * for (or the engine drained), the way a DMA engine may run late: if the
 * scheduler refilled a staging slot before waiting for its last copy, the
 * deferred copy would read the new bytes and the device image would not match
 * the file. It also fails its k-th call on request (every k in turn), and
 * checks that no buffer is freed while a queued copy still reads it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "craft.h"
#include "expert.h"
#include "fixture.h"
#include "gpu_internal.h"

/* ------------------------------------------------------- fake engine */

enum { OP_UPLOAD, OP_CONVERT, OP_MARK };

typedef struct fake_op {
    int kind;
    unsigned slot;
    void *dst;
    const void *src;
    size_t bytes;
    uint32_t dst_dtype, src_dtype, group;
    uint64_t count;
    int done;
} fake_op;

#define MAX_OPS 8192
#define MAX_BUFS 1024

typedef struct fake {
    pthread_mutex_t mu;
    fake_op ops[MAX_OPS];
    int nops;
    struct {
        void *p;
        size_t n;
        int host;
    } bufs[MAX_BUFS];
    int nbufs;
    int calls, fail_at; /* fail_at = k: the k-th fallible call fails (0: never) */
    int violations;     /* a buffer freed under a pending copy, an op on a bad slot... */
    unsigned slots;
    int begun;
    const void *forbidden_src; /* bytes that must never be uploaded */
    size_t forbidden_len;
} fake;

static expert_status fake_fail(fake *f, expert_error *err)
{
    if (f->fail_at != 0 && ++f->calls == f->fail_at) {
        if (err != NULL) {
            err->code = EXPERT_E_IO;
            snprintf(err->message, sizeof err->message, "injected device failure");
        }
        return EXPERT_E_IO;
    }
    return EXPERT_OK;
}

static void run_op(fake *f, fake_op *op)
{
    if (op->done)
        return;
    op->done = 1;
    if (op->kind == OP_UPLOAD) {
        memcpy(op->dst, op->src, op->bytes);
    } else if (op->kind == OP_CONVERT) {
        float *tmp = malloc(op->count * sizeof *tmp + 1);
        assert_non_null(tmp);
        if (expert_floats_decode(op->src_dtype, op->src, op->count, tmp, NULL) != EXPERT_OK ||
            expert_floats_encode(op->dst_dtype, tmp, op->count, op->dst, NULL) != EXPERT_OK)
            f->violations++;
        free(tmp);
    }
}

/* Runs every op of `slot`'s stream up to and including the mark of `group`. */
static void run_stream_until(fake *f, uint32_t group)
{
    int mark = -1;
    for (int i = 0; i < f->nops; i++)
        if (f->ops[i].kind == OP_MARK && f->ops[i].group == group)
            mark = i;
    if (mark < 0) {
        f->violations++; /* waiting for an event that was never recorded */
        return;
    }
    for (int i = 0; i <= mark; i++)
        if (f->ops[i].slot == f->ops[mark].slot)
            run_op(f, &f->ops[i]);
}

static expert_status fk_begin(void *ctx, unsigned slots, uint32_t groups, expert_error *err)
{
    fake *f = ctx;
    (void)groups;
    pthread_mutex_lock(&f->mu);
    expert_status st = fake_fail(f, err);
    if (st == EXPERT_OK) {
        f->slots = slots;
        f->begun = 1;
    }
    pthread_mutex_unlock(&f->mu);
    return st;
}

static expert_status fk_alloc(fake *f, size_t n, void **p, int host, expert_error *err)
{
    pthread_mutex_lock(&f->mu);
    expert_status st = fake_fail(f, err);
    if (st == EXPERT_OK) {
        *p = malloc(n ? n : 1);
        assert_non_null(*p);
        memset(*p, 0xEE, n); /* poison: bytes never written by an upload show up */
        assert_true(f->nbufs < MAX_BUFS);
        f->bufs[f->nbufs].p = *p;
        f->bufs[f->nbufs].n = n;
        f->bufs[f->nbufs].host = host;
        f->nbufs++;
    }
    pthread_mutex_unlock(&f->mu);
    return st;
}

static void fk_free(fake *f, void *p)
{
    pthread_mutex_lock(&f->mu);
    int found = -1;
    for (int i = 0; i < f->nbufs; i++)
        if (f->bufs[i].p == p)
            found = i;
    if (found < 0) {
        f->violations++;
    } else {
        const unsigned char *lo = p, *hi = lo + f->bufs[found].n;
        for (int i = 0; i < f->nops; i++) {
            const fake_op *op = &f->ops[i];
            const unsigned char *s = op->src, *d = op->dst;
            if (!op->done && op->kind != OP_MARK &&
                ((s >= lo && s < hi) || (d >= lo && d < hi)))
                f->violations++; /* freed while a queued copy still uses it */
        }
        f->bufs[found] = f->bufs[--f->nbufs];
        free(p);
    }
    pthread_mutex_unlock(&f->mu);
}

static expert_status fk_host_alloc(void *ctx, size_t n, void **p, expert_error *err)
{
    return fk_alloc(ctx, n, p, 1, err);
}
static expert_status fk_device_alloc(void *ctx, size_t n, void **p, expert_error *err)
{
    return fk_alloc(ctx, n, p, 0, err);
}
static void fk_host_free(void *ctx, void *p) { fk_free(ctx, p); }
static void fk_device_free(void *ctx, void *p) { fk_free(ctx, p); }

static expert_status fk_queue(fake *f, fake_op op, expert_error *err)
{
    pthread_mutex_lock(&f->mu);
    expert_status st = fake_fail(f, err);
    if (st == EXPERT_OK) {
        if (!f->begun || op.slot >= f->slots || f->nops >= MAX_OPS)
            f->violations++;
        else
            f->ops[f->nops++] = op;
        if (op.kind == OP_UPLOAD && f->forbidden_src != NULL && op.bytes == f->forbidden_len &&
            memcmp(op.src, f->forbidden_src, op.bytes) == 0)
            f->violations += 1000; /* a section that failed verification reached the device */
    }
    pthread_mutex_unlock(&f->mu);
    return st;
}

static expert_status fk_upload(void *ctx, unsigned slot, void *dst, const void *src, size_t n,
                               expert_error *err)
{
    fake_op op = {.kind = OP_UPLOAD, .slot = slot, .dst = dst, .src = src, .bytes = n};
    return fk_queue(ctx, op, err);
}

static expert_status fk_convert(void *ctx, unsigned slot, void *dst, uint32_t dd, const void *src,
                                uint32_t sd, uint64_t count, expert_error *err)
{
    fake_op op = {.kind = OP_CONVERT, .slot = slot, .dst = dst, .src = src, .dst_dtype = dd,
                  .src_dtype = sd, .count = count};
    return fk_queue(ctx, op, err);
}

static expert_status fk_mark(void *ctx, unsigned slot, uint32_t group, expert_error *err)
{
    fake_op op = {.kind = OP_MARK, .slot = slot, .group = group};
    return fk_queue(ctx, op, err);
}

static expert_status fk_wait(void *ctx, uint32_t group, expert_error *err)
{
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    expert_status st = fake_fail(f, err);
    if (st == EXPERT_OK)
        run_stream_until(f, group);
    pthread_mutex_unlock(&f->mu);
    return st;
}

static expert_status fk_drain(void *ctx, expert_error *err)
{
    fake *f = ctx;
    (void)err;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nops; i++)
        run_op(f, &f->ops[i]);
    pthread_mutex_unlock(&f->mu);
    return EXPERT_OK;
}

static double fk_done_s(void *ctx, uint32_t group)
{
    (void)ctx;
    return (double)group;
}

static void fk_end(void *ctx)
{
    fake *f = ctx;
    f->begun = 0;
    f->nops = 0;
}

static gpu_engine fake_engine(fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    gpu_engine e = {f,        fk_begin,  fk_host_alloc, fk_host_free, fk_device_alloc,
                    fk_device_free, fk_upload, fk_convert,    fk_mark,      fk_wait,
                    fk_drain, fk_done_s, fk_end};
    return e;
}

/* ------------------------------------------------------------ files */

static char *g_dir;
static char g_path[1024];
static uint32_t g_corrupt_section;

static expert_reader *open_sample(void)
{
    expert_reader *r = NULL;
    expert_error e;
    assert_int_equal(expert_open(g_path, NULL, &r, &e), EXPERT_OK);
    return r;
}

static int setup(void **state)
{
    (void)state;
    g_dir = tmpdir_make("gpu-plan");
    assert_non_null(g_dir);
    snprintf(g_path, sizeof g_path, "%s/sample.expert", g_dir);
    fixture_write_sample(g_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(g_dir);
    return 0;
}

/* --------------------------------------------------------------- plan */

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static void test_plan_layout(void **state)
{
    (void)state;
    expert_reader *r = open_sample();
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        expert_gpu_options o = {0};
        o.device_dtype = bf16 ? EXPERT_DTYPE_BF16 : 0;
        expert_gpu_plan *p = NULL;
        expert_error e;
        assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_OK);
        /* 3 per layer + 6 OSD + the non-layer tensor; the FILE stays on the host. */
        uint32_t n = expert_gpu_plan_tensor_count(p);
        assert_int_equal(n, 3 * LAYERS + 6 + 1);
        assert_int_equal(expert_gpu_plan_group_count(p), LAYERS + 1);
        uint64_t payload = 0, arena_end = 0, prev_layer = 0;
        for (uint32_t i = 0; i < n; i++) {
            const expert_gpu_tensor *t = expert_gpu_plan_tensor(p, i);
            expert_section_info s;
            assert_int_equal(expert_section(r, t->section, &s), EXPERT_OK);
            assert_int_not_equal(s.type, EXPERT_SECTION_FILE);
            /* Streaming order: layers ascending, the non-layer tensor last. */
            uint64_t layer = s.layer == EXPERT_LAYER_NONE ? UINT64_MAX : s.layer;
            assert_true(layer >= prev_layer);
            prev_layer = layer;
            assert_int_equal(t->host_bytes, s.decoded_length);
            size_t width = expert_dtype_size(s.dtype);
            int is_int = s.dtype == EXPERT_DTYPE_I32;
            size_t dev_width = bf16 && !is_int ? 2 : width;
            assert_int_equal(t->device_bytes, s.decoded_length / width * dev_width);
            assert_int_equal(t->converted, bf16 && !is_int && s.dtype != EXPERT_DTYPE_BF16);
            assert_int_equal(t->device_offset % EXPERT_GPU_ALIGNMENT, 0);
            assert_true(t->device_offset >= arena_end); /* no overlap, in order */
            arena_end = t->device_offset + t->device_bytes;
            payload += t->device_bytes;
            const expert_gpu_group *g = expert_gpu_plan_group(p, t->group);
            assert_true(i >= g->first && i < g->first + g->count);
            assert_true(t->staging_offset + t->host_bytes <= g->host_bytes);
        }
        expert_gpu_totals tot;
        expert_gpu_plan_totals(p, &tot);
        assert_int_equal(tot.payload_bytes, payload);
        assert_int_equal(tot.allocations, 1);
        assert_true(tot.resident_bytes >= arena_end && tot.resident_bytes - arena_end < 256);
        assert_int_equal(tot.reserved_bytes, round_up(tot.resident_bytes, EXPERT_GPU_PAGE));
        /* Dense ΔW: LAYERS DoRA modules and one OSD, each OUT x IN. */
        assert_int_equal(tot.adapter_modules, LAYERS + 1);
        assert_int_equal(tot.dense_delta_bytes, (uint64_t)(LAYERS + 1) * OUT * IN * (bf16 ? 2 : 4));
        /* Per-tensor mode: the payload exactly, one page-rounded allocation each. */
        o.per_tensor = 1;
        expert_gpu_plan *q = NULL;
        assert_int_equal(expert_gpu_plan_build(r, &o, &q, &e), EXPERT_OK);
        expert_gpu_totals tq;
        expert_gpu_plan_totals(q, &tq);
        assert_int_equal(tq.resident_bytes, payload);
        assert_int_equal(tq.allocations, n);
        assert_int_equal(tq.reserved_bytes, (uint64_t)n * EXPERT_GPU_PAGE);
        expert_gpu_plan_free(q);
        expert_gpu_plan_free(p);
    }
    expert_close(r);
}

static void test_plan_options(void **state)
{
    (void)state;
    expert_reader *r = open_sample();
    expert_gpu_plan *p = NULL;
    expert_error e;
    expert_gpu_options o = {0};
    o.device_dtype = EXPERT_DTYPE_I32;
    assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_E_INVALID_ARGUMENT);
    assert_null(p);
    memset(&o, 0, sizeof o);
    o.decode_threads = 4;
    o.slots = 3;
    assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_E_INVALID_ARGUMENT);
    o.slots = GPU_MAX_SLOTS + 1;
    assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_E_INVALID_ARGUMENT);
    memset(&o, 0, sizeof o);
    o.max_device_bytes = 1000;
    assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_E_LIMIT_EXCEEDED);
    assert_non_null(strstr(e.message, "limit"));
    assert_int_equal(expert_gpu_plan_build(NULL, NULL, &p, &e), EXPERT_E_INVALID_ARGUMENT);
    expert_close(r);
}

/* ------------------------------------------------------------ stream */

static void check_resident(expert_reader *r, const expert_gpu_plan *p, const gpu_resident *res)
{
    for (uint32_t i = 0; i < p->tensor_count; i++) {
        const expert_gpu_tensor *t = &p->tensors[i];
        void *want = fixture_expected_bytes(r, t);
        assert_non_null(res->tensor[i]);
        assert_memory_equal(res->tensor[i], want, t->device_bytes);
        free(want);
    }
}

static void test_stream_matches_file(void **state)
{
    (void)state;
    static const struct {
        unsigned threads, slots;
        uint32_t dtype;
        int per_tensor;
    } cases[] = {
        {1, 0, 0, 0}, {1, 2, EXPERT_DTYPE_BF16, 0}, {2, 0, EXPERT_DTYPE_F16, 1},
        {3, 3, 0, 1}, {4, 6, EXPERT_DTYPE_F32, 0}, {1, 5, EXPERT_DTYPE_BF16, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int rep = 0; rep < 5; rep++) { /* threads interleave differently each time */
            expert_reader *r = open_sample();
            expert_gpu_options o = {0};
            o.decode_threads = cases[c].threads;
            o.slots = cases[c].slots;
            o.device_dtype = cases[c].dtype;
            o.per_tensor = cases[c].per_tensor;
            expert_gpu_plan *p = NULL;
            expert_error e;
            assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_OK);
            fake f;
            gpu_engine eng = fake_engine(&f);
            gpu_resident res;
            gpu_stream_stats ss;
            assert_int_equal(gpu_stream(r, p, &eng, &res, &ss, &e), EXPERT_OK);
            assert_int_equal(f.violations, 0);
            check_resident(r, p, &res);
            /* Resident device memory only: staging and scratch were released. */
            expert_gpu_totals tot;
            expert_gpu_plan_totals(p, &tot);
            assert_int_equal(f.nbufs, (int)tot.allocations);
            for (int b = 0; b < f.nbufs; b++)
                assert_false(f.bufs[b].host);
            gpu_resident_free(p, &eng, &res);
            assert_int_equal(f.nbufs, 0);
            assert_int_equal(f.violations, 0);
            expert_gpu_plan_free(p);
            expert_close(r);
        }
    }
}

/* Flips one byte of the raw LoRA A section of layer 3; returns a copy of the
 * corrupt decoded bytes (what must never reach the device). */
static void *corrupt_layer3(size_t *len)
{
    expert_reader *r = open_sample();
    uint32_t idx;
    assert_int_equal(expert_find(r, "m.layers.3.q.lora_A.weight", 26, &idx), EXPERT_OK);
    expert_section_info s;
    assert_int_equal(expert_section(r, idx, &s), EXPERT_OK);
    assert_int_equal(s.codec, EXPERT_CODEC_RAW);
    expert_close(r);
    g_corrupt_section = idx;
    xb file;
    assert_int_equal(file_load(g_path, &file), 0);
    file.p[s.offset + 5] ^= 0x40;
    void *bad = malloc(s.decoded_length);
    assert_non_null(bad);
    memcpy(bad, file.p + s.offset, s.decoded_length);
    *len = s.decoded_length;
    snprintf(g_path, sizeof g_path, "%s/corrupt.expert", g_dir);
    assert_int_equal(file_save(g_path, file.p, file.n), 0);
    xb_free(&file);
    return bad;
}

static void test_stream_corrupt_section(void **state)
{
    (void)state;
    char good[1024];
    memcpy(good, g_path, sizeof good);
    size_t bad_len = 0;
    void *bad = corrupt_layer3(&bad_len);
    for (unsigned threads = 1; threads <= 3; threads++) {
        expert_reader *r = open_sample(); /* structure intact: opens */
        expert_gpu_options o = {0};
        o.decode_threads = threads;
        expert_gpu_plan *p = NULL;
        expert_error e;
        assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_OK);
        fake f;
        gpu_engine eng = fake_engine(&f);
        f.forbidden_src = bad;
        f.forbidden_len = bad_len;
        gpu_resident res;
        assert_int_equal(gpu_stream(r, p, &eng, &res, NULL, &e), EXPERT_E_SECTION_HASH_MISMATCH);
        assert_int_equal(e.section, g_corrupt_section);
        assert_int_equal(f.violations, 0); /* the corrupt bytes were never uploaded */
        assert_int_equal(f.nbufs, 0);      /* nothing left allocated */
        assert_null(res.tensor);
        assert_null(res.arena);
        expert_gpu_plan_free(p);
        expert_close(r);
    }
    free(bad);
    memcpy(g_path, good, sizeof good);
}

static void test_stream_faults(void **state)
{
    (void)state;
    for (int per_tensor = 0; per_tensor <= 1; per_tensor++) {
        int succeeded = 0;
        for (int k = 1; k < 400 && !succeeded; k++) {
            expert_reader *r = open_sample();
            expert_gpu_options o = {0};
            o.decode_threads = 2;
            o.device_dtype = EXPERT_DTYPE_BF16;
            o.per_tensor = per_tensor;
            expert_gpu_plan *p = NULL;
            expert_error e;
            assert_int_equal(expert_gpu_plan_build(r, &o, &p, &e), EXPERT_OK);
            fake f;
            gpu_engine eng = fake_engine(&f);
            f.fail_at = k;
            gpu_resident res;
            expert_status st = gpu_stream(r, p, &eng, &res, NULL, &e);
            if (st == EXPERT_OK) {
                succeeded = 1;
                check_resident(r, p, &res);
                gpu_resident_free(p, &eng, &res);
            } else {
                assert_int_equal(st, EXPERT_E_IO);
                assert_non_null(strstr(e.message, "injected"));
                assert_null(res.tensor);
            }
            assert_int_equal(f.nbufs, 0);
            assert_int_equal(f.violations, 0);
            expert_gpu_plan_free(p);
            expert_close(r);
        }
        assert_true(succeeded); /* every failure point was visited */
    }
}

static void test_stream_nothing_to_upload(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/files-only.expert", g_dir);
    expert_writer *w = NULL;
    expert_error e;
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    fixture_add(w, "a.txt", EXPERT_SECTION_FILE, EXPERT_DTYPE_BYTES, 0, EXPERT_LAYER_NONE,
        EXPERT_MODULE_NONE, "abc", 1, 3, 0);
    assert_int_equal(expert_writer_set_metadata(w, META_MIN, strlen(META_MIN), &e), EXPERT_OK);
    assert_int_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    expert_reader *r = NULL;
    assert_int_equal(expert_open(path, NULL, &r, &e), EXPERT_OK);
    expert_gpu_plan *p = NULL;
    assert_int_equal(expert_gpu_plan_build(r, NULL, &p, &e), EXPERT_OK);
    expert_gpu_totals tot;
    expert_gpu_plan_totals(p, &tot);
    assert_int_equal(tot.tensors, 0);
    assert_int_equal(tot.resident_bytes, 0);
    assert_int_equal(tot.reserved_bytes, 0);
    fake f;
    gpu_engine eng = fake_engine(&f);
    gpu_resident res;
    assert_int_equal(gpu_stream(r, p, &eng, &res, NULL, &e), EXPERT_OK);
    assert_int_equal(f.nbufs, 0);
    gpu_resident_free(p, &eng, &res);
    expert_gpu_plan_free(p);
    expert_close(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_layout),
        cmocka_unit_test(test_plan_options),
        cmocka_unit_test(test_stream_matches_file),
        cmocka_unit_test(test_stream_faults),
        cmocka_unit_test(test_stream_nothing_to_upload),
        cmocka_unit_test(test_stream_corrupt_section), /* last: it points g_path elsewhere */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
