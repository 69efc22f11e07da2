#ifndef FSQ_CPU_H
#define FSQ_CPU_H

/* Fused FSQ forward and backward for CPU: shared definitions.
 *
 * Built at first use by fsqkit/quantizers/_fsq_backends/build.py and loaded through
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

#if defined(__AVX512F__)
/* The lanes of a 16-wide vector that hold one of the `left` elements still to do. */
static inline __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}
#endif

/* ------------------------------------------------------------------ tanh */
typedef void (*vml_fn)(const int64_t *n, const float *a, float *r, const int64_t *mode);
extern int g_kind; /* which tanh primitive (fsq_cpu.c) */
extern void *g_fn;
extern int64_t g_mode;
extern int g_fast_tanh; /* vmsTanh's results, computed faster (fsq_cpu_tanh.c) */
void tanh_vml_fast(float *buf, int n);

#if defined(__x86_64__)
typedef __m256 (*sleef8_fn)(__m256);
__attribute__((target("avx2"))) static inline void tanh_sleef8(float *buf, int n) {
    for (int j = 0; j < n; j += 8) {
        __m256 v = _mm256_loadu_ps(buf + j);
        _mm256_storeu_ps(buf + j, ((sleef8_fn)g_fn)(v));
    }
}
typedef __m512 (*sleef16_fn)(__m512);
__attribute__((target("avx512f"))) static inline void tanh_sleef16(float *buf, int n) {
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
        if (g_fast_tanh) {
            tanh_vml_fast(buf, n);
            return;
        }
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

/* Eight-wide conversions (F16C / AVX2); the scalar loops below finish the tails
 * and give the same bits (round to nearest even; a NaN stays a quiet NaN). */
#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) static inline int load_f16_8(float *dst, const void *s, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)s + j))));
    return j;
}

__attribute__((target("avx2,f16c"))) static inline int store_f16_8(void *d, const float *src, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)((uint16_t *)d + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
    return j;
}

__attribute__((target("avx2"))) static inline int load_bf16_8(float *dst, const void *s, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)s + j)));
        _mm256_storeu_ps(dst + j, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    return j;
}

/* As f32_to_bf16: bits + 0x7FFF + ((bits >> 16) & 1), NaN -> 0x7FC0. */
__attribute__((target("avx2"))) static inline __m128i f32_to_bf16_8(__m256 f) {
    const __m256i bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
    __m256i b = _mm256_castps_si256(f);
    __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(b, 16), one)));
    r = _mm256_srli_epi32(r, 16);
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0),
                           _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}

__attribute__((target("avx2"))) static inline int store_bf16_8(void *d, const float *src, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)((uint16_t *)d + j), f32_to_bf16_8(_mm256_loadu_ps(src + j)));
    return j;
}

/* Eight elements of dtype dt at element offset j, as float32 (and back). */
__attribute__((target("avx2,f16c"))) static inline __m256 load8(const void *p, int dt, int64_t j) {
    if (dt == DT_F32) return _mm256_loadu_ps((const float *)p + j);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + j));
    if (dt == DT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,f16c"))) static inline void store8(void *p, int dt, int64_t j,
                                                               __m256 v) {
    if (dt == DT_F32) {
        _mm256_storeu_ps((float *)p + j, v);
    } else if (dt == DT_F16) {
        _mm_storeu_si128((__m128i *)((uint16_t *)p + j), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    } else {
        _mm_storeu_si128((__m128i *)((uint16_t *)p + j), f32_to_bf16_8(v));
    }
}
#endif

static inline void load_run(float *restrict dst, const void *src, int dt, int64_t off, int n) {
    if (dt == DT_F32) {
        memcpy(dst, (const float *)src + off, (size_t)n * 4);
    } else if (dt == DT_BF16) {
        const uint16_t *restrict s = (const uint16_t *)src + off;
        int j = 0;
#if defined(__x86_64__)
        j = load_bf16_8(dst, s, n);
#endif
        for (; j < n; j++) dst[j] = bf16_to_f32(s[j]);
    } else {
        const _Float16 *restrict s = (const _Float16 *)src + off;
        int j = 0;
#if defined(__x86_64__)
        j = load_f16_8(dst, s, n);
#endif
        for (; j < n; j++) dst[j] = (float)s[j];
    }
}

static inline void store_run(void *dst, int dt, int64_t off, const float *restrict src, int n) {
    if (dt == DT_F32) {
        memcpy((float *)dst + off, src, (size_t)n * 4);
    } else if (dt == DT_BF16) {
        uint16_t *restrict d = (uint16_t *)dst + off;
        int j = 0;
#if defined(__x86_64__)
        j = store_bf16_8(d, src, n);
#endif
        for (; j < n; j++) d[j] = f32_to_bf16(src[j]);
    } else {
        _Float16 *restrict d = (_Float16 *)dst + off;
        int j = 0;
#if defined(__x86_64__)
        j = store_f16_8(d, src, n);
#endif
        for (; j < n; j++) d[j] = (_Float16)src[j];
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

static inline tiling make_tiling_n(int64_t outer, int64_t C, int64_t inner, int tile) {
    tiling t;
    t.outer = outer;
    t.C = C;
    t.inner = inner;
    t.cf = inner > 1;
    int64_t P = tile / C;
    if (P < 1) P = 1;
    int64_t span = t.cf ? inner : outer;
    if (P > span) P = span > 0 ? span : 1;
    t.P = (int)P;
    t.cols = t.cf ? (inner + P - 1) / P : 1;
    t.n_tiles = t.cf ? outer * t.cols : (outer + P - 1) / P;
    return t;
}

/* Run tile(ctx, tix) for every tile and OR the results together: on
 * num_threads OpenMP threads, or, for one thread, in a plain loop outside any
 * OpenMP region. Not `#pragma omp parallel ... if (0)`: inside that inactive
 * region MKL's threaded vmsTanh opens a nested team of new threads on every call
 * (100+ us per tile, measured: 8192 elements took 1 ms instead of 30 us); in an
 * active region it runs sequentially. Every loop that calls tanh_inplace runs
 * through here. */
typedef int (*tile_fn)(const void *ctx, int64_t tix);

static inline int run_tiles(tile_fn tile, const void *ctx, int64_t n_tiles, int num_threads,
                            int chunk) {
    int r = 0;
    if (num_threads <= 1) {
        for (int64_t tix = 0; tix < n_tiles; tix++) r |= tile(ctx, tix);
        return r;
    }
#pragma omp parallel for schedule(dynamic, chunk) num_threads(num_threads) reduction(| : r)
    for (int64_t tix = 0; tix < n_tiles; tix++) r |= tile(ctx, tix);
    return r;
}

static inline tiling make_tiling(int64_t outer, int64_t C, int64_t inner) {
    return make_tiling_n(outer, C, inner, TILE);
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

static inline void gather(const tiling *t, float *restrict buf, const void *src, int dt, int64_t o,
                   int64_t s, int np) {
    if (!t->cf) {
        load_run(buf, src, dt, run_offset(t, o, s, 0), np * (int)t->C);
        return;
    }
    for (int c = 0; c < t->C; c++) load_run(buf + c * np, src, dt, run_offset(t, o, s, c), np);
}

static inline void scatter(const tiling *t, void *dst, int dt, const float *restrict buf, int64_t o,
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
static inline void spread(const tiling *t, float *restrict dst, const float *per_dim, int D, int np) {
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
static inline void fill_consts(const tiling *t, consts_tile *k, int np, int D, int symmetric,
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

static inline void sum_groups(const int32_t *w, int32_t *idx, int m, int D) {
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

#endif /* FSQ_CPU_H */
