/* sandglass firmware main: run the model on the embedded inputs and report, or (built with
 * -DSG_LINK) serve inferences to the host over the console link.
 *
 * Text lines, parsed on the host with ONE regex (compile/backends/cortexm/project.py, LINE_RE):
 *   sg:boot clock=<Hz>                once, first: the core clock board_init set up
 *   sg:out idx=<i> <instr|cycles>=<count> y=<v0>,<v1>,...     one line per inference
 *   sg:prof step=<k> count=<sum>     per kernel call, only when built with -DSG_PROFILE
 *   sg:summary arena=<bytes> stack=<bytes> n=<inferences>     once, at the end
 * The stack high-water mark is measured by painting the unused stack before the first
 * inference and finding the deepest overwritten word afterwards.
 *
 * The link (compile/backends/cortexm/link.py): after the boot line, frames both ways,
 *   'S' 'G' <type> <length: u32 LE> <payload> <CRC-32 of type, length and payload: u32 LE>
 * board -> host: 'R' ready (payload: input bytes, output bytes, clock Hz as u32 LE),
 *                'O' an inference (payload: output bytes, then the count as u64 LE),
 *                'E' a frame refused (payload: 1 = bad CRC, 2 = bad length, 3 = unknown type);
 * host -> board: 'I' one input (payload: input bytes), 'Q' quit (the firmware exits 0).
 * Bytes that are not a frame are skipped up to the next 'S' 'G'.
 */
#include <stdint.h>

#include "board.h"
#include "inputs.h"
#include "model.h"

#define STACK_PAINT 0xA5A5A5A5u

extern uint32_t __stack_limit, __stack_top;

static int8_t output[SG_OUTPUT_BYTES];

static void put_str(const char *s) {
  while (*s) board_putc(*s++);
}

static void put_int(int64_t v) {
  char buf[24];
  int n = 0;
  uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1u : (uint64_t)v;
  if (v < 0) board_putc('-');
  do {
    buf[n++] = (char)('0' + u % 10u);
    u /= 10u;
  } while (u);
  while (n) board_putc(buf[--n]);
}

#ifndef SG_LINK
static void paint_stack(void) {
  volatile uint32_t *p = &__stack_limit;
  volatile uint32_t *sp = (volatile uint32_t *)__builtin_frame_address(0) - 64;
  while (p < sp) *p++ = STACK_PAINT;
}

static uint32_t stack_used(void) {
  const uint32_t *p = &__stack_limit;
  while (p < &__stack_top && *p == STACK_PAINT) p++;
  return (uint32_t)((uintptr_t)&__stack_top - (uintptr_t)p);
}
#endif

static void put_boot(void) {
  put_str("sg:boot clock=");
  put_int(board_clock_hz());
  board_putc('\n');
}

#ifdef SG_LINK
static int8_t input[SG_INPUT_BYTES] __attribute__((aligned(16)));

static uint32_t crc32(uint32_t crc, const uint8_t *p, uint32_t n) {
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static uint32_t get_u32(void) {
  uint32_t v = 0;
  for (int k = 0; k < 4; k++) v |= (uint32_t)(uint8_t)board_getc() << (8 * k);
  return v;
}

static void send_frame(char type, const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb) {
  uint8_t head[5];
  head[0] = (uint8_t)type;
  put_u32(head + 1, na + nb);
  uint32_t crc = crc32(crc32(crc32(0, head, 5), a, na), b, nb);
  board_putc('S');
  board_putc('G');
  for (int k = 0; k < 5; k++) board_putc((char)head[k]);
  for (uint32_t k = 0; k < na; k++) board_putc((char)a[k]);
  for (uint32_t k = 0; k < nb; k++) board_putc((char)b[k]);
  put_u32(head, crc);
  for (int k = 0; k < 4; k++) board_putc((char)head[k]);
}

static void send_error(uint8_t code) { send_frame('E', &code, 1, 0, 0); }

int main(void) {
  board_init();
  put_boot();
  uint8_t ready[12];
  put_u32(ready, SG_INPUT_BYTES);
  put_u32(ready + 4, SG_OUTPUT_BYTES);
  put_u32(ready + 8, board_clock_hz());
  send_frame('R', ready, sizeof ready, 0, 0);
  for (;;) {
    if ((char)board_getc() != 'S') continue;
    if ((char)board_getc() != 'G') continue;
    uint8_t head[5];
    head[0] = (uint8_t)board_getc();
    uint32_t length = get_u32();
    put_u32(head + 1, length);
    if (head[0] == 'Q' && length == 0) {
      if (get_u32() == crc32(0, head, 5)) return 0;
      send_error(1);
      continue;
    }
    if (head[0] != 'I') {
      send_error(3);
      continue;
    }
    if (length != SG_INPUT_BYTES) {
      send_error(2);
      continue;
    }
    for (uint32_t k = 0; k < length; k++) input[k] = (int8_t)board_getc();
    if (get_u32() != crc32(crc32(0, head, 5), (const uint8_t *)input, length)) {
      send_error(1);
      continue;
    }
    uint64_t start = board_cycles();
    sg_model_run(input, output);
    uint64_t count = board_cycles() - start;
    uint8_t tail[8];
    for (int k = 0; k < 8; k++) tail[k] = (uint8_t)(count >> (8 * k));
    send_frame('O', (const uint8_t *)output, SG_OUTPUT_BYTES, tail, 8);
  }
}
#else
int main(void) {
  board_init();
  put_boot();
  paint_stack();
  int failed = 0;
  for (int i = 0; i < SG_NUM_INPUTS; i++) {
    uint64_t start = board_cycles();
    int rc = sg_model_run(sg_inputs[i], output);
    uint64_t count = board_cycles() - start;
    failed |= rc;
    put_str("sg:out idx=");
    put_int(i);
    board_putc(' ');
    put_str(board_counter_name);
    board_putc('=');
    put_int((int64_t)count);
    put_str(" y=");
    for (int k = 0; k < SG_OUTPUT_BYTES; k++) {
      if (k) board_putc(',');
      put_int(output[k]);
    }
    board_putc('\n');
  }
#ifdef SG_PROFILE
  for (int k = 0; k < SG_NUM_STEPS; k++) { /* per-step split, summed over the inferences */
    put_str("sg:prof step=");
    put_int(k);
    put_str(" count=");
    put_int((int64_t)sg_profile[k]);
    board_putc('\n');
  }
#endif
  put_str("sg:summary arena=");
  put_int(SG_ARENA_BYTES);
  put_str(" stack=");
  put_int(stack_used());
  put_str(" n=");
  put_int(SG_NUM_INPUTS);
  board_putc('\n');
  return failed;
}
#endif
