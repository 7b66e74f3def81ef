/*
 * sandglass instruction counter: a QEMU TCG plugin that counts every guest instruction the
 * emulated program executes and writes the total to a file when it exits.
 *
 * Instructions, not cycles: QEMU models no pipeline, caches or timing.
 *
 * Counting is inline (no callback per instruction): when a translation block is translated,
 * one "add n_insns to the counter" is attached to the block's execution.  Use one guest thread
 * (TVM_NUM_THREADS=1, LiteRT num_threads=1): the inline add is not atomic across vCPUs.
 *
 * Usage: qemu-aarch64 -plugin libinsncount.so,outfile=/tmp/count.txt ./program
 * Plugin API: https://www.qemu.org/docs/master/devel/tcg-plugins.html (QEMU 7.2 header,
 * built against Debian's qemu source by compile/qemu_plugin/__init__.py).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t instructions;     /* guest instructions executed so far */
static char *outfile;             /* where the total goes at exit (stderr if not given) */

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions,
                                             qemu_plugin_tb_n_insns(tb));
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
            fprintf(stderr, "insncount: unknown argument '%s' (use outfile=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
