/* diff.c — per-module relative Frobenius and spectral error between the
 * effective weight changes of two experts (modules matched by path).
 *
 * Both changes low-rank (LoRA s·B·A, OSD U·diag(S)·Vt without Sp, DoRA's
 * low-rank part when no base is given): ΔA − ΔB = [L_A, −L_B]·[R_A; R_B] and
 * both norms are exact from a thin QR of each factor and the SVD of the core.
 * Otherwise (OSD with Sp; DoRA or IA³ with a base) both changes are
 * materialised with the core fusion (expert_adapter_delta), the Frobenius
 * norm is exact and the spectral norm comes from block power iteration. */
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "qinternal.h"

#define FAIL(code, ...) xq_fail(err, (code), __VA_ARGS__)

typedef struct dctx {
    const uint8_t *base;
    size_t base_size;
    expert_safetensors *st;
} dctx;

static expert_status load_base_weight(const dctx *c, const char *path, uint64_t out, uint64_t in,
                                      float **W, expert_error *err)
{
    char name[1200];
    if (strncmp(path, "base_model.model.", 17) == 0)
        path += 17;
    snprintf(name, sizeof name, "%s.weight", path);
    uint32_t n = expert_safetensors_count(c->st);
    for (uint32_t i = 0; i < n; i++) {
        expert_tensor_info ti;
        if (expert_safetensors_tensor(c->st, i, &ti) != EXPERT_OK || strcmp(ti.name, name) != 0)
            continue;
        if (ti.rank != 2 || ti.dims[0] != out || ti.dims[1] != in)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "base tensor '%s' has the wrong shape", name);
        *W = xq_malloc((size_t)(out * in) * sizeof **W);
        if (*W == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        expert_status st = expert_floats_decode(ti.dtype, c->base + ti.data_offset, (size_t)(out * in), *W, err);
        if (st != EXPERT_OK) {
            xq_free(*W);
            *W = NULL;
        }
        return st;
    }
    return FAIL(EXPERT_E_NOT_FOUND, "no base tensor '%s'", name);
}

/* Low-rank factors (binary64) of a module's change: L [out, k], R [k, in]. */
static int lowrank_factors(const expert_adapter *a, double **L, double **R, size_t *k)
{
    size_t out = (size_t)a->out, in = (size_t)a->in, r = (size_t)a->r;
    *L = xq_malloc(out * r * sizeof **L);
    *R = xq_malloc(r * in * sizeof **R);
    if (*L == NULL || *R == NULL)
        return -1;
    for (size_t i = 0; i < out; i++)
        for (size_t j = 0; j < r; j++)
            (*L)[i * r + j] = a->kind == EXPERT_ADAPTER_OSD ? (double)a->U[i * r + j] * (double)a->S[j]
                                                           : a->scale * (double)a->B[i * r + j];
    for (size_t j = 0; j < r * in; j++)
        (*R)[j] = (double)(a->kind == EXPERT_ADAPTER_OSD ? a->Vt[j] : a->A[j]);
    *k = r;
    return 0;
}

static int is_lowrank(const expert_adapter *a, int have_base)
{
    if (a->kind == EXPERT_ADAPTER_LORA)
        return 1;
    if (a->kind == EXPERT_ADAPTER_DORA)
        return !have_base;
    if (a->kind == EXPERT_ADAPTER_OSD)
        return a->sparse.nnz == 0;
    return 0;
}

static const char *tname(const expert_adapter *a)
{
    return a->kind == EXPERT_ADAPTER_LORA ? "lora" : a->kind == EXPERT_ADAPTER_DORA ? "dora"
           : a->kind == EXPERT_ADAPTER_IA3 ? "ia3" : "osd";
}

static expert_status dense_change(const dctx *c, expert_adapter *a, float **D, expert_error *err)
{
    float *W = NULL;
    if (a->kind == EXPERT_ADAPTER_DORA || a->kind == EXPERT_ADAPTER_IA3) {
        if (c->st == NULL)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "internal: no base");
        XQ_TRY(load_base_weight(c, a->path, a->out, a->in, &W, err));
    }
    *D = xq_malloc((size_t)(a->out * a->in) * sizeof **D);
    expert_status st = *D == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory")
                                  : expert_adapter_delta(a, W, *D, err);
    xq_free(W);
    return st;
}

static expert_status compare(const dctx *c, expert_adapter *A, expert_adapter *B, xq_diff_row *row,
                             expert_error *err)
{
    int have_base = c->st != NULL;
    size_t out = (size_t)A->out, in = (size_t)A->in, mn = out < in ? out : in;
    row->note = "";
    if (A->kind == EXPERT_ADAPTER_IA3 || B->kind == EXPERT_ADAPTER_IA3) {
        if (A->kind == EXPERT_ADAPTER_IA3 && A->in == 0)
            A->in = B->in;
        if (A->kind == EXPERT_ADAPTER_IA3 && A->out == 0)
            A->out = B->out;
        if (B->kind == EXPERT_ADAPTER_IA3 && B->in == 0)
            B->in = A->in;
        if (B->kind == EXPERT_ADAPTER_IA3 && B->out == 0)
            B->out = A->out;
        out = (size_t)A->out;
        in = (size_t)A->in;
    }
    if (A->out != B->out || A->in != B->in || out == 0 || in == 0) {
        row->note = "shapes differ";
        row->rel_fro = row->rel_spec = NAN;
        return EXPERT_OK;
    }
    row->out = out;
    row->in = in;
    if (!have_base && (A->kind == EXPERT_ADAPTER_IA3 || B->kind == EXPERT_ADAPTER_IA3)) {
        if (A->kind != B->kind || A->feedforward != B->feedforward) {
            row->note = "ia3 against another type needs --base";
            row->rel_fro = row->rel_spec = NAN;
            return EXPERT_OK;
        }
        /* diag(l) − I compared as a diagonal: Frobenius = 2-norm, spectral = max */
        size_t n = A->feedforward ? in : out;
        double nf = 0, ns = 0, df = 0, ds = 0;
        for (size_t i = 0; i < n; i++) {
            double a = (double)A->l[i] - 1.0, d = (double)A->l[i] - (double)B->l[i];
            nf += a * a;
            df += d * d;
            ns = fabs(a) > ns ? fabs(a) : ns;
            ds = fabs(d) > ds ? fabs(d) : ds;
        }
        row->norm_fro = sqrt(nf);
        row->diff_fro = sqrt(df);
        row->norm_spec = ns;
        row->diff_spec = ds;
        row->note = "ia3: diag(l) - I without --base";
    } else if (is_lowrank(A, have_base) && is_lowrank(B, have_base) && A->r + B->r <= mn) {
        double *LA = NULL, *RA = NULL, *LB = NULL, *RB = NULL;
        size_t ka = 0, kb = 0;
        expert_status st = EXPERT_OK;
        if (lowrank_factors(A, &LA, &RA, &ka) != 0 || lowrank_factors(B, &LB, &RB, &kb) != 0)
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
        size_t K = ka + kb;
        double *L = st == EXPERT_OK ? xq_malloc(out * K * sizeof *L) : NULL;
        double *R = st == EXPERT_OK ? xq_malloc(K * in * sizeof *R) : NULL;
        if (st == EXPERT_OK && (L == NULL || R == NULL))
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
        if (st == EXPERT_OK) {
            for (size_t i = 0; i < out; i++) {
                for (size_t j = 0; j < ka; j++)
                    L[i * K + j] = LA[i * ka + j];
                for (size_t j = 0; j < kb; j++)
                    L[i * K + ka + j] = -LB[i * kb + j];
            }
            memcpy(R, RA, ka * in * sizeof *R);
            memcpy(R + ka * in, RB, kb * in * sizeof *R);
            st = xq_lowrank_norms(out, in, ka, LA, RA, &row->norm_fro, &row->norm_spec, err);
        }
        if (st == EXPERT_OK)
            st = xq_lowrank_norms(out, in, K, L, R, &row->diff_fro, &row->diff_spec, err);
        xq_free(LA);
        xq_free(RA);
        xq_free(LB);
        xq_free(RB);
        xq_free(L);
        xq_free(R);
        XQ_TRY(st);
        if (A->kind == EXPERT_ADAPTER_DORA || B->kind == EXPERT_ADAPTER_DORA) {
            if (A->kind == EXPERT_ADAPTER_DORA && B->kind == EXPERT_ADAPTER_DORA) {
                double mm = 0;
                for (size_t o = 0; o < out; o++) {
                    double d = fabs((double)A->magnitude[o] - (double)B->magnitude[o]) /
                               fabs((double)A->magnitude[o]);
                    mm = d > mm ? d : mm;
                }
                row->note = mm == 0.0 ? "dora: low-rank part only (no --base); magnitudes equal"
                                      : "dora: low-rank part only (no --base); magnitudes DIFFER";
            } else {
                row->note = "dora vs other type: low-rank part only (use --base)";
            }
        }
    } else {
        if ((A->kind == EXPERT_ADAPTER_DORA || B->kind == EXPERT_ADAPTER_DORA) && !have_base) {
            row->note = "dora needs --base here";
            row->rel_fro = row->rel_spec = NAN;
            return EXPERT_OK;
        }
        float *DA = NULL, *DB = NULL;
        expert_status st = dense_change(c, A, &DA, err);
        if (st == EXPERT_OK)
            st = dense_change(c, B, &DB, err);
        unsigned it1 = 0, it2 = 0;
        if (st == EXPERT_OK)
            st = xq_dense_norms(out, in, DA, &row->norm_fro, &row->norm_spec, &it1, err);
        if (st == EXPERT_OK) {
            for (size_t i = 0; i < out * in; i++)
                DA[i] -= DB[i];
            st = xq_dense_norms(out, in, DA, &row->diff_fro, &row->diff_spec, &it2, err);
        }
        row->spec_iters = it1 > it2 ? it1 : it2;
        if (row->spec_iters == 0)
            row->spec_iters = 1;
        xq_free(DA);
        xq_free(DB);
        XQ_TRY(st);
        row->note = "dense: spectral by power iteration";
    }
    row->rel_fro = row->norm_fro > 0 ? row->diff_fro / row->norm_fro : NAN;
    row->rel_spec = row->norm_spec > 0 ? row->diff_spec / row->norm_spec : NAN;
    return EXPERT_OK;
}

void xq_diff_free(xq_diff_result *res)
{
    if (res == NULL)
        return;
    for (size_t i = 0; i < res->count; i++)
        free(res->rows[i].path);
    free(res->rows);
    memset(res, 0, sizeof *res);
}

expert_status xq_diff(const char *a, const char *b, const char *base_path, xq_diff_result *res,
                      expert_error *err)
{
    if (a == NULL || b == NULL || res == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    memset(res, 0, sizeof *res);
    double t0 = xq_now();
    dctx c = {NULL, 0, NULL};
    expert_reader *ra = NULL, *rb = NULL;
    expert_status st = expert_open(a, NULL, &ra, err);
    if (st == EXPERT_OK)
        st = expert_open(b, NULL, &rb, err);
    if (st == EXPERT_OK && base_path != NULL) {
        int fd = open(base_path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size <= 0) {
            st = FAIL(EXPERT_E_IO, "cannot open '%s'", base_path);
        } else {
            void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                st = FAIL(EXPERT_E_IO, "cannot map '%s'", base_path);
            } else {
                c.base = p;
                c.base_size = (size_t)sb.st_size;
                st = expert_safetensors_parse(c.base, c.base_size, &c.st, err);
            }
        }
        if (fd >= 0)
            close(fd);
    }
    uint32_t na = st == EXPERT_OK ? expert_module_count(ra) : 0, nb = st == EXPERT_OK ? expert_module_count(rb) : 0;
    if (st == EXPERT_OK) {
        res->rows = calloc(na ? na : 1, sizeof *res->rows);
        if (res->rows == NULL)
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    char *seen_b = st == EXPERT_OK ? calloc(nb ? nb : 1, 1) : NULL;
    double num = 0, den = 0;
    for (uint32_t i = 0; st == EXPERT_OK && i < na; i++) {
        expert_module_info mi, mj;
        expert_module(ra, i, &mi);
        uint32_t j;
        for (j = 0; j < nb; j++)
            if (expert_module(rb, j, &mj) == EXPERT_OK && strcmp(mi.path, mj.path) == 0)
                break;
        if (j == nb) {
            res->only_a++;
            continue;
        }
        seen_b[j] = 1;
        expert_adapter *A = NULL, *B = NULL;
        st = expert_adapter_load(ra, i, &A, err);
        if (st == EXPERT_OK)
            st = expert_adapter_load(rb, j, &B, err);
        xq_diff_row *row = &res->rows[res->count];
        if (st == EXPERT_OK) {
            row->path = strdup(mi.path);
            row->type_a = tname(A);
            row->type_b = tname(B);
            st = row->path == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : compare(&c, A, B, row, err);
            res->count++;
            if (st == EXPERT_OK && !isnan(row->rel_fro)) {
                num += row->diff_fro * row->diff_fro;
                den += row->norm_fro * row->norm_fro;
            }
        }
        expert_adapter_free(A);
        expert_adapter_free(B);
    }
    for (uint32_t j = 0; st == EXPERT_OK && j < nb; j++)
        if (!seen_b[j])
            res->only_b++;
    free(seen_b);
    res->rel_fro_all = den > 0 ? sqrt(num / den) : NAN;
    res->seconds = xq_now() - t0;
    expert_safetensors_free(c.st);
    if (c.base)
        munmap((void *)(uintptr_t)c.base, c.base_size);
    expert_close(ra);
    expert_close(rb);
    if (st != EXPERT_OK)
        xq_diff_free(res);
    return st;
}
