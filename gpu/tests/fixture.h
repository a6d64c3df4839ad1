/* fixture.h — a small multi-layer sample expert for the GPU tests. */
#ifndef EXPERT_GPU_TEST_FIXTURE_H
#define EXPERT_GPU_TEST_FIXTURE_H

#include "craft.h"
#include "expert.h"
#include "expert_gpu.h"

#define LAYERS 5
#define OUT 24
#define IN 40
#define R 3

/* LAYERS layers written in reverse layer order (so streaming order is not
 * TOC order), each with a DoRA module (A raw F32, B shuffle-zstd F32,
 * magnitude zstd F16); in layer 2 an OSD module with I32 CSR arrays; then a
 * FILE section and a non-layer F32 tensor. */
void fixture_write_sample(const char *path);
void fixture_add(expert_writer *w, const char *name, uint16_t type, uint8_t dtype, uint8_t codec,
                 uint32_t layer, uint32_t module, const void *data, uint8_t rank, uint64_t d0,
                 uint64_t d1);
/* n uniform floats in [-0.5, 0.5). */
float *fixture_frand(prng *g, size_t n);
/* What the device must hold for planned tensor t (malloc'd): the verified
 * decoded section, converted to t->device_dtype when t->converted. */
void *fixture_expected_bytes(expert_reader *r, const expert_gpu_tensor *t);

#endif
