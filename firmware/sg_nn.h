/* sg_nn.h: whole int8 convolutions, requantization included, for the Cortex-M firmware.
 *
 * compile/backends/cortexm/nnlib.py replaces each quantized CONV_2D / DEPTHWISE_CONV_2D of a
 * model (convolution, bias, TFLite's per-channel MultiplyByQuantizedMultiplier, output zero
 * point, activation clamp) by one call of a kernel here, with the layer's shape in a
 * ``sg_conv_shape`` and its constants laid out at compile time:
 *
 *   sg_conv_s8     any window and stride: OHWI weights, each output pixel's window gathered
 *                  into a scratch row (pad taps hold the input zero point) unless it is one
 *                  contiguous pixel (1x1, no padding); 2 pixels x 2 output channels at a
 *                  time.  M4/M7, rows of at least nnlib.WIDEN_MIN values: the two pixels'
 *                  rows widened to int16 once (SXTB16 order), then every channel pair, fast
 *                  requantization and stores included, in one asm loop (sg_conv_pairs_w: per
 *                  4 values 2 weight words unpacked and 8 SMLAD).  Helium: the same loop with
 *                  VMLAVA over the int8 rows (sg_conv_pairs_mve).  Otherwise the dot
 *                  products of sg_kernels.h and the requantization in C.
 *   sg_dwconv_s8   depthwise, channel multiplier 1, weights [C][KH][KW].  3x3 windows with
 *                  stride 1 or 2 read the input as planes (``cb`` channels, ``rows`` rows at
 *                  a time), widened to int16 with the padding in place, so that two neighbouring
 *                  taps of one channel are one 32-bit word: 2 taps per SMLAD, four output
 *                  pixels per pass at stride 1 (sg_dw4_s1), two at stride 2; Helium: four
 *                  pixels per vector.  3x3 windows over few pixels (``cb`` 4, ``rows`` 0): four
 *                  channels per pass straight from the NHWC input.  Other windows take a plain
 *                  loop.
 *
 * Order of reads and writes (the memory plan lets an output overlap the input it reads, from
 * the order of the reference TIR nnlib.py builds for each call): sg_conv_s8 goes through the
 * output pixels in pairs, in raster order, all output channels of a pair before the next;
 * sg_dwconv_s8 channel by channel, each channel's output rows top to bottom, pixels left to
 * right (four channels per pass: quad by quad, pixels in raster order, the quad's four
 * channels of a pixel together).  Inputs may be read earlier than that, never later; x and
 * y are not ``restrict``, so the compiler keeps that order where they overlap.
 *
 * Requantization as the integer lowering (compile/lower/fixedpoint.py) and LiteRT's
 * reference: h = (acc * m + 2^30) >> 31 in 64 bits (SaturatingRoundingDoublingHighMul for a
 * multiplier m in [2^30, 2^31) without left shift), then h >> rs rounded half away from zero
 * (RoundingDivideByPOT), + the output zero point, clamped.
 */
#ifndef SG_NN_H
#define SG_NN_H

#include <stdint.h>
#include <string.h>

#include "sg_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

typedef struct {
  int32_t ih, iw, c;               /* input rows, columns, channels (NHWC, batch 1) */
  int32_t oh, ow, o;               /* output rows, columns, channels */
  int32_t kh, kw, sh, sw, pt, pl;  /* window, strides, top and left padding */
  int32_t zx;                      /* value of a padded tap: the input zero point */
  int32_t zy, lo, hi;              /* output zero point, clamp */
  int32_t cb, rows;                /* sg_dwconv_s8: channels and rows converted at a time */
  int32_t fast;                    /* every channel's requantization has the fast form */
  int32_t widen;                   /* sg_conv_s8 on M4/M7: widen the pixels' rows to int16 */
} sg_conv_shape;

/* compiled once and called as they are: no clone specialised to a call site's constants
 * (GCC 12 cloned sg_dwconv_s8 for a model with one depthwise layer, computed in place over
 * its input, and the call to the clone was dropped: outputs left as the inputs) */
#define SG_NN_FN static __attribute__((noipa, unused))

/* the stores before it are done before any volatile asm after it reads their memory */
#define SG_NN_BARRIER() __asm__ volatile("" ::: "memory")

/* a kernel: its body compiled twice, with the fast requantization and without (the flag is
 * a constant in each copy, so no test is left in the loops) */
#define SG_NN_KERNEL(name, body, scratch_t)                                                  \
  SG_NN_FN void name(const sg_conv_shape *s, const int8_t *x, const int8_t *w,              \
                     const int32_t *bias, const int32_t *mult, const int32_t *rsh,          \
                     int8_t *y, scratch_t *scratch) {                                       \
    if (s->fast)                                                                            \
      body(s, x, w, bias, mult, rsh, y, scratch, 1);                                        \
    else                                                                                    \
      body(s, x, w, bias, mult, rsh, y, scratch, 0);                                        \
  }

SG_INLINE uint32_t sg_pack16(int32_t lo, int32_t hi) {
  return (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
}

/* the general form, exact on the whole int32 range: RoundingDivideByPOT as gemmlowp writes it
 * (remainder against threshold), which cannot overflow */
SG_INLINE int32_t sg_rq(int32_t acc, int32_t m, int32_t rs) {
  int32_t h = (int32_t)(((int64_t)acc * m + ((int64_t)1 << 30)) >> 31);
  const uint32_t mask = ((uint32_t)1 << rs) - 1u;
  const uint32_t threshold = (mask >> 1) + (h < 0);
  return (h >> rs) + (((uint32_t)h & mask) > threshold);
}

/* A layer's requantization, per output channel.  A channel is fast (nnlib.py checks at
 * compile time) when |acc| < 2^30 for every input and 1 <= rs <= 22: then
 * (acc * m + 2^30) >> 31 = SMMULR(2 acc, m), |h| < 2^30, and with add = 2^(rs-1) + (zy << rs)
 * the rounding shift and the zero point are (h + (h >> 31) + add) >> rs, no overflow.
 * ``rsh`` holds rs, + 256 for a channel that is not fast.  A layer whose channels are all
 * fast runs the kernel's fast copy; the other copy tests each channel. */
typedef struct {
  int32_t m, rs, add, slow;
} sg_rqc;

SG_INLINE sg_rqc sg_rq_channel(int32_t m, int32_t rsv, int32_t zy, int fast) {
  const int32_t rs = rsv & 255, slow = !fast && rsv >> 8;
  sg_rqc c = {m, rs, slow ? zy : (int32_t)((uint32_t)(2 * zy + 1) << (rs - 1)), slow};
  return c;
}

SG_INLINE int32_t sg_smmulr(int32_t a, int32_t b) {
#if defined(__ARM_FEATURE_DSP)
  int32_t r;
  __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
#else
  return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
#endif
}

/* the requantized value before the clamp */
SG_INLINE int32_t sg_rq_val(int32_t acc, sg_rqc c, int fast) {
  if (fast || !c.slow) {
    int32_t h = sg_smmulr(acc * 2, c.m);
    return (h + (h >> 31) + c.add) >> c.rs;
  }
  return sg_rq(acc, c.m, c.rs) + c.add;
}

SG_INLINE int8_t sg_rq_out(int32_t acc, sg_rqc c, int32_t lo, int32_t hi, int fast) {
  int32_t v = sg_rq_val(acc, c, fast);
  v = v < lo ? lo : v;
  return (int8_t)(v > hi ? hi : v);
}

/* two values clamped to [lo, hi] and stored; lo2/hi2 = lo/hi in both halfwords.  DSP:
 * saturated to int8, packed into halfwords, clamped by SSUB16 + SEL twice */
SG_INLINE void sg_store2(int8_t *y0, int8_t *y1, int32_t v0, int32_t v1, int32_t lo,
                         int32_t hi, uint32_t lo2, uint32_t hi2) {
#if defined(__ARM_FEATURE_DSP)
  (void)lo;
  (void)hi;
  uint32_t v = ((uint32_t)__ssat(v0, 8) & 0xffffu) | ((uint32_t)__ssat(v1, 8) << 16);
  (void)__ssub16((int16x2_t)v, (int16x2_t)lo2);
  v = (uint32_t)__sel((uint8x4_t)v, (uint8x4_t)lo2);
  (void)__ssub16((int16x2_t)hi2, (int16x2_t)v);
  v = (uint32_t)__sel((uint8x4_t)v, (uint8x4_t)hi2);
  *y0 = (int8_t)v;
  *y1 = (int8_t)(v >> 16);
#else
  (void)lo2;
  (void)hi2;
  v0 = v0 < lo ? lo : v0;
  v1 = v1 < lo ? lo : v1;
  *y0 = (int8_t)(v0 > hi ? hi : v0);
  *y1 = (int8_t)(v1 > hi ? hi : v1);
#endif
}

/* -- standard convolution ------------------------------------------------------------------ */

/* n bytes: under 16 (a first layer's few channels), a loop rather than a library call (the
 * empty asm keeps GCC from turning the loop back into memcpy / memset) */
SG_INLINE void sg_copy(int8_t *d, const int8_t *src, int32_t n) {
  if (n >= 16) {
    memcpy(d, src, (size_t)n);
    return;
  }
  int32_t i = 0;
  for (; i + 4 <= n; i += 4) {     /* unaligned words: LDR/STR take them on every core here */
    uint32_t v;
    memcpy(&v, src + i, 4);
    memcpy(d + i, &v, 4);
    __asm__("");
  }
  for (; i < n; ++i) {
    d[i] = src[i];
    __asm__("");
  }
}
SG_INLINE void sg_fill(int8_t *d, int32_t v, int32_t n) {
  if (n >= 16) {
    memset(d, v, (size_t)n);
    return;
  }
  for (int32_t i = 0; i < n; ++i) {
    d[i] = (int8_t)v;
    __asm__("");
  }
}

/* the window of output pixel p as one row of K = kh * kw * c values: x itself for a 1x1
 * window without padding, else gathered into col */
SG_INLINE const int8_t *sg_window(const sg_conv_shape *s, const int8_t *x, int32_t p,
                                  int8_t *col) {
  int32_t oy = p / s->ow, ox = p - oy * s->ow;
  int32_t iy0 = oy * s->sh - s->pt, ix0 = ox * s->sw - s->pl;
  if (!col) return x + (iy0 * s->iw + ix0) * s->c;
  int8_t *dst = col;
  for (int32_t ky = 0; ky < s->kh; ++ky) {
    int32_t iy = iy0 + ky;
    if (iy < 0 || iy >= s->ih) {
      sg_fill(dst, s->zx, s->kw * s->c);
      dst += s->kw * s->c;
      continue;
    }
    int32_t kx = 0;
    for (; kx < s->kw && ix0 + kx < 0; ++kx, dst += s->c) sg_fill(dst, s->zx, s->c);
    int32_t inside = s->kw - kx;
    if (ix0 + s->kw > s->iw) inside -= ix0 + s->kw - s->iw;
    if (inside > 0) {
      sg_copy(dst, x + (iy * s->iw + ix0 + kx) * s->c, inside * s->c);
      dst += inside * s->c;
      kx += inside;
    }
    for (; kx < s->kw; ++kx, dst += s->c) sg_fill(dst, s->zx, s->c);
  }
  return col;
}

/* Every output channel pair of two pixels, the fast requantization and the clamp included:
 * one asm loop, so that nothing it keeps is spilled.
 * What it does not hold in its 14 registers it reads from ``e`` (its address pushed at
 * [sp] while it runs). Requantization per value: (SMMLAR(2 acc, m, add) + (acc >> 31)) >> rs
 * with add = (2 zy + 1) << (rs - 1): the fast form of sg_rq_val, h + (h >> 31) + add with
 * h = SMMULR(2 acc, m), where acc's sign stands for h's, which differ only when h = 0, and
 * then both give zy (proved in test_nnlib's edges). */
typedef struct {
  const int16_t *xw;         /*  0: the widened rows of the two pixels (sg_widen2) */
  int32_t k;                 /*  4: values per row */
  const int8_t *w;           /*  8: the pair's two weight rows, advancing */
  const int32_t *bias;       /* 12: advancing, as mult and rsh */
  const int32_t *mult;       /* 16 */
  const int32_t *rsh;        /* 20 */
  int8_t *y;                 /* 24: pixel 0's output at the pair, advancing */
  int32_t dy;                /* 28: pixel 1's output - pixel 0's */
  uint32_t lo2, hi2;         /* 32, 36: the clamp in both halfwords */
  int32_t zy2;               /* 40: 2 zy + 1 */
  int8_t *end;               /* 44: y after the last pair */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
  int32_t dx;                /* 48: pixel 1's row - pixel 0's (xw: pixel 0's int8 row) */
  int32_t zy;                /* 52: the output zero point */
  uint32_t moff[4];          /* 56: byte offsets of channels o, o + 1, o, o + 1 */
  int32_t lo4[4], hi4[4];    /* 72, 88: the clamp */
  uint32_t yoff[4];          /* 104: byte offsets of the four outputs from pixel 0's at o */
#endif
} sg_pairs_w;

/* the pairs of channels [0, no & ~1) of pixels 0 (row x0, output y0) and 1 (x0 + dx,
 * y0 + dy); x0: the widened rows on M4/M7, the int8 row on Helium */
SG_INLINE sg_pairs_w sg_pairs_make(const void *x0, int32_t dx, int32_t k, const int8_t *w,
                                   const int32_t *bias, const int32_t *mult,
                                   const int32_t *rsh, int8_t *y0, int32_t dy, int32_t no,
                                   int32_t zy, int32_t lo, int32_t hi) {
  sg_pairs_w e = {(const int16_t *)x0, k, w, bias, mult, rsh, y0, dy, sg_pack16(lo, lo),
                  sg_pack16(hi, hi), 2 * zy + 1, y0 + (no & ~1)
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
                  , dx, zy, {0, 4, 0, 4}, {lo, lo, lo, lo}, {hi, hi, hi, hi},
                  {0, 1, (uint32_t)dy, (uint32_t)dy + 1}
#endif
  };
  (void)dx;
  return e;
}

/* the pair's four accumulators a0..a3 (channel o of pixels 0, 1: a0, a2; o + 1: a1, a3)
 * requantized, clamped and stored; ``d`` holds ``e`` (sg_pairs_w); loops to 1: while pairs
 * are left */

#define SG_PAIRS_RQ_STORE                                                                     \
      "ldr %[t], [%[d], #16]\n\t"                                                              \
      "ldrd %[wa], %[wb], [%[t]], #8\n\t"                                                      \
      "str %[t], [%[d], #16]\n\t"                                                              \
      "ldr %[t], [%[d], #20]\n\t"                                                              \
      "ldrd %[xa], %[xb], [%[t]], #8\n\t"                                                      \
      "str %[t], [%[d], #20]\n\t"                                                              \
      "ldr %[n], [%[d], #40]\n\t"                                                              \
      /* channel o: a0 (pixel 0), a2 (pixel 1) */                                              \
      "sub %[u], %[xa], #1\n\t"                                                                \
      "lsl %[u], %[n], %[u]\n\t"                                                               \
      "lsl %[t], %[a0], #1\n\t"                                                                \
      "smmlar %[t], %[t], %[wa], %[u]\n\t"                                                     \
      "add %[t], %[t], %[a0], asr #31\n\t"                                                     \
      "asr %[a0], %[t], %[xa]\n\t"                                                             \
      "lsl %[t], %[a2], #1\n\t"                                                                \
      "smmlar %[t], %[t], %[wa], %[u]\n\t"                                                     \
      "add %[t], %[t], %[a2], asr #31\n\t"                                                     \
      "asr %[a2], %[t], %[xa]\n\t"                                                             \
      /* channel o + 1: a1, a3 */                                                              \
      "sub %[u], %[xb], #1\n\t"                                                                \
      "lsl %[u], %[n], %[u]\n\t"                                                               \
      "lsl %[t], %[a1], #1\n\t"                                                                \
      "smmlar %[t], %[t], %[wb], %[u]\n\t"                                                     \
      "add %[t], %[t], %[a1], asr #31\n\t"                                                     \
      "asr %[a1], %[t], %[xb]\n\t"                                                             \
      "lsl %[t], %[a3], #1\n\t"                                                                \
      "smmlar %[t], %[t], %[wb], %[u]\n\t"                                                     \
      "add %[t], %[t], %[a3], asr #31\n\t"                                                     \
      "asr %[a3], %[t], %[xb]\n\t"                                                             \
      /* saturated to int8, each pixel's two channels in halfwords, clamped */                 \
      "ssat %[a0], #8, %[a0]\n\t"                                                              \
      "ssat %[a1], #8, %[a1]\n\t"                                                              \
      "pkhbt %[a0], %[a0], %[a1], lsl #16\n\t"                                                 \
      "ssat %[a2], #8, %[a2]\n\t"                                                              \
      "ssat %[a3], #8, %[a3]\n\t"                                                              \
      "pkhbt %[a2], %[a2], %[a3], lsl #16\n\t"                                                 \
      "ldrd %[xa], %[xb], [%[d], #32]\n\t"                                                     \
      "ssub16 %[t], %[a0], %[xa]\n\t"                                                          \
      "sel %[a0], %[a0], %[xa]\n\t"                                                            \
      "ssub16 %[t], %[xb], %[a0]\n\t"                                                          \
      "sel %[a0], %[a0], %[xb]\n\t"                                                            \
      "ssub16 %[t], %[a2], %[xa]\n\t"                                                          \
      "sel %[a2], %[a2], %[xa]\n\t"                                                            \
      "ssub16 %[t], %[xb], %[a2]\n\t"                                                          \
      "sel %[a2], %[a2], %[xb]\n\t"                                                            \
      "ldrd %[t], %[u], [%[d], #24]\n\t"                                                       \
      "strb %[a0], [%[t]]\n\t"                                                                 \
      "lsr %[a0], %[a0], #16\n\t"                                                              \
      "strb %[a0], [%[t], #1]\n\t"                                                             \
      "strb %[a2], [%[t], %[u]]\n\t"                                                           \
      "add %[u], %[u], #1\n\t"                                                                 \
      "lsr %[a2], %[a2], #16\n\t"                                                              \
      "strb %[a2], [%[t], %[u]]\n\t"                                                           \
      "ldr %[u], [%[d], #44]\n\t"                                                              \
      "add %[t], %[t], #2\n\t"                                                                 \
      "str %[t], [%[d], #24]\n\t"                                                              \
      "cmp %[t], %[u]\n\t"                                                                     \
      "bne 1b\n\t"

#if defined(__ARM_FEATURE_DSP) && !(defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1))
/* M4/M7: the two pixels' rows widened to int16 once, for all output channels */
#define SG_NN_WIDEN 1

/* xw: per 4 values, pixel 0's [x0, x2] [x1, x3] then pixel 1's (the order SXTB16 gives the
 * weights), then the k % 4 last values of pixel 0, of pixel 1 */
SG_INLINE void sg_widen2(const int8_t *x0, const int8_t *x1, int32_t k, int16_t *xw) {
  uint8_t *d = (uint8_t *)xw;
  for (int32_t g = k >> 2; g; --g, x0 += 4, x1 += 4, d += 16) {
    uint32_t a, b, v[4];
    memcpy(&a, x0, 4);
    memcpy(&b, x1, 4);
    v[0] = __sxtb16(a);
    v[1] = sg_sxtb16_ror8(a);
    v[2] = __sxtb16(b);
    v[3] = sg_sxtb16_ror8(b);
    memcpy(d, v, 16);
  }
  int16_t *t = (int16_t *)(void *)d;
  const int32_t r = k & 3;
  for (int32_t i = 0; i < r; ++i) {
    t[i] = x0[i];
    t[r + i] = x1[i];
  }
}

/* 4 values of the pair's two weight rows (the second d bytes on) against both pixels' widened
 * rows: 2 weight words unpacked once, 8 SMLAD */
#define SG_MM22_W4                                                                            \
      "ldr %[wb], [%[w], %[d]]\n\t"                                                            \
      "ldr %[wa], [%[w]], #4\n\t"                                                              \
      "ldrd %[xa], %[xb], [%[xp]], #8\n\t"                                                     \
      "sxtb16 %[t], %[wa]\n\t"                                                                 \
      "sxtb16 %[wa], %[wa], ror #8\n\t"                                                        \
      "smlad %[a0], %[xa], %[t], %[a0]\n\t"                                                    \
      "smlad %[a0], %[xb], %[wa], %[a0]\n\t"                                                   \
      "sxtb16 %[u], %[wb]\n\t"                                                                 \
      "sxtb16 %[wb], %[wb], ror #8\n\t"                                                        \
      "smlad %[a1], %[xa], %[u], %[a1]\n\t"                                                    \
      "smlad %[a1], %[xb], %[wb], %[a1]\n\t"                                                   \
      "ldrd %[xa], %[xb], [%[xp]], #8\n\t"                                                     \
      "smlad %[a2], %[xa], %[t], %[a2]\n\t"                                                    \
      "smlad %[a2], %[xb], %[wa], %[a2]\n\t"                                                   \
      "smlad %[a3], %[xa], %[u], %[a3]\n\t"                                                    \
      "smlad %[a3], %[xb], %[wb], %[a3]\n\t"

/* acc[0..3] += pixel 0 . w0, pixel 0 . w1, pixel 1 . w0, pixel 1 . w1 (rows of xw) */
SG_INLINE void sg_mm22_w(const int16_t *xw, const int8_t *w0, const int8_t *w1, int32_t k,
                         int32_t *acc) {
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  const uint8_t *xp = (const uint8_t *)xw;
  const int32_t d = (int32_t)(w1 - w0);
  const int8_t *end = w0 + (k & ~3);
  if (w0 != end) {
    /* 14 registers, written out because GCC 12 spills an accumulator.  It reads xw and the
     * weights without telling GCC: volatile, after SG_NN_BARRIER. */
    const int8_t *w = w0;
    uint32_t wa, wb, xa, xb, t, u;
    __asm__ volatile(
        "1:\n\t"
        SG_MM22_W4
        "cmp %[w], %[end]\n\t"
        "bne 1b"
        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w),
          [xp] "+r"(xp), [wa] "=&r"(wa), [wb] "=&r"(wb), [xa] "=&r"(xa), [xb] "=&r"(xb),
          [t] "=&r"(t), [u] "=&r"(u)
        : [d] "r"(d), [end] "r"(end)
        : "cc");
    w0 = w;
  }
  w1 = w0 + d;
  const int16_t *t = (const int16_t *)(const void *)xp;
  const int32_t r = k & 3;
  for (int32_t i = 0; i < r; ++i) {
    a0 += t[i] * w0[i];
    a1 += t[i] * w1[i];
    a2 += t[r + i] * w0[i];
    a3 += t[r + i] * w1[i];
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}

SG_INLINE void sg_conv_pairs_w(sg_pairs_w *e) {
  uint32_t a0, a1, a2, a3, w, xp, wa, wb, xa, xb, t, u, n, d = (uint32_t)e;
  __asm__ volatile(
      "str %[d], [sp, #-8]!\n\t"
      "1:\n\t"
      "ldr %[d], [sp]\n\t"
      "ldr %[t], [%[d], #12]\n\t"
      "ldrd %[a0], %[a1], [%[t]], #8\n\t"
      "str %[t], [%[d], #12]\n\t"
      "mov %[a2], %[a0]\n\t"
      "mov %[a3], %[a1]\n\t"
      "ldr %[w], [%[d], #8]\n\t"
      "ldr %[xp], [%[d], #0]\n\t"
      "ldr %[d], [%[d], #4]\n\t"
      "bic %[n], %[d], #7\n\t"
      "add %[n], %[w], %[n]\n\t"
      "cmp %[w], %[n]\n\t"
      "beq 6f\n\t"
      "2:\n\t"
      SG_MM22_W4
      SG_MM22_W4
      "cmp %[w], %[n]\n\t"
      "bne 2b\n\t"
      "6:\n\t"
      "tst %[d], #4\n\t"
      "beq 3f\n\t"
      SG_MM22_W4
      /* the k % 4 last values: int16 of pixel 0, then of pixel 1 (sg_widen2) */
      "3:\n\t"
      "ands %[n], %[d], #3\n\t"
      "beq 5f\n\t"
      "add %[u], %[xp], %[n], lsl #1\n\t"
      "4:\n\t"
      "ldrsh %[xa], [%[xp]], #2\n\t"
      "ldrsh %[xb], [%[u]], #2\n\t"
      "ldrsb %[wb], [%[w], %[d]]\n\t"
      "ldrsb %[wa], [%[w]], #1\n\t"
      "mla %[a0], %[xa], %[wa], %[a0]\n\t"
      "mla %[a1], %[xa], %[wb], %[a1]\n\t"
      "mla %[a2], %[xb], %[wa], %[a2]\n\t"
      "mla %[a3], %[xb], %[wb], %[a3]\n\t"
      "subs %[n], %[n], #1\n\t"
      "bne 4b\n\t"
      "5:\n\t"
      /* the next pair's rows start a row after the second */
      "add %[w], %[w], %[d]\n\t"
      "ldr %[d], [sp]\n\t"
      "str %[w], [%[d], #8]\n\t"
      SG_PAIRS_RQ_STORE
      "add sp, sp, #8"
      : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [w] "=&r"(w),
        [xp] "=&r"(xp), [wa] "=&r"(wa), [wb] "=&r"(wb), [xa] "=&r"(xa), [xb] "=&r"(xb),
        [t] "=&r"(t), [u] "=&r"(u), [n] "=&r"(n), [d] "+r"(d)
      :
      : "cc", "memory");
}
#else
#define SG_NN_WIDEN 0
#endif

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
/* Helium: every output channel pair of two pixels in one asm loop, as sg_conv_pairs_w: the
 * four dot products of the pair's int8 rows by VMLAVA, 16 values per instruction, in a
 * tail-predicated loop (DLSTP/LETP), then the four requantized in one vector as the Helium
 * depthwise rows do (gathers of the pair's multipliers and shifts, VQRDMULH, h + (h >> 31)
 * rounded right by VRSHL, + zy, clamped) and stored by one scatter.  VMLAVA accumulates into
 * even registers: the accumulators are pinned to r0, r2, r4, r6. */
SG_INLINE void sg_conv_pairs_mve(sg_pairs_w *e) {
  register int32_t a0 __asm__("r0"), a1 __asm__("r2"), a2 __asm__("r4"), a3 __asm__("r6");
  uint32_t w, wa, wb, xa, xb, t, u, n, d = (uint32_t)e;
  __asm__ volatile(
      "vldrw.u32 q4, [%[d], #56]\n\t"
      "vldrw.u32 q5, [%[d], #72]\n\t"
      "vldrw.u32 q6, [%[d], #88]\n\t"
      "vldrw.u32 q7, [%[d], #104]\n\t"
      "str %[d], [sp, #-8]!\n\t"
      "1:\n\t"
      "ldr %[d], [sp]\n\t"
      "ldr %[t], [%[d], #12]\n\t"
      "ldrd %[a0], %[a1], [%[t]], #8\n\t"
      "str %[t], [%[d], #12]\n\t"
      "mov %[a2], %[a0]\n\t"
      "mov %[a3], %[a1]\n\t"
      "ldr %[w], [%[d], #8]\n\t"
      "ldr %[xa], [%[d], #0]\n\t"
      "ldr %[xb], [%[d], #48]\n\t"
      "add %[xb], %[xa], %[xb]\n\t"
      "ldr %[n], [%[d], #4]\n\t"
      "add %[wb], %[w], %[n]\n\t"
      "add %[t], %[wb], %[n]\n\t"
      "str %[t], [%[d], #8]\n\t"
      "dlstp.8 lr, %[n]\n\t"
      "2:\n\t"
      "vldrb.u8 q0, [%[xa]], #16\n\t"
      "vldrb.u8 q1, [%[xb]], #16\n\t"
      "vldrb.u8 q2, [%[w]], #16\n\t"
      "vldrb.u8 q3, [%[wb]], #16\n\t"
      "vmlava.s8 %[a0], q0, q2\n\t"
      "vmlava.s8 %[a1], q0, q3\n\t"
      "vmlava.s8 %[a2], q1, q2\n\t"
      "vmlava.s8 %[a3], q1, q3\n\t"
      "letp lr, 2b\n\t"
      "ldr %[d], [sp]\n\t"
      "vmov q0[2], q0[0], %[a0], %[a2]\n\t"
      "vmov q0[3], q0[1], %[a1], %[a3]\n\t"
      "ldr %[t], [%[d], #16]\n\t"
      "vldrw.u32 q1, [%[t], q4]\n\t"
      "adds %[t], #8\n\t"
      "str %[t], [%[d], #16]\n\t"
      "ldr %[t], [%[d], #20]\n\t"
      "vldrw.u32 q2, [%[t], q4]\n\t"
      "adds %[t], #8\n\t"
      "str %[t], [%[d], #20]\n\t"
      "vneg.s32 q2, q2\n\t"
      "vqrdmulh.s32 q0, q0, q1\n\t"
      "vshr.s32 q1, q0, #31\n\t"
      "vadd.i32 q0, q0, q1\n\t"
      "vrshl.s32 q0, q0, q2\n\t"
      "ldr %[t], [%[d], #52]\n\t"
      "vadd.i32 q0, q0, %[t]\n\t"
      "vmax.s32 q0, q0, q5\n\t"
      "vmin.s32 q0, q0, q6\n\t"
      "ldrd %[t], %[u], [%[d], #24]\n\t"
      "vstrb.32 q0, [%[t], q7]\n\t"
      "adds %[t], #2\n\t"
      "str %[t], [%[d], #24]\n\t"
      "ldr %[u], [%[d], #44]\n\t"
      "cmp %[t], %[u]\n\t"
      "bne 1b\n\t"
      "add sp, sp, #8"
      : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [w] "=&r"(w),
        [wa] "=&r"(wa), [wb] "=&r"(wb), [xa] "=&r"(xa), [xb] "=&r"(xb), [t] "=&r"(t),
        [u] "=&r"(u), [n] "=&r"(n), [d] "+r"(d)
      :
      : "lr", "cc", "memory", "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9",
        "d10", "d11", "d12", "d13", "d14", "d15");
}
#endif

/* scratch: the gathered windows (2 k bytes, when the window is not read in place), then
 * with ``widen`` the widened rows (4 k bytes, 4-aligned); sizes as
 * nnlib.ConvLayer.scratch_bytes */
SG_INLINE void sg_conv_body(const sg_conv_shape *s, const int8_t *x,
                            const int8_t *restrict w, const int32_t *restrict bias,
                            const int32_t *restrict mult, const int32_t *restrict rsh,
                            int8_t *y, int8_t *restrict scratch, const int fast) {
  const int32_t k = s->kh * s->kw * s->c, n = s->oh * s->ow, no = s->o;
  const int32_t zy = s->zy, lo = s->lo, hi = s->hi;
  const uint32_t lo2 = sg_pack16(lo, lo), hi2 = sg_pack16(hi, hi);
  const int32_t gather = !(s->kh == 1 && s->kw == 1 && s->pt == 0 && s->pl == 0);
  int8_t *col = gather ? scratch : 0;
#if SG_NN_WIDEN
  const int32_t widen = s->widen;
  int16_t *xw = (int16_t *)(void *)(scratch + (gather ? (2 * k + 3) & ~3 : 0));
#endif
  for (int32_t p = 0; p < n; p += 2) {
    const int32_t two = p + 1 < n;
    const int8_t *x0 = sg_window(s, x, p, col);
    const int8_t *x1 = two ? sg_window(s, x, p + 1, col ? col + k : col) : x0;
    int8_t *y0 = y + p * no, *y1 = y0 + no;
#if SG_NN_WIDEN
    if (widen) {
      sg_widen2(x0, x1, k, xw);
      SG_NN_BARRIER();
    }
#endif
    int32_t o = 0;
#if SG_NN_WIDEN
    if (widen && two && fast && no >= 2) {
      sg_pairs_w e = sg_pairs_make(xw, 0, k, w, bias, mult, rsh, y0, (int32_t)(y1 - y0), no,
                                   zy, lo, hi);
      sg_conv_pairs_w(&e);
      o = no & ~1;
    }
#elif defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
    if (two && fast && no >= 2) {
      sg_pairs_w e = sg_pairs_make(x0, (int32_t)(x1 - x0), k, w, bias, mult, rsh, y0,
                                   (int32_t)(y1 - y0), no, zy, lo, hi);
      sg_conv_pairs_mve(&e);    /* its "memory" clobber orders it after the gather */
      o = no & ~1;
    }
#endif
    for (; o + 2 <= no; o += 2) {
      const int8_t *wo = w + o * k;
      int32_t acc[4] = {bias[o], bias[o + 1], bias[o], bias[o + 1]};
#if SG_NN_WIDEN
      if (widen)
        sg_mm22_w(xw, wo, wo + k, k, acc);
      else
#endif
      if (two)
        sg_dot22_s8(x0, (int32_t)(x1 - x0), wo, k, k, acc, 2);
      else
        sg_dot2_s8(x0, wo, k, k, acc);
      const sg_rqc c0 = sg_rq_channel(mult[o], rsh[o], zy, fast);
      const sg_rqc c1 = sg_rq_channel(mult[o + 1], rsh[o + 1], zy, fast);
      sg_store2(y0 + o, y0 + o + 1, sg_rq_val(acc[0], c0, fast), sg_rq_val(acc[1], c1, fast),
                lo, hi, lo2, hi2);
      if (two)
        sg_store2(y1 + o, y1 + o + 1, sg_rq_val(acc[2], c0, fast),
                  sg_rq_val(acc[3], c1, fast), lo, hi, lo2, hi2);
    }
    if (o < no) {
      const int8_t *wo = w + o * k;
      const sg_rqc c0 = sg_rq_channel(mult[o], rsh[o], zy, fast);
      int32_t acc[4] = {bias[o], bias[o], bias[o], bias[o]};
#if SG_NN_WIDEN
      if (widen)
        sg_mm22_w(xw, wo, wo, k, acc);
      else
#endif
      {
        acc[0] = sg_dot_s8(x0, wo, k, acc[0]);
        acc[2] = sg_dot_s8(x1, wo, k, acc[2]);
      }
      y0[o] = sg_rq_out(acc[0], c0, lo, hi, fast);
      if (two) y1[o] = sg_rq_out(acc[2], c0, lo, hi, fast);
    }
  }
}

SG_NN_KERNEL(sg_conv_s8, sg_conv_body, int8_t)

/* -- depthwise convolution ----------------------------------------------------------------- */

#if defined(__ARM_FEATURE_DSP)
#define sg_smlad(a, b, acc) ((int32_t)__smlad((a), (b), (acc)))
#define sg_smlabt(a, b, acc) ((int32_t)__smlabt((int32_t)(a), (int32_t)(b), (acc)))
#define sg_smlatb(a, b, acc) ((int32_t)__smlatb((int32_t)(a), (int32_t)(b), (acc)))
#define sg_smlabb(a, b, acc) ((int32_t)__smlabb((int32_t)(a), (int32_t)(b), (acc)))
#define sg_smlatt(a, b, acc) ((int32_t)__smlatt((int32_t)(a), (int32_t)(b), (acc)))
#else
SG_INLINE int32_t sg_lo16(uint32_t v) { return (int16_t)(v & 0xffffu); }
SG_INLINE int32_t sg_hi16(uint32_t v) { return (int16_t)(v >> 16); }
SG_INLINE int32_t sg_smlad(uint32_t a, uint32_t b, int32_t acc) {
  return acc + sg_lo16(a) * sg_lo16(b) + sg_hi16(a) * sg_hi16(b);
}
SG_INLINE int32_t sg_smlabt(uint32_t a, uint32_t b, int32_t acc) {
  return acc + sg_lo16(a) * sg_hi16(b);
}
SG_INLINE int32_t sg_smlatb(uint32_t a, uint32_t b, int32_t acc) {
  return acc + sg_hi16(a) * sg_lo16(b);
}
SG_INLINE int32_t sg_smlabb(uint32_t a, uint32_t b, int32_t acc) {
  return acc + sg_lo16(a) * sg_lo16(b);
}
SG_INLINE int32_t sg_smlatt(uint32_t a, uint32_t b, int32_t acc) {
  return acc + sg_hi16(a) * sg_hi16(b);
}
#endif

SG_INLINE uint32_t sg_ld32(const int16_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* lo, hi as the low and high halfwords (PKHBT: GCC masks and ors) */
SG_INLINE uint32_t sg_pack2(int32_t lo, int32_t hi) {
#if defined(__ARM_FEATURE_DSP)
  uint32_t r;
  __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
  return r;
#else
  return sg_pack16(lo, hi);
#endif
}

/* rows [r0, r0 + rows) (padded: row 0 is pt rows above the input) of channels
 * [c0, c0 + cb), widened to int16, one plane per channel, ``stride`` int16 apart:
 * plane[c][r][j] = x[r0 + r - pt][j - pl][c0 + c], zx outside the input */
SG_INLINE void sg_planes(const sg_conv_shape *s, const int8_t *x, int32_t c0, int32_t cb,
                         int32_t r0, int32_t rows, int16_t *restrict plane, int32_t stride,
                         int32_t width) {
  const int32_t ih = s->ih, iw = s->iw, c = s->c, pt = s->pt, pl = s->pl;
  const int32_t cols = iw < width - pl ? iw : width - pl;   /* input columns kept */
  const int16_t zx = (int16_t)s->zx;
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
  const uint16x8_t every = vmulq_n_u16(vidupq_n_u16(0, 1), (uint16_t)c);
#endif
  for (int32_t ci = 0; ci < cb; ++ci) {
    const int8_t *src = x + c0 + ci;
    int16_t *dst = plane + ci * stride;
    for (int32_t r = r0; r < r0 + rows; ++r, dst += width) {
      const int32_t iy = r - pt;
      int32_t j = 0;
      if (iy >= 0 && iy < ih) {
        const int8_t *in = src + iy * iw * c;
        for (; j < pl; ++j) dst[j] = zx;
        int32_t ix = 0;
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
        /* 8 at a time: a gather of every c-th byte, widened, stored contiguously */
        for (; ix + 8 <= cols; ix += 8, in += 8 * c, j += 8)
          vst1q_s16(dst + j, vldrbq_gather_offset_s16(in, every));
#endif
        for (; ix + 2 <= cols; ix += 2, in += 2 * c, j += 2) {   /* two per store */
          const uint32_t v = sg_pack2(in[0], in[c]);
          memcpy(dst + j, &v, 4);
        }
        if (ix < cols) dst[j++] = *in;
      }
      for (; j < width; ++j) dst[j] = zx;
    }
  }
}

/* width of a plane row: every column a 3x3 pass reads, +1 for the pair loads, even */
SG_INLINE int32_t sg_band_width(const sg_conv_shape *s) {
  int32_t wd = (s->ow - 1) * s->sw + s->kw + 2;
  return (wd + 1) & ~1;
}

/* one output row of one channel, 3x3 window, rows r0..r2 of the band (int16, channel-major);
 * output pixels ``step`` bytes apart */
typedef struct {
  uint32_t a0, b0, a1, b1, a2, b2;   /* per window row: [w0, w1] and [w1, w2] as halfwords */
} sg_w3x3;

SG_INLINE sg_w3x3 sg_pack3x3(const int8_t *wc) {
  sg_w3x3 k = {sg_pack16(wc[0], wc[1]), sg_pack16(wc[1], wc[2]), sg_pack16(wc[3], wc[4]),
               sg_pack16(wc[4], wc[5]), sg_pack16(wc[6], wc[7]), sg_pack16(wc[7], wc[8])};
  return k;
}

/* a channel's constants for its rows, filled once per channel; ``end`` set per row */
typedef struct {
  sg_w3x3 k;                 /*  0: the channel's weights */
  int32_t b, m, add, rs;     /* 24, 28, 32, 36: bias; fast requantization (rs >= 1) */
  uint32_t lo2, hi2;         /* 40, 44 */
  int32_t step;              /* 48: bytes between output pixels */
  int8_t *end;               /* 52: y after the last pass */
} sg_dw4;

/* the taps of output pixels ox, ox+1 of one 3x3 window row pair-loaded from r (the row
 * below is wb bytes on): p, q += sums over the 3 rows.  Stride 1 reads columns ox..ox+3,
 * A = [x0, x1], B = [x2, x3]: ox = A.[w0,w1] + B.lo * w2, ox+1 = A.hi * w0 + B.[w1,w2];
 * stride 2 reads 2ox..2ox+5 and the second pixel starts at B.  Written out on M4/M7, each
 * row's two weight words loaded next to their use: GCC 12 keeps all six in registers in
 * the C loop and spills everything else.  The asm reads the plane without telling GCC:
 * volatile, it stays after the barrier that follows the plane's stores (SG_NN_BARRIER). */
#if defined(__ARM_FEATURE_DSP)
#define SG_DW_W(i) "ldrd %[wa], %[wz], [%[k], #" #i "*8]\n\t"
#define SG_DW_S1                                                                             \
  "ldr %[A], [%[r]]\n\t"                                                                      \
  "ldr %[B], [%[r], #4]\n\t"                                                                  \
  "smlad %[p], %[A], %[wa], %[p]\n\t"                                                         \
  "smlatb %[q], %[A], %[wa], %[q]\n\t"                                                        \
  "smlabt %[p], %[B], %[wz], %[p]\n\t"                                                        \
  "smlad %[q], %[B], %[wz], %[q]\n\t"
#define SG_DW_S2                                                                             \
  "ldr %[A], [%[r]]\n\t"                                                                      \
  "ldr %[B], [%[r], #4]\n\t"                                                                  \
  "ldr %[C], [%[r], #8]\n\t"                                                                  \
  "smlad %[p], %[A], %[wa], %[p]\n\t"                                                         \
  "smlabt %[p], %[B], %[wz], %[p]\n\t"                                                        \
  "smlad %[q], %[B], %[wa], %[q]\n\t"                                                         \
  "smlabt %[q], %[C], %[wz], %[q]\n\t"
#define SG_DW_NEXT "add %[r], %[r], %[wb]\n\t"
SG_INLINE void sg_dw_pair_s1(const int16_t *r, int32_t wb, const sg_w3x3 *k, int32_t *pp,
                             int32_t *qq) {
  int32_t p = *pp, q = *qq;
  uint32_t A, B, wa, wz;
  __asm__ volatile(SG_DW_W(0) SG_DW_S1 SG_DW_NEXT SG_DW_W(1) SG_DW_S1 SG_DW_NEXT SG_DW_W(2)
                   SG_DW_S1
                   : [p] "+r"(p), [q] "+r"(q), [A] "=&r"(A), [B] "=&r"(B), [wa] "=&r"(wa),
                     [wz] "=&r"(wz), [r] "+r"(r)
                   : [wb] "r"(wb), [k] "r"(k), "m"(*k));
  *pp = p;
  *qq = q;
}
SG_INLINE void sg_dw_pair_s2(const int16_t *r, int32_t wb, const sg_w3x3 *k, int32_t *pp,
                             int32_t *qq) {
  int32_t p = *pp, q = *qq;
  uint32_t A, B, C, wa, wz;
  __asm__ volatile(SG_DW_W(0) SG_DW_S2 SG_DW_NEXT SG_DW_W(1) SG_DW_S2 SG_DW_NEXT SG_DW_W(2)
                   SG_DW_S2
                   : [p] "+r"(p), [q] "+r"(q), [A] "=&r"(A), [B] "=&r"(B), [C] "=&r"(C),
                     [wa] "=&r"(wa), [wz] "=&r"(wz), [r] "+r"(r)
                   : [wb] "r"(wb), [k] "r"(k), "m"(*k));
  *pp = p;
  *qq = q;
}

/* Stride 1, four output pixels per pass: the three words of columns ox..ox+5 of each window
 * row feed all four (8 SMLAxx per row), then the four are requantized (the fast form, as
 * sg_conv_pairs_w) and stored, in one asm loop over the row.  Its 14 registers hold the
 * accumulators, the loaded words, one weight row and the pointers; the rest is read from
 * ``e`` (sg_dw4). */
SG_INLINE void sg_dw4_s1(const int16_t *r, int32_t wb, int8_t *y, const sg_dw4 *e) {
  uint32_t p0, p1, p2, p3, A, B, C, wa, wz, t;
  __asm__ volatile(
      "1:\n\t"
      "ldr %[p0], [%[e], #24]\n\t"
      "mov %[p1], %[p0]\n\t"
      "mov %[p2], %[p0]\n\t"
      "mov %[p3], %[p0]\n\t"
      "mov %[t], %[r]\n\t"
#define SG_DW4_ROW(i)                                                                        \
      "ldrd %[wa], %[wz], [%[e], #" #i "*8]\n\t"                                             \
      "ldrd %[A], %[B], [%[t]]\n\t"                                                          \
      "ldr %[C], [%[t], #8]\n\t"                                                             \
      "smlad %[p0], %[A], %[wa], %[p0]\n\t"                                                  \
      "smlatb %[p1], %[A], %[wa], %[p1]\n\t"                                                 \
      "smlabt %[p0], %[B], %[wz], %[p0]\n\t"                                                 \
      "smlad %[p1], %[B], %[wz], %[p1]\n\t"                                                  \
      "smlad %[p2], %[B], %[wa], %[p2]\n\t"                                                  \
      "smlatb %[p3], %[B], %[wa], %[p3]\n\t"                                                 \
      "smlabt %[p2], %[C], %[wz], %[p2]\n\t"                                                 \
      "smlad %[p3], %[C], %[wz], %[p3]\n\t"
      SG_DW4_ROW(0) "add %[t], %[t], %[wb]\n\t" SG_DW4_ROW(1) "add %[t], %[t], %[wb]\n\t"
      SG_DW4_ROW(2)
#undef SG_DW4_ROW
      "ldrd %[wa], %[wz], [%[e], #28]\n\t"
      "ldr %[C], [%[e], #36]\n\t"
#define SG_DW4_RQ(p)                                                                         \
      "lsl %[t], %[" #p "], #1\n\t"                                                          \
      "smmlar %[t], %[t], %[wa], %[wz]\n\t"                                                  \
      "add %[t], %[t], %[" #p "], asr #31\n\t"                                               \
      "asr %[" #p "], %[t], %[C]\n\t"                                                        \
      "ssat %[" #p "], #8, %[" #p "]\n\t"
      SG_DW4_RQ(p0) SG_DW4_RQ(p1) SG_DW4_RQ(p2) SG_DW4_RQ(p3)
#undef SG_DW4_RQ
      "pkhbt %[p0], %[p0], %[p1], lsl #16\n\t"
      "pkhbt %[p2], %[p2], %[p3], lsl #16\n\t"
      "ldrd %[wa], %[wz], [%[e], #40]\n\t"
      "ssub16 %[t], %[p0], %[wa]\n\t"
      "sel %[p0], %[p0], %[wa]\n\t"
      "ssub16 %[t], %[wz], %[p0]\n\t"
      "sel %[p0], %[p0], %[wz]\n\t"
      "ssub16 %[t], %[p2], %[wa]\n\t"
      "sel %[p2], %[p2], %[wa]\n\t"
      "ssub16 %[t], %[wz], %[p2]\n\t"
      "sel %[p2], %[p2], %[wz]\n\t"
      "ldr %[C], [%[e], #48]\n\t"
      "strb %[p0], [%[y]]\n\t"
      "lsr %[p0], %[p0], #16\n\t"
      "strb %[p0], [%[y], %[C]]\n\t"
      "add %[y], %[y], %[C], lsl #1\n\t"
      "strb %[p2], [%[y]]\n\t"
      "lsr %[p2], %[p2], #16\n\t"
      "strb %[p2], [%[y], %[C]]\n\t"
      "add %[y], %[y], %[C], lsl #1\n\t"
      "add %[r], %[r], #8\n\t"
      "ldr %[C], [%[e], #52]\n\t"
      "cmp %[y], %[C]\n\t"
      "bne 1b"
      : [p0] "=&r"(p0), [p1] "=&r"(p1), [p2] "=&r"(p2), [p3] "=&r"(p3), [A] "=&r"(A),
        [B] "=&r"(B), [C] "=&r"(C), [wa] "=&r"(wa), [wz] "=&r"(wz), [t] "=&r"(t),
        [r] "+r"(r), [y] "+r"(y)
      : [wb] "r"(wb), [e] "r"(e)
      : "cc", "memory");
}
#else
SG_INLINE void sg_dw_pair_s1(const int16_t *r, int32_t wb, const sg_w3x3 *k, int32_t *pp,
                             int32_t *qq) {
  const uint32_t a[3] = {k->a0, k->a1, k->a2}, b[3] = {k->b0, k->b1, k->b2};
  for (int32_t i = 0; i < 3; ++i, r += wb / 2) {
    const uint32_t A = sg_ld32(r), B = sg_ld32(r + 2);
    *pp = sg_smlabt(B, b[i], sg_smlad(A, a[i], *pp));
    *qq = sg_smlad(B, b[i], sg_smlatb(A, a[i], *qq));
  }
}
SG_INLINE void sg_dw_pair_s2(const int16_t *r, int32_t wb, const sg_w3x3 *k, int32_t *pp,
                             int32_t *qq) {
  const uint32_t a[3] = {k->a0, k->a1, k->a2}, b[3] = {k->b0, k->b1, k->b2};
  for (int32_t i = 0; i < 3; ++i, r += wb / 2) {
    const uint32_t A = sg_ld32(r), B = sg_ld32(r + 2), C = sg_ld32(r + 4);
    *pp = sg_smlabt(B, b[i], sg_smlad(A, a[i], *pp));
    *qq = sg_smlabt(C, b[i], sg_smlad(B, a[i], *qq));
  }
}
#endif

SG_INLINE void sg_dw3x3_row(const int16_t *r0, int32_t wb, sg_dw4 *e, sg_rqc c, int8_t *y,
                            int32_t ow, int32_t sw, int32_t step, int32_t lo, int32_t hi,
                            uint32_t lo2, uint32_t hi2, const int fast) {
  const sg_w3x3 *k = &e->k;
  const int32_t b = e->b;
  int32_t ox = 0;
#if defined(__ARM_FEATURE_DSP)
  if (sw == 1 && fast && ow >= 4) {
    const int32_t n4 = ow & ~3;
    e->end = y + n4 * step;
    sg_dw4_s1(r0, wb, y, e);
    ox = n4;
    r0 += n4;
    y += n4 * step;
  }
#endif
  if (sw == 1) {
    for (; ox + 2 <= ow; ox += 2, r0 += 2, y += 2 * step) {
      int32_t p = b, q = b;
      sg_dw_pair_s1(r0, wb, k, &p, &q);
      sg_store2(y, y + step, sg_rq_val(p, c, fast), sg_rq_val(q, c, fast), lo, hi, lo2, hi2);
    }
  } else {
    for (; ox + 2 <= ow; ox += 2, r0 += 4, y += 2 * step) {
      int32_t p = b, q = b;
      sg_dw_pair_s2(r0, wb, k, &p, &q);
      sg_store2(y, y + step, sg_rq_val(p, c, fast), sg_rq_val(q, c, fast), lo, hi, lo2, hi2);
    }
  }
  const int16_t *r1 = r0 + wb / 2, *r2 = r1 + wb / 2;
  if (ox < ow) {
    int32_t p = sg_smlabt(sg_ld32(r0 + 2), k->b0, sg_smlad(sg_ld32(r0), k->a0, b));
    p = sg_smlabt(sg_ld32(r1 + 2), k->b1, sg_smlad(sg_ld32(r1), k->a1, p));
    p = sg_smlabt(sg_ld32(r2 + 2), k->b2, sg_smlad(sg_ld32(r2), k->a2, p));
    y[0] = sg_rq_out(p, c, lo, hi, fast);
  }
}

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
/* Helium: one output row of one channel, 3x3, stride 2, fast requantization, four output
 * pixels per vector (int32 lanes).  Per tap a gather of every other plane value, widened, and
 * one VMLA by the tap's weight; then in vector TFLite's rounding exactly: VQRDMULH is
 * SaturatingRoundingDoublingHighMul, h + (h >> 31) rounded right by VRSHL is the fast form of
 * RoundingDivideByPOT (sg_rq_val), + zy, clamped; the four bytes stored ``step`` apart.  The
 * tail is predicated: nothing is read or written past the row. */
SG_INLINE void sg_dw3x3_row_mve_s2(const int16_t *r0, int32_t wb, const int8_t *wc, int32_t b,
                                   sg_rqc c, int32_t zy, int8_t *y, int32_t ow, int32_t step,
                                   int32_t lo, int32_t hi) {
  const int32_t wr = wb / 2;     /* int16 between rows */
  const int32_t k0 = wc[0], k1 = wc[1], k2 = wc[2], k3 = wc[3], k4 = wc[4], k5 = wc[5];
  const int32_t k6 = wc[6], k7 = wc[7], k8 = wc[8];
  const uint32x4_t out = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)step);
  const uint32x4_t two = vidupq_n_u32(0, 2);
  const int32x4_t vlo = vdupq_n_s32(lo), vhi = vdupq_n_s32(hi);
  for (int32_t ox = 0; ox < ow; ox += 4, y += 4 * step) {
    const mve_pred16_t p = vctp32q((uint32_t)(ow - ox));
    const int16_t *r = r0 + 2 * ox;
    int32x4_t acc = vdupq_n_s32(b);
#define SG_TAP(q, k) acc = vmlaq_n_s32(acc, vldrhq_gather_shifted_offset_z_s32((q), two, p), (k))
    SG_TAP(r, k0);
    SG_TAP(r + 1, k1);
    SG_TAP(r + 2, k2);
    SG_TAP(r + wr, k3);
    SG_TAP(r + wr + 1, k4);
    SG_TAP(r + wr + 2, k5);
    SG_TAP(r + 2 * wr, k6);
    SG_TAP(r + 2 * wr + 1, k7);
    SG_TAP(r + 2 * wr + 2, k8);
#undef SG_TAP
    int32x4_t h = vqrdmulhq_n_s32(acc, c.m);
    h = vaddq_s32(h, vshrq_n_s32(h, 31));
    h = vaddq_n_s32(vrshlq_n_s32(h, -c.rs), zy);
    h = vminq_s32(vmaxq_s32(h, vlo), vhi);
    vstrbq_scatter_offset_p_s32(y, out, h, p);
  }
}

/* Stride 1 written out: GCC keeps the nine weights in registers it does not have and
 * predicates every load.  A tail-predicated loop (DLSTP/LETP: the last pass stores only the
 * pixels left), the weights read per window row from ``e``. */
typedef struct {
  int32_t w[9];              /*  0: the channel's weights */
  int32_t lo[4], hi[4];      /* 36, 52: the clamp, in vector */
  uint32_t out[4];           /* 68: byte offsets of 4 output pixels */
} sg_dwq;

SG_INLINE void sg_dw3x3_row_mve_s1(const int16_t *r, int32_t wb, const sg_dwq *e, int32_t b,
                                   int32_t m, int32_t rs, int32_t zy, int8_t *y, int32_t ow,
                                   int32_t step) {
  uint32_t wa, wz, wc;
  const int32_t step4 = 4 * step, rsn = -rs;
  __asm__ volatile(
      "vldrw.u32 q3, [%[e], #36]\n\t"
      "vldrw.u32 q4, [%[e], #52]\n\t"
      "vldrw.u32 q2, [%[e], #68]\n\t"
      "dlstp.32 lr, %[n]\n\t"
      "1:\n\t"
      "vdup.32 q0, %[b]\n\t"
#define SG_DWQ_ROW(o)                                                                         \
      "ldrd %[wa], %[wz], [%[e], #" #o "]\n\t"                                                  \
      "ldr %[wc], [%[e], #" #o "+8]\n\t"                                                        \
      "vldrh.s32 q1, [%[r]]\n\t"                                                                \
      "vmla.s32 q0, q1, %[wa]\n\t"                                                              \
      "vldrh.s32 q1, [%[r], #2]\n\t"                                                            \
      "vmla.s32 q0, q1, %[wz]\n\t"                                                              \
      "vldrh.s32 q1, [%[r], #4]\n\t"                                                            \
      "vmla.s32 q0, q1, %[wc]\n\t"
      SG_DWQ_ROW(0) "add %[r], %[r], %[wb]\n\t" SG_DWQ_ROW(12) "add %[r], %[r], %[wb]\n\t"
      SG_DWQ_ROW(24)
#undef SG_DWQ_ROW
      "sub %[r], %[r], %[wb], lsl #1\n\t"
      "add %[r], %[r], #8\n\t"
      "vqrdmulh.s32 q0, q0, %[m]\n\t"
      "vshr.s32 q1, q0, #31\n\t"
      "vadd.i32 q0, q0, q1\n\t"
      "vrshl.s32 q0, %[rsn]\n\t"
      "vadd.i32 q0, q0, %[zy]\n\t"
      "vmax.s32 q0, q0, q3\n\t"
      "vmin.s32 q0, q0, q4\n\t"
      "vstrb.32 q0, [%[y], q2]\n\t"
      "add %[y], %[y], %[step4]\n\t"
      "letp lr, 1b"
      : [wa] "=&r"(wa), [wz] "=&r"(wz), [wc] "=&r"(wc), [r] "+r"(r), [y] "+r"(y)
      : [e] "r"(e), [wb] "r"(wb), [b] "r"(b), [m] "r"(m), [rsn] "r"(rsn), [zy] "r"(zy),
        [step4] "r"(step4), [n] "r"(ow)
      : "lr", "memory", "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9");
}
#endif

/* -- depthwise, four channels per pass from the NHWC input ----------------------------- */
/* Small planes cost more to convert and to set up per channel than they save: a 3x3 layer of
 * few pixels and a multiple of 4 channels (nnlib.quad_kernel) reads the input as it is.  Per
 * tap, one word holds the 4 channels' inputs: SXTB16 gives channels 0, 2 and 1, 3 as
 * halfwords, less the input zero point (SSUB16), against the tap's weights packed the same
 * way (once per quad, on the stack), SMLABB/SMLATT.  Only the taps inside the input are
 * visited: the accumulators start at bias + zx * (the channel's weight sum), what the
 * padding adds, and each tap inside adds (x - zx) w. */
#if defined(__ARM_FEATURE_DSP)
#define sg_sx16_even(v) ((uint32_t)__sxtb16(v))
#define sg_sx16_odd(v) sg_sxtb16_ror8(v)
#define sg_ssub16(a, b) ((uint32_t)__ssub16((int16x2_t)(a), (int16x2_t)(b)))
#else
SG_INLINE uint32_t sg_sx16_even(uint32_t v) {
  return sg_pack16((int8_t)(v & 0xffu), (int8_t)((v >> 16) & 0xffu));
}
SG_INLINE uint32_t sg_sx16_odd(uint32_t v) { return sg_sx16_even(v >> 8); }
SG_INLINE uint32_t sg_ssub16(uint32_t a, uint32_t b) {
  return sg_pack16((int16_t)(a & 0xffffu) - (int16_t)(b & 0xffffu),
                   (int16_t)(a >> 16) - (int16_t)(b >> 16));
}
#endif

SG_INLINE void sg_dw_quads(const sg_conv_shape *s, const int8_t *x, const int8_t *restrict w,
                           const int32_t *restrict bias, const int32_t *restrict mult,
                           const int32_t *restrict rsh, int8_t *y, const int fast) {
  const int32_t c = s->c, ih = s->ih, iw = s->iw, oh = s->oh, ow = s->ow;
  const int32_t sh = s->sh, sw = s->sw, pt = s->pt, pl = s->pl, zx = s->zx, zy = s->zy;
  const int32_t lo = s->lo, hi = s->hi;
  const uint32_t lo2 = sg_pack16(lo, lo), hi2 = sg_pack16(hi, hi), zx2 = sg_pack16(zx, zx);
  uint32_t wk[18];   /* per tap: [w0, w2], [w1, w3] of the quad's channels */
  for (int32_t c0 = 0; c0 < c; c0 += 4) {
    const int8_t *wq = w + c0 * 9;
    int32_t b[4] = {0, 0, 0, 0};
    for (int32_t t = 0; t < 9; ++t) {
      wk[2 * t] = sg_pack16(wq[t], wq[18 + t]);
      wk[2 * t + 1] = sg_pack16(wq[9 + t], wq[27 + t]);
      b[0] += wq[t];
      b[1] += wq[9 + t];
      b[2] += wq[18 + t];
      b[3] += wq[27 + t];
    }
    /* a padded tap adds zx w: every tap does, and those inside add (x - zx) w on top */
    for (int32_t i = 0; i < 4; ++i) b[i] = bias[c0 + i] + zx * b[i];
    const sg_rqc r0 = sg_rq_channel(mult[c0], rsh[c0], zy, fast);
    const sg_rqc r1 = sg_rq_channel(mult[c0 + 1], rsh[c0 + 1], zy, fast);
    const sg_rqc r2 = sg_rq_channel(mult[c0 + 2], rsh[c0 + 2], zy, fast);
    const sg_rqc r3 = sg_rq_channel(mult[c0 + 3], rsh[c0 + 3], zy, fast);
    int8_t *yq = y + c0;
    for (int32_t oy = 0; oy < oh; ++oy) {
      const int32_t iy0 = oy * sh - pt;
      const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = ih - iy0 < 3 ? ih - iy0 : 3;
      for (int32_t ox = 0; ox < ow; ++ox, yq += c) {
        const int32_t ix0 = ox * sw - pl;
        const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = iw - ix0 < 3 ? iw - ix0 : 3;
        int32_t a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3];
        for (int32_t ky = ky0; ky < ky1; ++ky) {
          const int8_t *xp = x + ((iy0 + ky) * iw + ix0 + kx0) * c + c0;
          const uint32_t *k = wk + 2 * (3 * ky + kx0);
          for (int32_t kx = kx0; kx < kx1; ++kx, xp += c, k += 2) {
            uint32_t v;
            memcpy(&v, xp, 4);
            const uint32_t e = sg_ssub16(sg_sx16_even(v), zx2);
            const uint32_t o = sg_ssub16(sg_sx16_odd(v), zx2);
            a0 = sg_smlabb(e, k[0], a0);
            a2 = sg_smlatt(e, k[0], a2);
            a1 = sg_smlabb(o, k[1], a1);
            a3 = sg_smlatt(o, k[1], a3);
          }
        }
        sg_store2(yq, yq + 1, sg_rq_val(a0, r0, fast), sg_rq_val(a1, r1, fast), lo, hi, lo2,
                  hi2);
        sg_store2(yq + 2, yq + 3, sg_rq_val(a2, r2, fast), sg_rq_val(a3, r3, fast), lo, hi,
                  lo2, hi2);
      }
    }
  }
}

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
/* Helium, sg_dw_quads in vector (fast requantization): per tap the quad's 4 inputs as int32
 * less zx, times the tap's 4 weights (a vector per tap, filled once per quad), added to the
 * accumulators, which start at bias + zx * (the weight sum) as in sg_dw_quads; then the
 * requantization of sg_dw3x3_row_mve and one 4-byte store.  Same order as sg_dw_quads. */
SG_INLINE void sg_dw_quads_mve(const sg_conv_shape *s, const int8_t *x, const int8_t *w,
                               const int32_t *bias, const int32_t *mult, const int32_t *rsh,
                               int8_t *y) {
  const int32_t c = s->c, ih = s->ih, iw = s->iw, oh = s->oh, ow = s->ow;
  const int32_t sh = s->sh, sw = s->sw, pt = s->pt, pl = s->pl, zx = s->zx, zy = s->zy;
  const int32x4_t vlo = vdupq_n_s32(s->lo), vhi = vdupq_n_s32(s->hi);
  const uint32x4_t nine = vidupq_n_u32(0, 1) * 9u;      /* channel i's weights */
  int32x4_t wk[9];
  for (int32_t c0 = 0; c0 < c; c0 += 4) {
    int32x4_t sum = vdupq_n_s32(0);
    for (int32_t t = 0; t < 9; ++t) {
      wk[t] = vldrbq_gather_offset_s32(w + c0 * 9 + t, nine);
      sum = vaddq_s32(sum, wk[t]);
    }
    const int32x4_t b = vmlaq_n_s32(vldrwq_s32(bias + c0), sum, zx);
    const int32x4_t m = vldrwq_s32(mult + c0), r = vnegq_s32(vldrwq_s32(rsh + c0));
    int8_t *yq = y + c0;
    for (int32_t oy = 0; oy < oh; ++oy) {
      const int32_t iy0 = oy * sh - pt;
      const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = ih - iy0 < 3 ? ih - iy0 : 3;
      for (int32_t ox = 0; ox < ow; ++ox, yq += c) {
        const int32_t ix0 = ox * sw - pl;
        const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = iw - ix0 < 3 ? iw - ix0 : 3;
        int32x4_t a = b;
        for (int32_t ky = ky0; ky < ky1; ++ky) {
          const int8_t *xp = x + ((iy0 + ky) * iw + ix0 + kx0) * c + c0;
          for (int32_t kx = kx0; kx < kx1; ++kx, xp += c)
            a = vaddq_s32(a, vmulq_s32(vsubq_n_s32(vldrbq_s32(xp), zx), wk[3 * ky + kx]));
        }
        int32x4_t h = vqrdmulhq_s32(a, m);
        h = vrshlq_s32(vaddq_s32(h, vshrq_n_s32(h, 31)), r);
        vstrbq_s32(yq, vminq_s32(vmaxq_s32(vaddq_n_s32(h, zy), vlo), vhi));
      }
    }
  }
}
#endif

SG_INLINE void sg_dwconv_body(const sg_conv_shape *s, const int8_t *x,
                              const int8_t *restrict w, const int32_t *restrict bias,
                              const int32_t *restrict mult, const int32_t *restrict rsh,
                              int8_t *y, int16_t *restrict band, const int fast) {
  const int32_t c = s->c, kh = s->kh, kw = s->kw, kk = kh * kw, oh = s->oh, ow = s->ow;
  const int32_t sh = s->sh, sw = s->sw, zy = s->zy, lo = s->lo, hi = s->hi;
  const uint32_t lo2 = sg_pack16(lo, lo), hi2 = sg_pack16(hi, hi);
  if (band) {
    /* cb channels' planes of s->rows rows each: the whole input height when it fits (then
     * several channels at a time), else bands of output rows of one channel */
    const int32_t width = sg_band_width(s), stride = s->rows * width, blk = s->cb;
    const int32_t band_oh = (s->rows - 3) / sh + 1;
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
    sg_dwq q;
    for (int32_t i = 0; i < 4; ++i) {
      q.lo[i] = lo;
      q.hi[i] = hi;
      q.out[i] = (uint32_t)(i * c);
    }
#endif
    for (int32_t c0 = 0; c0 < c; c0 += blk) {
      const int32_t cb = c - c0 < blk ? c - c0 : blk;
      for (int32_t oy0 = 0; oy0 < oh; oy0 += band_oh) {
        const int32_t n_oy = oh - oy0 < band_oh ? oh - oy0 : band_oh;
        sg_planes(s, x, c0, cb, oy0 * sh, (n_oy - 1) * sh + 3, band, stride, width);
        SG_NN_BARRIER();
        for (int32_t ci = 0; ci < cb; ++ci) {
          const int32_t ch = c0 + ci;
          const sg_rqc rq = sg_rq_channel(mult[ch], rsh[ch], zy, fast);
          const int16_t *pc = band + ci * stride;
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
          if (fast && sw == 1) {
            for (int32_t t = 0; t < 9; ++t) q.w[t] = w[ch * 9 + t];
            for (int32_t oy = oy0; oy < oy0 + n_oy; ++oy)
              sg_dw3x3_row_mve_s1(pc + (oy - oy0) * width, 2 * width, &q, bias[ch], rq.m,
                                  rq.rs, zy, y + oy * ow * c + ch, ow, c);
            continue;
          }
          if (fast) {
            for (int32_t oy = oy0; oy < oy0 + n_oy; ++oy)
              sg_dw3x3_row_mve_s2(pc + (oy - oy0) * 2 * width, 2 * width, w + ch * 9,
                                  bias[ch], rq, zy, y + oy * ow * c + ch, ow, c, lo, hi);
            continue;
          }
#endif
          sg_dw4 e = {sg_pack3x3(w + ch * 9), bias[ch], rq.m, rq.add, rq.rs, lo2, hi2, c, 0};
          for (int32_t oy = oy0; oy < oy0 + n_oy; ++oy)
            sg_dw3x3_row(pc + (oy - oy0) * sh * width, 2 * width, &e, rq,
                         y + oy * ow * c + ch, ow, sw, c, lo, hi, lo2, hi2, fast);
        }
      }
    }
    return;
  }
  if (s->cb == 4) {     /* nnlib.quad_kernel: 3x3, channels a multiple of 4 */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
    if (fast) {
      sg_dw_quads_mve(s, x, w, bias, mult, rsh, y);
      return;
    }
#endif
    sg_dw_quads(s, x, w, bias, mult, rsh, y, fast);
    return;
  }
  const int32_t ih = s->ih, iw = s->iw, pt = s->pt, pl = s->pl, zx = s->zx;
  for (int32_t ch = 0; ch < c; ++ch) {
    const int8_t *wc = w + ch * kk;
    const sg_rqc rq = sg_rq_channel(mult[ch], rsh[ch], zy, fast);
    for (int32_t oy = 0; oy < oh; ++oy) {
      for (int32_t ox = 0; ox < ow; ++ox) {
        int32_t acc = bias[ch];
        for (int32_t ky = 0; ky < kh; ++ky) {
          const int32_t iy = oy * sh - pt + ky;
          for (int32_t kx = 0; kx < kw; ++kx) {
            const int32_t ix = ox * sw - pl + kx;
            const int32_t v = (iy >= 0 && iy < ih && ix >= 0 && ix < iw)
                                  ? x[(iy * iw + ix) * c + ch] : zx;
            acc += v * wc[ky * kw + kx];
          }
        }
        y[(oy * ow + ox) * c + ch] = sg_rq_out(acc, rq, lo, hi, fast);
      }
    }
  }
}

/* band: scratch of cb planes of rows x sg_band_width(s) int16 for 3x3 windows with stride
 * 1 or 2, NULL for the plain loop */
SG_NN_KERNEL(sg_dwconv_s8, sg_dwconv_body, int16_t)

#endif
