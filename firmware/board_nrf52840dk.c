/* Board seam for the nRF52840 DK (PCA10056, nRF52840, Cortex-M4F), no vendor SDK.
 *
 * Clock: the CPU always runs at 64 MHz (HCLK64M); board_init starts the 64 MHz crystal
 * oscillator (HFXO) so the HFCLK, and with it the UART baud rate, is crystal-accurate, and
 * turns on the NVMC instruction cache for code in flash.  No flash wait states to program.
 * Console: legacy UART0 (blocking TXD/RXD, no EasyDMA) on P0.06 TX / P0.08 RX = the
 * interface MCU's virtual COM port, 115200 8N1, no flow control (RTS P0.05 / CTS P0.07
 * left unconnected).
 *
 * Sources: nRF52840 Product Specification v1.x ("PS" below; chapter titles are given
 * because section numbers shift between PS revisions), nRF52840 DK User Guide ("Virtual
 * COM port" / interface MCU section).  Register offsets and values were cross-checked
 * against Nordic's MDK headers nrf52840.h and nrf52840_bitfields.h.
 *
 * UNTESTED ON SILICON: compile-checked only, no board was attached when this was written.
 */
#include "board.h"
#include "board_arm.h"

const char board_counter_name[] = "cycles";

/* ---- registers -------------------------------------------------------------------------- */

/* PS "Memory" chapter, "Instantiation" table (peripheral ID -> base address) */
#define CLOCK_BASE 0x40000000u /* PS Instantiation table: ID 0 CLOCK */
#define UART0_BASE 0x40002000u /* PS Instantiation table: ID 2 UART0/UARTE0 (shared) */
#define NVMC_BASE  0x4001E000u /* PS Instantiation table: ID 30 NVMC */
#define P0_BASE    0x50000000u /* PS "GPIO" chapter, Instances table: P0 */

/* PS "CLOCK - Clock control", Registers table */
#define CLOCK_TASKS_HFCLKSTART    SG_REG(CLOCK_BASE + 0x000u) /* start HFXO */
#define CLOCK_EVENTS_HFCLKSTARTED SG_REG(CLOCK_BASE + 0x100u) /* HFXO started */
#define CLOCK_HFCLKSTAT           SG_REG(CLOCK_BASE + 0x40Cu) /* HFCLK status */
#define HFCLKSTAT_SRC_XTAL (1u << 0)  /* PS CLOCK HFCLKSTAT.SRC: 1 = Xtal (HFXO) */
#define HFCLKSTAT_RUNNING  (1u << 16) /* PS CLOCK HFCLKSTAT.STATE: 1 = running */

/* PS "NVMC - Non-volatile memory controller", Registers table */
#define NVMC_ICACHECNF SG_REG(NVMC_BASE + 0x540u) /* I-code cache configuration */
#define ICACHECNF_CACHEEN (1u << 0)               /* PS NVMC ICACHECNF.CACHEEN: enable cache */

/* PS "GPIO - General purpose input/output", Registers table */
#define P0_OUTSET     SG_REG(P0_BASE + 0x508u)               /* set output bits */
#define P0_PIN_CNF(n) SG_REG(P0_BASE + 0x700u + 4u * (n))    /* PIN_CNF[n] */
#define PIN_CNF_DIR_OUT        (1u << 0) /* PS GPIO PIN_CNF.DIR: 1 = output */
#define PIN_CNF_INPUT_DISCONN  (1u << 1) /* PS GPIO PIN_CNF.INPUT: 1 = input buffer disconnected */
#define PIN_CNF_PULLUP         (3u << 2) /* PS GPIO PIN_CNF.PULL: 3 = pull-up */

/* PS "UART - Universal asynchronous receiver/transmitter" (legacy, deprecated in favour
 * of UARTE but still present on the nRF52840), Registers table */
#define UART_TASKS_STARTRX  SG_REG(UART0_BASE + 0x000u)
#define UART_TASKS_STARTTX  SG_REG(UART0_BASE + 0x008u)
#define UART_EVENTS_RXDRDY  SG_REG(UART0_BASE + 0x108u)
#define UART_EVENTS_TXDRDY  SG_REG(UART0_BASE + 0x11Cu)
#define UART_EVENTS_ERROR   SG_REG(UART0_BASE + 0x124u)
#define UART_ERRORSRC       SG_REG(UART0_BASE + 0x480u) /* write 1 to clear (PS UART ERRORSRC) */
#define UART_ENABLE         SG_REG(UART0_BASE + 0x500u)
#define UART_PSEL_RTS       SG_REG(UART0_BASE + 0x508u)
#define UART_PSEL_TXD       SG_REG(UART0_BASE + 0x50Cu)
#define UART_PSEL_CTS       SG_REG(UART0_BASE + 0x510u)
#define UART_PSEL_RXD       SG_REG(UART0_BASE + 0x514u)
#define UART_RXD            SG_REG(UART0_BASE + 0x518u)
#define UART_TXD            SG_REG(UART0_BASE + 0x51Cu)
#define UART_BAUDRATE       SG_REG(UART0_BASE + 0x524u)
#define UART_CONFIG         SG_REG(UART0_BASE + 0x56Cu)
#define UART_ENABLE_UART    4u          /* PS UART ENABLE: 4 = UART (8 would select UARTE) */
#define UART_BAUD_115200    0x01D7E000u /* PS UART BAUDRATE: Baud115200 (actual 115942) */
#define UART_CONFIG_8N1     0u          /* PS UART CONFIG: HWFC = 0, PARITY = 0, STOP = 1 bit */
#define PSEL_DISCONNECTED   0xFFFFFFFFu /* PS UART PSEL.x: CONNECT bit 31 = 1, the reset value */
#define PSEL_P0(pin)        (pin)       /* PS UART PSEL.x: PIN [4:0], PORT bit 5 = 0, CONNECT = 0 */

/* nRF52840 DK User Guide, "Virtual COM port" (interface MCU) table */
#define PIN_TXD 6u /* P0.06 -> interface MCU RX */
#define PIN_RXD 8u /* P0.08 <- interface MCU TX */

#define CPU_HZ 64000000u /* PS "CLOCK": HCLK64M, the CPU clock, is always 64 MHz */
/* HFXO start-up is ~0.3 ms typical (PS CLOCK "HFXO" electrical table); allow 100 ms. */
#define HFXO_TIMEOUT (CPU_HZ / 10u)

static sg_cycles_t counter;
static int console_up; /* the fault handler may print before board_init is done */

/* ---- clocks ----------------------------------------------------------------------------- */

/* PS "CLOCK", HFCLK controller: TASKS_HFCLKSTART starts the HFXO, EVENTS_HFCLKSTARTED
 * says it runs.  On timeout the HFINT RC keeps clocking everything at 64 MHz, only less
 * accurately (UART still within tolerance), so there is no fallback to report. */
static void hfxo_start(void) {
  CLOCK_EVENTS_HFCLKSTARTED = 0;
  CLOCK_TASKS_HFCLKSTART = 1;
  (void)sg_wait_bits(&CLOCK_EVENTS_HFCLKSTARTED, 1u, 1u, HFXO_TIMEOUT);
  (void)sg_wait_bits(&CLOCK_HFCLKSTAT, HFCLKSTAT_SRC_XTAL | HFCLKSTAT_RUNNING,
                     HFCLKSTAT_SRC_XTAL | HFCLKSTAT_RUNNING, HFXO_TIMEOUT);
}

/* PS "NVMC", ICACHECNF: cache instruction fetches from flash (the NVMC has no wait-state
 * setting; the cache hides flash latency). */
static void icache_on(void) {
  NVMC_ICACHECNF = ICACHECNF_CACHEEN;
  sg_dsb_isb();
}

/* ---- console: UART0 on the interface MCU's virtual COM port ---------------------------- */

/* PS "UART", Pin configuration: TXD pin as output driven high (idle) before the UART takes
 * it, RXD as connected input (pull-up as the DK's Zephyr board files use, so a detached
 * interface MCU does not produce noise). */
static void console_pins(void) {
  P0_OUTSET = 1u << PIN_TXD;
  P0_PIN_CNF(PIN_TXD) = PIN_CNF_DIR_OUT | PIN_CNF_INPUT_DISCONN;
  P0_PIN_CNF(PIN_RXD) = PIN_CNF_PULLUP; /* DIR = input, INPUT = connected */
}

static void console_init(void) {
  console_pins();
  UART_ENABLE = 0;
  UART_PSEL_RTS = PSEL_DISCONNECTED;
  UART_PSEL_CTS = PSEL_DISCONNECTED;
  UART_PSEL_TXD = PSEL_P0(PIN_TXD);
  UART_PSEL_RXD = PSEL_P0(PIN_RXD);
  UART_BAUDRATE = UART_BAUD_115200;
  UART_CONFIG = UART_CONFIG_8N1;
  UART_ENABLE = UART_ENABLE_UART;
  UART_EVENTS_TXDRDY = 0;
  UART_EVENTS_RXDRDY = 0;
  UART_EVENTS_ERROR = 0;
  UART_TASKS_STARTTX = 1;
  UART_TASKS_STARTRX = 1;
  console_up = 1;
}

/* ---- the seam --------------------------------------------------------------------------- */

void board_init(void) {
  sg_dwt_start(&counter, 0); /* Cortex-M4: no DWT lock; also times the HFXO wait */
  hfxo_start();
  icache_on();
  console_init();
}

uint32_t board_clock_hz(void) {
  return CPU_HZ;
}

uint64_t board_cycles(void) {
  return sg_dwt_cycles(&counter);
}

/* PS "UART", Transmission: write TXD, TXDRDY fires when the byte has been sent. */
void board_putc(char c) {
  if (!console_up) return;
  UART_EVENTS_TXDRDY = 0;
  UART_TXD = (uint8_t)c;
  while (!UART_EVENTS_TXDRDY) {
  }
}

/* PS "UART", Reception: clear RXDRDY before reading RXD, because reading RXD moves the
 * next byte of the RX FIFO in and raises RXDRDY again. */
int board_getc(void) {
  for (;;) {
    if (UART_EVENTS_ERROR) { /* overrun/framing: clear and keep receiving (PS UART ERRORSRC) */
      UART_EVENTS_ERROR = 0;
      UART_ERRORSRC = UART_ERRORSRC;
    }
    if (UART_EVENTS_RXDRDY) {
      UART_EVENTS_RXDRDY = 0;
      return (int)(UART_RXD & 0xFFu);
    }
  }
}

void board_exit(int code) {
  sg_arm_exit(code); /* board_putc returns only once its byte is on the wire */
}
