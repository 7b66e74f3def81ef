/* Board seam for QEMU's MPS2/MPS3 Cortex-M boards (mps2-an386, mps2-an500, mps3-an547).
 *
 * Console: the board's CMSDK APB UART 0 at SG_UART_BASE (`[console] uart_base` in the board
 * file), which QEMU connects to its first serial port: stdout under -nographic, or a socket
 * for the link (Arm DDI 0479, Cortex-M System Design Kit TRM, APB UART: DATA 0x0, STATE 0x4
 * with TX full bit 0 and RX full bit 1, CTRL 0x8 with TX enable bit 0 and RX enable bit 1,
 * BAUDDIV 0x10 at least 16).  Exit goes through Arm semihosting (QEMU `-semihosting`):
 * SYS_EXIT_EXTENDED, so that QEMU's exit status is our exit code.
 * QEMU models no cycles (DWT CYCCNT reads 0).  With `-icount shift=0` every instruction
 * advances virtual time by 1 ns and SysTick (processor clock) ticks at the board's clock, so
 * one tick = 1e9 / SG_CLOCK_HZ instructions: board_cycles() counts *instructions*.
 */
#include "board.h"

#ifndef SG_CLOCK_HZ
#error "SG_CLOCK_HZ (the board's SysTick clock, clock_hz in the board file) must be defined"
#endif
#ifndef SG_UART_BASE
#error "SG_UART_BASE (the console UART, [console] uart_base in the board file) must be defined"
#endif

#define UART_DATA (*(volatile uint32_t *)(SG_UART_BASE + 0x0u))
#define UART_STATE (*(volatile uint32_t *)(SG_UART_BASE + 0x4u))
#define UART_CTRL (*(volatile uint32_t *)(SG_UART_BASE + 0x8u))
#define UART_BAUDDIV (*(volatile uint32_t *)(SG_UART_BASE + 0x10u))

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
  UART_BAUDDIV = 16u; /* the smallest divider the UART accepts; QEMU ignores the rate */
  UART_CTRL = 3u;     /* TX and RX enabled */
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

uint32_t board_clock_hz(void) { return SG_CLOCK_HZ; }

void board_putc(char c) {
  while (UART_STATE & 1u) {
  } /* TX buffer full */
  UART_DATA = (uint8_t)c;
}

int board_getc(void) {
  while (!(UART_STATE & 2u)) {
  } /* RX buffer empty */
  return (int)(UART_DATA & 0xFFu);
}

void board_exit(int code) {
  uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
  semihost(0x20 /* SYS_EXIT_EXTENDED */, block);
  for (;;) {
  }
}
