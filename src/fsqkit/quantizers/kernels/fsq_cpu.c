/* Fused FSQ forward and backward for CPU: one pass over memory each way.
 *
 * Built at first use by fsqkit/quantizers/kernels/build.py and loaded through
 * ctypes; nothing here is compiled at install time.
 *
 * Bit-exactness with the reference path (fsqkit/quantizers/fsq_math.py):
 *  - tanh is torch's own primitive, passed in as a function pointer resolved
 *    from libtorch_cpu (MKL VML's vmsTanh, or the SLEEF function ATen's vector
 *    kernels call); build.py picks the one that reproduces torch.tanh bit for bit.
 *  - every other step is the same IEEE float32 operation, in the same order, as
 *    the reference's separate torch ops. The build uses -ffp-contract=off: a
 *    fused multiply-add rounds once and can move a value across a bin edge. The
 *    one FMA is deliberate: ATen's tanh_backward computes 1 - t*t with one.
 *
 * Layout: z is viewed as (outer, C, inner) with C = G * D channels. Channel-last
 * inputs have inner = 1; channel-first (B, C, *spatial) inputs have
 * inner = prod(spatial). Indices are (outer, inner, G) int32. Work is cut into
 * tiles of at most TILE elements (they stay in L1): a tile is P positions x C
 * channels, gathered into a dense buffer (position-major when channel-last,
 * channel-major when channel-first), processed, and scattered back.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define TILE 2048
#define MAXC 256
/* Outputs at least this large go out with non-temporal stores: they will not
 * be in cache when read anyway, and streaming skips reading them in first. */
#define STREAM_BYTES (8 << 20)
/* Below this many elements one thread does the work: waking a second costs more
 * (milliseconds on a loaded machine) than it saves. */
#define PARALLEL_MIN 65536

enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };
enum { TANH_VML = 0, TANH_SLEEF8 = 1, TANH_SLEEF16 = 2 };

/* ------------------------------------------------------------------ tanh */
typedef void (*vml_fn)(const int64_t *n, const float *a, float *r, const int64_t *mode);
static int g_kind = -1;
static void *g_fn = 0;
static int64_t g_mode = 0;

void fsq_set_tanh(int kind, void *fn, int64_t mode) {
    g_kind = kind;
    g_fn = fn;
    g_mode = mode;
}

#if defined(__x86_64__)
typedef __m256 (*sleef8_fn)(__m256);
__attribute__((target("avx2"))) static void tanh_sleef8(float *buf, int n) {
    for (int j = 0; j < n; j += 8) {
        __m256 v = _mm256_loadu_ps(buf + j);
        _mm256_storeu_ps(buf + j, ((sleef8_fn)g_fn)(v));
    }
}
typedef __m512 (*sleef16_fn)(__m512);
__attribute__((target("avx512f"))) static void tanh_sleef16(float *buf, int n) {
    for (int j = 0; j < n; j += 16) {
        __m512 v = _mm512_loadu_ps(buf + j);
        _mm512_storeu_ps(buf + j, ((sleef16_fn)g_fn)(v));
    }
}
#endif

/* In place on n floats; buf has 16 spare slots past n (zeroed for the vector
 * variants, whose last vector may be partial). */
static inline void tanh_inplace(float *buf, int n) {
    if (g_kind == TANH_VML) {
        int64_t nn = n;
        ((vml_fn)g_fn)(&nn, buf, buf, &g_mode);
        return;
    }
    for (int j = n; j < n + 16; j++) buf[j] = 0.0f;
#if defined(__x86_64__)
    if (g_kind == TANH_SLEEF8) tanh_sleef8(buf, n);
    else tanh_sleef16(buf, n);
#endif
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

/* min(max(x, 0), hi) as the reference's clamp_min/minimum; inputs are finite
 * here (NaN inputs are flagged and sent back to the reference path). Written
 * with comparisons, not fminf/fmaxf, so that the loops vectorize. */
static inline float clampf(float x, float hi) {
    x = x > 0.0f ? x : 0.0f;
    return x < hi ? x : hi;
}

/* ------------------------------------------------------- dtype conversion */
static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, as c10::BFloat16 does. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if (f != f) return 0x7FC0;
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline void load_run(float *restrict dst, const void *src, int dt, int64_t off, int n) {
    if (dt == DT_F32) {
        memcpy(dst, (const float *)src + off, (size_t)n * 4);
    } else if (dt == DT_BF16) {
        const uint16_t *restrict s = (const uint16_t *)src + off;
        for (int j = 0; j < n; j++) dst[j] = bf16_to_f32(s[j]);
    } else {
        const _Float16 *restrict s = (const _Float16 *)src + off;
        for (int j = 0; j < n; j++) dst[j] = (float)s[j];
    }
}

static inline void store_run(void *dst, int dt, int64_t off, const float *restrict src, int n) {
    if (dt == DT_F32) {
        memcpy((float *)dst + off, src, (size_t)n * 4);
    } else if (dt == DT_BF16) {
        uint16_t *restrict d = (uint16_t *)dst + off;
        for (int j = 0; j < n; j++) d[j] = f32_to_bf16(src[j]);
    } else {
        _Float16 *restrict d = (_Float16 *)dst + off;
        for (int j = 0; j < n; j++) d[j] = (_Float16)src[j];
    }
}

/* Copy to memory that is not read again soon (the tanh saved for backward):
 * non-temporal stores skip the read-for-ownership of the destination. */
static inline void stream_copy(float *restrict dst, const float *restrict src, int n) {
    int j = 0;
#if defined(__AVX__)
    while (j < n && ((uintptr_t)(dst + j) & 31u)) {
        dst[j] = src[j];
        j++;
    }
    for (; j + 8 <= n; j += 8) _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
    _mm_sfence(); /* streamed stores are weakly ordered: publish before returning */
#endif
    for (; j < n; j++) dst[j] = src[j];
}

/* ------------------------------------------------------------ tiling */
typedef struct {
    int64_t outer, C, inner;
    int cf, P;              /* channel-first?, positions per full tile */
    int64_t cols, n_tiles;  /* tiles along inner (cf), total tiles */
} tiling;

static tiling make_tiling(int64_t outer, int64_t C, int64_t inner) {
    tiling t;
    t.outer = outer;
    t.C = C;
    t.inner = inner;
    t.cf = inner > 1;
    int64_t P = TILE / C;
    if (P < 1) P = 1;
    int64_t span = t.cf ? inner : outer;
    if (P > span) P = span > 0 ? span : 1;
    t.P = (int)P;
    t.cols = t.cf ? (inner + P - 1) / P : 1;
    t.n_tiles = t.cf ? outer * t.cols : (outer + P - 1) / P;
    return t;
}

/* Tile tix covers positions [pos0, pos0 + np) of the (outer * inner) grid. */
static inline int tile_span(const tiling *t, int64_t tix, int64_t *o, int64_t *s) {
    int64_t left;
    if (t->cf) {
        *o = tix / t->cols;
        *s = (tix % t->cols) * t->P;
        left = t->inner - *s;
    } else {
        *o = 0;
        *s = tix * t->P;
        left = t->outer - *s;
    }
    return (int)(left < t->P ? left : t->P);
}

/* Offset in the (outer, C, inner) tensor of the run for channel c (cf), or of
 * the whole tile (channel-last). */
static inline int64_t run_offset(const tiling *t, int64_t o, int64_t s, int c) {
    return t->cf ? (o * t->C + c) * t->inner + s : s * t->C;
}

static void gather(const tiling *t, float *restrict buf, const void *src, int dt, int64_t o,
                   int64_t s, int np) {
    if (!t->cf) {
        load_run(buf, src, dt, run_offset(t, o, s, 0), np * (int)t->C);
        return;
    }
    for (int c = 0; c < t->C; c++) load_run(buf + c * np, src, dt, run_offset(t, o, s, c), np);
}

static void scatter(const tiling *t, void *dst, int dt, const float *restrict buf, int64_t o,
                    int64_t s, int np, int stream) {
    if (!t->cf) {
        if (stream && dt == DT_F32)
            stream_copy((float *)dst + run_offset(t, o, s, 0), buf, np * (int)t->C);
        else
            store_run(dst, dt, run_offset(t, o, s, 0), buf, np * (int)t->C);
        return;
    }
    for (int c = 0; c < t->C; c++) {
        if (stream && dt == DT_F32)
            stream_copy((float *)dst + run_offset(t, o, s, c), buf + c * np, np);
        else
            store_run(dst, dt, run_offset(t, o, s, c), buf + c * np, np);
    }
}

/* Per-element copy of a per-dimension constant for a dense tile of np positions. */
static void spread(const tiling *t, float *restrict dst, const float *per_dim, int D, int np) {
    int C = (int)t->C;
    if (!t->cf) {
        for (int p = 0; p < np; p++)
            for (int c = 0; c < C; c++) dst[p * C + c] = per_dim[c % D];
    } else {
        for (int c = 0; c < C; c++)
            for (int p = 0; p < np; p++) dst[c * np + p] = per_dim[c % D];
    }
}

/* --------------------------------------------------------------- forward */
typedef struct {
    float a[TILE], b[TILE], c[TILE], h[TILE], m[TILE];
} consts_tile;

/* asymmetric: a = shift, b = half_l, c = offset, h = half_width, m = L - 1
 * symmetric:  a = 0,     b = L - 1,  c = 0,      h = float32(2 / (L - 1)), m = L - 1 */
static void fill_consts(const tiling *t, consts_tile *k, int np, int D, int symmetric,
                        const float *shift, const float *half_l, const float *offset,
                        const float *half_width, const float *lm1, const float *sym_scale) {
    static const float zeros[MAXC] = {0};
    spread(t, k->a, symmetric ? zeros : shift, D, np);
    spread(t, k->b, symmetric ? lm1 : half_l, D, np);
    spread(t, k->c, symmetric ? zeros : offset, D, np);
    spread(t, k->h, symmetric ? sym_scale : half_width, D, np);
    spread(t, k->m, lm1, D, np);
}

/* idx[q] = sum of the D consecutive weighted digits w[q*D .. q*D+D-1]; with D a
 * compile-time constant (see sum_groups) the loop vectorizes. */
static inline __attribute__((always_inline)) void sum_groups_d(const int32_t *restrict w,
                                                               int32_t *restrict idx, int m,
                                                               const int D) {
    for (int q = 0; q < m; q++) {
        int32_t acc = 0;
        for (int d = 0; d < D; d++) acc += w[q * D + d];
        idx[q] = acc;
    }
}

static void sum_groups(const int32_t *w, int32_t *idx, int m, int D) {
    switch (D) {
    case 1: sum_groups_d(w, idx, m, 1); break;
    case 2: sum_groups_d(w, idx, m, 2); break;
    case 3: sum_groups_d(w, idx, m, 3); break;
    case 4: sum_groups_d(w, idx, m, 4); break;
    case 5: sum_groups_d(w, idx, m, 5); break;
    case 6: sum_groups_d(w, idx, m, 6); break;
    case 7: sum_groups_d(w, idx, m, 7); break;
    case 8: sum_groups_d(w, idx, m, 8); break;
    default: sum_groups_d(w, idx, m, D);
    }
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
    int bad = 0;
    int stream = outer * C * inner * 4 >= STREAM_BYTES;

    if (outer * C * inner < PARALLEL_MIN) num_threads = 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) reduction(| : bad) if (num_threads > 1)
    for (int64_t tix = 0; tix < t.n_tiles; tix++) {
        float u[TILE + 16] __attribute__((aligned(64)));
        float code[TILE];
        int32_t dig[TILE];
        int32_t idx[TILE];
        consts_tile part;
        int64_t o, s;
        int np = tile_span(&t, tix, &o, &s);
        const consts_tile *k = &full;
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
        bad |= lbad;
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
    }
    return bad;
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
