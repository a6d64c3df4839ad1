/*
 * expert_gpu.h — an expert on a CUDA device: streaming loader, VRAM
 * accounting and adapter application. Kept out of the core library: it links
 * the CUDA runtime, cuBLAS and cuSPARSE, and uses the core only through
 * expert.h.
 *
 * From disk to a device tensor:
 *   1. expert_open() validates the structure (level 1), as for the CPU.
 *   2. expert_gpu_plan_build() decides, without touching a section body or a
 *      GPU, what goes to the device: every tensor section (adapter factors,
 *      DoRA magnitudes, IA³ vectors, OSD factors and CSR arrays, soft prompts,
 *      other tensors) in streaming order (expert_section_in_layer_order), its
 *      device dtype and byte size, its offset in a single device allocation
 *      (the arena) and its place in a pinned staging buffer. FILE and
 *      SAFETENSORS_HEADER sections stay on the host. The plan's totals are
 *      the exact device bytes a load will request: the VRAM prediction.
 *   3. expert_gpu_load() streams one layer group at a time: CPU worker
 *      threads decode and verify (SHA-256, spec validation level 2) each
 *      group's sections into a pinned host buffer, the caller's thread
 *      uploads it with cudaMemcpyAsync on that buffer's stream and, when a
 *      float section must change dtype, converts it on the GPU from a device
 *      scratch buffer; a buffer is refilled only after the event recorded
 *      behind its last copy has completed. With two buffers (the default for
 *      one worker) decode of layer L+1, upload of layer L and conversion of
 *      layer L-1 overlap. A section whose hash does not match is never
 *      uploaded; any failure (a bad section, a failed allocation, a lost
 *      device) waits for the copies in flight, frees every device and pinned
 *      buffer, and returns an error: nothing stays half-resident.
 *
 * Conventions are the core's: expert_status returns, expert_error filled
 * when not NULL, nothing prints, aborts or exits. A build without CUDA keeps
 * the planning functions; the device functions return EXPERT_E_NOT_FOUND
 * ("built without CUDA"). Without a device or driver they return
 * EXPERT_E_NOT_FOUND with the CUDA runtime's message.
 */
#ifndef EXPERT_GPU_H
#define EXPERT_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "expert.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device allocations are laid out on this boundary inside the arena (the
 * cudaMalloc alignment, enough for every cuBLAS/cuSPARSE operand). */
#define EXPERT_GPU_ALIGNMENT 256u
/* cudaMalloc reserves device memory in pages of this size (the CUDA driver's
 * large-page granularity); cudaMemGetInfo deltas move in these steps. */
#define EXPERT_GPU_PAGE (UINT64_C(2) << 20)

typedef struct expert_gpu_options {
    /* 0: every tensor as stored. EXPERT_DTYPE_F32, _F16 or _BF16: every float
     * section (F32/F16/BF16/F64) becomes that dtype, converted on the GPU
     * (round to nearest even); integer sections (CSR indices) stay as stored. */
    uint32_t device_dtype;
    int per_tensor;          /* 0: one device allocation per expert (arena); 1: one per tensor */
    unsigned decode_threads; /* CPU decode workers; 0 means 1 */
    unsigned slots;          /* pinned staging buffers; 0 means decode_threads + 1 */
    uint64_t max_device_bytes; /* refuse (LIMIT_EXCEEDED) a plan above this; 0: no limit */
    int device;              /* CUDA device ordinal */
} expert_gpu_options;

/* One tensor of the plan, in streaming order. */
typedef struct expert_gpu_tensor {
    uint32_t section;        /* TOC index */
    uint32_t layer, module;  /* as in the TOC */
    uint32_t group;          /* the layer group it is streamed with */
    uint16_t type;           /* expert_section_type */
    uint8_t stored_dtype, device_dtype;
    uint8_t rank;
    uint64_t dims[EXPERT_MAX_RANK];
    uint64_t elements;
    uint64_t host_bytes;     /* decoded bytes, staged in pinned memory */
    uint64_t device_bytes;   /* bytes resident on the device */
    uint64_t device_offset;  /* offset in the arena (arena mode) */
    uint64_t staging_offset; /* offset in its group's staging buffer */
    uint64_t scratch_offset; /* offset in the device scratch buffer, when converted */
    int converted;           /* 1: uploaded to scratch, then converted on the GPU */
} expert_gpu_tensor;

typedef struct expert_gpu_group {
    uint32_t first, count;   /* tensors [first, first + count) */
    uint32_t layer;          /* EXPERT_LAYER_NONE for the non-layer tail */
    uint64_t host_bytes;     /* staging bytes the group needs */
    uint64_t scratch_bytes;  /* device scratch the group's conversions need */
    uint64_t device_bytes;   /* resident bytes the group adds */
} expert_gpu_group;

/* Byte totals of a plan: what a load will allocate, exactly. */
typedef struct expert_gpu_totals {
    uint64_t tensors, groups;
    uint64_t payload_bytes;    /* sum of device_bytes */
    uint64_t resident_bytes;   /* what stays allocated: the arena size, or the sum of
                                * the per-tensor allocations */
    uint64_t allocations;      /* resident device allocations (1 for the arena) */
    uint64_t reserved_bytes;   /* resident_bytes rounded up to EXPERT_GPU_PAGE per allocation:
                                * the most cudaMemGetInfo can drop by */
    uint64_t staging_bytes;    /* pinned host memory during the load (slots x largest group) */
    uint64_t scratch_bytes;    /* transient device memory during the load */
    uint64_t host_bytes;       /* decoded bytes streamed */
    uint64_t dense_delta_bytes; /* the dense ΔW of every adapter module at the device's
                                 * float width: what a merged runtime would hold instead */
    uint64_t adapter_modules;
} expert_gpu_totals;

typedef struct expert_gpu_plan expert_gpu_plan;

/* Plans the load of an open reader (structure only: no section body is read
 * and no GPU is needed). opt may be NULL (defaults). Errors: INVALID_ARGUMENT
 * (bad options), LIMIT_EXCEEDED (size arithmetic overflows, or above
 * max_device_bytes), SIZE_MISMATCH (a section whose decoded length is not a
 * whole number of its dtype), NOMEM. */
expert_status expert_gpu_plan_build(const expert_reader *r, const expert_gpu_options *opt,
                                    expert_gpu_plan **out, expert_error *err);
void expert_gpu_plan_free(expert_gpu_plan *p);
const expert_gpu_options *expert_gpu_plan_options(const expert_gpu_plan *p);
uint32_t expert_gpu_plan_tensor_count(const expert_gpu_plan *p);
const expert_gpu_tensor *expert_gpu_plan_tensor(const expert_gpu_plan *p, uint32_t i);
uint32_t expert_gpu_plan_group_count(const expert_gpu_plan *p);
const expert_gpu_group *expert_gpu_plan_group(const expert_gpu_plan *p, uint32_t i);
void expert_gpu_plan_totals(const expert_gpu_plan *p, expert_gpu_totals *out);

/* ------------------------------------------------------------ device */

/* 1 if this library was built with CUDA. */
int expert_gpu_built_with_cuda(void);

/* Device name, memory and the runtime's view; NOT_FOUND without a device. */
typedef struct expert_gpu_device_info {
    char name[256];
    int ordinal, cc_major, cc_minor, runtime_version, driver_version;
    uint64_t total_bytes, free_bytes;
} expert_gpu_device_info;
expert_status expert_gpu_device(int ordinal, expert_gpu_device_info *out, expert_error *err);

/* An expert resident on the device. */
typedef struct expert_gpu_expert expert_gpu_expert;

typedef struct expert_gpu_load_stats {
    double first_group_s;   /* from the start of the load until group 0 is resident */
    double total_s;         /* until every group is resident (host wall clock) */
    uint64_t host_bytes;    /* bytes decoded and copied host -> device */
    uint64_t device_bytes;  /* resident bytes (the plan's resident_bytes) */
    uint64_t scratch_bytes; /* transient device scratch used */
} expert_gpu_load_stats;

/* Loads the planned tensors of r onto the device. r must be the reader the
 * plan was built from. stats may be NULL. */
expert_status expert_gpu_load(expert_reader *r, const expert_gpu_plan *plan,
                              expert_gpu_expert **out, expert_gpu_load_stats *stats,
                              expert_error *err);
/* Frees every device allocation of the expert. NULL is accepted. */
void expert_gpu_expert_free(expert_gpu_expert *e);
/* Device pointer of the plan's tensor i (NULL if out of range). */
void *expert_gpu_expert_tensor(const expert_gpu_expert *e, uint32_t i);
/* The plan's tensor index of TOC section `section`, or NOT_FOUND. */
expert_status expert_gpu_expert_find(const expert_gpu_expert *e, uint32_t section,
                                     uint32_t *tensor);

/* cudaMemGetInfo: free and total device memory. */
expert_status expert_gpu_mem_info(uint64_t *free_bytes, uint64_t *total_bytes,
                                  expert_error *err);

/* The machine's floor for one load: `bytes` copied from one pinned host
 * buffer to one device buffer with a plain synchronous cudaMemcpy, `repeats`
 * times; the median seconds is returned. */
expert_status expert_gpu_copy_floor(uint64_t bytes, unsigned repeats, double *median_s,
                                    expert_error *err);

/* ------------------------------------------- adapter application */

/* One adapter module on the device: the binary32 tensors of expert_adapter
 * (expert_adapter.h), CSR indices as int64, all device pointers. */
typedef struct expert_gpu_adapter expert_gpu_adapter;

/* Uploads a CPU module (from expert_adapter_load) as binary32. For DoRA, the
 * row factor f = m / ||W + s·B·A||_row is computed on the GPU from W_dev
 * (device, [out, in]) once, here, without forming ΔW; W_dev may be NULL for
 * the other kinds. */
expert_status expert_gpu_adapter_upload(const expert_adapter *a, const float *W_dev,
                                        expert_gpu_adapter **out, expert_error *err);
void expert_gpu_adapter_free(expert_gpu_adapter *g);
/* The DoRA row factor computed at upload (device, [out] binary64), else NULL. */
const double *expert_gpu_adapter_dora_factor(const expert_gpu_adapter *g);

/* y [n, out] = layer'(x) as expert_adapter_forward defines it (unmerged, ΔW
 * never formed): cuBLAS SGEMMs for x·Wᵀ and the low-rank factors, cuSPARSE
 * SpMM for the OSD sparse part, elementwise kernels for IA³ and the DoRA
 * factor. All pointers are device pointers; bias may be NULL. */
expert_status expert_gpu_forward(const expert_gpu_adapter *g, const float *W_dev,
                                 const float *bias_dev, uint64_t n, const float *x_dev,
                                 float *y_dev, expert_error *err);
/* W_dev [out, in] (and bias_dev [out], may be NULL) replaced by the merged
 * weight, on the GPU, as expert_adapter_merge defines it. */
expert_status expert_gpu_merge(const expert_gpu_adapter *g, float *W_dev, float *bias_dev,
                               expert_error *err);
/* Blocks until every queued adapter operation has finished. */
expert_status expert_gpu_sync(expert_error *err);

/* Device memory helpers for tools and tests (cudaMalloc/cudaMemcpy/cudaFree). */
expert_status expert_gpu_alloc(size_t bytes, void **dev, expert_error *err);
void expert_gpu_free(void *dev);
expert_status expert_gpu_to_device(void *dev, const void *host, size_t bytes, expert_error *err);
expert_status expert_gpu_to_host(void *host, const void *dev, size_t bytes, expert_error *err);
/* cuBLAS SGEMM of square n x n matrices, `repeats` times; best GFLOP/s. */
expert_status expert_gpu_sgemm_peak(uint64_t n, unsigned repeats, double *gflops,
                                    expert_error *err);

#ifdef __cplusplus
}
#endif
#endif /* EXPERT_GPU_H */
