/* Batched calls: rb_get_many, rb_put_many, rb_delete_many, rb_contains_many, rb_count_present_prefix. */
#include "test.h"

#include <stdlib.h>

#define N 24
#define SLOT (256 << 10)

static const uint32_t engines[] = {RB_ENGINE_POSIX, RB_ENGINE_IO_URING};

static void fill(unsigned char *p, size_t n, int seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed * 131 + i * 7 + 1);
}

static int same(const unsigned char *p, size_t n, int seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 131 + i * 7 + 1)) return 0;
    return 1;
}

/* Mixed sizes in, the same bytes out, into aligned (zero-copy) and unaligned destinations. */
static int round_trip(uint32_t engine) {
    char path[512];
    test_path(path, sizeof path, "batch-rt");
    rb_device *dev = test_create(path, 16 << 20, SLOT, engine, 8);
    if (!dev) return T_EXIT_FAIL;
    static const size_t sizes[N] = {0, 1, 100, 4095, 4096, 4097, 8192, 20000, 65536, 100000, 200000, SLOT - 4096};
    char keys[N][16];
    unsigned char *values[N];
    rb_item items[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "key-%02d", i);
        size_t n = sizes[i % 12];
        /* Block-multiple sizes from aligned memory take the zero-copy write path. */
        values[i] = aligned_alloc(4096, n ? (n + 4095) / 4096 * 4096 : 4096);
        fill(values[i], n, i);
        items[i] = (rb_item){.struct_size = sizeof(rb_item), .key = keys[i], .key_len = strlen(keys[i]),
                             .value = values[i], .value_len = n, .status = -1};
    }
    CHECK_OK(rb_put_many(dev, items, N));
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= items[i].status == RB_OK;
    CHECK(ok, "engine %u: every put succeeded", engine);
    for (int aligned = 0; aligned < 2; aligned++) {
        unsigned char *bufs[N];
        for (int i = 0; i < N; i++) {
            size_t cap = (sizes[i % 12] + 4095) / 4096 * 4096 + 4096;
            bufs[i] = aligned_alloc(4096, cap);
            items[i].value = aligned ? bufs[i] : bufs[i] + 1;
            items[i].value_len = cap - 1;
            items[i].len = 0;
            items[i].status = -1;
        }
        CHECK_OK(rb_get_many(dev, items, N));
        ok = 1;
        for (int i = 0; i < N; i++)
            ok &= items[i].status == RB_OK && items[i].len == sizes[i % 12] &&
                  same(items[i].value, items[i].len, i);
        CHECK(ok, "engine %u aligned=%d: every value read back whole", engine, aligned);
        for (int i = 0; i < N; i++) free(bufs[i]);
    }
    for (int i = 0; i < N; i++) free(values[i]);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

static int test_round_trip_posix(void) { return round_trip(RB_ENGINE_POSIX); }
static int test_round_trip_io_uring(void) { return round_trip(RB_ENGINE_IO_URING); }

/* An unreadable item, a too-small buffer, a missing key and a bad key: only those items fail. */
static int test_per_item_isolation(void) {
    for (size_t e = 0; e < sizeof engines / sizeof engines[0]; e++) {
        char path[512];
        test_path(path, sizeof path, "batch-iso");
        rb_device *dev = test_create(path, 16 << 20, SLOT, engines[e], 8);
        if (!dev) return T_EXIT_FAIL;
        char keys[8][16];
        unsigned char value[5000];
        for (int i = 0; i < 8; i++) {
            snprintf(keys[i], sizeof keys[i], "k%d", i);
            fill(value, sizeof value, i);
            CHECK_OK(rb_put(dev, keys[i], strlen(keys[i]), value, sizeof value));
        }
        /* The slot of k2 is found by reading every header. */
        rb_device_info info = {.struct_size = sizeof info};
        CHECK_OK(rb_get_info(dev, &info));
        uint64_t slot_k2 = UINT64_MAX;
        for (uint64_t s = 0; s < info.slot_count && slot_k2 == UINT64_MAX; s++) {
            rb_slot_header h = {.struct_size = sizeof h};
            CHECK_OK(rb_read_headers_batched(dev, &s, 1, &h));
            if (h.status == RB_HEADER_VALID && h.key_len == 2 && memcmp(h.key, "k2", 2) == 0) slot_k2 = s;
        }
        CHECK_OK(rb_test_inject_read_faults(dev, &slot_k2, 1, EIO, RB_FAULT_PERSISTENT));
        rb_item items[10];
        unsigned char bufs[10][8192];
        for (int i = 0; i < 10; i++)
            items[i] = (rb_item){.struct_size = sizeof(rb_item), .key = keys[i % 8], .key_len = 2,
                                 .value = bufs[i], .value_len = sizeof bufs[i], .status = -1};
        items[5].value_len = 10;                         /* too small */
        items[8].key = "missing"; items[8].key_len = 7;  /* not indexed */
        items[9].key = NULL; items[9].key_len = 3;       /* a bad key pointer */
        CHECK_OK(rb_get_many(dev, items, 10));
        CHECK(items[2].status == RB_E_IO, "engine %u: the unreadable item: %s", engines[e], rb_status_str(items[2].status));
        CHECK(items[5].status == RB_E_BUFFER_TOO_SMALL && items[5].len == 5000, "too small says 5000 (%zu)", items[5].len);
        CHECK(items[8].status == RB_E_NOT_FOUND, "missing: %s", rb_status_str(items[8].status));
        CHECK(items[9].status == RB_E_INVALID_ARGUMENT, "NULL key: %s", rb_status_str(items[9].status));
        int ok = 1;
        for (int i = 0; i < 8; i++)
            if (i != 2 && i != 5) ok &= items[i].status == RB_OK && items[i].len == 5000 && same(bufs[i], 5000, i);
        CHECK(ok, "engine %u: every other item read back whole", engines[e]);
        CHECK_OK(rb_test_clear_read_faults(dev));
        CHECK_OK(rb_close(dev));
        unlink(path);
    }
    return test_result();
}

/* Duplicates in a put batch: the last wins. Deletes, lookups and the present prefix. */
static int test_duplicates_delete_contains_prefix(void) {
    char path[512];
    test_path(path, sizeof path, "batch-dup");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_item put[4] = {
        {.struct_size = sizeof(rb_item), .key = "a", .key_len = 1, .value = "1", .value_len = 1},
        {.key = "b", .key_len = 1, .value = "x", .value_len = 1},
        {.key = "a", .key_len = 1, .value = "2", .value_len = 1},
        {.key = "c", .key_len = 1, .value = "y", .value_len = 1},
    };
    CHECK_OK(rb_put_many(dev, put, 4));
    char out[4];
    size_t len = 0;
    CHECK_OK(rb_get(dev, "a", 1, out, sizeof out, &len));
    CHECK(len == 1 && out[0] == '2', "the last copy of a in the batch wins");
    rb_item q[4] = {{.struct_size = sizeof(rb_item), .key = "a", .key_len = 1}, {.key = "b", .key_len = 1},
                    {.key = "zz", .key_len = 2}, {.key = "c", .key_len = 1}};
    size_t count = 99;
    CHECK_OK(rb_count_present_prefix(dev, q, 4, &count));
    CHECK(count == 2, "a, b present, zz not: prefix %zu", count);
    CHECK_OK(rb_contains_many(dev, q, 4));
    CHECK(q[0].status == RB_OK && q[1].status == RB_OK && q[2].status == RB_E_NOT_FOUND && q[3].status == RB_OK,
          "contains: present, present, absent, present");
    rb_item del[3] = {{.struct_size = sizeof(rb_item), .key = "a", .key_len = 1}, {.key = "a", .key_len = 1},
                      {.key = "c", .key_len = 1}};
    CHECK_OK(rb_delete_many(dev, del, 3));
    CHECK(del[0].status == RB_OK && del[1].status == RB_E_NOT_FOUND && del[2].status == RB_OK,
          "delete: ok, then not found, ok");
    CHECK_OK(rb_count_present_prefix(dev, q, 4, &count));
    CHECK(count == 0, "a is gone: prefix 0");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* Bad arrays: NULL items, a zero struct_size, NULL count; and a handle awaiting recovery. */
static int test_bad_arguments(void) {
    char path[512];
    test_path(path, sizeof path, "batch-args");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_item it = {.struct_size = 0, .key = "k", .key_len = 1};
    CHECK_STATUS(rb_get_many(dev, NULL, 1), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_put_many(dev, &it, 1), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_get_many(dev, NULL, 0));
    it.struct_size = sizeof it;
    CHECK_STATUS(rb_count_present_prefix(dev, &it, 1, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get_many(NULL, &it, 1), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_open(path, NULL, &dev));
    CHECK_STATUS(rb_put_many(dev, &it, 1), RB_E_STATE);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A registered pool: batched puts from it and gets into it use fixed buffers, and say so. */
static int test_registered_memory(void) {
    char path[512];
    test_path(path, sizeof path, "batch-reg");
    rb_device *dev = test_create(path, 16 << 20, SLOT, RB_ENGINE_IO_URING, 8);
    if (!dev) return T_EXIT_FAIL;
    enum { V = 8192, K = 8 };
    unsigned char *pool = aligned_alloc(4096, V * K);
    uint32_t region = 99;
    CHECK_OK(rb_register_memory(dev, pool, V * K, &region));
    CHECK_STATUS(rb_register_memory(dev, pool + V, V, &region), RB_E_INVALID_ARGUMENT); /* overlaps */
    char keys[K][16];
    rb_item items[K];
    for (int i = 0; i < K; i++) {
        snprintf(keys[i], sizeof keys[i], "r%d", i);
        fill(pool + i * V, V, i);
        items[i] = (rb_item){.struct_size = sizeof(rb_item), .key = keys[i], .key_len = strlen(keys[i]),
                             .value = pool + i * V, .value_len = V};
    }
    CHECK_OK(rb_reset_io_stats(dev));
    CHECK_OK(rb_put_many(dev, items, K));
    rb_io_stats st = {.struct_size = sizeof st};
    CHECK_OK(rb_get_io_stats(dev, &st));
    CHECK(st.registered_buffers == 1, "puts from the pool went through fixed buffers");
    memset(pool, 0, V * K);
    CHECK_OK(rb_reset_io_stats(dev));
    CHECK_OK(rb_get_many(dev, items, K));
    CHECK_OK(rb_get_io_stats(dev, &st));
    int ok = st.registered_buffers == 1;
    for (int i = 0; i < K; i++) ok &= items[i].status == RB_OK && items[i].len == V && same(pool + i * V, V, i);
    CHECK(ok, "gets into the pool went through fixed buffers and read back whole");
    CHECK_OK(rb_unregister_memory(dev, region));
    CHECK_STATUS(rb_unregister_memory(dev, region), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_register_memory(dev, NULL, V, &region), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_close(dev));
    free(pool);
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_round_trip_posix);
    RUN(test_round_trip_io_uring);
    RUN(test_per_item_isolation);
    RUN(test_duplicates_delete_contains_prefix);
    RUN(test_bad_arguments);
    RUN(test_registered_memory);
    return test_finish("batch");
}
