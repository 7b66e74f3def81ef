/*
 * sandglass instruction counter: a QEMU TCG plugin that counts the guest instructions the
 * emulated program executes and writes them to a file when it exits:
 *     instructions <total>                                  (always)
 *     tb <guest address, hex> <instructions> <executions>   (with blocks=on: one line per
 *                                                            executed translation block)
 * compile/bench.py reads the total; compile/profile.py maps the blocks to the model's kernels.
 *
 * Instructions, not cycles: QEMU models no pipeline, caches or timing.
 *
 * Counting is inline (no callback per instruction): when a translation block is translated,
 * "add n_insns to the total" (and with blocks=on "add 1 to this block's executions") is
 * attached to the block's execution.  Use one guest thread (TVM_NUM_THREADS=1, LiteRT
 * num_threads=1): the inline adds are not atomic across vCPUs.
 *
 * Usage: qemu-aarch64 -plugin libinsncount.so,outfile=/tmp/count.txt[,blocks=on] ./program
 * Plugin API: https://www.qemu.org/docs/master/devel/tcg-plugins.html (QEMU 7.2 header,
 * built against Debian's qemu source by compile/backends/aarch64/qemu_plugin/__init__.py).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

struct block {              /* one translation of one block (a block may be translated again) */
    uint64_t vaddr;
    uint64_t n_insns;
    uint64_t executions;
    struct block *next;
};

static uint64_t instructions;     /* guest instructions executed so far */
static char *outfile;             /* where the counts go at exit (stderr if not given) */
static bool per_block;            /* blocks=on */
static struct block *blocks;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions,
                                             qemu_plugin_tb_n_insns(tb));
    if (!per_block) {
        return;
    }
    struct block *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return;
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = qemu_plugin_tb_n_insns(tb);
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->executions, 1);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = outfile ? fopen(outfile, "w") : stderr;
    if (f == NULL) {
        return;
    }
    fprintf(f, "instructions %" PRIu64 "\n", instructions);
    for (struct block *b = blocks; b != NULL; b = b->next) {
        if (b->executions) {
            fprintf(f, "tb %" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->vaddr, b->n_insns,
                    b->executions);
        }
    }
    if (f != stderr) {
        fclose(f);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            outfile = strdup(argv[i] + 8);
        } else if (strcmp(argv[i], "blocks=on") == 0) {
            per_block = true;
        } else {
            fprintf(stderr, "insncount: unknown argument '%s' (use outfile=PATH, blocks=on)\n",
                    argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
