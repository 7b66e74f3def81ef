/* Board seam for the STM32F746G-DISCO (STM32F746NG, Cortex-M7), no vendor SDK.
 *
 * Clock: 25 MHz HSE crystal -> PLL (M=25, N=432, P=2) -> SYSCLK = HCLK = 216 MHz, with
 * voltage scale 1 + over-drive, 7 flash wait states, ART + prefetch, APB1 54 MHz, APB2
 * 108 MHz.  L1 I- and D-caches on.  Console: USART1 (PA9 TX, PB7 RX, AF7) = the ST-LINK
 * virtual COM port, 115200 8N1.  If the HSE or the PLL never becomes ready the board stays on
 * the 16 MHz HSI and board_clock_hz() says so.
 *
 * Sources: RM0385 rev 8 (STM32F75xxx/F74xxx reference manual), UM1907 (32F746GDISCOVERY
 * user manual), DS10916 (STM32F745xx/F746xx datasheet, alternate functions).  Register
 * offsets and bit positions were cross-checked against ST's CMSIS device header
 * stm32f746xx.h; section numbers are as remembered from RM0385 and worth a second look.
 *
 * UNTESTED ON SILICON: compile-checked only, no board was attached when this was written.
 */
#include "board.h"
#include "board_arm.h"
#include "board_stm32.h"

const char board_counter_name[] = "cycles";

/* ---- registers -------------------------------------------------------------------------- */

/* RM0385 §2.2.2 Table 1 (memory map / register boundary addresses) */
#define RCC_BASE   0x40023800u /* RM0385 Table 1: RCC */
#define PWR_BASE   0x40007000u /* RM0385 Table 1: PWR */
#define FLASH_BASE 0x40023C00u /* RM0385 Table 1: Flash interface register */
#define GPIOA_BASE 0x40020000u /* RM0385 Table 1: GPIOA */
#define GPIOB_BASE 0x40020400u /* RM0385 Table 1: GPIOB */
#define USART1_BASE 0x40011000u /* RM0385 Table 1: USART1 */

#define RCC_CR       SG_REG(RCC_BASE + 0x00u) /* RM0385 §5.3.1 RCC_CR */
#define RCC_PLLCFGR  SG_REG(RCC_BASE + 0x04u) /* RM0385 §5.3.2 RCC_PLLCFGR */
#define RCC_CFGR     SG_REG(RCC_BASE + 0x08u) /* RM0385 §5.3.3 RCC_CFGR */
#define RCC_AHB1ENR  SG_REG(RCC_BASE + 0x30u) /* RM0385 §5.3.10 RCC_AHB1ENR */
#define RCC_APB1ENR  SG_REG(RCC_BASE + 0x40u) /* RM0385 §5.3.13 RCC_APB1ENR */
#define RCC_APB2ENR  SG_REG(RCC_BASE + 0x44u) /* RM0385 §5.3.14 RCC_APB2ENR */
#define RCC_DCKCFGR2 SG_REG(RCC_BASE + 0x90u) /* RM0385 §5.3.26 RCC_DCKCFGR2 */

#define RCC_CR_HSEON  (1u << 16) /* RM0385 §5.3.1 */
#define RCC_CR_HSERDY (1u << 17) /* RM0385 §5.3.1 */
#define RCC_CR_PLLON  (1u << 24) /* RM0385 §5.3.1 */
#define RCC_CR_PLLRDY (1u << 25) /* RM0385 §5.3.1 */

/* RM0385 §5.3.2 RCC_PLLCFGR fields: PLLM [5:0], PLLN [14:6], PLLP [17:16] (00 = /2),
 * PLLSRC bit 22 (1 = HSE), PLLQ [27:24]; bit 29 is reserved (reset value 1), kept. */
#define PLLCFGR_FIELDS (0x3Fu | (0x1FFu << 6) | (3u << 16) | (1u << 22) | (0xFu << 24))
#define PLL_M 25u  /* 25 MHz / 25 = 1 MHz VCO input (RM0385 §5.3.2: 1-2 MHz, 2 MHz advised) */
#define PLL_N 432u /* 1 MHz * 432 = 432 MHz VCO output (RM0385 §5.3.2: 100-432 MHz) */
#define PLL_P 0u   /* encoding 00 = /2: 432 / 2 = 216 MHz SYSCLK (RM0385 §5.3.2) */
#define PLL_Q 9u   /* 432 / 9 = 48 MHz for USB/SDMMC/RNG (RM0385 §5.3.2), unused here */
#define PLLCFGR_VALUE (PLL_M | (PLL_N << 6) | (PLL_P << 16) | (1u << 22) | (PLL_Q << 24))

/* RM0385 §5.3.3 RCC_CFGR: SW [1:0], SWS [3:2], HPRE [7:4], PPRE1 [12:10], PPRE2 [15:13] */
#define CFGR_SW_MASK   (3u << 0)
#define CFGR_SW_PLL    (2u << 0)  /* RM0385 §5.3.3: 10 = PLL */
#define CFGR_SWS_MASK  (3u << 2)
#define CFGR_SWS_PLL   (2u << 2)  /* RM0385 §5.3.3: 10 = PLL used as system clock */
#define CFGR_PRE_MASK  ((0xFu << 4) | (7u << 10) | (7u << 13))
#define CFGR_HPRE_DIV1 (0u << 4)  /* RM0385 §5.3.3: 0xxx = SYSCLK not divided */
#define CFGR_PPRE1_DIV4 (5u << 10) /* RM0385 §5.3.3: 101 = /4 -> 54 MHz (APB1 max 54 MHz) */
#define CFGR_PPRE2_DIV2 (4u << 13) /* RM0385 §5.3.3: 100 = /2 -> 108 MHz (APB2 max 108 MHz) */

#define RCC_AHB1ENR_GPIOAEN (1u << 0)  /* RM0385 §5.3.10 */
#define RCC_AHB1ENR_GPIOBEN (1u << 1)  /* RM0385 §5.3.10 */
#define RCC_APB1ENR_PWREN   (1u << 28) /* RM0385 §5.3.13 */
#define RCC_APB2ENR_USART1EN (1u << 4) /* RM0385 §5.3.14 */
#define DCKCFGR2_USART1SEL_MASK (3u << 0) /* RM0385 §5.3.26: 00 = PCLK2 feeds USART1 */

#define PWR_CR1  SG_REG(PWR_BASE + 0x00u) /* RM0385 §4.4.1 PWR_CR1 */
#define PWR_CSR1 SG_REG(PWR_BASE + 0x04u) /* RM0385 §4.4.2 PWR_CSR1 */
#define PWR_CR1_VOS_MASK   (3u << 14)  /* RM0385 §4.4.1 VOS[1:0] */
#define PWR_CR1_VOS_SCALE1 (3u << 14)  /* RM0385 §4.4.1: 11 = scale 1 (needed above 180 MHz) */
#define PWR_CR1_ODEN       (1u << 16)  /* RM0385 §4.4.1 over-drive enable */
#define PWR_CR1_ODSWEN     (1u << 17)  /* RM0385 §4.4.1 over-drive switching enable */
#define PWR_CSR1_VOSRDY    (1u << 14)  /* RM0385 §4.4.2 */
#define PWR_CSR1_ODRDY     (1u << 16)  /* RM0385 §4.4.2 */
#define PWR_CSR1_ODSWRDY   (1u << 17)  /* RM0385 §4.4.2 */

#define FLASH_ACR SG_REG(FLASH_BASE + 0x00u) /* RM0385 §3.7.1 FLASH_ACR */
#define FLASH_ACR_LATENCY_MASK 0xFu          /* RM0385 §3.7.1 LATENCY[3:0] */
#define FLASH_ACR_LATENCY_7WS  7u            /* RM0385 §3.3.2 Table 5: 210-216 MHz at 2.7-3.6 V */
#define FLASH_ACR_PRFTEN (1u << 8)           /* RM0385 §3.7.1 prefetch enable */
#define FLASH_ACR_ARTEN  (1u << 9)           /* RM0385 §3.7.1 ART accelerator enable */
#define FLASH_ACR_ARTRST (1u << 11)          /* RM0385 §3.7.1 ART reset (only while ARTEN = 0) */

/* RM0385 §6.4 GPIO registers */
#define GPIO_MODER(b)   SG_REG((b) + 0x00u) /* RM0385 §6.4.1: 2 bits/pin, 10 = alt. function */
#define GPIO_OSPEEDR(b) SG_REG((b) + 0x08u) /* RM0385 §6.4.3: 2 bits/pin */
#define GPIO_PUPDR(b)   SG_REG((b) + 0x0Cu) /* RM0385 §6.4.4: 2 bits/pin, 01 = pull-up */
#define GPIO_AFRL(b)    SG_REG((b) + 0x20u) /* RM0385 §6.4.9: 4 bits/pin, pins 0-7 */
#define GPIO_AFRH(b)    SG_REG((b) + 0x24u) /* RM0385 §6.4.10: 4 bits/pin, pins 8-15 */
#define GPIO_AF7 7u                         /* DS10916 Table 12: PA9 / PB7 AF7 = USART1_TX / _RX */

/* RM0385 §31.8 USART registers */
#define USART_CR1(b) SG_REG((b) + 0x00u) /* RM0385 §31.8.1 */
#define USART_CR2(b) SG_REG((b) + 0x04u) /* RM0385 §31.8.2 */
#define USART_CR3(b) SG_REG((b) + 0x08u) /* RM0385 §31.8.3 */
#define USART_BRR(b) SG_REG((b) + 0x0Cu) /* RM0385 §31.8.4 */
#define USART_CR1_UE (1u << 0)  /* RM0385 §31.8.1 */
#define USART_CR1_RE (1u << 2)  /* RM0385 §31.8.1 */
#define USART_CR1_TE (1u << 3)  /* RM0385 §31.8.1 (M1:M0 = 00: 8 data bits, OVER8 = 0: x16) */

#define HSI_HZ 16000000u   /* RM0385 §5.2.2: HSI RC, the clock after reset */
#define CPU_HZ 216000000u  /* 25 MHz / 25 * 432 / 2 */
#define PCLK2_HZ 108000000u
#define BAUD 115200u
/* Oscillator start-up budget, counted in 16 MHz HSI cycles: 100 ms (the HAL's
 * HSE_STARTUP_TIMEOUT) is far beyond the crystal's ~2 ms start-up (DS10916 HSE table). */
#define READY_TIMEOUT (HSI_HZ / 10u)

static sg_cycles_t counter;
static uint32_t cpu_hz = HSI_HZ;
static uint32_t pclk2_hz = HSI_HZ;
static int console_up; /* the fault handler may print before board_init is done */

/* ---- clock tree ------------------------------------------------------------------------- */

/* RM0385 §4.1.4 "Entering Over-drive mode": PLL on first, then ODEN/ODRDY, then
 * ODSWEN/ODSWRDY, and only then raise the flash latency and switch SYSCLK to the PLL. */
static int overdrive_on(void) {
  PWR_CR1 |= PWR_CR1_ODEN;
  if (!sg_wait_bits(&PWR_CSR1, PWR_CSR1_ODRDY, PWR_CSR1_ODRDY, READY_TIMEOUT)) return 0;
  PWR_CR1 |= PWR_CR1_ODSWEN;
  return sg_wait_bits(&PWR_CSR1, PWR_CSR1_ODSWRDY, PWR_CSR1_ODSWRDY, READY_TIMEOUT);
}

/* 7 wait states before the clock goes up (RM0385 §3.3.2: "increase the CPU frequency"
 * sequence), then ART + prefetch.  The ART is reset while disabled (RM0385 §3.7.1 ARTRST). */
static void flash_for_216mhz(void) {
  FLASH_ACR &= ~FLASH_ACR_ARTEN;
  FLASH_ACR |= FLASH_ACR_ARTRST;
  FLASH_ACR &= ~FLASH_ACR_ARTRST;
  sg_reg_field(&FLASH_ACR, FLASH_ACR_LATENCY_MASK, FLASH_ACR_LATENCY_7WS);
  while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != FLASH_ACR_LATENCY_7WS) {
  } /* RM0385 §3.3.2: read back to check the new latency is taken into account */
  FLASH_ACR |= FLASH_ACR_PRFTEN | FLASH_ACR_ARTEN;
}

/* Returns 1 at 216 MHz; 0 leaves SYSCLK on the HSI with flash and buses untouched. */
static int clock_216mhz(void) {
  RCC_APB1ENR |= RCC_APB1ENR_PWREN;
  (void)RCC_APB1ENR; /* RM0385 §5.2.12 (clock enable delay): read back before using PWR */
  /* VOS may only change while the PLL is off (RM0385 §4.4.1 VOS note) */
  sg_reg_field(&PWR_CR1, PWR_CR1_VOS_MASK, PWR_CR1_VOS_SCALE1);

  RCC_CR |= RCC_CR_HSEON; /* UM1907 "Clock sources": X2 25 MHz crystal on PH0/PH1, no bypass */
  if (!sg_wait_bits(&RCC_CR, RCC_CR_HSERDY, RCC_CR_HSERDY, READY_TIMEOUT)) return 0;

  sg_reg_field(&RCC_PLLCFGR, PLLCFGR_FIELDS, PLLCFGR_VALUE);
  RCC_CR |= RCC_CR_PLLON;
  if (!sg_wait_bits(&RCC_CR, RCC_CR_PLLRDY, RCC_CR_PLLRDY, READY_TIMEOUT)) return 0;
  /* RM0385 §4.4.2: VOSRDY is meaningful once the PLL runs */
  if (!sg_wait_bits(&PWR_CSR1, PWR_CSR1_VOSRDY, PWR_CSR1_VOSRDY, READY_TIMEOUT)) return 0;
  if (!overdrive_on()) return 0;

  flash_for_216mhz();
  sg_reg_field(&RCC_CFGR, CFGR_PRE_MASK, CFGR_HPRE_DIV1 | CFGR_PPRE1_DIV4 | CFGR_PPRE2_DIV2);
  sg_reg_field(&RCC_CFGR, CFGR_SW_MASK, CFGR_SW_PLL);
  while ((RCC_CFGR & CFGR_SWS_MASK) != CFGR_SWS_PLL) {
  } /* RM0385 §5.3.3: SWS follows SW once the switch is done; the PLL is locked, so it will */
  return 1;
}

/* ---- console: USART1 on the ST-LINK virtual COM port ----------------------------------- */

/* UM1907 "Virtual COM port" (ST-LINK/V2-1 section) and its schematics: STM32 PA9 =
 * USART1_TX -> ST-LINK RX, PB7 = USART1_RX <- ST-LINK TX. */
static void console_pins(void) {
  RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN | RCC_AHB1ENR_GPIOBEN;
  (void)RCC_AHB1ENR; /* RM0385 §5.2.12: read back before touching the GPIOs */
  sg_reg_field(&GPIO_AFRH(GPIOA_BASE), 0xFu << 4, GPIO_AF7 << 4);   /* PA9: AFRH slot 1 */
  sg_reg_field(&GPIO_OSPEEDR(GPIOA_BASE), 3u << 18, 1u << 18);     /* PA9: medium speed */
  sg_reg_field(&GPIO_PUPDR(GPIOA_BASE), 3u << 18, 1u << 18);       /* PA9: pull-up (idle high) */
  sg_reg_field(&GPIO_MODER(GPIOA_BASE), 3u << 18, 2u << 18);       /* PA9: alternate function */
  sg_reg_field(&GPIO_AFRL(GPIOB_BASE), 0xFu << 28, GPIO_AF7 << 28); /* PB7: AFRL slot 7 */
  sg_reg_field(&GPIO_PUPDR(GPIOB_BASE), 3u << 14, 1u << 14);       /* PB7: pull-up (idle high) */
  sg_reg_field(&GPIO_MODER(GPIOB_BASE), 3u << 14, 2u << 14);       /* PB7: alternate function */
}

static void console_init(void) {
  console_pins();
  sg_reg_field(&RCC_DCKCFGR2, DCKCFGR2_USART1SEL_MASK, 0u); /* USART1 kernel clock = PCLK2 */
  RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
  (void)RCC_APB2ENR;
  USART_CR1(USART1_BASE) = 0; /* UE = 0 while configuring (RM0385 §31.5.2 character TX steps) */
  USART_CR2(USART1_BASE) = 0; /* 1 stop bit (RM0385 §31.8.2 STOP = 00) */
  USART_CR3(USART1_BASE) = 0; /* no flow control, no DMA (RM0385 §31.8.3) */
  /* RM0385 §31.5.4, oversampling by 16: USARTDIV = fck / baud, rounded (108e6 / 115200 = 937.5
   * -> 938, 0.05 % error; HSI fallback 16e6 / 115200 -> 139, 0.08 %) */
  USART_BRR(USART1_BASE) = (pclk2_hz + BAUD / 2u) / BAUD;
  USART_CR1(USART1_BASE) = USART_CR1_TE | USART_CR1_RE | USART_CR1_UE;
  console_up = 1;
}

/* ---- the seam --------------------------------------------------------------------------- */

void board_init(void) {
  sg_dwt_start(&counter, 1); /* Cortex-M7: DWT needs the LAR key; also times the waits below */
  sg_m7_icache_enable();
  sg_m7_dcache_enable();
  if (clock_216mhz()) {
    cpu_hz = CPU_HZ;
    pclk2_hz = PCLK2_HZ;
  }
  console_init();
}

uint32_t board_clock_hz(void) {
  return cpu_hz;
}

uint64_t board_cycles(void) {
  return sg_dwt_cycles(&counter);
}

void board_putc(char c) {
  if (console_up) stm32_uart_putc(USART1_BASE, c);
}

int board_getc(void) {
  return stm32_uart_getc(USART1_BASE);
}

void board_exit(int code) {
  if (console_up) stm32_uart_drain(USART1_BASE);
  sg_arm_exit(code);
}
