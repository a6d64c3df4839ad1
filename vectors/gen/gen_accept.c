/* gen_accept.c — must-accept vectors (group accept). */
#include "gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *codec_lc[3] = {"raw", "zstd", "shuffle"};

static void add_built(const char *name, const char *desc, const F *f, int normalize_it)
{
    xb b;
    if (normalize_it)
        build_norm(f, &b);
    else
        build(f, &b);
    accept_vec(name, desc, &b, f->sign ? KEY1_PUB : NULL);
    xb_free(&b);
}

/* The 8 + N bytes of a safetensors header holding `json`, padded with spaces
 * to a multiple of 8 (arena memory). */
static const uint8_t *st_header(const char *json, size_t *len)
{
    size_t n = strlen(json), padded = (n + 7) / 8 * 8;
    uint8_t *p = A(8 + padded);
    wr64(p, padded);
    memcpy(p + 8, json, n);
    memset(p + 8 + n, ' ', padded - n);
    *len = 8 + padded;
    return p;
}

/* ------------------------------------------------------------ codec x dtype */

static void codec_dtype(void)
{
    for (int c = 0; c < 3; c++) {
        for (uint8_t d = 0; d < 14; d++) {
            S s;
            if (d == EXPERT_DTYPE_BYTES) {
                s = tensor("data/blob.bin", d, (uint8_t)c, 1, 1500, 0, 0, 0, 1000u + 10u * c + d);
                s.type = EXPERT_SECTION_FILE;
            } else {
                s = tensor(AS("tensor.%s", dtype_lc(d)), d, (uint8_t)c, 2, 24, 40, 0, 0, 1000u + 10u * c + d);
            }
            F f = {AS("{\"format\":\"expert-v2\",\"name\":\"codec-%s-%s\",\"version\":\"1.0.0\",\"modules\":[]}",
                      codec_lc[c], dtype_lc(d)),
                   &s, 1, 64, 0, 0};
            const char *what = d == EXPERT_DTYPE_BYTES ? "one FILE section (BYTES [1500])"
                                                       : AS("one %s TENSOR [24, 40]", expert_dtype_name(d));
            add_built(AS("codec-%s-%s", codec_lc[c], dtype_lc(d)),
                      AS("%s, codec %s%s", what, expert_codec_name((uint32_t)c),
                         c ? " (reference writer output, libzstd level 19)" : ""),
                      &f, c == 0);
        }
    }
}

/* ------------------------------------------------------------ alignment, frames, empty, shapes */

static void alignment_frames_shapes(void)
{
    static const uint32_t al[3] = {64, 256, 4096};
    for (int i = 0; i < 3; i++) {
        S s[4] = {
            tensor("a.u8", EXPERT_DTYPE_U8, 0, 1, 10, 0, 0, 0, 300),
            tensor("b.f32", EXPERT_DTYPE_F32, 0, 2, 5, 5, 0, 0, 301),
            file_sec("c.txt", "alignment test: a FILE section of a few bytes\n"),
            tensor("d.i64", EXPERT_DTYPE_I64, 0, 1, 3, 0, 0, 0, 302),
        };
        F f = {META_MIN, s, 4, al[i], 0, 0};
        add_built(AS("alignment-%u", al[i]),
                  AS("alignment %u: four raw sections of 10, 100, 47 and 24 bytes, each at a multiple of %u", al[i],
                     al[i]),
                  &f, 1);
    }

    struct {
        const char *name, *desc;
        uint8_t dtype, codec, rank;
        uint64_t d0, d1, d2;
        uint32_t frame;
    } fr[] = {
        {"frames-zstd-f32-last-short", "F32 [33000] zstd, frame_size 65536: frames of 65536, 65536 and 928 bytes",
         EXPERT_DTYPE_F32, 1, 1, 33000, 0, 0, 65536},
        {"frames-shuffle-bf16-last-short",
         "BF16 [70000] shuffle+zstd, frame_size 65536: 3 frames, the last of 8928 bytes shuffled on its own",
         EXPERT_DTYPE_BF16, 2, 1, 70000, 0, 0, 65536},
        {"frames-shuffle-f64-exact-multiple", "F64 [16384] shuffle+zstd, frame_size 65536: exactly 2 full frames",
         EXPERT_DTYPE_F64, 2, 1, 16384, 0, 0, 65536},
        {"frames-shuffle-i16-last-one-element",
         "I16 [32769] shuffle+zstd, frame_size 65536: the last frame holds one element (N = 1)", EXPERT_DTYPE_I16, 2,
         1, 32769, 0, 0, 65536},
        {"frames-shuffle-f32-rank3", "F32 [3, 130, 50] shuffle+zstd, frame_size 65536: 2 frames (65536 + 12464)",
         EXPERT_DTYPE_F32, 2, 3, 3, 130, 50, 65536},
        {"frames-zstd-u8-six-frames", "U8 [327681] zstd, frame_size 65536: 6 frames, the last of 1 byte",
         EXPERT_DTYPE_U8, 1, 1, 327681, 0, 0, 65536},
        {"frames-zstd-frame-size-64mib", "F32 [1000] zstd with frame_size 2^26 (the maximum): one frame",
         EXPERT_DTYPE_F32, 1, 1, 1000, 0, 0, 1u << 26},
    };
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) {
        S s = tensor(AS("frames.%s", dtype_lc(fr[i].dtype)), fr[i].dtype, fr[i].codec, fr[i].rank, fr[i].d0,
                     fr[i].d1, fr[i].d2, 0, 400 + i);
        F f = {META_MIN, &s, 1, 64, fr[i].frame, 0};
        add_built(fr[i].name, AS("%s (reference writer output)", fr[i].desc), &f, 0);
    }

    {
        F f = {META_MIN, NULL, 0, 64, 0, 0};
        add_built("empty-expert", "no sections at all: empty TOC and strings, 8-slot index", &f, 1);
    }
    {
        S s[5] = {
            tensor("empty.raw", EXPERT_DTYPE_F32, 0, 2, 0, 16, 0, 0, 0),
            tensor("empty.zstd", EXPERT_DTYPE_F16, 1, 2, 16, 0, 0, 0, 0),
            tensor("empty.shuffle", EXPERT_DTYPE_BF16, 2, 1, 0, 0, 0, 0, 0),
            bytes_sec("empty.txt", EXPERT_SECTION_FILE, "", 0),
            tensor("x.u8", EXPERT_DTYPE_U8, 0, 1, 3, 0, 0, 0, 500),
        };
        F f = {META_MIN, s, 5, 64, 65536, 0};
        add_built("empty-sections",
                  "empty sections (F32 [0, 16] raw, F16 [16, 0] zstd, BF16 [0] shuffle, empty FILE) at offset 0, "
                  "plus one 3-byte section",
                  &f, 1);
    }
    {
        S s[3] = {
            tensor("scalar.f32", EXPERT_DTYPE_F32, 0, 0, 0, 0, 0, 0, 510),
            tensor("scalar.u64", EXPERT_DTYPE_U64, 0, 0, 0, 0, 0, 0, 511),
            tensor("rank4.i8", EXPERT_DTYPE_I8, 0, 4, 2, 3, 4, 5, 512),
        };
        F f = {META_MIN, s, 3, 64, 0, 0};
        add_built("shapes-rank0-and-rank4", "rank-0 scalars (F32, U64) and a rank-4 I8 [2, 3, 4, 5] tensor", &f, 1);
    }
    {
        int n = 300;
        S *s = A(sizeof(S) * (size_t)n);
        for (int i = 0; i < n; i++) {
            static const char fill[4] = "xyz";
            s[i] = bytes_sec(AS("files/%03d.txt", i), EXPERT_SECTION_FILE, fill, (size_t)(i % 2 ? 1 + i % 3 : 0));
        }
        F f = {META_MIN, s, n, 64, 0, 0};
        add_built("many-sections-300",
                  "300 FILE sections (half of them empty): 1024-slot index with collisions and wrap-around", &f, 1);
    }
    {
        uint8_t *v = A(4 * 8);
        uint32_t f32s[8] = {0x7FC00000u, 0xFFC00001u, 0x7F800000u, 0xFF800000u,
                            0x80000000u, 0x00000001u, 0x807FFFFFu, 0x3F800000u};
        for (int i = 0; i < 8; i++)
            wr32(v + 4 * i, f32s[i]);
        static const uint8_t bools[6] = {0, 1, 2, 127, 128, 255};
        uint64_t d8 = 8, d6 = 6;
        S s[2] = {
            raw_sec("special.f32", EXPERT_SECTION_TENSOR, EXPERT_DTYPE_F32, 1, &d8, v, 32),
            raw_sec("special.bool", EXPERT_SECTION_TENSOR, EXPERT_DTYPE_BOOL, 1, &d6, bools, 6),
        };
        F f = {META_MIN, s, 2, 64, 0, 0};
        add_built("values-not-validated",
                  "element values are not validated: F32 NaN, signalling NaN, ±Inf, -0, subnormals; BOOL bytes 2..255",
                  &f, 1);
    }
}

/* ------------------------------------------------------------ adapters */

#define LAYER_PATH(l, m) "model.layers." #l "." m

static void adapters(void)
{
    {
        const char *meta =
            "{\"format\":\"expert-v2\",\"name\":\"lora\",\"version\":\"1.0.0\",\"modules\":["
            "{\"path\":\"model.layers.0.self_attn.q_proj\",\"type\":\"lora\",\"layer\":0,\"in_features\":16,"
            "\"out_features\":12,\"r\":4,\"alpha\":8,\"rslora\":false},"
            "{\"path\":\"model.layers.1.self_attn.v_proj\",\"type\":\"lora\",\"layer\":1,\"r\":4,\"alpha\":16.5,"
            "\"rslora\":true}]}";
        S s[4] = {
            adapter(LAYER_PATH(0, "self_attn.q_proj.lora_A.weight"), EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2,
                    4, 16, 600),
            adapter(LAYER_PATH(0, "self_attn.q_proj.lora_B.weight"), EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2,
                    12, 4, 601),
            adapter(LAYER_PATH(1, "self_attn.v_proj.lora_A.weight"), EXPERT_SECTION_LORA_A, EXPERT_DTYPE_BF16, 1, 1, 2,
                    4, 16, 602),
            adapter(LAYER_PATH(1, "self_attn.v_proj.lora_B.weight"), EXPERT_SECTION_LORA_B, EXPERT_DTYPE_BF16, 1, 1, 2,
                    8, 4, 603),
        };
        F f = {meta, s, 4, 64, 0, 0};
        add_built("adapter-lora",
                  "two LoRA modules: F32 with in/out_features, and BF16 rsLoRA with alpha 16.5 and no features", &f, 1);
    }
    {
        const char *meta =
            "{\"format\":\"expert-v2\",\"name\":\"dora\",\"version\":\"1.0.0\",\"modules\":["
            "{\"path\":\"model.layers.2.self_attn.q_proj\",\"type\":\"dora\",\"layer\":2,\"in_features\":16,"
            "\"out_features\":12,\"r\":4,\"alpha\":8,\"rslora\":false},"
            "{\"path\":\"model.layers.3.mlp.up_proj\",\"type\":\"dora\",\"layer\":3,\"r\":2,\"alpha\":2,"
            "\"rslora\":false}]}";
        S s[6] = {
            adapter(LAYER_PATH(2, "self_attn.q_proj.lora_A.weight"), EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 2, 0, 2,
                    4, 16, 610),
            adapter(LAYER_PATH(2, "self_attn.q_proj.lora_B.weight"), EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 2, 0, 2,
                    12, 4, 611),
            adapter(LAYER_PATH(2, "self_attn.q_proj.lora_magnitude_vector"), EXPERT_SECTION_DORA_MAGNITUDE,
                    EXPERT_DTYPE_F32, 2, 0, 1, 12, 0, 612),
            adapter(LAYER_PATH(3, "mlp.up_proj.lora_A.weight"), EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F16, 3, 1, 2, 2,
                    10, 613),
            adapter(LAYER_PATH(3, "mlp.up_proj.lora_B.weight"), EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F16, 3, 1, 2, 6, 2,
                    614),
            adapter(LAYER_PATH(3, "mlp.up_proj.lora_magnitude_vector"), EXPERT_SECTION_DORA_MAGNITUDE,
                    EXPERT_DTYPE_F16, 3, 1, 2, 1, 6, 615),
        };
        F f = {meta, s, 6, 64, 0, 0};
        add_built("adapter-dora", "two DoRA modules: magnitude [out] (F32) and magnitude [1, out] (F16)", &f, 1);
    }
    {
        const char *meta =
            "{\"format\":\"expert-v2\",\"name\":\"ia3\",\"version\":\"1.0.0\",\"modules\":["
            "{\"path\":\"model.layers.0.self_attn.k_proj\",\"type\":\"ia3\",\"layer\":0,\"in_features\":16,"
            "\"out_features\":12,\"feedforward\":false},"
            "{\"path\":\"model.layers.0.mlp.down_proj\",\"type\":\"ia3\",\"layer\":0,\"in_features\":32,"
            "\"out_features\":16,\"feedforward\":true}]}";
        S s[2] = {
            adapter(LAYER_PATH(0, "self_attn.k_proj.ia3_l"), EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F32, 0, 0, 2, 12,
                    1, 620),
            adapter(LAYER_PATH(0, "mlp.down_proj.ia3_l"), EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F32, 0, 1, 2, 1, 32,
                    621),
        };
        F f = {meta, s, 2, 64, 0, 0};
        add_built("adapter-ia3", "IA3 in both orientations: [out, 1] (feedforward false) and [1, in] (feedforward true)",
                  &f, 1);
    }
    {
        const char *meta = "{\"format\":\"expert-v2\",\"name\":\"osd\",\"version\":\"1.0.0\",\"modules\":["
                           "{\"path\":\"model.layers.0.self_attn.o_proj\",\"type\":\"osd\",\"layer\":0,"
                           "\"in_features\":16,\"out_features\":12,\"rank\":3,\"sparse_format\":\"csr\"}]}";
        S s[3] = {
            adapter(LAYER_PATH(0, "self_attn.o_proj.osd_U"), EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 0, 2, 12, 3,
                    630),
            adapter(LAYER_PATH(0, "self_attn.o_proj.osd_S"), EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 0, 1, 3, 0,
                    631),
            adapter(LAYER_PATH(0, "self_attn.o_proj.osd_Vt"), EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 3, 16,
                    632),
        };
        uint8_t *u = (uint8_t *)s[0].data; /* sparsified U: zeros are stored */
        for (size_t i = 0; i < s[0].len; i += 8)
            memset(u + i, 0, 4);
        F f = {meta, s, 3, 64, 0, 0};
        add_built("adapter-osd-lowrank", "OSD module without the sparse part: U [12, 3] (half zeros), S [3], Vt [3, 16]",
                  &f, 1);
    }
    {
        const char *meta = "{\"format\":\"expert-v2\",\"name\":\"osd-csr\",\"version\":\"1.0.0\",\"modules\":["
                           "{\"path\":\"model.layers.0.mlp.gate_proj\",\"type\":\"osd\",\"layer\":0,"
                           "\"in_features\":5,\"out_features\":4,\"rank\":2,\"sparse_format\":\"csr\"}]}";
        static const int32_t indptr[5] = {0, 1, 3, 3, 4};
        static const int32_t indices[4] = {2, 0, 4, 1};
        uint8_t *ip = A(20), *ix = A(16);
        for (int i = 0; i < 5; i++)
            wr32(ip + 4 * i, (uint32_t)indptr[i]);
        for (int i = 0; i < 4; i++)
            wr32(ix + 4 * i, (uint32_t)indices[i]);
        uint64_t d5 = 5, d4 = 4;
        S s[6] = {
            adapter(LAYER_PATH(0, "mlp.gate_proj.osd_U"), EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 0, 0, 2, 4, 2, 640),
            adapter(LAYER_PATH(0, "mlp.gate_proj.osd_S"), EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 0, 0, 1, 2, 0, 641),
            adapter(LAYER_PATH(0, "mlp.gate_proj.osd_Vt"), EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 0, 0, 2, 2, 5, 642),
            raw_sec(LAYER_PATH(0, "mlp.gate_proj.osd_indptr"), EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 1,
                    &d5, ip, 20),
            raw_sec(LAYER_PATH(0, "mlp.gate_proj.osd_indices"), EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 1,
                    &d4, ix, 16),
            adapter(LAYER_PATH(0, "mlp.gate_proj.osd_values"), EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F32, 0, 0,
                    1, 4, 0, 643),
        };
        for (int i = 3; i < 5; i++) {
            s[i].layer = 0;
            s[i].module = 0;
        }
        F f = {meta, s, 6, 64, 0, 0};
        add_built("adapter-osd-csr-i32",
                  "OSD module with a CSR part (I32 indptr [5] = 0,1,3,3,4, an empty row, I32 indices, F32 values)", &f,
                  1);
    }
    {
        const char *meta = "{\"format\":\"expert-v2\",\"name\":\"osd-sparse\",\"version\":\"1.0.0\",\"modules\":["
                           "{\"path\":\"model.layers.5.mlp.up_proj\",\"type\":\"osd\",\"layer\":5,"
                           "\"in_features\":7,\"out_features\":6,\"rank\":0,\"sparse_format\":\"csr\"}]}";
        static const int64_t indptr[7] = {0, 2, 2, 3, 5, 5, 6};
        static const int64_t indices[6] = {1, 5, 0, 2, 6, 3};
        uint8_t *ip = A(56), *ix = A(48);
        for (int i = 0; i < 7; i++)
            wr64(ip + 8 * i, (uint64_t)indptr[i]);
        for (int i = 0; i < 6; i++)
            wr64(ix + 8 * i, (uint64_t)indices[i]);
        uint64_t d7 = 7, d6 = 6;
        S s[6] = {
            adapter(LAYER_PATH(5, "mlp.up_proj.osd_U"), EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F32, 5, 0, 2, 6, 0, 0),
            adapter(LAYER_PATH(5, "mlp.up_proj.osd_S"), EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F32, 5, 0, 1, 0, 0, 0),
            adapter(LAYER_PATH(5, "mlp.up_proj.osd_Vt"), EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F32, 5, 0, 2, 0, 7, 0),
            raw_sec(LAYER_PATH(5, "mlp.up_proj.osd_indptr"), EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I64, 1,
                    &d7, ip, 56),
            raw_sec(LAYER_PATH(5, "mlp.up_proj.osd_indices"), EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I64, 1,
                    &d6, ix, 48),
            adapter(LAYER_PATH(5, "mlp.up_proj.osd_values"), EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F16, 5, 0,
                    1, 6, 0, 650),
        };
        for (int i = 3; i < 5; i++) {
            s[i].layer = 5;
            s[i].module = 0;
        }
        F f = {meta, s, 6, 64, 0, 0};
        add_built("adapter-osd-sparse-only-i64",
                  "OSD module with rank k = 0 (empty U [6, 0], S [0], Vt [0, 7]) and an I64 CSR part with empty rows",
                  &f, 1);
    }
    {
        const char *meta = "{\"format\":\"expert-v2\",\"name\":\"layer-null\",\"version\":\"1.0.0\",\"modules\":["
                           "{\"path\":\"lm_head\",\"type\":\"lora\",\"layer\":null,\"r\":1,\"alpha\":1,"
                           "\"rslora\":false},"
                           "{\"path\":\"model.layers.65535.mlp.down_proj\",\"type\":\"lora\",\"layer\":65535,\"r\":1,"
                           "\"alpha\":-2.5,\"rslora\":false}]}";
        S s[4] = {
            adapter("lm_head.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, EXPERT_LAYER_NONE, 0, 2, 1, 8,
                    660),
            adapter("lm_head.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, EXPERT_LAYER_NONE, 0, 2, 10, 1,
                    661),
            adapter("model.layers.65535.mlp.down_proj.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 65535, 1,
                    2, 1, 4, 662),
            adapter("model.layers.65535.mlp.down_proj.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 65535, 1,
                    2, 4, 1, 663),
        };
        F f = {meta, s, 4, 64, 0, 0};
        add_built("adapter-layer-null-and-65535",
                  "a LoRA module with layer null (sections layer NONE) and one at layer 65535 (the maximum), r = 1, "
                  "negative alpha",
                  &f, 1);
    }
    {
        /* every adapter type, soft prompt, TENSOR, FILE in one file, not in layer order */
        const char *meta =
            "{\"format\":\"expert-v2\",\"name\":\"all-types\",\"version\":\"2.3.4\","
            "\"description\":\"every section type\",\"created_by\":\"expert-vectors-gen\","
            "\"base_model\":{\"name\":\"Qwen/Qwen3-0.6B\",\"sha256\":\"\"},"
            "\"adapter_config\":\"adapter_config.json\",\"modules\":["
            "{\"path\":\"model.layers.1.self_attn.q_proj\",\"type\":\"lora\",\"layer\":1,\"r\":2,\"alpha\":4,"
            "\"rslora\":false},"
            "{\"path\":\"model.layers.0.self_attn.v_proj\",\"type\":\"dora\",\"layer\":0,\"r\":2,\"alpha\":4,"
            "\"rslora\":true},"
            "{\"path\":\"model.layers.0.mlp.up_proj\",\"type\":\"ia3\",\"layer\":0,\"feedforward\":false},"
            "{\"path\":\"model.layers.2.mlp.down_proj\",\"type\":\"osd\",\"layer\":2,\"rank\":1,"
            "\"sparse_format\":\"csr\"}]}";
        static const int32_t indptr[4] = {0, 1, 1, 2};
        static const int32_t indices[2] = {3, 0};
        uint8_t *ip = A(16), *ix = A(8);
        for (int i = 0; i < 4; i++)
            wr32(ip + 4 * i, (uint32_t)indptr[i]);
        for (int i = 0; i < 2; i++)
            wr32(ix + 4 * i, (uint32_t)indices[i]);
        uint64_t d4 = 4, d2 = 2;
        S s[15] = {
            adapter(LAYER_PATH(1, "self_attn.q_proj.lora_A.weight"), EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 1, 0, 2,
                    2, 6, 670),
            adapter(LAYER_PATH(1, "self_attn.q_proj.lora_B.weight"), EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 1, 0, 2,
                    6, 2, 671),
            adapter(LAYER_PATH(0, "self_attn.v_proj.lora_A.weight"), EXPERT_SECTION_LORA_A, EXPERT_DTYPE_BF16, 0, 1, 2,
                    2, 6, 672),
            adapter(LAYER_PATH(0, "self_attn.v_proj.lora_B.weight"), EXPERT_SECTION_LORA_B, EXPERT_DTYPE_BF16, 0, 1, 2,
                    3, 2, 673),
            adapter(LAYER_PATH(0, "self_attn.v_proj.lora_magnitude_vector"), EXPERT_SECTION_DORA_MAGNITUDE,
                    EXPERT_DTYPE_F32, 0, 1, 1, 3, 0, 674),
            adapter(LAYER_PATH(0, "mlp.up_proj.ia3_l"), EXPERT_SECTION_IA3_VECTOR, EXPERT_DTYPE_F16, 0, 2, 2, 9, 1,
                    675),
            adapter(LAYER_PATH(2, "mlp.down_proj.osd_U"), EXPERT_SECTION_OSD_U, EXPERT_DTYPE_F64, 2, 3, 2, 3, 1, 676),
            adapter(LAYER_PATH(2, "mlp.down_proj.osd_S"), EXPERT_SECTION_OSD_S, EXPERT_DTYPE_F64, 2, 3, 1, 1, 0, 677),
            adapter(LAYER_PATH(2, "mlp.down_proj.osd_Vt"), EXPERT_SECTION_OSD_VT, EXPERT_DTYPE_F64, 2, 3, 2, 1, 5, 678),
            raw_sec(LAYER_PATH(2, "mlp.down_proj.osd_indptr"), EXPERT_SECTION_OSD_SPARSE_INDPTR, EXPERT_DTYPE_I32, 1,
                    &d4, ip, 16),
            raw_sec(LAYER_PATH(2, "mlp.down_proj.osd_indices"), EXPERT_SECTION_OSD_SPARSE_INDICES, EXPERT_DTYPE_I32, 1,
                    &d2, ix, 8),
            adapter(LAYER_PATH(2, "mlp.down_proj.osd_values"), EXPERT_SECTION_OSD_SPARSE_VALUES, EXPERT_DTYPE_F64, 2, 3,
                    1, 2, 0, 679),
            tensor("prompt_embeddings", EXPERT_DTYPE_F32, 0, 2, 4, 16, 0, 0, 680),
            tensor(LAYER_PATH(1, "self_attn.q_proj.lora_B.bias"), EXPERT_DTYPE_F32, 0, 1, 6, 0, 0, 0, 681),
            file_sec("adapter_config.json", "{\"peft_type\":\"LORA\",\"r\":2}\n"),
        };
        for (int i = 9; i < 11; i++) {
            s[i].layer = 2;
            s[i].module = 3;
        }
        s[12].type = EXPERT_SECTION_SOFT_PROMPT;
        s[13].layer = 1;
        s[13].module = 0; /* a TENSOR may carry a module index (range-checked only) */
        F f = {meta, s, 15, 64, 0, 0};
        add_built("adapter-all-types",
                  "LoRA, DoRA (rsLoRA), IA3, OSD with CSR, SOFT_PROMPT, TENSOR with a module index and a FILE; "
                  "sections not in layer order; optional metadata members",
                  &f, 1);
    }
    {
        /* A PEFT package as a converter writes it (spec §9.5, §10.7). */
        const char *keyA = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        const char *keyB = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
        size_t stlen;
        const uint8_t *st = st_header(AS("{\"__metadata__\":{\"format\":\"pt\"},\"%s\":{\"dtype\":\"F32\","
                                         "\"shape\":[2,8],\"data_offsets\":[0,64]},\"%s\":{\"dtype\":\"F32\","
                                         "\"shape\":[6,2],\"data_offsets\":[64,112]}}",
                                         keyA, keyB),
                                      &stlen);
        const char *meta =
            "{\"format\":\"expert-v2\",\"name\":\"expert-sql\",\"version\":\"0.3.0\","
            "\"description\":\"SQL generation expert\",\"base_model\":{\"name\":\"F:/Node/hivellm/expert/models/"
            "Qwen3-0.6B\",\"sha256\":\"\"},\"adapter_config\":\"adapter_config.json\","
            "\"source_manifest\":\"manifest.json\",\"created_by\":\"expert-convert 2.0.0\",\"modules\":["
            "{\"path\":\"base_model.model.model.layers.0.self_attn.q_proj\",\"type\":\"lora\",\"layer\":0,"
            "\"in_features\":8,\"out_features\":6,\"r\":2,\"alpha\":4,\"rslora\":false}]}";
        S s[7] = {
            bytes_sec("adapter_model.safetensors", EXPERT_SECTION_SAFETENSORS_HEADER, st, stlen),
            adapter(keyA, EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 2, 8, 690),
            adapter(keyB, EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 6, 2, 691),
            file_sec("adapter_config.json",
                     "{\n  \"peft_type\": \"LORA\",\n  \"r\": 2,\n  \"lora_alpha\": 4,\n  \"target_modules\": "
                     "[\"q_proj\"]\n}\n"),
            file_sec("manifest.json", "{\n  \"name\": \"expert-sql\",\n  \"version\": \"0.3.0\",\n  "
                                      "\"schema_version\": \"2.0\"\n}"),
            file_sec("tokenizer/vocab.json", "{\"a\": 0, \"b\": 1}"),
            file_sec("README.md", "# expert-sql\n"),
        };
        F f = {meta, s, 7, 64, 0, 0};
        add_built("peft-package",
                  "a converted v1 package: SAFETENSORS_HEADER, LoRA tensors named by their keys, FILE sections "
                  "(nested path too), adapter_config and source_manifest cross-references; the safetensors file "
                  "rebuilds to its header and both tensors' bytes",
                  &f, 1);
        /* the rebuilt file, computed here from the bytes given to the writer */
        uint8_t d[32];
        char *dh = A(65);
        xb whole = {0};
        xb_put(&whole, st, stlen);
        xb_put(&whole, s[1].data, s[1].len);
        xb_put(&whole, s[2].data, s[2].len);
        sha256(whole.p, whole.n, d);
        hex(d, 32, dh);
        vec *v = &g_vecs[g_nvecs - 1];
        v->rebuild = "adapter_model.safetensors";
        v->rebuild_sha256 = dh;
        v->rebuild_length = whole.n;
        xb_free(&whole);

        /* the same package whose header also lists a tensor without a section */
        size_t st2len;
        const uint8_t *st2 = st_header(
            AS("{\"__metadata__\":{\"format\":\"pt\"},\"%s\":{\"dtype\":\"F32\",\"shape\":[2,8],"
               "\"data_offsets\":[0,64]},\"%s\":{\"dtype\":\"F32\",\"shape\":[6,2],\"data_offsets\":[64,112]},"
               "\"base_model.model.lm_head.extra\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[112,120]}}",
               keyA, keyB),
            &st2len);
        s[0] = bytes_sec("adapter_model.safetensors", EXPERT_SECTION_SAFETENSORS_HEADER, st2, st2len);
        xb b2;
        build_norm(&f, &b2);
        rebuild_reject_vec("rebuild-tensor-without-section",
                           "valid at every level, but the SAFETENSORS_HEADER lists a tensor that has no section: "
                           "rebuilding adapter_model.safetensors is BAD_SAFETENSORS (spec §10.7)",
                           &b2, "BAD_SAFETENSORS", "adapter_model.safetensors");
        xb_free(&b2);
    }
}

/* ------------------------------------------------------------ signed, spec example */

static void signed_files(const char *spec_dir)
{
    S s[3] = {
        adapter("model.layers.0.q_proj.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 2, 4, 700),
        adapter("model.layers.0.q_proj.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 3, 2, 701),
        file_sec("notes.txt", "signed by the RFC 8032 TEST 1 key\n"),
    };
    const char *meta = "{\"format\":\"expert-v2\",\"name\":\"signed\",\"version\":\"1.0.0\",\"modules\":["
                       "{\"path\":\"model.layers.0.q_proj\",\"type\":\"lora\",\"layer\":0,\"r\":2,\"alpha\":4,"
                       "\"rslora\":false}]}";
    F f = {meta, s, 3, 64, 0, 1};
    add_built("writer-signed",
              "signed by the reference writer with the RFC 8032 TEST 1 key, verified with its public key (writer "
              "output, libzstd metadata)",
              &f, 0);
    xb b;
    build_norm(&f, &b);
    accept_vec("signed", "signed with the RFC 8032 TEST 1 key; read with the public key", &b, KEY1_PUB);
    accept_vec("signed-read-without-key", "the same signed file read without a key: accepted, signed = true", &b, NULL);
    xb_free(&b);

    xb ex;
    if (file_load(AS("%s/example.expert", spec_dir), &ex) != 0)
        die("cannot read %s/example.expert", spec_dir);
    accept_vec("spec-example", "the worked example of spec §16 (example.expert), byte for byte", &ex, NULL);
    sign_buf(&ex, 1);
    uint8_t d[32];
    char h[65];
    sha256(ex.p, ex.n, d);
    hex(d, 32, h);
    if (strcmp(h, "2b640cd0092d09014b9b23487f685f77c17aef555f53bf08410cf618ae6e7731") != 0)
        die("the signed spec example does not match spec §16 (SHA-256 %s)", h);
    accept_vec("spec-example-signed",
               "spec §16 example signed with the TEST 1 key: the signature and file digest printed in spec §16", &ex,
               KEY1_PUB);
    xb_free(&ex);
}

/* ------------------------------------------------------------ limits at the maximum */

static void limits(void)
{
    {
        char *name = A(1025);
        memcpy(name, "n.", 2);
        for (int i = 2; i < 1024; i++)
            name[i] = (char)('a' + i % 26);
        S s = tensor(name, EXPERT_DTYPE_U8, 0, 1, 1, 0, 0, 0, 800);
        F f = {META_MIN, &s, 1, 64, 0, 0};
        add_built("limit-name-length-1024", "a section name of 1024 bytes (the maximum)", &f, 1);
    }
    {
        /* depth: top-level object 1, "extra" 2, then 30 nested containers */
        xb j = {0};
        xb_str(&j, "{\"format\":\"expert-v2\",\"name\":\"depth\",\"version\":\"1\",\"modules\":[],\"extra\":");
        for (int d = 2; d <= 32; d++)
            xb_str(&j, d % 2 ? "[" : "{\"k\":");
        xb_str(&j, "1");
        for (int d = 32; d >= 2; d--)
            xb_str(&j, d % 2 ? "]" : "}");
        xb_str(&j, "}");
        F f = {AS("%s", (char *)j.p), NULL, 0, 64, 0, 0};
        xb_free(&j);
        add_built("limit-metadata-depth-32", "metadata nested exactly 32 deep (objects and arrays alternating)", &f, 1);
    }
    {
        /* metadata_decoded_length = 2^24 exactly: JSON followed by whitespace */
        xb base;
        F f = {META_MIN, NULL, 0, 64, 0, 0};
        build(&f, &base);
        size_t n = 1u << 24;
        char *t = xmalloc(n);
        size_t ml = strlen(META_MIN);
        memcpy(t, META_MIN, ml);
        memset(t + ml, ' ', n - ml);
        t[n - 1] = '\n';
        xm_model m;
        model_parse(base.p, base.n, &m);
        model_set_meta_json(&m, t, n);
        xb_free(&base);
        xb b;
        xm_serialize(&m, NULL, &b);
        xm_free(&m);
        free(t);
        accept_vec("limit-metadata-decoded-16mib",
                   "metadata_decoded_length = 2^24 (the maximum): the JSON followed by whitespace, RLE blocks", &b,
                   NULL);
        xb_free(&b);
    }
    {
        /* every name hashes to slot 0 of 2048: one probe chain 1024 long.
         * Valid, so it must be accepted; a reader that walks the chain for
         * each name does n^2/2 comparisons, which at 65536 names is hours. */
        enum { FLOOD = 1024 };
        S *s = A(FLOOD * sizeof *s);
        uint32_t mask = xm_slot_count(FLOOD) - 1;
        int got = 0;
        for (uint32_t k = 0; got < FLOOD; k++) {
            char name[32];
            int len = snprintf(name, sizeof name, "flood.%08x", (unsigned)k);
            if ((fnv1a64(name, (size_t)len) & mask) != 0)
                continue;
            s[got] = tensor(AS("%s", name), EXPERT_DTYPE_U8, 0, 1, 1, 0, 0, 0, 820u + (unsigned)got);
            got++;
        }
        F f = {META_MIN, s, FLOOD, 64, 0, 0};
        add_built("index-one-probe-chain",
                  "1024 names whose FNV-1a hashes all select slot 0 of 2048: the canonical index is one probe "
                  "chain of 1024 (valid; a reader's index check must not cost a comparison per pair of names)",
                  &f, 1);
    }
    {
        S s[4];
        static const char *names[4] = {"name.\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac", "name.\xf4\x8f\xbf\xbf",
                                       "name.\xef\xbf\xbf\xee\x80\x80", "e\xcc\x81"};
        for (int i = 0; i < 4; i++)
            s[i] = tensor(names[i], EXPERT_DTYPE_U8, 0, 1, 2, 0, 0, 0, 810u + (unsigned)i);
        s[3].name = "\xc3\xa9"; /* composed é next to a decomposed e + U+0301: different names */
        S all[5] = {s[0], s[1], s[2], s[3], tensor("e\xcc\x81", EXPERT_DTYPE_U8, 0, 1, 2, 0, 0, 0, 815)};
        F f = {META_MIN, all, 5, 64, 0, 0};
        add_built("names-utf8",
                  "names with 2-, 3- and 4-byte UTF-8 (U+10FFFF, U+FFFF, U+E000) and é composed vs decomposed "
                  "(distinct names, byte comparison)",
                  &f, 1);
    }
}

/* ------------------------------------------------------------ forward compatibility */

static xb small_file(int with_module)
{
    S s[3] = {
        adapter("m.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 1, 4, 900),
        adapter("m.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 4, 1, 901),
        tensor("t.i32", EXPERT_DTYPE_I32, 0, 1, 3, 0, 0, 0, 902),
    };
    const char *meta = "{\"format\":\"expert-v2\",\"name\":\"fc\",\"version\":\"1.0.0\",\"modules\":["
                       "{\"path\":\"m\",\"type\":\"lora\",\"layer\":0,\"r\":1,\"alpha\":1,\"rslora\":false}]}";
    F f = {with_module ? meta : META_MIN, with_module ? s : s + 2, with_module ? 3 : 1, 64, 0, 0};
    xb b;
    build_norm(&f, &b);
    return b;
}

static void forward_compat(void)
{
    xb b = small_file(1);
    {
        xb c = dupb(&b);
        wr16(c.p + H_MINOR, 1);
        fix(&c);
        accept_vec("minor-version-1", "minor version 1: read as 2.0", &c, NULL);
        wr16(c.p + H_MINOR, 0xFFFF);
        fix(&c);
        accept_vec("minor-version-65535", "minor version 65535: read as 2.0", &c, NULL);
        xb_free(&c);
    }
    {
        static const uint32_t hs[2] = {264, 4096};
        for (int i = 0; i < 2; i++) {
            xm_model m;
            model_parse(b.p, b.n, &m);
            uint8_t ext[4096 - 256];
            for (size_t k = 0; k < sizeof ext; k++)
                ext[k] = (uint8_t)(0xA5 ^ k);
            xm_set_header_size(&m, hs[i], ext);
            xb c;
            xm_serialize(&m, NULL, &c);
            xm_free(&m);
            accept_vec(AS("header-size-%u", hs[i]),
                       AS("header_size %u: a %u-byte header extension of non-zero bytes, ignored but hashed", hs[i],
                          hs[i] - 256),
                       &c, NULL);
            xb_free(&c);
        }
    }
    {
        xb c = dupb(&b);
        wr32(c.p + H_FLAGS, 0xFFFF0000u);
        fix(&c);
        accept_vec("header-flags-must-ignore", "header flags 0xFFFF0000: every must-ignore bit (16-31) set", &c, NULL);
        xb_free(&c);
        c = dupb(&b);
        wr32(E(&c, 0) + T_FLAGS, 0x00010000u);
        wr32(E(&c, 1) + T_FLAGS, 0x80000000u);
        wr32(E(&c, 2) + T_FLAGS, 0xFFFF0000u);
        fix(&c);
        accept_vec("toc-flags-must-ignore", "TOC flags with must-ignore bits 16, 31 and 16-31 set", &c, NULL);
        xb_free(&c);
    }
    {
        /* must-ignore section types: every generic check still applies, no type or module rule */
        static const uint8_t blob[7] = {'.', '.', '/', 'x', 0, 0xFF, 1};
        uint64_t d3[3] = {2, 2, 2};
        S s[6] = {
            adapter("m.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 1, 4, 900),
            adapter("m.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 4, 1, 901),
            bytes_sec("../x", 0x8000, blob, 7),
            raw_sec("future.f32", 0xFFFF, EXPERT_DTYPE_F32, 3, d3, mkdata(EXPERT_DTYPE_F32, 8, 910), 32),
            adapter("future.lora_A-like", 0x8001, EXPERT_DTYPE_F32, 7, 0, 2, 9, 9, 911),
            bytes_sec("future/empty", 0xABCD, "", 0),
        };
        const char *meta = "{\"format\":\"expert-v2\",\"name\":\"fc\",\"version\":\"1.0.0\",\"modules\":["
                           "{\"path\":\"m\",\"type\":\"lora\",\"layer\":0,\"r\":1,\"alpha\":1,\"rslora\":false}]}";
        F f = {meta, s, 6, 64, 0, 0};
        add_built("section-types-must-ignore",
                  "must-ignore section types 0x8000 (BYTES named ../x), 0xFFFF (F32 rank 3), 0x8001 (module 0 of a "
                  "LoRA module, layer 7, a shape LORA_A could not have) and 0xABCD (empty)",
                  &f, 1);
    }
    xb_free(&b);
}

/* ------------------------------------------------------------ metadata edge cases */

/* impl_note != NULL: the file goes to the implementation-defined group. */
static void meta_vector(const char *name, const char *desc, const char *json, int crafted,
                        const char *impl_note)
{
    S s[2] = {
        adapter("m.lora_A.weight", EXPERT_SECTION_LORA_A, EXPERT_DTYPE_F32, 0, 0, 2, 1, 4, 900),
        adapter("m.lora_B.weight", EXPERT_SECTION_LORA_B, EXPERT_DTYPE_F32, 0, 0, 2, 4, 1, 901),
    };
    const char *base_meta = "{\"format\":\"expert-v2\",\"name\":\"m\",\"version\":\"1\",\"modules\":["
                            "{\"path\":\"m\",\"type\":\"lora\",\"layer\":0,\"r\":1,\"alpha\":1,\"rslora\":false}]}";
    F f = {crafted ? base_meta : json, s, 2, 64, 0, 0};
    xb b;
    build_norm(&f, &b);
    if (crafted) { /* the writer's own JSON check is not under test: splice the metadata in */
        xm_model m;
        model_parse(b.p, b.n, &m);
        model_set_meta_json(&m, json, strlen(json));
        xb_free(&b);
        xm_serialize(&m, NULL, &b);
        xm_free(&m);
    }
    if (impl_note != NULL)
        impl_vec(name, desc, &b, impl_note, NULL);
    else
        accept_vec(name, desc, &b, NULL);
    xb_free(&b);
}

static void meta_accept(const char *name, const char *desc, const char *json, int crafted)
{
    meta_vector(name, desc, json, crafted, NULL);
}

static void metadata_edge(void)
{
    meta_accept("metadata-unknown-members",
                "unknown members at top level, in base_model and in a module; members of other module types "
                "(feedforward, rank, sparse_format on a lora module) with values invalid for those types",
                "{\"format\":\"expert-v2\",\"name\":\"unknown-members\",\"version\":\"1.0.0\","
                "\"x-future\":{\"nested\":[1,2,{\"a\":null}]},\"base_model\":{\"name\":\"base\",\"revision\":\"abc\"},"
                "\"modules\":[{\"path\":\"m\",\"type\":\"lora\",\"layer\":0,\"r\":1,\"alpha\":1,\"rslora\":false,"
                "\"future_param\":1.5,\"feedforward\":\"not a bool: a member of ia3 modules only\",\"rank\":-1,"
                "\"sparse_format\":\"coo\"}],\"extra\":{\"anything\":true}}",
                1);
    const char *mod = "\"modules\":[{\"path\":\"m\",\"type\":\"lora\",\"layer\":0,\"r\":1,\"alpha\":1,"
                      "\"rslora\":false}]";
    meta_accept("metadata-whitespace",
                "metadata with leading and trailing whitespace (space, tab, CR, LF) and whitespace between tokens",
                AS(" \t\r\n{ \"format\" : \"expert-v2\" ,\n\t\"name\":\"ws\", \"version\" :\"1\",%s }\r\n \t", mod), 1);
    meta_accept("metadata-unicode-escapes",
                "strings with \\u escapes, a surrogate pair, escaped solidus and raw UTF-8; keys \"\\u00e9\" and "
                "\"e\\u0301\" differ",
                AS("{\"format\":\"expert-v2\",\"name\":\"\\u0075nicode \\ud83d\\ude00 \\/ \xe6\x97\xa5\","
                   "\"version\":\"1\",%s,\"extra\":{\"\\u00e9\":1,\"e\\u0301\":2,\"tab\\t\":\"\\\"\\\\\\b\\f\\n\\r\"}}",
                   mod),
                1);
    meta_accept("metadata-layer-minus-zero", "module layer written as -0 (an integer denoting 0, spec §9.3)",
                "{\"format\":\"expert-v2\",\"name\":\"m\",\"version\":\"1\",\"modules\":[{\"path\":\"m\","
                "\"type\":\"lora\",\"layer\":-0,\"r\":1,\"alpha\":1,\"rslora\":false}]}",
                1);
    meta_accept("metadata-alpha-number-forms", "alpha written with an exponent (1E0) and r as a plain integer",
                "{\"format\":\"expert-v2\",\"name\":\"m\",\"version\":\"1\",\"modules\":[{\"path\":\"m\","
                "\"type\":\"lora\",\"layer\":0,\"r\":1,\"alpha\":1E0,\"rslora\":false}]}",
                1);
    meta_vector("metadata-extra-big-integer",
                "an integer beyond 64 bits in extra (valid JSON, finite as a binary64)",
                AS("{\"format\":\"expert-v2\",\"name\":\"m\",\"version\":\"1\",%s,"
                   "\"extra\":{\"big\":123456789012345678901234567890}}",
                   mod),
                1, "spec §9.2: integer tokens outside the signed 64-bit range MAY be rejected (BAD_METADATA)");
    meta_accept("metadata-extra-float-underflow", "a number that underflows to 0 as a binary64 (1e-400) in extra",
                AS("{\"format\":\"expert-v2\",\"name\":\"m\",\"version\":\"1\",%s,\"extra\":{\"tiny\":1e-400}}", mod),
                1);
    meta_accept("metadata-extra-max-double", "the largest finite binary64 (1.7976931348623157e308) in extra",
                AS("{\"format\":\"expert-v2\",\"name\":\"m\",\"version\":\"1\",%s,"
                   "\"extra\":{\"max\":1.7976931348623157e308,\"neg\":-1.7976931348623157e308}}",
                   mod),
                1);

    /* metadata frames: a content checksum that matches; a non-single-segment frame */
    const char *json = "{\"format\":\"expert-v2\",\"name\":\"frame\",\"version\":\"1\",\"modules\":[]}";
    for (int k = 0; k < 2; k++) {
        xb base;
        F f = {META_MIN, NULL, 0, 64, 0, 0};
        build(&f, &base);
        xm_model m;
        model_parse(base.p, base.n, &m);
        xb_free(&base);
        xb fr = {0};
        zf_opts o = {0};
        if (k == 0)
            o.checksum = 1;
        else
            o.window_log = 20;
        frame(&fr, (const uint8_t *)json, strlen(json), &o);
        xm_set_meta_stored(&m, fr.p, fr.n, strlen(json));
        xb_free(&fr);
        xb b;
        xm_serialize(&m, NULL, &b);
        xm_free(&m);
        accept_vec(k == 0 ? "metadata-frame-checksum" : "metadata-frame-window-descriptor",
                   k == 0 ? "metadata frame with a correct content checksum (allowed, spec §7.3)"
                          : "metadata frame that is not single-segment: a 1 MiB window descriptor and a 4-byte FCS",
                   &b, NULL);
        xb_free(&b);
    }
}

/* ------------------------------------------------------------ non-canonical layouts */

static void layouts(void)
{
    xb b = base_b();
    xm_model m;
    {
        xm_layout L = {0};
        L.regions_first = 1;
        model_parse(b.p, b.n, &m);
        xb c;
        xm_serialize(&m, &L, &c);
        xm_free(&m);
        accept_vec("layout-regions-first",
                   "metadata, TOC, index and strings before the sections (not the canonical order, spec §2.3)", &c,
                   NULL);
        xb_free(&c);
    }
    {
        xm_layout L = {0};
        L.reverse_sections = 1;
        model_parse(b.p, b.n, &m);
        xb c;
        xm_serialize(&m, &L, &c);
        xm_free(&m);
        accept_vec("layout-sections-reversed", "sections stored in the reverse of TOC order", &c, NULL);
        xb_free(&c);
    }
    {
        xm_layout L = {0};
        L.gap_strings = 7;
        model_parse(b.p, b.n, &m);
        xb c;
        xm_serialize(&m, &L, &c);
        xm_free(&m);
        accept_vec("layout-strings-gap-7",
                   "the strings region starts 7 zero bytes after the index (the most the gap rule allows)", &c, NULL);
        xb_free(&c);
    }
    {
        /* names share bytes; the strings region has bytes that belong to no name */
        S s[3] = {
            tensor("ab.weight", EXPERT_DTYPE_U8, 0, 1, 2, 0, 0, 0, 950),
            tensor("weight", EXPERT_DTYPE_U8, 0, 1, 3, 0, 0, 0, 951),
            tensor("b.weight", EXPERT_DTYPE_U8, 0, 1, 4, 0, 0, 0, 952),
        };
        F f = {META_MIN, s, 3, 64, 0, 0};
        xb c;
        build_norm(&f, &c);
        model_parse(c.p, c.n, &m);
        xb_free(&c);
        static const char str[] = "unused:ab.weight:more-unused";
        free(m.strings);
        m.strings_len = sizeof str - 1;
        m.strings = xmalloc(m.strings_len);
        memcpy(m.strings, str, m.strings_len);
        wr32(m.sec[0].entry + T_NAME_OFF, 7);  /* "ab.weight" */
        wr32(m.sec[1].entry + T_NAME_OFF, 10); /* "weight", inside it */
        wr32(m.sec[2].entry + T_NAME_OFF, 8);  /* "b.weight", inside it */
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        accept_vec("layout-strings-shared-and-unused",
                   "names overlapping in the strings region (\"ab.weight\", \"b.weight\", \"weight\") and strings bytes "
                   "that belong to no name",
                   &c, NULL);
        xb_free(&c);
    }
    {
        S s[2] = {
            tensor("empty", EXPERT_DTYPE_F32, 0, 1, 0, 0, 0, 0, 0),
            tensor("x", EXPERT_DTYPE_F32, 0, 1, 3, 0, 0, 0, 960),
        };
        F f = {META_MIN, s, 2, 64, 0, 0};
        xb c;
        build_norm(&f, &c);
        wr64(E(&c, 0) + T_OFFSET, 256); /* inside section 1's bytes: empty sections are not extents */
        fix(&c);
        accept_vec("layout-empty-section-nonzero-offset",
                   "an empty section at offset 256 (aligned, <= file_length, inside another section's bytes: empty "
                   "sections occupy nothing)",
                   &c, NULL);
        xb_free(&c);
    }
    xb_free(&b);
}

/* ------------------------------------------------------------ hand-built zstd frames */

static xb z_variant(int codec, int frame, const zf_opts *o, void (*mangle)(xb *, int))
{
    xb b = base_z(codec);
    xm_model m;
    model_parse(b.p, b.n, &m);
    xb_free(&b);
    uint8_t *data = mkdata(EXPERT_DTYPE_F32, 20000, 201);
    xb st = {0};
    framed(&st, data, 80000, 65536, 4, codec == 2, frame, o, mangle);
    xm_set_section(&m, 0, st.p, st.n);
    xb_free(&st);
    xm_serialize(&m, NULL, &b);
    xm_free(&m);
    return b;
}

static void frames_by_hand(void)
{
    xb b = base_z(1);
    accept_vec("frame-raw-blocks",
               "zstd sections whose frames are raw blocks (2 frames: 65536 + 14464 bytes, 1-byte and 2-byte FCS)", &b,
               NULL);
    xb_free(&b);
    b = base_z(2);
    accept_vec("frame-shuffle-raw-blocks",
               "shuffle+zstd sections built by hand (raw blocks): F32 in 2 frames, the last shuffled with its own N; "
               "U16 in one frame",
               &b, NULL);
    xb_free(&b);
    {
        /* long runs: RLE blocks */
        S s = tensor("runs.u8", EXPERT_DTYPE_U8, 1, 1, 300000, 0, 0, 0, 0);
        uint8_t *d = (uint8_t *)s.data;
        for (size_t i = 0; i < s.len; i++)
            d[i] = (uint8_t)((i / 40000) * 17);
        F f = {META_MIN, &s, 1, 64, 65536, 0};
        xb c;
        build(&f, &c);
        xm_model m;
        model_parse(c.p, c.n, &m);
        size_t ml;
        char *t = meta_text(c.p, c.n, &ml);
        model_set_meta_json(&m, t, ml);
        xb_free(&c);
        xb st = {0};
        framed(&st, d, s.len, 65536, 1, 0, -1, NULL, NULL);
        xm_set_section(&m, 0, st.p, st.n);
        xb_free(&st);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        accept_vec("frame-rle-blocks", "a zstd section of 5 frames made of RLE blocks", &c, NULL);
        xb_free(&c);
    }
    struct {
        const char *name, *desc;
        zf_opts o;
        int frame;
    } v[] = {
        {"frame-window-descriptor", "frame 1 is not single-segment: a 128 KiB window descriptor and a 4-byte FCS",
         {.window_log = 17}, 1},
        {"frame-window-128mib", "frame 0 declares a window of 2^27 bytes (the maximum a reader must accept)",
         {.window_log = 27}, 0},
        {"frame-fcs-8-bytes", "frame 1 carries its content size in an 8-byte field", {.fcs_bytes = 8}, 1},
        {"frame-fcs-4-bytes", "frame 1 carries its content size in a 4-byte field", {.fcs_bytes = 4}, 1},
        {"frame-checksum", "frame 1 has a correct content checksum (allowed, spec §7.3)", {.checksum = 1}, 1},
        {"frame-raw-blocks-small", "frame 0 made of 1000-byte raw blocks", {.block_max = 1000}, 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        b = z_variant(1, v[i].frame, &v[i].o, NULL);
        accept_vec(v[i].name, v[i].desc, &b, NULL);
        xb_free(&b);
    }
    {
        /* spec §7.4: three F32 values 1.0, 2.0, -0.5 as shuffle+zstd, the exact bytes printed in the spec */
        static const uint8_t plain[12] = {0, 0, 0x80, 0x3F, 0, 0, 0, 0x40, 0, 0, 0, 0xBF};
        static const uint8_t stored[25] = {0x15, 0, 0, 0, 0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x0C, 0x61, 0, 0,
                                           0,    0, 0, 0, 0,    0,    0x80, 0,    0,    0x3F, 0x40, 0xBF};
        S s = tensor("spec.shuffle", EXPERT_DTYPE_F32, 2, 1, 3, 0, 0, 0, 0);
        memcpy((uint8_t *)s.data, plain, 12);
        F f = {META_MIN, &s, 1, 64, 65536, 0};
        xb c;
        build(&f, &c);
        xm_model m;
        model_parse(c.p, c.n, &m);
        size_t ml;
        char *t = meta_text(c.p, c.n, &ml);
        model_set_meta_json(&m, t, ml);
        xb_free(&c);
        xm_set_section(&m, 0, stored, sizeof stored);
        xm_serialize(&m, NULL, &c);
        xm_free(&m);
        accept_vec("spec-shuffle-example", "the shuffle+zstd section bytes of spec §7.4 (1.0, 2.0, -0.5 as F32)", &c,
                   NULL);
        xb_free(&c);
    }
}

void gen_accept(const char *spec_dir)
{
    codec_dtype();
    alignment_frames_shapes();
    adapters();
    signed_files(spec_dir);
    limits();
    forward_compat();
    metadata_edge();
    layouts();
    frames_by_hand();
}
