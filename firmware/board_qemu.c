/* Board seam for QEMU's MPS2/MPS3 Cortex-M boards (mps2-an386, mps2-an500, mps3-an547).
 *
 * Console and exit go through Arm semihosting (QEMU `-semihosting`): SYS_WRITE0 for whole
 * lines, SYS_EXIT_EXTENDED so that QEMU's exit status is our exit code.
 * QEMU models no cycles (DWT CYCCNT reads 0).  With `-icount shift=0` every instruction
 * advances virtual time by 1 ns and SysTick (processor clock) ticks at the board's clock, so
 * one tick = 1e9 / SG_CLOCK_HZ instructions: board_cycles() counts *instructions*.
 */
#include "board.h"

#ifndef SG_CLOCK_HZ
#error "SG_CLOCK_HZ (the board's SysTick clock, clock_hz in the board file) must be defined"
#endif

const char board_counter_name[] = "instr";

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_MAX 0x00FFFFFFu

static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

static int semihost(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void board_init(void) {
  SYST_RVR = SYST_MAX;
  SYST_CVR = 0;
  SYST_CSR = 7u; /* processor clock, interrupt on wrap, enable */
  while (SYST_CVR == 0u) {
  } /* wait for the first reload so that the count starts from SYST_MAX */
}

uint64_t board_cycles(void) {
  uint32_t wraps, now;
  do {
    wraps = systick_wraps;
    now = SYST_CVR;
  } while (wraps != systick_wraps);
  uint64_t ticks = (uint64_t)wraps * (SYST_MAX + 1u) + (SYST_MAX - now);
  return ticks * 1000000000ull / SG_CLOCK_HZ;
}

static char line[256];
static unsigned line_len;

void board_putc(char c) {
  line[line_len++] = c;
  if (c == '\n' || line_len == sizeof line - 1) {
    line[line_len] = '\0';
    semihost(0x04 /* SYS_WRITE0 */, line);
    line_len = 0;
  }
}

void board_exit(int code) {
  uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
  semihost(0x20 /* SYS_EXIT_EXTENDED */, block);
  for (;;) {
  }
}
