/* Board seam for real Cortex-M4/M7/M55 boards (STM32, nRF52, ...), no vendor SDK needed.
 *
 * board_cycles(): the DWT cycle counter (CYCCNT), extended to 64 bits by the caller's
 * polling (one inference must take less than 2^32 cycles).  board_putc(): ITM stimulus
 * port 0 (SWO; view with `pyocd swv` or OpenOCD's `itm port 0 on`); replace with a UART
 * write for boards without SWO.  board_exit(): stop at a breakpoint for the debugger.
 */
#include "board.h"

const char board_counter_name[] = "cycles";

#define DEMCR      (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL   (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR    (*(volatile uint32_t *)0xE0001FB0u)
#define ITM_PORT0  (*(volatile uint32_t *)0xE0000000u)
#define ITM_TER    (*(volatile uint32_t *)0xE0000E00u)
#define ITM_TCR    (*(volatile uint32_t *)0xE0000E80u)

static uint32_t last;
static uint64_t high;

void board_init(void) {
  DEMCR |= 1u << 24;       /* TRCENA */
  DWT_LAR = 0xC5ACCE55u;   /* unlock (Cortex-M7) */
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;          /* CYCCNTENA */
}

uint64_t board_cycles(void) {
  uint32_t now = DWT_CYCCNT;
  if (now < last) high += 1ull << 32;
  last = now;
  return high | now;
}

void board_putc(char c) {
  if ((ITM_TCR & 1u) && (ITM_TER & 1u)) {
    while (ITM_PORT0 == 0u) {
    }
    *(volatile char *)&ITM_PORT0 = c;
  }
}

void board_exit(int code) {
  (void)code;
  for (;;) {
    __asm__ volatile("bkpt 0");
  }
}
