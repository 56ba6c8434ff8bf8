/* Concurrency stress on one handle, bounded in operations (and by a watchdog for deadlocks):
 * 8 threads put, get, delete and contains while one checkpoints and one reads headers batched.
 * Each worker owns 16 keys, so it knows what it last put: a get must return exactly that, or
 * RB_E_NOT_FOUND when it last deleted. 16 more keys are shared by all workers; their values name
 * their key and carry a checksum, so a get must return a whole value of that key, never another's.
 * Runs once with io_uring (AUTO) and once with the POSIX pool; in make nvme-test's QEMU guest also
 * with NVMe passthrough (uring_cmd, its synchronous rings and its ring pool under 10 threads). */
#include "test.h"

#include <pthread.h>
#include <signal.h>

#define WORKERS 8
#define OWN_KEYS 16
#define SHARED_KEYS 16
#define OPS_PER_WORKER 1500
#define SLOT_BYTES (64 << 10)

static rb_device *dev;
static volatile int stop_background;
static int failures_total;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, int key, rb_status s) {
    pthread_mutex_lock(&fail_lock);
    if (failures_total++ < 10) printf("FAIL key %d: %s (status %d: %s)\n", key, what, s, rb_last_error_message());
    pthread_mutex_unlock(&fail_lock);
}

static uint32_t checksum(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* A value: [key id u32][version u32][len-12 pattern bytes][checksum u32 of the rest]. */
static size_t make_value(uint8_t *buf, int key, uint32_t version) {
    size_t len = 12 + (key * 131 + version * 17) % 6000;
    memcpy(buf, &key, 4);
    memcpy(buf + 4, &version, 4);
    for (size_t i = 8; i < len - 4; i++) buf[i] = (uint8_t)(i * version + key);
    uint32_t c = checksum(buf, len - 4);
    memcpy(buf + len - 4, &c, 4);
    return len;
}

static int value_is_whole(const uint8_t *buf, size_t len, int key, uint32_t *version) {
    if (len < 12) return 0;
    int k;
    uint32_t c;
    memcpy(&k, buf, 4);
    memcpy(version, buf + 4, 4);
    memcpy(&c, buf + len - 4, 4);
    return k == key && c == checksum(buf, len - 4);
}

static void name(char *out, int key) { snprintf(out, 32, "stress-%03d", key); }

/* One operation on `key` (its name in key_name). own_version is the worker's record of an owned
 * key (0: absent); NULL for a shared key, whose values are only checked to be whole. */
static void op_put(int key, const char *key_name, uint32_t version, uint32_t *own_version) {
    static __thread uint8_t buf[SLOT_BYTES];
    size_t n = make_value(buf, key, version);
    rb_status s = rb_put(dev, key_name, strlen(key_name), buf, n);
    if (s != RB_OK) fail("put", key, s);
    else if (own_version) *own_version = version;
}

static void op_delete(int key, const char *key_name, uint32_t *own_version) {
    rb_status s = rb_delete(dev, key_name, strlen(key_name));
    if (s != RB_OK && s != RB_E_NOT_FOUND) fail("delete", key, s);
    if (own_version) {
        if ((s == RB_OK) != (*own_version != 0)) fail("delete of an owned key disagrees", key, s);
        *own_version = 0;
    }
}

static void op_contains(int key, const char *key_name, const uint32_t *own_version) {
    bool found = false;
    rb_status s = rb_contains(dev, key_name, strlen(key_name), &found);
    if (s != RB_OK) fail("contains", key, s);
    else if (own_version && found != (*own_version != 0)) fail("contains of an owned key disagrees", key, s);
}

static void op_get(int key, const char *key_name, const uint32_t *own_version) {
    static __thread uint8_t got[SLOT_BYTES];
    size_t len = 0;
    rb_status s = rb_get(dev, key_name, strlen(key_name), got, sizeof got, &len);
    uint32_t version = 0;
    if (s == RB_E_NOT_FOUND) {
        if (own_version && *own_version != 0) fail("an owned key vanished", key, s);
    } else if (s != RB_OK) {
        fail("get", key, s);
    } else if (!value_is_whole(got, len, key, &version)) {
        fail("get returned bytes that are not a whole value of this key", key, s);
    } else if (own_version && version != *own_version) {
        fail("get of an owned key returned another version than last put", key, s);
    }
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint32_t own_version[OWN_KEYS] = {0}; /* 0: absent */
    uint64_t r = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    char key_name[32];
    for (uint32_t op = 1; op <= OPS_PER_WORKER; op++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int shared = (r >> 8) % 4 == 0;
        int slot_key = (int)((r >> 16) % (shared ? SHARED_KEYS : OWN_KEYS));
        int key = shared ? WORKERS * OWN_KEYS + slot_key : id * OWN_KEYS + slot_key;
        uint32_t *own = shared ? NULL : &own_version[slot_key];
        name(key_name, key);
        int what = (int)((r >> 32) % 10);
        if (what < 4) op_put(key, key_name, op * WORKERS + (uint32_t)id, own);
        else if (what < 5) op_delete(key, key_name, own);
        else if (what < 6) op_contains(key, key_name, own);
        else op_get(key, key_name, own);
    }
    return NULL;
}

static void *checkpointer(void *arg) {
    (void)arg;
    int n = 0;
    while (!stop_background) {
        rb_status s = rb_checkpoint(dev);
        if (s != RB_OK) fail("checkpoint", -1, s);
        n++;
    }
    printf("checkpoints taken: %d\n", n);
    return NULL;
}

static void *header_reader(void *arg) {
    (void)arg;
    rb_device_info info = {.struct_size = sizeof info};
    rb_get_info(dev, &info);
    static rb_slot_header out[256];
    uint64_t slots[256];
    int batches = 0;
    while (!stop_background) {
        for (int i = 0; i < 256; i++) slots[i] = (uint64_t)(batches * 256 + i) % info.slot_count;
        out[0].struct_size = sizeof out[0];
        rb_status s = rb_read_headers_batched(dev, slots, 256, out);
        if (s != RB_OK) fail("read_headers_batched", -1, s);
        for (int i = 0; i < 256; i++) {
            if (out[i].slot != slots[i]) fail("a header came back out of order", -1, s);
            if (out[i].status == RB_HEADER_IO_ERROR || out[i].status == RB_HEADER_FOREIGN)
                fail("a header read failed or names another slot", -1, out[i].status);
            if (out[i].status == RB_HEADER_VALID && memcmp(out[i].key, "stress-", 7) != 0)
                fail("a valid header names an unknown key", -1, s);
        }
        batches++;
    }
    printf("header batches read: %d\n", batches);
    return NULL;
}

static rb_options options(uint32_t engine, uint32_t posix_threads) {
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
    o.capacity_bytes = 48 << 20;
    o.slot_bytes = SLOT_BYTES;
    o.engine = engine;
    o.posix_threads = posix_threads;
    o.queue_depth = 32;
    return o;
}

/* WORKERS workers, a checkpointer and a header reader on `dev` until the workers are done. */
static void run_threads(const char *label) {
    stop_background = 0;
    failures_total = 0;
    pthread_t w[WORKERS], c, h;
    for (int i = 0; i < WORKERS; i++) pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i);
    pthread_create(&c, NULL, checkpointer, NULL);
    pthread_create(&h, NULL, header_reader, NULL);
    for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
    stop_background = 1;
    pthread_join(c, NULL);
    pthread_join(h, NULL);
    CHECK(failures_total == 0, "%s: %d workers x %d operations, every get exact (failures: %d)", label, WORKERS,
          OPS_PER_WORKER, failures_total);
}

/* The final checkpoint recovers to exactly what is indexed now; closes `dev`. */
static void check_final_checkpoint(const char *path, rb_options o, const char *label) {
    CHECK_OK(rb_checkpoint(dev));
    rb_device_info before = {.struct_size = sizeof before};
    rb_get_info(dev, &before);
    rb_close(dev);
    dev = NULL;
    o.flags = RB_OPEN_READ_ONLY;
    CHECK_OK(rb_open(path, &o, &dev));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.indexed == before.indexed && rep.dropped_stale == 0, "%s: recovery indexes all %llu keys", label,
          (unsigned long long)before.indexed);
    rb_close(dev);
    dev = NULL;
}

static int stress_on(const char *device, uint32_t engine, uint32_t posix_threads, const char *label) {
    char path[512];
    if (device)
        snprintf(path, sizeof path, "%s", device);
    else
        test_path(path, sizeof path, "stress");
    rb_options o = options(engine, posix_threads);
    dev = NULL;
    CHECK_OK(rb_open(path, &o, &dev));
    if (!dev) return T_EXIT_FAIL;
    run_threads(label);
    check_final_checkpoint(path, o, label);
    if (!device) unlink(path);
    return test_result();
}

static int stress_with(uint32_t engine, uint32_t posix_threads, const char *label) {
    return stress_on(NULL, engine, posix_threads, label);
}

static int test_io_uring(void) { return stress_with(RB_ENGINE_AUTO, 1, "io_uring"); }
static int test_posix_pool(void) { return stress_with(RB_ENGINE_POSIX, 4, "posix pool"); }
static int test_uring_cmd_nvme(void) {
    const char *ng = getenv("RB_TEST_NVME_CHAR");
    if (!ng || !*ng) SKIP("RB_TEST_NVME_CHAR is not set (make nvme-test runs this case in a QEMU guest)");
    return stress_on(ng, RB_ENGINE_URING_CMD, 1, "uring_cmd");
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    alarm(240); /* a deadlock ends the test instead of hanging CI */
    RUN(test_io_uring);
    RUN(test_posix_pool);
    RUN(test_uring_cmd_nvme);
    return test_finish("stress");
}
