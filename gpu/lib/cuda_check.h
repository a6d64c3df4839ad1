/* cuda_check.h — one way to check a CUDA runtime call in the host code:
 * CU(call, what) returns the mapped expert_status (with the runtime's
 * message) from the enclosing function, which must have `expert_error *err`. */
#ifndef EXPERT_GPU_CUDA_CHECK_H
#define EXPERT_GPU_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "gpu_internal.h"

/* Maps code (a cudaError_t) to NOMEM / NOT_FOUND (no device or driver) / IO. */
expert_status gpu_cuda_error(expert_error *err, int code, const char *what);

#define CU(call, what)                                                                          \
    do {                                                                                        \
        cudaError_t cu_e_ = (call);                                                             \
        if (cu_e_ != cudaSuccess)                                                               \
            return gpu_cuda_error(err, (int)cu_e_, what);                                       \
    } while (0)

#endif /* EXPERT_GPU_CUDA_CHECK_H */
