/* gen_sample.c — expert-gen-sample: writes a deterministic, realistic v1-style
 * expert DIRECTORY (what a hivellm .expert tar.gz unpacks to): a PEFT
 * adapter_model.safetensors with Qwen3-0.6B shapes, adapter_config.json, a
 * schema-2.0 manifest.json with the real packer's quirks, tokenizer-sized
 * tokenizer files, README.md, grammar.gbnf and LICENSE.
 *
 * Output is byte-identical for the same arguments on any machine: a fixed
 * PRNG (splitmix64 seeding xoshiro256**), normals by Marsaglia's polar method
 * with a log built from + - * / only (no libm transcendental, whose last bit
 * may differ between C libraries), no floating-point contraction, no time,
 * no locale (setlocale is never called, so number formatting is the C
 * locale's), little-endian output written byte by byte.
 *
 * Self-contained: libc and libm (sqrt, frexp: both exact) only.
 * One file (~1,900 lines): the generator must stay self-contained (its
 * bytes are measured by the benchmarks and must not depend on libexpert). */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define PROG "expert-gen-sample"
#define EXIT_USAGE 64
#define EXIT_IO 1

#define MAX_RANK 1024u
#define MAX_LAYERS 1024u
#define NAME_MAX_LEN 128u

/* Tokenizer: Qwen3 has 256 byte tokens + 151,387 merges = 151,643 ids, then
 * 26 added tokens (151643..151668). */
#define BASE_TOKENS 256u
#define DEFAULT_MERGES 151387u
#define MAX_MERGES 2000000u
#define MAX_TOKEN_CHARS 16u
#define TOKENIZER_SEED 0x5157454e33544f4bULL /* fixed: every expert ships the base model's copy */

/* ================================================================ modules */

typedef struct module_def {
    const char *key;   /* --modules name */
    const char *name;  /* PEFT target module name */
    const char *path;  /* path under layers.{i}. */
    unsigned in, out;  /* Qwen3-0.6B: hidden 1024, intermediate 3072, 16x128 q heads, 8x128 kv */
    double row_norm;   /* plausible ||W_row|| of the base weight, for DoRA magnitudes */
    int feedforward;   /* IA3: scales the input ([1,in]) */
} module_def;

static const module_def k_modules[] = {
    {"q", "q_proj", "self_attn.q_proj", 1024, 2048, 0.92, 0},
    {"k", "k_proj", "self_attn.k_proj", 1024, 1024, 1.25, 0},
    {"v", "v_proj", "self_attn.v_proj", 1024, 1024, 0.48, 0},
    {"o", "o_proj", "self_attn.o_proj", 2048, 1024, 0.71, 0},
    {"gate", "gate_proj", "mlp.gate_proj", 1024, 3072, 0.85, 0},
    {"up", "up_proj", "mlp.up_proj", 1024, 3072, 0.62, 0},
    {"down", "down_proj", "mlp.down_proj", 3072, 1024, 0.55, 1},
};
#define N_MODULES (sizeof k_modules / sizeof k_modules[0])

/* ================================================================ options */

typedef enum { AD_DORA, AD_LORA, AD_IA3 } adapter_kind;
typedef enum { DT_F32, DT_BF16, DT_F16 } out_dtype;

typedef struct options {
    const char *outdir;
    adapter_kind kind;
    unsigned rank;
    double alpha;
    int alpha_set;
    out_dtype dtype;
    unsigned layers;
    unsigned mods[N_MODULES]; /* indexes into k_modules, user order */
    unsigned nmods;
    uint64_t seed;
    uint64_t tokenizer_bytes;
    int tokenizer_bytes_set;
    char name[NAME_MAX_LEN + 1];
    int quiet;
} options;

static const char *kind_name(adapter_kind k)
{
    return k == AD_DORA ? "dora" : k == AD_LORA ? "lora" : "ia3";
}

static const char *dtype_st_name(out_dtype d)
{
    return d == DT_F32 ? "F32" : d == DT_BF16 ? "BF16" : "F16";
}

static unsigned dtype_size(out_dtype d)
{
    return d == DT_F32 ? 4u : 2u;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " OUTDIR [options]\n"
            "Writes a deterministic sample v1 expert directory (PEFT adapter for Qwen3-0.6B).\n"
            "\n"
            "  --type dora|lora|ia3   adapter type (default dora)\n"
            "  --rank R               LoRA rank, 1..%u (default 12; ignored for ia3)\n"
            "  --alpha A              lora_alpha (default 2*R)\n"
            "  --dtype f32|bf16|f16   tensor dtype (default f32)\n"
            "  --layers N             decoder layers, 1..%u (default 28)\n"
            "  --modules LIST         comma list of q,k,v,o,gate,up,down (default q,k,v,o,up,down)\n"
            "  --seed S               weight seed, unsigned 64-bit (default 1)\n"
            "  --tokenizer-bytes B    exact size of tokenizer.json (default: full Qwen3-sized\n"
            "                         vocabulary, 151,643 tokens, about 11 MB); the tokenizer\n"
            "                         files do not depend on --seed\n"
            "  --name NAME            expert name, [A-Za-z0-9._-], at most %u chars\n"
            "                         (default expert-sample)\n"
            "  --quiet                print nothing on success\n"
            "  --help                 this text\n"
            "\n"
            "Exit status: 0 success, 64 usage error, 1 I/O error.\n",
            MAX_RANK, MAX_LAYERS, NAME_MAX_LEN);
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    return EXIT_USAGE;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_modules(const char *list, options *o)
{
    o->nmods = 0;
    unsigned seen = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        unsigned found = N_MODULES;
        for (unsigned i = 0; i < N_MODULES; i++) {
            if ((strlen(k_modules[i].key) == len && memcmp(p, k_modules[i].key, len) == 0) ||
                (strlen(k_modules[i].name) == len && memcmp(p, k_modules[i].name, len) == 0)) {
                found = i;
                break;
            }
        }
        if (found == N_MODULES)
            return usage_error("--modules: unknown module '%.*s'", (int)len, p);
        if (seen & (1u << found))
            return usage_error("--modules: '%s' given twice", k_modules[found].key);
        seen |= 1u << found;
        o->mods[o->nmods++] = found;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

/* Returns 0, EXIT_USAGE, or -1 after --help. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->kind = AD_DORA;
    o->rank = 12;
    o->dtype = DT_F32;
    o->layers = 28;
    static const unsigned def_mods[] = {0, 1, 2, 3, 5, 6};
    o->nmods = 6;
    memcpy(o->mods, def_mods, sizeof def_mods);
    o->seed = 1;
    strcpy(o->name, "expert-sample");

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            o->quiet = 1;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc) {
                if (o->outdir != NULL || i + 2 < argc)
                    return usage_error("more than one OUTDIR");
                o->outdir = argv[i + 1];
            }
            break;
        }
        if (a[0] == '-' && a[1] == '-') {
            static const char *const with_value[] = {"--type", "--rank", "--alpha",
                                                     "--dtype", "--layers", "--modules",
                                                     "--seed", "--tokenizer-bytes", "--name"};
            const char *eq = strchr(a, '=');
            size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
            const char *opt = NULL;
            for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
                if (strlen(with_value[k]) == nlen && memcmp(a, with_value[k], nlen) == 0)
                    opt = with_value[k];
            if (opt == NULL)
                return usage_error("unknown option '%s'", a);
            const char *v;
            if (eq != NULL) {
                v = eq + 1;
            } else {
                if (i + 1 >= argc)
                    return usage_error("%s needs a value", opt);
                v = argv[++i];
            }
            uint64_t u;
            if (strcmp(opt, "--type") == 0) {
                if (strcmp(v, "dora") == 0)
                    o->kind = AD_DORA;
                else if (strcmp(v, "lora") == 0)
                    o->kind = AD_LORA;
                else if (strcmp(v, "ia3") == 0)
                    o->kind = AD_IA3;
                else
                    return usage_error("--type: expected dora, lora or ia3, got '%s'", v);
            } else if (strcmp(opt, "--rank") == 0) {
                if (!parse_u64(v, &u) || u < 1 || u > MAX_RANK)
                    return usage_error("--rank: expected an integer in 1..%u, got '%s'",
                                       MAX_RANK, v);
                o->rank = (unsigned)u;
            } else if (strcmp(opt, "--alpha") == 0) {
                char *end = NULL;
                errno = 0;
                double d = strtod(v, &end);
                if (errno != 0 || end == v || *end != '\0' || !(d > 0.0) || !(d < 1e9))
                    return usage_error("--alpha: expected a number in (0, 1e9), got '%s'", v);
                o->alpha = d;
                o->alpha_set = 1;
            } else if (strcmp(opt, "--dtype") == 0) {
                if (strcmp(v, "f32") == 0)
                    o->dtype = DT_F32;
                else if (strcmp(v, "bf16") == 0)
                    o->dtype = DT_BF16;
                else if (strcmp(v, "f16") == 0)
                    o->dtype = DT_F16;
                else
                    return usage_error("--dtype: expected f32, bf16 or f16, got '%s'", v);
            } else if (strcmp(opt, "--layers") == 0) {
                if (!parse_u64(v, &u) || u < 1 || u > MAX_LAYERS)
                    return usage_error("--layers: expected an integer in 1..%u, got '%s'",
                                       MAX_LAYERS, v);
                o->layers = (unsigned)u;
            } else if (strcmp(opt, "--modules") == 0) {
                int rc = parse_modules(v, o);
                if (rc != 0)
                    return rc;
            } else if (strcmp(opt, "--seed") == 0) {
                if (!parse_u64(v, &u))
                    return usage_error("--seed: expected an unsigned 64-bit integer, got '%s'",
                                       v);
                o->seed = u;
            } else if (strcmp(opt, "--tokenizer-bytes") == 0) {
                if (!parse_u64(v, &u))
                    return usage_error("--tokenizer-bytes: expected a byte count, got '%s'", v);
                o->tokenizer_bytes = u;
                o->tokenizer_bytes_set = 1;
            } else { /* --name */
                size_t len = strlen(v);
                if (len == 0 || len > NAME_MAX_LEN)
                    return usage_error("--name: 1..%u characters", NAME_MAX_LEN);
                for (size_t k = 0; k < len; k++) {
                    char c = v[k];
                    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
                        return usage_error("--name: only [A-Za-z0-9._-] allowed, got '%s'", v);
                }
                memcpy(o->name, v, len + 1);
            }
            continue;
        }
        if (a[0] == '-' && a[1] != '\0')
            return usage_error("unknown option '%s'", a);
        if (o->outdir != NULL)
            return usage_error("more than one OUTDIR ('%s', '%s')", o->outdir, a);
        o->outdir = a;
    }
    if (o->outdir == NULL || o->outdir[0] == '\0')
        return usage_error("missing OUTDIR");
    if (!o->alpha_set)
        o->alpha = 2.0 * (double)o->rank;
    return 0;
}

/* ================================================================ PRNG */

typedef struct rng {
    uint64_t s[4];
    int has_spare;
    double spare;
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    r->has_spare = 0;
    r->spare = 0.0;
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r) /* xoshiro256** */
{
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

static double rng_uniform(rng *r) /* [0, 1), 53 bits */
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Natural log from + - * / and frexp (exact): deterministic everywhere. */
static double det_log(double x)
{
    int e;
    double m = frexp(x, &e); /* x = m * 2^e, m in [0.5, 1) */
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    double t = (m - 1.0) / (m + 1.0); /* |t| <= 0.1716 */
    double t2 = t * t;
    double p = t, sum = 0.0;
    for (int k = 1; k <= 25; k += 2) {
        sum += p / (double)k;
        p *= t2;
    }
    return 2.0 * sum + (double)e * 0.69314718055994530942;
}

/* Standard normal, Marsaglia polar method (Box–Muller without sin/cos). */
static double rng_normal(rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * rng_uniform(r) - 1.0;
        v = 2.0 * rng_uniform(r) - 1.0;
        double uu = u * u;
        double vv = v * v;
        s = uu + vv;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * det_log(s) / s); /* sqrt is correctly rounded (IEEE 754) */
    r->spare = v * f;
    r->has_spare = 1;
    return u * f;
}

static uint64_t fnv1a64(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ================================================================ float encoding */

static uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static uint16_t f32_to_bf16(float f) /* round to nearest even */
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static uint16_t f32_to_f16(float f) /* round to nearest even */
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (ax >= 0x477ff000u) /* >= 65520: rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half or zero */
        if (ax < 0x33000000u) /* <= 2^-25 rounds to zero (2^-25 ties to even 0) */
            return (uint16_t)sign;
        uint32_t e = ax >> 23;
        uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax - 0x38000000u; /* rebias 127 -> 15 */
    r += 0x0fffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put_le16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void encode_values(const float *v, size_t n, out_dtype dt, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == DT_F32)
            put_le32(out + 4 * i, f32_bits(v[i]));
        else if (dt == DT_BF16)
            put_le16(out + 2 * i, f32_to_bf16(v[i]));
        else
            put_le16(out + 2 * i, f32_to_f16(v[i]));
    }
}

/* ================================================================ growable buffer */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int count_only; /* only measure */
} sbuf;

static void die_oom(void)
{
    fprintf(stderr, PROG ": out of memory\n");
    exit(EXIT_IO);
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (!b->count_only) {
        if (b->len + n + 1 > b->cap) {
            size_t nc = b->cap ? b->cap : 4096;
            while (nc < b->len + n + 1)
                nc *= 2;
            char *np = realloc(b->p, nc);
            if (np == NULL)
                die_oom();
            b->p = np;
            b->cap = nc;
        }
        memcpy(b->p + b->len, s, n);
        b->p[b->len + n] = '\0';
    }
    b->len += n;
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fprintf(stderr, PROG ": internal error: formatted text too long\n");
        exit(EXIT_IO);
    }
    sb_put(b, tmp, (size_t)n);
}

static void sb_u64(sbuf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sb_put(b, tmp + i, sizeof tmp - i);
}

static void sb_indent(sbuf *b, unsigned n)
{
    static const char spaces[] = "                                ";
    sb_put(b, spaces, n);
}

/* JSON string with quotes; UTF-8 passes through (ensure_ascii=False). Written
 * here, not through jansson, because the sample's bytes are part of what the
 * benchmarks and sizes measure: one fixed form (lower-case \u00xx, '/' as is)
 * whatever jansson version is installed. */
static void sb_jstr(sbuf *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\r')
            esc = "\\r";
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        }
        if (esc != NULL) {
            sb_put(b, s + i - run, run);
            run = 0;
            sb_puts(b, esc);
        } else {
            run++;
        }
    }
    sb_put(b, s + n - run, run);
    sb_put(b, "\"", 1);
}

static void sb_jstrz(sbuf *b, const char *s)
{
    sb_jstr(b, s, strlen(s));
}

/* Shortest decimal that round-trips; integral values without a fraction
 * (Python json/serde write ints for the config's integer fields). */
static void fmt_number(char *out, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, cap, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* Pretty JSON list of strings at the given indent (the '[' already placed). */
static void sb_jstr_list(sbuf *b, const char *const *items, size_t n, unsigned indent)
{
    if (n == 0) {
        sb_puts(b, "[]");
        return;
    }
    sb_puts(b, "[\n");
    for (size_t i = 0; i < n; i++) {
        sb_indent(b, indent + 2);
        sb_jstrz(b, items[i]);
        sb_puts(b, i + 1 < n ? ",\n" : "\n");
    }
    sb_indent(b, indent);
    sb_puts(b, "]");
}

/* ================================================================ output files */

typedef struct ofile {
    int fd;
    char tmp[4096];
    char final_path[4096];
} ofile;

static int of_open(ofile *of, const char *dir, const char *name)
{
    int n1 = snprintf(of->final_path, sizeof of->final_path, "%s/%s", dir, name);
    int n2 = snprintf(of->tmp, sizeof of->tmp, "%s/.%s.tmp.%ld", dir, name, (long)getpid());
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof of->final_path ||
        (size_t)n2 >= sizeof of->tmp) {
        fprintf(stderr, PROG ": %s: path too long\n", dir);
        return -1;
    }
    of->fd = open(of->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (of->fd < 0) {
        fprintf(stderr, PROG ": %s: %s\n", of->tmp, strerror(errno));
        return -1;
    }
    return 0;
}

static void of_abort(ofile *of)
{
    if (of->fd >= 0)
        close(of->fd);
    of->fd = -1;
    unlink(of->tmp);
}

static int of_write(ofile *of, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(of->fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, PROG ": %s: %s\n", of->tmp, strerror(errno));
            of_abort(of);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int of_commit(ofile *of)
{
    if (fsync(of->fd) != 0 && errno != EINVAL && errno != EROFS) {
        fprintf(stderr, PROG ": %s: %s\n", of->tmp, strerror(errno));
        of_abort(of);
        return -1;
    }
    int fd = of->fd;
    of->fd = -1;
    if (close(fd) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", of->tmp, strerror(errno));
        unlink(of->tmp);
        return -1;
    }
    if (rename(of->tmp, of->final_path) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", of->final_path, strerror(errno));
        unlink(of->tmp);
        return -1;
    }
    return 0;
}

static int write_whole(const char *dir, const char *name, const void *data, size_t n)
{
    ofile of;
    if (of_open(&of, dir, name) != 0)
        return -1;
    if (of_write(&of, data, n) != 0)
        return -1;
    return of_commit(&of);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof buf) {
        fprintf(stderr, PROG ": %s: path too long\n", path);
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                fprintf(stderr, PROG ": %s: %s\n", buf, strerror(errno));
                return -1;
            }
            buf[i] = saved;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, PROG ": %s: not a directory\n", path);
        return -1;
    }
    return 0;
}

static void summary(const options *o, const char *name, uint64_t size, const char *fmt, ...)
{
    if (o->quiet)
        return;
    char extra[256] = "";
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(extra, sizeof extra, fmt, ap);
        va_end(ap);
    }
    printf("%-27s %10llu bytes%s%s\n", name, (unsigned long long)size, extra[0] ? "  " : "",
           extra);
}

/* ================================================================ adapter tensors */

typedef enum { ROLE_A, ROLE_B, ROLE_M, ROLE_IA3 } tensor_role;

typedef struct tensor {
    char name[128];
    tensor_role role;
    unsigned module; /* k_modules index */
    unsigned layer;
    unsigned rank;   /* 1 or 2 */
    uint64_t dims[2];
    uint64_t numel;
} tensor;

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const tensor *)a)->name, ((const tensor *)b)->name);
}

static size_t build_tensors(const options *o, tensor **out)
{
    unsigned per = o->kind == AD_DORA ? 3u : o->kind == AD_LORA ? 2u : 1u;
    size_t n = (size_t)o->layers * o->nmods * per;
    tensor *t = calloc(n, sizeof *t);
    if (t == NULL)
        die_oom();
    size_t k = 0;
    for (unsigned l = 0; l < o->layers; l++) {
        for (unsigned mi = 0; mi < o->nmods; mi++) {
            const module_def *m = &k_modules[o->mods[mi]];
            char base[96];
            snprintf(base, sizeof base, "base_model.model.model.layers.%u.%s", l, m->path);
            for (unsigned r = 0; r < per; r++) {
                tensor *x = &t[k++];
                x->module = o->mods[mi];
                x->layer = l;
                if (o->kind == AD_IA3) {
                    x->role = ROLE_IA3;
                    snprintf(x->name, sizeof x->name, "%s.ia3_l", base);
                    x->rank = 2;
                    x->dims[0] = m->feedforward ? 1u : m->out;
                    x->dims[1] = m->feedforward ? m->in : 1u;
                } else if (r == 0) {
                    x->role = ROLE_A;
                    snprintf(x->name, sizeof x->name, "%s.lora_A.weight", base);
                    x->rank = 2;
                    x->dims[0] = o->rank;
                    x->dims[1] = m->in;
                } else if (r == 1) {
                    x->role = ROLE_B;
                    snprintf(x->name, sizeof x->name, "%s.lora_B.weight", base);
                    x->rank = 2;
                    x->dims[0] = m->out;
                    x->dims[1] = o->rank;
                } else {
                    x->role = ROLE_M;
                    snprintf(x->name, sizeof x->name, "%s.lora_magnitude_vector", base);
                    x->rank = 1;
                    x->dims[0] = m->out;
                    x->dims[1] = 0;
                }
                x->numel = x->rank == 1 ? x->dims[0] : x->dims[0] * x->dims[1];
            }
        }
    }
    qsort(t, n, sizeof *t, cmp_tensor);
    *out = t;
    return n;
}

/* Slowly varying positive profile: knots every `step` rows, linear in between. */
typedef struct profile {
    double knots[160];
    unsigned step;
} profile;

static void profile_init(profile *p, rng *r, uint64_t rows, unsigned step, double lo, double hi)
{
    p->step = step;
    uint64_t nk = rows / step + 2;
    if (nk > sizeof p->knots / sizeof p->knots[0])
        nk = sizeof p->knots / sizeof p->knots[0];
    for (uint64_t i = 0; i < nk; i++)
        p->knots[i] = lo + (hi - lo) * rng_uniform(r);
}

static double profile_at(const profile *p, uint64_t row)
{
    uint64_t j = row / p->step;
    if (j + 1 >= sizeof p->knots / sizeof p->knots[0])
        j = sizeof p->knots / sizeof p->knots[0] - 2;
    double f = (double)(row % p->step) / (double)p->step;
    return p->knots[j] + (p->knots[j + 1] - p->knots[j]) * f;
}

static void gen_values(const options *o, const tensor *t, float *v)
{
    const module_def *m = &k_modules[t->module];
    rng r;
    rng_seed(&r, o->seed ^ fnv1a64(t->name, strlen(t->name)));
    switch (t->role) {
    case ROLE_A: { /* kaiming-uniform-like: U(-1/sqrt(in), 1/sqrt(in)), plus drift */
        double bound = 1.0 / sqrt((double)m->in);
        for (uint64_t i = 0; i < t->numel; i++) {
            double u = 2.0 * rng_uniform(&r) - 1.0;
            double drift = 0.08 * bound * rng_normal(&r);
            v[i] = (float)(u * bound + drift);
        }
        break;
    }
    case ROLE_B: { /* N(0, 0.01) with a slowly varying per-row scale */
        profile p;
        profile_init(&p, &r, t->dims[0], 64, 0.45, 1.65);
        for (uint64_t row = 0; row < t->dims[0]; row++) {
            double s = 0.01 * profile_at(&p, row);
            for (uint64_t c = 0; c < t->dims[1]; c++)
                v[row * t->dims[1] + c] = (float)(s * rng_normal(&r));
        }
        break;
    }
    case ROLE_M: { /* ||W_row|| * (1 + N(0, 0.02)) */
        profile p;
        profile_init(&p, &r, t->dims[0], 128, 0.85, 1.15);
        for (uint64_t row = 0; row < t->dims[0]; row++) {
            double base = m->row_norm * profile_at(&p, row);
            v[row] = (float)(base * (1.0 + 0.02 * rng_normal(&r)));
        }
        break;
    }
    case ROLE_IA3:
        for (uint64_t i = 0; i < t->numel; i++)
            v[i] = (float)(1.0 + 0.05 * rng_normal(&r));
        break;
    }
}

static int write_safetensors(const options *o, uint64_t *payload_out, size_t *count_out,
                             uint64_t *size_out)
{
    tensor *t = NULL;
    size_t n = build_tensors(o, &t);
    unsigned es = dtype_size(o->dtype);
    const char *dn = dtype_st_name(o->dtype);

    sbuf h = {0};
    sb_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0, max_numel = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes = t[i].numel * es;
        sb_puts(&h, ",");
        sb_jstrz(&h, t[i].name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dn);
        for (unsigned d = 0; d < t[i].rank; d++) {
            if (d)
                sb_puts(&h, ",");
            sb_u64(&h, t[i].dims[d]);
        }
        sb_puts(&h, "],\"data_offsets\":[");
        sb_u64(&h, off);
        sb_puts(&h, ",");
        sb_u64(&h, off + bytes);
        sb_puts(&h, "]}");
        off += bytes;
        if (t[i].numel > max_numel)
            max_numel = t[i].numel;
    }
    sb_puts(&h, "}");
    while (h.len % 8 != 0)
        sb_puts(&h, " ");

    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)h.len >> (8 * i));

    float *vals = malloc((size_t)max_numel * sizeof *vals + 1);
    unsigned char *enc = malloc((size_t)max_numel * 4 + 1);
    if (vals == NULL || enc == NULL)
        die_oom();

    ofile of;
    int rc = -1;
    if (of_open(&of, o->outdir, "adapter_model.safetensors") != 0)
        goto out;
    if (of_write(&of, lenbuf, 8) != 0 || of_write(&of, h.p, h.len) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        gen_values(o, &t[i], vals);
        encode_values(vals, (size_t)t[i].numel, o->dtype, enc);
        if (of_write(&of, enc, (size_t)t[i].numel * es) != 0)
            goto out;
    }
    if (of_commit(&of) != 0)
        goto out;
    *payload_out = off;
    *count_out = n;
    *size_out = 8 + h.len + off;
    rc = 0;
out:
    free(vals);
    free(enc);
    free(h.p);
    free(t);
    return rc;
}

/* ================================================================ adapter_config.json */

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void build_adapter_config(const options *o, sbuf *b)
{
    const char *names[N_MODULES];
    for (unsigned i = 0; i < o->nmods; i++)
        names[i] = k_modules[o->mods[i]].name;
    qsort(names, o->nmods, sizeof names[0], cmp_cstr); /* PEFT saves a set */

    /* PEFT: json.dumps(config, indent=2, sort_keys=True), no trailing newline */
    if (o->kind == AD_IA3) {
        const char *ff[N_MODULES];
        size_t nff = 0;
        for (unsigned i = 0; i < o->nmods; i++)
            if (k_modules[o->mods[i]].feedforward)
                ff[nff++] = k_modules[o->mods[i]].name;
        sb_puts(b, "{\n"
                   "  \"auto_mapping\": null,\n"
                   "  \"base_model_name_or_path\": \"Qwen/Qwen3-0.6B\",\n"
                   "  \"exclude_modules\": null,\n"
                   "  \"fan_in_fan_out\": false,\n"
                   "  \"feedforward_modules\": ");
        sb_jstr_list(b, ff, nff, 2);
        sb_puts(b, ",\n"
                   "  \"inference_mode\": true,\n"
                   "  \"init_ia3_weights\": true,\n"
                   "  \"modules_to_save\": null,\n"
                   "  \"peft_type\": \"IA3\",\n"
                   "  \"revision\": null,\n"
                   "  \"target_modules\": ");
        sb_jstr_list(b, names, o->nmods, 2);
        sb_puts(b, ",\n"
                   "  \"task_type\": \"CAUSAL_LM\"\n"
                   "}");
        return;
    }
    char alpha[64];
    fmt_number(alpha, sizeof alpha, o->alpha);
    sb_puts(b, "{\n"
               "  \"alpha_pattern\": {},\n"
               "  \"auto_mapping\": null,\n"
               "  \"base_model_name_or_path\": \"Qwen/Qwen3-0.6B\",\n"
               "  \"bias\": \"none\",\n"
               "  \"corda_config\": null,\n"
               "  \"eva_config\": null,\n"
               "  \"exclude_modules\": null,\n"
               "  \"fan_in_fan_out\": false,\n"
               "  \"inference_mode\": true,\n"
               "  \"init_lora_weights\": true,\n"
               "  \"layer_replication\": null,\n"
               "  \"layers_pattern\": null,\n"
               "  \"layers_to_transform\": null,\n"
               "  \"loftq_config\": {},\n");
    sb_printf(b, "  \"lora_alpha\": %s,\n", alpha);
    sb_puts(b, "  \"lora_bias\": false,\n"
               "  \"lora_dropout\": 0.1,\n"
               "  \"megatron_config\": null,\n"
               "  \"megatron_core\": \"megatron.core\",\n"
               "  \"modules_to_save\": null,\n"
               "  \"peft_type\": \"LORA\",\n");
    sb_printf(b, "  \"r\": %u,\n", o->rank);
    sb_puts(b, "  \"rank_pattern\": {},\n"
               "  \"revision\": null,\n"
               "  \"target_modules\": ");
    sb_jstr_list(b, names, o->nmods, 2);
    sb_printf(b,
              ",\n"
              "  \"task_type\": \"CAUSAL_LM\",\n"
              "  \"trainable_token_indices\": null,\n"
              "  \"use_dora\": %s,\n"
              "  \"use_rslora\": false\n"
              "}",
              o->kind == AD_DORA ? "true" : "false");
}

/* ================================================================ manifest.json */

/* Schema 2.0 as serde_json::to_string_pretty writes the packer's Manifest
 * struct, plus fields the packer would drop (quality_metrics, limitations,
 * training.trained_on) as they appear in the source manifests. */
static void build_manifest(const options *o, sbuf *b)
{
    const char *names[N_MODULES];
    for (unsigned i = 0; i < o->nmods; i++)
        names[i] = k_modules[o->mods[i]].name;
    char alpha[64];
    fmt_number(alpha, sizeof alpha, o->alpha);
    int ia3 = o->kind == AD_IA3;

    sb_puts(b, "{\n  \"name\": ");
    sb_jstrz(b, o->name);
    sb_puts(b, ",\n  \"version\": \"0.1.0\",\n  \"schema_version\": \"2.0\",\n");
    if (ia3)
        sb_puts(b, "  \"description\": \"Synthetic sample expert (IA3) for Qwen3-0.6B: "
                   "text-to-SQL for PostgreSQL. Generated weights, not trained.\",\n");
    else
        sb_printf(b,
                  "  \"description\": \"Synthetic sample expert (%s r=%u) for Qwen3-0.6B: "
                  "text-to-SQL for PostgreSQL. Generated weights, not trained.\",\n",
                  o->kind == AD_DORA ? "DoRA" : "LoRA", o->rank);
    sb_puts(b, "  \"author\": \"hivellm\",\n"
               "  \"homepage\": \"https://github.com/hivellm/expert-sql\",\n"
               "  \"repository\": \"https://github.com/hivellm/expert-sql\",\n"
               "  \"base_models\": [\n"
               "    {\n"
               "      \"name\": \"F:/Node/hivellm/expert/models/Qwen3-0.6B\",\n"
               "      \"sha256\": \"\",\n"
               "      \"quantization\": \"int4\",\n"
               "      \"rope_scaling\": {\n"
               "        \"type\": \"ntk-by-parts\",\n"
               "        \"factor\": 8.0,\n"
               "        \"max_position_embeddings\": 32768,\n"
               "        \"original_max_position_embeddings\": 8192,\n"
               "        \"fine_grained\": true\n"
               "      },\n"
               "      \"prompt_template\": \"qwen3\",\n"
               "      \"adapters\": [\n"
               "        {\n");
    sb_printf(b, "          \"type\": \"%s\",\n          \"target_modules\": ", kind_name(o->kind));
    sb_jstr_list(b, names, o->nmods, 10);
    sb_puts(b, ",\n");
    if (!ia3)
        sb_printf(b,
                  "          \"r\": %u,\n"
                  "          \"alpha\": %s,\n"
                  "          \"dropout\": 0.1,\n"
                  "          \"use_dora\": %s,\n",
                  o->rank, alpha, o->kind == AD_DORA ? "true" : "false");
    sb_puts(b, "          \"size_bytes\": 0,\n"
               "          \"sha256\": \"\"\n"
               "        }\n"
               "      ]\n"
               "    }\n"
               "  ],\n"
               "  \"soft_prompts\": [],\n"
               "  \"capabilities\": [\n"
               "    \"language:en\",\n"
               "    \"tech:sql\",\n"
               "    \"database:postgresql\",\n"
               "    \"query:select\",\n"
               "    \"query:join\",\n"
               "    \"query:aggregate\",\n"
               "    \"query:subquery\"\n"
               "  ],\n"
               "  \"routing\": {\n"
               "    \"keywords\": [\n"
               "      \"sql\",\n"
               "      \"query\",\n"
               "      \"select\",\n"
               "      \"database\",\n"
               "      \"postgres\",\n"
               "      \"table\"\n"
               "    ],\n"
               "    \"router_hint\": \"database=postgresql OR query=sql\",\n"
               "    \"priority\": 0.75\n"
               "  },\n"
               "  \"constraints\": {\n"
               "    \"max_chain\": 10,\n"
               "    \"load_order\": 6,\n"
               "    \"incompatible_with\": [],\n"
               "    \"requires\": []\n"
               "  },\n"
               "  \"perf\": {\n"
               "    \"latency_ms_overhead\": 3.5,\n"
               "    \"vram_mb_overhead\": 18,\n"
               "    \"supported_batch_sizes\": [\n"
               "      1,\n"
               "      2,\n"
               "      4,\n"
               "      8\n"
               "    ]\n"
               "  },\n"
               "  \"training\": {\n"
               "    \"dataset\": {\n"
               "      \"path\": \"gretelai/synthetic_text_to_sql\",\n"
               "      \"type\": \"huggingface\",\n"
               "      \"field_mapping\": {\n"
               "        \"instruction\": \"sql_prompt\",\n"
               "        \"input\": \"sql_context\",\n"
               "        \"response\": \"sql\"\n"
               "      }\n"
               "    },\n"
               "    \"config\": {\n"
               "      \"method\": \"sft\",\n");
    sb_printf(b, "      \"adapter_type\": \"%s\",\n", kind_name(o->kind));
    if (!ia3)
        sb_printf(b, "      \"rank\": %u,\n      \"alpha\": %s,\n", o->rank, alpha);
    sb_puts(b, "      \"target_modules\": ");
    sb_jstr_list(b, names, o->nmods, 6);
    sb_puts(b, ",\n"
               "      \"epochs\": 1.5,\n"
               "      \"learning_rate\": 0.0005,\n"
               "      \"batch_size\": 2,\n"
               "      \"gradient_accumulation_steps\": 45,\n"
               "      \"warmup_steps\": 0,\n"
               "      \"warmup_ratio\": 0.1,\n"
               "      \"lr_scheduler\": \"cosine\",\n"
               "      \"max_seq_length\": 800,\n"
               "      \"bf16\": true,\n"
               "      \"use_unsloth\": true\n"
               "    },\n"
               "    \"decoding\": {\n"
               "      \"use_grammar\": true,\n"
               "      \"grammar_type\": \"sql-postgres\",\n"
               "      \"grammar_file\": \"grammar.gbnf\",\n"
               "      \"validation\": \"parser-strict\",\n"
               "      \"stop_sequences\": [\n"
               "        \";\",\n"
               "        \"\\n\\n\"\n"
               "      ],\n"
               "      \"temperature\": 0.1,\n"
               "      \"top_p\": 0.9,\n"
               "      \"top_k\": 50\n"
               "    },\n"
               "    \"trained_on\": \"2025-11-06\"\n"
               "  },\n"
               "  \"license\": \"apache-2.0\",\n"
               "  \"tags\": [\n"
               "    \"sql\",\n"
               "    \"postgresql\",\n"
               "    \"text-to-sql\",\n"
               "    \"sample\"\n"
               "  ],\n"
               "  \"quality_metrics\": {\n"
               "    \"benchmark_score\": 9.6,\n"
               "    \"base_model_score\": 0.0,\n"
               "    \"sql_valid\": \"16/18\",\n"
               "    \"success_rate\": 88.9,\n"
               "    \"checkpoint\": \"checkpoint-1250\",\n"
               "    \"_comment\": \"hand-run 30-scenario suite, see README\"\n"
               "  },\n"
               "  \"limitations\": [\n"
               "    \"recursive CTEs are often wrong\",\n"
               "    \"window functions with frames are unreliable\"\n"
               "  ]\n"
               "}");
}

/* ================================================================ tokenizer */

enum { CTX_LEFT, CTX_AFTER_VOWEL, CTX_AFTER_CONSONANT, CTX_AFTER_OTHER, N_CTX };

typedef struct vocab {
    char *arena;
    size_t alen, acap;
    uint32_t *off;
    uint8_t *blen, *nch, *space;
    uint32_t *ml, *mr; /* merge k: left and right token ids */
    size_t ntok, tcap;
    uint32_t *slots;
    size_t nslots;
    rng r;
    uint32_t cum[N_CTX][BASE_TOKENS];
} vocab;

static size_t utf8_put(char *dst, unsigned cp)
{
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    dst[0] = (char)(0xC0 | (cp >> 6));
    dst[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static const char *tok_ptr(const vocab *v, size_t id)
{
    return v->arena + v->off[id];
}

static size_t slot_of(const vocab *v, const char *s, size_t n)
{
    return (size_t)fnv1a64(s, n) & (v->nslots - 1);
}

static long vocab_find(const vocab *v, const char *s, size_t n)
{
    for (size_t p = slot_of(v, s, n);; p = (p + 1) & (v->nslots - 1)) {
        uint32_t id = v->slots[p];
        if (id == 0)
            return -1;
        if (v->blen[id - 1] == n && memcmp(tok_ptr(v, id - 1), s, n) == 0)
            return (long)(id - 1);
    }
}

static void vocab_rehash(vocab *v, size_t nslots)
{
    free(v->slots);
    v->slots = calloc(nslots, sizeof *v->slots);
    if (v->slots == NULL)
        die_oom();
    v->nslots = nslots;
    for (size_t id = 0; id < v->ntok; id++) {
        size_t p = slot_of(v, tok_ptr(v, id), v->blen[id]);
        while (v->slots[p] != 0)
            p = (p + 1) & (nslots - 1);
        v->slots[p] = (uint32_t)(id + 1);
    }
}

static void vocab_add(vocab *v, const char *s, size_t n, unsigned nch, int space)
{
    if (v->ntok == v->tcap) {
        size_t nc = v->tcap ? v->tcap * 2 : 4096;
        v->off = realloc(v->off, nc * sizeof *v->off);
        v->blen = realloc(v->blen, nc);
        v->nch = realloc(v->nch, nc);
        v->space = realloc(v->space, nc);
        v->ml = realloc(v->ml, nc * sizeof *v->ml);
        v->mr = realloc(v->mr, nc * sizeof *v->mr);
        if (!v->off || !v->blen || !v->nch || !v->space || !v->ml || !v->mr)
            die_oom();
        v->tcap = nc;
    }
    if (v->alen + n > v->acap) {
        size_t nc = v->acap ? v->acap * 2 : 65536;
        while (nc < v->alen + n)
            nc *= 2;
        v->arena = realloc(v->arena, nc);
        if (v->arena == NULL)
            die_oom();
        v->acap = nc;
    }
    memcpy(v->arena + v->alen, s, n);
    v->off[v->ntok] = (uint32_t)v->alen;
    v->blen[v->ntok] = (uint8_t)n;
    v->nch[v->ntok] = (uint8_t)nch;
    v->space[v->ntok] = (uint8_t)space;
    v->alen += n;
    v->ntok++;
    if (v->ntok * 2 > v->nslots) {
        vocab_rehash(v, v->nslots ? v->nslots * 2 : 1024);
    } else {
        size_t p = slot_of(v, s, n);
        while (v->slots[p] != 0)
            p = (p + 1) & (v->nslots - 1);
        v->slots[p] = (uint32_t)v->ntok;
    }
}

/* Weight of a raw byte as the first character of a merge's left part
 * (CTX_LEFT) or as a right part following a vowel, a consonant or anything
 * else: alternating vowels and consonants keeps tokens pronounceable. */

static int is_vowel(unsigned b)
{
    return b == 'a' || b == 'e' || b == 'i' || b == 'o' || b == 'u' || b == 'y';
}

static unsigned byte_weight(unsigned b, int ctx)
{
    static const unsigned short freq[26] = {82, 15, 28, 43, 127, 22, 20, 61, 70, 2,  8, 40, 24,
                                            67, 75, 19, 1,  60, 63,  91, 28, 10, 24, 2, 20, 1};
    if (b >= 'a' && b <= 'z') {
        unsigned w = freq[b - 'a'] * 4u;
        if (ctx == CTX_AFTER_VOWEL)
            return is_vowel(b) ? w / 6u : w;
        if (ctx == CTX_AFTER_CONSONANT)
            return is_vowel(b) ? w * 3u : w / 3u;
        return w;
    }
    if (b >= 'A' && b <= 'Z')
        return ctx == CTX_LEFT || ctx == CTX_AFTER_OTHER ? freq[b - 'A'] / 3u + 1u : 0u;
    if (b >= '0' && b <= '9')
        return ctx == CTX_AFTER_VOWEL || ctx == CTX_AFTER_CONSONANT ? 0u : 8u;
    if (b == ' ')
        return ctx == CTX_LEFT ? 1400u : 0u; /* "Ġ": word starts */
    if (b == '\n')
        return ctx == CTX_LEFT ? 12u : ctx == CTX_AFTER_OTHER ? 6u : 0u;
    if (b == '\t')
        return ctx == CTX_LEFT ? 2u : 0u;
    if (b < 0x20 || b == 0x7f)
        return 0;
    if (b < 0x80)
        return ctx == CTX_LEFT || ctx == CTX_AFTER_OTHER ? 6u : 0u; /* punctuation */
    return ctx == CTX_LEFT || ctx == CTX_AFTER_OTHER ? 1u : 0u;      /* UTF-8 fragments */
}

static int byte_ctx(const char *tok, size_t n)
{
    unsigned b = (unsigned char)tok[n - 1];
    if (b >= 'A' && b <= 'Z')
        b += 'a' - 'A';
    if (b >= 'a' && b <= 'z')
        return is_vowel(b) ? CTX_AFTER_VOWEL : CTX_AFTER_CONSONANT;
    return CTX_AFTER_OTHER;
}

static void vocab_init(vocab *v)
{
    memset(v, 0, sizeof *v);
    rng_seed(&v->r, TOKENIZER_SEED);
    /* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to
     * U+0100 + n, in byte order; ids 0..255 follow the printable-first order. */
    unsigned order[BASE_TOKENS], cp[BASE_TOKENS];
    unsigned k = 0, extra = 0;
    for (unsigned b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174))
            cp[b] = b;
        else
            cp[b] = 0;
    }
    for (unsigned b = 0; b < 256; b++)
        if (cp[b] != 0)
            order[k++] = b;
    for (unsigned b = 0; b < 256; b++) {
        if (cp[b] == 0) {
            cp[b] = 256 + extra++;
            order[k++] = b;
        }
    }
    uint32_t tot[N_CTX] = {0};
    for (unsigned id = 0; id < BASE_TOKENS; id++) {
        char s[4];
        unsigned b = order[id];
        size_t n = utf8_put(s, cp[b]);
        vocab_add(v, s, n, 1, b == ' ');
        for (int c = 0; c < N_CTX; c++) {
            tot[c] += byte_weight(b, c);
            v->cum[c][id] = tot[c];
        }
    }
}

static size_t pick_base(vocab *v, const uint32_t *cum)
{
    uint32_t x = (uint32_t)(rng_next(&v->r) % cum[BASE_TOKENS - 1]);
    size_t lo = 0, hi = BASE_TOKENS - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Generates merges until there are `merges` of them. The sequence is a
 * prefix-stable function of TOKENIZER_SEED. Early merges join single
 * characters; later ones increasingly reuse earlier (mostly early, i.e.
 * frequent) merges, so token length grows along the merge list as in a
 * trained BPE. */
static void vocab_grow(vocab *v, size_t merges)
{
    char cat[2 * 2 * MAX_TOKEN_CHARS];
    while (v->ntok < BASE_TOKENS + merges) {
        size_t m = v->ntok - BASE_TOKENS;
        double ramp = (double)m / ((double)m + 4000.0);
        size_t l, r;
        if (rng_uniform(&v->r) >= 0.90 * ramp) {
            l = pick_base(v, v->cum[CTX_LEFT]);
        } else {
            double u = rng_uniform(&v->r);
            l = BASE_TOKENS + (size_t)((double)m * u * u);
        }
        if (rng_uniform(&v->r) >= 0.60 * ramp) {
            r = pick_base(v, v->cum[byte_ctx(tok_ptr(v, l), v->blen[l])]);
        } else {
            double u = rng_uniform(&v->r);
            r = BASE_TOKENS + (size_t)((double)m * u * u);
            unsigned first = (unsigned char)tok_ptr(v, r)[0];
            if (v->space[r] || byte_weight(first, byte_ctx(tok_ptr(v, l), v->blen[l])) == 0)
                continue; /* no word start or capital inside a word */
        }
        unsigned nch = (unsigned)v->nch[l] + v->nch[r];
        if (nch > MAX_TOKEN_CHARS)
            continue;
        size_t nl = v->blen[l], nr = v->blen[r];
        memcpy(cat, tok_ptr(v, l), nl);
        memcpy(cat + nl, tok_ptr(v, r), nr);
        if (vocab_find(v, cat, nl + nr) >= 0)
            continue;
        vocab_add(v, cat, nl + nr, nch, v->space[l]);
        v->ml[v->ntok - 1] = (uint32_t)l;
        v->mr[v->ntok - 1] = (uint32_t)r;
    }
}

static void vocab_free(vocab *v)
{
    free(v->arena);
    free(v->off);
    free(v->blen);
    free(v->nch);
    free(v->space);
    free(v->ml);
    free(v->mr);
    free(v->slots);
}

typedef struct added_token {
    const char *content;
    int special;
} added_token;

static const added_token k_added[] = {
    {"<|endoftext|>", 1},     {"<|im_start|>", 1},     {"<|im_end|>", 1},
    {"<|object_ref_start|>", 1}, {"<|object_ref_end|>", 1}, {"<|box_start|>", 1},
    {"<|box_end|>", 1},       {"<|quad_start|>", 1},   {"<|quad_end|>", 1},
    {"<|vision_start|>", 1},  {"<|vision_end|>", 1},   {"<|vision_pad|>", 1},
    {"<|image_pad|>", 1},     {"<|video_pad|>", 1},    {"<tool_call>", 0},
    {"</tool_call>", 0},      {"<|fim_prefix|>", 1},   {"<|fim_middle|>", 1},
    {"<|fim_suffix|>", 1},    {"<|fim_pad|>", 1},      {"<|repo_name|>", 1},
    {"<|file_sep|>", 1},      {"<tool_response>", 0},  {"</tool_response>", 0},
    {"<think>", 0},           {"</think>", 0},
};
#define N_ADDED (sizeof k_added / sizeof k_added[0])
#define N_ADDITIONAL_SPECIAL 13u /* <|im_start|> .. <|video_pad|> */

/* tokenizer.json as HF tokenizers saves it (serde_json pretty, 2 spaces). */
static void render_tokenizer(const vocab *v, size_t merges, sbuf *b)
{
    size_t nvocab = BASE_TOKENS + merges;
    sb_puts(b, "{\n"
               "  \"version\": \"1.0\",\n"
               "  \"truncation\": null,\n"
               "  \"padding\": null,\n"
               "  \"added_tokens\": [\n");
    for (size_t i = 0; i < N_ADDED; i++) {
        sb_puts(b, "    {\n      \"id\": ");
        sb_u64(b, nvocab + i);
        sb_puts(b, ",\n      \"content\": ");
        sb_jstrz(b, k_added[i].content);
        sb_puts(b, ",\n"
                   "      \"single_word\": false,\n"
                   "      \"lstrip\": false,\n"
                   "      \"rstrip\": false,\n"
                   "      \"normalized\": false,\n"
                   "      \"special\": ");
        sb_puts(b, k_added[i].special ? "true\n" : "false\n");
        sb_puts(b, i + 1 < N_ADDED ? "    },\n" : "    }\n");
    }
    sb_puts(b, "  ],\n"
               "  \"normalizer\": {\n"
               "    \"type\": \"NFC\"\n"
               "  },\n"
               "  \"pre_tokenizer\": {\n"
               "    \"type\": \"Sequence\",\n"
               "    \"pretokenizers\": [\n"
               "      {\n"
               "        \"type\": \"Split\",\n"
               "        \"pattern\": {\n"
               "          \"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
               "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|"
               "\\\\s+(?!\\\\S)|\\\\s+\"\n"
               "        },\n"
               "        \"behavior\": \"Isolated\",\n"
               "        \"invert\": false\n"
               "      },\n"
               "      {\n"
               "        \"type\": \"ByteLevel\",\n"
               "        \"add_prefix_space\": false,\n"
               "        \"trim_offsets\": false,\n"
               "        \"use_regex\": false\n"
               "      }\n"
               "    ]\n"
               "  },\n"
               "  \"post_processor\": ");
    sb_puts(b, "{\n"
               "    \"type\": \"ByteLevel\",\n"
               "    \"add_prefix_space\": false,\n"
               "    \"trim_offsets\": false,\n"
               "    \"use_regex\": false\n"
               "  },\n"
               "  \"decoder\": {\n"
               "    \"type\": \"ByteLevel\",\n"
               "    \"add_prefix_space\": false,\n"
               "    \"trim_offsets\": false,\n"
               "    \"use_regex\": false\n"
               "  },\n"
               "  \"model\": {\n"
               "    \"type\": \"BPE\",\n"
               "    \"dropout\": null,\n"
               "    \"unk_token\": null,\n"
               "    \"continuing_subword_prefix\": \"\",\n"
               "    \"end_of_word_suffix\": \"\",\n"
               "    \"fuse_unk\": false,\n"
               "    \"byte_fallback\": false,\n"
               "    \"ignore_merges\": false,\n"
               "    \"vocab\": {\n");
    for (size_t id = 0; id < nvocab; id++) {
        sb_puts(b, "      ");
        sb_jstr(b, tok_ptr(v, id), v->blen[id]);
        sb_puts(b, ": ");
        sb_u64(b, id);
        sb_puts(b, id + 1 < nvocab ? ",\n" : "\n");
    }
    sb_puts(b, "    },\n    \"merges\": ");
    if (merges == 0) {
        sb_puts(b, "[]\n");
    } else {
        sb_puts(b, "[\n");
        for (size_t k = 0; k < merges; k++) {
            size_t id = BASE_TOKENS + k;
            sb_puts(b, "      [\n        ");
            sb_jstr(b, tok_ptr(v, v->ml[id]), v->blen[v->ml[id]]);
            sb_puts(b, ",\n        ");
            sb_jstr(b, tok_ptr(v, v->mr[id]), v->blen[v->mr[id]]);
            sb_puts(b, k + 1 < merges ? "\n      ],\n" : "\n      ]\n");
        }
        sb_puts(b, "    ]\n");
    }
    sb_puts(b, "  }\n}");
}

static size_t tokenizer_size(const vocab *v, size_t merges)
{
    sbuf b = {0};
    b.count_only = 1;
    render_tokenizer(v, merges, &b);
    return b.len;
}

/* vocab.json: compact token -> id map in id order (json.dumps(..., separators
 * without spaces, ensure_ascii=False)); added tokens are not in it. */
static void render_vocab_json(const vocab *v, size_t merges, sbuf *b)
{
    size_t nvocab = BASE_TOKENS + merges;
    sb_puts(b, "{");
    for (size_t id = 0; id < nvocab; id++) {
        if (id)
            sb_puts(b, ",");
        sb_jstr(b, tok_ptr(v, id), v->blen[id]);
        sb_puts(b, ":");
        sb_u64(b, id);
    }
    sb_puts(b, "}");
}

static void render_tokenizer_config(size_t merges, sbuf *b)
{
    size_t first = BASE_TOKENS + merges;
    sb_puts(b, "{\n"
               "  \"add_bos_token\": false,\n"
               "  \"add_prefix_space\": false,\n"
               "  \"added_tokens_decoder\": {\n");
    for (size_t i = 0; i < N_ADDED; i++) {
        sb_puts(b, "    \"");
        sb_u64(b, first + i);
        sb_puts(b, "\": {\n      \"content\": ");
        sb_jstrz(b, k_added[i].content);
        sb_puts(b, ",\n"
                   "      \"lstrip\": false,\n"
                   "      \"normalized\": false,\n"
                   "      \"rstrip\": false,\n"
                   "      \"single_word\": false,\n"
                   "      \"special\": ");
        sb_puts(b, k_added[i].special ? "true\n" : "false\n");
        sb_puts(b, i + 1 < N_ADDED ? "    },\n" : "    }\n");
    }
    sb_puts(b, "  },\n  \"additional_special_tokens\": [\n");
    for (size_t i = 1; i <= N_ADDITIONAL_SPECIAL; i++) {
        sb_puts(b, "    ");
        sb_jstrz(b, k_added[i].content);
        sb_puts(b, i < N_ADDITIONAL_SPECIAL ? ",\n" : "\n");
    }
    sb_puts(b, "  ],\n"
               "  \"bos_token\": null,\n"
               "  \"chat_template\": \"{%- if messages[0].role == 'system' %}"
               "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
               "{%- endif %}"
               "{%- for message in messages %}"
               "{%- if message.role != 'system' %}"
               "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
               "{%- endif %}"
               "{%- endfor %}"
               "{%- if add_generation_prompt %}"
               "{{- '<|im_start|>assistant\\n' }}"
               "{%- if enable_thinking is defined and enable_thinking is false %}"
               "{{- '<think>\\n\\n</think>\\n\\n' }}"
               "{%- endif %}"
               "{%- endif %}\",\n"
               "  \"clean_up_tokenization_spaces\": false,\n"
               "  \"eos_token\": \"<|im_end|>\",\n"
               "  \"errors\": \"replace\",\n"
               "  \"extra_special_tokens\": {},\n"
               "  \"model_max_length\": 131072,\n"
               "  \"pad_token\": \"<|endoftext|>\",\n"
               "  \"split_special_tokens\": false,\n"
               "  \"tokenizer_class\": \"Qwen2Tokenizer\",\n"
               "  \"unk_token\": null\n"
               "}\n");
}

static void render_special_tokens_map(sbuf *b)
{
    sb_puts(b, "{\n  \"additional_special_tokens\": [\n");
    for (size_t i = 1; i <= N_ADDITIONAL_SPECIAL; i++) {
        sb_puts(b, "    ");
        sb_jstrz(b, k_added[i].content);
        sb_puts(b, i < N_ADDITIONAL_SPECIAL ? ",\n" : "\n");
    }
    sb_puts(b, "  ],\n"
               "  \"eos_token\": {\n"
               "    \"content\": \"<|im_end|>\",\n"
               "    \"lstrip\": false,\n"
               "    \"normalized\": false,\n"
               "    \"rstrip\": false,\n"
               "    \"single_word\": false\n"
               "  },\n"
               "  \"pad_token\": {\n"
               "    \"content\": \"<|endoftext|>\",\n"
               "    \"lstrip\": false,\n"
               "    \"normalized\": false,\n"
               "    \"rstrip\": false,\n"
               "    \"single_word\": false\n"
               "  }\n"
               "}\n");
}

/* ================================================================ small text files */

static void render_readme(const options *o, size_t ntensors, uint64_t payload, sbuf *b)
{
    char alpha[64];
    fmt_number(alpha, sizeof alpha, o->alpha);
    sb_printf(b, "# %s\n\n", o->name);
    sb_puts(b, "Sample expert for **Qwen/Qwen3-0.6B** in the v1 package layout, written by\n"
               "`expert-gen-sample`. The adapter weights are deterministic pseudo-random\n"
               "numbers with the shapes and rough statistics of a trained PEFT adapter;\n"
               "they encode no skill. Use it to test packers, converters and readers.\n\n"
               "## Adapter\n\n"
               "| field | value |\n"
               "|---|---|\n");
    sb_printf(b, "| type | %s |\n", o->kind == AD_DORA   ? "DoRA (LoRA + magnitude vector)"
                                    : o->kind == AD_LORA ? "LoRA"
                                                         : "IA3");
    if (o->kind != AD_IA3)
        sb_printf(b, "| r / lora_alpha | %u / %s |\n", o->rank, alpha);
    sb_puts(b, "| target modules | ");
    for (unsigned i = 0; i < o->nmods; i++)
        sb_printf(b, "%s`%s`", i ? ", " : "", k_modules[o->mods[i]].name);
    sb_printf(b,
              " |\n| layers | %u |\n| dtype | %s |\n| tensors | %zu |\n"
              "| tensor bytes | %llu |\n| seed | %llu |\n\n",
              o->layers, dtype_st_name(o->dtype), ntensors, (unsigned long long)payload,
              (unsigned long long)o->seed);
    sb_puts(b, "## Files\n\n"
               "- `adapter_model.safetensors`, `adapter_config.json`: the PEFT adapter\n"
               "- `manifest.json`: hivellm expert manifest, schema 2.0\n"
               "- `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,\n"
               "  `vocab.json`: tokenizer-sized stand-ins for the base model's files\n"
               "- `grammar.gbnf`: decoding grammar (SQL subset)\n"
               "- `LICENSE`: Apache-2.0\n\n"
               "## Usage\n\n"
               "```python\n"
               "from peft import PeftModel\n"
               "from transformers import AutoModelForCausalLM\n\n"
               "base = AutoModelForCausalLM.from_pretrained(\"Qwen/Qwen3-0.6B\")\n"
               "model = PeftModel.from_pretrained(base, \"./");
    sb_puts(b, o->name);
    sb_puts(b, "\")\n"
               "```\n");
}

static const char k_grammar[] =
    "# SQL subset for text-to-SQL decoding (PostgreSQL flavour).\n"
    "root        ::= ws statement ws \";\"? ws\n"
    "statement   ::= select-stmt | insert-stmt | update-stmt | delete-stmt\n"
    "\n"
    "select-stmt ::= with-clause? \"SELECT\" ws1 (\"DISTINCT\" ws1)? select-list ws1\n"
    "                \"FROM\" ws1 from-list (ws1 where)? (ws1 group-by)? (ws1 having)?\n"
    "                (ws1 order-by)? (ws1 limit)?\n"
    "with-clause ::= \"WITH\" ws1 ident ws1 \"AS\" ws \"(\" ws select-stmt ws \")\" ws1\n"
    "select-list ::= \"*\" | select-item (ws \",\" ws select-item)*\n"
    "select-item ::= expr (ws1 \"AS\" ws1 ident)?\n"
    "from-list   ::= table-ref (ws join)*\n"
    "table-ref   ::= ident (ws1 ident)?\n"
    "join        ::= (\"LEFT\" ws1 | \"INNER\" ws1)? \"JOIN\" ws1 table-ref ws1 \"ON\" ws1 condition\n"
    "where       ::= \"WHERE\" ws1 condition\n"
    "group-by    ::= \"GROUP\" ws1 \"BY\" ws1 expr (ws \",\" ws expr)*\n"
    "having      ::= \"HAVING\" ws1 condition\n"
    "order-by    ::= \"ORDER\" ws1 \"BY\" ws1 expr (ws1 (\"ASC\" | \"DESC\"))?\n"
    "limit       ::= \"LIMIT\" ws1 number\n"
    "\n"
    "insert-stmt ::= \"INSERT\" ws1 \"INTO\" ws1 ident ws \"(\" ws ident-list ws \")\" ws1\n"
    "                \"VALUES\" ws \"(\" ws expr (ws \",\" ws expr)* ws \")\"\n"
    "update-stmt ::= \"UPDATE\" ws1 ident ws1 \"SET\" ws1 assignment (ws \",\" ws assignment)*\n"
    "                (ws1 where)?\n"
    "delete-stmt ::= \"DELETE\" ws1 \"FROM\" ws1 ident (ws1 where)?\n"
    "assignment  ::= ident ws \"=\" ws expr\n"
    "ident-list  ::= ident (ws \",\" ws ident)*\n"
    "\n"
    "condition   ::= predicate (ws1 (\"AND\" | \"OR\") ws1 predicate)*\n"
    "predicate   ::= (\"NOT\" ws1)? expr ws compare ws expr\n"
    "              | expr ws1 \"IS\" ws1 (\"NOT\" ws1)? \"NULL\"\n"
    "              | expr ws1 \"IN\" ws \"(\" ws (select-stmt | expr (ws \",\" ws expr)*) ws \")\"\n"
    "              | expr ws1 \"BETWEEN\" ws1 expr ws1 \"AND\" ws1 expr\n"
    "              | expr ws1 \"LIKE\" ws1 string\n"
    "compare     ::= \"=\" | \"<>\" | \"!=\" | \"<=\" | \">=\" | \"<\" | \">\"\n"
    "expr        ::= term (ws (\"+\" | \"-\" | \"*\" | \"/\") ws term)*\n"
    "term        ::= aggregate | column | number | string | \"(\" ws expr ws \")\"\n"
    "aggregate   ::= (\"COUNT\" | \"SUM\" | \"AVG\" | \"MIN\" | \"MAX\") ws \"(\" ws\n"
    "                (\"*\" | (\"DISTINCT\" ws1)? expr) ws \")\"\n"
    "column      ::= ident (\".\" ident)?\n"
    "ident       ::= [a-zA-Z_] [a-zA-Z0-9_]*\n"
    "number      ::= \"-\"? [0-9]+ (\".\" [0-9]+)?\n"
    "string      ::= \"'\" ([^'] | \"''\")* \"'\"\n"
    "ws          ::= [ \\t\\n]*\n"
    "ws1         ::= [ \\t\\n]+\n";

static const char k_license[] =
    "                                 Apache License\n"
    "                           Version 2.0, January 2004\n"
    "                        http://www.apache.org/licenses/\n"
    "\n"
    "   Copyright 2025 HiveLLM\n"
    "\n"
    "   Licensed under the Apache License, Version 2.0 (the \"License\");\n"
    "   you may not use this file except in compliance with the License.\n"
    "   You may obtain a copy of the License at\n"
    "\n"
    "       http://www.apache.org/licenses/LICENSE-2.0\n"
    "\n"
    "   Unless required by applicable law or agreed to in writing, software\n"
    "   distributed under the License is distributed on an \"AS IS\" BASIS,\n"
    "   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\n"
    "   See the License for the specific language governing permissions and\n"
    "   limitations under the License.\n";

/* ================================================================ main */

static int write_sbuf(const options *o, const char *name, sbuf *b, const char *fmt, ...)
{
    int rc = write_whole(o->outdir, name, b->p ? b->p : "", b->len);
    if (rc == 0 && !o->quiet) {
        char extra[256] = "";
        if (fmt != NULL) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(extra, sizeof extra, fmt, ap);
            va_end(ap);
        }
        summary(o, name, b->len, extra[0] ? "%s" : NULL, extra);
    }
    free(b->p);
    memset(b, 0, sizeof *b);
    return rc;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc < 0)
        return 0; /* --help */
    if (rc != 0)
        return rc;

    /* Plan the tokenizer first: a bad --tokenizer-bytes is a usage error and
     * must be reported before anything is written. */
    vocab v;
    vocab_init(&v);
    size_t merges = DEFAULT_MERGES;
    size_t pad = 0;
    if (o.tokenizer_bytes_set) {
        size_t min = tokenizer_size(&v, 0);
        if (o.tokenizer_bytes < min) {
            vocab_free(&v);
            return usage_error("--tokenizer-bytes: at least %zu bytes are needed", min);
        }
        size_t hi = DEFAULT_MERGES;
        vocab_grow(&v, hi);
        while (tokenizer_size(&v, hi) < o.tokenizer_bytes) {
            if (hi == MAX_MERGES) {
                size_t max = tokenizer_size(&v, hi);
                vocab_free(&v);
                return usage_error("--tokenizer-bytes: at most %zu bytes are supported", max);
            }
            hi = hi * 2 > MAX_MERGES ? MAX_MERGES : hi * 2;
            vocab_grow(&v, hi);
        }
        size_t lo = 0; /* invariant: size(lo) <= B <= size(hi) */
        while (lo < hi) {
            size_t mid = lo + (hi - lo + 1) / 2;
            if (tokenizer_size(&v, mid) <= o.tokenizer_bytes)
                lo = mid;
            else
                hi = mid - 1;
        }
        merges = lo;
        pad = (size_t)(o.tokenizer_bytes - tokenizer_size(&v, merges));
    } else {
        vocab_grow(&v, merges);
    }

    if (mkdir_p(o.outdir) != 0) {
        vocab_free(&v);
        return EXIT_IO;
    }

    uint64_t payload = 0, st_size = 0;
    size_t ntensors = 0;
    if (write_safetensors(&o, &payload, &ntensors, &st_size) != 0)
        goto io_error;
    summary(&o, "adapter_model.safetensors", st_size, "%zu tensors, %s, %llu tensor bytes",
            ntensors, dtype_st_name(o.dtype), (unsigned long long)payload);

    sbuf b = {0};
    build_adapter_config(&o, &b);
    if (write_sbuf(&o, "adapter_config.json", &b, "%s", o.kind == AD_IA3 ? "IA3Config"
                                                                         : "LoraConfig") != 0)
        goto io_error;

    build_manifest(&o, &b);
    if (write_sbuf(&o, "manifest.json", &b, "schema 2.0") != 0)
        goto io_error;

    render_tokenizer(&v, merges, &b);
    for (size_t i = 0; i < pad; i++)
        sb_puts(&b, " ");
    if (write_sbuf(&o, "tokenizer.json", &b, "vocab %zu + %zu added, %zu merges",
                   BASE_TOKENS + merges, (size_t)N_ADDED, merges) != 0)
        goto io_error;

    render_tokenizer_config(merges, &b);
    if (write_sbuf(&o, "tokenizer_config.json", &b, NULL) != 0)
        goto io_error;

    render_special_tokens_map(&b);
    if (write_sbuf(&o, "special_tokens_map.json", &b, NULL) != 0)
        goto io_error;

    render_vocab_json(&v, merges, &b);
    if (write_sbuf(&o, "vocab.json", &b, "%zu tokens", BASE_TOKENS + merges) != 0)
        goto io_error;

    render_readme(&o, ntensors, payload, &b);
    if (write_sbuf(&o, "README.md", &b, NULL) != 0)
        goto io_error;

    sb_puts(&b, k_grammar);
    if (write_sbuf(&o, "grammar.gbnf", &b, NULL) != 0)
        goto io_error;

    sb_puts(&b, k_license);
    if (write_sbuf(&o, "LICENSE", &b, NULL) != 0)
        goto io_error;

    vocab_free(&v);
    return 0;

io_error:
    vocab_free(&v);
    return EXIT_IO;
}
