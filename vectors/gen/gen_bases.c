/* gen_bases.c — the valid base files that reject vectors patch. */
#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *META_MIN = "{\"format\":\"expert-v2\",\"name\":\"vector\",\"version\":\"1.0.0\",\"modules\":[]}";

const char *META_B =
    "{\"format\":\"expert-v2\",\"name\":\"base\",\"version\":\"1.0.0\",\"adapter_config\":\"adapter_config.json\","
    "\"modules\":[{\"path\":\"model.layers.0.self_attn.q_proj\",\"type\":\"lora\",\"layer\":0,"
    "\"in_features\":8,\"out_features\":6,\"r\":2,\"alpha\":4,\"rslora\":false}]}";

static const char *ADAPTER_CONFIG =
    "{\"peft_type\":\"LORA\",\"r\":2,\"lora_alpha\":4,\"target_modules\":[\"q_proj\"]}\n";
static const char *README = "# base vector\nOne LoRA module for the golden vectors.\n";

/* Base B (normalized writer output, alignment 64, raw sections):
 *   0 LORA_A  model.layers.0.self_attn.q_proj.lora_A.weight F32 [2, 8]  @256 (64 B)
 *   1 LORA_B  model.layers.0.self_attn.q_proj.lora_B.weight F32 [6, 2]  @320 (48 B), padding to 384
 *   2 FILE    adapter_config.json                                       @384
 *   3 FILE    docs/README.md                                            @512
 *   4 TENSOR  extra.bias F16 [5]                                        @576 (10 B), padding to 592 */
xb base_b_meta(const char *meta)
{
    S s[5] = {
        adapter("model.layers.0.self_attn.q_proj.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 2,
                8, 101),
        adapter("model.layers.0.self_attn.q_proj.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 6,
                2, 102),
        file_sec("adapter_config.json", ADAPTER_CONFIG),
        file_sec("docs/README.md", README),
        tensor("extra.bias", EXPERT_DTYPE_F16, EXPERT_CODEC_RAW, 1, 5, 0, 0, 0, 103),
    };
    F f = {meta, s, 5, 64, 0, 0};
    xb b;
    build_norm(&f, &b);
    return b;
}

xb base_b(void)
{
    static xb cache;
    if (cache.p == NULL)
        cache = base_b_meta(META_B);
    return dupb(&cache);
}

xb base_empty(void)
{
    F f = {META_MIN, NULL, 0, 64, 0, 0};
    xb b;
    build_norm(&f, &b);
    return b;
}

/* ------------------------------------------------------------ hand-built framed sections */

const uint8_t *g_chunk;
size_t g_chunk_len;

void framed(xb *out, const uint8_t *data, size_t len, uint32_t F, size_t es, int shuffle, int bad_frame,
            const zf_opts *bad_opts, void (*mangle)(xb *frame, int idx))
{
    size_t nf = len ? (len - 1) / F + 1 : 0;
    xb frames[64];
    if (nf > 64)
        die("framed: too many frames");
    uint8_t *tmp = xmalloc(F);
    for (size_t i = 0; i < nf; i++) {
        size_t L = len - i * F < F ? len - i * F : F;
        const uint8_t *src = data + i * F;
        if (shuffle && es > 1) {
            size_t N = L / es;
            for (size_t j = 0; j < es; j++)
                for (size_t k = 0; k < N; k++)
                    tmp[j * N + k] = src[k * es + j];
            src = tmp;
        }
        memset(&frames[i], 0, sizeof frames[i]);
        frame(&frames[i], src, L, (int)i == bad_frame ? bad_opts : NULL);
        if ((int)i == bad_frame && mangle) {
            g_chunk = src;
            g_chunk_len = L;
            mangle(&frames[i], (int)i);
        }
    }
    free(tmp);
    for (size_t i = 0; i < nf; i++) {
        uint8_t c[4];
        wr32(c, (uint32_t)frames[i].n);
        xb_put(out, c, 4);
    }
    for (size_t i = 0; i < nf; i++) {
        xb_put(out, frames[i].p, frames[i].n);
        xb_free(&frames[i]);
    }
    if (out->p == NULL)
        xb_put(out, "", 0);
}

/* Base Z: alignment 64, frame_size 65536, frames built by hand (raw/RLE
 * blocks), so the bytes do not depend on libzstd:
 *   0 TENSOR weights.z F32 [20000]: 80000 B = frames of 65536 + 14464
 *   1 TENSOR small.z   U16 [100]:     200 B = one frame */
xb base_z(int codec)
{
    S s[2] = {
        tensor("weights.z", EXPERT_DTYPE_F32, (uint8_t)codec, 1, 20000, 0, 0, 0, 201),
        tensor("small.z", EXPERT_DTYPE_U16, (uint8_t)codec, 1, 100, 0, 0, 0, 202),
    };
    F f = {META_MIN, s, 2, 64, 65536, 0};
    xb b;
    build(&f, &b);
    size_t ml;
    char *t = meta_text(b.p, b.n, &ml);
    xm_model m;
    model_parse(b.p, b.n, &m);
    model_set_meta_json(&m, t, ml);
    for (int i = 0; i < 2; i++) {
        xb st = {0};
        framed(&st, s[i].data, s[i].len, 65536, esize(s[i].dtype), codec == 2, -1, NULL, NULL);
        xm_set_section(&m, (uint32_t)i, st.p, st.n);
        xb_free(&st);
    }
    xb_free(&b);
    xm_serialize(&m, NULL, &b);
    xm_free(&m);
    return b;
}
