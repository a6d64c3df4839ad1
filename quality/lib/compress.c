/* compress.c — re-fitting an expert into a byte budget: dense truncated SVD
 * ("svd") or OSD ("osd": a rank k with sparsified factors, entries kept by an
 * importance score), both charged the bytes the v2 writer produces.
 *
 * Per module the weight change ΔW is decomposed once:
 *  - LoRA (and DoRA without a base): ΔW = s·B·A exactly, by thin QR of B and
 *    Aᵀ and an r×r SVD (xq_svd_lowrank); K = r triplets, rank ≤ r.
 *  - OSD input without sparse part: U·diag(S)·Vt by the same route.
 *  - DoRA/OSD-with-Sp (with --base for DoRA): the dense effective ΔW = W' − W
 *    (core fusion), truncated SVD (exact or randomized) to K triplets.
 * Budget: the whole output file ≤ budget. After the fixed costs (header,
 * metadata, TOC, index, names, copied IA³ vectors, DoRA magnitudes) the
 * remaining bytes are split over the modules in proportion to (out + in)
 * times the input's rank (what the output's rank steps cost); each arm fits
 * its module into its share with exact encoded sizes;
 * the slack left by the per-module fits is then handed out (svd: the next
 * rank step with the best retained energy per byte; osd: shares grown and
 * refitted), and the final size is computed exactly and checked against the
 * written file.
 *
 * OSD arm per module: candidate ranks k from the dense rank the share affords
 * up to K; for each, the largest number N of top-scored entries of U[:, :k]
 * and Vt[:k, :] (ranked jointly) whose sections fit the share; the k with
 * the smallest reconstruction error (osd-magnitude) or the largest kept
 * Taylor score (osd-gradient) wins. S is stored separately (k floats).
 * Candidates are compared with a fast proxy of the encoder (zstd level 1);
 * the chosen k is then fitted on the real encoded sizes.
 *
 * Every output module is computed the same way whatever the thread count
 * (OpenBLAS single-threaded inside, modules spread over our own threads).
 * One file (~1,650 lines): the two compressors share the budget search,
 * the byte accounting and the writer; splitting them would split the rule. */
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <jansson.h>

#include "qinternal.h"

#define FAIL(code, ...) xq_fail(err, (code), __VA_ARGS__)

enum { ACT_COMPRESS, ACT_COPY };
enum { OUT_LORA, OUT_DORA, OUT_OSD, OUT_IA3, OUT_DROP };

typedef struct scored {
    float s;
    uint32_t id;
} scored;

typedef struct cmod {
    uint32_t index;
    expert_module_info mi;  /* strings owned by the reader */
    expert_adapter *a;
    int action, out_kind, dense;
    uint64_t out, in, src_bytes;
    /* decomposition */
    size_t K;
    float *U, *S, *Vt;      /* [out, K], [K], [K, in] */
    double norm2;           /* ‖ΔW‖²_F */
    float *D;               /* dense ΔW (dense route) */
    float *gU, *gVt;        /* gradients w.r.t. U and Vt (osd-gradient) */
    size_t kg;              /* triplets covered by gradients */
    scored *order;          /* entries of U and Vt by score, descending */
    size_t norder;
    /* fixed sections (IA³ copy, DoRA magnitude) */
    uint64_t fixed_bytes;
    /* fit */
    uint64_t target, bytes;
    size_t rank;            /* svd: r'; osd: k */
    uint64_t kept;          /* osd: N */
    double rel_fro, energy, kept_score;
    expert_status st;
    expert_error err;
    /* cache of the stored lengths of its sections for (out_kind, rank, kept) */
    int ck_kind;
    size_t ck_rank;
    uint64_t ck_kept;
    uint64_t cs[4];
    uint8_t cc[4];
    size_t cn;
} cmod;

typedef struct cjob {
    const xq_compress_opts *o;
    xq_layout lay;
    expert_reader *r;
    cmod *m;
    size_t nm;
    const uint8_t *base, *grads;
    size_t base_size, grads_size;
    expert_safetensors *base_st, *grads_st;
    unsigned threads;
    xq_layout proxy; /* fast stand-in for the encoder while comparing candidates */
} cjob;

/* ------------------------------------------------------------ files */

static expert_status map_file(const char *path, const uint8_t **data, size_t *size,
                              expert_safetensors **st, expert_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FAIL(EXPERT_E_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        close(fd);
        return FAIL(EXPERT_E_IO, "'%s' is not a non-empty regular file", path);
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return FAIL(EXPERT_E_IO, "cannot map '%s': %s", path, strerror(errno));
    *data = p;
    *size = (size_t)sb.st_size;
    return expert_safetensors_parse(p, *size, st, err);
}

static expert_status find_tensor(expert_safetensors *st, const char *name, expert_tensor_info *ti)
{
    uint32_t n = expert_safetensors_count(st);
    for (uint32_t i = 0; i < n; i++)
        if (expert_safetensors_tensor(st, i, ti) == EXPERT_OK && strcmp(ti->name, name) == 0)
            return EXPERT_OK;
    return EXPERT_E_NOT_FOUND;
}

/* Decodes a 2-D float tensor of exactly [d0, d1] into a new buffer. */
static expert_status load_matrix(const uint8_t *file, const expert_tensor_info *ti, uint64_t d0,
                                 uint64_t d1, float **out, expert_error *err)
{
    if (ti->rank != 2 || ti->dims[0] != d0 || ti->dims[1] != d1)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "tensor '%s' is not [%" PRIu64 ", %" PRIu64 "]",
                    ti->name, d0, d1);
    float *m = xq_malloc((size_t)(d0 * d1) * sizeof *m);
    if (m == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    expert_status st = expert_floats_decode(ti->dtype, file + ti->data_offset, (size_t)(d0 * d1), m, err);
    if (st != EXPERT_OK) {
        xq_free(m);
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "tensor '%s' is not a float tensor", ti->name);
    }
    *out = m;
    return EXPERT_OK;
}

static void base_name(const char *path, const char *suffix, char *out, size_t cap)
{
    if (strncmp(path, "base_model.model.", 17) == 0)
        path += 17;
    snprintf(out, cap, "%s.%s", path, suffix);
}

/* --------------------------------------------------------- decompose */

static expert_status dense_delta(cjob *job, cmod *m, expert_error *err)
{
    float *W = NULL;
    if (m->a->kind == EXPERT_ADAPTER_DORA) {
        char name[1200];
        expert_tensor_info ti;
        base_name(m->mi.path, "weight", name, sizeof name);
        if (find_tensor(job->base_st, name, &ti) != EXPERT_OK)
            return FAIL(EXPERT_E_NOT_FOUND, "module '%s': no base tensor '%s'", m->mi.path, name);
        XQ_TRY(load_matrix(job->base, &ti, m->out, m->in, &W, err));
    }
    m->D = xq_malloc((size_t)(m->out * m->in) * sizeof *m->D);
    expert_status st = m->D == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory")
                                    : expert_adapter_delta(m->a, W, m->D, err);
    xq_free(W);
    return st;
}

static int cmp_scored(const void *pa, const void *pb)
{
    const scored *a = pa, *b = pb;
    if (a->s != b->s)
        return a->s > b->s ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Gradients w.r.t. U [out, K] and Vt [K, in] from the gradients file. */
static expert_status load_grads(cjob *job, cmod *m, expert_error *err)
{
    char name[1200];
    expert_tensor_info tu, tv, tg;
    size_t out = (size_t)m->out, in = (size_t)m->in, K = m->K;
    snprintf(name, sizeof name, "%s.osd_U.grad", m->mi.path);
    if (find_tensor(job->grads_st, name, &tu) == EXPERT_OK) {
        snprintf(name, sizeof name, "%s.osd_VT.grad", m->mi.path);
        if (find_tensor(job->grads_st, name, &tv) != EXPERT_OK)
            return FAIL(EXPERT_E_NOT_FOUND, "gradients: '%s' missing", name);
        uint64_t kg = tu.rank == 2 ? tu.dims[1] : 0;
        if (kg == 0 || tu.dims[0] != m->out || tv.rank != 2 || tv.dims[0] != kg || tv.dims[1] != m->in)
            return FAIL(EXPERT_E_INVALID_ARGUMENT,
                        "gradients of '%s': need osd_U.grad [out, kg] and osd_VT.grad [kg, in]",
                        m->mi.path);
        float *gu = NULL, *gv = NULL;
        XQ_TRY(load_matrix(job->grads, &tu, m->out, kg, &gu, err));
        expert_status st = load_matrix(job->grads, &tv, kg, m->in, &gv, err);
        if (st != EXPERT_OK) {
            xq_free(gu);
            return st;
        }
        m->kg = kg < K ? (size_t)kg : K;
        m->gU = xq_calloc(out * K, sizeof *m->gU);
        m->gVt = xq_calloc(K * in, sizeof *m->gVt);
        if (m->gU == NULL || m->gVt == NULL) {
            xq_free(gu);
            xq_free(gv);
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < out; i++)
            for (size_t j = 0; j < m->kg; j++)
                m->gU[i * K + j] = gu[i * (size_t)kg + j];
        memcpy(m->gVt, gv, m->kg * in * sizeof *gv);
        xq_free(gu);
        xq_free(gv);
        return EXPERT_OK;
    }
    snprintf(name, sizeof name, "%s.delta.grad", m->mi.path);
    if (find_tensor(job->grads_st, name, &tg) != EXPERT_OK)
        return FAIL(EXPERT_E_NOT_FOUND,
                    "gradients: neither '%s.osd_U.grad'/'.osd_VT.grad' nor '%s' in '%s'", m->mi.path,
                    name, job->o->grads_path);
    float *G = NULL;
    XQ_TRY(load_matrix(job->grads, &tg, m->out, m->in, &G, err));
    /* chain rule through ΔŴ = U·diag(S)·Vt: ∂L/∂U = G·Vtᵀ·diag(S), ∂L/∂Vt = diag(S)·Uᵀ·G */
    m->kg = K;
    m->gU = xq_malloc(out * K * sizeof *m->gU);
    m->gVt = xq_malloc(K * in * sizeof *m->gVt);
    if (m->gU == NULL || m->gVt == NULL) {
        xq_free(G);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    int no = (int)out, ni = (int)in, nk = (int)K;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, no, nk, ni, 1.0f, G, ni, m->Vt, ni, 0.0f, m->gU, nk);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, ni, no, 1.0f, m->U, nk, G, ni, 0.0f, m->gVt, ni);
    for (size_t i = 0; i < out; i++)
        for (size_t j = 0; j < K; j++)
            m->gU[i * K + j] *= m->S[j];
    for (size_t j = 0; j < K; j++)
        for (size_t i = 0; i < in; i++)
            m->gVt[j * in + i] *= m->S[j];
    xq_free(G);
    return EXPERT_OK;
}

static expert_status decompose(cjob *job, cmod *m, expert_error *err)
{
    const expert_adapter *a = m->a;
    size_t out = (size_t)m->out, in = (size_t)m->in, mn = out < in ? out : in;
    int lowrank = (a->kind == EXPERT_ADAPTER_LORA || (a->kind == EXPERT_ADAPTER_DORA && !m->dense) ||
                   (a->kind == EXPERT_ADAPTER_OSD && a->sparse.nnz == 0)) && a->r <= mn && a->r > 0;
    if (lowrank) {
        m->K = (size_t)a->r;
    } else {
        if (!m->dense)
            m->dense = 1;
        XQ_TRY(dense_delta(job, m, err));
        /* triplets kept of a dense change: 2r of the source (at least 32); the
         * budgets of interest are below the source's own size */
        size_t cap = 2 * (size_t)a->r > 32 ? 2 * (size_t)a->r : 32;
        m->K = mn < cap ? mn : cap;
    }
    m->U = xq_malloc(out * m->K * sizeof *m->U);
    m->S = xq_malloc(m->K * sizeof *m->S);
    m->Vt = xq_malloc(m->K * in * sizeof *m->Vt);
    if (m->U == NULL || m->S == NULL || m->Vt == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    if (lowrank && a->kind == EXPERT_ADAPTER_OSD) {
        float *R = xq_malloc(m->K * in * sizeof *R);
        if (R == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        for (size_t j = 0; j < m->K; j++)
            for (size_t i = 0; i < in; i++)
                R[j * in + i] = a->S[j] * a->Vt[j * in + i];
        expert_status st = xq_svd_lowrank(out, in, m->K, a->U, R, 1.0, m->U, m->S, m->Vt, err);
        xq_free(R);
        XQ_TRY(st);
    } else if (lowrank) {
        XQ_TRY(xq_svd_lowrank(out, in, m->K, a->B, a->A, a->scale, m->U, m->S, m->Vt, err));
    } else {
        XQ_TRY(xq_svd_dense(out, in, m->D, m->K, &job->o->svd, m->U, m->S, m->Vt, err));
    }
    if (lowrank) {
        m->norm2 = 0.0;
        for (size_t j = 0; j < m->K; j++)
            m->norm2 += (double)m->S[j] * (double)m->S[j];
    } else {
        double ss = 0.0;
        for (size_t i = 0; i < out * in; i++)
            ss += (double)m->D[i] * (double)m->D[i];
        m->norm2 = ss;
    }
    /* drop trailing zero triplets (rank-deficient inputs); U keeps stride K */
    size_t K0 = m->K;
    while (m->K > 0 && m->S[m->K - 1] <= 0.0f)
        m->K--;
    if (m->K < K0)
        for (size_t i = 0; i < out; i++)
            memmove(m->U + i * m->K, m->U + i * K0, m->K * sizeof *m->U);
    if (job->o->method != XQ_METHOD_OSD || m->K == 0)
        return EXPERT_OK;
    if (job->o->score == XQ_SCORE_GRADIENT)
        XQ_TRY(load_grads(job, m, err));
    /* joint ranking of U and Vt entries */
    size_t K = m->K, nu = out * K;
    m->norder = nu + K * in;
    m->order = xq_malloc(m->norder * sizeof *m->order);
    if (m->order == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    size_t Kfull = K; /* U and Vt keep their allocated row length */
    for (size_t i = 0; i < out; i++)
        for (size_t j = 0; j < K; j++) {
            float u = m->U[i * Kfull + j];
            float s = job->o->score == XQ_SCORE_GRADIENT ? fabsf(m->gU[i * Kfull + j] * u)
                                                          : fabsf(u) * m->S[j];
            m->order[i * K + j] = (scored){s, (uint32_t)(i * K + j)};
        }
    for (size_t j = 0; j < K; j++)
        for (size_t i = 0; i < in; i++) {
            float v = m->Vt[j * in + i];
            float s = job->o->score == XQ_SCORE_GRADIENT ? fabsf(m->gVt[j * in + i] * v)
                                                          : fabsf(v) * m->S[j];
            m->order[nu + j * in + i] = (scored){s, (uint32_t)(nu + j * in + i)};
        }
    qsort(m->order, m->norder, sizeof *m->order, cmp_scored);
    return EXPERT_OK;
}

/* ------------------------------------------------------- module data */

/* svd arm: A' = Vt[:r], B' = U[:, :r]·diag(S[:r]) */
static void svd_factors(const cmod *m, size_t r, float *A, float *B)
{
    size_t out = (size_t)m->out, in = (size_t)m->in, K = m->K;
    memcpy(A, m->Vt, r * in * sizeof *A);
    for (size_t i = 0; i < out; i++)
        for (size_t j = 0; j < r; j++)
            B[i * r + j] = m->U[i * K + j] * m->S[j];
}

/* osd arm: U~ [out, k], Vt~ [k, in] with the top-N entries (triplet < k);
 * *nu, *nv (may be NULL) get the kept counts in U and Vt. */
static void osd_factors_n(const cmod *m, size_t k, uint64_t N, float *U, float *Vt, uint64_t *nu_out,
                          uint64_t *nv_out)
{
    size_t out = (size_t)m->out, in = (size_t)m->in, K = m->K, nu = out * K;
    memset(U, 0, out * k * sizeof *U);
    memset(Vt, 0, k * in * sizeof *Vt);
    uint64_t kept = 0, ku = 0;
    for (size_t p = 0; p < m->norder && kept < N; p++) {
        size_t id = m->order[p].id;
        if (id < nu) {
            size_t i = id / K, j = id % K;
            if (j >= k)
                continue;
            U[i * k + j] = m->U[id];
            ku++;
        } else {
            size_t j = (id - nu) / in;
            if (j >= k)
                continue;
            Vt[id - nu] = m->Vt[id - nu];
        }
        kept++;
    }
    if (nu_out)
        *nu_out = ku;
    if (nv_out)
        *nv_out = kept - ku;
}

static void osd_factors(const cmod *m, size_t k, uint64_t N, float *U, float *Vt)
{
    osd_factors_n(m, k, N, U, Vt, NULL, NULL);
}

static uint64_t up64(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

static expert_status span_of(const xq_layout *lay, xq_encoder *enc, const float *data, size_t count, uint64_t *acc,
                             expert_error *err)
{
    uint64_t s;
    uint8_t c;
    XQ_TRY(xq_stored_size(lay, enc, EXPERT_DTYPE_F32, data, count * sizeof(float), &s, &c, err));
    *acc += up64(s, lay->alignment);
    return EXPERT_OK;
}

typedef struct scratch {
    float *a, *b; /* big enough for [out, K] and [K, in] */
    xq_encoder *enc;
} scratch;

static expert_status scratch_alloc(const cjob *job, scratch *sc, expert_error *err)
{
    size_t maxa = 1;
    for (size_t i = 0; i < job->nm; i++) {
        const cmod *m = &job->m[i];
        size_t a = (size_t)(m->out > m->in ? m->out : m->in) * (m->K + 1);
        if (a > maxa)
            maxa = a;
    }
    sc->a = xq_malloc(maxa * sizeof(float));
    sc->b = xq_malloc(maxa * sizeof(float));
    sc->enc = xq_encoder_new();
    if (sc->a == NULL || sc->b == NULL || sc->enc == NULL) {
        xq_free(sc->a);
        xq_free(sc->b);
        xq_encoder_free(sc->enc);
        sc->a = sc->b = NULL;
        sc->enc = NULL;
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    return EXPERT_OK;
}

static void scratch_free(scratch *sc)
{
    xq_free(sc->a);
    xq_free(sc->b);
    xq_encoder_free(sc->enc);
    sc->a = sc->b = NULL;
    sc->enc = NULL;
}

static expert_status cost_svd(const cjob *job, const cmod *m, size_t r, scratch *sc, uint64_t *cost,
                              expert_error *err)
{
    *cost = m->fixed_bytes;
    if (r == 0)
        return EXPERT_OK;
    svd_factors(m, r, sc->a, sc->b);
    XQ_TRY(span_of(&job->lay, sc->enc, sc->a, r * (size_t)m->in, cost, err));
    return span_of(&job->lay, sc->enc, sc->b, (size_t)m->out * r, cost, err);
}

/* Like span_of for a sparsified factor during the fit: with the auto codec
 * policy only the codecs that can win at this density are tried (plain zstd
 * below 50% non-zeros, shuffle+zstd above 85%, both in between; raw always).
 * The final layout tries all three, so it is never larger than this. */
static expert_status span_sparse(const xq_layout *lay, xq_encoder *enc, const float *data, size_t count,
                                 uint64_t nnz, uint64_t *acc, expert_error *err)
{
    if (lay->codec != XQ_CODEC_AUTO || count == 0)
        return span_of(lay, enc, data, count, acc, err);
    double dens = (double)nnz / (double)count;
    xq_layout l = *lay;
    uint64_t best = (uint64_t)count * sizeof(float), s;
    uint8_t c;
    if (lay->level == 1) { /* the proxy: one encode, the codec that usually wins at this density */
        l.codec = dens < 0.7 ? EXPERT_CODEC_ZSTD : EXPERT_CODEC_SHUFFLE_ZSTD;
        XQ_TRY(xq_stored_size(&l, enc, EXPERT_DTYPE_F32, data, count * sizeof(float), &s, &c, err));
        *acc += up64(s < best ? s : best, lay->alignment);
        return EXPERT_OK;
    }
    if (dens <= 0.85) {
        l.codec = EXPERT_CODEC_ZSTD;
        XQ_TRY(xq_stored_size(&l, enc, EXPERT_DTYPE_F32, data, count * sizeof(float), &s, &c, err));
        best = s < best ? s : best;
    }
    if (dens >= 0.5) {
        l.codec = EXPERT_CODEC_SHUFFLE_ZSTD;
        XQ_TRY(xq_stored_size(&l, enc, EXPERT_DTYPE_F32, data, count * sizeof(float), &s, &c, err));
        best = s < best ? s : best;
    }
    *acc += up64(best, lay->alignment);
    return EXPERT_OK;
}

static expert_status cost_osd(const xq_layout *lay, const cmod *m, size_t k, uint64_t N, scratch *sc,
                              uint64_t *cost, expert_error *err)
{
    *cost = 0;
    if (k == 0)
        return EXPERT_OK;
    uint64_t nu, nv;
    osd_factors_n(m, k, N, sc->a, sc->b, &nu, &nv);
    XQ_TRY(span_sparse(lay, sc->enc, sc->a, (size_t)m->out * k, nu, cost, err));
    XQ_TRY(span_of(lay, sc->enc, m->S, k, cost, err));
    return span_sparse(lay, sc->enc, sc->b, k * (size_t)m->in, nv, cost, err);
}

/* Largest r in [0, K] with cost_svd(r) <= t (cost is monotone in r). The
 * encoded size of dense factors is close to proportional to their raw size:
 * the guess comes from the ratio at the full rank, then one or two exact
 * evaluations settle it. */
static expert_status fit_svd_rank(const cjob *job, const cmod *m, uint64_t t, scratch *sc, size_t *r,
                                  uint64_t *cost, expert_error *err)
{
    uint64_t A = job->lay.alignment, per = 4 * (m->out + m->in), cK;
    XQ_TRY(cost_svd(job, m, m->K, sc, &cK, err));
    if (cK <= t) {
        *r = m->K;
        *cost = cK;
        return EXPERT_OK;
    }
    double ratio = (double)(cK - m->fixed_bytes) / (double)(per * m->K + 2 * A);
    size_t g = t > m->fixed_bytes ? (size_t)(((double)(t - m->fixed_bytes) / ratio - 2.0 * (double)A) / (double)per) : 0;
    if (g >= m->K)
        g = m->K - 1;
    uint64_t c = m->fixed_bytes;
    if (g > 0)
        XQ_TRY(cost_svd(job, m, g, sc, &c, err));
    while (g > 0 && c > t) { /* guessed too high */
        g--;
        c = m->fixed_bytes;
        if (g > 0)
            XQ_TRY(cost_svd(job, m, g, sc, &c, err));
    }
    while (g + 1 < m->K) { /* one more fits? */
        uint64_t c2;
        XQ_TRY(cost_svd(job, m, g + 1, sc, &c2, err));
        if (c2 > t)
            break;
        g++;
        c = c2;
    }
    *r = g;
    *cost = c;
    return EXPERT_OK;
}

/* Largest N (approximately) with cost_osd(k, N) <= t: the search stops when
 * the fit is within `close` bytes of t or the bracket is under
 * max(1, Nmax/4096) entries. The encoded size grows near-linearly in N, so
 * secant steps from a guess (bytes per entry `rho` from an earlier fit, or 5)
 * converge in a few evaluations; every fourth step bisects. N = 0 and
 * *cost = cost(k, 0) if even that does not fit. `start` (with its cost
 * `cstart`) is a known feasible point, or 0. */
static expert_status fit_osd_n(const xq_layout *lay, const cmod *m, size_t k, uint64_t t, uint64_t close,
                               scratch *sc, uint64_t start, uint64_t cstart, double *rho, uint64_t *N,
                               uint64_t *cost, expert_error *err)
{
    uint64_t nmax = ((uint64_t)m->out + m->in) * k;
    uint64_t lo = 0, clo, hi = nmax + 1, chi = UINT64_MAX; /* cost(lo) <= t < cost(hi) */
    if (start > 0 && cstart <= t) {
        lo = start;
        clo = cstart;
    } else {
        XQ_TRY(cost_osd(lay, m, k, 0, sc, &clo, err));
        if (clo > t) {
            *N = 0;
            *cost = clo;
            return EXPERT_OK;
        }
    }
    uint64_t tol = nmax / 4096 ? nmax / 4096 : 1;
    double r = rho != NULL && *rho > 0 ? *rho : 5.0;
    /* slopes: the secant through the last two points when they are far apart
     * compared with the 64-byte staircase of the aligned sizes, else the
     * average from the base point */
    uint64_t bx = lo, bc = clo, px = lo, pc = clo;
    int step = 0;
    while (hi - lo > tol && t - clo > close && lo < nmax) {
        uint64_t x;
        if (step >= 6 && chi != UINT64_MAX) { /* safeguard: bisection */
            x = lo + (hi - lo) / 2;
        } else { /* secant from the last point, aiming inside the acceptance window */
            double aim = (double)t - (double)close / 2.0;
            double nx = (double)px + (aim - (double)pc) / r;
            x = nx <= 0.0 ? 0 : (uint64_t)nx;
        }
        if (x <= lo)
            x = lo + 1;
        if (x >= hi)
            x = hi - 1 > lo ? hi - 1 : lo + 1;
        if (x > nmax)
            x = nmax;
        step++;
        uint64_t c;
        XQ_TRY(cost_osd(lay, m, k, x, sc, &c, err));
        uint64_t dc = c > pc ? c - pc : pc - c;
        if (x != px && dc > 8 * (uint64_t)lay->alignment && (c > pc) == (x > px))
            r = (double)dc / (double)(x > px ? x - px : px - x);
        else if (x > bx && c > bc)
            r = ((double)c - (double)bc) / (double)(x - bx);
        px = x;
        pc = c;
        if (c <= t) {
            lo = x;
            clo = c;
        } else {
            hi = x;
            chi = c;
        }
        if (lo == nmax)
            break;
    }
    if (rho != NULL && lo > 0)
        *rho = r;
    *N = lo;
    *cost = clo;
    return EXPERT_OK;
}

/* ‖ΔW − Ũ·diag(S)·Ṽt‖_F / ‖ΔW‖_F for masked factors (k triplets). */
static expert_status osd_error(const cmod *m, size_t k, const float *Ut, const float *Vtt, double *rel,
                               expert_error *err)
{
    size_t out = (size_t)m->out, in = (size_t)m->in, K = m->K;
    if (m->norm2 <= 0.0) {
        *rel = 0.0;
        return EXPERT_OK;
    }
    if (m->dense) { /* materialise ΔŴ and compare with the dense ΔW */
        float *P = xq_malloc(out * k * sizeof *P), *R = xq_malloc(out * in * sizeof *R);
        if (P == NULL || R == NULL) {
            xq_free(P);
            xq_free(R);
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < out; i++)
            for (size_t j = 0; j < k; j++)
                P[i * k + j] = Ut[i * k + j] * m->S[j];
        memcpy(R, m->D, out * in * sizeof *R);
        if (k > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)in, (int)k, -1.0f, P,
                        (int)k, Vtt, (int)in, 1.0f, R, (int)in);
        double ss = 0.0;
        for (size_t i = 0; i < out * in; i++)
            ss += (double)R[i] * (double)R[i];
        *rel = sqrt(ss / m->norm2);
        xq_free(P);
        xq_free(R);
        return EXPERT_OK;
    }
    /* factor form: ‖ΔW‖² − 2⟨ΔW, ΔŴ⟩ + ‖ΔŴ‖² with Gram matrices (binary64) */
    double *Gu = xq_calloc(K * k, sizeof *Gu), *Gv = xq_calloc(K * k, sizeof *Gv);
    double *Hu = xq_calloc(k * k, sizeof *Hu), *Hv = xq_calloc(k * k, sizeof *Hv);
    if (!Gu || !Gv || !Hu || !Hv) {
        xq_free(Gu);
        xq_free(Gv);
        xq_free(Hu);
        xq_free(Hv);
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < out; i++) {
        const float *ur = m->U + i * K, *tr = Ut + i * k;
        for (size_t a = 0; a < K; a++)
            for (size_t j = 0; j < k; j++)
                Gu[a * k + j] += (double)ur[a] * (double)tr[j];
        for (size_t a = 0; a < k; a++)
            for (size_t j = 0; j < k; j++)
                Hu[a * k + j] += (double)tr[a] * (double)tr[j];
    }
    for (size_t a = 0; a < K; a++)
        for (size_t j = 0; j < k; j++) {
            double acc = 0.0;
            const float *va = m->Vt + a * in, *vj = Vtt + j * in;
            for (size_t i = 0; i < in; i++)
                acc += (double)va[i] * (double)vj[i];
            Gv[a * k + j] = acc;
        }
    for (size_t a = 0; a < k; a++)
        for (size_t j = 0; j < k; j++) {
            double acc = 0.0;
            const float *va = Vtt + a * in, *vj = Vtt + j * in;
            for (size_t i = 0; i < in; i++)
                acc += (double)va[i] * (double)vj[i];
            Hv[a * k + j] = acc;
        }
    double cross = 0.0, self = 0.0;
    for (size_t a = 0; a < K; a++)
        for (size_t j = 0; j < k; j++)
            cross += (double)m->S[a] * (double)m->S[j] * Gu[a * k + j] * Gv[a * k + j];
    for (size_t a = 0; a < k; a++)
        for (size_t j = 0; j < k; j++)
            self += (double)m->S[a] * (double)m->S[j] * Hu[a * k + j] * Hv[a * k + j];
    double e2 = m->norm2 - 2.0 * cross + self;
    *rel = sqrt((e2 > 0.0 ? e2 : 0.0) / m->norm2);
    xq_free(Gu);
    xq_free(Gv);
    xq_free(Hu);
    xq_free(Hv);
    return EXPERT_OK;
}

static double kept_score(const cmod *m, size_t k, uint64_t N)
{
    size_t nu = (size_t)m->out * m->K, in = (size_t)m->in;
    double s = 0.0;
    uint64_t kept = 0;
    for (size_t p = 0; p < m->norder && kept < N; p++) {
        size_t id = m->order[p].id;
        size_t j = id < nu ? id % m->K : (id - nu) / in;
        if (j >= k)
            continue;
        s += (double)m->order[p].s;
        kept++;
    }
    return s;
}

static expert_status svd_error(const cjob *job, const cmod *m, size_t r, scratch *sc, expert_error *err,
                               double *rel, double *energy)
{
    (void)job;
    double kept = 0.0, rest = 0.0;
    for (size_t j = 0; j < m->K; j++) {
        double q = (double)m->S[j] * (double)m->S[j];
        if (j < r)
            kept += q;
        else
            rest += q;
    }
    *energy = m->norm2 > 0 ? kept / m->norm2 : 1.0;
    if (!m->dense) {
        *rel = m->norm2 > 0 ? sqrt(rest / m->norm2) : 0.0;
        return EXPERT_OK;
    }
    /* dense route: the honest residual of the stored factors */
    size_t out = (size_t)m->out, in = (size_t)m->in;
    float *R = xq_malloc(out * in * sizeof *R);
    if (R == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    memcpy(R, m->D, out * in * sizeof *R);
    if (r > 0) {
        svd_factors(m, r, sc->a, sc->b);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, (int)in, (int)r, -1.0f, sc->b,
                    (int)r, sc->a, (int)in, 1.0f, R, (int)in);
    }
    double ss = 0.0;
    for (size_t i = 0; i < out * in; i++)
        ss += (double)R[i] * (double)R[i];
    *rel = m->norm2 > 0 ? sqrt(ss / m->norm2) : 0.0;
    xq_free(R);
    return EXPERT_OK;
}

/* Fits one module into m->target. */
static expert_status fit_module(const cjob *job, cmod *m, scratch *sc, int refit, expert_error *err)
{
    if (m->action != ACT_COMPRESS || m->K == 0) {
        m->out_kind = m->action == ACT_COPY ? OUT_IA3 : OUT_DROP;
        m->bytes = m->action == ACT_COPY ? m->fixed_bytes : 0;
        m->rel_fro = m->action == ACT_COPY ? 0.0 : m->norm2 > 0 ? 1.0 : 0.0;
        return EXPERT_OK;
    }
    size_t r;
    uint64_t c;
    if (job->o->method == XQ_METHOD_SVD) {
        XQ_TRY(fit_svd_rank(job, m, m->target, sc, &r, &c, err));
        m->rank = r;
        m->bytes = r ? c : 0;
        m->out_kind = r == 0 ? OUT_DROP : m->a->kind == EXPERT_ADAPTER_DORA && !m->dense ? OUT_DORA : OUT_LORA;
        return svd_error(job, m, r, sc, err, &m->rel_fro, &m->energy);
    }
    /* osd: candidate ranks from the dense rank the share affords (c = 0;
     * estimated from raw sizes) up to the available K */
    r = (size_t)(m->target / (4 * (m->out + m->in + 1)));
    size_t kmax = m->K;
    if (job->o->score == XQ_SCORE_GRADIENT && m->kg < kmax)
        kmax = m->kg;
    size_t kmin = r > 0 ? r : 1, nc = job->o->max_candidates ? job->o->max_candidates : 6;
    if (kmin > kmax)
        kmin = kmax;
    size_t cands[64], ncand = 0;
    if (refit) { /* keep the chosen k, grow N only */
        cands[ncand++] = m->rank;
    } else {
        for (size_t i = 0; i < nc && i < 64; i++) {
            size_t k = nc == 1 ? kmax : kmin + (size_t)llround((double)(kmax - kmin) * (double)i / (double)(nc - 1));
            if (ncand == 0 || cands[ncand - 1] != k)
                cands[ncand++] = k;
        }
    }
    /* The candidates are fitted with a fast proxy of the encoder (zstd level 1,
     * same codecs and layout); the chosen k is then fitted with the writer's
     * real settings, starting from the proxy's N. Refits use the real ones. */
    const xq_layout *fl = refit || job->lay.level <= 3 ? &job->lay : &job->proxy;
    double best = INFINITY, rho = 0.0;
    int worse = 0;
    uint64_t start = refit ? m->kept : 0, cstart = refit ? m->bytes : 0;
    m->rank = 0;
    m->kept = 0;
    m->bytes = 0;
    for (size_t ci = 0; ci < ncand; ci++) {
        size_t k = cands[ci];
        uint64_t N, cost;
        if (k == 0)
            continue;
        /* first fit: within three alignment steps or 0.2% (the 64-byte padding of
         * each section makes the cost a staircase); refits (slack): 16 bytes */
        /* comparing candidates needs N within ~1% (the proxy's own error is
         * larger); the chosen k is refined on the real sizes below. Refits
         * (slack): 16 bytes. */
        uint64_t close = refit ? 16 : 3 * (uint64_t)job->lay.alignment;
        uint64_t relc = fl != &job->lay ? m->target / 100 : m->target / 500;
        if (!refit && relc > close)
            close = relc;
        XQ_TRY(fit_osd_n(fl, m, k, m->target, close, sc, start, cstart, &rho, &N, &cost, err));
        if (N == 0)
            continue;
        double obj, rel = 1.0;
        if (job->o->score == XQ_SCORE_GRADIENT) {
            obj = -kept_score(m, k, N);
        } else {
            osd_factors(m, k, N, sc->a, sc->b);
            XQ_TRY(osd_error(m, k, sc->a, sc->b, &rel, err));
            obj = rel;
        }
        if (obj < best) {
            best = obj;
            m->rank = k;
            m->kept = N;
            m->bytes = cost;
            m->rel_fro = rel;
            m->kept_score = -obj;
            worse = 0;
        } else if (++worse == 2) { /* past the best: the objective is near-unimodal in k */
            break;
        }
    }
    if (m->rank > 0 && fl != &job->lay) {
        /* The real encoder at the chosen k. Its size is a near-constant
         * multiple of the proxy's: one real encode at the proxy's N gives the
         * ratio, the proxy finds the N for target/ratio, and one or two more
         * real encodes confirm it (stepping down while over the target). */
        uint64_t c1, N = m->kept, cost, cp = m->bytes;
        XQ_TRY(cost_osd(&job->lay, m, m->rank, N, sc, &c1, err));
        double ratio = cp > 0 ? (double)c1 / (double)cp : 1.0;
        uint64_t tp = (uint64_t)((double)m->target / ratio), close = 3 * (uint64_t)job->lay.alignment;
        if (tp / 500 > close)
            close = tp / 500;
        double bpe = 0.0;
        uint64_t N2 = N, c2 = c1;
        if (tp != cp) {
            uint64_t Np, cpp;
            XQ_TRY(fit_osd_n(fl, m, m->rank, tp, close, sc, cp <= tp ? N : 0, cp, &bpe, &Np, &cpp, err));
            if (Np != N) {
                N2 = Np;
                XQ_TRY(cost_osd(&job->lay, m, m->rank, N2, sc, &c2, err));
            }
        }
        /* a few secant steps on the real sizes from the two points, aiming half
         * an alignment step below the target; then the best feasible point
         * (stepping down while none is) */
        uint64_t xa = N, ca = c1, xb = N2, cb = c2;
        uint64_t fx = 0, fc = UINT64_MAX; /* best feasible */
        if (c1 <= m->target)
            fx = N, fc = c1;
        if (c2 <= m->target && (fc == UINT64_MAX || N2 > fx))
            fx = N2, fc = c2;
        uint64_t nmax = (m->out + m->in) * m->rank, aim = m->target - job->lay.alignment / 2;
        for (int it = 0; it < 3 && !(fc != UINT64_MAX && m->target - fc <= close); it++) {
            double slope = xa != xb && ca != cb ? ((double)cb - (double)ca) / ((double)xb - (double)xa)
                                                : (double)cb / (double)(xb ? xb : 1);
            if (!(slope > 0.05))
                slope = 4.0;
            double nx = (double)xb + ((double)aim - (double)cb) / slope;
            uint64_t x = nx <= 0 ? 0 : nx >= (double)nmax ? nmax : (uint64_t)nx;
            if (x == xb)
                break;
            uint64_t cx;
            XQ_TRY(cost_osd(&job->lay, m, m->rank, x, sc, &cx, err));
            xa = xb, ca = cb, xb = x, cb = cx;
            if (cx <= m->target && (fc == UINT64_MAX || x > fx))
                fx = x, fc = cx;
        }
        if (fc == UINT64_MAX) { /* nothing feasible yet: step down by whole alignment steps */
            double per = (double)cb / (double)(xb ? xb : 1);
            N2 = xb;
            c2 = cb;
            while (c2 > m->target && N2 > 0) {
                uint64_t dn = (uint64_t)((double)(c2 - m->target + job->lay.alignment) / per) + 1;
                N2 = N2 > dn ? N2 - dn : 0;
                XQ_TRY(cost_osd(&job->lay, m, m->rank, N2, sc, &c2, err));
            }
        } else {
            N2 = fx;
            c2 = fc;
        }
        cost = c2;
        m->kept = N2;
        m->bytes = cost;
    }
    if (m->rank > 0 && (fl != &job->lay || job->o->score == XQ_SCORE_GRADIENT)) {
        osd_factors(m, m->rank, m->kept, sc->a, sc->b);
        XQ_TRY(osd_error(m, m->rank, sc->a, sc->b, &m->rel_fro, err));
    }
    if (m->rank > 0 && m->kept == 0)
        m->rank = 0;
    m->out_kind = m->rank == 0 ? OUT_DROP : OUT_OSD;
    if (m->rank == 0)
        m->rel_fro = 1.0;
    return EXPERT_OK;
}

/* ---------------------------------------------------------- threads */

typedef struct pool {
    cjob *job;
    size_t next;
    pthread_mutex_t mu;
    int phase; /* 0 decompose, 1 fit, 2 refit */
} pool;

static void *worker(void *arg)
{
    pool *p = arg;
    cjob *job = p->job;
    scratch sc = {NULL, NULL, NULL};
    expert_error e;
    expert_status sst = scratch_alloc(job, &sc, &e);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t i = p->next++;
        pthread_mutex_unlock(&p->mu);
        if (i >= job->nm)
            break;
        cmod *m = &job->m[i];
        if (m->st != EXPERT_OK)
            continue;
        if (sst != EXPERT_OK)
            m->st = xq_fail(&m->err, EXPERT_E_NOMEM, "out of memory");
        else if (p->phase == 0)
            m->st = m->action == ACT_COMPRESS ? decompose(job, m, &m->err) : EXPERT_OK;
        else
            m->st = fit_module(job, m, &sc, p->phase == 2, &m->err);
    }
    scratch_free(&sc);
    return NULL;
}

static expert_status run_phase(cjob *job, int phase, expert_error *err)
{
    pool p = {job, 0, PTHREAD_MUTEX_INITIALIZER, phase};
    unsigned nt = job->threads;
    if (nt > 64)
        nt = 64;
    pthread_t tid[64];
    int started[64] = {0};
    for (unsigned t = 1; t < nt; t++)
        started[t] = pthread_create(&tid[t], NULL, worker, &p) == 0;
    worker(&p);
    for (unsigned t = 1; t < nt; t++)
        if (started[t])
            pthread_join(tid[t], NULL);
    for (size_t i = 0; i < job->nm; i++)
        if (job->m[i].st != EXPERT_OK) {
            if (err)
                *err = job->m[i].err;
            return job->m[i].st;
        }
    return EXPERT_OK;
}

/* ------------------------------------------------------- metadata */

static const char *method_name(const xq_compress_opts *o)
{
    return o->method == XQ_METHOD_SVD ? "svd"
           : o->score == XQ_SCORE_GRADIENT ? "osd-gradient"
                                           : "osd-magnitude";
}

static json_t *jlayer(const cmod *m)
{
    return m->mi.layer < 0 ? json_null() : json_integer(m->mi.layer);
}

/* JSON for the current decisions (modules with OUT_DROP left out). */
static char *build_metadata(const cjob *job, uint64_t budget, uint64_t reference, expert_error *err)
{
    json_t *root = json_object(), *mods = json_array(), *in_meta = NULL;
    size_t len = 0;
    const char *text = expert_metadata_json(job->r, &len);
    json_error_t je;
    if (text != NULL)
        in_meta = json_loadb(text, len, 0, &je);
    json_object_set_new(root, "format", json_string("expert-v2"));
    json_object_set_new(root, "name", json_string(expert_name(job->r)));
    json_object_set_new(root, "version", json_string(expert_package_version(job->r)));
    if (in_meta != NULL) {
        json_t *d = json_object_get(in_meta, "description"), *bm = json_object_get(in_meta, "base_model");
        if (json_is_string(d))
            json_object_set(root, "description", d);
        if (json_is_object(bm))
            json_object_set(root, "base_model", bm);
    }
    json_object_set_new(root, "created_by", json_string("expert-quality " XQ_VERSION " compress"));
    for (size_t i = 0; i < job->nm; i++) {
        const cmod *m = &job->m[i];
        if (m->out_kind == OUT_DROP)
            continue;
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(m->mi.path));
        if (m->out_kind == OUT_IA3) {
            json_object_set_new(o, "type", json_string("ia3"));
            json_object_set_new(o, "layer", jlayer(m));
            if (m->mi.in_features)
                json_object_set_new(o, "in_features", json_integer((json_int_t)m->mi.in_features));
            if (m->mi.out_features)
                json_object_set_new(o, "out_features", json_integer((json_int_t)m->mi.out_features));
            json_object_set_new(o, "feedforward", json_boolean(m->mi.feedforward));
        } else {
            json_object_set_new(o, "type", json_string(m->out_kind == OUT_OSD ? "osd"
                                                       : m->out_kind == OUT_DORA ? "dora" : "lora"));
            json_object_set_new(o, "layer", jlayer(m));
            json_object_set_new(o, "in_features", json_integer((json_int_t)m->in));
            json_object_set_new(o, "out_features", json_integer((json_int_t)m->out));
            if (m->out_kind == OUT_OSD) {
                json_object_set_new(o, "rank", json_integer((json_int_t)m->rank));
                json_object_set_new(o, "sparse_format", json_string("csr"));
            } else { /* alpha = r: scale 1, the factors carry everything */
                json_object_set_new(o, "r", json_integer((json_int_t)m->rank));
                json_object_set_new(o, "alpha", json_integer((json_int_t)m->rank));
                json_object_set_new(o, "rslora", json_false());
            }
        }
        json_array_append_new(mods, o);
    }
    json_object_set_new(root, "modules", mods);
    json_t *extra = json_object(), *c = json_object();
    json_object_set_new(c, "method", json_string(method_name(job->o)));
    json_object_set_new(c, "budget_bytes", json_integer((json_int_t)budget));
    json_object_set_new(c, "reference_bytes", json_integer((json_int_t)reference));
    json_object_set_new(extra, "compress", c);
    json_object_set_new(root, "extra", extra);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    json_decref(root);
    json_decref(in_meta);
    if (s == NULL)
        FAIL(EXPERT_E_NOMEM, "out of memory building metadata");
    return s;
}

/* ------------------------------------------------------- sections */

typedef struct osec {
    char name[1200];
    uint16_t type;
    uint8_t dtype, rank, codec;
    uint64_t dims[2];
    uint32_t layer, module;
    float *data; /* owned */
    size_t count;
    uint64_t stored;
} osec;

typedef struct oset {
    osec *s;
    size_t n, cap;
} oset;

static void oset_free(oset *o)
{
    for (size_t i = 0; i < o->n; i++)
        xq_free(o->s[i].data);
    xq_free(o->s);
    o->s = NULL;
    o->n = o->cap = 0;
}

static expert_status oset_add(const cjob *job, oset *o, const cmod *m, uint32_t module, const char *suffix,
                              uint16_t type, uint8_t rank, uint64_t d0, uint64_t d1, const float *src,
                              expert_error *err)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 64;
        osec *g = realloc(o->s, cap * sizeof *g);
        if (g == NULL)
            return FAIL(EXPERT_E_NOMEM, "out of memory");
        o->s = g;
        o->cap = cap;
    }
    osec *s = &o->s[o->n];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s.%s", m->mi.path, suffix);
    s->type = type;
    s->dtype = EXPERT_DTYPE_F32;
    s->rank = rank;
    s->dims[0] = d0;
    s->dims[1] = rank > 1 ? d1 : 0;
    s->layer = m->mi.layer < 0 ? EXPERT_LAYER_NONE : (uint32_t)m->mi.layer;
    s->module = module;
    s->count = (size_t)(rank > 1 ? d0 * d1 : d0);
    s->data = xq_malloc(s->count * sizeof(float));
    if (s->data == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    if (src != NULL)
        memcpy(s->data, src, s->count * sizeof(float));
    o->n++;
    (void)job;
    return EXPERT_OK;
}

static expert_status module_stored(const cjob *job, cmod *m, scratch *sc, expert_error *err);

/* Sections of the current decisions, in module order, with the stored
 * lengths and codecs computed for the size (module_stored, cached). */
static expert_status build_sections(cjob *job, oset *o, expert_error *err)
{
    uint32_t module = 0;
    scratch sc = {NULL, NULL, NULL};
    XQ_TRY(scratch_alloc(job, &sc, err));
    expert_status st = EXPERT_OK;
    for (size_t i = 0; st == EXPERT_OK && i < job->nm; i++) {
        cmod *m = &job->m[i];
        size_t out = (size_t)m->out, in = (size_t)m->in, r = m->rank, base = o->n;
        if (m->out_kind == OUT_DROP)
            continue;
        if ((st = module_stored(job, m, &sc, err)) != EXPERT_OK)
            break;
        if (m->out_kind == OUT_IA3) {
            const expert_adapter *a = m->a;
            uint64_t len = a->feedforward ? a->in : a->out;
            st = oset_add(job, o, m, module, "ia3_l", EXPERT_SECTION_IA3_VECTOR, 2, a->feedforward ? 1 : len,
                          a->feedforward ? len : 1, a->l, err);
        } else if (m->out_kind == OUT_OSD) {
            st = oset_add(job, o, m, module, "osd_U", EXPERT_SECTION_OSD_U, 2, out, r, NULL, err);
            if (st == EXPERT_OK)
                st = oset_add(job, o, m, module, "osd_S", EXPERT_SECTION_OSD_S, 1, r, 0, m->S, err);
            if (st == EXPERT_OK)
                st = oset_add(job, o, m, module, "osd_VT", EXPERT_SECTION_OSD_VT, 2, r, in, NULL, err);
            if (st == EXPERT_OK)
                osd_factors(m, r, m->kept, o->s[base].data, o->s[base + 2].data);
        } else {
            st = oset_add(job, o, m, module, "lora_A.weight", EXPERT_SECTION_LORA_A, 2, r, in, NULL, err);
            if (st == EXPERT_OK)
                st = oset_add(job, o, m, module, "lora_B.weight", EXPERT_SECTION_LORA_B, 2, out, r, NULL, err);
            if (st == EXPERT_OK)
                svd_factors(m, r, o->s[base].data, o->s[base + 1].data);
            if (st == EXPERT_OK && m->out_kind == OUT_DORA)
                st = oset_add(job, o, m, module, "lora_magnitude_vector", EXPERT_SECTION_DORA_MAGNITUDE, 1,
                              out, 0, m->a->magnitude, err);
        }
        if (st == EXPERT_OK && o->n - base != m->cn)
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "internal: section count mismatch");
        for (size_t j = 0; st == EXPERT_OK && j < m->cn; j++) {
            o->s[base + j].stored = m->cs[j];
            o->s[base + j].codec = m->cc[j];
        }
        module++;
    }
    scratch_free(&sc);
    return st;
}

/* Names and count of a module's output sections (same order as build_sections). */
static void module_names(const cmod *m, size_t *nsec, uint64_t *names)
{
    uint64_t pl = strlen(m->mi.path) + 1;
    switch (m->out_kind) {
    case OUT_IA3: *nsec = 1, *names = pl + 5; break;                          /* ia3_l */
    case OUT_OSD: *nsec = 3, *names = 3 * pl + 5 + 5 + 6; break;              /* osd_U osd_S osd_VT */
    case OUT_LORA: *nsec = 2, *names = 2 * pl + 13 + 13; break;               /* lora_A/B.weight */
    case OUT_DORA: *nsec = 3, *names = 3 * pl + 13 + 13 + 21; break;          /* + lora_magnitude_vector */
    default: *nsec = 0, *names = 0; break;
    }
}

static expert_status stored_of(const cjob *job, xq_encoder *enc, const float *data, size_t count,
                               uint64_t *out, uint8_t *codec, expert_error *err)
{
    return xq_stored_size(&job->lay, enc, EXPERT_DTYPE_F32, data, count * sizeof(float), out, codec, err);
}

/* Stored lengths of the module's sections for its current decision (cached). */
static expert_status module_stored(const cjob *job, cmod *m, scratch *sc, expert_error *err)
{
    if (m->cn > 0 && m->ck_kind == m->out_kind && m->ck_rank == m->rank && m->ck_kept == m->kept)
        return EXPERT_OK;
    size_t out = (size_t)m->out, in = (size_t)m->in, r = m->rank;
    m->cn = 0;
    switch (m->out_kind) {
    case OUT_IA3:
        XQ_TRY(stored_of(job, sc->enc, m->a->l, (size_t)(m->a->feedforward ? m->a->in : m->a->out), &m->cs[0], &m->cc[0], err));
        m->cn = 1;
        break;
    case OUT_OSD:
        osd_factors(m, r, m->kept, sc->a, sc->b);
        XQ_TRY(stored_of(job, sc->enc, sc->a, out * r, &m->cs[0], &m->cc[0], err));
        XQ_TRY(stored_of(job, sc->enc, m->S, r, &m->cs[1], &m->cc[1], err));
        XQ_TRY(stored_of(job, sc->enc, sc->b, r * in, &m->cs[2], &m->cc[2], err));
        m->cn = 3;
        break;
    case OUT_LORA:
    case OUT_DORA:
        svd_factors(m, r, sc->a, sc->b);
        XQ_TRY(stored_of(job, sc->enc, sc->a, r * in, &m->cs[0], &m->cc[0], err));
        XQ_TRY(stored_of(job, sc->enc, sc->b, out * r, &m->cs[1], &m->cc[1], err));
        m->cn = 2;
        if (m->out_kind == OUT_DORA) {
            XQ_TRY(stored_of(job, sc->enc, m->a->magnitude, out, &m->cs[2], &m->cc[2], err));
            m->cn = 3;
        }
        break;
    default:
        break;
    }
    m->ck_kind = m->out_kind;
    m->ck_rank = m->rank;
    m->ck_kept = m->kept;
    return EXPERT_OK;
}

/* Output size for the current decisions; with bodies = 0 every section body
 * counts as empty (the structure overhead alone). */
static expert_status layout_size(cjob *job, uint64_t budget, uint64_t reference, int bodies,
                                 uint64_t *size, expert_error *err)
{
    size_t total = 0;
    uint64_t names = 0;
    for (size_t i = 0; i < job->nm; i++) {
        size_t n;
        uint64_t nl;
        module_names(&job->m[i], &n, &nl);
        total += n;
        names += nl;
    }
    uint64_t *stored = xq_calloc(total, sizeof *stored), msize = 0;
    scratch sc = {NULL, NULL, NULL};
    expert_status st = stored == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : EXPERT_OK;
    if (st == EXPERT_OK && bodies)
        st = scratch_alloc(job, &sc, err);
    size_t k = 0;
    for (size_t i = 0; bodies && st == EXPERT_OK && i < job->nm; i++) {
        cmod *m = &job->m[i];
        if (m->out_kind == OUT_DROP)
            continue;
        st = module_stored(job, m, &sc, err);
        for (size_t j = 0; st == EXPERT_OK && j < m->cn; j++)
            stored[k++] = m->cs[j];
    }
    scratch_free(&sc);
    char *meta = st == EXPERT_OK ? build_metadata(job, budget, reference, err) : NULL;
    if (st == EXPERT_OK && meta == NULL)
        st = EXPERT_E_NOMEM;
    if (st == EXPERT_OK)
        st = xq_metadata_size(meta, strlen(meta), &msize, err);
    free(meta);
    if (st == EXPERT_OK)
        *size = xq_file_size(&job->lay, stored, total, names, msize);
    xq_free(stored);
    return st;
}

/* ------------------------------------------------------------ main */

/* A module's share of the budget: what one rank step of the output costs it,
 * (out + in), times the input's rank (1 for a dense or sparse-only change).
 * For LoRA inputs this is the input's own proportion; for a dense change it
 * is what an adapter of uniform rank spends per layer, so a small layer (a
 * classifier head) is not starved because its dense ΔW is small. */
static double share_weight(const cmod *m)
{
    double r = m->a->r > 0 ? (double)m->a->r : 1.0;
    return (double)(m->out + m->in) * r;
}

expert_status xq_reference_size(expert_reader *r, uint64_t *out, expert_error *err)
{
    expert_header_info h;
    expert_header(r, &h);
    uint64_t drop = 0;
    uint32_t n = expert_section_count(r);
    for (uint32_t i = 0; i < n; i++) {
        expert_section_info s;
        if (expert_section(r, i, &s) != EXPERT_OK)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "section %u unreadable", i);
        int adapter = s.known_type && s.module != EXPERT_MODULE_NONE &&
                      ((s.type >= EXPERT_SECTION_LORA_A && s.type <= EXPERT_SECTION_IA3_VECTOR) ||
                       (s.type >= EXPERT_SECTION_OSD_U && s.type <= EXPERT_SECTION_OSD_SPARSE_VALUES));
        if (!adapter)
            drop += s.stored_length;
    }
    *out = h.file_length - drop;
    return EXPERT_OK;
}

static void job_free(cjob *job)
{
    for (size_t i = 0; i < job->nm; i++) {
        cmod *m = &job->m[i];
        expert_adapter_free(m->a);
        xq_free(m->U);
        xq_free(m->S);
        xq_free(m->Vt);
        xq_free(m->D);
        xq_free(m->gU);
        xq_free(m->gVt);
        xq_free(m->order);
    }
    xq_free(job->m);
    expert_safetensors_free(job->base_st);
    expert_safetensors_free(job->grads_st);
    if (job->base)
        munmap((void *)(uintptr_t)job->base, job->base_size);
    if (job->grads)
        munmap((void *)(uintptr_t)job->grads, job->grads_size);
    expert_close(job->r);
}

void xq_report_free(xq_report *rep)
{
    if (rep == NULL)
        return;
    for (size_t i = 0; i < rep->module_count; i++)
        free(rep->modules[i].path);
    free(rep->modules);
    memset(rep, 0, sizeof *rep);
}

static const char *kind_name(expert_adapter_kind k)
{
    return k == EXPERT_ADAPTER_LORA ? "lora" : k == EXPERT_ADAPTER_DORA ? "dora"
           : k == EXPERT_ADAPTER_IA3 ? "ia3" : "osd";
}

static expert_status setup(cjob *job, const char *in, expert_error *err)
{
    const xq_compress_opts *o = job->o;
    XQ_TRY(expert_open(in, NULL, &job->r, err));
    if (o->base_path != NULL)
        XQ_TRY(map_file(o->base_path, &job->base, &job->base_size, &job->base_st, err));
    if (o->method == XQ_METHOD_OSD && o->score == XQ_SCORE_GRADIENT) {
        if (o->grads_path == NULL)
            return FAIL(EXPERT_E_INVALID_ARGUMENT, "the gradient score needs a gradients file (--grads)");
        XQ_TRY(map_file(o->grads_path, &job->grads, &job->grads_size, &job->grads_st, err));
    }
    job->nm = expert_module_count(job->r);
    if (job->nm == 0)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "'%s' has no adapter modules", in);
    job->m = xq_calloc(job->nm, sizeof *job->m);
    if (job->m == NULL)
        return FAIL(EXPERT_E_NOMEM, "out of memory");
    uint32_t nsec = expert_section_count(job->r);
    for (size_t i = 0; i < job->nm; i++) {
        cmod *m = &job->m[i];
        m->index = (uint32_t)i;
        expert_module(job->r, (uint32_t)i, &m->mi);
        XQ_TRY(expert_adapter_load(job->r, (uint32_t)i, &m->a, err));
        m->out = m->a->out;
        m->in = m->a->in;
        for (uint32_t s = 0; s < nsec; s++) {
            expert_section_info si;
            if (expert_section(job->r, s, &si) == EXPERT_OK && si.module == i)
                m->src_bytes += si.decoded_length;
        }
        if (m->a->kind == EXPERT_ADAPTER_IA3) {
            m->action = ACT_COPY;
            uint64_t len = m->a->feedforward ? m->a->in : m->a->out, st;
            uint8_t c;
            XQ_TRY(xq_stored_size(&job->lay, NULL, EXPERT_DTYPE_F32, m->a->l, (size_t)len * sizeof(float), &st, &c, err));
            m->fixed_bytes = up64(st, job->lay.alignment);
            continue;
        }
        m->action = ACT_COMPRESS;
        if (m->a->kind == EXPERT_ADAPTER_DORA) {
            if (o->base_path != NULL) {
                m->dense = 1; /* the effective ΔW = W' − W, compressed additively */
            } else if (o->method == XQ_METHOD_OSD) {
                return FAIL(EXPERT_E_INVALID_ARGUMENT,
                            "module '%s' is DoRA: an osd module is additive and cannot carry the "
                            "magnitude; give --base BASE.safetensors to compress its effective W' - W",
                            m->mi.path);
            } else { /* svd arm keeps DoRA: the magnitude is copied and charged */
                uint64_t st;
                uint8_t c;
                XQ_TRY(xq_stored_size(&job->lay, NULL, EXPERT_DTYPE_F32, m->a->magnitude,
                                      (size_t)m->out * sizeof(float), &st, &c, err));
                m->fixed_bytes = up64(st, job->lay.alignment);
            }
        }
        if (m->a->kind == EXPERT_ADAPTER_OSD && m->a->sparse.nnz > 0)
            m->dense = 1;
    }
    return EXPERT_OK;
}

expert_status xq_compress(const char *in, const char *out, const xq_compress_opts *opt,
                          xq_report *rep, expert_error *err)
{
    if (in == NULL || out == NULL || opt == NULL || rep == NULL)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "invalid argument");
    memset(rep, 0, sizeof *rep);
    double t0 = xq_now();
    cjob job;
    memset(&job, 0, sizeof job);
    job.o = opt;
    job.lay.alignment = opt->alignment ? opt->alignment : 64;
    job.lay.frame_size = 1u << 20;
    job.lay.level = opt->zstd_level ? opt->zstd_level : 9;
    job.lay.codec = opt->codec;
    job.proxy = job.lay;
    job.proxy.level = 1;
    if (job.lay.alignment != 64 && job.lay.alignment != 256 && job.lay.alignment != 4096)
        return FAIL(EXPERT_E_INVALID_ARGUMENT, "alignment must be 64, 256 or 4096");
    /* OpenBLAS runs single-threaded inside (restored on return), and modules
     * are spread over our own threads: every module is computed the same way
     * whatever the thread count, so the output does not depend on it. */
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    job.threads = opt->threads ? opt->threads : ncpu > 0 ? (unsigned)(ncpu < 16 ? ncpu : 16) : 1;
    oset secs = {0};
    char *meta = NULL;
    expert_writer *w = NULL;
    expert_status st = setup(&job, in, err);
    uint64_t reference = 0, budget = 0, size = 0;
    if (st == EXPERT_OK)
        st = xq_reference_size(job.r, &reference, err);
    if (st == EXPERT_OK) {
        expert_header_info h;
        expert_header(job.r, &h);
        rep->input_size = h.file_length;
        budget = opt->budget_bytes ? opt->budget_bytes : (uint64_t)floor(opt->budget_ratio * (double)reference);
        if (budget == 0)
            st = FAIL(EXPERT_E_INVALID_ARGUMENT, "the budget is 0 bytes");
    }
    /* 1. decompose */
    double t1 = xq_now();
    if (st == EXPERT_OK)
        st = run_phase(&job, 0, err);
    double t2 = xq_now();
    /* 2. fixed costs: everything with every module present at its source rank */
    uint64_t fixed = 0;
    double weights = 0.0;
    if (st == EXPERT_OK) {
        for (size_t i = 0; i < job.nm; i++) {
            cmod *m = &job.m[i];
            m->rank = m->K;
            m->kept = 0;
            m->out_kind = m->action == ACT_COPY ? OUT_IA3 : m->K == 0 ? OUT_DROP
                          : opt->method == XQ_METHOD_OSD ? OUT_OSD
                          : m->a->kind == EXPERT_ADAPTER_DORA && !m->dense ? OUT_DORA : OUT_LORA;
            fixed += m->fixed_bytes;
            if (m->action == ACT_COMPRESS && m->K > 0)
                weights += share_weight(m);
        }
        /* structure and names of that layout, with empty bodies: */
        uint64_t overhead = 0;
        st = layout_size(&job, budget, reference, 0, &overhead, err);
        if (st == EXPERT_OK && overhead + fixed >= budget)
            st = FAIL(EXPERT_E_INVALID_ARGUMENT,
                      "budget %" PRIu64 " bytes is below the fixed cost of the file (%" PRIu64
                      " bytes: header, metadata, TOC, names, copied vectors, magnitudes)",
                      budget, overhead + fixed);
        /* 3. shares of the rest, proportional to share_weight */
        if (st == EXPERT_OK) {
            uint64_t data = budget - overhead - fixed;
            for (size_t i = 0; i < job.nm; i++) {
                cmod *m = &job.m[i];
                if (m->action == ACT_COMPRESS && m->K > 0 && weights > 0)
                    m->target = m->fixed_bytes + (uint64_t)((double)data * (share_weight(m) / weights));
            }
        }
    }
    /* 4. fit */
    if (st == EXPERT_OK)
        st = run_phase(&job, 1, err);
    if (st == EXPERT_OK)
        st = layout_size(&job, budget, reference, 1, &size, err);
    /* 5. hand out the slack */
    if (st == EXPERT_OK && size < budget && opt->method == XQ_METHOD_SVD) {
        scratch sc = {NULL, NULL, NULL};
        st = scratch_alloc(&job, &sc, err);
        uint64_t slack = budget - size;
        uint64_t *next = xq_calloc(job.nm, sizeof *next); /* cost of rank + 1 */
        if (st == EXPERT_OK && next == NULL)
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
        for (size_t i = 0; st == EXPERT_OK && i < job.nm; i++) {
            cmod *m = &job.m[i];
            if (m->action == ACT_COMPRESS && m->rank < m->K)
                st = cost_svd(&job, m, m->rank + 1, &sc, &next[i], &m->err);
        }
        while (st == EXPERT_OK) {
            /* best retained energy per byte among the steps that fit (64 bytes kept for
             * metadata digits and a module appearing in the TOC) */
            size_t best = SIZE_MAX;
            double bv = -1.0;
            for (size_t i = 0; i < job.nm; i++) {
                cmod *m = &job.m[i];
                if (m->action != ACT_COMPRESS || m->rank >= m->K)
                    continue;
                uint64_t cur = m->rank ? m->bytes : 0, extra = m->rank ? 0 : 256 + strlen(m->mi.path) * 2 + 64;
                uint64_t d = next[i] - cur + extra;
                if (d + 64 > slack)
                    continue;
                double g = (double)m->S[m->rank] * (double)m->S[m->rank] / m->norm2 / (double)d;
                if (g > bv) {
                    bv = g;
                    best = i;
                }
            }
            if (best == SIZE_MAX)
                break;
            cmod *m = &job.m[best];
            uint64_t cur = m->rank ? m->bytes : 0, extra = m->rank ? 0 : 256 + strlen(m->mi.path) * 2 + 64;
            slack -= next[best] - cur + extra;
            m->rank++;
            m->bytes = next[best];
            m->out_kind = m->a->kind == EXPERT_ADAPTER_DORA && !m->dense ? OUT_DORA : OUT_LORA;
            if (m->rank < m->K)
                st = cost_svd(&job, m, m->rank + 1, &sc, &next[best], err);
        }
        xq_free(next);
        for (size_t i = 0; st == EXPERT_OK && i < job.nm; i++)
            if (job.m[i].action == ACT_COMPRESS && job.m[i].K > 0)
                st = svd_error(&job, &job.m[i], job.m[i].rank, &sc, err, &job.m[i].rel_fro,
                               &job.m[i].energy);
        scratch_free(&sc);
    } else if (st == EXPERT_OK && opt->method == XQ_METHOD_OSD && size < budget) {
        /* the whole slack to one module at a time (largest first), refitting N
         * at its chosen k, until it is used up: per-module shares would each be
         * smaller than the 64-byte alignment steps of the cost */
        uint64_t slack = budget - size;
        size_t *ord = xq_malloc(job.nm * sizeof *ord), no = 0;
        scratch sc = {NULL, NULL, NULL};
        st = ord == NULL ? FAIL(EXPERT_E_NOMEM, "out of memory") : scratch_alloc(&job, &sc, err);
        for (size_t i = 0; st == EXPERT_OK && i < job.nm; i++)
            if (job.m[i].out_kind == OUT_OSD)
                ord[no++] = i;
        for (size_t a = 1; st == EXPERT_OK && a < no; a++) /* insertion sort, largest input first */
            for (size_t b = a; b > 0 && job.m[ord[b]].src_bytes > job.m[ord[b - 1]].src_bytes; b--) {
                size_t t = ord[b];
                ord[b] = ord[b - 1];
                ord[b - 1] = t;
            }
        /* below three alignment steps the rest is not worth more encodes */
        for (size_t q = 0; st == EXPERT_OK && q < no && slack >= 3 * (uint64_t)job.lay.alignment; q++) {
            cmod *m = &job.m[ord[q]];
            if (m->kept >= (m->out + m->in) * m->rank)
                continue;
            uint64_t before = m->bytes;
            m->target = before + slack;
            st = fit_module(&job, m, &sc, 1, err);
            if (st == EXPERT_OK && m->bytes >= before)
                slack -= m->bytes - before;
        }
        scratch_free(&sc);
        xq_free(ord);
    }
    if (st == EXPERT_OK)
        st = layout_size(&job, budget, reference, 1, &size, err);
    /* 6. over the budget (metadata digits, encoder jumps): shrink the largest module */
    for (int guard = 0; st == EXPERT_OK && size > budget && guard < 200; guard++) {
        size_t big = SIZE_MAX;
        for (size_t i = 0; i < job.nm; i++)
            if ((job.m[i].out_kind == OUT_OSD || job.m[i].out_kind == OUT_LORA ||
                 job.m[i].out_kind == OUT_DORA) &&
                (big == SIZE_MAX || job.m[i].bytes > job.m[big].bytes))
                big = i;
        if (big == SIZE_MAX)
            break;
        cmod *m = &job.m[big];
        scratch sc = {NULL, NULL, NULL};
        st = scratch_alloc(&job, &sc, err);
        if (st == EXPERT_OK && opt->method == XQ_METHOD_SVD) {
            m->rank--;
            if (m->rank == 0)
                m->out_kind = OUT_DROP;
            st = cost_svd(&job, m, m->rank, &sc, &m->bytes, err);
            if (st == EXPERT_OK)
                st = svd_error(&job, m, m->rank, &sc, err, &m->rel_fro, &m->energy);
        } else if (st == EXPERT_OK) {
            m->target = m->bytes > (size - budget) + 64 ? m->bytes - (size - budget) - 64 : 0;
            st = fit_module(&job, m, &sc, 1, err);
        }
        scratch_free(&sc);
        if (st == EXPERT_OK)
            st = layout_size(&job, budget, reference, 1, &size, err);
    }
    double t3 = xq_now();
    /* 7. write */
    if (st == EXPERT_OK)
        st = build_sections(&job, &secs, err);
    if (st == EXPERT_OK) {
        meta = build_metadata(&job, budget, reference, err);
        if (meta == NULL)
            st = EXPERT_E_NOMEM;
    }
    expert_writer_options wo = {.alignment = job.lay.alignment, .frame_size = job.lay.frame_size, .zstd_level = job.lay.level, .threads = 1};
    if (st == EXPERT_OK)
        st = expert_writer_open(out, &wo, &w, err);
    if (st == EXPERT_OK)
        st = expert_writer_set_metadata(w, meta, strlen(meta), err);
    for (size_t i = 0; st == EXPERT_OK && i < secs.n; i++) {
        osec *s = &secs.s[i];
        expert_section_desc d;
        memset(&d, 0, sizeof d);
        d.name = s->name;
        d.type = s->type;
        d.codec = s->codec;
        d.dtype = s->dtype;
        d.rank = s->rank;
        d.layer = s->layer;
        d.module = s->module;
        d.dims[0] = s->dims[0];
        d.dims[1] = s->dims[1];
        st = expert_writer_add(w, &d, s->data, s->count * sizeof(float), err);
    }
    if (st == EXPERT_OK) {
        st = expert_writer_finish(w, NULL, err);
        w = NULL;
    }
    if (w != NULL)
        expert_writer_abort(w);
    free(meta);
    oset_free(&secs);
    double t4 = xq_now();
    /* 8. report */
    if (st == EXPERT_OK) {
        struct stat sb;
        rep->file_size = stat(out, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        rep->predicted_size = size;
        rep->budget = budget;
        rep->reference_size = reference;
        rep->method = method_name(opt);
        rep->seconds = t4 - t0;
        rep->seconds_decompose = t2 - t1;
        rep->seconds_fit = t3 - t2;
        rep->seconds_write = t4 - t3;
        rep->modules = calloc(job.nm, sizeof *rep->modules);
        if (rep->modules == NULL)
            st = FAIL(EXPERT_E_NOMEM, "out of memory");
        double num = 0.0, den = 0.0;
        for (size_t i = 0; st == EXPERT_OK && i < job.nm; i++) {
            cmod *m = &job.m[i];
            xq_module_report *q = &rep->modules[rep->module_count++];
            q->path = strdup(m->mi.path);
            q->src_type = kind_name(m->a->kind);
            q->out_type = m->out_kind == OUT_LORA ? "lora" : m->out_kind == OUT_DORA ? "dora"
                          : m->out_kind == OUT_OSD ? "osd" : m->out_kind == OUT_IA3 ? "ia3" : "dropped";
            q->out = m->out;
            q->in = m->in;
            q->src_rank = m->a->r;
            q->svd_rank = m->K;
            q->rank = m->out_kind == OUT_DROP ? 0 : m->rank;
            q->kept = m->out_kind == OUT_OSD ? m->kept : 0;
            q->total = m->out_kind == OUT_OSD ? (m->out + m->in) * m->rank : 0;
            q->bytes = m->out_kind == OUT_DROP ? 0 : m->bytes;
            q->target = m->target;
            q->rel_fro = m->rel_fro;
            q->energy = m->energy;
            q->dense_route = m->dense;
            if (m->action == ACT_COMPRESS) {
                num += m->rel_fro * m->rel_fro * m->norm2;
                den += m->norm2;
            }
        }
        rep->rel_fro_all = den > 0 ? sqrt(num / den) : 0.0;
        uint32_t n = expert_section_count(job.r);
        for (uint32_t i = 0; i < n; i++) {
            expert_section_info si;
            if (expert_section(job.r, i, &si) == EXPERT_OK && si.module == EXPERT_MODULE_NONE)
                rep->dropped_sections++;
        }
        if (st == EXPERT_OK && rep->file_size != size)
            st = FAIL(EXPERT_E_IO, "internal: predicted %" PRIu64 " bytes, the writer produced %" PRIu64,
                      size, rep->file_size);
    }
    job_free(&job);
    openblas_set_num_threads(blas_threads);
    if (st != EXPERT_OK)
        xq_report_free(rep);
    return st;
}
