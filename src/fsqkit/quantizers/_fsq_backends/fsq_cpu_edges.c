#include "fsq_cpu.h"

#include <stdlib.h>

/* ================================================ forward by bin edges
 * digit = number of edges <= z (edges: (D, K) float32, NaN padded; see
 * fsqkit/quantizers/_fsq_backends/edges.py, which finds them with the reference path and
 * checks them). No tanh: K comparisons per element. Codes follow from the
 * digit with the reference's own float32 formula:
 *   asymmetric: (digit - half_width) / half_width
 *   symmetric:  digit * sym_scale - 1
 * Channel-last tiles are processed in blocks of PAT = lcm(C, 8) elements, over
 * which the per-element channel pattern repeats (one AVX2 vector when C divides
 * 8, the usual case; two per AVX-512 vector); channel-first tiles are runs of
 * one channel each. The AVX-512 loops (edges_cl16, edges_run16) are used where
 * the kernel is built with AVX-512; fsq_set_vector_width(8) keeps the AVX2 ones. */
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

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define HAVE_EDGES16 1
/* 16-lane versions of the loops above (built where torch runs AVX512 kernels):
 * comparisons go to mask registers, the tails are masked loads and stores (no
 * element past the run is read or written). fsq_set_vector_width(8) selects the
 * AVX2 loops instead (the tests run both). */
int g_width = 16;
void fsq_set_vector_width(int w) { g_width = w == 8 ? 8 : 16; }

static inline __m512 load16(const void *p, int dt, int64_t j, __mmask16 m) {
    if (dt == DT_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + j);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + j);
    if (dt == DT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* float32 -> dtype as torch converts: round to nearest even (bf16 by the same
 * integer rounding as f32_to_bf16_8, NaN to 0x7FC0). */
static inline void store16(void *p, int dt, int64_t j, __m512 v, __mmask16 m) {
    if (dt == DT_F32) {
        _mm512_mask_storeu_ps((float *)p + j, m, v);
        return;
    }
    __m256i h;
    if (dt == DT_F16) {
        h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
        __m512i b = _mm512_castps_si512(v);
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb));
        r = _mm512_srli_epi32(r, 16);
        r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                                  _mm512_set1_epi32(0x7FC0));
        h = _mm512_cvtepi32_epi16(r);
    }
    _mm256_mask_storeu_epi16((uint16_t *)p + j, m, h);
}

/* edges8 on sixteen lanes (m: the valid ones; the others count as finite). */
static inline __m512i edges16(__m512 v, const __m512 *E, int K, __m512 sc, __m512 inv, int mode,
                              __m512i w, void *code, int code_dt, int64_t j, __mmask16 m,
                              __mmask16 *bad) {
    const __m512i one = _mm512_set1_epi32(1);
    __m512i c = _mm512_setzero_si512();
    for (int k = 0; k < K; k++)
        c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(v, E[k], _CMP_GE_OQ), c, one);
    __m512 d = _mm512_cvtepi32_ps(c);
    __m512 q;
    if (mode == CODE_SYM) q = _mm512_sub_ps(_mm512_mul_ps(d, sc), _mm512_set1_ps(1.0f));
    else if (mode == CODE_MULINV) q = _mm512_mul_ps(_mm512_sub_ps(d, sc), inv);
    else q = _mm512_div_ps(_mm512_sub_ps(d, sc), sc);
    store16(code, code_dt, j, q, m);
    *bad |= _mm512_mask_cmp_ps_mask(m, _mm512_sub_ps(v, v), v, _CMP_UNORD_Q);
    return _mm512_mullo_epi32(c, w);
}

/* edges_cl8 with sixteen lanes: the 8-lane pattern (C divides 8) twice. */
static int edges_cl16(const void *src, int src_dt, int n, int nvalid, const float *ep, int K,
                      const float *sp, const float *ip, int mode, const int32_t *wp, int D,
                      void *code, int code_dt, int32_t *wdig, int32_t *idx) {
    __m512 E[MAXK];
    for (int k = 0; k < K; k++) {
        __m256 e8 = _mm256_loadu_ps(ep + 8 * k);
        E[k] = _mm512_insertf32x8(_mm512_castps256_ps512(e8), e8, 1);
    }
    __m256 s8 = _mm256_loadu_ps(sp), i8 = _mm256_loadu_ps(ip);
    __m512 sc = _mm512_insertf32x8(_mm512_castps256_ps512(s8), s8, 1);
    __m512 inv = _mm512_insertf32x8(_mm512_castps256_ps512(i8), i8, 1);
    __m256i w8 = _mm256_loadu_si256((const __m256i *)wp);
    __m512i w = _mm512_inserti32x8(_mm512_castsi256_si512(w8), w8, 1);
    const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    __mmask16 bad = 0;
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        /* padding lanes (past nvalid) are computed but not checked */
        __mmask16 valid = tail_mask(nvalid - j > 0 ? nvalid - j : 0);
        __mmask16 lanebad = 0;
        __m512i wd = edges16(load16(src, src_dt, j, m), E, K, sc, inv, mode, w, code, code_dt, j,
                             m, &lanebad);
        bad |= lanebad & valid;
        if (D == 4) { /* four groups per vector: sums within 128-bit lanes */
            __m512i h = _mm512_add_epi32(wd, _mm512_shuffle_epi32(wd, _MM_PERM_CDAB));
            h = _mm512_add_epi32(h, _mm512_shuffle_epi32(h, _MM_PERM_BADC));
            __m128i g4 = _mm512_castsi512_si128(_mm512_permutexvar_epi32(pick, h));
            if (m == 0xFFFF) _mm_storeu_si128((__m128i *)(idx + j / 4), g4);
            else _mm_storel_epi64((__m128i *)(idx + j / 4), g4); /* n - j == 8 */
        } else {
            _mm512_mask_storeu_epi32(wdig + j, m, wd);
        }
    }
    if (D != 4) sum_groups(wdig, idx, n / D, D);
    return bad != 0;
}

/* edges_run with sixteen lanes; reads and writes exactly np elements. */
static int edges_run16(const void *src, int src_dt, int np, const float *e, int K, float scale,
                       float invs, int mode, int32_t b, int G, void *code, int code_dt,
                       int32_t *wdig, int32_t *idx) {
    __m512 E[MAXK];
    for (int k = 0; k < K; k++) E[k] = _mm512_set1_ps(e[k]);
    __m512 sc = _mm512_set1_ps(scale), inv = _mm512_set1_ps(invs);
    __m512i w = _mm512_set1_epi32(b);
    __mmask16 bad = 0;
    for (int p = 0; p < np; p += 16) {
        __mmask16 m = tail_mask(np - p);
        __m512i wd = edges16(load16(src, src_dt, p, m), E, K, sc, inv, mode, w, code, code_dt, p,
                             m, &bad);
        if (G == 1) {
            __m512i acc = _mm512_maskz_loadu_epi32(m, idx + p);
            _mm512_mask_storeu_epi32(idx + p, m, _mm512_add_epi32(acc, wd));
        } else {
            _mm512_mask_storeu_epi32(wdig + p, m, wd);
        }
    }
    if (G > 1)
        for (int p = 0; p < np; p++) idx[p * G] += wdig[p];
    return bad != 0;
}
#endif
#endif
#if !defined(HAVE_EDGES16)
void fsq_set_vector_width(int w) { (void)w; }
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
#if defined(HAVE_EDGES16)
                if (g_width == 16)
                    bad |= edges_cl16(src, src_dt, nr, n, ep, K, sp, ip, mode, wp, D, cdst, cdt,
                                      dig, idst);
                else
#endif
                    bad |= edges_cl8(src, src_dt, nr, n, ep, K, sp, ip, mode, wp, D, cdst, cdt,
                                     dig, idst);
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
#if defined(HAVE_EDGES16)
            whole |= g_width == 16; /* masked tails: exactly np elements */
#endif
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
#if defined(HAVE_EDGES16)
                if (g_width == 16)
                    bad |= edges_run16(src, src_dt, np, edges + d * K, kd[d], scale[d], inv[d],
                                       mode, basis[d], G, cdst, cdt, dig, idx + g);
                else
#endif
                    bad |= edges_run(src, src_dt, np, edges + d * K, kd[d], scale[d], inv[d],
                                     mode, basis[d], G, cdst, cdt, dig, idx + g);
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

#if defined(HAVE_EDGES16)
/* 16-lane backward loops whose per-element constants repeat every 16 lanes
 * (channel-last with C dividing 16; a channel-first run, all lanes alike): the
 * constants stay in registers instead of being read from tile-long arrays, and
 * bf16/fp16 are converted in registers instead of through staging buffers.
 * Same operations in the same order as the loops in fsq_backward_z. */
/* u = z + shift for the n elements of z (any dtype) at offset off. */
static void shift16(float *restrict u, const void *z, int z_dt, int64_t off, const float *ae,
                       int n) {
    __m512 a = _mm512_loadu_ps(ae);
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        _mm512_mask_storeu_ps(u + j, m, _mm512_add_ps(load16(z, z_dt, off + j, m), a));
    }
}

/* grad_z from g and t = u, read and written in their own dtypes at offset off. */
static void chain16(void *gz, int gz_dt, const void *gp, int g_dt, int64_t off,
                       const float *restrict u, const float *be, const float *re,
                       const float *he, int n, int mode) {
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    __m512 b = _mm512_loadu_ps(be), r = _mm512_loadu_ps(re), h = _mm512_loadu_ps(he);
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = tail_mask(n - j);
        __m512 g = load16(gp, g_dt, off + j, m), t = _mm512_maskz_loadu_ps(m, u + j);
        __m512 a;
        if (mode == CODE_SYM) a = _mm512_mul_ps(_mm512_div_ps(_mm512_mul_ps(g, h), two), b);
        else if (mode == CODE_MULINV) a = _mm512_mul_ps(_mm512_mul_ps(g, r), b);
        else a = _mm512_mul_ps(_mm512_div_ps(g, h), b);
        store16(gz, gz_dt, off + j, _mm512_mul_ps(a, _mm512_fnmadd_ps(t, t, one)), m);
    }
}
#endif

/* Larger tiles than the forward's: every call of MKL's vmsTanh costs about a
 * microsecond before its first element (measured through ctypes, one thread:
 * 4.4 ns per element at 1024,
 * 2.8 at 4096, 2.6 from 16384 on), so the backward hands it 16384
 * elements at a time. The tile buffers (3 x 64 KiB per thread) are per-thread
 * heap blocks (thread_buffer), not on the OpenMP threads' stacks. */
#define BTILE 16384
#define BSTRIDE (BTILE + 16)

/* Per-thread scratch, allocated on a thread's first backward and kept: a
 * fresh heap block per call would be mapped anew (page faults on every call,
 * per thread), and 192 KiB of tile buffers do not belong on OpenMP stacks.
 * Bounded: one buffer of each kind per thread that ever runs the backward. */
static __thread float *tls_tile = NULL;   /* u, gb, res: 3 * BSTRIDE floats */
static __thread float *tls_consts = NULL; /* ae, be, re, he: 4 * BTILE floats */

static float *thread_buffer(float **slot, size_t floats) {
    if (*slot == NULL) *slot = aligned_alloc(64, (sizeof(float) * floats + 63) & ~(size_t)63);
    return *slot;
}

/* What one backward tile needs (shared by the threads, read only). */
typedef struct {
    tiling t;
    const void *g, *z;
    void *gz;
    int g_dt, z_dt, gz_dt, mode, cl16;
    const float *ac, *bc, *rc, *hc; /* per channel */
    const float *ae, *be, *re, *he; /* per element of a channel-last tile */
} bwd_ctx;

/* grad_z for tile tix, through this thread's buffers u, gb, res (BSTRIDE floats
 * each); returns nonzero if they could not be allocated. */
static int backward_tile(const void *ctx, int64_t tix) {
    const bwd_ctx *x = ctx;
    float *u = thread_buffer(&tls_tile, 3 * (size_t)BSTRIDE);
    if (u == NULL) return 1;
    float *gb = u + BSTRIDE, *res = u + 2 * BSTRIDE;
    const tiling t = x->t;
    const void *g = x->g, *z = x->z;
    void *gz = x->gz;
    int g_dt = x->g_dt, z_dt = x->z_dt, gz_dt = x->gz_dt, mode = x->mode, cl16 = x->cl16;
    int64_t C = t.C;
    const float *ac = x->ac, *bc = x->bc, *rc = x->rc, *hc = x->hc;
    const float *ae = x->ae, *be = x->be, *re = x->re, *he = x->he;
    (void)cl16;
    int64_t o, s;
    int np = tile_span(&t, tix, &o, &s);
    if (!t.cf) {
        int n = np * (int)C;
        int64_t off = run_offset(&t, o, s, 0);
#if defined(HAVE_EDGES16)
        if (cl16) { /* conversions in registers, no staging */
            shift16(u, z, z_dt, off, ae, n);
            tanh_inplace(u, n);
            chain16(gz, gz_dt, g, g_dt, off, u, be, re, he, n, mode);
            return 0;
        }
#endif
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
        int direct = gz_dt == DT_F32;
        float *dst = direct ? (float *)gz + off : res;
        chain_rule(dst, gp, u, be, re, he, n, mode);
        if (!direct) store_run(gz, gz_dt, off, res, n);
        return 0;
    }
    /* channel-first: all runs of the tile through one tanh call (VML's
     * per-call cost is not negligible at a few hundred elements) */
    for (int c = 0; c < C; c++) {
        float *uc = u + c * np;
        int64_t zoff = run_offset(&t, o, s, c);
        float sh = ac[c];
#if defined(HAVE_EDGES16)
        if (g_width == 16 && z_dt != DT_F32) { /* (float32: the plain loop is faster) */
            float pa[16];
            for (int l = 0; l < 16; l++) pa[l] = sh;
            shift16(uc, z, z_dt, zoff, pa, np);
            continue;
        }
#endif
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
#if defined(HAVE_EDGES16)
        if (g_width == 16 && (g_dt != DT_F32 || gz_dt != DT_F32)) {
            float pb[16], pr[16], ph[16];
            for (int l = 0; l < 16; l++) {
                pb[l] = bc[c];
                pr[l] = rc[c];
                ph[l] = hc[c];
            }
            chain16(gz, gz_dt, g, g_dt, off, u + c * np, pb, pr, ph, np, mode);
            continue;
        }
#endif
        const float *gp = gb;
        if (g_dt == DT_F32) gp = (const float *)g + off;
        else load_run(gb, g, g_dt, off, np);
        int direct = gz_dt == DT_F32;
        float *dst = direct ? (float *)gz + off : res;
        chain_rule_run(dst, gp, u + c * np, bc[c], rc[c], hc[c], np, mode);
        if (!direct) store_run(gz, gz_dt, off, res, np);
    }
    return 0;
}

int fsq_backward_z(const void *g, int g_dt, const void *z, int z_dt, void *gz, int gz_dt,
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
    if (outer * C * inner < PARALLEL_MIN) num_threads = 1;
    /* channel-last: ae, be, re, he (BTILE each), the constants per element of a
     * tile (tiles start at channel 0), in the calling thread's buffer */
    float *ae = NULL, *be = NULL, *re = NULL, *he = NULL;
    if (!t.cf) {
        float *work = thread_buffer(&tls_consts, 4 * (size_t)BTILE);
        if (work == NULL) return -1;
        ae = work, be = work + BTILE, re = work + 2 * BTILE, he = work + 3 * BTILE;
        for (int j = 0; j < t.P * C; j++) {
            int c = j % (int)C;
            ae[j] = ac[c];
            be[j] = bc[c];
            re[j] = rc[c];
            he[j] = hc[c];
        }
    }
    int cl16 = 0; /* channel-last, C dividing 16, 16-lane loops selected */
#if defined(HAVE_EDGES16)
    cl16 = !t.cf && 16 % C == 0 && g_width == 16;
#endif
    bwd_ctx x = {t, g, z, gz, g_dt, z_dt, gz_dt, mode, cl16, ac, bc, rc, hc, ae, be, re, he};
    /* No streaming stores: the gradient is read by the next layer, keep it cached. */
    return run_tiles(backward_tile, &x, t.n_tiles, num_threads, 1) ? -1 : 0;
}
