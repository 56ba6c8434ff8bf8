/* Per-handle metrics: rb_get_metrics, rb_reset_metrics. */
#include "test.h"

#define SLOT (64 << 10)

static rb_metrics metrics(rb_device *dev) {
    rb_metrics m = {.struct_size = sizeof m};
    CHECK_OK(rb_get_metrics(dev, &m));
    return m;
}

static int ordered(const rb_latency *l) {
    return l->p50_ns <= l->p99_ns && l->p99_ns <= l->p999_ns && l->p999_ns <= l->max_ns;
}

static int test_counters_and_latencies(void) {
    char path[512];
    test_path(path, sizeof path, "metrics-count");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_metrics m = metrics(dev);
    CHECK(m.gets == 0 && m.puts == 0 && m.get_latency.count == 0 && m.get_latency.p99_ns == 0, "a new handle is all zeros");
    static char value[3000];
    char buf[4096];
    size_t len = 0;
    CHECK_OK(rb_put(dev, "a", 1, value, 1000));
    CHECK_OK(rb_put(dev, "b", 1, value, 3000));
    CHECK_OK(rb_get(dev, "a", 1, buf, sizeof buf, &len));
    CHECK_OK(rb_get(dev, "a", 1, buf, sizeof buf, &len));
    CHECK_STATUS(rb_get(dev, "zz", 2, buf, sizeof buf, &len), RB_E_NOT_FOUND);
    CHECK_STATUS(rb_get(dev, "b", 1, buf, 10, &len), RB_E_BUFFER_TOO_SMALL);
    CHECK_STATUS(rb_get(dev, "", 0, buf, sizeof buf, &len), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_delete(dev, "b", 1));
    CHECK_STATUS(rb_delete(dev, "b", 1), RB_E_NOT_FOUND);
    m = metrics(dev);
    CHECK(m.gets == 4 && m.hits == 2 && m.misses == 1, "gets %llu (hits %llu, misses %llu): the empty key is not counted",
          (unsigned long long)m.gets, (unsigned long long)m.hits, (unsigned long long)m.misses);
    CHECK(m.puts == 2 && m.bytes_written == 4000 && m.bytes_read == 2000 && m.deletes == 1, "puts, bytes, deletes");
    CHECK(m.corrupt == 0 && m.io_errors == 0 && m.evictions == 0, "no errors, no evictions");
    CHECK(m.get_latency.count == 4 && m.put_latency.count == 2, "every counted single call is timed");
    CHECK(m.get_latency.p50_ns > 0 && ordered(&m.get_latency) && ordered(&m.put_latency),
          "get p50 %llu <= p99 %llu <= p99.9 %llu <= max %llu ns", (unsigned long long)m.get_latency.p50_ns,
          (unsigned long long)m.get_latency.p99_ns, (unsigned long long)m.get_latency.p999_ns,
          (unsigned long long)m.get_latency.max_ns);

    rb_item items[3] = {{.struct_size = sizeof(rb_item), .key = "c", .key_len = 1, .value = value, .value_len = 10},
                        {.key = "d", .key_len = 1, .value = value, .value_len = 20},
                        {.key = "e", .key_len = 1, .value = value, .value_len = 30}};
    CHECK_OK(rb_put_many(dev, items, 3));
    char b0[64], b1[64], b2[64];
    items[0].value = b0, items[1].value = b1, items[2].value = b2;
    items[0].value_len = items[1].value_len = items[2].value_len = 64;
    items[2].key = "nope", items[2].key_len = 4;
    CHECK_OK(rb_get_many(dev, items, 3));
    CHECK_OK(rb_delete_many(dev, items, 2));
    m = metrics(dev);
    CHECK(m.puts == 5 && m.bytes_written == 4060 && m.gets == 7 && m.hits == 4 && m.misses == 2 && m.bytes_read == 2030 &&
              m.deletes == 3,
          "batched items count like single calls");
    CHECK(m.get_many_latency.count == 1 && m.put_many_latency.count == 1 && m.get_latency.count == 4,
          "a batch is one sample of its own, not mixed with single calls");

    CHECK_OK(rb_reset_metrics(dev));
    m = metrics(dev);
    CHECK(m.gets == 0 && m.bytes_written == 0 && m.get_latency.count == 0 && m.get_many_latency.max_ns == 0, "reset zeroes all");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A flipped value byte is counted as a corrupt detection; an injected read error as an I/O error. */
static int test_corrupt_and_io_errors(void) {
    char path[512];
    test_path(path, sizeof path, "metrics-errors");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_POSIX, 0);
    if (!dev) return T_EXIT_FAIL;
    static char value[5000];
    CHECK_OK(rb_put(dev, "k", 1, value, sizeof value));
    CHECK_OK(rb_put(dev, "j", 1, value, sizeof value));
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    uint64_t slot_k = UINT64_MAX, slot_j = UINT64_MAX;
    for (uint64_t s = 0; s < info.slot_count; s++) {
        rb_slot_header h = {.struct_size = sizeof h};
        CHECK_OK(rb_read_headers_batched(dev, &s, 1, &h));
        if (h.status == RB_HEADER_VALID && h.key_len == 1) *(h.key[0] == 'k' ? &slot_k : &slot_j) = s;
    }
    int fd = open(path, O_WRONLY);
    off_t at = (off_t)(info.data_base + slot_k * info.slot_bytes + info.header_bytes + 10);
    CHECK(fd >= 0 && pwrite(fd, "\xff", 1, at) == 1, "flipped a value byte of k");
    close(fd);
    char buf[8192];
    size_t len = 0;
    CHECK_STATUS(rb_get(dev, "k", 1, buf, sizeof buf, &len), RB_E_CORRUPT);
    CHECK_OK(rb_test_inject_read_faults(dev, &slot_j, 1, EIO, RB_FAULT_PERSISTENT));
    rb_item it = {.struct_size = sizeof it, .key = "j", .key_len = 1, .value = buf, .value_len = sizeof buf};
    CHECK_OK(rb_get_many(dev, &it, 1));
    CHECK(it.status == RB_E_IO, "the batched get of j fails: %s", rb_status_str(it.status));
    rb_metrics m = metrics(dev);
    CHECK(m.corrupt == 1 && m.io_errors == 1 && m.gets == 2 && m.hits == 0, "corrupt %llu, io_errors %llu",
          (unsigned long long)m.corrupt, (unsigned long long)m.io_errors);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* struct_size versioning: a shorter caller struct gets its prefix; too short is refused. */
static int test_struct_size(void) {
    char path[512];
    test_path(path, sizeof path, "metrics-size");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_metrics m;
    memset(&m, 0x77, sizeof m);
    m.struct_size = 4;
    CHECK_STATUS(rb_get_metrics(dev, &m), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get_metrics(dev, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get_metrics(NULL, &m), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_reset_metrics(NULL), RB_E_INVALID_ARGUMENT);
    _Alignas(8) unsigned char big[sizeof(rb_metrics) + 32];
    memset(big, 0x77, sizeof big);
    ((rb_metrics *)big)->struct_size = sizeof big;
    CHECK_OK(rb_get_metrics(dev, (rb_metrics *)big));
    int untouched = 1;
    for (size_t i = sizeof(rb_metrics); i < sizeof big; i++) untouched &= big[i] == 0x77;
    CHECK(untouched && ((rb_metrics *)big)->gets == 0, "a larger struct: this library's part written, the rest left alone");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_counters_and_latencies);
    RUN(test_corrupt_and_io_errors);
    RUN(test_struct_size);
    return test_finish("metrics");
}
