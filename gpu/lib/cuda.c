/* cuda.c — the CUDA copy engine behind the streaming loader, and the
 * device-level functions of expert_gpu.h (device info, memory, the copy
 * floor, the SGEMM peak). Every CUDA call is checked; a failure becomes an
 * expert_status with the runtime's own message. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "cuda_check.h"
#include "kernels.h"

int expert_gpu_built_with_cuda(void) { return 1; }

static expert_status cuda_status(cudaError_t e)
{
    switch (e) {
    case cudaErrorMemoryAllocation:
        return EXPERT_E_NOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
        return EXPERT_E_NOT_FOUND;
    default:
        return EXPERT_E_IO;
    }
}

expert_status gpu_cuda_error(expert_error *err, int code, const char *what)
{
    cudaError_t e = (cudaError_t)code;
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls are not blamed */
    return gpu_error(err, cuda_status(e), EXPERT_NO_SECTION, "CUDA %s: %s (%s)", what,
                     cudaGetErrorString(e), cudaGetErrorName(e));
}


static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ engine */

typedef struct cuda_engine {
    int device;
    unsigned slots;
    uint32_t groups;
    cudaStream_t streams[GPU_MAX_SLOTS];
    cudaEvent_t start;
    cudaEvent_t *events;
} cuda_engine;

static void ce_end(void *ctx)
{
    cuda_engine *c = ctx;
    if (c->events != NULL)
        for (uint32_t g = 0; g < c->groups; g++)
            if (c->events[g] != NULL)
                cudaEventDestroy(c->events[g]);
    free(c->events);
    c->events = NULL;
    if (c->start != NULL)
        cudaEventDestroy(c->start);
    c->start = NULL;
    for (unsigned s = 0; s < c->slots; s++)
        if (c->streams[s] != NULL)
            cudaStreamDestroy(c->streams[s]);
    memset(c->streams, 0, sizeof c->streams);
    c->slots = 0;
}

static expert_status ce_begin_inner(cuda_engine *c, unsigned slots, uint32_t groups,
                                    expert_error *err)
{
    CU(cudaSetDevice(c->device), "cudaSetDevice");
    c->events = calloc(groups ? groups : 1, sizeof *c->events);
    if (c->events == NULL)
        return gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION, "out of memory");
    c->groups = groups;
    c->slots = slots;
    for (unsigned s = 0; s < slots; s++)
        CU(cudaStreamCreateWithFlags(&c->streams[s], cudaStreamNonBlocking), "cudaStreamCreate");
    CU(cudaEventCreate(&c->start), "cudaEventCreate");
    for (uint32_t g = 0; g < groups; g++)
        CU(cudaEventCreate(&c->events[g]), "cudaEventCreate");
    CU(cudaEventRecord(c->start, c->streams[0]), "cudaEventRecord");
    return EXPERT_OK;
}

static expert_status ce_begin(void *ctx, unsigned slots, uint32_t groups, expert_error *err)
{
    cuda_engine *c = ctx;
    expert_status st = ce_begin_inner(c, slots, groups, err);
    if (st != EXPERT_OK)
        ce_end(c);
    return st;
}

static expert_status ce_host_alloc(void *ctx, size_t bytes, void **p, expert_error *err)
{
    (void)ctx;
    *p = NULL;
    CU(cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault), "cudaHostAlloc (pinned staging)");
    return EXPERT_OK;
}

static void ce_host_free(void *ctx, void *p)
{
    (void)ctx;
    cudaFreeHost(p);
}

static expert_status ce_device_alloc(void *ctx, size_t bytes, void **p, expert_error *err)
{
    (void)ctx;
    *p = NULL;
    CU(cudaMalloc(p, bytes ? bytes : 1), "cudaMalloc");
    return EXPERT_OK;
}

static void ce_device_free(void *ctx, void *p)
{
    (void)ctx;
    cudaFree(p);
}

static expert_status ce_upload(void *ctx, unsigned slot, void *dst, const void *src, size_t bytes,
                               expert_error *err)
{
    cuda_engine *c = ctx;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->streams[slot]),
       "cudaMemcpyAsync");
    return EXPERT_OK;
}

static expert_status ce_convert(void *ctx, unsigned slot, void *dst, uint32_t dst_dtype,
                                const void *src, uint32_t src_dtype, uint64_t count,
                                expert_error *err)
{
    cuda_engine *c = ctx;
    CU((cudaError_t)xg_convert(dst, dst_dtype, src, src_dtype, count, c->streams[slot]),
       "dtype conversion kernel");
    return EXPERT_OK;
}

static expert_status ce_mark(void *ctx, unsigned slot, uint32_t group, expert_error *err)
{
    cuda_engine *c = ctx;
    CU(cudaEventRecord(c->events[group], c->streams[slot]), "cudaEventRecord");
    return EXPERT_OK;
}

static expert_status ce_wait(void *ctx, uint32_t group, expert_error *err)
{
    cuda_engine *c = ctx;
    CU(cudaEventSynchronize(c->events[group]), "cudaEventSynchronize");
    return EXPERT_OK;
}

static expert_status ce_drain(void *ctx, expert_error *err)
{
    cuda_engine *c = ctx;
    expert_status first = EXPERT_OK;
    for (unsigned s = 0; s < c->slots; s++) {
        cudaError_t e = cudaStreamSynchronize(c->streams[s]);
        if (e != cudaSuccess && first == EXPERT_OK)
            first = gpu_cuda_error(err, (int)e, "cudaStreamSynchronize");
    }
    return first;
}

static double ce_group_done_s(void *ctx, uint32_t group)
{
    cuda_engine *c = ctx;
    float ms = 0.0f;
    if (group >= c->groups || cudaEventElapsedTime(&ms, c->start, c->events[group]) != cudaSuccess)
        return -1.0;
    return (double)ms * 1e-3;
}

static gpu_engine cuda_engine_make(cuda_engine *c, int device)
{
    memset(c, 0, sizeof *c);
    c->device = device;
    gpu_engine e = {
        .ctx = c,
        .begin = ce_begin,
        .host_alloc = ce_host_alloc,
        .host_free = ce_host_free,
        .device_alloc = ce_device_alloc,
        .device_free = ce_device_free,
        .upload = ce_upload,
        .convert = ce_convert,
        .mark = ce_mark,
        .wait = ce_wait,
        .drain = ce_drain,
        .group_done_s = ce_group_done_s,
        .end = ce_end,
    };
    return e;
}

/* ------------------------------------------------------------ device */

/* Fails with NOT_FOUND (and the runtime's reason) when there is no usable
 * device; also creates the primary context, so later memory deltas do not
 * include it. */
static expert_status need_device(int ordinal, expert_error *err)
{
    int count = 0;
    CU(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (ordinal < 0 || ordinal >= count)
        return gpu_error(err, EXPERT_E_NOT_FOUND, EXPERT_NO_SECTION,
                         "CUDA device %d not present (%d devices)", ordinal, count);
    CU(cudaSetDevice(ordinal), "cudaSetDevice");
    CU(cudaFree(NULL), "context creation");
    return EXPERT_OK;
}

expert_status expert_gpu_device(int ordinal, expert_gpu_device_info *out, expert_error *err)
{
    if (out == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "output required");
    memset(out, 0, sizeof *out);
    expert_status st = need_device(ordinal, err);
    if (st != EXPERT_OK)
        return st;
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, ordinal), "cudaGetDeviceProperties");
    memcpy(out->name, prop.name, sizeof out->name - 1);
    out->ordinal = ordinal;
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
    CU(cudaRuntimeGetVersion(&out->runtime_version), "cudaRuntimeGetVersion");
    CU(cudaDriverGetVersion(&out->driver_version), "cudaDriverGetVersion");
    size_t freeb = 0, total = 0;
    CU(cudaMemGetInfo(&freeb, &total), "cudaMemGetInfo");
    out->free_bytes = freeb;
    out->total_bytes = total;
    return EXPERT_OK;
}

expert_status expert_gpu_mem_info(uint64_t *free_bytes, uint64_t *total_bytes, expert_error *err)
{
    size_t f = 0, t = 0;
    CU(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
    if (free_bytes != NULL)
        *free_bytes = f;
    if (total_bytes != NULL)
        *total_bytes = t;
    return EXPERT_OK;
}

/* ------------------------------------------------------------ loading */

struct expert_gpu_expert {
    int device;
    int per_tensor;
    uint32_t count;
    uint32_t *sections;
    gpu_resident res;
};

expert_status expert_gpu_load(expert_reader *r, const expert_gpu_plan *plan,
                              expert_gpu_expert **out, expert_gpu_load_stats *stats,
                              expert_error *err)
{
    if (r == NULL || plan == NULL || out == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "reader, plan and output are required");
    *out = NULL;
    expert_status st = need_device(plan->opt.device, err);
    if (st != EXPERT_OK)
        return st;
    expert_gpu_expert *e = calloc(1, sizeof *e);
    uint32_t *sections = calloc(plan->tensor_count ? plan->tensor_count : 1, sizeof *sections);
    if (e == NULL || sections == NULL) {
        free(e);
        free(sections);
        return gpu_error(err, EXPERT_E_NOMEM, EXPERT_NO_SECTION, "out of memory");
    }
    for (uint32_t i = 0; i < plan->tensor_count; i++)
        sections[i] = plan->tensors[i].section;
    cuda_engine ctx;
    gpu_engine eng = cuda_engine_make(&ctx, plan->opt.device);
    gpu_stream_stats ss;
    st = gpu_stream(r, plan, &eng, &e->res, &ss, err);
    if (st != EXPERT_OK) {
        free(e);
        free(sections);
        return st;
    }
    e->device = plan->opt.device;
    e->per_tensor = plan->opt.per_tensor;
    e->count = plan->tensor_count;
    e->sections = sections;
    if (stats != NULL) {
        stats->first_group_s = ss.first_group_s;
        stats->total_s = ss.total_s;
        stats->host_bytes = plan->totals.host_bytes;
        stats->device_bytes = plan->totals.resident_bytes;
        stats->scratch_bytes = plan->totals.scratch_bytes;
    }
    *out = e;
    return EXPERT_OK;
}

void expert_gpu_expert_free(expert_gpu_expert *e)
{
    if (e == NULL)
        return;
    cudaSetDevice(e->device);
    if (e->res.arena != NULL)
        cudaFree(e->res.arena);
    else if (e->res.tensor != NULL)
        for (uint32_t i = 0; i < e->count; i++)
            if (e->res.tensor[i] != NULL)
                cudaFree(e->res.tensor[i]);
    free(e->res.tensor);
    free(e->sections);
    free(e);
}

void *expert_gpu_expert_tensor(const expert_gpu_expert *e, uint32_t i)
{
    return e != NULL && i < e->count ? e->res.tensor[i] : NULL;
}

expert_status expert_gpu_expert_find(const expert_gpu_expert *e, uint32_t section,
                                     uint32_t *tensor)
{
    if (e == NULL || tensor == NULL)
        return EXPERT_E_INVALID_ARGUMENT;
    for (uint32_t i = 0; i < e->count; i++) {
        if (e->sections[i] == section) {
            *tensor = i;
            return EXPERT_OK;
        }
    }
    return EXPERT_E_NOT_FOUND;
}

/* ------------------------------------------------------- measurements */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

expert_status expert_gpu_copy_floor(uint64_t bytes, unsigned repeats, double *median_s,
                                    expert_error *err)
{
    if (median_s == NULL || repeats == 0 || repeats > 1000 || bytes == 0)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION,
                         "copy floor: bytes > 0, 1..1000 repeats");
    void *host = NULL, *dev = NULL;
    double times[1000];
    expert_status st = EXPERT_OK;
    cudaError_t e = cudaHostAlloc(&host, (size_t)bytes, cudaHostAllocDefault);
    if (e == cudaSuccess)
        e = cudaMalloc(&dev, (size_t)bytes);
    if (e == cudaSuccess) {
        memset(host, 0x5a, (size_t)bytes);
        for (unsigned i = 0; i < repeats && e == cudaSuccess; i++) {
            double t0 = now_s();
            e = cudaMemcpy(dev, host, (size_t)bytes, cudaMemcpyHostToDevice);
            times[i] = now_s() - t0;
        }
    }
    if (e != cudaSuccess)
        st = gpu_cuda_error(err, (int)e, "copy floor");
    if (dev != NULL)
        cudaFree(dev);
    if (host != NULL)
        cudaFreeHost(host);
    if (st != EXPERT_OK)
        return st;
    qsort(times, repeats, sizeof times[0], cmp_double);
    *median_s = repeats % 2 ? times[repeats / 2]
                            : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
    return EXPERT_OK;
}

expert_status expert_gpu_alloc(size_t bytes, void **dev, expert_error *err)
{
    if (dev == NULL)
        return gpu_error(err, EXPERT_E_INVALID_ARGUMENT, EXPERT_NO_SECTION, "output required");
    *dev = NULL;
    CU(cudaMalloc(dev, bytes ? bytes : 1), "cudaMalloc");
    return EXPERT_OK;
}

void expert_gpu_free(void *dev)
{
    if (dev != NULL)
        cudaFree(dev);
}

expert_status expert_gpu_to_device(void *dev, const void *host, size_t bytes, expert_error *err)
{
    if (bytes == 0)
        return EXPERT_OK;
    CU(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
    return EXPERT_OK;
}

expert_status expert_gpu_to_host(void *host, const void *dev, size_t bytes, expert_error *err)
{
    if (bytes == 0)
        return EXPERT_OK;
    CU(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return EXPERT_OK;
}

expert_status expert_gpu_sync(expert_error *err)
{
    CU(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    return EXPERT_OK;
}
