/* Eviction: rb_set_eviction (none, FIFO, LRU), the low watermark, rb_take_evicted. */
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define SLOT (64 << 10)

static rb_device *full_device(const char *name, char *path, size_t cap, uint64_t *slots) {
    test_path(path, cap, name);
    rb_device *dev = test_create(path, 8 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return NULL;
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    *slots = info.slot_count;
    char key[32];
    for (uint64_t i = 0; i < *slots; i++) {
        snprintf(key, sizeof key, "key-%04llu", (unsigned long long)i);
        CHECK_OK(rb_put(dev, key, strlen(key), key, strlen(key)));
    }
    return dev;
}

/* Drains every evicted key into `names` (newline-separated); returns how many. */
static size_t drain(rb_device *dev, char *names, size_t cap) {
    rb_key_info out[8];
    out[0].struct_size = sizeof out[0];
    char keys[256];
    size_t total = 0, used = 0, n = 0;
    names[0] = 0;
    do {
        CHECK_OK(rb_take_evicted(dev, out, 8, keys, sizeof keys, &n));
        for (size_t i = 0; i < n; i++) {
            used += (size_t)snprintf(names + used, cap - used, "%.*s\n", (int)out[i].key_len, keys + out[i].key_offset);
            total++;
        }
    } while (n > 0);
    return total;
}

static int test_without_a_policy_a_full_device_says_so(void) {
    char path[512];
    uint64_t slots = 0;
    rb_device *dev = full_device("evict-none", path, sizeof path, &slots);
    if (!dev) return T_EXIT_FAIL;
    CHECK_STATUS(rb_put(dev, "extra", 5, "x", 1), RB_E_NO_SPACE);
    char names[64];
    CHECK(drain(dev, names, sizeof names) == 0, "nothing evicted");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* FIFO at a 25% watermark: one put evicts exactly the oldest quarter, reported in order. */
static int test_fifo_evicts_the_oldest_quarter_and_reports_it(void) {
    char path[512];
    uint64_t slots = 0;
    rb_device *dev = full_device("evict-fifo", path, sizeof path, &slots);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_set_eviction(dev, RB_EVICT_FIFO, 250));
    CHECK_OK(rb_put(dev, "extra", 5, "x", 1));
    uint64_t batch = slots * 250 / 1000;
    char names[4096], want[4096];
    size_t used = 0;
    for (uint64_t i = 0; i < batch; i++) used += (size_t)snprintf(want + used, sizeof want - used, "key-%04llu\n", (unsigned long long)i);
    size_t n = drain(dev, names, sizeof names);
    CHECK(n == batch && strcmp(names, want) == 0, "the %llu oldest keys were evicted and reported in order (%zu)",
          (unsigned long long)batch, n);
    size_t len = 0;
    char buf[32];
    CHECK_STATUS(rb_get(dev, "key-0000", 8, buf, sizeof buf, &len), RB_E_NOT_FOUND);
    CHECK_OK(rb_get(dev, "extra", 5, buf, sizeof buf, &len));
    rb_metrics m = {.struct_size = sizeof m};
    CHECK_OK(rb_get_metrics(dev, &m));
    CHECK(m.evictions == batch, "the metrics count %llu evictions", (unsigned long long)m.evictions);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* LRU: the key read last survives; the least recently used one goes (1% rounds to one slot). */
static int test_lru_keeps_what_was_read(void) {
    char path[512];
    uint64_t slots = 0;
    rb_device *dev = full_device("evict-lru", path, sizeof path, &slots);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_set_eviction(dev, RB_EVICT_LRU, 0));
    char buf[32];
    size_t len = 0;
    CHECK_OK(rb_get(dev, "key-0000", 8, buf, sizeof buf, &len));
    CHECK_OK(rb_put(dev, "extra", 5, "x", 1));
    char names[256];
    size_t n = drain(dev, names, sizeof names);
    CHECK(n == 1 && strcmp(names, "key-0001\n") == 0, "key-0001 was evicted, not the key read (%s)", names);
    CHECK_OK(rb_get(dev, "key-0000", 8, buf, sizeof buf, &len));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A key buffer too small for the oldest key says how much it needs and loses nothing. */
static int test_take_evicted_says_what_it_needs(void) {
    char path[512];
    uint64_t slots = 0;
    rb_device *dev = full_device("evict-small", path, sizeof path, &slots);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_set_eviction(dev, RB_EVICT_FIFO, 0));
    CHECK_OK(rb_put(dev, "extra", 5, "x", 1));
    rb_key_info out[1] = {{.struct_size = sizeof out[0]}};
    char keys[4];
    size_t n = 99;
    CHECK_STATUS(rb_take_evicted(dev, out, 1, keys, sizeof keys, &n), RB_E_BUFFER_TOO_SMALL);
    CHECK(n == 0 && out[0].key_len == 8, "needs 8 bytes (%zu)", out[0].key_len);
    char big[16];
    CHECK_OK(rb_take_evicted(dev, out, 1, big, sizeof big, &n));
    CHECK(n == 1 && out[0].key_len == 8 && memcmp(big + out[0].key_offset, "key-0000", 8) == 0, "then it is delivered");
    CHECK_STATUS(rb_set_eviction(dev, 7, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_set_eviction(dev, RB_EVICT_LRU, 1001), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_take_evicted(dev, out, 1, big, sizeof big, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* SIGKILL while puts evict: a child loops puts of new keys on a full LRU device, logging each
 * acknowledged put ("P n") and each key it drained as evicted ("E n"), fdatasync'ed. After the
 * kill a scan recovery must show every acknowledged, not evicted key with its value, no key
 * that was reported evicted (and not put again), and never wrong bytes or RB_E_CORRUPT. */
#define EVICT_KEYS 4096
static void evicting_writer(const char *path, const char *log_path, int first) {
    int log = open(log_path, O_WRONLY | O_APPEND);
    rb_device *dev = NULL;
    if (log < 0 || rb_open(path, NULL, &dev) != RB_OK || rb_recover(dev, NULL, NULL) != RB_OK) _exit(3);
    if (rb_set_eviction(dev, RB_EVICT_LRU, 100) != RB_OK) _exit(4);
    char key[32], line[64], keys[512];
    rb_key_info out[16];
    out[0].struct_size = sizeof out[0];
    for (int n = first; n < EVICT_KEYS; n++) {
        snprintf(key, sizeof key, "ev-%05d", n);
        if (rb_put(dev, key, strlen(key), key, strlen(key)) != RB_OK) _exit(5);
        int len = snprintf(line, sizeof line, "P %d\n", n);
        if (write(log, line, (size_t)len) != len || fdatasync(log) != 0) _exit(6);
        size_t got = 0;
        do {
            if (rb_take_evicted(dev, out, 16, keys, sizeof keys, &got) != RB_OK) _exit(7);
            for (size_t i = 0; i < got; i++) {
                /* Keys are packed, not NUL-terminated: parse exactly key_len bytes. */
                char evicted[32] = {0};
                if (out[i].key_len < 4 || out[i].key_len >= sizeof evicted) _exit(8);
                memcpy(evicted, keys + out[i].key_offset, out[i].key_len);
                int e = atoi(evicted + 3);
                len = snprintf(line, sizeof line, "E %d\n", e);
                if (write(log, line, (size_t)len) != len || fdatasync(log) != 0) _exit(6);
            }
        } while (got > 0);
    }
    _exit(0);
}

static int test_sigkill_while_puts_evict(void) {
    char path[512], log_path[600];
    test_path(path, sizeof path, "evict-kill");
    snprintf(log_path, sizeof log_path, "%s.log", path);
    rb_device *dev = test_create(path, 4 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_close(dev));
    static char state[EVICT_KEYS]; /* 0 never put, 'P' acknowledged, 'E' reported evicted */
    memset(state, 0, sizeof state);
    int next = 0, failures = 0, kills = 0;
    srand((unsigned)time(NULL));
    for (int round = 0; round < 20 && next < EVICT_KEYS - 200; round++) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return T_EXIT_FAIL;
        close(fd);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) evicting_writer(path, log_path, next);
        /* RB_CRASH_KILL_SCALE (make valgrind sets 4) stretches the delay for a slower writer. */
        const char *scale_env = getenv("RB_CRASH_KILL_SCALE");
        long scale = scale_env ? atol(scale_env) : 1;
        long ns = (2000000 + rand() % 20000000) * (scale > 0 ? scale : 1);
        struct timespec ts = {ns / 1000000000, ns % 1000000000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        kills += WIFSIGNALED(status);
        FILE *f = fopen(log_path, "r");
        char line[64];
        int inflight = next; /* the put after the last acknowledged one may have landed */
        while (f && fgets(line, sizeof line, f)) {
            int n = -1;
            if (line[strlen(line) - 1] != '\n') break;
            if (sscanf(line + 2, "%d", &n) != 1 || n < 0 || n >= EVICT_KEYS) continue;
            if (line[0] == 'P') {
                state[n] = 'P';
                inflight = n + 1;
            } else if (line[0] == 'E') {
                state[n] = 'E';
            }
        }
        if (f) fclose(f);
        next = inflight + 1;
        rb_options o;
        rb_options_init(&o);
        o.flags = RB_OPEN_READ_ONLY;
        rb_recover_options ro;
        rb_recover_options_init(&ro);
        ro.mode = RB_RECOVER_SCAN;
        if (rb_open(path, &o, &dev) != RB_OK || rb_recover(dev, &ro, NULL) != RB_OK) {
            printf("FAIL round %d: reopen/recover: %s\n", round, rb_last_error_message());
            return T_EXIT_FAIL;
        }
        for (int n = 0; n < next && n < EVICT_KEYS; n++) {
            char key[32], buf[32];
            size_t len = 0;
            snprintf(key, sizeof key, "ev-%05d", n);
            rb_status s = rb_get(dev, key, strlen(key), buf, sizeof buf, &len);
            int ok = (s == RB_OK && len == strlen(key) && memcmp(buf, key, len) == 0) || s == RB_E_NOT_FOUND;
            if (!ok || (state[n] == 'E' && s != RB_E_NOT_FOUND)) {
                if (failures++ < 5) {
                    printf("FAIL round %d: %s: %s (state %c); its headers on the device:", round, key, rb_status_str(s),
                           state[n] ? state[n] : '-');
                    rb_device_info info = {.struct_size = sizeof info};
                    rb_get_info(dev, &info);
                    for (uint64_t slot = 0; slot < info.slot_count; slot++) {
                        rb_slot_header h = {.struct_size = sizeof h};
                        if (rb_read_headers_batched(dev, &slot, 1, &h) == RB_OK && h.status == RB_HEADER_VALID &&
                            h.key_len == strlen(key) && memcmp(h.key, key, h.key_len) == 0)
                            printf(" slot %llu generation %llu;", (unsigned long long)slot, (unsigned long long)h.generation);
                    }
                    printf("\n");
                }
            }
            /* An acknowledged put that was not reported evicted may still have been evicted by
             * a later put whose drain the kill cut off: absence proves nothing; presence of
             * any other bytes or of a reported-evicted key would. */
        }
        rb_close(dev);
    }
    CHECK(failures == 0, "every recovery: no evicted key came back, no wrong bytes, no RB_E_CORRUPT (%d failures)", failures);
    CHECK(kills > 0 && next > 60, "the writer was killed mid-run and filled the device past eviction (%d keys put)", next);
    unlink(path);
    unlink(log_path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_without_a_policy_a_full_device_says_so);
    RUN(test_fifo_evicts_the_oldest_quarter_and_reports_it);
    RUN(test_lru_keeps_what_was_read);
    RUN(test_take_evicted_says_what_it_needs);
    RUN(test_sigkill_while_puts_evict);
    return test_finish("evict");
}
