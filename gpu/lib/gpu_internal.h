/* gpu_internal.h — what the planner, the streaming scheduler and the CUDA
 * engine share. The scheduler (stream.c) is plain C and drives an abstract
 * copy engine, so its ordering rules are tested on the CPU with a fake engine
 * that defers every "asynchronous" copy until it is waited for. */
#ifndef EXPERT_GPU_INTERNAL_H
#define EXPERT_GPU_INTERNAL_H

#include "expert_gpu.h"

#define GPU_MAX_SLOTS 16u
#define GPU_MAX_THREADS 15u

struct expert_gpu_plan {
    expert_gpu_options opt;
    uint32_t tensor_count, group_count;
    expert_gpu_tensor *tensors; /* streaming order */
    expert_gpu_group *groups;
    expert_gpu_totals totals;
    uint64_t max_group_host_bytes, max_group_scratch_bytes;
};

expert_status gpu_error(expert_error *err, expert_status code, uint32_t section,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The copy engine: host staging, device memory, asynchronous uploads on one
 * stream per staging slot, dtype conversion on the device, and one event per
 * group. Every function returns a status and fills err. */
typedef struct gpu_engine {
    void *ctx;
    expert_status (*begin)(void *ctx, unsigned slots, uint32_t groups, expert_error *err);
    expert_status (*host_alloc)(void *ctx, size_t bytes, void **p, expert_error *err);
    void (*host_free)(void *ctx, void *p);
    expert_status (*device_alloc)(void *ctx, size_t bytes, void **p, expert_error *err);
    void (*device_free)(void *ctx, void *p);
    /* Queues dst <- src (bytes) on slot's stream; src stays in use until the
     * group's event (recorded later on that stream) completes. */
    expert_status (*upload)(void *ctx, unsigned slot, void *dst, const void *src, size_t bytes,
                            expert_error *err);
    /* Queues dst (dst_dtype) <- src (src_dtype) for `count` floats on slot's stream. */
    expert_status (*convert)(void *ctx, unsigned slot, void *dst, uint32_t dst_dtype,
                             const void *src, uint32_t src_dtype, uint64_t count,
                             expert_error *err);
    /* Records group's event behind everything queued on slot so far. */
    expert_status (*mark)(void *ctx, unsigned slot, uint32_t group, expert_error *err);
    /* Blocks until group's event has completed (called from worker threads). */
    expert_status (*wait)(void *ctx, uint32_t group, expert_error *err);
    /* Blocks until everything queued has completed; safe after any failure. */
    expert_status (*drain)(void *ctx, expert_error *err);
    /* Seconds from begin() to the completion of group's event (after drain). */
    double (*group_done_s)(void *ctx, uint32_t group);
    void (*end)(void *ctx); /* frees streams and events */
} gpu_engine;

/* Device memory of a loaded plan: the arena, or one allocation per tensor. */
typedef struct gpu_resident {
    void *arena;
    void **tensor; /* plan->tensor_count device pointers */
} gpu_resident;

typedef struct gpu_stream_stats {
    double first_group_s, total_s;
} gpu_stream_stats;

/* Streams the plan through the engine. On success *res holds the device
 * memory (freed with gpu_resident_free); on failure nothing is allocated. */
expert_status gpu_stream(expert_reader *r, const expert_gpu_plan *plan, const gpu_engine *eng,
                         gpu_resident *res, gpu_stream_stats *stats, expert_error *err);
void gpu_resident_free(const expert_gpu_plan *plan, const gpu_engine *eng, gpu_resident *res);

#endif /* EXPERT_GPU_INTERNAL_H */
