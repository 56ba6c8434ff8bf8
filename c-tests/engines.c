/* Engines: batching bounded by queue depth, input order, per-slot fallback, fault injection
 * and dispatch, for every engine (POSIX serial, POSIX pool of 8, io_uring), on a file and,
 * when run.sh could attach one, on a loop device with 4096-byte sectors. The *_nvme cases run
 * io_uring on an NVMe namespace's block device and uring_cmd (NVMe passthrough) on its
 * generic character device: `make nvme-test` runs them in a QEMU guest (RB_TEST_NVME_CHAR,
 * RB_TEST_NVME_BLOCK); elsewhere they skip. */
#include "test.h"

#include <dirent.h>

#define SLOTS 1000
#define QD 8
#define BAD 123 /* the index in the shuffled slot list that fault cases break */

struct engine {
    const char *label;
    uint32_t engine;
    uint32_t posix_threads;
};

static const struct engine POSIX_SERIAL = {"posix serial", RB_ENGINE_POSIX, 1};
static const struct engine POSIX_POOL = {"posix pool(8)", RB_ENGINE_POSIX, 8};
static const struct engine IO_URING = {"io_uring", RB_ENGINE_IO_URING, 1};
static const struct engine URING_CMD = {"uring_cmd", RB_ENGINE_URING_CMD, 1};

enum medium { ON_FILE, ON_BLOCK, ON_NVME };

/* The device a case formats and fills: a scratch file, or run.sh's loop device. */
struct scratch {
    char path[512];
    char label[96];
    const struct engine *e;
    enum medium medium;
};

/* Which slots hold values: the first SLOTS of a fresh device, read in shuffled order. */
static uint64_t slots[SLOTS];
static rb_slot_header out[SLOTS];

static size_t value_len(int k) { return 1 + (size_t)(k * 37) % 3000; }

/* At most this many reads in flight: the queue depth for io_uring, the threads for POSIX. */
static int queued(const struct engine *e) { return e->engine == RB_ENGINE_IO_URING || e->engine == RB_ENGINE_URING_CMD; }
static uint64_t max_in_flight(const struct engine *e) { return queued(e) ? QD : e->posix_threads; }

/* Threads of this process named by the POSIX pool ("rawblock-io-N"); io_uring's own
 * iou-wrk workers come and go on their own and are not counted. */
static int pool_threads(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[64] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fgets(comm, sizeof comm, f) && strncmp(comm, "rawblock-io-", 12) == 0) n++;
        if (f) fclose(f);
    }
    if (d) closedir(d);
    return n;
}

static void shuffle(uint64_t *a, size_t n, uint64_t seed) {
    for (size_t i = n - 1; i > 0; i--) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t j = (size_t)(seed >> 33) % (i + 1);
        uint64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Names the case's device; T_EXIT_SKIP (saying why) when it wants a block device and has none. */
static int scratch_init(struct scratch *b, const struct engine *e, enum medium medium, const char *name) {
    b->e = e;
    b->medium = medium;
    snprintf(b->label, sizeof b->label, "%s on %s", e->label,
             medium == ON_BLOCK ? "loop device" : medium == ON_NVME ? "NVMe namespace" : "file");
    for (int i = 0; i < SLOTS; i++) slots[i] = (uint64_t)i;
    shuffle(slots, SLOTS, 42);
    if (medium == ON_FILE) {
        test_path(b->path, sizeof b->path, name);
        return T_EXIT_PASS;
    }
    if (medium == ON_NVME) {
        /* Passthrough through the generic character device, the others through the block device. */
        const char *var = e->engine == RB_ENGINE_URING_CMD ? "RB_TEST_NVME_CHAR" : "RB_TEST_NVME_BLOCK";
        const char *nvme = getenv(var);
        if (!nvme || !*nvme) SKIP("NVMe namespace: %s is not set (make nvme-test runs these cases in a QEMU guest)", var);
        snprintf(b->path, sizeof b->path, "%s", nvme);
        return T_EXIT_PASS;
    }
    const char *block = getenv("RB_TEST_BLOCK_DEVICE");
    if (!block || !*block) {
        const char *why = getenv("RB_TEST_BLOCK_DEVICE_SKIP");
        SKIP("block device: %s", why ? why : "run through c-tests/run.sh to attach a loop device");
    }
    snprintf(b->path, sizeof b->path, "%s", block);
    return T_EXIT_PASS;
}

static void scratch_cleanup(const struct scratch *b) {
    if (b->medium == ON_FILE) unlink(b->path);
}

static rb_device *open_with(const struct scratch *b, uint32_t flags) {
    rb_options o;
    rb_options_init(&o);
    o.flags = flags;
    o.engine = b->e->engine;
    o.posix_threads = b->e->posix_threads;
    o.queue_depth = QD;
    o.capacity_bytes = (flags & RB_OPEN_CREATE) && b->medium == ON_FILE ? 96ull << 20 : 0;
    o.slot_bytes = 64 << 10;
    rb_device *dev = NULL;
    rb_status s = rb_open(b->path, &o, &dev);
    CHECK(s == RB_OK, "%s: open %s (%s)", b->label, b->path, s ? rb_last_error_message() : "ok");
    return s == RB_OK ? dev : NULL;
}

/* Formats the device and puts k-0000..k-0999 (value k & 0xFF, value_len(k) bytes); NULL on failure. */
static rb_device *format_and_fill(const struct scratch *b) {
    rb_device *dev = open_with(b, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK);
    if (!dev) return NULL;
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.engine == b->e->engine, "%s: rb_get_info names the engine that runs", b->label);
    CHECK(info.slot_count >= SLOTS, "%s: %llu slots", b->label, (unsigned long long)info.slot_count);
    static uint8_t value[4096];
    char key[32];
    for (int k = 0; k < SLOTS; k++) {
        snprintf(key, sizeof key, "k-%04d", k);
        memset(value, k & 0xFF, value_len(k));
        if (rb_put(dev, key, strlen(key), value, value_len(k)) != RB_OK) {
            CHECK(0, "%s: put %s: %s", b->label, key, rb_last_error_message());
            rb_close(dev);
            return NULL;
        }
    }
    return dev;
}

static rb_io_stats stats_of(rb_device *dev) {
    rb_io_stats st = {.struct_size = sizeof st};
    rb_get_io_stats(dev, &st);
    return st;
}

/* Reads the headers of `slots`; checks each is the value put there, except slots[bad_index]
 * (-1: none), which must fail with bad_errno. */
static void check_batch(rb_device *dev, const char *label, long bad_index, int bad_errno) {
    out[0].struct_size = sizeof out[0];
    CHECK_OK(rb_read_headers_batched(dev, slots, SLOTS, out));
    int in_order = 1, valid = 0, exact = 1, seen[SLOTS] = {0};
    for (long i = 0; i < SLOTS; i++) {
        if (out[i].slot != slots[i]) in_order = 0;
        if (i == bad_index) {
            CHECK(out[i].status == RB_HEADER_IO_ERROR && out[i].os_errno == bad_errno,
                  "%s: the faulty slot %llu reports RB_HEADER_IO_ERROR with errno %d (got status %d errno %d)",
                  label, (unsigned long long)slots[i], bad_errno, out[i].status, out[i].os_errno);
            continue;
        }
        if (out[i].status != RB_HEADER_VALID) {
            exact = 0;
            continue;
        }
        valid++;
        int k = -1;
        if (sscanf((const char *)out[i].key, "k-%d", &k) != 1 || k < 0 || k >= SLOTS || seen[k]++ ||
            out[i].payload_len != value_len(k))
            exact = 0;
    }
    long want = bad_index >= 0 ? SLOTS - 1 : SLOTS;
    CHECK(in_order, "%s: results are in input order (out[i].slot == slots[i])", label);
    CHECK(valid == want && exact, "%s: %d of %ld headers valid, each naming a distinct key with its length", label,
          valid, want);
}

/* One clean batch: every header right, the pool exactly its size, the in-flight window bounded
 * and used, no fallback; io_uring registers its buffers and file and batches its submits. */
static int batch_case(const struct engine *e, enum medium medium) {
    struct scratch b;
    int rc = scratch_init(&b, e, medium, "engines-batch");
    if (rc != T_EXIT_PASS) return rc;
    int tasks_before = pool_threads();
    rb_device *dev = format_and_fill(&b);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, b.label, -1, 0);
    /* Counted after a batch, when every worker has run (and named itself). */
    int tasks_after = pool_threads();
    if (e->posix_threads > 1)
        CHECK(tasks_after - tasks_before == (int)e->posix_threads, "%s: the pool has exactly %u threads (added %d)",
              b.label, e->posix_threads, tasks_after - tasks_before);
    else
        CHECK(tasks_after == tasks_before, "%s: no pool threads without a pool", b.label);
    rb_io_stats st = stats_of(dev);
    uint64_t want_max = max_in_flight(e);
    CHECK(st.max_in_flight <= want_max, "%s: at most %llu reads in flight (got %llu)", b.label,
          (unsigned long long)want_max, (unsigned long long)st.max_in_flight);
    if (queued(e) || e->posix_threads == 1)
        CHECK(st.max_in_flight == want_max, "%s: the window was used: %llu in flight at once", b.label,
              (unsigned long long)st.max_in_flight);
    CHECK(st.reads_submitted == SLOTS && st.fallbacks == 0 && st.failed == 0,
          "%s: %llu reads submitted, no fallback", b.label, (unsigned long long)st.reads_submitted);
    if (queued(e)) {
        /* uring_cmd's fixed buffers need kernel 6.1+ (IORING_URING_CMD_FIXED): the guest has it. */
        CHECK(st.registered_buffers && st.registered_file, "%s: registered buffers and file", b.label);
        CHECK(st.submit_calls < SLOTS, "%s: %llu submit calls for %d reads", b.label,
              (unsigned long long)st.submit_calls, SLOTS);
    }
    CHECK_OK(rb_close(dev));
    scratch_cleanup(&b);
    return test_result();
}

/* Injected faults: a persistent one fails only its slot, with its errno; a transient one is
 * retried per slot and succeeds; a failed submit sends its reads per slot, all valid. */
static int faults_case(const struct engine *e, enum medium medium) {
    struct scratch b;
    int rc = scratch_init(&b, e, medium, "engines-faults");
    if (rc != T_EXIT_PASS) return rc;
    rb_device *dev = format_and_fill(&b);
    if (!dev) return T_EXIT_FAIL;

    CHECK_OK(rb_test_inject_read_faults(dev, &slots[BAD], 1, EIO, RB_FAULT_PERSISTENT));
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, b.label, BAD, EIO);
    rb_io_stats st = stats_of(dev);
    CHECK(st.failed == 1 && st.fallbacks == 1, "%s: one fallback, one failure (got %llu, %llu)", b.label,
          (unsigned long long)st.fallbacks, (unsigned long long)st.failed);
    CHECK_OK(rb_test_clear_read_faults(dev));

    CHECK_OK(rb_test_inject_read_faults(dev, &slots[BAD], 1, EIO, RB_FAULT_TRANSIENT));
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, b.label, -1, 0);
    st = stats_of(dev);
    CHECK(st.fallbacks == 1 && st.failed == 0, "%s: transient fault: all valid, 1 fallback (got %llu)", b.label,
          (unsigned long long)st.fallbacks);

    CHECK_OK(rb_test_inject_read_faults(dev, NULL, 0, EBUSY, RB_FAULT_SUBMIT));
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, b.label, -1, 0);
    st = stats_of(dev);
    CHECK(st.fallbacks >= 1 && st.failed == 0, "%s: submit fault: all valid through %llu fallbacks", b.label,
          (unsigned long long)st.fallbacks);
    CHECK_OK(rb_close(dev));
    scratch_cleanup(&b);
    return test_result();
}

/* Recovery with a persistent fault drops exactly that entry, counted as unreadable. */
static int recovery_case(const struct engine *e, enum medium medium) {
    struct scratch b;
    int rc = scratch_init(&b, e, medium, "engines-recovery");
    if (rc != T_EXIT_PASS) return rc;
    rb_device *dev = format_and_fill(&b);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));

    dev = open_with(&b, RB_OPEN_READ_ONLY);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_test_inject_read_faults(dev, &slots[BAD], 1, EIO, RB_FAULT_PERSISTENT));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(recover_full(dev, &rep));
    CHECK(rep.engine == e->engine, "%s: the report names the engine that ran", b.label);
    CHECK(rep.indexed == SLOTS - 1 && rep.dropped_unreadable == 1 && rep.dropped_stale == 0 && rep.first_errno == EIO,
          "%s: recovery indexed %llu, dropped %llu unreadable (errno %d), %llu stale", b.label,
          (unsigned long long)rep.indexed, (unsigned long long)rep.dropped_unreadable, rep.first_errno,
          (unsigned long long)rep.dropped_stale);
    CHECK(rep.header_reads == SLOTS && rep.io.max_in_flight <= max_in_flight(e),
          "%s: %llu header reads, <= %llu in flight", b.label, (unsigned long long)rep.header_reads,
          (unsigned long long)max_in_flight(e));
    CHECK_OK(rb_close(dev));
    scratch_cleanup(&b);
    return test_result();
}

/* Dispatch: AUTO picks io_uring on a kernel that has it. */
static int test_auto_picks_io_uring(void) {
    char path[512];
    test_path(path, sizeof path, "engines-auto");
    rb_device *dev = test_create(path, 16 << 20, 64 << 10, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.engine == RB_ENGINE_IO_URING, "RB_ENGINE_AUTO picks io_uring here (engine %u)", info.engine);
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* uring_cmd is not offered on a loop device (not NVMe): RB_E_UNSUPPORTED saying why. */
static int test_uring_cmd_unsupported_on_loop_device(void) {
    const char *block = getenv("RB_TEST_BLOCK_DEVICE");
    if (!block || !*block) SKIP("no loop device (run through c-tests/run.sh as root)");
    rb_options o;
    rb_options_init(&o);
    o.engine = RB_ENGINE_URING_CMD;
    rb_device *dev = NULL;
    CHECK_STATUS(rb_open(block, &o, &dev), RB_E_UNSUPPORTED);
    CHECK(strstr(rb_last_error_message(), "not an NVMe namespace") != NULL, "the message says why: %s",
          rb_last_error_message());
    o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
    CHECK_STATUS(rb_open(block, &o, &dev), RB_E_UNSUPPORTED);
    rb_close(dev);
    return test_result();
}

/* uring_cmd is not offered on a regular file. */
static int test_uring_cmd_unsupported_on_file(void) {
    char path[512];
    test_path(path, sizeof path, "engines-uring-cmd");
    rb_device *dev = test_create(path, 16 << 20, 64 << 10, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    rb_options o;
    rb_options_init(&o);
    o.engine = RB_ENGINE_URING_CMD;
    dev = NULL;
    CHECK_STATUS(rb_open(path, &o, &dev), RB_E_UNSUPPORTED);
    CHECK(strstr(rb_last_error_message(), "regular file") != NULL, "the message says why: %s", rb_last_error_message());
    rb_close(dev);
    unlink(path);
    return test_result();
}

static int test_batch_posix_serial_file(void) { return batch_case(&POSIX_SERIAL, ON_FILE); }
static int test_batch_posix_pool_file(void) { return batch_case(&POSIX_POOL, ON_FILE); }
static int test_batch_io_uring_file(void) { return batch_case(&IO_URING, ON_FILE); }
static int test_faults_posix_serial_file(void) { return faults_case(&POSIX_SERIAL, ON_FILE); }
static int test_faults_posix_pool_file(void) { return faults_case(&POSIX_POOL, ON_FILE); }
static int test_faults_io_uring_file(void) { return faults_case(&IO_URING, ON_FILE); }
static int test_recovery_posix_serial_file(void) { return recovery_case(&POSIX_SERIAL, ON_FILE); }
static int test_recovery_posix_pool_file(void) { return recovery_case(&POSIX_POOL, ON_FILE); }
static int test_recovery_io_uring_file(void) { return recovery_case(&IO_URING, ON_FILE); }
static int test_batch_posix_serial_block(void) { return batch_case(&POSIX_SERIAL, ON_BLOCK); }
static int test_batch_posix_pool_block(void) { return batch_case(&POSIX_POOL, ON_BLOCK); }
static int test_batch_io_uring_block(void) { return batch_case(&IO_URING, ON_BLOCK); }
static int test_faults_posix_serial_block(void) { return faults_case(&POSIX_SERIAL, ON_BLOCK); }
static int test_faults_posix_pool_block(void) { return faults_case(&POSIX_POOL, ON_BLOCK); }
static int test_faults_io_uring_block(void) { return faults_case(&IO_URING, ON_BLOCK); }
static int test_recovery_posix_serial_block(void) { return recovery_case(&POSIX_SERIAL, ON_BLOCK); }
static int test_recovery_posix_pool_block(void) { return recovery_case(&POSIX_POOL, ON_BLOCK); }
static int test_recovery_io_uring_block(void) { return recovery_case(&IO_URING, ON_BLOCK); }
static int test_batch_io_uring_nvme(void) { return batch_case(&IO_URING, ON_NVME); }
static int test_faults_io_uring_nvme(void) { return faults_case(&IO_URING, ON_NVME); }
static int test_recovery_io_uring_nvme(void) { return recovery_case(&IO_URING, ON_NVME); }
static int test_batch_uring_cmd_nvme(void) { return batch_case(&URING_CMD, ON_NVME); }
static int test_faults_uring_cmd_nvme(void) { return faults_case(&URING_CMD, ON_NVME); }
static int test_recovery_uring_cmd_nvme(void) { return recovery_case(&URING_CMD, ON_NVME); }

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_auto_picks_io_uring);
    RUN(test_uring_cmd_unsupported_on_file);
    RUN(test_uring_cmd_unsupported_on_loop_device);
    RUN(test_batch_posix_serial_file);
    RUN(test_batch_posix_pool_file);
    RUN(test_batch_io_uring_file);
    RUN(test_faults_posix_serial_file);
    RUN(test_faults_posix_pool_file);
    RUN(test_faults_io_uring_file);
    RUN(test_recovery_posix_serial_file);
    RUN(test_recovery_posix_pool_file);
    RUN(test_recovery_io_uring_file);
    RUN(test_batch_posix_serial_block);
    RUN(test_batch_posix_pool_block);
    RUN(test_batch_io_uring_block);
    RUN(test_faults_posix_serial_block);
    RUN(test_faults_posix_pool_block);
    RUN(test_faults_io_uring_block);
    RUN(test_recovery_posix_serial_block);
    RUN(test_recovery_posix_pool_block);
    RUN(test_recovery_io_uring_block);
    RUN(test_batch_io_uring_nvme);
    RUN(test_faults_io_uring_nvme);
    RUN(test_recovery_io_uring_nvme);
    RUN(test_batch_uring_cmd_nvme);
    RUN(test_faults_uring_cmd_nvme);
    RUN(test_recovery_uring_cmd_nvme);
    return test_finish("engines");
}
