/* Helpers shared by the real-board seams (board_<name>.c): register access, the DWT cycle
 * counter extended to 64 bits, bounded waits on ready flags, and board_exit's body.
 *
 * Header-only (static inline), no CMSIS: every System Control Space address is cited from
 * the Armv7-M Architecture Reference Manual (ARM DDI 0403E, "ARMv7-M ARM" below).  The
 * Cortex-M7 cache maintenance lives here too because it only touches the SCS.  Addresses
 * and bit positions were checked against CMSIS core_cm7.h; the section numbers are as
 * remembered from DDI 0403E and worth a second look.
 *
 * UNTESTED ON SILICON: written and compile-checked without a board attached.
 */
#ifndef SG_BOARD_ARM_H
#define SG_BOARD_ARM_H

#include <stdint.h>

/* ---- register access ------------------------------------------------------------------- */

#define SG_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* Replace the bits of `mask` in `reg` by `value` (value already shifted into place). */
static inline void sg_reg_field(volatile uint32_t *reg, uint32_t mask, uint32_t value) {
  *reg = (*reg & ~mask) | (value & mask);
}

static inline void sg_dsb_isb(void) {
  __asm__ volatile("dsb 0xF\n\tisb 0xF" ::: "memory");
}

/* ---- DWT cycle counter ----------------------------------------------------------------- */

/* ARMv7-M ARM C1.6.5 DEMCR (Debug Exception and Monitor Control Register) */
#define SG_DEMCR        SG_REG(0xE000EDFCu)
#define SG_DEMCR_TRCENA (1u << 24) /* C1.6.5: enables the DWT and ITM */
/* ARMv7-M ARM C1.6.2 DHCSR (Debug Halting Control and Status Register) */
#define SG_DHCSR           SG_REG(0xE000EDF0u)
#define SG_DHCSR_C_DEBUGEN (1u << 0) /* C1.6.2: halting debug enabled = a debugger is attached */
/* ARMv7-M ARM C1.8.7 DWT_CTRL and C1.8.8 DWT_CYCCNT */
#define SG_DWT_CTRL           SG_REG(0xE0001000u)
#define SG_DWT_CTRL_CYCCNTENA (1u << 0)  /* C1.8.7: CYCCNT counts */
#define SG_DWT_CTRL_NOCYCCNT  (1u << 25) /* C1.8.7: reads 1 when CYCCNT is not implemented */
#define SG_DWT_CYCCNT         SG_REG(0xE0001004u)
/* Cortex-M7 TRM (ARM DDI 0489) DWT programmers' model: Lock Access Register at offset 0xFB0;
 * key from the CoreSight Architecture Specification (ARM IHI 0029) */
#define SG_DWT_LAR     SG_REG(0xE0001FB0u)
#define SG_DWT_LAR_KEY 0xC5ACCE55u

typedef struct {
  uint32_t last; /* CYCCNT at the previous poll */
  uint64_t high; /* wraps seen so far, in units of 2^32 */
} sg_cycles_t;

/* Start CYCCNT from 0.  The Cortex-M7 DWT is CoreSight-locked after reset on some parts
 * (STM32F7), so it needs the LAR key; on the Cortex-M4 that address is not documented for
 * the DWT, so only M7 boards pass unlock_lar = 1. */
static inline void sg_dwt_start(sg_cycles_t *c, int unlock_lar) {
  SG_DEMCR |= SG_DEMCR_TRCENA;
  if (unlock_lar) SG_DWT_LAR = SG_DWT_LAR_KEY;
  SG_DWT_CYCCNT = 0;
  SG_DWT_CTRL |= SG_DWT_CTRL_CYCCNTENA;
  c->last = 0;
  c->high = 0;
}

/* 64-bit count: correct as long as the caller polls at least once per 2^32 cycles
 * (about 20 s at 216 MHz), which main.c does around every inference. */
static inline uint64_t sg_dwt_cycles(sg_cycles_t *c) {
  uint32_t now = SG_DWT_CYCCNT;
  if (now < c->last) c->high += 1ull << 32;
  c->last = now;
  return c->high | now;
}

/* Busy-wait for `cycles` core cycles on CYCCNT (needs sg_dwt_start first). */
static inline void sg_delay_cycles(uint32_t cycles) {
  uint32_t start = SG_DWT_CYCCNT;
  while ((uint32_t)(SG_DWT_CYCCNT - start) < cycles) {
  }
}

/* Wait until (*reg & mask) == value, at most `cycles` core cycles (CYCCNT must run).
 * Returns 1 when the condition held, 0 on timeout: a missing crystal or a PLL that never
 * locks then shows up as a fallback clock instead of a silent hang. */
static inline int sg_wait_bits(volatile uint32_t *reg, uint32_t mask, uint32_t value,
                               uint32_t cycles) {
  uint32_t start = SG_DWT_CYCCNT;
  while ((*reg & mask) != value) {
    if ((uint32_t)(SG_DWT_CYCCNT - start) >= cycles) return (*reg & mask) == value;
  }
  return 1;
}

/* ---- Cortex-M7 L1 caches (ARMv7-M ARM B2.2.7 / B3.2.3, Cortex-M7 TRM "Cache maintenance") */

/* ARMv7-M ARM B3.2.8 CCR (Configuration and Control Register) */
#define SG_SCB_CCR    SG_REG(0xE000ED14u)
#define SG_SCB_CCR_DC (1u << 16) /* B3.2.8: data/unified caches enabled */
#define SG_SCB_CCR_IC (1u << 17) /* B3.2.8: instruction caches enabled */
/* ARMv7-M ARM B4.8 cache identification: CCSIDR (Cache Size ID), CSSELR (Cache Size Selection) */
#define SG_SCB_CCSIDR SG_REG(0xE000ED80u)
#define SG_SCB_CSSELR SG_REG(0xE000ED84u)
/* ARMv7-M ARM B2.2.7 cache maintenance operations (Table B2-1): ICIALLU = I-cache invalidate
 * all to PoU, DCISW = D-cache invalidate by set/way */
#define SG_SCB_ICIALLU SG_REG(0xE000EF50u)
#define SG_SCB_DCISW   SG_REG(0xE000EF60u)

/* Invalidate then enable the instruction cache (Cortex-M7 TRM, "Enabling the L1 caches"). */
static inline void sg_m7_icache_enable(void) {
  sg_dsb_isb();
  SG_SCB_ICIALLU = 0; /* the written value is ignored (ARMv7-M ARM B2.2.7) */
  sg_dsb_isb();
  SG_SCB_CCR |= SG_SCB_CCR_IC;
  sg_dsb_isb();
}

static inline uint32_t sg_log2_ceil(uint32_t x) {
  uint32_t n = 0;
  while ((1u << n) < x) n++;
  return n;
}

/* Invalidate the whole L1 D-cache by set/way, then enable it.  The geometry comes from
 * CCSIDR (ARMv7-M ARM B4.8 CCSIDR: LineSize [2:0] = log2(words per line) - 2, Associativity
 * [12:3] = ways - 1, NumSets [27:13] = sets - 1) and the DCISW operand layout from
 * ARMv7-M ARM B2.2.7 (way in the top bits, set shifted by log2(line bytes), level in [3:1]). */
static inline void sg_m7_dcache_enable(void) {
  /* already on (a loader did it): invalidating now would drop dirty lines */
  if (SG_SCB_CCR & SG_SCB_CCR_DC) return;
  SG_SCB_CSSELR = 0; /* level 1 data cache (ARMv7-M ARM B4.8: Level = 0, InD = 0) */
  sg_dsb_isb();
  uint32_t ccsidr = SG_SCB_CCSIDR;
  uint32_t line_shift = (ccsidr & 7u) + 4u;     /* log2(bytes per line) */
  uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
  uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
  uint32_t way_shift = 32u - sg_log2_ceil(ways);
  for (uint32_t set = 0; set < sets; set++) {
    for (uint32_t way = 0; way < ways; way++) {
      uint32_t way_bits = way_shift < 32u ? way << way_shift : 0u; /* 1-way: no way field */
      SG_SCB_DCISW = way_bits | (set << line_shift);
    }
  }
  sg_dsb_isb();
  SG_SCB_CCR |= SG_SCB_CCR_DC;
  sg_dsb_isb();
}

/* ---- end of program -------------------------------------------------------------------- */

/* Stop for the debugger.  Without one attached (DHCSR.C_DEBUGEN = 0), BKPT escalates to a
 * HardFault (ARMv7-M ARM chapter C1, "Debug event behavior": BKPT with halting debug and
 * the DebugMonitor both disabled), which
 * would print a spurious "sg:fault" after a good run, so spin quietly instead. */
static inline void sg_arm_exit(int code) {
  register int r0 __asm__("r0") = code; /* the exit code sits in r0 for the debugger */
  for (;;) {
    if (SG_DHCSR & SG_DHCSR_C_DEBUGEN) __asm__ volatile("bkpt 0" : : "r"(r0));
  }
}

#endif
