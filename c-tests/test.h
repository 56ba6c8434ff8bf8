/* Shared helpers for the C tests: checks that print what they check, and scratch devices. */
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

static int rb_test_failures = 0;

/* Fails the test (and carries on) when cond is false; prints every check. */
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

/* A fresh scratch path under target/ (O_DIRECT works there; /tmp may be tmpfs). */
static inline void test_path(char *buf, size_t cap, const char *name) {
    const char *dir = getenv("RB_TEST_TMP");
    snprintf(buf, cap, "%s/%s-%d.img", dir ? dir : "/tmp", name, (int)getpid());
    unlink(buf);
}

/* Formats a scratch file of `capacity` bytes with `slot_bytes` slots. */
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
    if (s != RB_OK) {
        printf("FAIL cannot create %s: %s\n", path, rb_last_error_message());
        exit(1);
    }
    return dev;
}

static inline int test_finish(const char *name) {
    printf("%s: %s\n", name, rb_test_failures ? "FAILED" : "all checks passed");
    return rb_test_failures ? 1 : 0;
}

#endif
