/* gen_base.c — expert-gen-base: writes a deterministic base checkpoint with
 * Qwen3-0.6B tensor names and shapes (model.safetensors layout of
 * Qwen/Qwen3-0.6B: hidden 1024, intermediate 3072, 16 query heads and 8 KV
 * heads of 128, q/k RMS norms, tied embeddings, no biases), for merge tests.
 *
 * Values: every Linear weight [out, in] is uniform with the per-row L2 norm
 * expert-gen-sample assumes for DoRA magnitudes (q 0.92, k 1.25, v 0.48,
 * o 0.71, gate 0.85, up 0.62, down 0.55), norms are 1 ± 0.1, the embedding
 * is uniform with std 0.02. Generated data, not a trained model.
 *
 * Output is byte-identical for the same arguments on any machine
 * (splitmix64, no libm transcendental, no FP contraction, little-endian
 * bytes written explicitly). Tensors are sorted by name; data in that order.
 * Written atomically (temp file + rename).
 *
 * usage: expert-gen-base OUT.safetensors [--layers N] [--vocab V]
 *                        [--dtype f32|bf16|f16] [--seed S] [--bias] [--transposed] [--quiet]
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG "expert-gen-base"

typedef struct lin {
    const char *path; /* under model.layers.{i}. */
    unsigned out, in;
    double row_norm;
} lin;

static const lin k_lin[] = {
    {"mlp.down_proj", 1024, 3072, 0.55},    {"mlp.gate_proj", 3072, 1024, 0.85},
    {"mlp.up_proj", 3072, 1024, 0.62},      {"self_attn.k_proj", 1024, 1024, 1.25},
    {"self_attn.o_proj", 1024, 2048, 0.71}, {"self_attn.q_proj", 2048, 1024, 0.92},
    {"self_attn.v_proj", 1024, 1024, 0.48},
};
#define N_LIN (sizeof k_lin / sizeof k_lin[0])

enum { K_EMBED, K_NORM, K_LIN, K_BIAS };

typedef struct tensor {
    char name[128];
    unsigned rank;
    uint64_t dims[2];
    int kind;
    double scale; /* uniform half-width */
} tensor;

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t fnv(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint16_t to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static uint16_t to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) {
        uint32_t v = ax - 0x38000000u;
        return (uint16_t)(sign | ((v + 0x0fffu + ((v >> 13) & 1u)) >> 13));
    }
    float t;
    memcpy(&t, &ax, 4);
    t *= 0x1p24f;
    uint32_t n = (uint32_t)t;
    float fr = t - (float)n;
    if (fr > 0.5f || (fr == 0.5f && (n & 1u)))
        n++;
    return (uint16_t)(sign | n);
}

static int usage(FILE *f, int rc)
{
    fprintf(f, "usage: " PROG " OUT.safetensors [--layers N] [--vocab V] [--dtype f32|bf16|f16]\n"
               "                       [--seed S] [--bias] [--transposed] [--quiet]\n"
               "Writes a deterministic base checkpoint with Qwen3-0.6B names and shapes\n"
               "(28 layers and a 151936-token embedding by default: 2.4 GB in F32).\n"
               "  --layers N   decoder layers 1..1024 (default 28)\n"
               "  --vocab V    embedding rows (default 151936)\n"
               "  --dtype D    f32 (default), bf16 or f16 (round to nearest even)\n"
               "  --seed S     value seed (default 1)\n"
               "  --bias       add a .bias [out] to every Linear (not in Qwen3; for IA3 tests)\n"
               "  --transposed store Linear weights [in, out] (GPT-2 Conv1D style, for\n"
               "               merge --fan-in-fan-out tests)\n");
    return rc;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    unsigned long layers = 28, vocab = 151936;
    unsigned long long seed = 1;
    int dtype = 0, bias = 0, quiet = 0, transposed = 0; /* dtype: 0 f32, 1 bf16, 2 f16 */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return usage(stdout, 0);
        if (strcmp(a, "--bias") == 0) {
            bias = 1;
        } else if (strcmp(a, "--transposed") == 0) {
            transposed = 1;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = 1;
        } else if (i + 1 < argc && strcmp(a, "--layers") == 0) {
            layers = strtoul(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(a, "--vocab") == 0) {
            vocab = strtoul(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(a, "--seed") == 0) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(a, "--dtype") == 0) {
            const char *d = argv[++i];
            dtype = strcmp(d, "f32") == 0 ? 0 : strcmp(d, "bf16") == 0 ? 1 : strcmp(d, "f16") == 0 ? 2 : -1;
            if (dtype < 0)
                return usage(stderr, 64);
        } else if (a[0] != '-' && out == NULL) {
            out = a;
        } else {
            fprintf(stderr, PROG ": unknown or incomplete argument '%s'\n", a);
            return usage(stderr, 64);
        }
    }
    if (out == NULL || layers < 1 || layers > 1024 || vocab < 1 || vocab > 10000000)
        return usage(stderr, 64);

    size_t per_layer = 4 + N_LIN * (bias ? 2u : 1u);
    size_t n = 2 + (size_t)layers * per_layer, k = 0;
    tensor *t = calloc(n, sizeof *t);
    if (t == NULL)
        return 1;
    snprintf(t[k].name, sizeof t[k].name, "model.embed_tokens.weight");
    t[k].rank = 2, t[k].dims[0] = vocab, t[k].dims[1] = 1024, t[k].kind = K_EMBED;
    t[k++].scale = 0.02 * sqrt(3.0);
    snprintf(t[k].name, sizeof t[k].name, "model.norm.weight");
    t[k].rank = 1, t[k].dims[0] = 1024, t[k++].kind = K_NORM;
    for (unsigned long l = 0; l < layers; l++) {
        static const char *norms[4] = {"input_layernorm", "post_attention_layernorm",
                                       "self_attn.k_norm", "self_attn.q_norm"};
        for (int j = 0; j < 4; j++) {
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%lu.%s.weight", l, norms[j]);
            t[k].rank = 1, t[k].dims[0] = j < 2 ? 1024 : 128, t[k++].kind = K_NORM;
        }
        for (size_t j = 0; j < N_LIN; j++) {
            const lin *m = &k_lin[j];
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%lu.%s.weight", l, m->path);
            t[k].rank = 2, t[k].kind = K_LIN;
            t[k].dims[0] = transposed ? m->in : m->out;
            t[k].dims[1] = transposed ? m->out : m->in;
            /* uniform [-h, h] has variance h²/3; row norm² = in·h²/3 */
            t[k++].scale = m->row_norm * sqrt(3.0 / (double)m->in);
            if (bias) {
                snprintf(t[k].name, sizeof t[k].name, "model.layers.%lu.%s.bias", l, m->path);
                t[k].rank = 1, t[k].dims[0] = m->out, t[k].kind = K_BIAS;
                t[k++].scale = 0.05;
            }
        }
    }
    qsort(t, n, sizeof *t, cmp_tensor);

    const char *dn = dtype == 0 ? "F32" : dtype == 1 ? "BF16" : "F16";
    unsigned es = dtype == 0 ? 4u : 2u;
    size_t hcap = 256 + n * 192, hl = 0;
    char *h = malloc(hcap);
    if (h == NULL)
        return 1;
    hl += (size_t)snprintf(h + hl, hcap - hl, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0, maxn = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t numel = t[i].rank == 2 ? t[i].dims[0] * t[i].dims[1] : t[i].dims[0];
        if (t[i].rank == 2)
            hl += (size_t)snprintf(h + hl, hcap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu,%llu],",
                                   t[i].name, dn, (unsigned long long)t[i].dims[0],
                                   (unsigned long long)t[i].dims[1]);
        else
            hl += (size_t)snprintf(h + hl, hcap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],",
                                   t[i].name, dn, (unsigned long long)t[i].dims[0]);
        hl += (size_t)snprintf(h + hl, hcap - hl, "\"data_offsets\":[%llu,%llu]}",
                               (unsigned long long)off, (unsigned long long)(off + numel * es));
        off += numel * es;
        if (numel > maxn)
            maxn = numel;
    }
    hl += (size_t)snprintf(h + hl, hcap - hl, "}");
    while (hl % 8 != 0)
        h[hl++] = ' ';

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) {
        fprintf(stderr, PROG ": IO: cannot create '%s': %s\n", tmp, strerror(errno));
        return 1;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    int ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(h, 1, hl, f) == hl;
    unsigned char *buf = malloc((size_t)maxn * es + 1);
    if (buf == NULL)
        return 1;
    for (size_t i = 0; ok && i < n; i++) {
        uint64_t numel = t[i].rank == 2 ? t[i].dims[0] * t[i].dims[1] : t[i].dims[0];
        uint64_t s = seed ^ fnv(t[i].name);
        for (uint64_t j = 0; j < numel; j++) {
            double u = (double)(splitmix(&s) >> 11) * 0x1p-53; /* [0, 1) */
            float v = t[i].kind == K_NORM ? (float)(1.0 + 0.1 * (2.0 * u - 1.0))
                                          : (float)((2.0 * u - 1.0) * t[i].scale);
            uint32_t bits;
            memcpy(&bits, &v, 4);
            if (dtype == 0) {
                for (int b = 0; b < 4; b++)
                    buf[4 * j + (uint64_t)b] = (unsigned char)(bits >> (8 * b));
            } else {
                uint16_t hv = dtype == 1 ? to_bf16(v) : to_f16(v);
                buf[2 * j] = (unsigned char)hv;
                buf[2 * j + 1] = (unsigned char)(hv >> 8);
            }
        }
        ok = fwrite(buf, 1, (size_t)(numel * es), f) == numel * es;
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, out) != 0) {
        fprintf(stderr, PROG ": IO: cannot write '%s': %s\n", out, strerror(errno));
        unlink(tmp);
        return 1;
    }
    if (!quiet)
        printf("%s: %zu tensors, %lu layers, vocab %lu, %s, %llu bytes\n", out, n, layers, vocab, dn,
               (unsigned long long)(8 + hl + off));
    free(buf);
    free(h);
    free(t);
    return 0;
}
