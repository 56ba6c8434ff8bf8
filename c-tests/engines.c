/* Engines: batching bounded by queue depth, input order, per-slot fallback, fault injection
 * and dispatch, for every engine (POSIX serial, POSIX pool of 8, io_uring), on a file and,
 * when run.sh could attach one, on a loop device with 4096-byte sectors. */
#include "test.h"

#include <dirent.h>

#define SLOTS 1000
#define QD 8

struct engine_case {
    const char *label;
    uint32_t engine;
    uint32_t posix_threads;
};

static const struct engine_case CASES[] = {
    {"posix serial", RB_ENGINE_POSIX, 1},
    {"posix pool(8)", RB_ENGINE_POSIX, 8},
    {"io_uring", RB_ENGINE_IO_URING, 1},
};

static size_t value_len(int k) { return 1 + (size_t)(k * 37) % 3000; }

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

static rb_device *open_with(const char *path, const struct engine_case *c, uint32_t flags) {
    rb_options o;
    rb_options_init(&o);
    o.flags = flags;
    o.engine = c->engine;
    o.posix_threads = c->posix_threads;
    o.queue_depth = QD;
    o.capacity_bytes = (flags & RB_OPEN_CREATE) && strncmp(path, "/dev/", 5) != 0 ? 96ull << 20 : 0;
    o.slot_bytes = 64 << 10;
    rb_device *dev = NULL;
    rb_status s = rb_open(path, &o, &dev);
    CHECK(s == RB_OK, "%s: open %s (%s)", c->label, path, s ? rb_last_error_message() : "ok");
    if (s != RB_OK) exit(1);
    return dev;
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

static rb_io_stats stats_of(rb_device *dev) {
    rb_io_stats st = {.struct_size = sizeof st};
    rb_get_io_stats(dev, &st);
    return st;
}

/* Reads the headers of `slots`; checks each is the value put there, except `bad` (-1: none). */
static void check_batch(rb_device *dev, const char *label, const uint64_t *slots, rb_slot_header *out, long bad_index,
                        int bad_errno) {
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

static void run_case(const char *path, const struct engine_case *c, int is_block) {
    char label[96];
    snprintf(label, sizeof label, "%s on %s", c->label, is_block ? "loop device" : "file");
    int tasks_before = pool_threads();
    rb_device *dev = open_with(path, c, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK);
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.engine == c->engine, "%s: rb_get_info names the engine that runs", label);
    CHECK(info.slot_count >= SLOTS, "%s: %llu slots", label, (unsigned long long)info.slot_count);

    static uint8_t value[4096];
    char key[32];
    for (int k = 0; k < SLOTS; k++) {
        snprintf(key, sizeof key, "k-%04d", k);
        memset(value, k & 0xFF, value_len(k));
        if (rb_put(dev, key, strlen(key), value, value_len(k)) != RB_OK) {
            CHECK(0, "%s: put %s: %s", label, key, rb_last_error_message());
            exit(1);
        }
    }
    /* Which slots hold values: the first SLOTS of a fresh device, read in shuffled order. */
    static uint64_t slots[SLOTS];
    static rb_slot_header out[SLOTS];
    for (int i = 0; i < SLOTS; i++) slots[i] = (uint64_t)i;
    shuffle(slots, SLOTS, 42);

    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, label, slots, out, -1, 0);
    /* Counted after a batch, when every worker has run (and named itself). */
    int tasks_after = pool_threads();
    if (c->posix_threads > 1)
        CHECK(tasks_after - tasks_before == (int)c->posix_threads, "%s: the pool has exactly %u threads (added %d)",
              label, c->posix_threads, tasks_after - tasks_before);
    else
        CHECK(tasks_after == tasks_before, "%s: no pool threads without a pool", label);
    rb_io_stats st = stats_of(dev);
    uint64_t want_max = c->engine == RB_ENGINE_IO_URING ? QD : c->posix_threads;
    CHECK(st.max_in_flight <= want_max, "%s: at most %llu reads in flight (got %llu)", label,
          (unsigned long long)want_max, (unsigned long long)st.max_in_flight);
    if (c->engine == RB_ENGINE_IO_URING || c->posix_threads == 1)
        CHECK(st.max_in_flight == want_max, "%s: the window was used: %llu in flight at once", label,
              (unsigned long long)st.max_in_flight);
    CHECK(st.reads_submitted == SLOTS && st.fallbacks == 0 && st.failed == 0,
          "%s: %llu reads submitted, no fallback", label, (unsigned long long)st.reads_submitted);
    if (c->engine == RB_ENGINE_IO_URING) {
        CHECK(st.registered_buffers && st.registered_file, "%s: registered buffers and file", label);
        CHECK(st.submit_calls < SLOTS, "%s: %llu submit calls for %d reads", label,
              (unsigned long long)st.submit_calls, SLOTS);
    }

    /* A persistent fault on one slot: only it fails, with its errno. */
    long bad = 123;
    CHECK_OK(rb_test_inject_read_faults(dev, &slots[bad], 1, EIO, RB_FAULT_PERSISTENT));
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, label, slots, out, bad, EIO);
    st = stats_of(dev);
    CHECK(st.failed == 1 && st.fallbacks == 1, "%s: one fallback, one failure (got %llu, %llu)", label,
          (unsigned long long)st.fallbacks, (unsigned long long)st.failed);
    CHECK_OK(rb_test_clear_read_faults(dev));

    /* A transient fault: the per-slot retry succeeds. */
    CHECK_OK(rb_test_inject_read_faults(dev, &slots[bad], 1, EIO, RB_FAULT_TRANSIENT));
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, label, slots, out, -1, 0);
    st = stats_of(dev);
    CHECK(st.fallbacks == 1 && st.failed == 0, "%s: transient fault: all valid, 1 fallback (got %llu)", label,
          (unsigned long long)st.fallbacks);

    /* A submit fault: the reads it carried go per slot, all valid. */
    CHECK_OK(rb_test_inject_read_faults(dev, NULL, 0, EBUSY, RB_FAULT_SUBMIT));
    CHECK_OK(rb_reset_io_stats(dev));
    check_batch(dev, label, slots, out, -1, 0);
    st = stats_of(dev);
    CHECK(st.fallbacks >= 1 && st.failed == 0, "%s: submit fault: all valid through %llu fallbacks", label,
          (unsigned long long)st.fallbacks);

    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));

    /* Recovery with a persistent fault drops exactly that entry, counted as unreadable. */
    dev = open_with(path, c, RB_OPEN_READ_ONLY);
    CHECK_OK(rb_test_inject_read_faults(dev, &slots[bad], 1, EIO, RB_FAULT_PERSISTENT));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.engine == c->engine, "%s: the report names the engine that ran", label);
    CHECK(rep.indexed == SLOTS - 1 && rep.dropped_unreadable == 1 && rep.dropped_stale == 0 && rep.first_errno == EIO,
          "%s: recovery indexed %llu, dropped %llu unreadable (errno %d), %llu stale", label,
          (unsigned long long)rep.indexed, (unsigned long long)rep.dropped_unreadable, rep.first_errno,
          (unsigned long long)rep.dropped_stale);
    CHECK(rep.header_reads == SLOTS && rep.io.max_in_flight <= want_max, "%s: %llu header reads, <= %llu in flight",
          label, (unsigned long long)rep.header_reads, (unsigned long long)want_max);
    CHECK_OK(rb_close(dev));
}

int main(void) {
    char path[512];
    test_path(path, sizeof path, "engines");

    /* Dispatch: AUTO picks io_uring on a kernel that has it. */
    rb_device *dev = test_create(path, 16 << 20, 64 << 10, RB_ENGINE_AUTO, 0);
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.engine == RB_ENGINE_IO_URING, "RB_ENGINE_AUTO picks io_uring here (engine %u)", info.engine);
    rb_close(dev);
    rb_options o;
    rb_options_init(&o);
    o.engine = RB_ENGINE_URING_CMD;
    CHECK_STATUS(rb_open(path, &o, &dev), RB_E_UNSUPPORTED);

    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) run_case(path, &CASES[i], 0);
    unlink(path);

    const char *block = getenv("RB_TEST_BLOCK_DEVICE");
    if (block && *block) {
        for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) run_case(block, &CASES[i], 1);
    } else {
        const char *why = getenv("RB_TEST_BLOCK_DEVICE_SKIP");
        printf("SKIP block device: %s\n", why ? why : "run through c-tests/run.sh to attach a loop device");
    }
    return test_finish("engines");
}
