/* sandglass firmware porting seam: the only functions main.c needs from a board.
 *
 * Two implementations ship: board_qemu.c (QEMU MPS2/MPS3 boards: semihosting output and exit,
 * SysTick as an instruction counter under `-icount shift=0`) and board_hw.c (real boards: DWT
 * cycle counter, ITM/SWO output).  Port to a new board by writing these four functions.
 */
#ifndef SG_BOARD_H
#define SG_BOARD_H

#include <stdint.h>

/* Name of what board_cycles() counts, printed by main.c: "cycles" or "instr". */
extern const char board_counter_name[];

void board_init(void);              /* clocks, counters, console */
uint64_t board_cycles(void);        /* monotonic counter (see board_counter_name) */
void board_putc(char c);            /* one character of console output */
void board_exit(int code);          /* end of the program: exit code 0 = pass */

#endif
