/*
 * harness_cost: a QEMU TCG plugin that counts the instructions a guest executes,
 * per translation block, while the harness has it armed, and attributes them to
 * "regions": the dynamic extent of a kernel function (a NIC's NAPI poll, its tx
 * clean, a sender's ndo_start_xmit), from the first block of the function to the
 * block its caller resumes at.
 *
 * Build: gcc -shared -fPIC -O2 $(pkg-config --cflags glib-2.0) -I<dir of qemu-plugin.h>
 * Load:  qemu-system-x86_64 ... -plugin harness_cost.so,sock=/path/ctl.sock
 *
 * Control (one line per command on the UNIX socket, one line back, "ok ..." or "error ..."):
 *   hello                  -> ok harness-cost <FORMAT> api <QEMU_PLUGIN_VERSION> vcpus <n>
 *   region <id> <hexaddr>  the region id (1..IRQ_REGION-1) starts at the block at that address (0: none)
 *   probe <id> <hexaddr> <arg> [mark]  the same, but transparent: its instructions stay with the
 *                          region it was called from; only its calls (inside a region), what they
 *                          returned, their argument number <arg> (1..4: rdi, rsi, rdx, rcx) and their
 *                          instructions (inclusive) are counted; with "mark", a call also marks the
 *                          instance of the region it was called from, which is then counted twice:
 *                          with all instances and with the marked ones
 *   irqentry <hexstart> <hexend> <stride>  interrupt entries: start, and every stride bytes below end
 *                          (the per-vector stubs; stride 0: start only); "irqentry clear": none
 *   arm                    zero every count and region state, then count
 *   disarm                 stop counting (the counts stay for dump)
 *   dump <path>            write the counts of the last armed window to path
 *
 * How a region is followed, per vCPU: at the block starting at a region's address
 * (the function's entry: the stack pointer points at the return address), the
 * return address and the stack pointer are kept; the region ends at the first
 * block that starts at that return address with the stack pointer one slot
 * higher (the caller resumed). Regions nest (a tx clean inside a poll); each
 * block's instructions go to the innermost open region (0: none).
 * An interrupt taken inside a region (a timer tick, another NIC's interrupt) is
 * not the region's work: at an interrupt entry (the IDT stubs and system vectors,
 * where the CPU's frame is on the stack: RIP at [sp], RSP at [sp+24]) a frame of
 * the region IRQ_REGION opens, and closes where the interrupted code resumes
 * (that RIP with that RSP, after iret); a region function called from the
 * handler (a NAPI poll run on irq exit) is its own region again.
 * Counting is by whole blocks at their start: TCG takes interrupts only between blocks.
 *
 * Each closed instance of a function region is also counted by what it returned
 * (RAX at the caller's resume, 0..64, more counted as 65): a NAPI poll returns the
 * frames it received, so polls of one frame, of several, and polls that found none
 * (the device interrupting again with nothing new) are told apart by their effect. An instance's own
 * instructions are those not in a region nested in it. Instances that called a marking probe
 * (a NAPI poll that scheduled its NAPI again: the device interrupted during it) are also
 * counted apart, the same way.
 */
#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define FORMAT 3
#define MAX_REGIONS 16     /* 0 = outside every region */
#define IRQ_REGION (MAX_REGIONS - 1)
#define MAX_IRQ_RANGES 64
#define MAX_DEPTH 16
#define MAX_SLOTS (1 << 18) /* distinct kernel blocks; more go to the overflow slot */
#define USER_SLOT 0         /* every user-space block */
#define OVERFLOW_SLOT 1
#define FIRST_SLOT 2
#define KERNEL_START 0xffff800000000000ULL

struct slot {
    uint64_t vaddr;
    uint32_t n_insns;
    uint32_t gen;  /* the configuration `kind` was computed for */
    int kind;      /* 0: plain, 1..IRQ_REGION-1: a region's entry, IRQ_REGION: an interrupt entry */
};

struct frame {
    int region;
    int attr;         /* the region its instructions are counted in (a probe's: its caller's) */
    int owner;        /* the frame whose `own` they add to (-1: none) */
    int parent;       /* the region the function was called from */
    uint64_t arg;     /* a probe's chosen argument at entry */
    uint64_t started; /* the vCPU's instructions at entry (a probe's inclusive count) */
    uint64_t own; /* instructions counted with this frame innermost */
    uint64_t resume_sp; /* the stack pointer where the caller (or the interrupted code) resumes */
    uint64_t ret;       /* where it resumes */
    bool marked;        /* a marking probe was called from this instance */
};

#define MAX_RETURNED 65 /* instances by return value 0..64 (NAPI's budget); more in the last */

struct instances {
    uint64_t count[MAX_RETURNED + 1];
    uint64_t insns[MAX_RETURNED + 1]; /* their own instructions (a probe's: inclusive) */
    uint64_t args[MAX_RETURNED + 1];  /* instances by their chosen argument (probes) */
};

struct vcpu {
    struct qemu_plugin_register *sp_reg;
    struct qemu_plugin_register *ret_reg;
    struct qemu_plugin_register *arg_regs[5]; /* rdi, rsi, rdx, rcx by argument number 1..4 */
    struct instances closed[MAX_REGIONS][MAX_REGIONS]; /* [region][the region it was called from] */
    struct instances marked[MAX_REGIONS][MAX_REGIONS]; /* the marked ones among them */
    uint64_t executed; /* instructions while armed */
    GByteArray *buf;
    int depth;
    struct frame stack[MAX_DEPTH];
    uint64_t entries[MAX_REGIONS];
    uint64_t lost; /* region entries whose return address could not be read */
};

static struct slot slots[MAX_SLOTS];
static unsigned n_slots = FIRST_SLOT;
static GHashTable *slot_of; /* (vaddr, n_insns) key -> slot + 1 */
static GMutex slot_lock;

static uint64_t region_start[MAX_REGIONS];
static bool region_probe[MAX_REGIONS];
static int probe_arg[MAX_REGIONS]; /* which argument a probe records */
static bool probe_marks[MAX_REGIONS]; /* a call of this probe marks the instance it was called from */
static uint64_t irq_ranges[MAX_IRQ_RANGES][3]; /* start, end, stride */
static int n_irq_ranges;
static uint32_t config_gen = 1; /* bumped by every region or irqentry command */
static struct qemu_plugin_scoreboard *armed_board;
static qemu_plugin_u64 armed;
static int max_vcpus;
static struct vcpu *vcpus;
static uint64_t *counts; /* [vcpu][slot][region] */

static inline uint64_t *count_at(int vcpu, unsigned slot, int region)
{
    return &counts[((size_t)vcpu * MAX_SLOTS + slot) * MAX_REGIONS + region];
}

static uint64_t read_u64_reg(struct vcpu *v, struct qemu_plugin_register *reg)
{
    g_byte_array_set_size(v->buf, 0);
    if (qemu_plugin_read_register(reg, v->buf) < 8) {
        return 0;
    }
    uint64_t val;
    memcpy(&val, v->buf->data, 8);
    return val;
}

static int kind_of(uint64_t vaddr)
{
    for (int r = 1; r < IRQ_REGION; r++) {
        if (region_start[r] && region_start[r] == vaddr) {
            return r;
        }
    }
    for (int i = 0; i < n_irq_ranges; i++) {
        uint64_t start = irq_ranges[i][0], end = irq_ranges[i][1], stride = irq_ranges[i][2];
        /* Only an entry's first block: later blocks of the entry code run with more on the stack. */
        if (vaddr == start || (stride && vaddr > start && vaddr < end && (vaddr - start) % stride == 0)) {
            return IRQ_REGION;
        }
    }
    return 0;
}

static bool read_u64_mem(struct vcpu *v, uint64_t addr, uint64_t *val)
{
    g_byte_array_set_size(v->buf, 0);
    if (!qemu_plugin_read_memory_vaddr(addr, v->buf, 8)) {
        return false;
    }
    memcpy(val, v->buf->data, 8);
    return true;
}

static inline int clip(int64_t value)
{
    return value < 0 ? 0 : (value > MAX_RETURNED ? MAX_RETURNED : (int)value);
}

static void push(struct vcpu *v, int region, uint64_t resume_sp, uint64_t ret)
{
    if (v->depth == MAX_DEPTH) {
        v->lost++;
        return;
    }
    struct frame *below = v->depth ? &v->stack[v->depth - 1] : NULL;
    struct frame *f = &v->stack[v->depth];
    f->region = region;
    f->parent = below ? below->attr : 0;
    f->attr = region_probe[region] ? f->parent : region;
    f->owner = region_probe[region] ? (below ? below->owner : -1) : v->depth;
    f->own = 0;
    f->started = v->executed;
    f->arg = region_probe[region] ? read_u64_reg(v, v->arg_regs[probe_arg[region]]) : 0;
    f->resume_sp = resume_sp;
    f->ret = ret;
    f->marked = false;
    if (probe_marks[region] && f->owner >= 0) {
        v->stack[f->owner].marked = true;
    }
    v->depth++;
    v->entries[region]++;
}

static void block_exec(unsigned int cpu, void *udata)
{
    uintptr_t packed = (uintptr_t)udata;
    unsigned slot = packed & 0xffffffff;
    uint32_t n = packed >> 32;
    struct vcpu *v = &vcpus[cpu];
    uint64_t vaddr = 0;
    int kind = 0;
    if (slot >= FIRST_SLOT) {
        struct slot *sl = &slots[slot];
        vaddr = sl->vaddr;
        if (sl->gen != config_gen) { /* benign race: any vCPU computes the same */
            sl->kind = kind_of(vaddr);
            sl->gen = config_gen;
        }
        kind = sl->kind;
    }

    /* Interrupts open a frame only inside a region: outside, nothing is attributed anyway. */
    if (vaddr && (v->depth || (kind && kind != IRQ_REGION))) {
        uint64_t sp = read_u64_reg(v, v->sp_reg);
        /* Resumed where a frame's caller (or interrupted code) resumes: that frame and every
         * one above it end (a frame above whose end was not seen cannot outlive it). From the
         * bottom: an interrupt taken right at a return resumes where the function's caller does. */
        for (int d = 0; d < v->depth; d++) {
            struct frame *f = &v->stack[d];
            if (vaddr == f->ret && sp == f->resume_sp) {
                if (f->region != IRQ_REGION) {
                    int k = clip((int32_t)read_u64_reg(v, v->ret_reg));
                    uint64_t insns = region_probe[f->region] ? v->executed - f->started : f->own;
                    for (int m = 0; m <= (int)f->marked; m++) {
                        struct instances *in = m ? &v->marked[f->region][f->parent] : &v->closed[f->region][f->parent];
                        in->count[k]++;
                        in->insns[k] += insns;
                        in->args[clip((int64_t)f->arg)]++;
                    }
                }
                v->depth = d;
                break;
            }
        }
        uint64_t ret, irq_sp;
        if (kind == IRQ_REGION && v->depth) {
            struct frame *top = &v->stack[v->depth - 1];
            if (!read_u64_mem(v, sp, &ret) || !read_u64_mem(v, sp + 24, &irq_sp)) {
                v->lost++;
            } else if (top->region != IRQ_REGION || top->ret != ret || top->resume_sp != irq_sp) {
                push(v, IRQ_REGION, irq_sp, ret);
            }
        } else if (kind && kind != IRQ_REGION && (v->depth || !region_probe[kind])) {
            /* A probe counts only calls made inside a region. */
            if (read_u64_mem(v, sp, &ret)) {
                push(v, kind, sp + 8, ret);
            } else {
                v->lost++;
            }
        }
    }
    int region = 0;
    if (v->depth) {
        struct frame *top = &v->stack[v->depth - 1];
        region = top->attr;
        if (top->owner >= 0) {
            v->stack[top->owner].own += n;
        }
    }
    v->executed += n;
    *count_at(cpu, slot, region) += n;
}

static unsigned slot_for(uint64_t vaddr, uint32_t n)
{
    if (vaddr < KERNEL_START) {
        return USER_SLOT;
    }
    g_mutex_lock(&slot_lock);
    /* The key is the block's start and length: a block translated again at the same
     * address with another length (a page boundary, a flush) is its own slot. */
    GString *k = g_string_new(NULL);
    g_string_printf(k, "%" PRIx64 ":%u", vaddr, n);
    gpointer found = g_hash_table_lookup(slot_of, k->str);
    unsigned slot;
    if (found) {
        slot = GPOINTER_TO_UINT(found) - 1;
        g_string_free(k, TRUE);
    } else if (n_slots < MAX_SLOTS) {
        slot = n_slots++;
        slots[slot].vaddr = vaddr;
        slots[slot].n_insns = n;
        g_hash_table_insert(slot_of, g_string_free(k, FALSE), GUINT_TO_POINTER(slot + 1));
    } else {
        slot = OVERFLOW_SLOT;
        g_string_free(k, TRUE);
    }
    g_mutex_unlock(&slot_lock);
    return slot;
}

static void block_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    uint32_t n = qemu_plugin_tb_n_insns(tb);
    unsigned slot = slot_for(vaddr, n);
    uintptr_t packed = ((uintptr_t)n << 32) | slot;
    /* Only while armed: outside a window a block costs one compare. */
    qemu_plugin_register_vcpu_tb_exec_cond_cb(tb, block_exec, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_COND_NE,
                                              armed, 0, (void *)packed);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int cpu)
{
    struct vcpu *v = &vcpus[cpu];
    v->buf = g_byte_array_new();
    g_autoptr(GArray) regs = qemu_plugin_get_registers();
    for (guint i = 0; i < regs->len; i++) {
        qemu_plugin_reg_descriptor *d = &g_array_index(regs, qemu_plugin_reg_descriptor, i);
        if (!strcmp(d->name, "rsp")) {
            v->sp_reg = d->handle;
        } else if (!strcmp(d->name, "rax")) {
            v->ret_reg = d->handle;
        }
        static const char *const arg_names[] = {NULL, "rdi", "rsi", "rdx", "rcx"};
        for (int a = 1; a <= 4; a++) {
            if (!strcmp(d->name, arg_names[a])) {
                v->arg_regs[a] = d->handle;
            }
        }
    }
    if (!v->sp_reg || !v->ret_reg || !v->arg_regs[1] || !v->arg_regs[2] || !v->arg_regs[3] || !v->arg_regs[4]) {
        qemu_plugin_outs("harness_cost: no rsp/rax/rdi/rsi/rdx/rcx register on this vCPU (not x86-64?)\n");
        abort();
    }
}

static void set_armed(uint64_t on)
{
    for (int i = 0; i < qemu_plugin_num_vcpus(); i++) {
        qemu_plugin_u64_set(armed, i, on);
    }
}

static int dump(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        return -errno;
    }
    int vcpus_now = qemu_plugin_num_vcpus();
    fprintf(f, "harness-cost %d vcpus %d slots %u max_slots %d\n", FORMAT, vcpus_now, n_slots, MAX_SLOTS);
    for (int r = 1; r < MAX_REGIONS; r++) {
        uint64_t entries = 0;
        for (int c = 0; c < vcpus_now; c++) {
            entries += vcpus[c].entries[r];
        }
        if (region_start[r] || (r == IRQ_REGION && n_irq_ranges)) {
            fprintf(f, "region %d %" PRIx64 " %" PRIu64 "\n", r, region_start[r], entries);
        }
    }
    for (int r = 1; r < IRQ_REGION; r++) {
        for (int p = 0; region_start[r] && p < MAX_REGIONS; p++) {
            for (int k = 0; k <= MAX_RETURNED; k++) {
                uint64_t count = 0, insns = 0, args = 0;
                for (int c = 0; c < vcpus_now; c++) {
                    count += vcpus[c].closed[r][p].count[k];
                    insns += vcpus[c].closed[r][p].insns[k];
                    args += vcpus[c].closed[r][p].args[k];
                }
                if (count) { /* region, the region it was called from, value, instances, instructions */
                    fprintf(f, "returned %d %d %d %" PRIu64 " %" PRIu64 "\n", r, p, k, count, insns);
                }
                if (args && region_probe[r]) { /* region, called from, second argument, instances */
                    fprintf(f, "argument %d %d %d %" PRIu64 "\n", r, p, k, args);
                }
                uint64_t marked = 0, marked_insns = 0;
                for (int c = 0; c < vcpus_now; c++) {
                    marked += vcpus[c].marked[r][p].count[k];
                    marked_insns += vcpus[c].marked[r][p].insns[k];
                }
                if (marked) { /* the same as "returned", of the marked instances only */
                    fprintf(f, "marked %d %d %d %" PRIu64 " %" PRIu64 "\n", r, p, k, marked, marked_insns);
                }
            }
        }
    }
    uint64_t lost = 0;
    for (int c = 0; c < vcpus_now; c++) {
        lost += vcpus[c].lost;
    }
    fprintf(f, "lost %" PRIu64 "\n", lost);
    for (int c = 0; c < vcpus_now; c++) { /* frames still open when the window closed */
        fprintf(f, "vcpu %d depth %d", c, vcpus[c].depth);
        for (int d = 0; d < vcpus[c].depth; d++) {
            fprintf(f, " %d:%" PRIx64 ":%" PRIx64, vcpus[c].stack[d].region, vcpus[c].stack[d].ret,
                    vcpus[c].stack[d].resume_sp);
        }
        fputc('\n', f);
    }
    for (unsigned s = 0; s < n_slots; s++) {
        uint64_t sum[MAX_REGIONS] = {0};
        int any = 0;
        for (int c = 0; c < vcpus_now; c++) {
            for (int r = 0; r < MAX_REGIONS; r++) {
                sum[r] += *count_at(c, s, r);
                any |= sum[r] != 0;
            }
        }
        if (!any) {
            continue;
        }
        fprintf(f, "tb %" PRIx64 " %u", slots[s].vaddr, s == USER_SLOT ? 0 : slots[s].n_insns);
        for (int r = 0; r < MAX_REGIONS; r++) {
            fprintf(f, " %" PRIu64, sum[r]);
        }
        fputc('\n', f);
    }
    return fclose(f) ? -errno : 0;
}

static void command(const char *line, char *reply, size_t len)
{
    char path[4096];
    int id, arg;
    uint64_t addr, end, stride;
    char mark[8] = "";
    if (!strcmp(line, "hello")) {
        snprintf(reply, len, "ok harness-cost %d api %d vcpus %d", FORMAT, QEMU_PLUGIN_VERSION,
                 qemu_plugin_num_vcpus());
    } else if (sscanf(line, "region %d %" SCNx64, &id, &addr) == 2) {
        if (id < 1 || id >= IRQ_REGION) {
            snprintf(reply, len, "error region id %d outside 1..%d", id, IRQ_REGION - 1);
            return;
        }
        region_start[id] = addr;
        region_probe[id] = false;
        probe_marks[id] = false;
        config_gen++;
        snprintf(reply, len, "ok");
    } else if (sscanf(line, "probe %d %" SCNx64 " %d %7s", &id, &addr, &arg, mark) >= 3) {
        if (id < 1 || id >= IRQ_REGION || arg < 1 || arg > 4 || (*mark && strcmp(mark, "mark"))) {
            snprintf(reply, len, "error probe id %d outside 1..%d, argument %d outside 1..4 or %s not \"mark\"",
                     id, IRQ_REGION - 1, arg, mark);
            return;
        }
        region_start[id] = addr;
        region_probe[id] = true;
        probe_arg[id] = arg;
        probe_marks[id] = *mark != 0;
        config_gen++;
        snprintf(reply, len, "ok");
    } else if (!strcmp(line, "irqentry clear")) {
        n_irq_ranges = 0;
        config_gen++;
        snprintf(reply, len, "ok");
    } else if (sscanf(line, "irqentry %" SCNx64 " %" SCNx64 " %" SCNu64, &addr, &end, &stride) == 3) {
        if (n_irq_ranges == MAX_IRQ_RANGES || end <= addr) {
            snprintf(reply, len, "error irqentry: full (%d) or empty range", MAX_IRQ_RANGES);
            return;
        }
        irq_ranges[n_irq_ranges][0] = addr;
        irq_ranges[n_irq_ranges][1] = end;
        irq_ranges[n_irq_ranges][2] = stride;
        n_irq_ranges++;
        config_gen++;
        snprintf(reply, len, "ok");
    } else if (!strcmp(line, "arm")) {
        set_armed(0);
        memset(counts, 0, sizeof(uint64_t) * (size_t)max_vcpus * MAX_SLOTS * MAX_REGIONS);
        for (int c = 0; c < max_vcpus; c++) {
            vcpus[c].depth = 0;
            vcpus[c].executed = 0;
            vcpus[c].lost = 0;
            memset(vcpus[c].entries, 0, sizeof(vcpus[c].entries));
            memset(vcpus[c].closed, 0, sizeof(vcpus[c].closed));
            memset(vcpus[c].marked, 0, sizeof(vcpus[c].marked));
        }
        set_armed(1);
        snprintf(reply, len, "ok");
    } else if (!strcmp(line, "disarm")) {
        set_armed(0);
        snprintf(reply, len, "ok");
    } else if (sscanf(line, "dump %4095s", path) == 1) {
        int err = dump(path);
        snprintf(reply, len, err ? "error dump %s: %s" : "ok", path, strerror(-err));
    } else {
        snprintf(reply, len, "error unknown command: %.200s", line);
    }
}

static void *control(void *arg)
{
    int server = (int)(intptr_t)arg;
    for (;;) {
        int conn = accept(server, NULL, NULL);
        if (conn < 0) {
            continue;
        }
        FILE *in = fdopen(conn, "r+");
        char line[4200], reply[4400];
        while (in && fgets(line, sizeof(line), in)) {
            line[strcspn(line, "\r\n")] = 0;
            command(line, reply, sizeof(reply));
            fprintf(in, "%s\n", reply);
            fflush(in);
        }
        if (in) {
            fclose(in);
        } else {
            close(conn);
        }
    }
    return NULL;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *sock = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "sock=", 5)) {
            sock = argv[i] + 5;
        }
    }
    if (!info->system_emulation || !sock) {
        fprintf(stderr, "harness_cost: needs system emulation and sock=PATH\n");
        return -1;
    }
    max_vcpus = info->system.max_vcpus;
    vcpus = g_new0(struct vcpu, max_vcpus);
    counts = g_new0(uint64_t, (size_t)max_vcpus * MAX_SLOTS * MAX_REGIONS);
    slot_of = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    armed_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    armed = qemu_plugin_scoreboard_u64(armed_board);

    int server = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (server < 0 || strlen(sock) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "harness_cost: cannot make a socket at %s\n", sock);
        return -1;
    }
    strcpy(addr.sun_path, sock);
    unlink(sock);
    if (bind(server, (struct sockaddr *)&addr, sizeof(addr)) || listen(server, 4)) {
        fprintf(stderr, "harness_cost: bind/listen %s: %s\n", sock, strerror(errno));
        return -1;
    }
    pthread_t thread;
    pthread_create(&thread, NULL, control, (void *)(intptr_t)server);
    pthread_detach(thread);

    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, block_trans);
    return 0;
}
