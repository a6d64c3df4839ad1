/* fixture.c — the sample expert and the expected device image shared by the
 * GPU tests (CPU scheduler tests and device tests). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "craft.h"
#include "fixture.h"

float *fixture_frand(prng *g, size_t n)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((double)(prng_next(g) >> 11) / 9007199254740992.0 - 0.5);
    return v;
}

void fixture_add(expert_writer *w, const char *name, uint16_t type, uint8_t dtype, uint8_t codec,
                uint32_t layer, uint32_t module, const void *data, uint8_t rank, uint64_t d0,
                uint64_t d1)
{
    expert_section_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.type = type;
    d.codec = codec;
    d.dtype = dtype;
    d.rank = rank;
    d.layer = layer;
    d.module = module;
    d.dims[0] = d0;
    d.dims[1] = rank > 1 ? d1 : 0;
    uint64_t n = rank > 1 ? d0 * d1 : d0;
    expert_error e;
    assert_int_equal(expert_writer_add(w, &d, data, (size_t)(n * expert_dtype_size(dtype)), &e),
                     EXPERT_OK);
}

/* LAYERS layers, written in reverse layer order (so streaming order is not
 * TOC order), each with a LoRA module (F32, zstd and shuffle-zstd), a DoRA
 * magnitude in F16, and in layer 2 an OSD module with I32 CSR arrays; then a
 * FILE section and a non-layer F32 tensor. */
void fixture_write_sample(const char *path)
{
    expert_writer *w = NULL;
    expert_error e;
    assert_int_equal(expert_writer_open(path, NULL, &w, &e), EXPERT_OK);
    prng g = {12345};
    char name[128], meta[8192];
    size_t mlen = (size_t)snprintf(meta, sizeof meta,
                                   "{\"format\":\"expert-v2\",\"name\":\"t\",\"version\":\"1\","
                                   "\"modules\":[");
    for (int l = LAYERS - 1; l >= 0; l--) {
        float *A = fixture_frand(&g, R * IN), *B = fixture_frand(&g, OUT * R);
        uint16_t m16[OUT];
        for (int i = 0; i < OUT; i++)
            m16[i] = (uint16_t)(0x3c00 + i);
        uint32_t mod = (uint32_t)(LAYERS - 1 - l);
        snprintf(name, sizeof name, "m.layers.%d.q.lora_A.weight", l);
        fixture_add(w, name, EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, EXPERT_CODEC_RAW, (uint32_t)l, mod, A,
            2, R, IN);
        snprintf(name, sizeof name, "m.layers.%d.q.lora_B.weight", l);
        fixture_add(w, name, EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, EXPERT_CODEC_SHUFFLE_ZSTD,
            (uint32_t)l, mod, B, 2, OUT, R);
        snprintf(name, sizeof name, "m.layers.%d.q.lora_magnitude_vector", l);
        fixture_add(w, name, EXPERT_SECTION_DORA_MAGNITUDE, EXPERT_DTYPE_F16, EXPERT_CODEC_ZSTD,
            (uint32_t)l, mod, m16, 1, OUT, 0);
        mlen += (size_t)snprintf(meta + mlen, sizeof meta - mlen,
                                 "{\"path\":\"m.layers.%d.q\",\"type\":\"dora\",\"layer\":%d,"
                                 "\"r\":%d,\"alpha\":6,\"rslora\":false},",
                                 l, l, R);
        free(A);
        free(B);
    }
    float *U = fixture_frand(&g, OUT * 2), *S = fixture_frand(&g, 2), *Vt = fixture_frand(&g, 2 * IN);
    int32_t ip[OUT + 1];
    int32_t ix[OUT];
    float v[OUT];
    for (int i = 0; i <= OUT; i++)
        ip[i] = i;
    for (int i = 0; i < OUT; i++) {
        ix[i] = (i * 7) % IN;
        v[i] = (float)i;
    }
    uint32_t osd = LAYERS;
    fixture_add(w, "m.layers.2.o.osd_U", EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 2, osd, U, 2, OUT, 2);
    fixture_add(w, "m.layers.2.o.osd_S", EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 2, osd, S, 1, 2, 0);
    fixture_add(w, "m.layers.2.o.osd_VT", EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 2, osd, Vt, 2, 2, IN);
    fixture_add(w, "m.layers.2.o.indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 0, 2, osd, ip,
        1, OUT + 1, 0);
    fixture_add(w, "m.layers.2.o.indices", EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 0, 2, osd,
        ix, 1, OUT, 0);
    fixture_add(w, "m.layers.2.o.values", EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 2, osd, v,
        1, OUT, 0);
    mlen += (size_t)snprintf(meta + mlen, sizeof meta - mlen,
                             "{\"path\":\"m.layers.2.o\",\"type\":\"osd\",\"layer\":2,\"rank\":2,"
                             "\"sparse_format\":\"csr\",\"in_features\":%d,\"out_features\":%d}]}",
                             IN, OUT);
    const char readme[] = "not for the device";
    fixture_add(w, "README.md", EXPERT_SECTION_FILE, EXPERT_DTYPE_BYTES, 0, EXPERT_LAYER_NONE,
        EXPERT_MODULE_NONE, readme, 1, sizeof readme, 0);
    float head[7] = {1, 2, 3, 4, 5, 6, 7};
    fixture_add(w, "lm_head.extra", EXPERT_SECTION_TENSOR, EXPERT_DTYPE_F32, 0, EXPERT_LAYER_NONE,
        EXPERT_MODULE_NONE, head, 1, 7, 0);
    assert_int_equal(expert_writer_set_metadata(w, meta, mlen, &e), EXPERT_OK);
    assert_int_equal(expert_writer_finish(w, NULL, &e), EXPERT_OK);
    free(U);
    free(S);
    free(Vt);
}

/* What the device must hold for tensor t: the decoded section, converted. */
void *fixture_expected_bytes(expert_reader *r, const expert_gpu_tensor *t)
{
    void *host = malloc(t->host_bytes + 1), *dev = malloc(t->device_bytes + 1);
    assert_non_null(host);
    assert_non_null(dev);
    expert_error e;
    assert_int_equal(expert_read(r, t->section, host, t->host_bytes, 0, &e), EXPERT_OK);
    if (!t->converted) {
        memcpy(dev, host, t->host_bytes);
    } else {
        float *tmp = malloc(t->elements * sizeof *tmp + 1);
        assert_non_null(tmp);
        assert_int_equal(expert_floats_decode(t->stored_dtype, host, t->elements, tmp, &e),
                         EXPERT_OK);
        assert_int_equal(expert_floats_encode(t->device_dtype, tmp, t->elements, dev, &e),
                         EXPERT_OK);
        free(tmp);
    }
    free(host);
    return dev;
}

