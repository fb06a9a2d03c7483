/* edgec's qemu TCG plugin: counts the guest instructions a program executes.
 *
 *   qemu-aarch64 -cpu cortex-a72 -plugin libedgec-icount.so,out=FILE[,hot=FILE2] ./program
 *
 * At translation, each translated block gets an inline add of its instruction count to one
 * counter, executed every time the block runs; at exit the total is written to FILE as a
 * decimal number. A block left early (a fault, an exception) is counted whole, and several
 * guest threads add to the one counter without atomics: run the program with one thread.
 *
 * With hot=FILE2, each block also gets its own execution counter, and at exit the HOT_BLOCKS
 * blocks that executed the most instructions are written to FILE2, one per line:
 * "ADDRESS EXECUTIONS INSTRUCTIONS HEXBYTES" (the block's machine code, for llvm-mca).
 *
 * Debian ships no qemu-plugin.h, so the part of qemu's plugin API (version 1, qemu 7.x) this
 * uses is declared here: qemu resolves these symbols in its own binary when it loads the plugin.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*atexit_cb)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, atexit_cb cb, void *userdata);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);

EXPORT int qemu_plugin_version = 1;

#define HOT_BLOCKS 512
#define MAX_BYTES 1024

struct block {  /* one translation of a block; a block translated again gets another */
  uint64_t vaddr, runs;
  size_t insns, size;
  unsigned char code[MAX_BYTES];
  struct block *next;
};

static uint64_t executed;
static char out_path[4096], hot_path[4096];
static struct block *blocks;

static void track(struct qemu_plugin_tb *tb, size_t n) {
  struct block *b = calloc(1, sizeof *b);
  if (!b) return;
  b->vaddr = qemu_plugin_tb_vaddr(tb);
  b->insns = n;
  for (size_t i = 0; i < n; ++i) {
    const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    size_t len = qemu_plugin_insn_size(insn);
    if (b->size + len > MAX_BYTES) break;
    memcpy(b->code + b->size, qemu_plugin_insn_data(insn), len);
    b->size += len;
  }
  b->next = blocks;
  blocks = b;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->runs, 1);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  size_t n = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
  if (hot_path[0]) track(tb, n);
}

static void write_hot(void) {
  FILE *f = fopen(hot_path, "w");
  if (!f) return;
  for (int k = 0; k < HOT_BLOCKS; ++k) {  /* the next hottest, by instructions executed */
    struct block *best = NULL;
    for (struct block *b = blocks; b; b = b->next) {
      if (b->runs && (!best || b->runs * b->insns > best->runs * best->insns)) best = b;
    }
    if (!best) break;
    fprintf(f, "%llx %llu %zu ", (unsigned long long)best->vaddr,
            (unsigned long long)best->runs, best->insns);
    for (size_t i = 0; i < best->size; ++i) fprintf(f, "%02x", best->code[i]);
    fprintf(f, "\n");
    best->runs = 0;
  }
  fclose(f);
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
  (void)id;
  (void)userdata;
  FILE *f = fopen(out_path, "w");
  if (f) {
    fprintf(f, "%llu\n", (unsigned long long)executed);
    fclose(f);
  }
  if (hot_path[0]) write_hot();
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
                               char **argv) {
  (void)info;
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "out=", 4) == 0) {
      snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    } else if (strncmp(argv[i], "hot=", 4) == 0) {
      snprintf(hot_path, sizeof hot_path, "%s", argv[i] + 4);
    }
  }
  if (!out_path[0]) {
    fprintf(stderr, "edgec icount plugin: give out=FILE\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
