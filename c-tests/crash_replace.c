/* SIGKILL harness for replacing puts, buffered, with large slots (issue 11 item 1).
 *
 * A child process opens the device with RB_OPEN_BUFFERED (32 MiB slots, 8 of them, no
 * checkpoint, so recovery scans) and loops rb_put("K", value_v) for v = 1, 2, ...; after each
 * acknowledged put it records v in a side file. The parent SIGKILLs it at a random moment;
 * a buffered pwrite of 32 MiB that a kill interrupts leaves a torn record: its header (the
 * first page) is there, its payload only in part. Then the parent recovers (AUTO, which
 * scans) and checks:
 *  - rb_get("K") is RB_OK, never RB_E_CORRUPT or RB_E_NOT_FOUND: the key always had an
 *    acknowledged value, and a torn newer copy must not supersede it;
 *  - the value is whole: every 4 KiB block is stamped with one version and its position,
 *    and the length is that version's;
 *  - it is the last acknowledged version or the one in flight, never older.
 * Before the fix the scan took the torn copy as newest and answered RB_E_CORRUPT (and the
 * next writer invalidated the good copy, losing the key for good).
 *
 * RB_CRASH_REPLACE_ITERATIONS (default 40) and RB_CRASH_SEED (default: time) control the run.
 */
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define SLOT_BYTES ((uint64_t)32 << 20)
#define CAPACITY (9 * SLOT_BYTES) /* 8 slots and the metadata */
#define BLOCK 4096

static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Between half the payload and all of it, and not always a whole number of blocks. */
static size_t value_len(uint32_t version, size_t max) {
    return max - ((size_t)version * 2654435761u) % (max / 2);
}

/* Every 4 KiB block starts with the version and its own index; the rest is a pattern of both. */
static void fill(uint8_t *buf, size_t len, uint32_t version) {
    for (size_t at = 0, i = 0; at < len; at += BLOCK, i++) {
        size_t n = len - at < BLOCK ? len - at : BLOCK;
        uint8_t block[BLOCK];
        memset(block, (int)((version * 31u + (uint32_t)i) & 0xff), sizeof block);
        uint32_t stamp[2] = {version, (uint32_t)i};
        memcpy(block, stamp, sizeof stamp);
        memcpy(buf + at, block, n);
    }
}

/* The version a value holds, or 0 when it is not exactly one version's whole value. */
static uint32_t whole_version(const uint8_t *buf, size_t len, size_t max, uint8_t *scratch) {
    uint32_t version;
    if (len < sizeof version) return 0;
    memcpy(&version, buf, sizeof version);
    if (version == 0 || value_len(version, max) != len) return 0;
    fill(scratch, len, version);
    return memcmp(scratch, buf, len) == 0 ? version : 0;
}

static rb_device *open_buffered(const char *path, uint32_t extra_flags) {
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_BUFFERED | extra_flags;
    rb_device *dev = NULL;
    return rb_open(path, &o, &dev) == RB_OK ? dev : NULL;
}

/* The child: replaces K until killed, recording each acknowledged version in `ack_path`.
 * It writes a byte to `ready` once recovered, so kills land among the puts. */
static void writer(const char *path, const char *ack_path, uint32_t first_version, int ready) {
    rb_device *dev = open_buffered(path, 0);
    if (!dev) _exit(4);
    if (rb_recover(dev, NULL, NULL) != RB_OK) _exit(5);
    if (write(ready, "r", 1) != 1) _exit(3);
    int ack = open(ack_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (ack < 0) _exit(3);
    rb_device_info info = {.struct_size = sizeof info};
    rb_get_info(dev, &info);
    uint8_t *buf = malloc(info.max_payload);
    if (!buf) _exit(3);
    for (uint32_t v = first_version;; v++) {
        size_t len = value_len(v, info.max_payload);
        fill(buf, len, v);
        if (rb_put(dev, "K", 1, buf, len) != RB_OK) _exit(8);
        /* The page cache survives SIGKILL: no fsync needed for the side file. */
        if (pwrite(ack, &v, sizeof v, 0) != (ssize_t)sizeof v) _exit(3);
    }
}

static int test_replacing_puts_survive_sigkill(void) {
    const char *it_env = getenv("RB_CRASH_REPLACE_ITERATIONS");
    const char *seed_env = getenv("RB_CRASH_SEED");
    int iterations = it_env ? atoi(it_env) : 40;
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    printf("crash_replace: %d iterations, RB_CRASH_SEED=%llu, buffered, %llu MiB slots\n", iterations,
           (unsigned long long)seed, (unsigned long long)(SLOT_BYTES >> 20));
    rng_state = seed * 2654435761u | 1;

    char path[512], ack_path[512];
    test_path(path, sizeof path, "crash-replace");
    test_path(ack_path, sizeof ack_path, "crash-replace-ack");
    rb_device *dev = test_create(path, CAPACITY, SLOT_BYTES, RB_ENGINE_AUTO, 0);
    rb_device_info info = {.struct_size = sizeof info};
    rb_get_info(dev, &info);
    size_t max = info.max_payload;
    uint8_t *buf = malloc(max), *scratch = malloc(max);
    CHECK(buf && scratch, "buffers of %zu bytes", max);
    if (!buf || !scratch) return 1;
    /* K has an acknowledged value before the first kill. */
    fill(buf, value_len(1, max), 1);
    CHECK_OK(rb_put(dev, "K", 1, buf, value_len(1, max)));
    rb_close(dev);

    uint32_t acked = 1, next = 2;
    long window_ms = 150;
    int corrupt = 0, missing = 0, torn = 0, older = 0, duplicates = 0, in_flight = 0, acked_puts = 0;
    for (int i = 0; i < iterations; i++) {
        unlink(ack_path);
        int ready[2];
        if (pipe(ready) != 0) return 1;
        pid_t pid = fork();
        if (pid == 0) writer(path, ack_path, next, ready[1]);
        close(ready[1]);
        char byte;
        if (read(ready[0], &byte, 1) != 1) byte = 0; /* the writer died before recovering */
        close(ready[0]);
        /* Kill within the first few puts: a 32 MiB buffered put takes some 10 to 100 ms
         * natively, far longer under valgrind, so the window adapts (below). */
        uint64_t ns = rng() % ((uint64_t)window_ms * 1000000);
        struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            CHECK(0, "iteration %d: the writer died on its own (status %#x)", i, status);
            break;
        }
        uint32_t last = 0;
        int fd = open(ack_path, O_RDONLY);
        if (fd >= 0) {
            if (read(fd, &last, sizeof last) != (ssize_t)sizeof last) last = 0;
            close(fd);
        }
        if (last) {
            acked_puts += (int)(last - next + 1);
            acked = last;
        }
        if (!last && window_ms < 20000)
            window_ms *= 2; /* no put completed: give the next writer longer */
        else if (last && last - next > 4 && window_ms > 40)
            window_ms /= 2;
        uint32_t flying = last ? last + 1 : next; /* the put in flight at the kill */

        dev = open_buffered(path, RB_OPEN_READ_ONLY);
        if (!dev) {
            CHECK(0, "iteration %d: reopen: %s", i, rb_last_error_message());
            break;
        }
        rb_recover_report rep = {.struct_size = sizeof rep};
        rb_status s = rb_recover(dev, NULL, &rep);
        if (s != RB_OK) {
            CHECK(0, "iteration %d: recover: %s", i, rb_last_error_message());
            rb_close(dev);
            break;
        }
        duplicates += rep.dropped_stale > 0;
        size_t len = 0;
        s = rb_get(dev, "K", 1, buf, max, &len);
        rb_close(dev);
        if (s == RB_E_CORRUPT) {
            printf("iteration %d: get K answered RB_E_CORRUPT (last acknowledged v%u, v%u in flight)\n", i, acked, flying);
            corrupt++;
        } else if (s != RB_OK) {
            printf("iteration %d: get K answered %s\n", i, rb_status_str(s));
            missing++;
        } else {
            uint32_t v = whole_version(buf, len, max, scratch);
            if (v == 0) {
                printf("iteration %d: K holds %zu bytes that are no single whole value\n", i, len);
                torn++;
            } else if (v != acked && v != flying) {
                printf("iteration %d: K holds v%u; last acknowledged v%u, v%u in flight\n", i, v, acked, flying);
                older++;
            } else if (v == flying) {
                in_flight++;
                acked = v; /* the put in flight landed: the next writer starts from it */
            }
        }
        next = flying + 1;
    }
    printf("crash_replace: %d kills, %d puts acknowledged; %d recoveries found duplicate copies of K, "
           "%d found the put in flight whole; kill window %ld ms at the end\n",
           iterations, acked_puts, duplicates, in_flight, window_ms);
    CHECK(corrupt == 0, "no recovery answered RB_E_CORRUPT for K (%d of %d did)", corrupt, iterations);
    CHECK(missing == 0, "K was always found (%d times not)", missing);
    CHECK(torn == 0 && older == 0, "K always held a whole value, the last acknowledged or the one in flight "
          "(%d torn, %d older)", torn, older);
    CHECK(acked_puts > iterations / 4, "the writer made progress (%d puts acknowledged)", acked_puts);
    free(buf);
    free(scratch);
    unlink(path);
    unlink(ack_path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_replacing_puts_survive_sigkill);
    return test_finish("crash_replace");
}
