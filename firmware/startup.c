/* Startup code and vector table for every sandglass Cortex-M firmware (M4, M7, M55).
 *
 * Reset_Handler copies .data from flash, zeroes .bss, turns the FPU on when the build uses
 * it, then calls main() and hands its return value to board_exit().  Symbols come from the
 * generated linker script (link.ld).
 */
#include <stdint.h>

#include "board.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(void);
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

void Default_Handler(void) {
  for (;;) {
  }
}

/* A fault prints "sg:fault pc=<pc> lr=<lr> cfsr=<CFSR> sp=<frame>" (decimal; pc and lr from
 * the frame the core stacked for the faulting code, sp where that frame is) and exits with 3;
 * the host names the function the pc lies in, and a stack overflow when sp is below the
 * stack's limit (compile/backends/cortexm/project.py). */
static void put_field(const char *name, uint32_t value) {
  char digits[10];
  int n = 0;
  board_putc(' ');
  while (*name) board_putc(*name++);
  board_putc('=');
  do {
    digits[n++] = (char)('0' + value % 10u);
    value /= 10u;
  } while (value);
  while (n) board_putc(digits[--n]);
}

void sg_fault_report(const uint32_t *frame) {
  const char *tag = "sg:fault";
  while (*tag) board_putc(*tag++);
  put_field("pc", frame[6]);
  put_field("lr", frame[5]);
  put_field("cfsr", *(volatile uint32_t *)0xE000ED28u);
  put_field("sp", (uint32_t)(uintptr_t)frame);
  board_putc('\n');
  board_exit(3);
}

/* the stacked frame is on the MSP or the PSP, as bit 2 of EXC_RETURN (lr) says */
__attribute__((naked)) void HardFault_Handler(void) {
  __asm__ volatile(
      "tst lr, #4\n\t"
      "ite eq\n\t"
      "mrseq r0, msp\n\t"
      "mrsne r0, psp\n\t"
      "b sg_fault_report\n\t");
}

void Reset_Handler(void) {
  uint32_t *src = &__data_load, *dst = &__data_start;
  while (dst < &__data_end) *dst++ = *src++;
  for (dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
#if defined(__ARM_FP)
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
  __asm__ volatile("dsb\n\tisb");
#endif
  board_exit(main());
}

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) const vector_t sg_vectors[16] = {
    (vector_t)&__stack_top, /* initial main stack pointer */
    Reset_Handler,
    Default_Handler,   /* NMI */
    HardFault_Handler, /* HardFault */
    HardFault_Handler, /* MemManage */
    HardFault_Handler, /* BusFault */
    HardFault_Handler, /* UsageFault */
    HardFault_Handler, /* SecureFault (v8-M) */
    0, 0, 0,
    Default_Handler,   /* SVCall */
    Default_Handler,   /* DebugMon */
    0,
    Default_Handler,   /* PendSV */
    SysTick_Handler,
};
