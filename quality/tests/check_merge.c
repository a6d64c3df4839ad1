/* check_merge.c — checks a file written by `expert-cli merge` against the
 * PEFT formulas of spec §10 evaluated in long double, straight from the
 * expert's sections (not through the fusion code):
 *
 *   usage: check_merge EXPERT BASE.safetensors MERGED.safetensors [--fan-in-fan-out]
 *
 * - the merged file's header is byte-identical to the base's, and every
 *   tensor no module targets is byte-identical;
 * - F32 targets: |merged − E| ≤ u·|E| + 2γ·M, the bound expert_adapter.h
 *   states (u = 2^-24, γ = (N + 8)·2^-53); the report gives the largest error
 *   in units of the last place of E and the share of elements equal to E
 *   correctly rounded (round to nearest even);
 * - BF16/F16 targets: |merged − E| ≤ 1 ulp of the 16-bit format (E rounded
 *   to binary32, then to the 16-bit format, both RNE).
 * Exit 0 on success, 1 on a mismatch, 2 on bad input. */
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "expert.h"
#include "expert_adapter.h"

typedef struct mapped {
    const uint8_t *p;
    size_t n;
    expert_safetensors *st;
} mapped;

static int map(const char *path, mapped *m)
{
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        fprintf(stderr, "check_merge: cannot open %s\n", path);
        return -1;
    }
    m->n = (size_t)sb.st_size;
    void *p = mmap(NULL, m->n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return -1;
    m->p = p;
    expert_error e;
    if (expert_safetensors_parse(m->p, m->n, &m->st, &e) != EXPERT_OK) {
        fprintf(stderr, "check_merge: %s: %s\n", path, e.message);
        return -1;
    }
    return 0;
}

static int find(const mapped *m, const char *name, expert_tensor_info *ti)
{
    uint32_t n = expert_safetensors_count(m->st);
    for (uint32_t i = 0; i < n; i++)
        if (expert_safetensors_tensor(m->st, i, ti) == EXPERT_OK && strcmp(ti->name, name) == 0)
            return 0;
    return -1;
}

/* Section of `type` owned by module m, decoded to binary32 (or int64 for CSR). */
static void *section(expert_reader *r, uint32_t m, uint16_t type, uint64_t *numel, int as_index)
{
    uint32_t n = expert_section_count(r);
    for (uint32_t i = 0; i < n; i++) {
        expert_section_info s;
        expert_section(r, i, &s);
        if (s.module != m || s.type != type)
            continue;
        uint8_t *raw = malloc(s.decoded_length + 1);
        expert_error e;
        if (expert_read(r, i, raw, s.decoded_length, 0, &e) != EXPERT_OK && s.decoded_length) {
            fprintf(stderr, "check_merge: read: %s\n", e.message);
            exit(2);
        }
        uint64_t cnt = 1;
        for (unsigned k = 0; k < s.rank; k++)
            cnt *= s.dims[k];
        *numel = cnt;
        void *out;
        if (as_index) {
            int64_t *v = malloc(cnt * sizeof *v + 8);
            for (uint64_t k = 0; k < cnt; k++) {
                if (s.dtype == EXPERT_DTYPE_I32) {
                    int32_t t;
                    memcpy(&t, raw + 4 * k, 4);
                    v[k] = t;
                } else {
                    memcpy(&v[k], raw + 8 * k, 8);
                }
            }
            out = v;
        } else {
            float *v = malloc(cnt * sizeof *v + 4);
            expert_floats_decode(s.dtype, raw, (size_t)cnt, v, NULL);
            out = v;
        }
        free(raw);
        return out;
    }
    *numel = 0;
    return NULL;
}

static const char *strip(const char *path)
{
    return strncmp(path, "base_model.model.", 17) == 0 ? path + 17 : path;
}

static double ulp32(long double x)
{
    float f = (float)fabsl(x);
    if (f == 0.0f)
        return 0x1p-149;
    return (double)(nextafterf(f, INFINITY) - f);
}

int main(int argc, char **argv)
{
    int fifo = argc == 5 && strcmp(argv[4], "--fan-in-fan-out") == 0;
    if (argc != 4 && !fifo) {
        fprintf(stderr, "usage: check_merge EXPERT BASE.safetensors MERGED.safetensors [--fan-in-fan-out]\n");
        return 2;
    }
    expert_reader *r = NULL;
    expert_error e;
    if (expert_open(argv[1], NULL, &r, &e) != EXPERT_OK) {
        fprintf(stderr, "check_merge: %s: %s\n", argv[1], e.message);
        return 2;
    }
    mapped base, merged;
    if (map(argv[2], &base) != 0 || map(argv[3], &merged) != 0)
        return 2;
    uint64_t hl = expert_safetensors_header_length(base.st);
    if (merged.n != base.n || expert_safetensors_header_length(merged.st) != hl || memcmp(base.p, merged.p, hl) != 0) {
        fprintf(stderr, "FAIL: merged header or size differs from the base\n");
        return 1;
    }
    uint32_t nt = expert_safetensors_count(base.st), nm = expert_module_count(r);
    char *targeted = calloc(nt, 1);
    int fail = 0;
    uint64_t elems = 0, exact = 0;
    double worst_ulp = 0.0;
    for (uint32_t m = 0; m < nm; m++) {
        expert_module_info mi;
        expert_module(r, m, &mi);
        char name[1200];
        snprintf(name, sizeof name, "%s.weight", strip(mi.path));
        expert_tensor_info tb, tm;
        if (find(&base, name, &tb) != 0 || find(&merged, name, &tm) != 0) {
            fprintf(stderr, "FAIL: no tensor %s\n", name);
            return 1;
        }
        for (uint32_t i = 0; i < nt; i++) {
            expert_tensor_info t;
            expert_safetensors_tensor(base.st, i, &t);
            if (strcmp(t.name, name) == 0)
                targeted[i] = 1;
        }
        size_t out = (size_t)tb.dims[fifo], in = (size_t)tb.dims[!fifo];
        float *W = malloc(out * in * sizeof *W), *Wm = malloc(out * in * sizeof *Wm);
        expert_floats_decode(tb.dtype, base.p + tb.data_offset, out * in, W, NULL);
        expert_floats_decode(tm.dtype, merged.p + tm.data_offset, out * in, Wm, NULL);
        if (fifo) { /* stored [in, out]: work on the [out, in] transposes */
            float *t1 = malloc(out * in * sizeof *t1), *t2 = malloc(out * in * sizeof *t2);
            for (size_t i = 0; i < in; i++)
                for (size_t o = 0; o < out; o++) {
                    t1[o * in + i] = W[i * out + o];
                    t2[o * in + i] = Wm[i * out + o];
                }
            free(W);
            free(Wm);
            W = t1;
            Wm = t2;
        }
        long double *E = calloc(out * in, sizeof *E), *M = calloc(out * in, sizeof *M);
        size_t nterms = 2;
        uint64_t n1, n2, n3;
        if (strcmp(mi.type, "lora") == 0 || strcmp(mi.type, "dora") == 0) {
            float *A = section(r, m, EXPERT_SECTION_LORA_A, &n1, 0);
            float *B = section(r, m, EXPERT_SECTION_LORA_B, &n2, 0);
            size_t rk = (size_t)mi.r;
            long double s = mi.rslora ? (long double)mi.alpha / sqrtl((long double)rk)
                                      : (long double)mi.alpha / (long double)rk;
            nterms += rk;
            for (size_t o = 0; o < out; o++)
                for (size_t i = 0; i < in; i++) {
                    long double d = 0, mag = 0;
                    for (size_t k = 0; k < rk; k++) {
                        long double p = (long double)B[o * rk + k] * A[k * in + i];
                        d += p;
                        mag += fabsl(p);
                    }
                    E[o * in + i] = W[o * in + i] + s * d;
                    M[o * in + i] = fabsl((long double)W[o * in + i]) + fabsl(s) * mag;
                }
            if (mi.type[0] == 'd') { /* PEFT: diag(m / ||W + ΔW||_row) (W + ΔW) */
                float *mag = section(r, m, EXPERT_SECTION_DORA_MAGNITUDE, &n3, 0);
                nterms += in;
                for (size_t o = 0; o < out; o++) {
                    long double ss = 0;
                    for (size_t i = 0; i < in; i++)
                        ss += E[o * in + i] * E[o * in + i];
                    long double f = mag[o] / sqrtl(ss);
                    for (size_t i = 0; i < in; i++) {
                        E[o * in + i] *= f;
                        M[o * in + i] = fabsl(E[o * in + i]) + f * M[o * in + i];
                    }
                }
                free(mag);
            }
            free(A);
            free(B);
        } else if (strcmp(mi.type, "ia3") == 0) {
            float *l = section(r, m, EXPERT_SECTION_IA3_VECTOR, &n1, 0);
            for (size_t o = 0; o < out; o++)
                for (size_t i = 0; i < in; i++) {
                    E[o * in + i] = (long double)W[o * in + i] * (mi.feedforward ? l[i] : l[o]);
                    M[o * in + i] = fabsl(E[o * in + i]);
                }
            if (!mi.feedforward) { /* the bias is scaled too (spec §10.5) */
                char bname[1200];
                snprintf(bname, sizeof bname, "%s.bias", strip(mi.path));
                expert_tensor_info bb, bm;
                if (find(&base, bname, &bb) == 0 && find(&merged, bname, &bm) == 0) {
                    float *b = malloc(out * sizeof *b), *b2 = malloc(out * sizeof *b2);
                    expert_floats_decode(bb.dtype, base.p + bb.data_offset, out, b, NULL);
                    expert_floats_decode(bm.dtype, merged.p + bm.data_offset, out, b2, NULL);
                    for (size_t o = 0; o < out; o++) {
                        /* one exact product, rounded to binary32, then to the base dtype (RNE) */
                        float want = (float)((long double)l[o] * b[o]);
                        uint8_t enc[8];
                        expert_floats_encode(bm.dtype, &want, 1, enc, NULL);
                        expert_floats_decode(bm.dtype, enc, 1, &want, NULL);
                        if (b2[o] != want) {
                            if (fail < 10)
                                fprintf(stderr, "FAIL: %s[%zu]: %.6g, want %.6g\n", bname, o, (double)b2[o],
                                        (double)want);
                            fail++;
                        }
                    }
                    for (uint32_t i = 0; i < nt; i++) {
                        expert_tensor_info t;
                        expert_safetensors_tensor(base.st, i, &t);
                        if (strcmp(t.name, bname) == 0)
                            targeted[i] = 1;
                    }
                    free(b);
                    free(b2);
                }
            }
            free(l);
        } else { /* osd: W + U·diag(S)·Vt + Sp */
            float *U = section(r, m, EXPERT_SECTION_OSD_U, &n1, 0);
            float *S = section(r, m, EXPERT_SECTION_OSD_S, &n2, 0);
            float *Vt = section(r, m, EXPERT_SECTION_OSD_VT, &n3, 0);
            size_t k = (size_t)mi.r;
            nterms += k + in;
            for (size_t o = 0; o < out; o++)
                for (size_t i = 0; i < in; i++) {
                    long double d = 0, mag = 0;
                    for (size_t j = 0; j < k; j++) {
                        long double p = (long double)U[o * k + j] * S[j] * Vt[j * in + i];
                        d += p;
                        mag += fabsl(p);
                    }
                    E[o * in + i] = W[o * in + i] + d;
                    M[o * in + i] = fabsl((long double)W[o * in + i]) + mag;
                }
            uint64_t np, nx, nv;
            int64_t *ip = section(r, m, EXPERT_SECTION_OSD_SPARSE_INDPTR, &np, 1);
            int64_t *ix = section(r, m, EXPERT_SECTION_OSD_SPARSE_INDICES, &nx, 1);
            float *v = section(r, m, EXPERT_SECTION_OSD_SPARSE_VALUES, &nv, 0);
            if (ip != NULL)
                for (size_t o = 0; o < out; o++)
                    for (int64_t j = ip[o]; j < ip[o + 1]; j++) {
                        E[o * in + (size_t)ix[j]] += v[j];
                        M[o * in + (size_t)ix[j]] += fabsl((long double)v[j]);
                    }
            free(U);
            free(S);
            free(Vt);
            free(ip);
            free(ix);
            free(v);
        }
        long double gamma = (long double)(nterms + 8) * 0x1p-53L;
        for (size_t q = 0; q < out * in; q++) {
            long double diff = fabsl((long double)Wm[q] - E[q]);
            double u = ulp32(E[q]);
            elems++;
            if (tm.dtype == EXPERT_DTYPE_F32) {
                long double bound = 0x1p-24L * fabsl(E[q]) + 2.0L * gamma * M[q] + 0x1p-148L;
                if (Wm[q] == (float)E[q])
                    exact++;
                if ((double)(diff / u) > worst_ulp)
                    worst_ulp = (double)(diff / u);
                if (!(diff <= bound)) {
                    if (fail < 10)
                        fprintf(stderr, "FAIL: %s[%zu]: merged %.9g, exact %.12Lg\n", name, q, (double)Wm[q], E[q]);
                    fail++;
                }
            } else {
                /* one ulp of the 16-bit format around E: 2^(e-7) (BF16) or 2^(e-10) (F16) */
                int ex;
                frexpl(E[q], &ex);
                long double ulp16 = ldexpl(1.0L, ex - (tm.dtype == EXPERT_DTYPE_BF16 ? 8 : 11));
                if (tm.dtype == EXPERT_DTYPE_F16 && ulp16 < 0x1p-24L)
                    ulp16 = 0x1p-24L;
                if ((double)(diff / ulp16) > worst_ulp)
                    worst_ulp = (double)(diff / ulp16);
                if (!(diff <= ulp16)) {
                    if (fail < 10)
                        fprintf(stderr, "FAIL: %s[%zu]: merged %.6g, exact %.12Lg\n", name, q, (double)Wm[q], E[q]);
                    fail++;
                }
            }
        }
        free(W);
        free(Wm);
        free(E);
        free(M);
    }
    uint32_t copied = 0;
    for (uint32_t i = 0; i < nt; i++) {
        if (targeted[i])
            continue;
        expert_tensor_info a, b;
        expert_safetensors_tensor(base.st, i, &a);
        expert_safetensors_tensor(merged.st, i, &b);
        if (a.data_length != b.data_length ||
            memcmp(base.p + a.data_offset, merged.p + b.data_offset, a.data_length) != 0) {
            fprintf(stderr, "FAIL: untargeted tensor %s changed\n", a.name);
            fail++;
        }
        copied++;
    }
    expert_tensor_info t0;
    expert_safetensors_tensor(base.st, 0, &t0);
    printf("check_merge: %u modules, %" PRIu64 " merged elements (%s), %u tensors copied byte-identical\n",
           nm, elems, expert_dtype_name(t0.dtype), copied);
    if (t0.dtype == EXPERT_DTYPE_F32)
        printf("check_merge: largest |merged - exact| = %.4f ulp of the binary32 result; %.4f%% of the "
               "elements equal the exact value correctly rounded (RNE)\n",
               worst_ulp, 100.0 * (double)exact / (double)(elems ? elems : 1));
    else
        printf("check_merge: largest |merged - exact| = %.4f ulp of the %s format (binary64 result "
               "rounded to binary32, then to %s, both RNE)\n",
               worst_ulp, expert_dtype_name(t0.dtype), expert_dtype_name(t0.dtype));
    printf("check_merge: %s\n", fail ? "FAIL" : "OK");
    free(targeted);
    expert_safetensors_free(base.st);
    expert_safetensors_free(merged.st);
    munmap((void *)(uintptr_t)base.p, base.n);
    munmap((void *)(uintptr_t)merged.p, merged.n);
    expert_close(r);
    return fail ? 1 : 0;
}
