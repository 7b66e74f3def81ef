/*
 * sandglass instruction profile: a QEMU TCG plugin that counts how often every translation
 * block executes and writes, at exit, one line per executed block:
 *     tb <guest address, hex> <instructions in the block> <executions>
 * compile/profile.py maps the addresses to the symbols of the model library.
 *
 * Counting is inline (one add per block execution, no callback); use one guest thread.
 * Usage: qemu-aarch64 -plugin libinsnprof.so,outfile=/tmp/tbs.txt ./program
 * Plugin API: https://www.qemu.org/docs/master/devel/tcg-plugins.html
 */
#include <inttypes.h>
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

static struct block *blocks;
static char *outfile;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
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
        } else {
            fprintf(stderr, "insnprof: unknown argument '%s' (use outfile=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
