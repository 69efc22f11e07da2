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

/* Eight-wide conversions (F16C / AVX2); the scalar loops below finish the tails
 * and give the same bits (round to nearest even; a NaN stays a quiet NaN). */
#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) static int load_f16_8(float *dst, const void *s, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)s + j))));
    return j;
}

__attribute__((target("avx2,f16c"))) static int store_f16_8(void *d, const float *src, int n) {
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)((uint16_t *)d + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
    return j;
}

__attribute__((target("avx2"))) static int load_bf16_8(float *dst, const void *s, int n) {
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

__attribute__((target("avx2"))) static int store_bf16_8(void *d, const float *src, int n) {
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

static tiling make_tiling_n(int64_t outer, int64_t C, int64_t inner, int tile) {
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

static tiling make_tiling(int64_t outer, int64_t C, int64_t inner) {
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

/* ================================================ forward by bin edges
 * digit = number of edges <= z (edges: (D, K) float32, NaN padded; see
 * fsqkit/quantizers/fsq_edges.py, which finds them with the reference path and
 * checks them). No tanh: K comparisons per element. Codes follow from the
 * digit with the reference's own float32 formula:
 *   asymmetric: (digit - half_width) / half_width
 *   symmetric:  digit * sym_scale - 1
 * Channel-last tiles are processed in blocks of PAT = lcm(C, 8) elements, over
 * which the per-element channel pattern repeats (one AVX2 vector when C divides
 * 8, the usual case); channel-first tiles are runs of one channel each. */
#define MAXPAT 2048
#define MAXK 63

static int gcd_int(int a, int b) {
    while (b) {
        int r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Length of the channel-last pattern block; the kernel takes K * PAT <= 8 * MAXPAT. */
int fsq_edges_pattern(int64_t C) { return (int)(C * 8 / gcd_int((int)C, 8)); }

/* Division by a power of two equals multiplication by its reciprocal bit for
 * bit (both round the same exact quotient), and is several times cheaper. */
static int all_pow2(const float *v, int D) {
    for (int d = 0; d < D; d++) {
        int e;
        if (frexpf(v[d], &e) != 0.5f) return 0;
    }
    return 1;
}

enum { CODE_DIV = 0, CODE_MULINV = 1, CODE_SYM = 2 };

#if defined(__x86_64__)
/* Eight elements v: count the edges at or below each (E[k] per lane), write the
 * codes and return the weighted digits; lanes holding NaN/inf are ORed into
 * *bad. mode: CODE_DIV (d - h) / h, CODE_MULINV (d - h) * (1/h), CODE_SYM
 * d * s - 1. */
__attribute__((target("avx2,f16c"))) static inline __m256i edges8(__m256 v, const __m256 *E,
                                                                 int K, __m256 sc, __m256 inv,
                                                                 int mode, __m256i w, void *code,
                                                                 int code_dt, int64_t j,
                                                                 __m256 *bad) {
    __m256i c = _mm256_setzero_si256();
    for (int k = 0; k < K; k++)
        c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(v, E[k], _CMP_GE_OQ)));
    __m256 d = _mm256_cvtepi32_ps(c);
    __m256 q;
    if (mode == CODE_SYM) q = _mm256_sub_ps(_mm256_mul_ps(d, sc), _mm256_set1_ps(1.0f));
    else if (mode == CODE_MULINV) q = _mm256_mul_ps(_mm256_sub_ps(d, sc), inv);
    else q = _mm256_div_ps(_mm256_sub_ps(d, sc), sc);
    store8(code, code_dt, j, q);
    /* v - v is 0 for finite v and NaN otherwise */
    *bad = _mm256_or_ps(*bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), v, _CMP_UNORD_Q));
    return _mm256_mullo_epi32(c, w);
}

__attribute__((target("avx2"))) static inline int any_lane(__m256 m) {
    return _mm256_movemask_ps(m) != 0;
}

/* Channel-last with C dividing 8: every vector of 8 has the same channel pattern.
 * n is a multiple of 8; lanes past nvalid (padding) are neither checked nor
 * indexed. Index sums of D consecutive weighted digits go to idx (one per group;
 * idx has room for n / D entries). Returns nonzero on NaN/inf. */
__attribute__((target("avx2,f16c"))) static int edges_cl8(const void *src, int src_dt, int n,
                                                         int nvalid, const float *ep, int K,
                                                         const float *sp, const float *ip,
                                                         int mode, const int32_t *wp, int D,
                                                         void *code, int code_dt,
                                                         int32_t *wdig, int32_t *idx) {
    __m256 E[MAXK];
    for (int k = 0; k < K; k++) E[k] = _mm256_loadu_ps(ep + 8 * k);
    __m256 sc = _mm256_loadu_ps(sp), inv = _mm256_loadu_ps(ip);
    __m256i w = _mm256_loadu_si256((const __m256i *)wp);
    __m256 bad = _mm256_setzero_ps();
    int full = nvalid & ~7;
    for (int j = 0; j < n; j += 8) {
        __m256 lanebad = _mm256_setzero_ps();
        __m256i wd = edges8(load8(src, src_dt, j), E, K, sc, inv, mode, w, code, code_dt, j,
                            &lanebad);
        if (j < full) bad = _mm256_or_ps(bad, lanebad);
        if (D == 4) { /* two groups per vector: horizontal sums within 128-bit halves */
            __m256i h = _mm256_hadd_epi32(wd, wd);
            h = _mm256_hadd_epi32(h, h);
            idx[j / 4] = _mm256_extract_epi32(h, 0);
            idx[j / 4 + 1] = _mm256_extract_epi32(h, 4);
        } else {
            _mm256_storeu_si256((__m256i *)(wdig + j), wd);
        }
    }
    int lbad = any_lane(bad);
    if (full < nvalid) { /* the last, partial vector (its padding lanes are 0) */
        __m256 v = load8(src, src_dt, full);
        lbad |= any_lane(_mm256_cmp_ps(_mm256_sub_ps(v, v), v, _CMP_UNORD_Q));
    }
    if (D != 4) sum_groups(wdig, idx, n / D, D);
    return lbad;
}

/* One channel run of np positions (channel-first): codes (up to 7 written past
 * np), weighted digits added to idx[p * G] (idx has room for 7 more groups).
 * Returns nonzero on NaN/inf among the np values. */
__attribute__((target("avx2,f16c"))) static int edges_run(const void *src, int src_dt, int np,
                                                         const float *e, int K, float scale,
                                                         float invs, int mode, int32_t b, int G,
                                                         void *code, int code_dt, int32_t *wdig,
                                                         int32_t *idx) {
    __m256 E[MAXK];
    for (int k = 0; k < K; k++) E[k] = _mm256_set1_ps(e[k]);
    __m256 sc = _mm256_set1_ps(scale), inv = _mm256_set1_ps(invs);
    __m256i w = _mm256_set1_epi32(b);
    __m256 bad = _mm256_setzero_ps();
    int full = np & ~7;
    for (int p = 0; p < np; p += 8) {
        __m256 lanebad = _mm256_setzero_ps();
        __m256i wd = edges8(load8(src, src_dt, p), E, K, sc, inv, mode, w, code, code_dt, p,
                            &lanebad);
        if (p < full) bad = _mm256_or_ps(bad, lanebad);
        if (G == 1) {
            __m256i acc = _mm256_loadu_si256((const __m256i *)(idx + p));
            _mm256_storeu_si256((__m256i *)(idx + p), _mm256_add_epi32(acc, wd));
        } else {
            _mm256_storeu_si256((__m256i *)(wdig + p), wd);
        }
    }
    int lbad = any_lane(bad);
    if (full < np) { /* the last, partial vector: only its first np - full lanes */
        float tail[8];
        _mm256_storeu_ps(tail, load8(src, src_dt, full));
        for (int p = 0; p < np - full; p++) lbad |= !(tail[p] - tail[p] == 0.0f);
    }
    if (G > 1)
        for (int p = 0; p < np; p++) idx[p * G] += wdig[p];
    return lbad;
}
#endif

static int any_nonfinite(const float *u, int n) {
    int bad = 0;
    for (int j = 0; j < n; j++) bad |= !(u[j] - u[j] == 0.0f);
    return bad;
}

/* Returns nonzero if z held a NaN or an infinity (then nothing else is promised),
 * -1 if the edge table is too large for the kernel (the caller checks first). */
int fsq_forward_edges(const void *z, int z_dt, void *out, int out_dt, int32_t *indices,
                      int64_t outer, int64_t C, int64_t inner, const float *edges, int K,
                      const float *half_width, const float *sym_scale, const int32_t *basis,
                      int D, int G, int symmetric, int num_threads) {
#if !defined(__x86_64__)
    return -1;
#else
    int cf = inner > 1;
    int PAT = fsq_edges_pattern(C);
    if (K > MAXK || (!cf && PAT * K > 8 * MAXPAT)) return -1;
    int mode = symmetric ? CODE_SYM : (all_pow2(half_width, D) ? CODE_MULINV : CODE_DIV);
    tiling t = make_tiling(outer, C, inner);
    if (!cf) { /* tiles start on a pattern boundary: P * C a multiple of PAT */
        int64_t step = PAT / C;
        if (t.P >= step) t.P = (int)((t.P / step) * step);
        t.n_tiles = (outer + t.P - 1) / t.P;
    }
    /* channel-last: edges, scale (half_width or sym_scale), its reciprocal and
     * the basis weight per pattern slot */
    float ep[8 * MAXPAT]; /* 64 KiB, read by all threads */
    float sp[MAXPAT], ip[MAXPAT];
    int32_t wp[MAXPAT];
    float scale[MAXC], inv[MAXC];
    int kd[MAXC]; /* edges per dimension (NaN padding excluded) */
    for (int d = 0; d < D; d++) {
        kd[d] = 0;
        for (int k = 0; k < K; k++) kd[d] += edges[d * K + k] == edges[d * K + k];
        scale[d] = symmetric ? sym_scale[d] : half_width[d];
        inv[d] = 1.0f / scale[d];
    }
    if (!cf) {
        for (int jj = 0; jj < PAT; jj++) {
            int d = (jj % (int)C) % D;
            for (int k = 0; k < K; k++) ep[k * PAT + jj] = edges[d * K + k];
            sp[jj] = scale[d];
            ip[jj] = inv[d];
            wp[jj] = basis[d];
        }
    }
    int bad = 0;
    /* no streaming stores: codes are read by the next layer, keep them cached */
    if (outer * C * inner < PARALLEL_MIN) num_threads = 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) reduction(| : bad) if (num_threads > 1)
    for (int64_t tix = 0; tix < t.n_tiles; tix++) {
        float u[TILE + MAXPAT] __attribute__((aligned(64)));
        float code[TILE + MAXPAT] __attribute__((aligned(64)));
        int32_t dig[TILE + MAXPAT] __attribute__((aligned(64)));
        int32_t idx[TILE + 64] __attribute__((aligned(64)));
        int64_t o, s;
        int np = tile_span(&t, tix, &o, &s);
        int n = np * (int)C;
        int64_t off = run_offset(&t, o, s, 0);
        if (!cf) {
            int nr = ((n + PAT - 1) / PAT) * PAT;
            if (PAT == 8) {
                /* full tiles are read and written in place, in their own dtypes */
                const void *src = u;
                int src_dt = DT_F32;
                void *cdst = code;
                int cdt = DT_F32;
                if (nr == n) {
                    src = (const char *)z + off * (z_dt == DT_F32 ? 4 : 2);
                    src_dt = z_dt;
                    cdst = (char *)out + off * (out_dt == DT_F32 ? 4 : 2);
                    cdt = out_dt;
                } else {
                    load_run(u, z, z_dt, off, n);
                    for (int j = n; j < nr; j++) u[j] = 0.0f;
                }
                int32_t *idst = nr == n ? indices + s * G : idx;
                bad |= edges_cl8(src, src_dt, nr, n, ep, K, sp, ip, mode, wp, D, cdst, cdt, dig,
                                 idst);
                if (idst == idx) memcpy(indices + s * G, idx, (size_t)np * G * 4);
                if (cdst == code) store_run(out, out_dt, off, code, n);
                continue;
            }
            const float *src = u;
            if (z_dt == DT_F32 && nr == n) src = (const float *)z + off;
            else {
                load_run(u, z, z_dt, off, n);
                for (int j = n; j < nr; j++) u[j] = 0.0f;
            }
            /* partial tiles go through the staging buffer (it has room for nr) */
            float *cdst = (out_dt == DT_F32 && nr == n) ? (float *)out + off : code;
            bad |= any_nonfinite(src, n);
            for (int j0 = 0; j0 < nr; j0 += PAT) {
                for (int jj = 0; jj < PAT; jj++) {
                    float v = src[j0 + jj];
                    int32_t cnt = 0;
                    for (int k = 0; k < K; k++) cnt += v >= ep[k * PAT + jj];
                    float dv = (float)cnt;
                    cdst[j0 + jj] = mode == CODE_SYM      ? dv * sp[jj] - 1.0f
                                    : mode == CODE_MULINV ? (dv - sp[jj]) * ip[jj]
                                                          : (dv - sp[jj]) / sp[jj];
                    dig[j0 + jj] = cnt * wp[jj];
                }
            }
            sum_groups(dig, indices + s * G, np * G, D);
            if (cdst == code) store_run(out, out_dt, off, code, n);
        } else {
            /* runs of one channel, read and written in place (in their own
             * dtypes) when a whole number of vectors: edges_run reads and writes
             * up to 7 past np */
            int whole = np % 8 == 0;
            int zes = z_dt == DT_F32 ? 4 : 2, oes = out_dt == DT_F32 ? 4 : 2;
            for (int p = 0; p < np * G + 8; p++) idx[p] = 0;
            for (int c = 0; c < C; c++) {
                int d = c % D, g = c / D;
                int64_t roff = run_offset(&t, o, s, c);
                const void *src = u;
                int src_dt = DT_F32;
                if (whole) {
                    src = (const char *)z + roff * zes;
                    src_dt = z_dt;
                } else {
                    load_run(u, z, z_dt, roff, np);
                }
                void *cdst = whole ? (void *)((char *)out + roff * oes) : (void *)code;
                int cdt = whole ? out_dt : DT_F32;
                bad |= edges_run(src, src_dt, np, edges + d * K, kd[d], scale[d], inv[d], mode,
                                 basis[d], G, cdst, cdt, dig, idx + g);
                if (!whole) store_run(out, out_dt, roff, code, np);
            }
            memcpy(indices + (o * inner + s) * G, idx, (size_t)np * G * 4);
        }
    }
    return bad;
#endif
}

/* ============================================ backward from the input z
 * The forward by edges keeps no tanh: backward recomputes t = tanh(z + shift)
 * (bit-identical to the forward reference, same primitive and op order) and
 * applies the same chain as fsq_backward. Reads z and g, writes grad_z. */
/* grad_z for n elements: t in u (tanh already applied), g in gp, per-element
 * constants b (half_l or L - 1), r (1 / half_width), h (half_width or sym_scale). */
static inline void chain_rule(float *restrict dst, const float *restrict gp,
                              const float *restrict u, const float *restrict b,
                              const float *restrict r, const float *restrict h, int n, int mode) {
    if (mode == CODE_SYM) {
        for (int j = 0; j < n; j++) {
            float a = ((gp[j] * h[j]) / 2.0f) * b[j];
            dst[j] = a * fmaf(-u[j], u[j], 1.0f);
        }
    } else if (mode == CODE_MULINV) {
        for (int j = 0; j < n; j++) {
            float a = (gp[j] * r[j]) * b[j];
            dst[j] = a * fmaf(-u[j], u[j], 1.0f);
        }
    } else {
        for (int j = 0; j < n; j++) {
            float a = (gp[j] / h[j]) * b[j];
            dst[j] = a * fmaf(-u[j], u[j], 1.0f);
        }
    }
}

/* The same with one constant each (a channel-first run). */
static inline void chain_rule_run(float *restrict dst, const float *restrict gp,
                                  const float *restrict u, float b, float r, float h, int n,
                                  int mode) {
    if (mode == CODE_SYM) {
        for (int j = 0; j < n; j++) {
            float a = ((gp[j] * h) / 2.0f) * b;
            dst[j] = a * fmaf(-u[j], u[j], 1.0f);
        }
    } else if (mode == CODE_MULINV) {
        for (int j = 0; j < n; j++) {
            float a = (gp[j] * r) * b;
            dst[j] = a * fmaf(-u[j], u[j], 1.0f);
        }
    } else {
        for (int j = 0; j < n; j++) {
            float a = (gp[j] / h) * b;
            dst[j] = a * fmaf(-u[j], u[j], 1.0f);
        }
    }
}

/* Larger tiles than the forward's: MKL's vmsTanh costs a few hundred cycles per
 * call, noticeable below a few thousand elements (measured: 1M-element
 * channel-first backward 3.7 ms at 1024, 3.1 ms at 4096, one thread). */
#define BTILE 4096

void fsq_backward_z(const void *g, int g_dt, const void *z, int z_dt, void *gz, int gz_dt,
                    int64_t outer, int64_t C, int64_t inner, const float *shift,
                    const float *half_l, const float *half_width, const float *lm1,
                    const float *sym_scale, int D, int symmetric, int num_threads) {
    tiling t = make_tiling_n(outer, C, inner, BTILE);
    int mode = symmetric ? CODE_SYM : (all_pow2(half_width, D) ? CODE_MULINV : CODE_DIV);
    /* per channel: a = shift (0 if symmetric), b = half_l or L - 1, r = 1/h, h */
    float ac[MAXC], bc[MAXC], rc[MAXC], hc[MAXC];
    for (int c = 0; c < C; c++) {
        int d = c % D;
        ac[c] = symmetric ? 0.0f : shift[d];
        bc[c] = symmetric ? lm1[d] : half_l[d];
        hc[c] = symmetric ? sym_scale[d] : half_width[d];
        rc[c] = 1.0f / half_width[d];
    }
    /* channel-last: the same per element of a tile (tiles start at channel 0) */
    float ae[BTILE], be[BTILE], re[BTILE], he[BTILE];
    if (!t.cf) {
        for (int j = 0; j < t.P * C; j++) {
            int c = j % (int)C;
            ae[j] = ac[c];
            be[j] = bc[c];
            re[j] = rc[c];
            he[j] = hc[c];
        }
    }
    int stream = 0; /* codes and gradients are read by the next layer: keep them cached */
    if (outer * C * inner < PARALLEL_MIN) num_threads = 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(num_threads) if (num_threads > 1)
    for (int64_t tix = 0; tix < t.n_tiles; tix++) {
        float u[BTILE + 16] __attribute__((aligned(64)));
        float gb[BTILE] __attribute__((aligned(64)));
        float res[BTILE] __attribute__((aligned(64)));
        int64_t o, s;
        int np = tile_span(&t, tix, &o, &s);
        if (!t.cf) {
            int n = np * (int)C;
            int64_t off = run_offset(&t, o, s, 0);
            if (z_dt == DT_F32) {
                const float *zs = (const float *)z + off;
                for (int j = 0; j < n; j++) u[j] = zs[j] + ae[j];
            } else {
                load_run(u, z, z_dt, off, n);
                for (int j = 0; j < n; j++) u[j] = u[j] + ae[j];
            }
            tanh_inplace(u, n);
            const float *gp = gb;
            if (g_dt == DT_F32) gp = (const float *)g + off;
            else load_run(gb, g, g_dt, off, n);
            int direct = gz_dt == DT_F32 && !stream;
            float *dst = direct ? (float *)gz + off : res;
            chain_rule(dst, gp, u, be, re, he, n, mode);
            if (!direct) {
                if (stream && gz_dt == DT_F32) stream_copy((float *)gz + off, res, n);
                else store_run(gz, gz_dt, off, res, n);
            }
            continue;
        }
        /* channel-first: all runs of the tile through one tanh call (VML's
         * per-call cost is not negligible at a few hundred elements) */
        for (int c = 0; c < C; c++) {
            float *uc = u + c * np;
            int64_t zoff = run_offset(&t, o, s, c);
            float sh = ac[c];
            if (z_dt == DT_F32) {
                const float *zs = (const float *)z + zoff;
                for (int j = 0; j < np; j++) uc[j] = zs[j] + sh;
            } else {
                load_run(uc, z, z_dt, zoff, np);
                for (int j = 0; j < np; j++) uc[j] = uc[j] + sh;
            }
        }
        tanh_inplace(u, np * (int)C);
        for (int c = 0; c < C; c++) {
            int64_t off = run_offset(&t, o, s, c);
            const float *gp = gb;
            if (g_dt == DT_F32) gp = (const float *)g + off;
            else load_run(gb, g, g_dt, off, np);
            int direct = gz_dt == DT_F32 && !stream;
            float *dst = direct ? (float *)gz + off : res;
            chain_rule_run(dst, gp, u + c * np, bc[c], rc[c], hc[c], np, mode);
            if (!direct) {
                if (stream && gz_dt == DT_F32) stream_copy((float *)gz + off, res, np);
                else store_run(gz, gz_dt, off, res, np);
            }
        }
    }
}
