/* Board seam for the NUCLEO-L4R5ZI (STM32L4R5ZI, Cortex-M4F, NUCLEO-144 MB1312), no vendor SDK.
 *
 * Clock: HSI16 -> PLL (M=1, N=15, R=2: VCO 240 MHz) -> SYSCLK = HCLK = 120 MHz in voltage
 * range 1 boost mode, entered through the AHB /2 step; 5 flash wait states with the ART
 * (instruction cache, data cache, prefetch); APB1 = APB2 = 120 MHz.  HSI16 rather than
 * the HSE because the NUCLEO's 8 MHz ST-LINK MCO depends on solder bridges (UM2179 "HSE
 * clock" section); HSI16 is always there.  If the PLL never locks the board runs on HSI16
 * (16 MHz) and board_clock_hz() says so.
 * Console: LPUART1 (PG7 TX, PG8 RX, AF8) = the ST-LINK virtual COM port, 115200 8N1, clocked
 * from HSI16 so the baud rate does not depend on the bus prescalers.  Port G is powered from
 * VDDIO2, which must be declared valid (PWR_CR2.IOSV) first.
 *
 * Sources: RM0432 rev 9 (STM32L4+ reference manual), UM2179 (NUCLEO-L4R5ZI user manual),
 * DS12023 (STM32L4R5xx datasheet, alternate functions).  Register offsets and bit positions
 * were cross-checked against ST's CMSIS device header stm32l4r5xx.h; section numbers are as
 * remembered from RM0432 and worth a second look.
 *
 * UNTESTED ON SILICON: compile-checked only, no board was attached when this was written.
 */
#include "board.h"
#include "board_arm.h"
#include "board_stm32.h"

const char board_counter_name[] = "cycles";

/* ---- registers -------------------------------------------------------------------------- */

/* RM0432 §2.2.2 Table 3 (memory map and peripheral register boundary addresses) */
#define RCC_BASE     0x40021000u /* RM0432 Table 3: RCC (AHB1) */
#define FLASH_BASE   0x40022000u /* RM0432 Table 3: FLASH registers (AHB1) */
#define PWR_BASE     0x40007000u /* RM0432 Table 3: PWR (APB1) */
#define LPUART1_BASE 0x40008000u /* RM0432 Table 3: LPUART1 (APB1) */
#define GPIOG_BASE   0x48001800u /* RM0432 Table 3: GPIOG (AHB2) */

#define RCC_CR       SG_REG(RCC_BASE + 0x00u) /* RM0432 §6.4.1 RCC_CR */
#define RCC_CFGR     SG_REG(RCC_BASE + 0x08u) /* RM0432 §6.4.3 RCC_CFGR */
#define RCC_PLLCFGR  SG_REG(RCC_BASE + 0x0Cu) /* RM0432 §6.4.4 RCC_PLLCFGR */
#define RCC_AHB2ENR  SG_REG(RCC_BASE + 0x4Cu) /* RM0432 §6.4.17 RCC_AHB2ENR */
#define RCC_APB1ENR1 SG_REG(RCC_BASE + 0x58u) /* RM0432 §6.4.19 RCC_APB1ENR1 */
#define RCC_APB1ENR2 SG_REG(RCC_BASE + 0x5Cu) /* RM0432 §6.4.20 RCC_APB1ENR2 */
#define RCC_CCIPR    SG_REG(RCC_BASE + 0x88u) /* RM0432 §6.4.28 RCC_CCIPR */

#define RCC_CR_HSION  (1u << 8)  /* RM0432 §6.4.1 */
#define RCC_CR_HSIRDY (1u << 10) /* RM0432 §6.4.1 */
#define RCC_CR_PLLON  (1u << 24) /* RM0432 §6.4.1 */
#define RCC_CR_PLLRDY (1u << 25) /* RM0432 §6.4.1 */

/* RM0432 §6.4.4 RCC_PLLCFGR: PLLSRC [1:0] (10 = HSI16), PLLM [7:4] on L4+ (value = M - 1,
 * 0000 = /1 ... 1111 = /16), PLLN [14:8] (8..127), PLLREN bit 24, PLLR [26:25] (00 = /2).
 * PLLP/PLLQ outputs stay disabled.  VCO input must be 2.66-16 MHz (RM0432 §6.2.5; ST's HAL
 * asks 4-16 MHz and recommends 16 MHz), VCO output 64-344 MHz: 16 MHz * 15 = 240 MHz. */
#define PLLCFGR_SRC_HSI16 (2u << 0)
#define PLL_M_ENC 0u  /* /1: 16 MHz VCO input */
#define PLL_N 15u     /* 16 * 15 = 240 MHz VCO */
#define PLL_R_ENC 0u  /* /2: 120 MHz PLLCLK */
#define PLLCFGR_REN (1u << 24)
#define PLLCFGR_VALUE \
  (PLLCFGR_SRC_HSI16 | (PLL_M_ENC << 4) | (PLL_N << 8) | PLLCFGR_REN | (PLL_R_ENC << 25))

/* RM0432 §6.4.3 RCC_CFGR: SW [1:0], SWS [3:2], HPRE [7:4], PPRE1 [10:8], PPRE2 [13:11] */
#define CFGR_SW_MASK   (3u << 0)
#define CFGR_SW_HSI16  (1u << 0)   /* RM0432 §6.4.3: 01 = HSI16 */
#define CFGR_SW_PLL    (3u << 0)   /* RM0432 §6.4.3: 11 = PLL */
#define CFGR_SWS_MASK  (3u << 2)
#define CFGR_SWS_HSI16 (1u << 2)
#define CFGR_SWS_PLL   (3u << 2)
#define CFGR_HPRE_MASK (0xFu << 4)
#define CFGR_HPRE_DIV1 (0u << 4)   /* RM0432 §6.4.3: 0xxx = SYSCLK not divided */
#define CFGR_HPRE_DIV2 (8u << 4)   /* RM0432 §6.4.3: 1000 = SYSCLK / 2 */
#define CFGR_PPRE_MASK ((7u << 8) | (7u << 11)) /* 0xx = HCLK not divided, both APBs */

#define RCC_AHB2ENR_GPIOGEN    (1u << 6)  /* RM0432 §6.4.17 */
#define RCC_APB1ENR1_PWREN     (1u << 28) /* RM0432 §6.4.19 */
#define RCC_APB1ENR2_LPUART1EN (1u << 0)  /* RM0432 §6.4.20 */
#define CCIPR_LPUART1SEL_MASK  (3u << 10) /* RM0432 §6.4.28 LPUART1SEL[1:0] */
#define CCIPR_LPUART1SEL_HSI16 (2u << 10) /* RM0432 §6.4.28: 10 = HSI16 */

#define PWR_CR1 SG_REG(PWR_BASE + 0x00u) /* RM0432 §5.4.1 PWR_CR1 */
#define PWR_CR2 SG_REG(PWR_BASE + 0x04u) /* RM0432 §5.4.2 PWR_CR2 */
#define PWR_SR2 SG_REG(PWR_BASE + 0x14u) /* RM0432 §5.4.6 PWR_SR2 */
#define PWR_CR5 SG_REG(PWR_BASE + 0x80u) /* RM0432 §5.4.24 PWR_CR5 */
#define PWR_CR1_VOS_MASK   (3u << 9)  /* RM0432 §5.4.1 VOS[1:0] */
#define PWR_CR1_VOS_RANGE1 (1u << 9)  /* RM0432 §5.4.1: 01 = range 1 */
#define PWR_CR2_IOSV       (1u << 9)  /* RM0432 §5.4.2: VDDIO2 valid, un-isolates port G */
#define PWR_SR2_VOSF       (1u << 10) /* RM0432 §5.4.6: regulator still changing */
#define PWR_CR5_R1MODE     (1u << 8)  /* RM0432 §5.4.24: 0 = range 1 boost, 1 = normal */

#define FLASH_ACR SG_REG(FLASH_BASE + 0x00u) /* RM0432 §3.7.1 FLASH_ACR */
#define FLASH_ACR_LATENCY_MASK 0xFu          /* RM0432 §3.7.1 LATENCY[3:0] */
#define FLASH_ACR_LATENCY_5WS  5u            /* RM0432 §3.3.3 Table 12: range 1, 100-120 MHz */
#define FLASH_ACR_PRFTEN (1u << 8)           /* RM0432 §3.7.1 prefetch enable */
#define FLASH_ACR_ICEN   (1u << 9)           /* RM0432 §3.7.1 instruction cache enable */
#define FLASH_ACR_DCEN   (1u << 10)          /* RM0432 §3.7.1 data cache enable */

/* RM0432 §8.5 GPIO registers */
/* RM0432 §8.5.1: 2 bits/pin, reset 11 (analog), 10 = alternate function */
#define GPIO_MODER(b) SG_REG((b) + 0x00u)
#define GPIO_PUPDR(b) SG_REG((b) + 0x0Cu) /* RM0432 §8.5.4: 2 bits/pin, 01 = pull-up */
#define GPIO_AFRL(b)  SG_REG((b) + 0x20u) /* RM0432 §8.5.9: 4 bits/pin, pins 0-7 */
#define GPIO_AFRH(b)  SG_REG((b) + 0x24u) /* RM0432 §8.5.10: 4 bits/pin, pins 8-15 */
/* DS12023 alternate function table: PG7 / PG8 AF8 = LPUART1_TX / LPUART1_RX */
#define GPIO_AF8 8u

/* RM0432 §51.7 LPUART registers (same layout as the USART's) */
#define LPUART_CR1(b)   SG_REG((b) + 0x00u) /* RM0432 §51.7.1 */
#define LPUART_CR2(b)   SG_REG((b) + 0x04u) /* RM0432 §51.7.2 */
#define LPUART_CR3(b)   SG_REG((b) + 0x08u) /* RM0432 §51.7.3 */
#define LPUART_BRR(b)   SG_REG((b) + 0x0Cu) /* RM0432 §51.7.4 */
#define LPUART_PRESC(b) SG_REG((b) + 0x2Cu) /* RM0432 §51.7.10: 0000 = kernel clock /1 */
#define LPUART_CR1_UE (1u << 0)  /* RM0432 §51.7.1 */
#define LPUART_CR1_RE (1u << 2)  /* RM0432 §51.7.1 */
#define LPUART_CR1_TE (1u << 3)  /* RM0432 §51.7.1 (M1:M0 = 00: 8 data bits, FIFOEN = 0) */

#define HSI16_HZ 16000000u
#define CPU_HZ 120000000u /* 16 MHz * 15 / 2 */
#define BAUD 115200u
/* RM0432 §51.4.7: LPUART BRR = 256 * fck / baud, rounded; needs 3 * baud <= fck <= 4096 * baud
 * and BRR >= 0x300.  16e6 * 256 / 115200 = 35555.6 -> 35556 (0x8AE4), 0.001 % error. */
#define LPUART_BRR_VALUE ((uint32_t)((256ull * HSI16_HZ + BAUD / 2u) / BAUD))
_Static_assert(3ull * BAUD <= HSI16_HZ && HSI16_HZ <= 4096ull * BAUD, "LPUART fck range");
_Static_assert(LPUART_BRR_VALUE >= 0x300u && LPUART_BRR_VALUE < (1u << 20), "LPUART BRR range");
/* Ready-flag budget: 100 ms counted in cycles of the (at most 16 MHz) clock running then. */
#define READY_TIMEOUT (HSI16_HZ / 10u)

static sg_cycles_t counter;
static uint32_t cpu_hz = 4000000u; /* RM0432 §6.2.3: MSI 4 MHz is SYSCLK after reset */
static int console_up; /* the fault handler may print before board_init is done */

/* ---- clock tree ------------------------------------------------------------------------- */

static void pwr_on(void) {
  RCC_APB1ENR1 |= RCC_APB1ENR1_PWREN;
  (void)RCC_APB1ENR1; /* RM0432 §6.2.19 (peripheral clock enable delay): read back first */
  /* Range 1 is the reset value; make sure and wait for the regulator (RM0432 §5.1.8) */
  sg_reg_field(&PWR_CR1, PWR_CR1_VOS_MASK, PWR_CR1_VOS_RANGE1);
  (void)sg_wait_bits(&PWR_SR2, PWR_SR2_VOSF, 0u, READY_TIMEOUT);
}

/* SYSCLK from HSI16: the fallback when the PLL fails, and the PLL's source anyway. */
static int hsi16_sysclk(void) {
  RCC_CR |= RCC_CR_HSION;
  if (!sg_wait_bits(&RCC_CR, RCC_CR_HSIRDY, RCC_CR_HSIRDY, READY_TIMEOUT)) return 0;
  sg_reg_field(&RCC_CFGR, CFGR_SW_MASK, CFGR_SW_HSI16);
  return sg_wait_bits(&RCC_CFGR, CFGR_SWS_MASK, CFGR_SWS_HSI16, READY_TIMEOUT);
}

/* RM0432 §5.1.8 "Dynamic voltage scaling management", range 1 normal -> range 1 boost:
 * (1) AHB prescaler /2 before switching to the higher frequency, (2) clear R1MODE,
 * (3) raise the flash wait states, (4) switch SYSCLK to the PLL, (5) wait at least 1 us,
 * then set the AHB prescaler back to /1.  ST's HAL (HAL_RCC_ClockConfig) does the same
 * /2 step whenever the PLL output is above 80 MHz. */
static void switch_to_pll_boost(void) {
  sg_reg_field(&RCC_CFGR, CFGR_HPRE_MASK | CFGR_PPRE_MASK, CFGR_HPRE_DIV2);
  PWR_CR5 &= ~PWR_CR5_R1MODE;
  sg_reg_field(&FLASH_ACR, FLASH_ACR_LATENCY_MASK, FLASH_ACR_LATENCY_5WS);
  while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != FLASH_ACR_LATENCY_5WS) {
  } /* RM0432 §3.3.3: read back to check the new latency is taken into account */
  FLASH_ACR |= FLASH_ACR_PRFTEN | FLASH_ACR_ICEN | FLASH_ACR_DCEN;
  sg_reg_field(&RCC_CFGR, CFGR_SW_MASK, CFGR_SW_PLL);
  while ((RCC_CFGR & CFGR_SWS_MASK) != CFGR_SWS_PLL) {
  } /* RM0432 §6.4.3: SWS follows SW; the PLL is locked, so this ends */
  sg_delay_cycles(120u); /* core at 60 MHz now: 120 cycles = 2 us >= 1 us */
  sg_reg_field(&RCC_CFGR, CFGR_HPRE_MASK, CFGR_HPRE_DIV1);
}

/* Returns 1 at 120 MHz; 0 leaves SYSCLK on HSI16 (or on MSI 4 MHz if even HSI16 failed). */
static int clock_120mhz(void) {
  pwr_on();
  if (!hsi16_sysclk()) return 0;
  cpu_hz = HSI16_HZ;
  RCC_CR &= ~RCC_CR_PLLON; /* PLLCFGR may only change while the PLL is off (RM0432 §6.4.4) */
  if (!sg_wait_bits(&RCC_CR, RCC_CR_PLLRDY, 0u, READY_TIMEOUT)) return 0;
  RCC_PLLCFGR = PLLCFGR_VALUE;
  RCC_CR |= RCC_CR_PLLON;
  if (!sg_wait_bits(&RCC_CR, RCC_CR_PLLRDY, RCC_CR_PLLRDY, READY_TIMEOUT)) return 0;
  switch_to_pll_boost();
  return 1;
}

/* ---- console: LPUART1 on the ST-LINK virtual COM port ---------------------------------- */

/* UM2179 "Virtual COM port (VCP)" section: LPUART1 PG7 = TX -> ST-LINK RX,
 * PG8 = RX <- ST-LINK TX.  Port G is in the VDDIO2 domain (RM0432 §5.1.4 "Independent
 * I/O supply rail"): set IOSV before using it. */
static void console_pins(void) {
  PWR_CR2 |= PWR_CR2_IOSV; /* PWR clock is on since pwr_on() */
  RCC_AHB2ENR |= RCC_AHB2ENR_GPIOGEN;
  (void)RCC_AHB2ENR;
  sg_reg_field(&GPIO_AFRL(GPIOG_BASE), 0xFu << 28, GPIO_AF8 << 28); /* PG7: AFRL slot 7 */
  sg_reg_field(&GPIO_AFRH(GPIOG_BASE), 0xFu << 0, GPIO_AF8 << 0);   /* PG8: AFRH slot 0 */
  sg_reg_field(&GPIO_PUPDR(GPIOG_BASE), (3u << 14) | (3u << 16), (1u << 14) | (1u << 16));
  sg_reg_field(&GPIO_MODER(GPIOG_BASE), (3u << 14) | (3u << 16), (2u << 14) | (2u << 16));
}

static void console_init(void) {
  console_pins();
  sg_reg_field(&RCC_CCIPR, CCIPR_LPUART1SEL_MASK, CCIPR_LPUART1SEL_HSI16);
  RCC_APB1ENR2 |= RCC_APB1ENR2_LPUART1EN;
  (void)RCC_APB1ENR2;
  LPUART_CR1(LPUART1_BASE) = 0;   /* UE = 0 while configuring */
  LPUART_CR2(LPUART1_BASE) = 0;   /* 1 stop bit (RM0432 §51.7.2 STOP = 00) */
  LPUART_CR3(LPUART1_BASE) = 0;   /* no flow control, no DMA (RM0432 §51.7.3) */
  LPUART_PRESC(LPUART1_BASE) = 0; /* kernel clock / 1 */
  LPUART_BRR(LPUART1_BASE) = LPUART_BRR_VALUE;
  LPUART_CR1(LPUART1_BASE) = LPUART_CR1_TE | LPUART_CR1_RE | LPUART_CR1_UE;
  console_up = 1;
}

/* ---- the seam --------------------------------------------------------------------------- */

void board_init(void) {
  sg_dwt_start(&counter, 0); /* Cortex-M4: no DWT lock; also times the waits below */
  if (clock_120mhz()) cpu_hz = CPU_HZ;
  console_init();
}

uint32_t board_clock_hz(void) {
  return cpu_hz;
}

uint64_t board_cycles(void) {
  return sg_dwt_cycles(&counter);
}

void board_putc(char c) {
  if (console_up) stm32_uart_putc(LPUART1_BASE, c);
}

int board_getc(void) {
  return stm32_uart_getc(LPUART1_BASE);
}

void board_exit(int code) {
  if (console_up) stm32_uart_drain(LPUART1_BASE);
  sg_arm_exit(code);
}
