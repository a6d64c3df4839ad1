/* gen_write.c — write requests (group write), conformance/PROTOCOL.md. */
#include "gen.h"

#include <stdio.h>
#include <string.h>

typedef struct wsec {
    const char *name;
    uint16_t type;
    uint8_t codec, dtype, rank;
    uint64_t dims[4];
    uint32_t layer, module;
    const uint8_t *data;
    size_t len;
    int as_file; /* data_file instead of data_hex */
} wsec;

static wsec ws_tensor(const char *name, uint16_t type, uint8_t codec, uint8_t dtype, uint8_t rank, uint64_t d0,
                      uint64_t d1, uint64_t d2, uint64_t d3, uint64_t seed)
{
    wsec w;
    memset(&w, 0, sizeof w);
    w.name = name;
    w.type = type;
    w.codec = codec;
    w.dtype = dtype;
    w.rank = rank;
    uint64_t d[4] = {d0, d1, d2, d3}, numel = 1;
    for (int k = 0; k < rank; k++) {
        w.dims[k] = d[k];
        numel *= d[k];
    }
    w.layer = EXPERT_LAYER_NONE;
    w.module = EXPERT_MODULE_NONE;
    w.len = (size_t)(numel * esize(dtype));
    w.data = mkdata(dtype, numel, seed);
    return w;
}

static void request(const char *name, const char *desc, uint32_t alignment, uint32_t frame_size, const char *meta,
                    const wsec *s, int n, int sign)
{
    xb o = {0};
    xb_printf(&o, "{\n  \"alignment\": %u,\n", alignment);
    if (frame_size)
        xb_printf(&o, "  \"frame_size\": %u,\n", frame_size);
    if (sign)
        xb_str(&o, "  \"signing_key\": \"../" KEY1_PRIV "\",\n");
    xb_printf(&o, "  \"metadata\": %s,\n  \"sections\": [", meta);
    for (int i = 0; i < n; i++) {
        xb_str(&o, i ? ",\n    {\"name\": " : "\n    {\"name\": ");
        json_str(&o, (const uint8_t *)s[i].name, strlen(s[i].name));
        xb_printf(&o, ", \"type\": %u, \"codec\": %u, \"dtype\": %u, \"shape\": [", s[i].type, s[i].codec,
                   s[i].dtype);
        for (int k = 0; k < s[i].rank; k++)
            xb_printf(&o, "%s%llu", k ? ", " : "", (unsigned long long)s[i].dims[k]);
        xb_str(&o, "], \"layer\": ");
        if (s[i].layer == EXPERT_LAYER_NONE)
            xb_str(&o, "null");
        else
            xb_printf(&o, "%u", s[i].layer);
        xb_str(&o, ", \"module\": ");
        if (s[i].module == EXPERT_MODULE_NONE)
            xb_str(&o, "null");
        else
            xb_printf(&o, "%u", s[i].module);
        xb_str(&o, ", \"flags\": 0, ");
        if (s[i].as_file) {
            const char *rel = AS("%s.%d.bin", name, i);
            out_write(AS("write/%s", rel), s[i].data, s[i].len);
            xb_printf(&o, "\"data_file\": \"%s\"}", rel);
        } else {
            xb_str(&o, "\"data_hex\": \"");
            for (size_t k = 0; k < s[i].len; k++)
                xb_printf(&o, "%02x", s[i].data[k]);
            xb_str(&o, "\"}");
        }
    }
    xb_str(&o, n ? "\n  ]\n}\n" : "]\n}\n");
    write_vec(name, desc, (const char *)o.p, sign ? KEY1_PUB : NULL);
    xb_free(&o);
}

static const char *meta_named(const char *name)
{
    return AS("{\"format\": \"expert-v2\", \"name\": \"%s\", \"version\": \"1.0.0\", \"modules\": []}", name);
}

void gen_write(void)
{
    static const char *cn[3] = {"raw", "zstd", "shuffle"};
    for (int c = 0; c < 3; c++) {
        wsec s[14];
        for (uint8_t d = 0; d < 14; d++) {
            if (d == EXPERT_DTYPE_BYTES)
                s[d] = ws_tensor("blob.bin", EXPERT_SECTION_FILE, (uint8_t)c, d, 1, 200, 0, 0, 0, 3000u + d);
            else
                s[d] = ws_tensor(AS("t.%s", dtype_lc(d)), EXPERT_SECTION_TENSOR, (uint8_t)c, d, 2, 6, 10, 0, 0,
                                 3000u + 20u * c + d);
        }
        request(AS("codec-%s-all-dtypes", cn[c]),
                AS("14 sections, one per dtype (BYTES as a FILE), all with codec %s", expert_codec_name((uint32_t)c)),
                64, 0, meta_named(AS("write-%s", cn[c])), s, 14, 0);
    }
    static const uint32_t al[2] = {256, 4096};
    for (int i = 0; i < 2; i++) {
        wsec s[3] = {
            ws_tensor("a", EXPERT_SECTION_TENSOR, 0, EXPERT_DTYPE_U8, 1, 7, 0, 0, 0, 3100),
            ws_tensor("b", EXPERT_SECTION_TENSOR, 1, EXPERT_DTYPE_F32, 1, 33, 0, 0, 0, 3101),
            ws_tensor("c", EXPERT_SECTION_TENSOR, 2, EXPERT_DTYPE_F16, 2, 3, 3, 0, 0, 3102),
        };
        request(AS("alignment-%u", al[i]), AS("three sections (raw, zstd, shuffle) with alignment %u", al[i]), al[i],
                0, meta_named("align"), s, 3, 0);
    }
    {
        wsec s[2] = {
            ws_tensor("big.f32", EXPERT_SECTION_TENSOR, 1, EXPERT_DTYPE_F32, 2, 200, 200, 0, 0, 3200),
            ws_tensor("big.bf16", EXPERT_SECTION_TENSOR, 2, EXPERT_DTYPE_BF16, 1, 70001, 0, 0, 0, 3201),
        };
        s[0].as_file = s[1].as_file = 1;
        request("frames-multi", "frame_size 65536: F32 [200, 200] zstd (3 frames) and BF16 [70001] shuffle (3 frames, "
                                "the last short); data in files",
                64, 65536, meta_named("frames"), s, 2, 0);
    }
    {
        wsec s[2] = {
            ws_tensor("w.lora_A.weight", EXPERT_SECTION_LORA_A, 0, EXPERT_DTYPE_F32, 2, 2, 4, 0, 0, 3300),
            ws_tensor("w.lora_B.weight", EXPERT_SECTION_LORA_B, 0, EXPERT_DTYPE_F32, 2, 3, 2, 0, 0, 3301),
        };
        for (int i = 0; i < 2; i++) {
            s[i].layer = 0;
            s[i].module = 0;
        }
        request("signed", "a LoRA module signed with the RFC 8032 TEST 1 key (signing_key)", 64, 0,
                "{\"format\": \"expert-v2\", \"name\": \"signed\", \"version\": \"1.0.0\", \"modules\": [{\"path\": "
                "\"w\", \"type\": \"lora\", \"layer\": 0, \"r\": 2, \"alpha\": 4, \"rslora\": false}]}",
                s, 2, 1);
    }
    request("empty-expert", "no sections", 64, 0, meta_named("empty"), NULL, 0, 0);
    {
        wsec s[5] = {
            ws_tensor("empty.raw", EXPERT_SECTION_TENSOR, 0, EXPERT_DTYPE_F32, 2, 0, 4, 0, 0, 0),
            ws_tensor("empty.zstd", EXPERT_SECTION_TENSOR, 1, EXPERT_DTYPE_I16, 1, 0, 0, 0, 0, 0),
            ws_tensor("empty.shuffle", EXPERT_SECTION_TENSOR, 2, EXPERT_DTYPE_F64, 1, 0, 0, 0, 0, 0),
            ws_tensor("scalar", EXPERT_SECTION_TENSOR, 1, EXPERT_DTYPE_F64, 0, 0, 0, 0, 0, 3400),
            ws_tensor("rank4", EXPERT_SECTION_TENSOR, 2, EXPERT_DTYPE_I32, 4, 2, 1, 3, 2, 3401),
        };
        request("empty-scalar-rank4", "empty sections in every codec, a rank-0 scalar and a rank-4 tensor", 64, 0,
                meta_named("shapes"), s, 5, 0);
    }
    {
        static const int32_t ip[4] = {0, 2, 2, 3}, ix[3] = {0, 4, 1};
        uint8_t *ipb = A(16), *ixb = A(12);
        for (int i = 0; i < 4; i++)
            wr32(ipb + 4 * i, (uint32_t)ip[i]);
        for (int i = 0; i < 3; i++)
            wr32(ixb + 4 * i, (uint32_t)ix[i]);
        wsec s[13] = {
            ws_tensor("l.lora_A.weight", EXPERT_SECTION_LORA_A, 0, EXPERT_DTYPE_F32, 2, 2, 5, 0, 0, 3500),
            ws_tensor("l.lora_B.weight", EXPERT_SECTION_LORA_B, 0, EXPERT_DTYPE_F32, 2, 3, 2, 0, 0, 3501),
            ws_tensor("d.lora_A.weight", EXPERT_SECTION_LORA_A, 1, EXPERT_DTYPE_BF16, 2, 2, 5, 0, 0, 3502),
            ws_tensor("d.lora_B.weight", EXPERT_SECTION_LORA_B, 1, EXPERT_DTYPE_BF16, 2, 3, 2, 0, 0, 3503),
            ws_tensor("d.lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE, 2, EXPERT_DTYPE_F32, 2, 1, 3, 0, 0, 3504),
            ws_tensor("i.ia3_l", EXPERT_SECTION_IA3_VECTOR, 0, EXPERT_DTYPE_F16, 2, 1, 5, 0, 0, 3505),
            ws_tensor("o.osd_U", EXPERT_SECTION_OSD_U, 0, EXPERT_DTYPE_F32, 2, 3, 1, 0, 0, 3506),
            ws_tensor("o.osd_S", EXPERT_SECTION_OSD_S, 0, EXPERT_DTYPE_F32, 1, 1, 0, 0, 0, 3507),
            ws_tensor("o.osd_Vt", EXPERT_SECTION_OSD_VT, 0, EXPERT_DTYPE_F32, 2, 1, 5, 0, 0, 3508),
            ws_tensor("o.osd_indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, 0, EXPERT_DTYPE_I32, 1, 4, 0, 0, 0, 0),
            ws_tensor("o.osd_indices", EXPERT_SECTION_OSD_SPARSE_INDICES, 0, EXPERT_DTYPE_I32, 1, 3, 0, 0, 0, 0),
            ws_tensor("o.osd_values", EXPERT_SECTION_OSD_SPARSE_VALUES, 0, EXPERT_DTYPE_F32, 1, 3, 0, 0, 0, 3509),
            ws_tensor("adapter_config.json", EXPERT_SECTION_FILE, 0, EXPERT_DTYPE_BYTES, 1, 40, 0, 0, 0, 3510),
        };
        s[9].data = ipb;
        s[10].data = ixb;
        static const uint32_t mod[12] = {0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3};
        static const uint32_t lay[12] = {0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2};
        for (int i = 0; i < 12; i++) {
            s[i].module = mod[i];
            s[i].layer = lay[i];
        }
        request("adapters-all-types",
                "LoRA, DoRA, IA3 (feedforward) and OSD with CSR modules, mixed codecs, a FILE named by adapter_config",
                64, 0,
                "{\"format\": \"expert-v2\", \"name\": \"adapters\", \"version\": \"0.1.0\", \"description\": "
                "\"all adapter types\", \"adapter_config\": \"adapter_config.json\", \"base_model\": {\"name\": "
                "\"base\"}, \"modules\": ["
                "{\"path\": \"l\", \"type\": \"lora\", \"layer\": 0, \"r\": 2, \"alpha\": 16, \"rslora\": true, "
                "\"in_features\": 5, \"out_features\": 3},"
                "{\"path\": \"d\", \"type\": \"dora\", \"layer\": 1, \"r\": 2, \"alpha\": 0.5, \"rslora\": false},"
                "{\"path\": \"i\", \"type\": \"ia3\", \"layer\": 1, \"feedforward\": true},"
                "{\"path\": \"o\", \"type\": \"osd\", \"layer\": 2, \"rank\": 1, \"sparse_format\": \"csr\", "
                "\"in_features\": 5, \"out_features\": 3}]}",
                s, 13, 0);
    }
    {
        wsec s[3] = {
            ws_tensor("name.\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80", EXPERT_SECTION_TENSOR, 0, EXPERT_DTYPE_U8, 1, 3, 0, 0,
                      0, 3600),
            ws_tensor("docs/r\xc3\xa9sum\xc3\xa9.txt", EXPERT_SECTION_FILE, 1, EXPERT_DTYPE_BYTES, 1, 30, 0, 0, 0,
                      3601),
            ws_tensor("\"quoted\\name\"", EXPERT_SECTION_TENSOR, 0, EXPERT_DTYPE_I8, 1, 2, 0, 0, 0, 3602),
        };
        request("unicode-names", "names with multi-byte UTF-8, quotes and a backslash; metadata with non-ASCII text",
                64, 0,
                "{\"format\": \"expert-v2\", \"name\": \"unicode \xe2\x9c\x93\", \"version\": \"1\", \"description\": "
                "\"caf\\u00e9 \\ud83d\\ude00\", \"modules\": [], \"extra\": {\"k\": [1, 2.5, null, true, \"x\"]}}",
                s, 3, 0);
    }
    {
        wsec s[100];
        for (int i = 0; i < 100; i++)
            s[i] = ws_tensor(AS("s%03d", i), EXPERT_SECTION_TENSOR, (uint8_t)(i % 3), (uint8_t)(1 + i % 13), 1,
                             (uint64_t)(i % 7), 0, 0, 0, 3700u + (unsigned)i);
        request("many-sections", "100 small sections of every codec and dtype (some empty)", 64, 0,
                meta_named("many"), s, 100, 0);
    }
}
