/* The console UART of the STM32 boards: the STM32F7's USART (RM0385 §31.8) and the
 * STM32L4+'s LPUART (RM0432 §51.7) share these registers and bits, at the same offsets.
 * Configuration (clock, pins, baud) stays in each board's file.
 */
#ifndef SG_BOARD_STM32_H
#define SG_BOARD_STM32_H

#include <stdint.h>

#include "board_arm.h"

#define STM32_UART_ISR(b) SG_REG((b) + 0x1Cu) /* RM0385 §31.8.8, RM0432 §51.7.6 */
#define STM32_UART_ICR(b) SG_REG((b) + 0x20u) /* RM0385 §31.8.9, RM0432 §51.7.7 */
#define STM32_UART_RDR(b) SG_REG((b) + 0x24u) /* RM0385 §31.8.10, RM0432 §51.7.8 */
#define STM32_UART_TDR(b) SG_REG((b) + 0x28u) /* RM0385 §31.8.11, RM0432 §51.7.9 */
#define STM32_UART_ISR_ERRORS 0xFu   /* PE, FE, NF/NE, ORE in bits 0-3 */
#define STM32_UART_ISR_RXNE (1u << 5)
#define STM32_UART_ISR_TC (1u << 6)
#define STM32_UART_ISR_TXE (1u << 7)
#define STM32_UART_ICR_ERRORS 0xFu   /* PECF, FECF, NCF/NECF, ORECF in bits 0-3 */

static inline void stm32_uart_putc(uint32_t base, char c) {
  while (!(STM32_UART_ISR(base) & STM32_UART_ISR_TXE)) {
  }
  STM32_UART_TDR(base) = (uint8_t)c;
}

static inline int stm32_uart_getc(uint32_t base) {
  for (;;) {
    uint32_t isr = STM32_UART_ISR(base);
    if (isr & STM32_UART_ISR_RXNE) return (int)(STM32_UART_RDR(base) & 0xFFu);
    /* an overrun stops reception until ORE is cleared */
    if (isr & STM32_UART_ISR_ERRORS) STM32_UART_ICR(base) = STM32_UART_ICR_ERRORS;
  }
}

/* let the last byte leave the shift register before the core stops (TC) */
static inline void stm32_uart_drain(uint32_t base) {
  while (!(STM32_UART_ISR(base) & STM32_UART_ISR_TC)) {
  }
}

#endif
