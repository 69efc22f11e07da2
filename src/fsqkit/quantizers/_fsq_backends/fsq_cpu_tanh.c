/* tanh for float32, bit for bit what MKL VML's vmsTanh (HA) returns, 1.8
 * times as fast as vmsTanh where MKL runs its generic code path (one thread,
 * 2^20 N(0,1) floats in 16384-element calls: 1.54 vs 2.78 ms, AMD EPYC 9004).
 *
 * Why this is exact. MKL's HA tanh is not correctly rounded, but it is close:
 * over all 2^32 float inputs (benchmarks/check_fast_tanh.py, torch 2.13.0's
 * MKL) it differs from the correctly rounded result on 164766 inputs, and on
 * every one of them the true tanh lies within 0.0131 ulp of the midpoint
 * between two floats. So wherever the true value is farther than that from a
 * midpoint, MKL returns the correctly rounded float.
 *
 * We compute tanh in double precision (relative error below 2.1e-11, i.e.
 * under 4e-4 float ulp), round it to float, and look at where the double lies
 * between the two floats around it. Lanes within AMBIGUOUS (0.03 ulp, 2.3
 * times MKL's worst case above) of the midpoint, NaN, tiny nonzero inputs and
 * nothing else are collected and handed to vmsTanh itself, one call per chunk:
 * 6% of N(0,1) inputs, 0.74% of all 2^32 bit patterns (NaNs included). The
 * rest get the correctly rounded value, which is MKL's. Another MKL build or
 * CPU could round differently: build.py compares the result with torch.tanh on
 * 2^20 floats when the kernel loads and leaves this off if any differs;
 * check_fast_tanh.py checks every float (0 differ here). */
#include "fsq_cpu.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define HAVE_FAST_TANH 1
#include <stdlib.h>

int g_fast_tanh = 0; /* off until build.py has checked it (fsq_set_fast_tanh) */
static int (*g_mkl_local_threads)(int) = NULL; /* mkl_set_num_threads_local */

/* Lanes whose double value lies within this many ulp of a rounding midpoint go
 * to MKL: only values at least this far from every midpoint are decided here. */
#define AMBIGUOUS 0.03
#define CHUNK 16384

static __thread int32_t *tls_where = NULL; /* CHUNK + 16 positions, then CHUNK + 16 floats */

/* tanh(a) for a in [0, 20], double precision: expm1(2a) / (expm1(2a) + 2). */
static inline __m512d tanh_pos(__m512d a) {
    const __m512d two_over_ln2 = _mm512_set1_pd(2.8853900817779268);
    /* fdlibm's split of ln 2: k * LN2_HI is exact for |k| < 2^11 */
    const __m512d ln2_hi = _mm512_set1_pd(6.93147180369123816490e-01);
    const __m512d ln2_lo = _mm512_set1_pd(1.90821492927058770002e-10);
    const __m512d one = _mm512_set1_pd(1.0), two = _mm512_set1_pd(2.0);
    __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(a, two_over_ln2),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(k, ln2_hi, _mm512_add_pd(a, a));
    r = _mm512_fnmadd_pd(k, ln2_lo, r); /* |r| <= ln2 / 2 */
    /* expm1(r), Taylor to degree 9: truncation below 2.1e-11 relative, i.e.
     * 4e-4 float ulp, far inside the ambiguity band */
    __m512d q = _mm512_set1_pd(1.0 / 362880.0);
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 40320.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 5040.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 720.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    __m512d p = _mm512_fmadd_pd(q, _mm512_mul_pd(r, r), r);
    /* expm1(2a) = 2^k * p + (2^k - 1), both terms exact up to one rounding */
    __m512d e = _mm512_add_pd(_mm512_scalef_pd(p, k), _mm512_sub_pd(_mm512_scalef_pd(one, k), one));
    return _mm512_div_pd(e, _mm512_add_pd(e, two));
}

/* Round t (in [2^-125, 1] or 0) to float; *amb gets the lanes within AMBIGUOUS
 * of a midpoint. For such t the float grid has spacing 2^-23 relative to t's
 * binade, i.e. the 29 mantissa bits below a float's: the midpoint between the
 * two floats around t is where they read 2^28. */
static inline __m256 round_checked(__m512d t, __mmask8 *amb) {
    const __m512i low = _mm512_set1_epi64((1 << 29) - 1), mid = _mm512_set1_epi64(1 << 28);
    const __m512i band = _mm512_set1_epi64((int64_t)(AMBIGUOUS * (1 << 29)));
    __m512i below = _mm512_and_si512(_mm512_castpd_si512(t), low);
    *amb = _mm512_cmplt_epi64_mask(_mm512_abs_epi64(_mm512_sub_epi64(below, mid)), band);
    return _mm512_cvtpd_ps(t);
}

/* In place on n floats; returns -1 if the scratch could not be allocated. */
static int tanh_fast_chunk(float *buf, int n) {
    if (tls_where == NULL) tls_where = aligned_alloc(64, 8 * (CHUNK + 16));
    if (tls_where == NULL) return -1;
    int32_t *where = tls_where;
    float *pend = (float *)(tls_where + CHUNK + 16);
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32((int)0x80000000u));
    /* below 2^-125 tanh(x) ~ x nears the subnormals, whose spacing is not
     * relative: round_checked's bit test does not apply, MKL decides */
    const __m512 tiny = _mm512_set1_ps(0x1p-125f);
    const __m512d cap = _mm512_set1_pd(20.0);      /* tanh(20) rounds to 1 */
    const __m512i step = _mm512_set1_epi32(16);
    __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int count = 0;
    for (int j = 0; j < n; j += 16, pos = _mm512_add_epi32(pos, step)) {
        __mmask16 m = tail_mask(n - j);
        __m512 x = _mm512_maskz_loadu_ps(m, buf + j);
        __m512 ax = _mm512_andnot_ps(sign, x);
        __m512d alo = _mm512_min_pd(cap, _mm512_cvtps_pd(_mm512_castps512_ps256(ax)));
        __m512d ahi = _mm512_min_pd(cap, _mm512_cvtps_pd(_mm512_extractf32x8_ps(ax, 1)));
        __mmask8 blo, bhi;
        __m256 flo = round_checked(tanh_pos(alo), &blo);
        __m256 fhi = round_checked(tanh_pos(ahi), &bhi);
        __m512 f = _mm512_insertf32x8(_mm512_castps256_ps512(flo), fhi, 1);
        f = _mm512_or_ps(f, _mm512_and_ps(sign, x));
        /* to MKL: NaN, 0 < |x| < 2^-125, and the close calls */
        __mmask16 odd = _mm512_cmp_ps_mask(ax, tiny, _CMP_NGE_UQ) &
                        _mm512_cmp_ps_mask(ax, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        __mmask16 bad = ((__mmask16)blo | (__mmask16)((unsigned)bhi << 8) | odd) & m;
        /* decided lanes are written; the others keep x for the MKL call below */
        _mm512_storeu_si512(where + count, _mm512_maskz_compress_epi32(bad, pos));
        count += __builtin_popcount(bad);
        _mm512_mask_storeu_ps(buf + j, m & ~bad, f);
    }
    if (count > 0) {
        int64_t nn = count;
        for (int i = 0; i < count; i++) pend[i] = buf[where[i]];
        /* a few hundred elements: MKL's own threads would cost more than they save */
        int before = g_mkl_local_threads ? g_mkl_local_threads(1) : 0;
        ((vml_fn)g_fn)(&nn, pend, pend, &g_mode);
        if (g_mkl_local_threads) g_mkl_local_threads(before);
        for (int i = 0; i < count; i++) buf[where[i]] = pend[i];
    }
    return 0;
}

void tanh_vml_fast(float *buf, int n) {
    for (int s = 0; s < n; s += CHUNK) {
        int m = n - s < CHUNK ? n - s : CHUNK;
        if (tanh_fast_chunk(buf + s, m) != 0) { /* no scratch: MKL does it all */
            int64_t nn = m;
            ((vml_fn)g_fn)(&nn, buf + s, buf + s, &g_mode);
        }
    }
}
#else
int g_fast_tanh = 0;
void tanh_vml_fast(float *buf, int n) { (void)buf, (void)n; }
#endif

/* 1: the fast tanh above (where built with AVX-512), 0: vmsTanh for all.
 * local_threads: MKL's mkl_set_num_threads_local, or NULL. */
int fsq_set_fast_tanh(int on, void *local_threads) {
#if defined(HAVE_FAST_TANH)
    g_fast_tanh = on != 0;
    g_mkl_local_threads = (int (*)(int))local_threads;
#else
    (void)on, (void)local_threads;
#endif
    return g_fast_tanh;
}
