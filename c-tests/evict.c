/* Eviction: rb_set_eviction (none, FIFO, LRU), the low watermark, rb_take_evicted. */
#include "test.h"

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

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_without_a_policy_a_full_device_says_so);
    RUN(test_fifo_evicts_the_oldest_quarter_and_reports_it);
    RUN(test_lru_keeps_what_was_read);
    RUN(test_take_evicted_says_what_it_needs);
    return test_finish("evict");
}
