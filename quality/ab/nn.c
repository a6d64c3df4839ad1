/* nn.c — forward and backward passes of the A/B models' layers (see nn.h). */
#include "nn.h"

#include <cblas.h>

#include "expert_adapter.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ----------------------------------------------------------------- rng */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

ab_rng ab_rng_make(uint64_t seed, uint64_t tag)
{
    uint64_t s = seed ^ (tag * 0xD1B54A32D192ED03ull);
    ab_rng r = {splitmix(&s)};
    return r;
}

uint64_t ab_rng_u64(ab_rng *r)
{
    return splitmix(&r->s);
}

double ab_rng_uniform(ab_rng *r)
{
    return (double)(ab_rng_u64(r) >> 11) * 0x1.0p-53;
}

double ab_rng_normal(ab_rng *r)
{
    double u1 = ab_rng_uniform(r), u2 = ab_rng_uniform(r);
    if (u1 < 0x1.0p-60)
        u1 = 0x1.0p-60;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t ab_rng_below(ab_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift; the bias (< n / 2^64) is irrelevant here */
    return (uint64_t)(((unsigned __int128)ab_rng_u64(r) * n) >> 64);
}

/* -------------------------------------------------------------- linear */

void ab_linear_fwd(const ab_linear *l, int N, const float *x, float *y, float *xa)
{
    if (l->adapter != NULL) {
        /* checked when loaded; a failure here (out of memory) poisons the
         * output with NaN, which the loss and every caller detect */
        if (expert_adapter_forward(l->adapter, l->W, l->b, NULL, (uint64_t)N, x, y, NULL) != EXPERT_OK)
            for (size_t i = 0; i < (size_t)N * (size_t)l->out; i++)
                y[i] = NAN;
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, l->out, l->in, 1.0f, x, l->in, l->W, l->in,
                0.0f, y, l->out);
    if (l->b != NULL)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < l->out; o++)
                y[(size_t)n * (size_t)l->out + (size_t)o] += l->b[o];
    if (l->r > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, l->r, l->in, 1.0f, x, l->in, l->A, l->in,
                    0.0f, xa, l->r);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, l->out, l->r, l->s, xa, l->r, l->B, l->r,
                    1.0f, y, l->out);
    }
}

void ab_linear_bwd(const ab_linear *l, int N, const float *x, const float *xa, const float *dy,
                   float *dx, float *tmp)
{
    if (dx != NULL)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, l->in, l->out, 1.0f, dy, l->out, l->W,
                    l->in, 1.0f, dx, l->in);
    if (l->dW != NULL)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->in, N, 1.0f, dy, l->out, x, l->in,
                    1.0f, l->dW, l->in);
    if (l->db != NULL)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < l->out; o++)
                l->db[o] += dy[(size_t)n * (size_t)l->out + (size_t)o];
    if (l->r > 0) {
        /* tmp = dy·B: the gradient flowing into x·Aᵀ, before the scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, l->r, l->out, 1.0f, dy, l->out, l->B,
                    l->r, 0.0f, tmp, l->r);
        if (dx != NULL)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, l->in, l->r, l->s, tmp, l->r, l->A,
                        l->in, 1.0f, dx, l->in);
        if (l->dA != NULL)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->r, l->in, N, l->s, tmp, l->r, x, l->in,
                        1.0f, l->dA, l->in);
        if (l->dB != NULL)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l->out, l->r, N, l->s, dy, l->out, xa, l->r,
                        1.0f, l->dB, l->r);
    }
}

double ab_linear_flops(const ab_linear *l, int N)
{
    return 2.0 * N * ((double)l->out * l->in + (double)l->r * (l->in + l->out));
}

/* ------------------------------------------------------------ RMSNorm */

void ab_rmsnorm_fwd(int N, int d, const float *x, const float *g, float eps, float *y, float *rstd)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * (size_t)d;
        float *yr = y + (size_t)n * (size_t)d;
        double ss = 0.0;
        for (int i = 0; i < d; i++)
            ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        rstd[n] = r;
        for (int i = 0; i < d; i++)
            yr[i] = xr[i] * r * g[i];
    }
}

void ab_rmsnorm_bwd(int N, int d, const float *x, const float *g, const float *rstd, const float *dy,
                    float *dx, float *dg)
{
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * (size_t)d, *dyr = dy + (size_t)n * (size_t)d;
        float *dxr = dx + (size_t)n * (size_t)d;
        float r = rstd[n];
        double dot = 0.0; /* Σ g·dy·x */
        for (int i = 0; i < d; i++)
            dot += (double)g[i] * dyr[i] * xr[i];
        float c = (float)(dot * r * r * r / d);
        for (int i = 0; i < d; i++)
            dxr[i] += r * g[i] * dyr[i] - c * xr[i];
        if (dg != NULL)
            for (int i = 0; i < d; i++)
                dg[i] += dyr[i] * xr[i] * r;
    }
}

/* --------------------------------------------------------------- RoPE */

void ab_rope_tables(int T, int hd, double theta, float *cosv, float *sinv)
{
    int half = hd / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = t * pow(theta, -2.0 * i / hd);
            cosv[t * half + i] = (float)cos(a);
            sinv[t * half + i] = (float)sin(a);
        }
}

void ab_rope(int B, int T, int H, int hd, const float *cosv, const float *sinv, float *x, int inverse)
{
    int half = hd / 2, D = H * hd;
    float sign = inverse ? -1.0f : 1.0f;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cosv + t * half, *s = sinv + t * half;
            for (int h = 0; h < H; h++) {
                float *v = x + ((size_t)b * (size_t)T + (size_t)t) * (size_t)D + (size_t)h * (size_t)hd;
                for (int i = 0; i < half; i++) {
                    float x1 = v[i], x2 = v[i + half], sn = sign * s[i];
                    v[i] = x1 * c[i] - x2 * sn;
                    v[i + half] = x2 * c[i] + x1 * sn;
                }
            }
        }
}

/* ------------------------------------------- causal multi-head attention */

void ab_attention_fwd(int B, int T, int H, int hd, const float *q, const float *k, const float *v,
                      float *probs, float *out)
{
    int D = H * hd;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t off = (size_t)b * (size_t)T * (size_t)D + (size_t)h * (size_t)hd;
            float *P = probs + ((size_t)b * (size_t)H + (size_t)h) * (size_t)T * (size_t)T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q + off, D, k + off, D,
                        0.0f, P, T);
            for (int t = 0; t < T; t++) {
                float *row = P + (size_t)t * (size_t)T, mx = row[0];
                for (int j = 1; j <= t; j++)
                    mx = row[j] > mx ? row[j] : mx;
                double sum = 0.0;
                for (int j = 0; j <= t; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= t; j++)
                    row[j] *= inv;
                for (int j = t + 1; j < T; j++)
                    row[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, v + off, D, 0.0f,
                        out + off, D);
        }
}

void ab_attention_bwd(int B, int T, int H, int hd, const float *q, const float *k, const float *v,
                      const float *probs, const float *dout, float *dq, float *dk, float *dv,
                      float *scratch)
{
    int D = H * hd;
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t off = (size_t)b * (size_t)T * (size_t)D + (size_t)h * (size_t)hd;
            const float *P = probs + ((size_t)b * (size_t)H + (size_t)h) * (size_t)T * (size_t)T;
            float *dS = scratch;
            /* dP = dO·Vᵀ, dV += Pᵀ·dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dout + off, D, v + off, D,
                        0.0f, dS, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dout + off, D, 1.0f,
                        dv + off, D);
            /* softmax backward: dS = P ⊙ (dP − Σ_j P·dP); masked entries have P = 0 */
            for (int t = 0; t < T; t++) {
                const float *pr = P + (size_t)t * (size_t)T;
                float *dr = dS + (size_t)t * (size_t)T;
                double dot = 0.0;
                for (int j = 0; j <= t; j++)
                    dot += (double)pr[j] * dr[j];
                for (int j = 0; j <= t; j++)
                    dr[j] = pr[j] * (dr[j] - (float)dot);
                for (int j = t + 1; j < T; j++)
                    dr[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dS, T, k + off, D, 1.0f,
                        dq + off, D);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dS, T, q + off, D, 1.0f,
                        dk + off, D);
        }
}

double ab_attention_flops(int B, int T, int H, int hd)
{
    return 4.0 * B * H * (double)T * T * hd;
}

/* --------------------------------------------------- activations */

void ab_swiglu_fwd(size_t n, const float *g, const float *u, float *m)
{
    for (size_t i = 0; i < n; i++)
        m[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void ab_swiglu_bwd(size_t n, const float *g, const float *u, const float *dm, float *dg, float *du)
{
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i])), silu = g[i] * sg;
        dg[i] += dm[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] += dm[i] * silu;
    }
}

void ab_relu_fwd(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void ab_relu_bwd(size_t n, const float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* ------------------------------------------------ softmax cross-entropy */

double ab_xent(int N, int V, const float *logits, const int *target, float scale, float *dlogits,
               uint8_t *correct, float *logp)
{
    int count = 0;
    for (int n = 0; n < N; n++)
        count += target[n] >= 0;
    double loss = 0.0;
    for (int n = 0; n < N; n++) {
        if (target[n] < 0)
            continue;
        const float *z = logits + (size_t)n * (size_t)V;
        int am = 0;
        for (int j = 1; j < V; j++)
            if (z[j] > z[am])
                am = j;
        double sum = 0.0;
        for (int j = 0; j < V; j++)
            sum += exp((double)z[j] - z[am]);
        double lse = z[am] + log(sum), lp = z[target[n]] - lse;
        loss -= lp;
        if (correct != NULL)
            correct[n] = am == target[n];
        if (logp != NULL)
            logp[n] = (float)lp;
        if (dlogits != NULL) {
            float *d = dlogits + (size_t)n * (size_t)V, c = scale / (float)count;
            for (int j = 0; j < V; j++)
                d[j] += c * (float)exp((double)z[j] - lse);
            d[target[n]] -= c;
        }
    }
    return count ? loss / count : 0.0;
}

/* ------------------------------------------------------------ AdamW */

int ab_adamw_init(ab_adamw *o, ab_param *p, size_t n, double wd)
{
    memset(o, 0, sizeof *o);
    o->p = p;
    o->n_params = n;
    for (size_t i = 0; i < n; i++)
        o->total += p[i].n;
    o->m = calloc(o->total ? o->total : 1, sizeof *o->m);
    o->v = calloc(o->total ? o->total : 1, sizeof *o->v);
    o->beta1 = 0.9;
    o->beta2 = 0.99;
    o->eps = 1e-8;
    o->wd = wd;
    return o->m != NULL && o->v != NULL ? 0 : -1;
}

void ab_adamw_free(ab_adamw *o)
{
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

void ab_zero_grads(ab_param *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        memset(p[i].g, 0, p[i].n * sizeof *p[i].g);
}

double ab_adamw_step(ab_adamw *o, double lr, double clip)
{
    double ss = 0.0;
    for (size_t i = 0; i < o->n_params; i++)
        for (size_t j = 0; j < o->p[i].n; j++)
            ss += (double)o->p[i].g[j] * o->p[i].g[j];
    double norm = sqrt(ss), gs = clip > 0 && norm > clip ? clip / norm : 1.0;
    o->step++;
    double c1 = 1.0 - pow(o->beta1, (double)o->step), c2 = 1.0 - pow(o->beta2, (double)o->step);
    float b1 = (float)o->beta1, b2 = (float)o->beta2;
    size_t at = 0;
    for (size_t i = 0; i < o->n_params; i++) {
        ab_param *p = &o->p[i];
        float decay = p->decay ? (float)(lr * o->wd) : 0.0f;
        for (size_t j = 0; j < p->n; j++, at++) {
            float g = p->g[j] * (float)gs;
            o->m[at] = b1 * o->m[at] + (1.0f - b1) * g;
            o->v[at] = b2 * o->v[at] + (1.0f - b2) * g * g;
            double mh = o->m[at] / c1, vh = o->v[at] / c2;
            p->w[j] -= (float)(lr * mh / (sqrt(vh) + o->eps)) + decay * p->w[j];
        }
    }
    return norm;
}

double ab_lr_at(double peak, long t, long n, long warmup)
{
    if (t < warmup)
        return peak * (double)(t + 1) / (double)warmup;
    if (n <= warmup)
        return peak;
    double f = (double)(t - warmup) / (double)(n - warmup);
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + cos(3.141592653589793 * f)));
}

double ab_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
