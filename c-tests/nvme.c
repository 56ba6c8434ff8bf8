/* NVMe passthrough (RB_ENGINE_URING_CMD) on a real NVMe namespace, against the block io_uring
 * engine on the same namespace: values of every size (larger than one NVMe command, and from
 * unaligned caller memory, which must be bounced), batched calls, checkpoints and recovery
 * through either name of the namespace (identity is the superblock's device id, never the
 * path), the one-writer rule across both names, and the same bytes and reports whichever
 * engine reads them.
 *
 * `make nvme-test` runs it in a QEMU guest with an emulated NVMe controller (RB_TEST_NVME_CHAR
 * = /dev/ng0n1, RB_TEST_NVME_BLOCK = /dev/nvme0n1); elsewhere every case skips. */
#include "test.h"

#define SLOT_BYTES (1u << 20)
#define KEYS 48
#define BATCH 24

static const char *char_dev, *block_dev;

struct via {
    const char *label;
    const char **path;
    uint32_t engine;
};
static const struct via PASSTHROUGH = {"uring_cmd via the character device", &char_dev, RB_ENGINE_URING_CMD};
static const struct via PASSTHROUGH_BLOCK = {"uring_cmd via the block device", &block_dev, RB_ENGINE_URING_CMD};
static const struct via BLOCK = {"io_uring via the block device", &block_dev, RB_ENGINE_IO_URING};

static int need_nvme(void) {
    char_dev = getenv("RB_TEST_NVME_CHAR");
    block_dev = getenv("RB_TEST_NVME_BLOCK");
    return char_dev && *char_dev && block_dev && *block_dev;
}
#define NEED_NVME()                                                                                  \
    do {                                                                                             \
        if (!need_nvme()) SKIP("RB_TEST_NVME_CHAR/RB_TEST_NVME_BLOCK not set (make nvme-test runs this in a QEMU guest)"); \
    } while (0)

/* Sizes that cross an LBA, a page, and one NVMe command (the guest's is 508 KiB or less). */
static size_t value_len(int k) {
    static const size_t sizes[] = {1, 511, 4095, 4096, 4097, 65536, 131073, 524288, 600000, SLOT_BYTES - 8192};
    return sizes[k % 10] + (size_t)k;
}
static void fill(uint8_t *buf, size_t len, int k) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(i * 131 + (size_t)k * 7 + (i >> 12));
}
static void key_of(char *key, int k) { snprintf(key, 32, "nvme-key-%03d", k); }

static rb_device *open_via(const struct via *v, uint32_t flags) {
    rb_options o;
    rb_options_init(&o);
    o.flags = flags;
    o.engine = v->engine;
    o.queue_depth = 8;
    o.slot_bytes = SLOT_BYTES;
    rb_device *dev = NULL;
    rb_status s = rb_open(*v->path, &o, &dev);
    CHECK(s == RB_OK, "open %s with %s, flags %u (%s)", *v->path, v->label, flags, s ? rb_last_error_message() : "ok");
    if (s != RB_OK) return NULL;
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.engine == v->engine, "%s: rb_get_info names engine %u (got %u; note: %s)", v->label, v->engine, info.engine,
          info.engine_note);
    return dev;
}

/* Unaligned memory on purpose: one byte past an aligned start. */
static uint8_t *unaligned(size_t len) {
    uint8_t *p = NULL;
    if (posix_memalign((void **)&p, 4096, len + 1) != 0) return NULL;
    return p + 1;
}
static void free_unaligned(uint8_t *p) { free(p - 1); }

/* Puts KEYS values: even keys one at a time from unaligned memory, odd keys in rb_put_many
 * batches (aligned and unaligned alike). */
static void put_all(rb_device *dev, const char *label) {
    static char keys[KEYS][32];
    uint8_t *bufs[KEYS];
    rb_item items[KEYS];
    size_t n = 0;
    int put_ok = 1;
    for (int k = 0; k < KEYS; k++) {
        key_of(keys[k], k);
        size_t len = value_len(k);
        bufs[k] = (k % 4 == 1) ? aligned_alloc(4096, (len + 4095) / 4096 * 4096) : unaligned(len);
        fill(bufs[k], len, k);
        if (k % 2 == 0) {
            if (rb_put(dev, keys[k], strlen(keys[k]), bufs[k], len) != RB_OK) put_ok = 0;
        } else {
            items[n] = (rb_item){.struct_size = sizeof(rb_item), .key = keys[k], .key_len = strlen(keys[k]),
                                 .value = bufs[k], .value_len = len};
            n++;
        }
    }
    CHECK(put_ok, "%s: %d single puts from unaligned memory", label, KEYS / 2);
    rb_status s = rb_put_many(dev, items, n);
    int all = s == RB_OK;
    for (size_t i = 0; i < n; i++) all &= items[i].status == RB_OK;
    CHECK(all, "%s: rb_put_many of %zu items (%s)", label, n, s ? rb_last_error_message() : "ok");
    for (int k = 0; k < KEYS; k++) {
        if (k % 4 == 1) free(bufs[k]);
        else free_unaligned(bufs[k]);
    }
}

/* Reads every value back (single gets into unaligned memory, rb_get_many in batches) and checks
 * the bytes; adds a digest of everything read to *digest. */
static void get_all(rb_device *dev, const char *label, uint64_t *digest) {
    uint8_t *want = malloc(SLOT_BYTES);
    int single_ok = 1, many_ok = 1;
    for (int k = 0; k < KEYS; k += 2) {
        char key[32];
        key_of(key, k);
        size_t len = value_len(k), got = 0;
        uint8_t *buf = unaligned(len);
        fill(want, len, k);
        if (rb_get(dev, key, strlen(key), buf, len, &got) != RB_OK || got != len || memcmp(buf, want, len) != 0)
            single_ok = 0;
        for (size_t i = 0; i < got && i < len; i++) *digest = *digest * 1099511628211ull + buf[i];
        free_unaligned(buf);
    }
    CHECK(single_ok, "%s: every single get into unaligned memory returns the bytes put", label);
    static char keys[KEYS][32];
    for (int start = 1; start < KEYS; start += 2 * BATCH) {
        rb_item items[BATCH];
        uint8_t *bufs[BATCH];
        size_t n = 0;
        for (int k = start; k < KEYS && n < BATCH; k += 2, n++) {
            key_of(keys[k], k);
            size_t cap = (value_len(k) + 4095) / 4096 * 4096;
            bufs[n] = n % 2 ? unaligned(cap) : aligned_alloc(4096, cap);
            items[n] = (rb_item){.struct_size = sizeof(rb_item), .key = keys[k], .key_len = strlen(keys[k]),
                                 .value = bufs[n], .value_len = cap};
        }
        rb_status s = rb_get_many(dev, items, n);
        if (s != RB_OK) many_ok = 0;
        for (size_t i = 0; i < n; i++) {
            int k = start + 2 * (int)i;
            size_t len = value_len(k);
            fill(want, len, k);
            if (items[i].status != RB_OK || items[i].len != len || memcmp(bufs[i], want, len) != 0) many_ok = 0;
            for (size_t j = 0; j < len; j++) *digest = *digest * 1099511628211ull + bufs[i][j];
            if (i % 2) free_unaligned(bufs[i]);
            else free(bufs[i]);
        }
    }
    CHECK(many_ok, "%s: rb_get_many (aligned and unaligned destinations) returns the bytes put", label);
    free(want);
}

/* Formats through `writer`, fills, checkpoints; reopens through `reader`, recovers and reads
 * everything. Returns the digest of what the reader read (0 on failure). */
static uint64_t write_then_read(const struct via *writer, const struct via *reader, rb_recover_report *rep) {
    uint64_t digest = 0;
    rb_device *dev = open_via(writer, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK);
    if (!dev) return 0;
    put_all(dev, writer->label);
    uint64_t mine = 0;
    get_all(dev, writer->label, &mine);
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));
    dev = open_via(reader, RB_OPEN_READ_ONLY);
    if (!dev) return 0;
    *rep = (rb_recover_report){.struct_size = sizeof *rep};
    /* AUTO is fast recovery (the checkpoint and the leased slots); then full validation, which
     * reads every entry's header through the reader's engine. */
    CHECK_OK(rb_recover(dev, NULL, rep));
    CHECK(rep->source == RB_RECOVERED_JOURNAL && rep->indexed == KEYS && rep->trusted_unread == KEYS,
          "%s -> %s: fast recovery indexed %llu of %d keys", writer->label, reader->label,
          (unsigned long long)rep->indexed, KEYS);
    *rep = (rb_recover_report){.struct_size = sizeof *rep};
    CHECK_OK(recover_full(dev, rep));
    CHECK(rep->source == RB_RECOVERED_CHECKPOINT && rep->indexed == KEYS && rep->dropped_stale == 0 &&
              rep->dropped_unreadable == 0,
          "%s -> %s: recovered %llu of %d keys from the checkpoint (stale %llu, unreadable %llu)", writer->label,
          reader->label, (unsigned long long)rep->indexed, KEYS, (unsigned long long)rep->dropped_stale,
          (unsigned long long)rep->dropped_unreadable);
    get_all(dev, reader->label, &digest);
    CHECK(digest == mine, "%s read the same bytes the writer read back", reader->label);
    CHECK_OK(rb_close(dev));
    return digest;
}

/* The data path through passthrough: single and batched puts and gets of sizes beyond one
 * NVMe command, from and into unaligned memory; recovery through the same name. */
static int test_data_uring_cmd(void) {
    NEED_NVME();
    rb_recover_report rep;
    CHECK(write_then_read(&PASSTHROUGH, &PASSTHROUGH, &rep) != 0, "uring_cmd round trip");
    return test_result();
}

/* Formatted through /dev/nvmeXnY with io_uring, recovered through /dev/ngXnY with uring_cmd,
 * and the reverse: the same keys and bytes, and the same report, whichever name and engine. */
static int test_identity_across_names(void) {
    NEED_NVME();
    rb_recover_report a, b;
    uint64_t da = write_then_read(&BLOCK, &PASSTHROUGH, &a);
    uint64_t db = write_then_read(&PASSTHROUGH, &BLOCK, &b);
    CHECK(da != 0 && da == db, "the same bytes through either engine and name (digest %016llx vs %016llx)",
          (unsigned long long)da, (unsigned long long)db);
    CHECK(a.indexed == b.indexed && a.checkpoint_entries == b.checkpoint_entries && a.header_reads == b.header_reads,
          "the same recovery: %llu/%llu indexed, %llu/%llu header reads", (unsigned long long)a.indexed,
          (unsigned long long)b.indexed, (unsigned long long)a.header_reads, (unsigned long long)b.header_reads);
    /* uring_cmd asked for through the block device's name goes to the character device too. */
    rb_recover_report c;
    uint64_t dc = write_then_read(&PASSTHROUGH_BLOCK, &PASSTHROUGH, &c);
    CHECK(dc == da, "uring_cmd through /dev/nvmeXnY: the same bytes");
    return test_result();
}

static void expect_busy(const struct via *v, uint32_t flags, const char *why) {
    rb_options o;
    rb_options_init(&o);
    o.flags = flags;
    o.engine = v->engine;
    rb_device *dev = NULL;
    rb_status s = rb_open(*v->path, &o, &dev);
    CHECK(s == RB_E_BUSY, "%s: a %s through %s is refused with RB_E_BUSY (got %s: %s)", why,
          flags & RB_OPEN_READ_ONLY ? "reader" : "writer", v->label, rb_status_str(s), rb_last_error_message());
    if (s == RB_OK) rb_close(dev);
}

/* One writer per namespace, whichever of its two names each opener uses. */
static int test_one_writer_across_names(void) {
    NEED_NVME();
    rb_device *w = open_via(&PASSTHROUGH, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK);
    if (!w) return T_EXIT_FAIL;
    expect_busy(&BLOCK, 0, "writer via ng");
    expect_busy(&PASSTHROUGH, 0, "writer via ng");
    expect_busy(&PASSTHROUGH_BLOCK, 0, "writer via ng");
    expect_busy(&BLOCK, RB_OPEN_READ_ONLY, "writer via ng");
    expect_busy(&PASSTHROUGH, RB_OPEN_READ_ONLY, "writer via ng");
    CHECK_OK(rb_close(w));

    w = open_via(&BLOCK, 0);
    if (!w) return T_EXIT_FAIL;
    expect_busy(&PASSTHROUGH, 0, "writer via nvme");
    expect_busy(&PASSTHROUGH, RB_OPEN_READ_ONLY, "writer via nvme");
    CHECK_OK(rb_close(w));

    /* Readers share, through either name. */
    rb_device *r1 = open_via(&PASSTHROUGH, RB_OPEN_READ_ONLY);
    rb_device *r2 = open_via(&BLOCK, RB_OPEN_READ_ONLY);
    CHECK(r1 && r2, "two readers through the two names at once");
    expect_busy(&PASSTHROUGH, 0, "readers open");
    rb_close(r1);
    rb_close(r2);
    /* With everyone gone, a writer gets in again. */
    w = open_via(&PASSTHROUGH, 0);
    CHECK(w != NULL, "a writer after the others closed");
    rb_close(w);
    return test_result();
}

/* A scan (no checkpoint) sees the same headers through both engines, and passthrough's
 * flush (rb_checkpoint) makes a later recovery find the checkpoint. */
static int test_scan_same_both_engines(void) {
    NEED_NVME();
    rb_device *dev = open_via(&PASSTHROUGH, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK);
    if (!dev) return T_EXIT_FAIL;
    put_all(dev, PASSTHROUGH.label);
    CHECK_OK(rb_close(dev)); /* no checkpoint */
    rb_recover_report rep[2];
    const struct via *vias[2] = {&PASSTHROUGH, &BLOCK};
    for (int i = 0; i < 2; i++) {
        dev = open_via(vias[i], RB_OPEN_READ_ONLY);
        if (!dev) return T_EXIT_FAIL;
        rep[i] = (rb_recover_report){.struct_size = sizeof rep[i]};
        rb_recover_options scan;
        rb_recover_options_init(&scan);
        scan.mode = RB_RECOVER_SCAN;
        CHECK_OK(rb_recover(dev, &scan, &rep[i]));
        CHECK(rep[i].indexed == KEYS, "%s: the scan indexed %llu of %d", vias[i]->label,
              (unsigned long long)rep[i].indexed, KEYS);
        rb_close(dev);
    }
    CHECK(rep[0].header_reads == rep[1].header_reads && rep[0].empty_slots == rep[1].empty_slots,
          "both engines read %llu headers and found %llu empty slots", (unsigned long long)rep[0].header_reads,
          (unsigned long long)rep[0].empty_slots);
    return test_result();
}

/* AUTO never picks passthrough: on the block device it runs io_uring, and the character
 * device, which only passthrough can read, is refused with a message that says so. */
static int test_auto_never_picks_passthrough(void) {
    NEED_NVME();
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
    rb_device *dev = NULL;
    CHECK_OK(rb_open(block_dev, &o, &dev));
    rb_device_info info = {.struct_size = sizeof info};
    if (dev) CHECK_OK(rb_get_info(dev, &info));
    CHECK(dev && info.engine == RB_ENGINE_IO_URING, "AUTO on %s runs io_uring (engine %u)", block_dev, info.engine);
    rb_close(dev);
    dev = NULL;
    o.flags = 0;
    rb_status s = rb_open(char_dev, &o, &dev);
    CHECK(s == RB_E_INVALID_ARGUMENT && strstr(rb_last_error_message(), "passthrough") != NULL,
          "AUTO on %s is refused, naming passthrough (got %s: %s)", char_dev, rb_status_str(s), rb_last_error_message());
    if (s == RB_OK) rb_close(dev);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_data_uring_cmd);
    RUN(test_identity_across_names);
    RUN(test_one_writer_across_names);
    RUN(test_scan_same_both_engines);
    RUN(test_auto_never_picks_passthrough);
    return test_finish("nvme");
}
