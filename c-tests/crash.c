/* Crash harness: a writer process puts, replaces, deletes and checkpoints in a loop (single
 * calls and batches of distinct keys through rb_put_many / rb_delete_many) and logs
 * every operation (intent before the call, ack after it returned RB_OK) to a side log; the
 * harness SIGKILLs it at a random moment, reopens the device, recovers and checks:
 *  - open and recovery succeed;
 *  - every indexed key's rb_get returns exactly the bytes last acknowledged for it, or those
 *    of the one operation in flight when the writer died (never older, never torn, never
 *    another key's; RB_E_CORRUPT is a failure too);
 *  - a key whose last acknowledged operation is a delete is not indexed (unless that key's
 *    put was in flight);
 *  - a key whose last acknowledged operation is a put is indexed (unless that key's delete
 *    was in flight): no acknowledged put is forgotten, checkpoint or not;
 *  - every key that was in the last completed checkpoint and not touched afterwards is still
 *    indexed, with the checkpointed value.
 * Each image is recovered twice: RB_RECOVER_SCAN, then RB_RECOVER_AUTO (fast recovery from the
 * checkpoint and the lease journal), and both must meet all of the above.
 * The writer is killed by a signal, not a power cut: a write() that returned is in the page
 * cache and survives, and the side log is fdatasync'ed all the same.
 *
 * RB_CRASH_ITERATIONS (default 200) and RB_CRASH_SEED (default: time) control the run;
 * RB_CRASH_KILL_SCALE (default 1) stretches the kill delays for a writer that runs slower
 * than native code (make valgrind sets 4), so it still gets as far before it is killed.
 */
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define KEYS 40
#define SLOT_BYTES (64 << 10)
#define CAPACITY (8 << 20)

enum op { OP_NONE = 0, OP_PUT = 'P', OP_DELETE = 'D', OP_CHECKPOINT = 'C' };

#define MAX_BATCH 6

static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Deterministic value of (key, version): its length and bytes both depend on both. */
static size_t value_of(int key, uint32_t version, uint8_t *buf, size_t max) {
    size_t len = ((size_t)key * 977 + (size_t)version * 7919) % max;
    uint32_t x = (uint32_t)key * 2654435761u ^ version * 40503u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    return len;
}

static void key_name(int key, char *buf, size_t cap) { snprintf(buf, cap, "crash-key-%02d", key); }

static void log_line(int fd, const char *line) {
    size_t n = strlen(line);
    if (write(fd, line, n) != (ssize_t)n || fdatasync(fd) != 0) _exit(3);
}

/* One batch of 2..MAX_BATCH distinct keys, logged as one intent line "I B|E n key version ..."
 * (B: rb_put_many, E: rb_delete_many) and acknowledged by one "A" once every item is RB_OK. */
static void batch(rb_device *dev, int log, int puts, uint32_t *version, uint8_t *buf, size_t max_payload) {
    static uint8_t values[MAX_BATCH][SLOT_BYTES];
    char names[MAX_BATCH][32], line[512];
    int keys[MAX_BATCH], n = 2 + (int)(rng() % (MAX_BATCH - 1));
    rb_item items[MAX_BATCH];
    int used = snprintf(line, sizeof line, "I %c %d", puts ? 'B' : 'E', n);
    for (int i = 0; i < n; i++) {
        int again;
        do { /* distinct keys: the model keeps one operation in flight per key */
            keys[i] = (int)(rng() % KEYS);
            again = 0;
            for (int j = 0; j < i; j++) again |= keys[j] == keys[i];
        } while (again);
        key_name(keys[i], names[i], sizeof names[i]);
        uint32_t v = (*version)++;
        size_t len = puts ? value_of(keys[i], v, values[i], max_payload) : 0;
        items[i] = (rb_item){.struct_size = sizeof(rb_item), .key = names[i], .key_len = strlen(names[i]),
                             .value = values[i], .value_len = len};
        used += snprintf(line + used, sizeof line - (size_t)used, " %d %u", keys[i], v);
    }
    (void)buf;
    snprintf(line + used, sizeof line - (size_t)used, "\n");
    log_line(log, line);
    if ((puts ? rb_put_many(dev, items, (size_t)n) : rb_delete_many(dev, items, (size_t)n)) != RB_OK) _exit(9);
    for (int i = 0; i < n; i++)
        if (items[i].status != RB_OK && !(items[i].status == RB_E_NOT_FOUND && !puts)) _exit(10);
}

/* The writer: runs until killed. Versions continue from `first_version` so values stay unique;
 * it checkpoints now and then unless `checkpoints` is 0. */
static void writer(const char *path, const char *log_path, uint64_t seed, uint32_t first_version, int checkpoints) {
    rng_state = seed | 1;
    int log = open(log_path, O_WRONLY | O_APPEND); /* the harness emptied it before the fork */
    if (log < 0) _exit(3);
    rb_device *dev = NULL;
    if (rb_open(path, NULL, &dev) != RB_OK) _exit(4);
    if (rb_recover(dev, NULL, NULL) != RB_OK) _exit(5);
    log_line(log, "R\n"); /* recovered: operations follow */
    static uint8_t buf[SLOT_BYTES];
    rb_device_info info = {.struct_size = sizeof info};
    rb_get_info(dev, &info);
    char name[32], line[64];
    for (uint32_t version = first_version;; version++) {
        uint64_t r = rng() % 100;
        int key = (int)(rng() % KEYS);
        key_name(key, name, sizeof name);
        if (r < 8 && checkpoints) {
            log_line(log, "I C 0 0\n");
            if (rb_checkpoint(dev) != RB_OK) _exit(6);
        } else if (r < 30) {
            batch(dev, log, r < 22, &version, buf, info.max_payload);
        } else if (r < 40) {
            snprintf(line, sizeof line, "I D %d 0\n", key);
            log_line(log, line);
            rb_status s = rb_delete(dev, name, strlen(name));
            if (s != RB_OK && s != RB_E_NOT_FOUND) _exit(7);
        } else {
            size_t len = value_of(key, version, buf, info.max_payload);
            snprintf(line, sizeof line, "I P %d %u\n", key, version);
            log_line(log, line);
            if (rb_put(dev, name, strlen(name), buf, len) != RB_OK) _exit(8);
        }
        log_line(log, "A\n");
    }
}

/* What the harness knows of each key. */
struct key_state {
    int acked;            /* OP_NONE, OP_PUT or OP_DELETE: the last acknowledged operation */
    uint32_t version;     /* of the last acknowledged put */
    int inflight;         /* the unacknowledged operation on this key, if any */
    uint32_t inflight_version;
    int in_checkpoint;    /* in the last completed checkpoint, untouched since */
    uint32_t checkpoint_version;
};

/* Parses "I B|E n key version ..." into its keys and versions; 0 when malformed. */
static int parse_batch(const char *line, char *op, int *bkeys, unsigned *bversions, int *bn) {
    int used = 0;
    if (sscanf(line, "I %c %d%n", op, bn, &used) != 2 || *bn < 1 || *bn > MAX_BATCH) return 0;
    for (int i = 0; i < *bn; i++) {
        int more = 0;
        if (sscanf(line + used, " %d %u%n", &bkeys[i], &bversions[i], &more) != 2) return 0;
        if (bkeys[i] < 0 || bkeys[i] >= KEYS) return 0;
        used += more;
    }
    return 1;
}

/* Applies the writer's log to the model. Returns the number of acknowledged operations. */
static int replay(const char *log_path, struct key_state *keys) {
    FILE *f = fopen(log_path, "r");
    if (!f) return -1;
    char line[512];
    int acked = 0;
    char op = 0;
    int key = 0;
    unsigned version = 0;
    int pending = 0;
    int bkeys[MAX_BATCH], bn = 0;
    unsigned bversions[MAX_BATCH];
    struct key_state ckpt_snapshot[KEYS];
    for (int k = 0; k < KEYS; k++) keys[k].inflight = OP_NONE;
    while (fgets(line, sizeof line, f)) {
        if (line[strlen(line) - 1] != '\n') break; /* torn last record: never acknowledged */
        if (line[0] == 'I' && (line[2] == 'B' || line[2] == 'E')) {
            if (!parse_batch(line, &op, bkeys, bversions, &bn)) break;
            pending = 1;
        } else if (line[0] == 'A' && pending && (op == 'B' || op == 'E')) {
            pending = 0;
            acked++;
            for (int i = 0; i < bn; i++) {
                keys[bkeys[i]].acked = op == 'B' ? OP_PUT : OP_DELETE;
                keys[bkeys[i]].in_checkpoint = 0;
                if (op == 'B') keys[bkeys[i]].version = bversions[i];
            }
        } else if (line[0] == 'I') {
            if (sscanf(line, "I %c %d %u", &op, &key, &version) != 3) break;
            pending = 1;
            if (op == 'C') memcpy(ckpt_snapshot, keys, sizeof ckpt_snapshot);
        } else if (line[0] == 'A' && pending) {
            pending = 0;
            acked++;
            if (op == 'C') {
                for (int k = 0; k < KEYS; k++) {
                    keys[k].in_checkpoint = ckpt_snapshot[k].acked == OP_PUT;
                    keys[k].checkpoint_version = ckpt_snapshot[k].version;
                }
            } else {
                keys[key].acked = op;
                keys[key].in_checkpoint = 0; /* touched since the checkpoint */
                if (op == 'P') keys[key].version = version;
            }
        }
    }
    fclose(f);
    if (pending && (op == 'B' || op == 'E')) {
        for (int i = 0; i < bn; i++) { /* each item of the batch may or may not have landed */
            keys[bkeys[i]].inflight = op == 'B' ? OP_PUT : OP_DELETE;
            keys[bkeys[i]].inflight_version = bversions[i];
            keys[bkeys[i]].in_checkpoint = 0;
        }
    } else if (pending && op != 'C') {
        keys[key].inflight = op;
        keys[key].inflight_version = version;
        keys[key].in_checkpoint = 0;
    }
    return acked;
}

/* Checks key k after a recovery against the model, and brings the model up to what the
 * device holds now (the next writer starts from it). Returns the number of failures. */
static int check_key(rb_device *dev, const rb_device_info *info, int k, struct key_state *ks, int iteration) {
    static uint8_t got[SLOT_BYTES], want[SLOT_BYTES];
    char name[32];
    key_name(k, name, sizeof name);
    size_t len = 0;
    rb_status s = rb_get(dev, name, strlen(name), got, sizeof got, &len);
    if (s == RB_E_NOT_FOUND) {
        int gone = ks->in_checkpoint;
        if (gone)
            printf("FAIL iteration %d: %s was in the last checkpoint, untouched since, and is gone\n", iteration, name);
        if (!gone && ks->acked == OP_PUT && ks->inflight != OP_DELETE) {
            printf("FAIL iteration %d: %s: its acknowledged put (v%u) was forgotten\n", iteration, name, ks->version);
            gone = 1;
        }
        ks->acked = OP_DELETE;
        ks->inflight = OP_NONE;
        ks->in_checkpoint = 0;
        return gone;
    }
    if (s != RB_OK) {
        printf("FAIL iteration %d: get %s: %s\n", iteration, name, rb_last_error_message());
        return 1;
    }
    int ok = 0, failures = 0;
    if (ks->acked == OP_PUT) {
        size_t n = value_of(k, ks->version, want, info->max_payload);
        ok |= n == len && memcmp(want, got, n) == 0;
    }
    if (ks->inflight == OP_PUT) {
        size_t n = value_of(k, ks->inflight_version, want, info->max_payload);
        if (n == len && memcmp(want, got, n) == 0) {
            ok = 1;
            ks->acked = OP_PUT; /* the in-flight put landed: the next writer starts from it */
            ks->version = ks->inflight_version;
        }
    }
    ks->inflight = OP_NONE;
    if (!ok) {
        printf("FAIL iteration %d: %s holds %zu bytes that are neither its last acknowledged value "
               "(%s v%u) nor the one in flight\n",
               iteration, name, len, ks->acked == OP_PUT ? "put" : ks->acked == OP_DELETE ? "deleted" : "none",
               ks->version);
        failures++;
    }
    if (ks->in_checkpoint && ks->version != ks->checkpoint_version) {
        printf("FAIL iteration %d: model inconsistency for %s\n", iteration, name);
        failures++;
    }
    return failures;
}

/* Reopens the device read-only, recovers it with a scan and then AUTO, and checks every key
 * after each (the scan against a copy of the model, AUTO against the model itself, which
 * then holds what the device holds). `rep` is AUTO's report. Returns the number of failures. */
static int verify(const char *path, struct key_state *keys, int iteration, rb_recover_report *rep) {
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_READ_ONLY;
    rb_device *dev = NULL;
    rb_status s = rb_open(path, &o, &dev);
    if (s != RB_OK) {
        printf("FAIL iteration %d: reopen: %s\n", iteration, rb_last_error_message());
        return 1;
    }
    rb_device_info info = {.struct_size = sizeof info};
    rb_get_info(dev, &info);
    static struct key_state scan_model[KEYS];
    memcpy(scan_model, keys, sizeof scan_model);
    int failures = 0;
    for (int pass = 0; pass < 2; pass++) {
        rb_recover_options ro;
        rb_recover_options_init(&ro);
        ro.mode = pass == 0 ? RB_RECOVER_SCAN : RB_RECOVER_AUTO;
        *rep = (rb_recover_report){.struct_size = sizeof *rep};
        if (rb_recover(dev, &ro, rep) != RB_OK) {
            printf("FAIL iteration %d: recover (%s): %s\n", iteration, pass ? "AUTO" : "SCAN", rb_last_error_message());
            rb_close(dev);
            return failures + 1;
        }
        struct key_state *model = pass == 0 ? scan_model : keys;
        for (int k = 0; k < KEYS; k++) failures += check_key(dev, &info, k, &model[k], iteration);
    }
    rb_close(dev);
    return failures;
}

/* What a run of the harness saw. */
struct crash_run {
    const char *path, *log_path;
    struct key_state keys[KEYS];
    uint32_t version; /* the next writer's first version */
    long kill_scale;  /* RB_CRASH_KILL_SCALE */
    int failures, total_acked, from_checkpoint, before_checkpoint, stale, recovered_since;
};

/* Waits (up to 5 s) until the writer has logged that it recovered. */
static void wait_for_recovered(const char *log_path) {
    for (int waited_ms = 0; waited_ms < 5000; waited_ms++) {
        int fd = open(log_path, O_RDONLY);
        char c = 0;
        ssize_t n = fd < 0 ? -1 : read(fd, &c, 1);
        if (fd >= 0) close(fd);
        if (n == 1 && c == 'R') return;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

/* One iteration: start a writer, SIGKILL it, replay its log into the model, recover and verify.
 * Returns 0 to go on, nonzero when the harness itself cannot (the failure is counted). */
static int crash_iteration(struct crash_run *run, int i) {
    /* Every 25 iterations start over on a fresh format and kill early, so recoveries
     * before the first checkpoint (the journal alone) are exercised too. */
    int fresh = i > 0 && i % 25 == 0;
    if (fresh) {
        rb_device *dev = test_create(run->path, CAPACITY, SLOT_BYTES, RB_ENGINE_AUTO, 0);
        if (!dev) return ++run->failures;
        rb_close(dev);
        memset(run->keys, 0, sizeof run->keys);
    }
    /* Empty the side log here, not in the writer: a writer killed before it opens the log
     * must leave an empty one (nothing happened), not the previous writer's to replay again. */
    int log = open(run->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log < 0 || close(log) != 0) {
        printf("FAIL iteration %d: cannot empty the side log %s\n", i, run->log_path);
        return ++run->failures;
    }
    fflush(stdout);
    pid_t pid = fork();
    /* A fresh device's writer takes no checkpoint, so its recovery always comes before the
     * first one (counting on the kill to beat the writer's first checkpoint made that flaky). */
    if (pid == 0) writer(run->path, run->log_path, rng(), run->version, !fresh);
    /* Most kills are timed from the writer's "recovered" line, so a slow start-up (a loaded
     * machine, valgrind) does not eat the delay; every tenth lands during start-up instead. */
    if (i % 10 != 0) wait_for_recovered(run->log_path);
    /* Kill somewhere between the writer's start-up and a few dozen operations in. */
    long max_ns = fresh ? 3000000 : 25000000;
    long ns = (500000 + (long)(rng() % (uint64_t)max_ns)) * run->kill_scale;
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        printf("FAIL iteration %d: the writer exited on its own (status %d)\n", i, status);
        return ++run->failures;
    }
    int acked = replay(run->log_path, run->keys);
    if (acked < 0) {
        printf("FAIL iteration %d: no side log\n", i);
        return ++run->failures;
    }
    run->total_acked += acked;
    run->version += 1000000; /* the next writer's versions never repeat this one's */
    rb_recover_report rep;
    run->failures += verify(run->path, run->keys, i, &rep);
    run->from_checkpoint += rep.source == RB_RECOVERED_JOURNAL && rep.checkpoint_sequence > 0;
    run->before_checkpoint += rep.source == RB_RECOVERED_JOURNAL && rep.checkpoint_sequence == 0;
    run->recovered_since += (int)rep.recovered_since_checkpoint;
    run->stale += (int)rep.dropped_stale;
    return 0;
}

static int test_sigkill_writer_and_recover(void) {
    const char *it_env = getenv("RB_CRASH_ITERATIONS");
    const char *seed_env = getenv("RB_CRASH_SEED");
    const char *scale_env = getenv("RB_CRASH_KILL_SCALE");
    int iterations = it_env ? atoi(it_env) : 200;
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    long kill_scale = scale_env && atol(scale_env) > 0 ? atol(scale_env) : 1;
    printf("crash harness: %d iterations, RB_CRASH_SEED=%llu, RB_CRASH_KILL_SCALE=%ld\n", iterations,
           (unsigned long long)seed, kill_scale);
    rng_state = seed * 2654435761u | 1;

    char path[512], log_path[512];
    test_path(path, sizeof path, "crash");
    test_path(log_path, sizeof log_path, "crash-log");
    static struct crash_run run;
    memset(&run, 0, sizeof run);
    run.path = path;
    run.log_path = log_path;
    run.version = 1;
    run.kill_scale = kill_scale;
    rb_device *dev = test_create(path, CAPACITY, SLOT_BYTES, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);

    for (int i = 0; i < iterations && run.failures == 0; i++)
        if (crash_iteration(&run, i)) break;
    printf("%d iterations, %d acknowledged operations checked; AUTO recovered fast from a checkpoint %d times, "
           "from the journal alone (no checkpoint yet) %d times, %d puts made since a checkpoint; %d stale entries dropped\n",
           iterations, run.total_acked, run.from_checkpoint, run.before_checkpoint, run.recovered_since, run.stale);
    CHECK(run.failures == 0, "every recovery (SCAN and AUTO) returned only acknowledged (or in-flight) values, "
          "forgot no acknowledged put and kept the checkpoint");
    CHECK(run.total_acked > iterations, "the writer made progress (%d operations acknowledged)", run.total_acked);
    CHECK(run.from_checkpoint > 0 && run.recovered_since > 0, "AUTO recovered from checkpoints plus the puts made since");
    CHECK(iterations < 50 || run.before_checkpoint > 0, "recoveries before the first checkpoint used the journal alone");
    unlink(path);
    unlink(log_path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_sigkill_writer_and_recover);
    return test_finish("crash");
}
