/* Instant restart: fast recovery (RB_RECOVER_AUTO with the lease journal), rb_sync,
 * rb_verify_step, rb_set_auto_checkpoint, and what a first read of an entry trusted unread answers. The writer is a
 * child process killed with SIGKILL, so nothing is closed or checkpointed on its way out. */
#include "test.h"

#include <signal.h>
#include <sys/wait.h>

#define SLOT (64 << 10)
#define CAPACITY (32 << 20)
#define KEYS 200

static void key_of(int i, char *buf, size_t cap) { snprintf(buf, cap, "restart-%03d", i); }

static rb_device *open_rw(const char *path) {
    rb_device *dev = NULL;
    CHECK_OK(rb_open(path, NULL, &dev));
    return dev;
}

/* The child: checkpoint KEYS keys, then replace every 10th, delete every 20th (from 5), put
 * 20 new ones and sync, then wait to be killed. */
static void writer(const char *path, int ready_fd) {
    rb_device *dev = NULL;
    if (rb_open(path, NULL, &dev) != RB_OK || rb_recover(dev, NULL, NULL) != RB_OK) _exit(2);
    char key[32], value[64];
    for (int i = 0; i < KEYS; i++) {
        key_of(i, key, sizeof key);
        int n = snprintf(value, sizeof value, "checkpointed %d", i);
        if (rb_put(dev, key, strlen(key), value, (size_t)n) != RB_OK) _exit(3);
    }
    if (rb_checkpoint(dev) != RB_OK) _exit(4);
    for (int i = 0; i < KEYS; i += 10) {
        key_of(i, key, sizeof key);
        int n = snprintf(value, sizeof value, "replaced %d", i);
        if (rb_put(dev, key, strlen(key), value, (size_t)n) != RB_OK) _exit(5);
    }
    for (int i = 5; i < KEYS; i += 20) {
        key_of(i, key, sizeof key);
        if (rb_delete(dev, key, strlen(key)) != RB_OK) _exit(6);
    }
    for (int i = KEYS; i < KEYS + 20; i++) {
        key_of(i, key, sizeof key);
        int n = snprintf(value, sizeof value, "new %d", i);
        if (rb_put(dev, key, strlen(key), value, (size_t)n) != RB_OK) _exit(7);
    }
    if (rb_sync(dev) != RB_OK) _exit(8);
    if (write(ready_fd, "k", 1) != 1) _exit(9);
    for (;;) pause();
}

static int expected(int i, char *value, size_t cap) {
    if (i >= KEYS) return snprintf(value, cap, "new %d", i);
    if (i % 20 == 5) return -1;
    if (i % 10 == 0) return snprintf(value, cap, "replaced %d", i);
    return snprintf(value, cap, "checkpointed %d", i);
}

static int test_sigkill_after_the_checkpoint_loses_nothing(void) {
    char path[512];
    test_path(path, sizeof path, "restart-kill");
    rb_device *dev = test_create(path, CAPACITY, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_close(dev));
    int pipefd[2];
    if (pipe(pipefd) != 0) return T_EXIT_FAIL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) writer(path, pipefd[1]);
    char c = 0;
    CHECK(read(pipefd[0], &c, 1) == 1, "the writer finished its puts");
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(pipefd[0]);
    close(pipefd[1]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "killed, not exited (status %d)", status);

    dev = open_rw(path);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.source == RB_RECOVERED_JOURNAL && rep.checkpoint_sequence == 1 && rep.checkpoint_entries == KEYS,
          "AUTO is fast recovery from checkpoint 1 (source %u)", rep.source);
    CHECK(rep.recovered_since_checkpoint == KEYS / 10 + 20, "the %d replaces and 20 new puts since it are indexed (%llu)",
          KEYS / 10, (unsigned long long)rep.recovered_since_checkpoint);
    CHECK(rep.header_reads == rep.leased_slots && rep.leased_slots < KEYS,
          "only the %llu leased slots were read, not the %d checkpointed entries", (unsigned long long)rep.leased_slots, KEYS);
    char key[32], want[64], got[64];
    int wrong = 0;
    for (int i = 0; i < KEYS + 20; i++) {
        key_of(i, key, sizeof key);
        int n = expected(i, want, sizeof want);
        size_t len = 0;
        rb_status s = rb_get(dev, key, strlen(key), got, sizeof got, &len);
        if (n < 0 ? s != RB_E_NOT_FOUND : (s != RB_OK || len != (size_t)n || memcmp(got, want, len) != 0)) {
            if (wrong++ < 5) printf("  %s: %s, %zu bytes\n", key, rb_status_str(s), len);
        }
    }
    CHECK(wrong == 0, "every key reads its last acknowledged value; deleted keys are not found (%d wrong)", wrong);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

static int test_verify_step(void) {
    char path[512];
    test_path(path, sizeof path, "restart-verify");
    rb_device *dev = test_create(path, CAPACITY, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    char key[32];
    for (int i = 0; i < 50; i++) {
        key_of(i, key, sizeof key);
        CHECK_OK(rb_put(dev, key, strlen(key), "v", 1));
    }
    CHECK_OK(rb_checkpoint(dev));
    for (int i = 0; i < 5; i++) {
        key_of(i, key, sizeof key);
        CHECK_OK(rb_delete(dev, key, strlen(key)));
    }
    CHECK_OK(rb_close(dev)); /* no checkpoint on close: the deletes are on the device only */

    dev = open_rw(path);
    CHECK_OK(rb_recover(dev, NULL, NULL));
    rb_verify_progress p = {.struct_size = sizeof p};
    CHECK_OK(rb_verify_step(dev, 0, &p));
    CHECK(p.checked == 0 && p.remaining == 50, "max 0 only reports: %llu remain", (unsigned long long)p.remaining);
    uint64_t checked = 0, dropped = 0;
    int steps = 0;
    do {
        CHECK_OK(rb_verify_step(dev, 16, &p));
        checked += p.checked;
        dropped += p.dropped;
    } while (p.remaining > 0 && ++steps < 100);
    CHECK(checked == 50 && dropped == 5 && p.remaining == 0, "50 checked in bounded steps, the 5 deleted dropped");
    bool found = true;
    key_of(3, key, sizeof key);
    CHECK_OK(rb_contains(dev, key, strlen(key), &found));
    CHECK(!found, "a deleted key is no longer listed");
    CHECK_OK(rb_verify_step(dev, 16, NULL));
    CHECK_STATUS(rb_verify_step(NULL, 16, &p), RB_E_INVALID_ARGUMENT);
    p.struct_size = 3;
    CHECK_STATUS(rb_verify_step(dev, 16, &p), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_sync(NULL), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_sync(dev));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A first get of an entry trusted unread whose slot was zeroed after the checkpoint: not found. */
static int test_first_get_of_a_deleted_entry(void) {
    char path[512];
    test_path(path, sizeof path, "restart-lazy");
    rb_device *dev = test_create(path, CAPACITY, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_put(dev, "gone", 4, "old", 3));
    CHECK_OK(rb_put(dev, "kept", 4, "yes", 3));
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_delete(dev, "gone", 4));
    CHECK_OK(rb_close(dev));
    dev = open_rw(path);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.trusted_unread == 2, "both indexed unread (%llu)", (unsigned long long)rep.trusted_unread);
    char buf[8];
    size_t len = 0;
    CHECK_STATUS(rb_get(dev, "gone", 4, buf, sizeof buf, &len), RB_E_NOT_FOUND);
    CHECK_OK(rb_get(dev, "kept", 4, buf, sizeof buf, &len));
    CHECK(len == 3 && memcmp(buf, "yes", 3) == 0, "the other entry is verified and served");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* rb_set_auto_checkpoint: after every 10 changes the handle checkpoints by itself; a restart
 * then finds the last of those checkpoints and only the puts made after it in the journal. */
static int test_auto_checkpoint(void) {
    char path[512];
    test_path(path, sizeof path, "restart-auto");
    rb_device *dev = test_create(path, CAPACITY, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    CHECK_STATUS(rb_set_auto_checkpoint(NULL, 10, 0), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_set_auto_checkpoint(dev, 10, 0));
    char key[32];
    for (int i = 0; i < 25; i++) {
        key_of(i, key, sizeof key);
        CHECK_OK(rb_put(dev, key, strlen(key), "v", 1));
    }
    CHECK_OK(rb_close(dev)); /* no rb_checkpoint call */
    dev = open_rw(path);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.checkpoint_sequence == 2 && rep.checkpoint_entries == 20 && rep.recovered_since_checkpoint == 5,
          "two automatic checkpoints (sequence %llu, %llu entries), 5 puts since (%llu)",
          (unsigned long long)rep.checkpoint_sequence, (unsigned long long)rep.checkpoint_entries,
          (unsigned long long)rep.recovered_since_checkpoint);
    CHECK(rep.indexed == 25, "all 25 keys (%llu)", (unsigned long long)rep.indexed);
    CHECK_OK(rb_set_auto_checkpoint(dev, 0, 0)); /* off again */
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_sigkill_after_the_checkpoint_loses_nothing);
    RUN(test_verify_step);
    RUN(test_first_get_of_a_deleted_entry);
    RUN(test_auto_checkpoint);
    return test_finish("restart");
}
