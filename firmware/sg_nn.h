/* sg_nn.h: whole int8 convolutions, requantization included, for the Cortex-M firmware.
 *
 * compile/backends/cortexm/nnlib.py replaces each quantized CONV_2D / DEPTHWISE_CONV_2D of a
 * model (convolution, bias, TFLite's per-channel MultiplyByQuantizedMultiplier, output zero
 * point, activation clamp) by one call of a kernel here, with the layer's shape in a
 * ``sg_conv_shape`` and its constants laid out at compile time:
 *
 *   sg_conv_s8     any window and stride: OHWI weights, each output pixel's window gathered
 *                  into a scratch row (pad taps hold the input zero point) unless it is one
 *                  contiguous pixel (1x1, no padding); 2 pixels x 2 output channels per
 *                  sg_dot22_s8 call (SMLAD / Helium / C, sg_kernels.h).
 *   sg_dwconv_s8   depthwise, channel multiplier 1, weights [C][KH][KW].  3x3 windows with
 *                  stride 1 or 2 read the input as planes of ``cb`` channels at a time,
 *                  widened to int16 with the padding in place, so that two neighbouring
 *                  taps of one channel are one 32-bit word: 2 taps per SMLAD, two output
 *                  pixels per pass sharing the loads, each channel's weights packed once.
 *                  Other windows take a plain loop.
 *
 * Order of reads and writes (the memory plan lets an output overlap the input it reads, from
 * the order of the reference TIR nnlib.py builds for each call): sg_conv_s8 goes through the
 * output pixels in pairs, in raster order, all output channels of a pair before the next;
 * sg_dwconv_s8 channel by channel, each channel's output rows top to bottom, pixels left to
 * right.  Inputs may be read earlier than that, never later.
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
  int32_t cb;                      /* sg_dwconv_s8: channels per block */
  int32_t fast;                    /* the requantization's fast form holds (sg_rq_out) */
} sg_conv_shape;

#define SG_NN_FN static __attribute__((noinline, unused))

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

/* A layer's requantization, per output channel.  ``fast`` layers (nnlib.py checks at
 * compile time) have |acc| < 2^30 for every input, 1 <= rs <= 22 on every channel: then
 * (acc * m + 2^30) >> 31 = SMMULR(2 acc, m), and with add = 2^(rs-1) + (zy << rs) (no
 * overflow: |h| < 2^30) the rounding shift and the zero point are
 * (h + (h >> 31) + add) >> rs. */
typedef struct {
  int32_t m, rs, add;
} sg_rqc;

SG_INLINE sg_rqc sg_rq_channel(int32_t m, int32_t rs, int32_t zy, int fast) {
  sg_rqc c = {m, rs, fast ? (int32_t)((uint32_t)(2 * zy + 1) << (rs - 1)) : zy};
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
  if (fast) {
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
      memset(dst, s->zx, (size_t)(s->kw * s->c));
      dst += s->kw * s->c;
      continue;
    }
    int32_t kx = 0;
    for (; kx < s->kw && ix0 + kx < 0; ++kx, dst += s->c) memset(dst, s->zx, (size_t)s->c);
    int32_t inside = s->kw - kx;
    if (ix0 + s->kw > s->iw) inside -= ix0 + s->kw - s->iw;
    if (inside > 0) {
      memcpy(dst, x + (iy * s->iw + ix0 + kx) * s->c, (size_t)(inside * s->c));
      dst += inside * s->c;
      kx += inside;
    }
    for (; kx < s->kw; ++kx, dst += s->c) memset(dst, s->zx, (size_t)s->c);
  }
  return col;
}

SG_INLINE void sg_conv_body(const sg_conv_shape *s, const int8_t *restrict x,
                            const int8_t *restrict w, const int32_t *restrict bias,
                            const int32_t *restrict mult, const int32_t *restrict rsh,
                            int8_t *restrict y, int8_t *restrict col, const int fast) {
  const int32_t k = s->kh * s->kw * s->c, n = s->oh * s->ow, no = s->o;
  const int32_t zy = s->zy, lo = s->lo, hi = s->hi;
  const uint32_t lo2 = sg_pack16(lo, lo), hi2 = sg_pack16(hi, hi);
  for (int32_t p = 0; p < n; p += 2) {
    const int32_t two = p + 1 < n;
    const int8_t *x0 = sg_window(s, x, p, col);
    const int8_t *x1 = two ? sg_window(s, x, p + 1, col ? col + k : col) : x0;
    int8_t *y0 = y + p * no, *y1 = y0 + no;
    int32_t o = 0;
    for (; o + 2 <= no; o += 2) {
      const int8_t *wo = w + o * k;
      int32_t acc[4] = {bias[o], bias[o + 1], bias[o], bias[o + 1]};
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
      y0[o] = sg_rq_out(sg_dot_s8(x0, wo, k, bias[o]), c0, lo, hi, fast);
      if (two) y1[o] = sg_rq_out(sg_dot_s8(x1, wo, k, bias[o]), c0, lo, hi, fast);
    }
  }
}

/* col: scratch of 2 * kh * kw * c bytes, NULL for a 1x1 window without padding */
SG_NN_KERNEL(sg_conv_s8, sg_conv_body, int8_t)

/* -- depthwise convolution ----------------------------------------------------------------- */

#if defined(__ARM_FEATURE_DSP)
#define sg_smlad(a, b, acc) ((int32_t)__smlad((a), (b), (acc)))
#define sg_smlabt(a, b, acc) ((int32_t)__smlabt((int32_t)(a), (int32_t)(b), (acc)))
#define sg_smlatb(a, b, acc) ((int32_t)__smlatb((int32_t)(a), (int32_t)(b), (acc)))
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
#endif

SG_INLINE uint32_t sg_ld32(const int16_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* channels [c0, c0 + cb) of the input, widened to int16, one plane per channel:
 * plane[c][r][j] = x[r - pt][j - pl][c0 + c], zx outside the input */
SG_INLINE void sg_planes(const sg_conv_shape *s, const int8_t *restrict x, int32_t c0,
                         int32_t cb, int16_t *restrict plane, int32_t rows, int32_t width) {
  const int32_t ih = s->ih, iw = s->iw, c = s->c, pt = s->pt, pl = s->pl;
  const int32_t cols = iw < width - pl ? iw : width - pl;   /* input columns kept */
  const int16_t zx = (int16_t)s->zx;
  for (int32_t ci = 0; ci < cb; ++ci) {
    int16_t *dst = plane + ci * rows * width;
    const int8_t *src = x + c0 + ci;
    for (int32_t r = 0; r < rows; ++r, dst += width) {
      const int32_t iy = r - pt;
      if (iy < 0 || iy >= ih) {
        for (int32_t j = 0; j < width; ++j) dst[j] = zx;
        continue;
      }
      const int8_t *in = src + iy * iw * c;
      int32_t j = 0;
      for (; j < pl; ++j) dst[j] = zx;
      for (int32_t ix = 0; ix < cols; ++ix, in += c) dst[j++] = *in;
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

SG_INLINE void sg_dw3x3_row(const int16_t *r0, const int16_t *r1, const int16_t *r2,
                            sg_w3x3 k, int32_t b, sg_rqc c, int8_t *restrict y,
                            int32_t ow, int32_t sw, int32_t step, int32_t lo, int32_t hi,
                            uint32_t lo2, uint32_t hi2, const int fast) {
  const uint32_t a0 = k.a0, b0 = k.b0, a1 = k.a1, b1 = k.b1, a2 = k.a2, b2 = k.b2;
  int32_t ox = 0;
  if (sw == 1) {
    /* pixels ox, ox+1 read columns ox..ox+3: words A = [x0, x1], B = [x2, x3];
     * ox: A.[w0,w1] + B.lo * w2, ox+1: A.hi * w0 + B.[w1,w2] */
    for (; ox + 2 <= ow; ox += 2, r0 += 2, r1 += 2, r2 += 2, y += 2 * step) {
      uint32_t A = sg_ld32(r0), B = sg_ld32(r0 + 2);
      int32_t p = sg_smlabt(B, b0, sg_smlad(A, a0, b));
      int32_t q = sg_smlad(B, b0, sg_smlatb(A, a0, b));
      A = sg_ld32(r1);
      B = sg_ld32(r1 + 2);
      p = sg_smlabt(B, b1, sg_smlad(A, a1, p));
      q = sg_smlad(B, b1, sg_smlatb(A, a1, q));
      A = sg_ld32(r2);
      B = sg_ld32(r2 + 2);
      p = sg_smlabt(B, b2, sg_smlad(A, a2, p));
      q = sg_smlad(B, b2, sg_smlatb(A, a2, q));
      sg_store2(y, y + step, sg_rq_val(p, c, fast), sg_rq_val(q, c, fast), lo, hi, lo2, hi2);
    }
  } else {
    /* stride 2: pixel ox reads columns 2ox..2ox+2, A = [x0, x1], B = [x2, x3];
     * the next pixel starts at B */
    for (; ox + 2 <= ow; ox += 2, r0 += 4, r1 += 4, r2 += 4, y += 2 * step) {
      uint32_t A = sg_ld32(r0), B = sg_ld32(r0 + 2), C = sg_ld32(r0 + 4);
      int32_t p = sg_smlabt(B, b0, sg_smlad(A, a0, b));
      int32_t q = sg_smlabt(C, b0, sg_smlad(B, a0, b));
      A = sg_ld32(r1);
      B = sg_ld32(r1 + 2);
      C = sg_ld32(r1 + 4);
      p = sg_smlabt(B, b1, sg_smlad(A, a1, p));
      q = sg_smlabt(C, b1, sg_smlad(B, a1, q));
      A = sg_ld32(r2);
      B = sg_ld32(r2 + 2);
      C = sg_ld32(r2 + 4);
      p = sg_smlabt(B, b2, sg_smlad(A, a2, p));
      q = sg_smlabt(C, b2, sg_smlad(B, a2, q));
      sg_store2(y, y + step, sg_rq_val(p, c, fast), sg_rq_val(q, c, fast), lo, hi, lo2, hi2);
    }
  }
  if (ox < ow) {
    int32_t p = sg_smlabt(sg_ld32(r0 + 2), b0, sg_smlad(sg_ld32(r0), a0, b));
    p = sg_smlabt(sg_ld32(r1 + 2), b1, sg_smlad(sg_ld32(r1), a1, p));
    p = sg_smlabt(sg_ld32(r2 + 2), b2, sg_smlad(sg_ld32(r2), a2, p));
    y[0] = sg_rq_out(p, c, lo, hi, fast);
  }
}

SG_INLINE void sg_dwconv_body(const sg_conv_shape *s, const int8_t *restrict x,
                              const int8_t *restrict w, const int32_t *restrict bias,
                              const int32_t *restrict mult, const int32_t *restrict rsh,
                              int8_t *restrict y, int16_t *restrict band, const int fast) {
  const int32_t c = s->c, kh = s->kh, kw = s->kw, kk = kh * kw, oh = s->oh, ow = s->ow;
  const int32_t sh = s->sh, sw = s->sw, zy = s->zy, lo = s->lo, hi = s->hi, blk = s->cb;
  const uint32_t lo2 = sg_pack16(lo, lo), hi2 = sg_pack16(hi, hi);
  if (band) {
    const int32_t width = sg_band_width(s), rows = (oh - 1) * sh + 3;
    for (int32_t c0 = 0; c0 < c; c0 += blk) {
      const int32_t cb = c - c0 < blk ? c - c0 : blk;
      sg_planes(s, x, c0, cb, band, rows, width);
      for (int32_t ci = 0; ci < cb; ++ci) {
        const int32_t ch = c0 + ci;
        const sg_rqc rq = sg_rq_channel(mult[ch], rsh[ch], zy, fast);
        const sg_w3x3 k = sg_pack3x3(w + ch * 9);
        const int32_t b = bias[ch];
        const int16_t *pc = band + ci * rows * width;
        for (int32_t oy = 0; oy < oh; ++oy) {
          const int16_t *r0 = pc + oy * sh * width;
          sg_dw3x3_row(r0, r0 + width, r0 + 2 * width, k, b, rq, y + oy * ow * c + ch, ow,
                       sw, c, lo, hi, lo2, hi2, fast);
        }
      }
    }
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

/* band: scratch of cb planes of ((oh - 1) * sh + 3) x sg_band_width(s) int16 for 3x3
 * windows with stride 1 or 2, NULL for the plain loop */
SG_NN_KERNEL(sg_dwconv_s8, sg_dwconv_body, int16_t)

#endif
