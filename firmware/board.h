/* sandglass firmware porting seam: the only functions main.c needs from a board.
 *
 * board_qemu.c serves QEMU's MPS2/MPS3 boards (CMSDK UART console, semihosting exit,
 * SysTick as an instruction counter under `-icount shift=0`); each real board has its own
 * board_<name>.c (clock tree, caches, DWT cycle counter, the UART of the debug probe's
 * virtual COM port), sharing board_arm.h.  Port to a new board by writing these functions.
 */
#ifndef SG_BOARD_H
#define SG_BOARD_H

#include <stdint.h>

/* Name of what board_cycles() counts, printed by main.c: "cycles" or "instr". */
extern const char board_counter_name[];

void board_init(void);              /* clocks, caches, counters, console */
uint32_t board_clock_hz(void);      /* the core clock board_init set up, as the firmware believes */
uint64_t board_cycles(void);        /* monotonic counter (see board_counter_name) */
void board_putc(char c);            /* one byte to the console */
int board_getc(void);               /* the next byte from the console, waiting for it */
void board_exit(int code);          /* end of the program: exit code 0 = pass */

#endif
