/* sandglass firmware main: run the model on the embedded inputs and report.
 *
 * Output, parsed on the host with ONE regex (compile/backends/cortexm/project.py, LINE_RE):
 *   sg:out idx=<i> <instr|cycles>=<count> y=<v0>,<v1>,...     one line per inference
 *   sg:prof step=<k> count=<sum>     per kernel call, only when built with -DSG_PROFILE
 *   sg:summary arena=<bytes> stack=<bytes> n=<inferences>     once, at the end
 * The stack high-water mark is measured by painting the unused stack before the first
 * inference and finding the deepest overwritten word afterwards.
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

int main(void) {
  board_init();
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
