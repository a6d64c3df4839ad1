/* fuzz_seedgen — writes seed inputs for every fuzz target from .expert files
 * (vectors, samples, files written here with the library writer):
 *   OUT/open, OUT/verify   the files themselves (up to 1 MiB)
 *   OUT/metadata           their decoded metadata JSON, plus hand-written edge cases
 *   OUT/decode             8 claim bytes + stored bytes of each section (up to 256 KiB)
 *   OUT/safetensors        adapter_model.safetensors rebuilt from SAFETENSORS_HEADER sections
 * usage: fuzz-seedgen OUTDIR FILE.expert... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "expert.h"
#include "expert_v1.h"
#include "xpmodel.h"

static int g_count;

static void put(const char *dir, const char *target, const char *tag, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, target);
    mkdir(path, 0755);
    uint8_t d[32];
    sha256(p, n, d);
    snprintf(path, sizeof path, "%s/%s/%s-%02x%02x%02x%02x%02x%02x", dir, target, tag, d[0], d[1], d[2], d[3], d[4], d[5]);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(p, 1, n, f);
    fclose(f);
    g_count++;
}

static uint8_t *load(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    xb b = {0};
    uint8_t tmp[65536];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
        xb_put(&b, tmp, k);
    fclose(f);
    *n = b.n;
    return b.p ? b.p : calloc(1, 1);
}

static const char *k_json[] = {
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"modules\":[]}",
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"adapter_config\":\"adapter_config.json\","
    "\"modules\":[{\"path\":\"m\",\"type\":\"lora\",\"layer\":null,\"r\":1,\"alpha\":1.5,\"rslora\":false}]}",
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"modules\":[{\"path\":\"o\",\"type\":\"osd\","
    "\"layer\":3,\"rank\":0,\"sparse_format\":\"csr\",\"in_features\":4,\"out_features\":4}]}",
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"modules\":[{\"path\":\"i\",\"type\":\"ia3\","
    "\"layer\":0,\"feedforward\":true}],\"extra\":{\"a\":[1,2.5e3,-0,true,false,null,\"\\u00e9\\ud83d\\ude00\"]}}",
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"modules\":[],\"base_model\":{\"name\":\"F:/x\",\"sha256\":\"\"},"
    "\"source_manifest\":\"manifest.json\",\"description\":\"d\",\"created_by\":\"c\"}",
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"modules\":[],\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
    "{\"a\":1,\"a\":2}",
    "{\"format\":\"expert-v2\",\"name\":\"n\",\"version\":\"1\",\"modules\":[],\"n\":1e999}",
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fuzz-seedgen OUTDIR FILE.expert...\n");
        return 64;
    }
    const char *out = argv[1];
    mkdir(out, 0755);
    for (size_t k = 0; k < sizeof k_json / sizeof k_json[0]; k++)
        put(out, "metadata", "hand", k_json[k], strlen(k_json[k]));
    /* a minimal safetensors file */
    static const char st_hdr[] = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    xb st = {0};
    uint8_t len8[8];
    wr64(len8, sizeof st_hdr - 1);
    xb_put(&st, len8, 8);
    xb_put(&st, st_hdr, sizeof st_hdr - 1);
    xb_zero(&st, 8);
    put(out, "safetensors", "hand", st.p, st.n);
    xb_free(&st);

    for (int i = 2; i < argc; i++) {
        size_t n = 0;
        uint8_t *p = load(argv[i], &n);
        if (!p)
            continue;
        if (n <= (1u << 20)) {
            put(out, "open", "file", p, n);
            put(out, "verify", "file", p, n);
        }
        expert_reader *r = NULL;
        expert_error e;
        if (expert_open_memory(p, n, NULL, &r, &e) != EXPERT_OK) {
            free(p);
            continue;
        }
        size_t jl;
        const char *json = expert_metadata_json(r, &jl);
        if (jl <= (1u << 20))
            put(out, "metadata", "meta", json, jl);
        for (uint32_t s = 0; s < expert_section_count(r); s++) {
            expert_section_info si;
            expert_section(r, s, &si);
            if (si.stored_length <= (256u << 10)) {
                xb d = {0};
                uint8_t claim[8] = {si.codec, si.dtype, 0, (uint8_t)(s & 3), 0, 0, 0, 0};
                for (uint32_t f = si.frame_size; f > (1u << 16); f >>= 1)
                    claim[2]++;
                wr32(claim + 4, (uint32_t)si.decoded_length);
                xb_put(&d, claim, 8);
                xb_put(&d, p + si.offset, (size_t)si.stored_length);
                put(out, "decode", "sec", d.p, d.n);
                xb_free(&d);
            }
            if (si.type == EXPERT_SECTION_SAFETENSORS_HEADER) {
                void *sd = NULL;
                size_t sl = 0;
                if (expert_file_rebuild(r, s, &sd, &sl, &e) == EXPERT_OK && sl <= (1u << 20))
                    put(out, "safetensors", "st", sd, sl);
                expert_v1_free(sd);
            }
        }
        expert_close(r);
        free(p);
    }
    printf("%d seeds written to %s\n", g_count, out);
    return 0;
}
