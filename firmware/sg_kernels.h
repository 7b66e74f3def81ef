/* sandglass kernel helpers: the calls that compile/backends/cortexm/intrin.py tensorizes into model.c.
 *
 * sg_dot_s8(x, w, n, acc) = acc + sum_{i<n} x[i] * w[i]   (int8 x int8 -> int32, exact)
 * sg_dot2_s8(x, w, ws, n, acc): acc[r] += sum_{i<n} x[i] * w[r * ws + i] for r = 0, 1 (two
 *                            weight rows ws apart, e.g. two output channels, share x)
 * sg_dot22_s8(x, xs, w, ws, n, acc, s): acc[p * s + r] += sum_{i<n} x[p * xs + i] * w[r * ws + i]
 *                            for p, r = 0, 1 (2 pixels x 2 output channels of a convolution;
 *                            xs, ws: the input's pixel and the weights' row stride as laid out)
 *
 * The path is chosen by the compiler's -mcpu (the board file's cpu.flags):
 *   __ARM_FEATURE_MVE  Cortex-M55 Helium: VMLADAVA.S8, 16 MACs per instruction, the tail
 *                      predicated with VCTP.8 (no scalar remainder loop);
 *   __ARM_FEATURE_DSP  Cortex-M4/M7: one 32-bit load gives 4 int8, SXTB16 (on the word and
 *                      on it rotated by 8) gives two 2 x int16 pairs, SMLAD does 2 MACs;
 *   otherwise          plain C (host builds; tests/test_cortexm.py checks it against numpy).
 * Integer only; no alignment needed (Armv7-M/Armv8-M LDR and VLDRB accept any address).
 */
#ifndef SG_KERNELS_H
#define SG_KERNELS_H

#include <stdint.h>
#include <string.h>

/* always inlined, also at -O2: at each call site of model.c the length and the strides are
 * constants that the loops then specialize on */
#define SG_INLINE static inline __attribute__((always_inline))

/* acc + x * y with int32 x, y in int64: cemit prints the requantization's
 * (acc + bias) * multiplier + nudge as two of these.  SMLAL as inline assembly on Arm: GCC
 * folds the plain C of two of them back into a 64 x 64-bit multiply */
SG_INLINE int64_t sg_mac_s32(int64_t acc, int32_t x, int32_t y) {
#if defined(__arm__) && defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 2
  __asm__("smlal %Q0, %R0, %1, %2" : "+r"(acc) : "r"(x), "r"(y));
  return acc;
#else
  return acc + (int64_t)x * y;
#endif
}

/* min(max(x, -128), 127): the int8 clamp after requantization (cemit prints it) */
#if defined(__ARM_FEATURE_SAT)
#include <arm_acle.h>
#define sg_sat_s8(x) __ssat((x), 8)
#else
SG_INLINE int32_t sg_sat_s8(int32_t x) { return x < -128 ? -128 : x > 127 ? 127 : x; }
#endif

#if defined(__ARM_FEATURE_DSP)
/* SXTB16 of the word rotated by 8 (bytes 1 and 3) in one instruction; GCC 12's arm_acle.h
 * has no __ror and does not fold a rotate into __sxtb16 */
SG_INLINE uint32_t sg_sxtb16_ror8(uint32_t v) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
}
#endif

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>

SG_INLINE int32_t sg_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc) {
  for (; n > 0; n -= 16, x += 16, w += 16) {
    mve_pred16_t p = vctp8q((uint32_t)n);
    acc = vmladavaq_p_s8(acc, vldrbq_z_s8(x, p), vldrbq_z_s8(w, p), p);
  }
  return acc;
}

SG_INLINE void sg_dot2_s8(const int8_t *x, const int8_t *w, int32_t ws, int32_t n,
                           int32_t *acc) {
  const int8_t *w1 = w + ws;
  int32_t a0 = acc[0], a1 = acc[1];
  for (; n > 0; n -= 16, x += 16, w += 16, w1 += 16) {
    mve_pred16_t p = vctp8q((uint32_t)n);
    int8x16_t vx = vldrbq_z_s8(x, p);
    a0 = vmladavaq_p_s8(a0, vx, vldrbq_z_s8(w, p), p);
    a1 = vmladavaq_p_s8(a1, vx, vldrbq_z_s8(w1, p), p);
  }
  acc[0] = a0;
  acc[1] = a1;
}

SG_INLINE void sg_dot22_s8(const int8_t *x, int32_t xs, const int8_t *w, int32_t ws,
                           int32_t n, int32_t *acc, int32_t stride) {
  const int8_t *x1 = x + xs, *w1 = w + ws;
  int32_t a00 = acc[0], a01 = acc[1], a10 = acc[stride], a11 = acc[stride + 1];
  for (; n > 0; n -= 16, x += 16, x1 += 16, w += 16, w1 += 16) {
    mve_pred16_t p = vctp8q((uint32_t)n);
    int8x16_t vx0 = vldrbq_z_s8(x, p), vx1 = vldrbq_z_s8(x1, p);
    int8x16_t vw0 = vldrbq_z_s8(w, p), vw1 = vldrbq_z_s8(w1, p);
    a00 = vmladavaq_p_s8(a00, vx0, vw0, p);
    a01 = vmladavaq_p_s8(a01, vx0, vw1, p);
    a10 = vmladavaq_p_s8(a10, vx1, vw0, p);
    a11 = vmladavaq_p_s8(a11, vx1, vw1, p);
  }
  acc[0] = a00;
  acc[1] = a01;
  acc[stride] = a10;
  acc[stride + 1] = a11;
}

#elif defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

SG_INLINE int32_t sg_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc) {
  for (; n >= 4; n -= 4, x += 4, w += 4) {
    uint32_t xa, wa;
    memcpy(&xa, x, 4); /* one LDR */
    memcpy(&wa, w, 4);
    acc = __smlad(__sxtb16(xa), __sxtb16(wa), acc);                     /* bytes 0, 2 */
    acc = __smlad(sg_sxtb16_ror8(xa), sg_sxtb16_ror8(wa), acc); /* bytes 1, 3 */
  }
  for (; n > 0; --n) acc += (int32_t)*x++ * (int32_t)*w++;
  return acc;
}

SG_INLINE void sg_dot2_s8(const int8_t *x, const int8_t *w, int32_t ws, int32_t n,
                           int32_t *acc) {
  const int8_t *w1 = w + ws;
  int32_t a0 = acc[0], a1 = acc[1];
  for (; n >= 4; n -= 4, x += 4, w += 4, w1 += 4) {
    uint32_t xa, wa, wb;
    memcpy(&xa, x, 4); /* the input word is loaded and unpacked once for both rows */
    memcpy(&wa, w, 4);
    memcpy(&wb, w1, 4);
    uint32_t x02 = __sxtb16(xa), x13 = sg_sxtb16_ror8(xa);
    a0 = __smlad(x02, __sxtb16(wa), a0);
    a0 = __smlad(x13, sg_sxtb16_ror8(wa), a0);
    a1 = __smlad(x02, __sxtb16(wb), a1);
    a1 = __smlad(x13, sg_sxtb16_ror8(wb), a1);
  }
  for (; n > 0; --n, ++x) {
    a0 += (int32_t)*x * (int32_t)*w++;
    a1 += (int32_t)*x * (int32_t)*w1++;
  }
  acc[0] = a0;
  acc[1] = a1;
}

SG_INLINE void sg_dot22_s8(const int8_t *x, int32_t xs, const int8_t *w, int32_t ws,
                           int32_t n, int32_t *acc, int32_t stride) {
  const int8_t *x1 = x + xs, *w1 = w + ws;
  int32_t a00 = acc[0], a01 = acc[1], a10 = acc[stride], a11 = acc[stride + 1];
  for (; n >= 4; n -= 4, x += 4, x1 += 4, w += 4, w1 += 4) {
    uint32_t wa, wb, xa;
    memcpy(&wa, w, 4);
    memcpy(&wb, w1, 4);
    uint32_t wa02 = __sxtb16(wa), wa13 = sg_sxtb16_ror8(wa);
    uint32_t wb02 = __sxtb16(wb), wb13 = sg_sxtb16_ror8(wb);
    memcpy(&xa, x, 4);
    uint32_t x02 = __sxtb16(xa), x13 = sg_sxtb16_ror8(xa);
    a00 = __smlad(x13, wa13, __smlad(x02, wa02, a00));
    a01 = __smlad(x13, wb13, __smlad(x02, wb02, a01));
    memcpy(&xa, x1, 4);
    x02 = __sxtb16(xa);
    x13 = sg_sxtb16_ror8(xa);
    a10 = __smlad(x13, wa13, __smlad(x02, wa02, a10));
    a11 = __smlad(x13, wb13, __smlad(x02, wb02, a11));
  }
  for (; n > 0; --n) {
    int32_t xv0 = *x++, xv1 = *x1++, wv0 = *w++, wv1 = *w1++;
    a00 += xv0 * wv0;
    a01 += xv0 * wv1;
    a10 += xv1 * wv0;
    a11 += xv1 * wv1;
  }
  acc[0] = a00;
  acc[1] = a01;
  acc[stride] = a10;
  acc[stride + 1] = a11;
}

#else

SG_INLINE int32_t sg_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc) {
  for (int32_t i = 0; i < n; ++i) acc += (int32_t)x[i] * (int32_t)w[i];
  return acc;
}

SG_INLINE void sg_dot2_s8(const int8_t *x, const int8_t *w, int32_t ws, int32_t n,
                           int32_t *acc) {
  acc[0] = sg_dot_s8(x, w, n, acc[0]);
  acc[1] = sg_dot_s8(x, w + ws, n, acc[1]);
}

SG_INLINE void sg_dot22_s8(const int8_t *x, int32_t xs, const int8_t *w, int32_t ws,
                           int32_t n, int32_t *acc, int32_t stride) {
  sg_dot2_s8(x, w, ws, n, acc);
  sg_dot2_s8(x + xs, w, ws, n, acc + stride);
}

#endif

#endif
