/* Shared helpers for the C tests: checks that print what they check, scratch devices, and
 * cases run one at a time.
 *
 * Each program is a list of cases, as in liburing's tests: `static int test_<what>(void)`
 * makes its own scratch device, removes it, and returns T_EXIT_PASS, T_EXIT_FAIL, or
 * T_EXIT_SKIP after printing why. main only runs them:
 *
 *     int main(int argc, char **argv) {
 *         test_init(argc, argv);
 *         RUN(test_something);
 *         return test_finish("name");
 *     }
 *
 * A case fails when it returns T_EXIT_FAIL or when any CHECK in it failed; either way the
 * next case starts afresh. The program exits 0 when no case failed, 77 when every case that
 * ran skipped, 1 otherwise, and its last line is "name: all checks passed (...)" or
 * "name: FAILED (...)".
 *
 * One case alone: `bash c-tests/run.sh data stale_header`, or a built program with the case's
 * name (with or without "test_") as its argument ("*_nvme": every case ending so); `--list`
 * prints the names.
 */
#ifndef RB_C_TEST_H
#define RB_C_TEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rawblock.h"

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

static int rb_test_failures = 0; /* failed CHECKs in the case running now */

/* Fails the running case (and carries on) when cond is false; prints every check. */
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (cond) {                                                          \
            printf("ok   ");                                                 \
        } else {                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                      \
            rb_test_failures++;                                              \
        }                                                                    \
        printf(__VA_ARGS__);                                                 \
        printf("\n");                                                        \
    } while (0)

/* Checks a call's status and, on failure, that a message was left. */
#define CHECK_STATUS(call, want)                                             \
    do {                                                                     \
        rb_status got_ = (call);                                             \
        const char *msg_ = rb_last_error_message();                          \
        CHECK(got_ == (want), "%s == %s (got %d: %s; message: %s)", #call,   \
              #want, got_, rb_status_str(got_), msg_);                       \
        if ((want) != RB_OK)                                                 \
            CHECK(msg_ && msg_[0], "%s leaves a message", #call);            \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, RB_OK)

/* What a case returns at its end: fail if any of its CHECKs failed. */
static inline int test_result(void) { return rb_test_failures ? T_EXIT_FAIL : T_EXIT_PASS; }

/* Returns T_EXIT_SKIP from the case after saying why. */
#define SKIP(...)                                                            \
    do {                                                                     \
        printf("skip ");                                                     \
        printf(__VA_ARGS__);                                                 \
        printf("\n");                                                        \
        return T_EXIT_SKIP;                                                  \
    } while (0)

/* A fresh scratch path under target/ (O_DIRECT works there; /tmp may be tmpfs). */
static inline void test_path(char *buf, size_t cap, const char *name) {
    const char *dir = getenv("RB_TEST_TMP");
    snprintf(buf, cap, "%s/%s-%d.img", dir ? dir : "/tmp", name, (int)getpid());
    unlink(buf);
}

/* Formats a scratch file of `capacity` bytes with `slot_bytes` slots; NULL (a failed check)
 * when it cannot. */
static inline rb_device *test_create(const char *path, uint64_t capacity, uint64_t slot_bytes,
                                     uint32_t engine, uint32_t queue_depth) {
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
    o.capacity_bytes = capacity;
    o.slot_bytes = slot_bytes;
    o.engine = engine;
    if (queue_depth) o.queue_depth = queue_depth;
    rb_device *dev = NULL;
    rb_status s = rb_open(path, &o, &dev);
    CHECK(s == RB_OK, "created %s (%s)", path, s == RB_OK ? "ok" : rb_last_error_message());
    return s == RB_OK ? dev : NULL;
}

/* Full validation (RB_RECOVER_CHECKPOINT): every checkpoint entry's header read and checked.
 * Tests of header reads and stale entries use it; RB_RECOVER_AUTO trusts the checkpoint. */
static inline rb_status recover_full(rb_device *dev, rb_recover_report *rep) {
    rb_recover_options o;
    rb_recover_options_init(&o);
    o.mode = RB_RECOVER_CHECKPOINT;
    return rb_recover(dev, &o, rep);
}

/* The runner. */
static struct {
    const char *only; /* argv[1]: run just this case */
    int list;         /* --list: print the case names, run nothing */
    int passed, failed, skipped;
    char failed_names[512];
} rb_test_run;

static inline void test_init(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--list") == 0)
        rb_test_run.list = 1;
    else if (argc > 1)
        rb_test_run.only = argv[1];
}

/* A name, with or without "test_", or "*SUFFIX": every case whose name ends in SUFFIX. */
static inline int test_selected(const char *name) {
    const char *only = rb_test_run.only;
    if (only && only[0] == '*') {
        size_t n = strlen(name), k = strlen(only + 1);
        return n >= k && strcmp(name + n - k, only + 1) == 0;
    }
    return !only || strcmp(only, name) == 0 || (strncmp(name, "test_", 5) == 0 && strcmp(only, name + 5) == 0);
}

#define RUN(fn) test_run_case(#fn, fn)

static inline void test_run_case(const char *name, int (*fn)(void)) {
    if (rb_test_run.list) {
        printf("%s\n", name);
        return;
    }
    if (!test_selected(name)) return;
    printf("--- %s\n", name);
    fflush(stdout); /* a case may fork */
    rb_test_failures = 0;
    int rc = fn();
    if (rc == T_EXIT_PASS && rb_test_failures == 0) {
        printf("--- %s: passed\n", name);
        rb_test_run.passed++;
    } else if (rc == T_EXIT_SKIP && rb_test_failures == 0) {
        printf("--- %s: skipped\n", name);
        rb_test_run.skipped++;
    } else {
        printf("--- %s: FAILED (returned %d, %d failed checks)\n", name, rc, rb_test_failures);
        rb_test_run.failed++;
        size_t used = strlen(rb_test_run.failed_names);
        snprintf(rb_test_run.failed_names + used, sizeof rb_test_run.failed_names - used, " %s", name);
    }
    fflush(stdout);
}

/* The program's closing line and exit code: 0 pass, 77 every case skipped, 1 fail. */
static inline int test_finish(const char *name) {
    int ran = rb_test_run.passed + rb_test_run.failed + rb_test_run.skipped;
    if (rb_test_run.list) return T_EXIT_PASS;
    if (ran == 0) {
        printf("%s: FAILED (no case named %s; --list prints them)\n", name, rb_test_run.only ? rb_test_run.only : "?");
        return T_EXIT_FAIL;
    }
    if (rb_test_run.failed) {
        printf("%s: FAILED (%d of %d cases:%s)\n", name, rb_test_run.failed, ran, rb_test_run.failed_names);
        return T_EXIT_FAIL;
    }
    if (rb_test_run.passed == 0) {
        printf("%s: skipped (%d case%s)\n", name, ran, ran == 1 ? "" : "s");
        return T_EXIT_SKIP;
    }
    printf("%s: all checks passed (%d case%s", name, ran, ran == 1 ? "" : "s");
    if (rb_test_run.skipped) printf(", %d skipped", rb_test_run.skipped);
    printf(")\n");
    return T_EXIT_PASS;
}

#endif
