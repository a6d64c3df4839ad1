/* stream.c — the layer-by-layer pipeline: decode on worker threads into
 * pinned staging slots, upload on the caller's thread, one event per group.
 *
 * Group g uses slot g % slots. A worker may refill a slot for group g only
 * after the uploader has queued group g - slots (so its event exists) and
 * that event has completed (so the DMA engine no longer reads the slot).
 * Workers claim groups in order, so the group a worker waits for was claimed
 * before it and the pipeline cannot deadlock. The first failure anywhere
 * stops everyone; the copies already queued are drained before any buffer is
 * freed, and every device allocation is released. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_internal.h"

typedef struct pipeline {
    expert_reader *r;
    const expert_gpu_plan *plan;
    const gpu_engine *eng;
    gpu_resident *res;
    unsigned slots, threads;
    unsigned char *staging[GPU_MAX_SLOTS];
    unsigned char *scratch[GPU_MAX_SLOTS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t next_group;  /* next group a worker claims */
    uint32_t issued;      /* groups [0, issued) are queued behind their events */
    unsigned char *decoded;
    int failed;
    expert_error first_err;
} pipeline;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Records the first failure and wakes everyone. Called with mu held. */
static void fail_locked(pipeline *pl, const expert_error *e)
{
    if (!pl->failed) {
        pl->failed = 1;
        pl->first_err = *e;
    }
    pthread_cond_broadcast(&pl->cv);
}

static void fail(pipeline *pl, const expert_error *e)
{
    pthread_mutex_lock(&pl->mu);
    fail_locked(pl, e);
    pthread_mutex_unlock(&pl->mu);
}

static expert_status decode_group(pipeline *pl, uint32_t g, expert_error *e)
{
    const expert_gpu_group *grp = &pl->plan->groups[g];
    unsigned char *slot = pl->staging[g % pl->slots];
    for (uint32_t i = grp->first; i < grp->first + grp->count; i++) {
        const expert_gpu_tensor *t = &pl->plan->tensors[i];
        if (t->host_bytes == 0)
            continue;
        /* expert_read checks the section's SHA-256 before returning: only
         * verified bytes ever sit in a slot that is uploaded. */
        expert_status st = expert_read(pl->r, t->section, slot + t->staging_offset,
                                       (size_t)t->host_bytes, 0, e);
        if (st != EXPERT_OK)
            return st;
    }
    return EXPERT_OK;
}

static void *worker(void *arg)
{
    pipeline *pl = arg;
    uint32_t groups = pl->plan->group_count;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        if (pl->failed || pl->next_group >= groups)
            break;
        uint32_t g = pl->next_group++;
        while (!pl->failed && g >= pl->slots && pl->issued <= g - pl->slots)
            pthread_cond_wait(&pl->cv, &pl->mu);
        if (pl->failed)
            break;
        pthread_mutex_unlock(&pl->mu);
        expert_error e;
        memset(&e, 0, sizeof e);
        expert_status st = EXPERT_OK;
        if (g >= pl->slots)
            st = pl->eng->wait(pl->eng->ctx, g - pl->slots, &e);
        if (st == EXPERT_OK)
            st = decode_group(pl, g, &e);
        pthread_mutex_lock(&pl->mu);
        if (st != EXPERT_OK) {
            fail_locked(pl, &e);
            break;
        }
        pl->decoded[g] = 1;
        pthread_cond_broadcast(&pl->cv);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

static expert_status upload_group(pipeline *pl, uint32_t g, expert_error *e)
{
    const gpu_engine *eng = pl->eng;
    const expert_gpu_group *grp = &pl->plan->groups[g];
    unsigned slot = g % pl->slots;
    for (uint32_t i = grp->first; i < grp->first + grp->count; i++) {
        const expert_gpu_tensor *t = &pl->plan->tensors[i];
        if (t->host_bytes == 0)
            continue;
        const unsigned char *src = pl->staging[slot] + t->staging_offset;
        void *dst = pl->res->tensor[i];
        expert_status st;
        if (t->converted) {
            unsigned char *tmp = pl->scratch[slot] + t->scratch_offset;
            st = eng->upload(eng->ctx, slot, tmp, src, (size_t)t->host_bytes, e);
            if (st == EXPERT_OK)
                st = eng->convert(eng->ctx, slot, dst, t->device_dtype, tmp, t->stored_dtype,
                                  t->elements, e);
        } else {
            st = eng->upload(eng->ctx, slot, dst, src, (size_t)t->host_bytes, e);
        }
        if (st != EXPERT_OK)
            return st;
    }
    return eng->mark(eng->ctx, slot, g, e);
}

static expert_status allocate(pipeline *pl, expert_error *err)
{
    const expert_gpu_plan *p = pl->plan;
    const gpu_engine *eng = pl->eng;
    expert_status st;
    for (unsigned s = 0; s < pl->slots; s++) {
        st = eng->host_alloc(eng->ctx, (size_t)p->max_group_host_bytes, (void **)&pl->staging[s],
                             err);
        if (st != EXPERT_OK)
            return st;
        if (p->max_group_scratch_bytes > 0) {
            st = eng->device_alloc(eng->ctx, (size_t)p->max_group_scratch_bytes,
                                   (void **)&pl->scratch[s], err);
            if (st != EXPERT_OK)
                return st;
        }
    }
    if (!p->opt.per_tensor) {
        st = eng->device_alloc(eng->ctx, (size_t)p->totals.resident_bytes, &pl->res->arena, err);
        if (st != EXPERT_OK)
            return st;
        for (uint32_t i = 0; i < p->tensor_count; i++)
            pl->res->tensor[i] = (unsigned char *)pl->res->arena + p->tensors[i].device_offset;
        return EXPERT_OK;
    }
    for (uint32_t i = 0; i < p->tensor_count; i++) {
        if (p->tensors[i].device_bytes == 0)
            continue;
        st = eng->device_alloc(eng->ctx, (size_t)p->tensors[i].device_bytes, &pl->res->tensor[i],
                               err);
        if (st != EXPERT_OK)
            return st;
    }
    return EXPERT_OK;
}

void gpu_resident_free(const expert_gpu_plan *plan, const gpu_engine *eng, gpu_resident *res)
{
    if (res == NULL)
        return;
    if (res->arena != NULL)
        eng->device_free(eng->ctx, res->arena);
    else if (res->tensor != NULL)
        for (uint32_t i = 0; i < plan->tensor_count; i++)
            if (res->tensor[i] != NULL)
                eng->device_free(eng->ctx, res->tensor[i]);
    free(res->tensor);
    memset(res, 0, sizeof *res);
}

static void release_buffers(pipeline *pl)
{
    for (unsigned s = 0; s < pl->slots; s++) {
        if (pl->staging[s] != NULL)
            pl->eng->host_free(pl->eng->ctx, pl->staging[s]);
        if (pl->scratch[s] != NULL)
            pl->eng->device_free(pl->eng->ctx, pl->scratch[s]);
    }
}

expert_status gpu_stream(expert_reader *r, const expert_gpu_plan *plan, const gpu_engine *eng,
                         gpu_resident *res, gpu_stream_stats *stats, expert_error *err)
{
    if (r == NULL || plan == NULL || eng == NULL || res == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "reader, plan, engine and output are required");
    memset(res, 0, sizeof *res);
    if (stats != NULL)
        memset(stats, 0, sizeof *stats);
    double t0 = now_s();
    if (plan->tensor_count == 0)
        return EXPERT_OK;
    pipeline pl;
    memset(&pl, 0, sizeof pl);
    pl.r = r;
    pl.plan = plan;
    pl.eng = eng;
    pl.res = res;
    pl.threads = plan->opt.decode_threads ? plan->opt.decode_threads : 1;
    pl.slots = plan->opt.slots ? plan->opt.slots : pl.threads + 1;
    res->tensor = calloc(plan->tensor_count, sizeof *res->tensor);
    pl.decoded = calloc(plan->group_count, 1);
    if (res->tensor == NULL || pl.decoded == NULL) {
        free(res->tensor);
        free(pl.decoded);
        res->tensor = NULL;
        return gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION, "out of memory");
    }
    expert_status st = eng->begin(eng->ctx, pl.slots, plan->group_count, err);
    if (st != EXPERT_OK) {
        free(res->tensor);
        free(pl.decoded);
        res->tensor = NULL;
        return st;
    }
    st = allocate(&pl, err);
    pthread_t tids[GPU_MAX_THREADS];
    unsigned started = 0;
    if (st == EXPERT_OK) {
        pthread_mutex_init(&pl.mu, NULL);
        pthread_cond_init(&pl.cv, NULL);
        for (; started < pl.threads; started++)
            if (pthread_create(&tids[started], NULL, worker, &pl) != 0)
                break;
        if (started == 0) {
            st = gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION,
                           "could not start a decode thread");
        } else {
            for (uint32_t g = 0; g < plan->group_count; g++) {
                pthread_mutex_lock(&pl.mu);
                while (!pl.failed && !pl.decoded[g])
                    pthread_cond_wait(&pl.cv, &pl.mu);
                int stop = pl.failed;
                pthread_mutex_unlock(&pl.mu);
                if (stop)
                    break;
                expert_error e;
                memset(&e, 0, sizeof e);
                if (upload_group(&pl, g, &e) != EXPERT_OK) {
                    fail(&pl, &e);
                    break;
                }
                pthread_mutex_lock(&pl.mu);
                pl.issued = g + 1;
                pthread_cond_broadcast(&pl.cv);
                pthread_mutex_unlock(&pl.mu);
            }
        }
        for (unsigned i = 0; i < started; i++)
            pthread_join(tids[i], NULL);
        pthread_mutex_destroy(&pl.mu);
        pthread_cond_destroy(&pl.cv);
        if (pl.failed) {
            st = pl.first_err.code != EXPERT_OK ? pl.first_err.code : EXPERT_E_IO;
            if (err != NULL)
                *err = pl.first_err;
        }
    }
    /* Whatever happened, no copy may still read a slot we are about to free. */
    expert_error drain_err;
    expert_status drained = eng->drain(eng->ctx, &drain_err);
    if (st == EXPERT_OK && drained != EXPERT_OK) {
        st = drained;
        if (err != NULL)
            *err = drain_err;
    }
    release_buffers(&pl);
    free(pl.decoded);
    if (st != EXPERT_OK) {
        gpu_resident_free(plan, eng, res);
        eng->end(eng->ctx);
        return st;
    }
    if (stats != NULL) {
        stats->first_group_s = eng->group_done_s(eng->ctx, 0);
        stats->total_s = now_s() - t0;
    }
    eng->end(eng->ctx);
    return EXPERT_OK;
}
