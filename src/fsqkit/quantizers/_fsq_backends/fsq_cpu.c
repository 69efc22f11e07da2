/* Fused FSQ on CPU, tanh forward mode: forward computes tanh(z + shift) and
 * (when a gradient is needed) keeps it for a backward pass without tanh. Used
 * for levels above 64; the bin-edge mode (fsq_cpu_edges.c) is the default.
 * Also holds the tanh primitive that both modes call. Shared layout and
 * exactness notes: fsq_cpu.h. */
#include "fsq_cpu.h"

int g_kind = -1;
void *g_fn = 0;
int64_t g_mode = 0;

void fsq_set_tanh(int kind, void *fn, int64_t mode) {
    g_kind = kind;
    g_fn = fn;
    g_mode = mode;
}


/* Probe used by build.py to check the primitive against torch.tanh. */
void fsq_tanh(const float *in, float *out, int64_t n) {
    float buf[TILE + 16];
    for (int64_t s = 0; s < n; s += TILE) {
        int m = (int)(n - s < TILE ? n - s : TILE);
        memcpy(buf, in + s, (size_t)m * 4);
        tanh_inplace(buf, m);
        memcpy(out + s, buf, (size_t)m * 4);
    }
}

/* What one forward tile (tanh mode) needs, shared read-only by the threads. */
typedef struct {
    tiling t;
    const consts_tile *full;
    const int32_t *wfull, *basis;
    const void *z;
    void *out;
    float *saved_t;
    int32_t *indices;
    const float *shift, *half_l, *offset, *half_width, *lm1, *sym_scale;
    int z_dt, out_dt, D, G, symmetric, stream;
} fwd_ctx;

/* Codes, indices (and saved tanh) of tile tix; returns nonzero on NaN/inf. */
static int forward_tile(const void *ctx, int64_t tix) {
    const fwd_ctx *x = ctx;
    const tiling t = x->t;
    const consts_tile *full = x->full;
    const int32_t *wfull = x->wfull, *basis = x->basis;
    const void *z = x->z;
    void *out = x->out;
    float *saved_t = x->saved_t;
    int32_t *indices = x->indices;
    const float *shift = x->shift, *half_l = x->half_l, *offset = x->offset;
    const float *half_width = x->half_width, *lm1 = x->lm1, *sym_scale = x->sym_scale;
    int z_dt = x->z_dt, out_dt = x->out_dt, D = x->D, G = x->G, symmetric = x->symmetric;
    int stream = x->stream;
    int64_t C = t.C, inner = t.inner;
    float u[TILE + 16] __attribute__((aligned(64)));
    float code[TILE];
    int32_t dig[TILE];
    int32_t idx[TILE];
    consts_tile part;
    int64_t o, s;
    int np = tile_span(&t, tix, &o, &s);
    const consts_tile *k = full;
    if (np != t.P) {
        fill_consts(&t, &part, np, D, symmetric, shift, half_l, offset, half_width, lm1,
                    sym_scale);
        k = &part;
    }
    int n = np * (int)C;
    /* Channel-last float32 tiles are one contiguous run: read and write them in
     * place instead of through the staging buffers. */
    int direct = !t.cf;
    int64_t off = run_offset(&t, o, s, 0);
    const float *src = u;
    if (direct && z_dt == DT_F32) src = (const float *)z + off;
    else gather(&t, u, z, z_dt, o, s, np);
    float *cdst = (direct && out_dt == DT_F32 && !stream) ? (float *)out + off : code;
    float *tdst = (direct && saved_t) ? saved_t + off : 0;
    int lbad = 0;
    for (int j = 0; j < n; j++) {
        float v = src[j];
        lbad |= !(v - v == 0.0f); /* NaN or inf */
        u[j] = v + k->a[j];
    }
    tanh_inplace(u, n);
    if (symmetric) {
        for (int j = 0; j < n; j++) {
            float tj = u[j];
            float x = (k->b[j] * (tj + 1.0f)) / 2.0f;
            float r = nearbyintf(x);
            float q = x + (r - x); /* the STE's forward value: -0 becomes +0 as in torch */
            cdst[j] = q * k->h[j] - 1.0f;
            dig[j] = (int32_t)clampf(r, k->m[j]);
        }
    } else {
        for (int j = 0; j < n; j++) {
            float tj = u[j];
            float x = tj * k->b[j] - k->c[j];
            float r = nearbyintf(x);
            float q = x + (r - x);
            cdst[j] = q / k->h[j];
            dig[j] = (int32_t)clampf(r + k->h[j], k->m[j]);
        }
    }
    if (tdst) stream_copy(tdst, u, n);
    /* Mixed-radix indices over the D digits of each codebook. */
    int64_t pos0 = t.cf ? o * inner + s : s;
    int32_t *idst = indices + pos0 * G;
    if (t.cf) {
        for (int p = 0; p < np * G; p++) idx[p] = 0;
        for (int c = 0; c < C; c++) {
            int g = c / D;
            int32_t b = basis[c % D];
            for (int p = 0; p < np; p++) idx[p * G + g] += dig[c * np + p] * b;
        }
        memcpy(idst, idx, (size_t)np * G * 4);
    } else {
        for (int j = 0; j < n; j++) dig[j] *= wfull[j];
        sum_groups(dig, idst, np * G, D);
    }
    if (cdst == code) scatter(&t, out, out_dt, code, o, s, np, stream);
    if (saved_t && !tdst) scatter(&t, saved_t, DT_F32, u, o, s, np, 1);
    return lbad;
}

/* Returns nonzero if z held a NaN or an infinity. saved_t may be NULL. */
int fsq_forward(const void *z, int z_dt, void *out, int out_dt, float *saved_t, int32_t *indices,
                int64_t outer, int64_t C, int64_t inner, const float *shift, const float *half_l,
                const float *offset, const float *half_width, const float *lm1,
                const float *sym_scale, const int32_t *basis, int D, int G, int symmetric,
                int num_threads) {
    tiling t = make_tiling(outer, C, inner);
    consts_tile full; /* constants of a full tile: the same for all of them */
    fill_consts(&t, &full, t.P, D, symmetric, shift, half_l, offset, half_width, lm1, sym_scale);
    /* basis weight of each element of a full tile */
    int32_t wfull[TILE];
    for (int j = 0; j < t.P * C; j++) {
        int c = t.cf ? j / t.P : j % (int)C;
        wfull[j] = basis[c % D];
    }
    int stream = outer * C * inner * 4 >= STREAM_BYTES;
    if (outer * C * inner < PARALLEL_MIN) num_threads = 1;
    fwd_ctx x = {t, &full, wfull, basis, z, out, saved_t, indices, shift, half_l, offset,
                 half_width, lm1, sym_scale, z_dt, out_dt, D, G, symmetric, stream};
    return run_tiles(forward_tile, &x, t.n_tiles, num_threads, 4);
}

/* -------------------------------------------------------------- backward */
/* grad_z = tanh_backward(chain(grad_codes), t) in the reference's op order:
 *   asymmetric: chain = (g / half_width) * half_l
 *   symmetric:  chain = ((g * sym_scale) / 2) * (L - 1)
 *   tanh_backward(a, t) = a * fma(-t, t, 1)   (as ATen computes it)          */
void fsq_backward(const void *g, int g_dt, const float *saved_t, void *gz, int gz_dt,
                  int64_t outer, int64_t C, int64_t inner, const float *half_l,
                  const float *half_width, const float *lm1, const float *sym_scale, int D,
                  int symmetric, int num_threads) {
    tiling t = make_tiling(outer, C, inner);
    consts_tile full; /* only b (half_l or L - 1) and h are read below */
    fill_consts(&t, &full, t.P, D, symmetric, half_l, half_l, half_l, half_width, lm1,
                sym_scale);
    int stream = outer * C * inner * 4 >= STREAM_BYTES;
    if (outer * C * inner < PARALLEL_MIN) num_threads = 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) if (num_threads > 1)
    for (int64_t tix = 0; tix < t.n_tiles; tix++) {
        float gb[TILE], tb[TILE], res[TILE];
        consts_tile part;
        int64_t o, s;
        int np = tile_span(&t, tix, &o, &s);
        const consts_tile *k = &full;
        if (np != t.P) {
            fill_consts(&t, &part, np, D, symmetric, half_l, half_l, half_l, half_width, lm1,
                        sym_scale);
            k = &part;
        }
        int n = np * (int)C;
        int64_t off = run_offset(&t, o, s, 0);
        const float *gp = gb, *tp = tb;
        if (!t.cf && g_dt == DT_F32) gp = (const float *)g + off;
        else gather(&t, gb, g, g_dt, o, s, np);
        if (!t.cf) tp = saved_t + off;
        else gather(&t, tb, saved_t, DT_F32, o, s, np);
        if (symmetric) {
            for (int j = 0; j < n; j++) {
                float a = ((gp[j] * k->h[j]) / 2.0f) * k->b[j];
                res[j] = a * fmaf(-tp[j], tp[j], 1.0f);
            }
        } else {
            for (int j = 0; j < n; j++) {
                float a = (gp[j] / k->h[j]) * k->b[j];
                res[j] = a * fmaf(-tp[j], tp[j], 1.0f);
            }
        }
        scatter(&t, gz, gz_dt, res, o, s, np, stream);
    }
}
