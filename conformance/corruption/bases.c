/* bases.c — the valid files the corruption suite mutates: files written with
 * the library writer (every codec, dtype family, module type, alignment,
 * empty and must-ignore sections, signed and unsigned), sample experts from
 * expert-gen-sample + expert-cli pack, and the accept-group golden vectors
 * of vectors/manifest.json when present. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "corrupt.h"

uint8_t *aligned_dup(const void *p, size_t n)
{
    void *d = NULL;
    if (posix_memalign(&d, 4096, n ? n : 1) != 0)
        abort();
    if (n)
        memcpy(d, p, n);
    return d;
}

static int load_file(const char *path, uint8_t **out, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    xb b = {0};
    uint8_t tmp[65536];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0)
        xb_put(&b, tmp, k);
    fclose(f);
    *out = aligned_dup(b.p, b.n);
    *n = b.n;
    xb_free(&b);
    return 0;
}

char *meta_json_of(const base *b, size_t *len)
{
    size_t n = (size_t)b->m.meta_dec;
    char *j = xm_alloc(n + 1);
    size_t r = ZSTD_decompress(j, n, b->m.meta, b->m.meta_len);
    if (ZSTD_isError(r) || r != n) {
        free(j);
        return NULL;
    }
    j[n] = 0;
    *len = n;
    return j;
}

uint8_t *plain_of(const base *b, uint32_t i, size_t *len)
{
    const xm_section *s = &b->m.sec[i];
    uint8_t codec = s->entry[T_CODEC];
    uint64_t dec = rd64(s->entry + T_DECODED);
    uint8_t *out = xm_alloc((size_t)dec);
    *len = (size_t)dec;
    if (codec == 0) {
        memcpy(out, s->data, (size_t)dec);
        return out;
    }
    uint32_t fs = rd32(s->entry + T_FRAME);
    uint64_t nf = dec == 0 ? 0 : (dec - 1) / fs + 1;
    size_t e = xm_dtype_size(s->entry[T_DTYPE]);
    size_t pos = (size_t)(4 * nf);
    uint8_t *tmp = xm_alloc(fs);
    for (uint64_t f = 0; f < nf; f++) {
        size_t c = rd32(s->data + 4 * f);
        size_t L = (size_t)(dec - f * fs < fs ? dec - f * fs : fs);
        size_t r = ZSTD_decompress(tmp, L, s->data + pos, c);
        if (ZSTD_isError(r) || r != L)
            abort();
        uint8_t *dst = out + f * fs;
        if (codec == 2 && e > 1) {
            size_t cnt = L / e;
            for (size_t j = 0; j < e; j++)
                for (size_t k = 0; k < cnt; k++)
                    dst[k * e + j] = tmp[j * cnt + k];
        } else {
            memcpy(dst, tmp, L);
        }
        pos += c;
    }
    free(tmp);
    return out;
}

/* Registers a base after checking, with the library, that it is valid at
 * every level (a base that is not valid would make every expectation wrong). */
static int add_base(const char *name, uint8_t *img, size_t n, int key, const char *pubkey_path)
{
    expert_reader *r = NULL;
    expert_error e;
    expert_status st = expert_open_memory(img, n, NULL, &r, &e);
    if (st == EXPERT_OK)
        st = expert_verify_full(r, NULL, &e);
    expert_close(r);
    if (st != EXPERT_OK) {
        fprintf(stderr, "corrupt: base %s is not valid: %s: %s\n", name, expert_status_name(st),
                e.message);
        free(img);
        return -1;
    }
    g.bases = realloc(g.bases, (size_t)(g.nbases + 1) * sizeof *g.bases);
    base *b = &g.bases[g.nbases];
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->img = img;
    b->n = n;
    b->key = key;
    b->sibling = -1;
    (void)pubkey_path;
    if (xm_parse(img, n, &b->m) != 0) {
        fprintf(stderr, "corrupt: base %s: the independent model cannot parse it\n", name);
        return -1;
    }
    b->meta_off = rd64(img + H_META_OFF);
    b->toc_off = rd64(img + H_TOC_OFF);
    b->index_off = rd64(img + H_INDEX_OFF);
    b->index_len = rd64(img + H_INDEX_LEN);
    b->str_off = rd64(img + H_STR_OFF);
    size_t jl = 0;
    char *json = meta_json_of(b, &jl);
    json_t *root = json ? json_loadb(json, jl, 0, NULL) : NULL;
    if (root) {
        b->module_count = (uint32_t)json_array_size(json_object_get(root, "modules"));
        const char *keys[2] = {"adapter_config", "source_manifest"};
        for (int k = 0; k < 2; k++) {
            const char *v = json_string_value(json_object_get(root, keys[k]));
            if (v) {
                b->referenced = realloc(b->referenced, (size_t)(b->nref + 1) * sizeof(char *));
                b->referenced[b->nref++] = strdup(v);
            }
        }
        json_decref(root);
    }
    free(json);
    g.nbases++;
    return g.nbases - 1;
}

/* ------------------------------------------------------ library writer */

typedef struct wsec {
    const char *name;
    uint16_t type;
    uint8_t codec, dtype, rank;
    uint32_t layer, module;
    uint64_t dims[4];
    const void *data;
    size_t len;
} wsec;

static int write_file(const char *path, const expert_writer_options *opt, const char *meta,
                      const wsec *s, size_t n, const char *privkey)
{
    expert_writer *w = NULL;
    expert_error e;
    expert_status st = expert_writer_open(path, opt, &w, &e);
    for (size_t i = 0; st == EXPERT_OK && i < n; i++) {
        expert_section_desc d;
        memset(&d, 0, sizeof d);
        d.name = s[i].name;
        d.type = s[i].type;
        d.codec = s[i].codec;
        d.dtype = s[i].dtype;
        d.rank = s[i].rank;
        d.layer = s[i].layer;
        d.module = s[i].module;
        memcpy(d.dims, s[i].dims, sizeof d.dims);
        st = expert_writer_add(w, &d, s[i].data, s[i].len, &e);
    }
    if (st == EXPERT_OK)
        st = expert_writer_set_metadata(w, meta, strlen(meta), &e);
    expert_private_key *k = NULL;
    if (st == EXPERT_OK && privkey)
        st = expert_private_key_load(privkey, &k, &e);
    if (st == EXPERT_OK) {
        st = expert_writer_finish(w, k, &e);
        w = NULL;
    }
    expert_private_key_free(k);
    if (w)
        expert_writer_abort(w);
    if (st != EXPERT_OK)
        fprintf(stderr, "corrupt: writing %s failed: %s: %s\n", path, expert_status_name(st),
                e.message);
    return st == EXPERT_OK ? 0 : -1;
}

static int add_written(const char *name, const char *path, int key)
{
    uint8_t *img;
    size_t n;
    if (load_file(path, &img, &n) != 0)
        return -1;
    return add_base(name, img, n, key, NULL);
}

static void f32_fill(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        v[i] = scale * (float)((int)((i * 2654435761u) % 2001u) - 1000) / 1000.0f;
}

#define NONE UINT32_MAX

static void build_written(void)
{
    char path[1024], k0[1024], k1[1024];
    snprintf(k0, sizeof k0, "%s/k0.pem", g.tmpdir);
    snprintf(k1, sizeof k1, "%s/k1.pem", g.tmpdir);

    /* tiny-raw: the worked example's shape (§16) */
    static const float A[4] = {1, 2, 3, 4}, B[4] = {0.5f, -0.5f, 0.25f, -0.25f};
    static const char cfg[] = "{\"lora_alpha\":4,\"peft_type\":\"LORA\",\"r\":2,\"target_modules\":[\"q_proj\"]}";
    static const char meta1[] =
        "{\"format\":\"expert-v2\",\"name\":\"tiny\",\"version\":\"1.0.0\",\"adapter_config\":"
        "\"adapter_config.json\",\"modules\":[{\"path\":\"model.layers.0.q_proj\",\"type\":\"lora\","
        "\"layer\":0,\"in_features\":2,\"out_features\":2,\"r\":2,\"alpha\":4,\"rslora\":false}]}";
    wsec tiny[] = {
        {"model.layers.0.q_proj.lora_A.weight", EXPERT_SECTION_LORA_A, 0, EXPERT_DTYPE_F32, 2, 0, 0, {2, 2}, A, 16},
        {"model.layers.0.q_proj.lora_B.weight", EXPERT_SECTION_LORA_B, 0, EXPERT_DTYPE_F32, 2, 0, 0, {2, 2}, B, 16},
        {"adapter_config.json", EXPERT_SECTION_FILE, 0, EXPERT_DTYPE_BYTES, 1, NONE, NONE, {sizeof cfg - 1}, cfg, sizeof cfg - 1},
    };
    expert_writer_options o64 = {.alignment = 64, .frame_size = 65536, .zstd_level = 3, .threads = 0};
    int t0 = -1, t1 = -1;
    snprintf(path, sizeof path, "%s/tiny-raw.expert", g.tmpdir);
    if (write_file(path, &o64, meta1, tiny, 3, NULL) == 0)
        add_written("tiny-raw", path, -1);
    snprintf(path, sizeof path, "%s/tiny-raw-k0.expert", g.tmpdir);
    if (write_file(path, &o64, meta1, tiny, 3, k0) == 0)
        t0 = add_written("tiny-raw-signed-k0", path, 0);
    snprintf(path, sizeof path, "%s/tiny-raw-k1.expert", g.tmpdir);
    if (write_file(path, &o64, meta1, tiny, 3, k1) == 0)
        t1 = add_written("tiny-raw-signed-k1", path, 1);
    if (t0 >= 0 && t1 >= 0) {
        g.bases[t0].sibling = t1;
        g.bases[t1].sibling = t0;
    }

    /* mixed-zstd: multi-frame zstd, shuffle+zstd, ia3, empty and must-ignore
     * sections, a TENSOR, alignment 256 */
    size_t big_n = 150000;
    char *big = xm_alloc(big_n);
    for (size_t i = 0; i < big_n; i++)
        big[i] = "the quick brown fox jumps over the lazy dog 0123456789\n"[(i * 7 + i / 97) % 55];
    float la[4 * 64], lb[64 * 4];
    f32_fill(la, 256, 0.5f);
    f32_fill(lb, 256, 0.25f);
    uint16_t ia3[64];
    for (int i = 0; i < 64; i++)
        ia3[i] = (uint16_t)(0x3C00 + i); /* F16 around 1.0 */
    int64_t bias[3] = {-1, 0, 1};
    uint8_t blob[100];
    for (int i = 0; i < 100; i++)
        blob[i] = (uint8_t)(i * 37);
    static const char meta2[] =
        "{\"format\":\"expert-v2\",\"name\":\"mixed\",\"version\":\"2\",\"adapter_config\":"
        "\"adapter_config.json\",\"description\":\"d\",\"base_model\":{\"name\":\"m\",\"sha256\":\"\"},"
        "\"extra\":{\"k\":[1,2,{\"x\":null}]},\"modules\":["
        "{\"path\":\"m.layers.1.q\",\"type\":\"lora\",\"layer\":1,\"r\":4,\"alpha\":8,\"rslora\":true},"
        "{\"path\":\"m.layers.2.mlp\",\"type\":\"ia3\",\"layer\":2,\"feedforward\":false,\"out_features\":64}]}";
    wsec mixed[] = {
        {"m.layers.1.q.lora_A.weight", EXPERT_SECTION_LORA_A, 2, EXPERT_DTYPE_F32, 2, 1, 0, {4, 64}, la, sizeof la},
        {"m.layers.1.q.lora_B.weight", EXPERT_SECTION_LORA_B, 2, EXPERT_DTYPE_F32, 2, 1, 0, {64, 4}, lb, sizeof lb},
        {"m.layers.2.mlp.ia3_l", EXPERT_SECTION_IA3_VECTOR, 1, EXPERT_DTYPE_F16, 2, 2, 1, {64, 1}, ia3, sizeof ia3},
        {"data/big.txt", EXPERT_SECTION_FILE, 1, EXPERT_DTYPE_BYTES, 1, NONE, NONE, {150000}, big, big_n},
        {"empty.txt", EXPERT_SECTION_FILE, 0, EXPERT_DTYPE_BYTES, 1, NONE, NONE, {0}, "", 0},
        {"vendor/blob", 0x8001, 0, EXPERT_DTYPE_BYTES, 1, NONE, NONE, {100}, blob, 100},
        {"extra.bias", EXPERT_SECTION_TENSOR, 0, EXPERT_DTYPE_I64, 1, NONE, NONE, {3}, bias, sizeof bias},
        {"adapter_config.json", EXPERT_SECTION_FILE, 1, EXPERT_DTYPE_BYTES, 1, NONE, NONE, {sizeof cfg - 1}, cfg, sizeof cfg - 1},
    };
    expert_writer_options o256 = {.alignment = 256, .frame_size = 65536, .zstd_level = 3, .threads = 0};
    snprintf(path, sizeof path, "%s/mixed.expert", g.tmpdir);
    if (write_file(path, &o256, meta2, mixed, 8, NULL) == 0)
        add_written("mixed-zstd", path, -1);
    snprintf(path, sizeof path, "%s/mixed-k0.expert", g.tmpdir);
    if (write_file(path, &o256, meta2, mixed, 8, k0) == 0)
        add_written("mixed-zstd-signed-k0", path, 0);
    free(big);

    /* osd-dora-4096: OSD with a CSR residual, DoRA, a soft prompt */
    float U[8 * 2], S[2] = {3, 1}, VT[2 * 6], vals[5], dA[2 * 6], dB[8 * 2], mag[8];
    /* rows: {0, 5}, {}, {2}, {1}, {}, {3}, {}, {} */
    int32_t indptr[9] = {0, 2, 2, 3, 4, 4, 5, 5, 5}, indices[5] = {0, 5, 2, 1, 3};
    uint16_t sp[12];
    f32_fill(U, 16, 1);
    f32_fill(VT, 12, 1);
    f32_fill(vals, 5, 0.1f);
    f32_fill(dA, 12, 1);
    f32_fill(dB, 16, 1);
    for (int i = 0; i < 8; i++)
        mag[i] = 1.0f + (float)i / 8;
    for (int i = 0; i < 12; i++)
        sp[i] = (uint16_t)(0x3F80 + i); /* BF16 */
    static const char meta3[] =
        "{\"format\":\"expert-v2\",\"name\":\"osd\",\"version\":\"3\",\"modules\":["
        "{\"path\":\"m.layers.0.o\",\"type\":\"osd\",\"layer\":0,\"rank\":2,\"sparse_format\":\"csr\",\"in_features\":6,\"out_features\":8},"
        "{\"path\":\"m.layers.0.d\",\"type\":\"dora\",\"layer\":0,\"r\":2,\"alpha\":2.5,\"rslora\":false}]}";
    wsec osd[] = {
        {"m.layers.0.o.U", EXPERT_SECTION_OSD_U, 0, EXPERT_DTYPE_F32, 2, 0, 0, {8, 2}, U, sizeof U},
        {"m.layers.0.o.S", EXPERT_SECTION_OSD_S, 0, EXPERT_DTYPE_F32, 1, 0, 0, {2}, S, sizeof S},
        {"m.layers.0.o.Vt", EXPERT_SECTION_OSD_VT, 1, EXPERT_DTYPE_F32, 2, 0, 0, {2, 6}, VT, sizeof VT},
        {"m.layers.0.o.indptr", EXPERT_SECTION_OSD_SPARSE_INDPTR, 0, EXPERT_DTYPE_I32, 1, 0, 0, {9}, indptr, sizeof indptr},
        {"m.layers.0.o.indices", EXPERT_SECTION_OSD_SPARSE_INDICES, 0, EXPERT_DTYPE_I32, 1, 0, 0, {5}, indices, sizeof indices},
        {"m.layers.0.o.values", EXPERT_SECTION_OSD_SPARSE_VALUES, 2, EXPERT_DTYPE_F32, 1, 0, 0, {5}, vals, sizeof vals},
        {"m.layers.0.d.lora_A.weight", EXPERT_SECTION_LORA_A, 0, EXPERT_DTYPE_F32, 2, 0, 1, {2, 6}, dA, sizeof dA},
        {"m.layers.0.d.lora_B.weight", EXPERT_SECTION_LORA_B, 0, EXPERT_DTYPE_F32, 2, 0, 1, {8, 2}, dB, sizeof dB},
        {"m.layers.0.d.lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE, 0, EXPERT_DTYPE_F32, 2, 0, 1, {1, 8}, mag, sizeof mag},
        {"prompt", EXPERT_SECTION_SOFT_PROMPT, 0, EXPERT_DTYPE_BF16, 2, NONE, NONE, {3, 4}, sp, sizeof sp},
    };
    expert_writer_options o4k = {.alignment = 4096, .frame_size = 65536, .zstd_level = 3, .threads = 0};
    snprintf(path, sizeof path, "%s/osd.expert", g.tmpdir);
    if (write_file(path, &o4k, meta3, osd, 10, NULL) == 0)
        add_written("osd-dora-4096", path, -1);

    /* no sections at all */
    static const char meta4[] = "{\"format\":\"expert-v2\",\"name\":\"e\",\"version\":\"0\",\"modules\":[]}";
    snprintf(path, sizeof path, "%s/empty.expert", g.tmpdir);
    if (write_file(path, &o64, meta4, NULL, 0, NULL) == 0)
        add_written("no-sections", path, -1);
}

/* ------------------------------------------------------ sample experts */

static int run(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "corrupt: command failed (%d): %s\n", rc, cmd);
    return rc;
}

static void build_samples(const char *gen, const char *cli, int quick)
{
    char cmd[4096], dir[1024], out[1024];
    snprintf(dir, sizeof dir, "%s/sample", g.tmpdir);
    snprintf(cmd, sizeof cmd,
             "'%s' '%s' --layers 2 --rank 2 --modules q,v --tokenizer-bytes 10168 --quiet", gen, dir);
    if (run(cmd) != 0)
        return;
    snprintf(out, sizeof out, "%s/sample.expert", g.tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' pack '%s' -o '%s' --frame-size 64K --quiet", cli, dir, out);
    if (run(cmd) == 0)
        add_written("sample-dora-shuffle-zstd", out, -1);
    if (quick)
        return;
    snprintf(out, sizeof out, "%s/sample-raw-k0.expert", g.tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' pack '%s' -o '%s' --codec raw --align 4096 --sign '%s/k0.pem' --quiet",
             cli, dir, out, g.tmpdir);
    if (run(cmd) == 0)
        add_written("sample-dora-raw-4096-signed-k0", out, 0);
    snprintf(dir, sizeof dir, "%s/sample-ia3", g.tmpdir);
    snprintf(cmd, sizeof cmd,
             "'%s' '%s' --type ia3 --layers 2 --modules k,down --dtype bf16 --tokenizer-bytes 10168 --quiet",
             gen, dir);
    if (run(cmd) != 0)
        return;
    snprintf(out, sizeof out, "%s/sample-ia3.expert", g.tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' pack '%s' -o '%s' --codec zstd --frame-size 64K --quiet", cli, dir, out);
    if (run(cmd) == 0)
        add_written("sample-ia3-bf16-zstd", out, -1);
}

/* ------------------------------------------------------ golden vectors */

static void build_vectors(const char *vdir)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/manifest.json", vdir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (root == NULL)
        return;
    json_t *vs = json_object_get(root, "vectors");
    size_t i;
    json_t *v;
    int added = 0;
    json_array_foreach(vs, i, v) {
        const char *group = json_string_value(json_object_get(v, "group"));
        const char *file = json_string_value(json_object_get(v, "file"));
        const char *name = json_string_value(json_object_get(v, "name"));
        const char *key = json_string_value(json_object_get(v, "key"));
        if (!group || strcmp(group, "accept") != 0 || !file || !name)
            continue;
        snprintf(path, sizeof path, "%s/%s", vdir, file);
        uint8_t *img;
        size_t n;
        if (load_file(path, &img, &n) != 0)
            continue;
        int k = -1;
        if (key != NULL) { /* its own public key: keep it in a key slot */
            char kp[2048];
            snprintf(kp, sizeof kp, "%s/%s", vdir, key);
            expert_public_key *pk = NULL;
            expert_error e;
            if (expert_public_key_load(kp, &pk, &e) == EXPERT_OK) {
                for (int s = 2; s < 16; s++)
                    if (g.pub[s] == NULL) {
                        g.pub[s] = pk;
                        k = s;
                        break;
                    }
            }
        }
        char bn[64];
        snprintf(bn, sizeof bn, "vec:%s", name);
        int signed_ = 0;
        for (int s = 0; s < 64 && n >= 0x74; s++)
            signed_ |= img[H_SIG + s] != 0;
        if (signed_ && k < 0)
            k = -2;
        int bi = add_base(bn, img, n, k, NULL);
        if (bi >= 0) {
            g.bases[bi].is_vector = 1;
            added++;
        }
    }
    json_decref(root);
    fprintf(stderr, "corrupt: %d accept vectors from %s\n", added, vdir);
}

int bases_build(const char *gen, const char *cli, const char *vectors, int quick)
{
    char k0[1024], p0[1024], k1[1024], p1[1024];
    snprintf(k0, sizeof k0, "%s/k0.pem", g.tmpdir);
    snprintf(p0, sizeof p0, "%s/k0.pub.pem", g.tmpdir);
    snprintf(k1, sizeof k1, "%s/k1.pem", g.tmpdir);
    snprintf(p1, sizeof p1, "%s/k1.pub.pem", g.tmpdir);
    expert_error e;
    if (expert_keygen(k0, p0, &e) != EXPERT_OK || expert_keygen(k1, p1, &e) != EXPERT_OK ||
        expert_public_key_load(p0, &g.pub[0], &e) != EXPERT_OK ||
        expert_public_key_load(p1, &g.pub[1], &e) != EXPERT_OK) {
        fprintf(stderr, "corrupt: key generation failed: %s\n", e.message);
        return -1;
    }
    build_written();
    if (gen && cli)
        build_samples(gen, cli, quick);
    if (vectors)
        build_vectors(vectors);
    return g.nbases > 0 ? 0 : -1;
}
