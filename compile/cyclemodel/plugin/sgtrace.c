/*
 * sandglass trace plugin: a QEMU TCG plugin that counts what the emulated program executes and
 * writes it to a file when QEMU exits.  Used by qemu-aarch64 (Raspberry Pi userland) and by
 * qemu-system-arm (Cortex-M boards).
 *
 * Arguments (comma-separated after the library path):
 *   outfile=PATH            where the counts go (stderr if not given)
 *   blocks=on               one record per executed translation block: its instructions' bytes,
 *                           executions and how often it was left by a jump (a "taken" exit: the
 *                           next block does not start where this one ends)
 *   on=HEX,off=HEX          count only between a block starting at `on` and one starting at
 *                           `off` (a window; e.g. the model's entry and the function main.c calls
 *                           right after it returns); implies blocks=on
 *   mem=on                  count loads and stores per block and memory region (bytes and
 *                           accesses); implies blocks=on
 *   region=NAME:START:END   a memory region [START, END) in hex for mem=on (up to 8; accesses
 *                           outside every region count as region -1, "other")
 *   marks=on                qemu-user: count only between two marks the program makes with a
 *                           system call no program makes otherwise, sched_get_priority_max with
 *                           policy MARK_ON / MARK_OFF (Python: os.sched_get_priority_max(...),
 *                           which fails with EINVAL).  Outside the marks nothing is instrumented,
 *                           so start-up (Python importing TVM: billions of instructions) runs at
 *                           full speed; at each mark the plugin re-registers its callbacks, which
 *                           makes QEMU flush and retranslate the code.  Implies blocks=on.
 *
 * Output:
 *   instructions <total>                   (in the windows, in window mode)
 *   windows <n>                            (window or marks mode: how many were opened)
 *   region <index> <name> <start> <end>
 *   tb <id> <vaddr> <instructions> <executions> <taken> <bytes>
 *        bytes: the instructions' bytes in hex as stored in memory, one word per
 *        instruction, joined by ':'
 *   mem <id> <region index> <loads> <load bytes> <stores> <store bytes>
 * A block translated twice (same vaddr) has two ids.
 *
 * Counts, not time: QEMU models no pipeline, caches or timing (compile/cyclemodel turns the
 * blocks into estimated cycles with LLVM's scheduling models).
 *
 * Without blocks, counting is inline (no callback per block).  Use one guest thread: the counters
 * are not atomic across vCPUs.
 * Plugin API: https://www.qemu.org/docs/master/devel/tcg-plugins.html (QEMU 7.2 header, built
 * against Debian's qemu source by compile/cyclemodel/plugin/__init__.py).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_REGIONS 8

struct traffic {
    uint64_t loads, load_bytes, stores, store_bytes;
};

struct block {              /* one translation of one block (a block may be translated again) */
    uint64_t id;
    uint64_t vaddr;
    uint64_t size;          /* bytes */
    uint64_t n_insns;
    uint64_t executions;
    uint64_t taken;
    bool opens, closes;     /* starts at on= / off= */
    char *bytes;
    struct traffic *mem;    /* MAX_REGIONS + 1 entries, the last is "other"; NULL without mem=on */
    struct block *next;
};

struct region {
    char *name;
    uint64_t start, end;
};

static uint64_t instructions;
static uint64_t windows;
static char *outfile;
static bool per_block, window, count_mem;
static uint64_t on_addr, off_addr;
static bool counting = true;      /* false outside the windows in window mode */
static struct block *blocks, *last;
static uint64_t next_id;
static struct region regions[MAX_REGIONS];
static int n_regions;

#define MARK_SYSCALL 125                /* sched_get_priority_max on aarch64 (and arm64 Linux) */
#define MARK_ON 0x53474f4eu             /* "SGON" */
#define MARK_OFF 0x53474f46u            /* "SGOF" */
static bool marks;
static bool instrumented;               /* marks=on: callbacks are registered (inside the marks) */
static void install(qemu_plugin_id_t id);

static void on_exec(unsigned int vcpu, void *userdata)
{
    (void)vcpu;
    struct block *b = userdata;
    if (b->opens) {
        counting = true;
        windows++;
    } else if (b->closes) {
        counting = false;
    }
    if (last != NULL && b->vaddr != last->vaddr + last->size) {
        last->taken++;
    }
    last = counting ? b : NULL;
    if (counting) {
        b->executions++;
        instructions += b->n_insns;
    }
}

static void on_mem(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *userdata)
{
    (void)vcpu;
    if (!counting) {
        return;
    }
    struct block *b = userdata;
    int r = 0;
    while (r < n_regions && !(vaddr >= regions[r].start && vaddr < regions[r].end)) {
        r++;
    }
    struct traffic *t = &b->mem[r];
    uint64_t bytes = 1u << qemu_plugin_mem_size_shift(info);
    if (qemu_plugin_mem_is_store(info)) {
        t->stores++;
        t->store_bytes += bytes;
    } else {
        t->loads++;
        t->load_bytes += bytes;
    }
}

static bool thumb;                /* 32-bit Arm guest: M-profile cores run Thumb only */

/* The instruction's length.  QEMU's Arm translator reads the halfword after a block's last Thumb
 * instruction (is it the first half of a 32-bit one?), and those bytes show up in that
 * instruction's data: take the length from the first halfword instead. */
static size_t insn_len(struct qemu_plugin_insn *insn)
{
    size_t k = qemu_plugin_insn_size(insn);
    if (thumb && k >= 2) {
        const uint8_t *data = qemu_plugin_insn_data(insn);
        unsigned hw = data[0] | (unsigned)data[1] << 8;
        size_t real = (hw >> 11) >= 0x1d ? 4 : 2;
        return real < k ? real : k;
    }
    return k;
}

static char *hex_bytes(struct qemu_plugin_tb *tb, size_t n, uint64_t *size)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        len += 2 * insn_len(qemu_plugin_tb_get_insn(tb, i)) + 1;
    }
    char *out = malloc(len + 1), *p = out;
    if (out == NULL) {
        return NULL;
    }
    *size = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *data = qemu_plugin_insn_data(insn);
        size_t k = insn_len(insn);
        *size += k;
        if (i) {
            *p++ = ':';
        }
        for (size_t j = 0; j < k; j++) {
            p += sprintf(p, "%02x", data[j]);
        }
    }
    *p = '\0';
    return out;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (marks && !instrumented) {
        return;
    }
    if (!per_block) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions, n);
        return;
    }
    struct block *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return;
    }
    b->id = next_id++;
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->n_insns = n;
    b->bytes = hex_bytes(tb, n, &b->size);
    b->opens = window && b->vaddr == on_addr;
    b->closes = window && b->vaddr == off_addr;
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS, b);
    if (count_mem) {
        b->mem = calloc(MAX_REGIONS + 1, sizeof *b->mem);
        if (b->mem == NULL) {
            return;
        }
        for (size_t i = 0; i < n; i++) {
            qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, i), on_mem,
                                             QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, b);
        }
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    (void)vcpu; (void)a2; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num != MARK_SYSCALL || (a1 != MARK_ON && a1 != MARK_OFF) || (a1 == MARK_ON) == counting) {
        return;
    }
    counting = instrumented = a1 == MARK_ON;
    windows += counting;
    last = NULL;
    qemu_plugin_reset(id, install);     /* unregisters, flushes the translations, calls install */
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
    if (window || marks) {
        fprintf(f, "windows %" PRIu64 "\n", windows);
    }
    for (int r = 0; r < n_regions; r++) {
        fprintf(f, "region %d %s %" PRIx64 " %" PRIx64 "\n", r, regions[r].name,
                regions[r].start, regions[r].end);
    }
    for (struct block *b = blocks; b != NULL; b = b->next) {
        if (!b->executions) {
            continue;
        }
        fprintf(f, "tb %" PRIu64 " %" PRIx64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %s\n", b->id,
                b->vaddr, b->n_insns, b->executions, b->taken, b->bytes ? b->bytes : "-");
        for (int r = 0; b->mem != NULL && r <= n_regions; r++) {
            struct traffic *t = &b->mem[r == n_regions ? MAX_REGIONS : r];
            if (t->loads || t->stores) {
                fprintf(f, "mem %" PRIu64 " %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                        b->id, r == n_regions ? -1 : r, t->loads, t->load_bytes, t->stores,
                        t->store_bytes);
            }
        }
    }
    if (f != stderr) {
        fclose(f);
    }
}

static bool parse_region(const char *spec)
{
    char name[64];
    uint64_t start, end;
    if (n_regions == MAX_REGIONS ||
        sscanf(spec, "%63[^:]:%" SCNx64 ":%" SCNx64, name, &start, &end) != 3 || end <= start) {
        return false;
    }
    regions[n_regions++] = (struct region){strdup(name), start, end};
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    thumb = strcmp(info->target_name, "arm") == 0;
    bool has_on = false, has_off = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (strncmp(a, "outfile=", 8) == 0) {
            outfile = strdup(a + 8);
        } else if (strcmp(a, "blocks=on") == 0) {
            per_block = true;
        } else if (strcmp(a, "marks=on") == 0) {
            marks = true;
        } else if (strcmp(a, "mem=on") == 0) {
            count_mem = per_block = true;
        } else if (strncmp(a, "on=", 3) == 0) {
            on_addr = strtoull(a + 3, NULL, 16);
            has_on = true;
        } else if (strncmp(a, "off=", 4) == 0) {
            off_addr = strtoull(a + 4, NULL, 16);
            has_off = true;
        } else if (strncmp(a, "region=", 7) == 0) {
            ok = parse_region(a + 7);
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "sgtrace: bad argument '%s' (use outfile=PATH, blocks=on, mem=on, "
                            "on=HEX, off=HEX, marks=on, region=NAME:START:END)\n", a);
            return -1;
        }
    }
    if (has_on != has_off) {
        fprintf(stderr, "sgtrace: on= and off= go together\n");
        return -1;
    }
    if (has_on) {
        window = per_block = true;
        counting = false;
    }
    if (marks) {
        per_block = true;
        counting = false;
    }
    install(id);
    return 0;
}

static void install(qemu_plugin_id_t id)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    if (marks) {
        qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    }
}
