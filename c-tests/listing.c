/* Listing the indexed keys: rb_key_cursor_new, rb_list_keys, rb_key_cursor_free. */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>

#define SLOT (64 << 10)
#define CAP 7

/* Keys of varied lengths (some past 256 bytes), and a prefix of another key. */
static size_t make_key(char *buf, int i) {
    int n = snprintf(buf, 64, "key-%04d", (i * 7919) % 1000);
    if (i % 10 == 3) {
        memset(buf + n, 'x', 700);
        n += 700;
    }
    return (size_t)n;
}

static int cmp_keys(const void *a, size_t al, const void *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* Walks the whole iteration; counts the keys and checks they ascend. Returns -1 on a failed call. */
static long walk(rb_device *dev, rb_key_cursor *cur, size_t cap, size_t keys_cap, int (*seen)(const char *, size_t, uint64_t)) {
    rb_key_info out[64];
    char *keys = malloc(keys_cap);
    char last[2048];
    size_t last_len = 0;
    long total = 0;
    int ascending = 1;
    out[0].struct_size = sizeof out[0];
    for (;;) {
        size_t n = 99;
        rb_status s = rb_list_keys(dev, cur, out, cap, keys, keys_cap, &n);
        if (s != RB_OK) {
            CHECK(0, "rb_list_keys: %s", rb_last_error_message());
            total = -1;
            break;
        }
        if (n == 0) break;
        for (size_t i = 0; i < n; i++) {
            const char *k = keys + out[i].key_offset;
            if (total > 0 && cmp_keys(last, last_len, k, out[i].key_len) >= 0) ascending = 0;
            memcpy(last, k, out[i].key_len);
            last_len = out[i].key_len;
            if (seen && !seen(k, out[i].key_len, out[i].value_len)) total = -1000000;
            total++;
        }
    }
    CHECK(ascending, "keys come in strictly ascending memcmp order");
    free(keys);
    return total;
}

static int value_len_matches(const char *k, size_t len, uint64_t value_len) {
    (void)k;
    return value_len == len % 1000; /* what test_every_key_once puts */
}

static int test_every_key_once_in_order(void) {
    char path[512];
    test_path(path, sizeof path, "list-order");
    rb_device *dev = test_create(path, 64 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    char key[1024], value[1000] = {0};
    for (int i = 0; i < 300; i++) {
        size_t kl = make_key(key, i);
        CHECK_OK(rb_put(dev, key, kl, value, kl % 1000));
    }
    CHECK_OK(rb_put(dev, "key-", 4, value, 4)); /* a prefix of every other key: it comes first */
    rb_key_cursor *cur = NULL;
    CHECK_OK(rb_key_cursor_new(NULL, 0, &cur));
    CHECK(walk(dev, cur, CAP, 4096, value_len_matches) == 301, "301 keys, each once, with their value lengths");
    size_t n = 99;
    rb_key_info out[1] = {{.struct_size = sizeof out[0]}};
    char buf[64];
    CHECK_OK(rb_list_keys(dev, cur, out, 1, buf, sizeof buf, &n));
    CHECK(n == 0, "an iteration that is over stays over");
    CHECK_OK(rb_key_cursor_free(cur));

    /* From a key on: strictly after it. */
    CHECK_OK(rb_key_cursor_new("key-", 4, &cur));
    CHECK_OK(rb_list_keys(dev, cur, out, 1, buf, sizeof buf, &n));
    CHECK(n == 1 && out[0].key_len == 8 && memcmp(buf, "key-0000", 8) == 0, "after \"key-\" comes key-0000");
    CHECK_OK(rb_key_cursor_free(cur));
    CHECK_OK(rb_key_cursor_free(NULL));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A key buffer too small for the next key: RB_E_BUFFER_TOO_SMALL says how much, the cursor stays. */
static int test_small_key_buffer(void) {
    char path[512];
    test_path(path, sizeof path, "list-small");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    char longkey[600];
    memset(longkey, 'b', sizeof longkey);
    CHECK_OK(rb_put(dev, "a", 1, "1", 1));
    CHECK_OK(rb_put(dev, longkey, sizeof longkey, "2", 1));
    rb_key_cursor *cur = NULL;
    CHECK_OK(rb_key_cursor_new(NULL, 0, &cur));
    rb_key_info out[4] = {{.struct_size = sizeof out[0]}};
    char buf[1024];
    size_t n = 99;
    CHECK_OK(rb_list_keys(dev, cur, out, 4, buf, 100, &n));
    CHECK(n == 1 && out[0].key_len == 1 && buf[0] == 'a', "the page ends before the key that does not fit");
    CHECK_STATUS(rb_list_keys(dev, cur, out, 4, buf, 100, &n), RB_E_BUFFER_TOO_SMALL);
    CHECK(n == 0 && out[0].key_len == sizeof longkey, "out[0].key_len = %zu, the size needed", out[0].key_len);
    CHECK_OK(rb_list_keys(dev, cur, out, 4, buf, sizeof buf, &n));
    CHECK(n == 1 && out[0].key_len == sizeof longkey && memcmp(buf, longkey, sizeof longkey) == 0,
          "with room, the long key comes next, whole");
    CHECK_OK(rb_key_cursor_free(cur));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A caller built against a larger rb_key_info: entries land struct_size apart, the rest untouched. */
static int test_entries_at_the_callers_stride(void) {
    char path[512];
    test_path(path, sizeof path, "list-stride");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_put(dev, "k1", 2, "12345", 5));
    CHECK_OK(rb_put(dev, "k2", 2, "123", 3));
    enum { STRIDE = sizeof(rb_key_info) + 16 };
    _Alignas(8) unsigned char raw[3 * STRIDE];
    memset(raw, 0xEE, sizeof raw);
    ((rb_key_info *)raw)->struct_size = STRIDE;
    char keys[16];
    size_t n = 0;
    rb_key_cursor *cur = NULL;
    CHECK_OK(rb_key_cursor_new(NULL, 0, &cur));
    CHECK_OK(rb_list_keys(dev, cur, (rb_key_info *)raw, 3, keys, sizeof keys, &n));
    rb_key_info a, b;
    memcpy(&a, raw, sizeof a);
    memcpy(&b, raw + STRIDE, sizeof b);
    CHECK(n == 2 && a.value_len == 5 && b.value_len == 3 && b.key_offset == 2 && memcmp(keys, "k1k2", 4) == 0,
          "two entries at the caller's stride, keys packed");
    int untouched = 1;
    for (size_t i = sizeof(rb_key_info); i < STRIDE; i++) untouched &= raw[i] == 0xEE && raw[STRIDE + i] == 0xEE;
    for (size_t i = 2 * STRIDE; i < 3 * STRIDE; i++) untouched &= raw[i] == 0xEE;
    CHECK(untouched, "bytes past this library's rb_key_info, and unused entries, are left alone");
    CHECK_OK(rb_key_cursor_free(cur));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* The use it exists for: after a restart, recover, then list to rebuild the server's own index. */
static int test_rebuild_after_recovery(void) {
    char path[512];
    test_path(path, sizeof path, "list-recover");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    char key[64], value[100] = {0};
    for (int i = 0; i < 100; i++) {
        int n = snprintf(key, sizeof key, "chunk-%03d", i);
        CHECK_OK(rb_put(dev, key, (size_t)n, value, (size_t)i));
    }
    CHECK_OK(rb_delete(dev, "chunk-050", 9));
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_open(path, NULL, &dev));
    rb_key_cursor *cur = NULL;
    CHECK_OK(rb_key_cursor_new(NULL, 0, &cur));
    rb_key_info out[8] = {{.struct_size = sizeof out[0]}};
    char buf[256];
    size_t n = 0;
    CHECK_STATUS(rb_list_keys(dev, cur, out, 8, buf, sizeof buf, &n), RB_E_STATE);
    CHECK_OK(rb_recover(dev, NULL, NULL));
    CHECK(walk(dev, cur, 8, sizeof buf, NULL) == 99, "99 keys after recovery (one was deleted)");
    CHECK_OK(rb_key_cursor_free(cur));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

static int test_bad_arguments(void) {
    char path[512];
    test_path(path, sizeof path, "list-args");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_key_cursor *cur = NULL;
    CHECK_STATUS(rb_key_cursor_new(NULL, 3, &cur), RB_E_INVALID_ARGUMENT);
    CHECK(cur == NULL, "a failed rb_key_cursor_new leaves *out NULL");
    CHECK_STATUS(rb_key_cursor_new(NULL, 0, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_key_cursor_new(NULL, 0, &cur));
    rb_key_info out[2] = {{.struct_size = sizeof out[0]}};
    char buf[64];
    size_t n = 0;
    CHECK_STATUS(rb_list_keys(dev, NULL, out, 2, buf, sizeof buf, &n), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_list_keys(dev, cur, out, 2, buf, sizeof buf, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_list_keys(dev, cur, out, 0, buf, sizeof buf, &n), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_list_keys(dev, cur, NULL, 2, buf, sizeof buf, &n), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_list_keys(dev, cur, out, 2, NULL, 10, &n), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_list_keys(NULL, cur, out, 2, buf, sizeof buf, &n), RB_E_INVALID_ARGUMENT);
    out[0].struct_size = 0;
    CHECK_STATUS(rb_list_keys(dev, cur, out, 2, buf, sizeof buf, &n), RB_E_INVALID_ARGUMENT);
    out[0].struct_size = sizeof out[0];
    CHECK_OK(rb_list_keys(dev, cur, out, 2, NULL, 0, &n));
    CHECK(n == 0, "an empty device lists nothing");
    CHECK_OK(rb_key_cursor_free(cur));
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* Writers replace the stable keys' values and put and delete other keys interleaved with
 * them, while iterations run: every stable key comes back exactly once. */
#define STABLE 400
static rb_device *shared_dev;
static atomic_int stop_writers;
static atomic_long writer_rounds;
static unsigned char stable_seen[STABLE];
static int seen_twice;

static void *writer(void *arg) {
    long t = (long)arg;
    char key[64];
    for (long i = 0; !atomic_load(&stop_writers); i++) {
        int n = snprintf(key, sizeof key, "stable-%04ld-churn-%ld", (i * 37) % STABLE, t);
        rb_put(shared_dev, key, (size_t)n, "x", 1);
        if (i % 2 == 0) rb_delete(shared_dev, key, (size_t)n);
        n = snprintf(key, sizeof key, "stable-%04ld", (i * 13 + t) % STABLE);
        rb_put(shared_dev, key, (size_t)n, "vv", (size_t)(i % 3));
        atomic_fetch_add(&writer_rounds, 1);
    }
    return NULL;
}

static int note_stable(const char *k, size_t len, uint64_t value_len) {
    (void)value_len;
    int i;
    char z[12]; /* keys in the buffer are not NUL-terminated */
    if (len != 11) return 1;
    memcpy(z, k, 11);
    z[11] = 0;
    if (sscanf(z, "stable-%4d", &i) == 1) {
        if (stable_seen[i]++) seen_twice = 1;
    }
    return 1;
}

static int test_stable_keys_once_under_concurrent_writes(void) {
    char path[512];
    test_path(path, sizeof path, "list-concurrent");
    shared_dev = test_create(path, 64 << 20, 16 << 10, RB_ENGINE_AUTO, 0);
    if (!shared_dev) return T_EXIT_FAIL;
    char key[64];
    for (int i = 0; i < STABLE; i++) {
        int n = snprintf(key, sizeof key, "stable-%04d", i);
        CHECK_OK(rb_put(shared_dev, key, (size_t)n, "v", 1));
    }
    atomic_store(&stop_writers, 0);
    pthread_t th[2];
    for (long t = 0; t < 2; t++) pthread_create(&th[t], NULL, writer, (void *)t);
    while (atomic_load(&writer_rounds) < 10) usleep(100);
    long before = atomic_load(&writer_rounds);
    int iterations = 0, all_once = 1;
    while (iterations < 10 || atomic_load(&writer_rounds) - before < 300) {
        memset(stable_seen, 0, sizeof stable_seen);
        seen_twice = 0;
        rb_key_cursor *cur = NULL;
        CHECK_OK(rb_key_cursor_new(NULL, 0, &cur));
        if (walk(shared_dev, cur, 1 + iterations % 13, 4096, note_stable) < 0) all_once = 0;
        rb_key_cursor_free(cur);
        for (int i = 0; i < STABLE; i++) all_once &= stable_seen[i] == 1;
        all_once &= !seen_twice;
        iterations++;
    }
    atomic_store(&stop_writers, 1);
    for (int t = 0; t < 2; t++) pthread_join(th[t], NULL);
    CHECK(all_once, "%d iterations during %ld writer rounds: every stable key exactly once", iterations,
          atomic_load(&writer_rounds) - before);
    CHECK_OK(rb_close(shared_dev));
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_every_key_once_in_order);
    RUN(test_small_key_buffer);
    RUN(test_entries_at_the_callers_stride);
    RUN(test_rebuild_after_recovery);
    RUN(test_bad_arguments);
    RUN(test_stable_keys_once_under_concurrent_writes);
    return test_finish("listing");
}
