/* no_cuda.c — the device half of expert_gpu.h in a build without CUDA
 * (meson -Dcuda=disabled, or no nvcc): planning works, every device
 * function says why it cannot. */
#include <stddef.h>

#include "gpu_internal.h"

#define NO_CUDA(err)                                                                            \
    gpu_error(err, EXPERT_E_NOT_FOUND, EXPERT_NO_SECTION,                                       \
              "built without CUDA (meson -Dcuda=enabled needs nvcc, cuBLAS and cuSPARSE)")

int expert_gpu_built_with_cuda(void) { return 0; }

expert_status expert_gpu_device(int ordinal, expert_gpu_device_info *out, expert_error *err)
{
    (void)ordinal;
    (void)out;
    return NO_CUDA(err);
}

expert_status expert_gpu_load(expert_reader *r, const expert_gpu_plan *plan,
                              expert_gpu_expert **out, expert_gpu_load_stats *stats,
                              expert_error *err)
{
    (void)r;
    (void)plan;
    (void)stats;
    if (out != NULL)
        *out = NULL;
    return NO_CUDA(err);
}

void expert_gpu_expert_free(expert_gpu_expert *e) { (void)e; }

void *expert_gpu_expert_tensor(const expert_gpu_expert *e, uint32_t i)
{
    (void)e;
    (void)i;
    return NULL;
}

expert_status expert_gpu_expert_find(const expert_gpu_expert *e, uint32_t section,
                                     uint32_t *tensor)
{
    (void)e;
    (void)section;
    (void)tensor;
    return EXPERT_E_NOT_FOUND;
}

expert_status expert_gpu_mem_info(uint64_t *free_bytes, uint64_t *total_bytes, expert_error *err)
{
    (void)free_bytes;
    (void)total_bytes;
    return NO_CUDA(err);
}

expert_status expert_gpu_copy_floor(uint64_t bytes, unsigned repeats, double *median_s,
                                    expert_error *err)
{
    (void)bytes;
    (void)repeats;
    (void)median_s;
    return NO_CUDA(err);
}

expert_status expert_gpu_adapter_upload(const expert_adapter *a, const float *W_dev,
                                        expert_gpu_adapter **out, expert_error *err)
{
    (void)a;
    (void)W_dev;
    if (out != NULL)
        *out = NULL;
    return NO_CUDA(err);
}

void expert_gpu_adapter_free(expert_gpu_adapter *g) { (void)g; }

const double *expert_gpu_adapter_dora_factor(const expert_gpu_adapter *g)
{
    (void)g;
    return NULL;
}

expert_status expert_gpu_forward(const expert_gpu_adapter *g, const float *W_dev,
                                 const float *bias_dev, uint64_t n, const float *x_dev,
                                 float *y_dev, expert_error *err)
{
    (void)g;
    (void)W_dev;
    (void)bias_dev;
    (void)n;
    (void)x_dev;
    (void)y_dev;
    return NO_CUDA(err);
}

expert_status expert_gpu_merge(const expert_gpu_adapter *g, float *W_dev, float *bias_dev,
                               expert_error *err)
{
    (void)g;
    (void)W_dev;
    (void)bias_dev;
    return NO_CUDA(err);
}

expert_status expert_gpu_sync(expert_error *err) { return NO_CUDA(err); }

expert_status expert_gpu_alloc(size_t bytes, void **dev, expert_error *err)
{
    (void)bytes;
    if (dev != NULL)
        *dev = NULL;
    return NO_CUDA(err);
}

void expert_gpu_free(void *dev) { (void)dev; }

expert_status expert_gpu_to_device(void *dev, const void *host, size_t bytes, expert_error *err)
{
    (void)dev;
    (void)host;
    (void)bytes;
    return NO_CUDA(err);
}

expert_status expert_gpu_to_host(void *host, const void *dev, size_t bytes, expert_error *err)
{
    (void)host;
    (void)dev;
    (void)bytes;
    return NO_CUDA(err);
}

expert_status expert_gpu_sgemm_peak(uint64_t n, unsigned repeats, double *gflops,
                                    expert_error *err)
{
    (void)n;
    (void)repeats;
    (void)gflops;
    return NO_CUDA(err);
}
