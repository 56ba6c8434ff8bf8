/* Values: round trips of many sizes, replace, delete, contains, buffer sizing; then what a
 * checkpoint, close, reopen and recover bring back, and what damaged bytes turn into. */
#include "test.h"

#define CAPACITY (32 << 20)
#define SLOT_BYTES (256 << 10)

static uint8_t in[SLOT_BYTES], out[SLOT_BYTES];

static size_t fill(uint8_t *buf, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
    return len;
}

static void patch(const char *path, uint64_t offset, const void *bytes, size_t len) {
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, bytes, len, (off_t)offset) == (ssize_t)len, "patched %zu bytes at offset %llu", len,
          (unsigned long long)offset);
    close(fd);
}

static void save(const char *path, uint64_t offset, void *bytes, size_t len) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && pread(fd, bytes, len, (off_t)offset) == (ssize_t)len, "saved %zu bytes at offset %llu", len,
          (unsigned long long)offset);
    close(fd);
}

/* The slot a key lives in, found through rb_read_headers_batched. */
static uint64_t slot_of(rb_device *dev, const char *key, uint64_t slot_count) {
    static rb_slot_header hdrs[256];
    uint64_t slots[256] = {0};
    uint64_t n = slot_count < 256 ? slot_count : 256;
    for (uint64_t i = 0; i < n; i++) slots[i] = i;
    hdrs[0].struct_size = sizeof hdrs[0];
    rb_read_headers_batched(dev, slots, n, hdrs);
    for (uint64_t i = 0; i < n; i++)
        if (hdrs[i].status == RB_HEADER_VALID && hdrs[i].key_len == strlen(key) &&
            memcmp(hdrs[i].key, key, hdrs[i].key_len) == 0)
            return hdrs[i].slot;
    return UINT64_MAX;
}

static rb_device *create(const char *path, rb_device_info *info) {
    rb_device *dev = test_create(path, CAPACITY, SLOT_BYTES, RB_ENGINE_AUTO, 0);
    if (!dev) return NULL;
    *info = (rb_device_info){.struct_size = sizeof *info};
    CHECK_OK(rb_get_info(dev, info));
    return dev;
}

static rb_device *open_read_only(const char *path) {
    rb_options ro;
    rb_options_init(&ro);
    ro.flags = RB_OPEN_READ_ONLY;
    rb_device *dev = NULL;
    CHECK_OK(rb_open(path, &ro, &dev));
    return dev;
}

/* Puts "size-N" for each size, seeded by its index, and checks each reads back exactly. */
static void put_sizes(rb_device *dev, const rb_device_info *info) {
    size_t sizes[] = {0, 1, 4095, 4096, 4097, 100000, (size_t)info->max_payload};
    char key[64];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        snprintf(key, sizeof key, "size-%zu", sizes[i]);
        fill(in, sizes[i], (unsigned)i);
        CHECK_OK(rb_put(dev, key, strlen(key), in, sizes[i]));
        size_t len = 12345;
        CHECK_OK(rb_get(dev, key, strlen(key), out, sizeof out, &len));
        CHECK(len == sizes[i] && memcmp(in, out, len) == 0, "%s: the %zu bytes read back are the bytes written", key, len);
    }
}

/* The device most recovery cases start from: every size, then "many-00".."many-59",
 * checkpointed and closed. Returns how many entries were indexed, 0 on failure. */
static uint64_t populated(const char *path, rb_device_info *info) {
    rb_device *dev = create(path, info);
    if (!dev) return 0;
    put_sizes(dev, info);
    char key[64];
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof key, "many-%02d", i);
        CHECK_STATUS(rb_put(dev, key, strlen(key), key, strlen(key)), RB_OK);
    }
    rb_device_info now = {.struct_size = sizeof now};
    CHECK_OK(rb_get_info(dev, &now));
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));
    return now.indexed;
}

static int test_roundtrip_sizes(void) {
    char path[512];
    test_path(path, sizeof path, "data-sizes");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    put_sizes(dev, &info);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

static int test_replace(void) {
    char path[512];
    test_path(path, sizeof path, "data-replace");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_put(dev, "size-1", 6, "x", 1));
    CHECK_OK(rb_put(dev, "size-1", 6, "replaced", 8));
    size_t len = 0;
    CHECK_OK(rb_get(dev, "size-1", 6, out, sizeof out, &len));
    CHECK(len == 8 && memcmp(out, "replaced", 8) == 0, "a put replaces the value");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

static int test_contains_delete(void) {
    char path[512];
    test_path(path, sizeof path, "data-delete");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_put(dev, "size-1", 6, "x", 1));
    bool found = false;
    CHECK_OK(rb_contains(dev, "size-1", 6, &found));
    CHECK(found, "contains: present");
    CHECK_OK(rb_delete(dev, "size-1", 6));
    CHECK_OK(rb_contains(dev, "size-1", 6, &found));
    CHECK(!found, "contains: gone after delete");
    size_t len = 0;
    CHECK_STATUS(rb_get(dev, "size-1", 6, out, sizeof out, &len), RB_E_NOT_FOUND);
    CHECK_STATUS(rb_delete(dev, "size-1", 6), RB_E_NOT_FOUND);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

static int test_buffer_sizing(void) {
    char path[512];
    test_path(path, sizeof path, "data-buffers");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_put(dev, "size-4097", 9, in, fill(in, 4097, 4)));
    CHECK_OK(rb_put(dev, "size-0", 6, in, 0));
    size_t len = 0;
    CHECK_STATUS(rb_get(dev, "size-4097", 9, out, 100, &len), RB_E_BUFFER_TOO_SMALL);
    CHECK(len == 4097, "a too-small buffer reports the needed length (%zu)", len);
    len = 0;
    CHECK_STATUS(rb_get(dev, "size-4097", 9, NULL, 0, &len), RB_E_BUFFER_TOO_SMALL);
    CHECK(len == 4097, "buf NULL with cap 0 asks for the length (%zu)", len);
    CHECK_OK(rb_get(dev, "size-0", 6, NULL, 0, &len));
    CHECK(len == 0, "an empty value fits a NULL buffer");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* Checkpoint, close, reopen read-only, recover: everything comes back, through io_uring. */
static int test_checkpoint_recover(void) {
    char path[512];
    test_path(path, sizeof path, "data-recover");
    rb_device_info info;
    uint64_t indexed = populated(path, &info);
    if (!indexed) return T_EXIT_FAIL;
    rb_device *dev = open_read_only(path);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.source == RB_RECOVERED_JOURNAL && rep.checkpoint_sequence == 1, "AUTO: fast, from checkpoint 1");
    CHECK(rep.trusted_unread == indexed && rep.indexed == indexed && rep.header_reads == rep.leased_slots,
          "AUTO: all %llu entries indexed unread; only the %llu leased slots read", (unsigned long long)indexed,
          (unsigned long long)rep.leased_slots);
    CHECK_OK(recover_full(dev, &rep));
    CHECK(rep.source == RB_RECOVERED_CHECKPOINT && rep.checkpoint_sequence == 1, "full validation: from checkpoint 1");
    CHECK(rep.checkpoint_entries == indexed && rep.indexed == indexed && rep.header_reads == indexed,
          "all %llu entries validated and indexed", (unsigned long long)indexed);
    CHECK(rep.dropped_stale == 0 && rep.dropped_unreadable == 0 && rep.engine == RB_ENGINE_IO_URING,
          "nothing dropped; io_uring did the reads");
    CHECK(rep.elapsed_ns > 0 && rep.elapsed_ns >= rep.validate_ns, "timings are reported");
    size_t len = 0;
    CHECK_OK(rb_get(dev, "size-100000", 11, out, sizeof out, &len));
    fill(in, 100000, 5);
    CHECK(len == 100000 && memcmp(in, out, len) == 0, "a value survives close and reopen");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* One stale header among many: only that entry is dropped. */
static int test_stale_header(void) {
    char path[512];
    test_path(path, sizeof path, "data-stale");
    rb_device_info info;
    uint64_t indexed = populated(path, &info);
    if (!indexed) return T_EXIT_FAIL;
    rb_device *dev = open_read_only(path);
    CHECK_OK(rb_recover(dev, NULL, NULL));
    uint64_t stale_slot = slot_of(dev, "many-17", info.slot_count);
    CHECK(stale_slot != UINT64_MAX, "many-17 is in slot %llu", (unsigned long long)stale_slot);
    CHECK_OK(rb_close(dev));
    if (stale_slot == UINT64_MAX) return T_EXIT_FAIL;

    uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    patch(path, info.data_base + stale_slot * info.slot_bytes + 40, junk, sizeof junk);
    dev = open_read_only(path);
    rb_recover_report rep = {.struct_size = sizeof rep};
    /* AUTO trusts it unread; the first get finds the header is not its own: gone, not corrupt. */
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.indexed == indexed && rep.trusted_unread == indexed, "AUTO indexes every entry unread");
    size_t got = 0;
    CHECK_STATUS(rb_get(dev, "many-17", 7, out, sizeof out, &got), RB_E_NOT_FOUND);
    CHECK_OK(recover_full(dev, &rep));
    CHECK(rep.indexed == indexed - 1 && rep.dropped_stale == 1, "exactly one entry dropped as stale (%llu of %llu)",
          (unsigned long long)rep.dropped_stale, (unsigned long long)indexed);
    bool found = false;
    CHECK_OK(rb_contains(dev, "many-17", 7, &found));
    CHECK(!found, "the stale entry is gone");
    CHECK_OK(rb_contains(dev, "many-16", 7, &found));
    CHECK(found, "its neighbour is not");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A flipped bit in a value: RB_E_CORRUPT, never the bytes. */
static int test_flipped_value_bit(void) {
    char path[512];
    test_path(path, sizeof path, "data-bitflip");
    rb_device_info info;
    if (!populated(path, &info)) return T_EXIT_FAIL;
    rb_device *dev = open_read_only(path);
    CHECK_OK(rb_recover(dev, NULL, NULL));
    uint64_t s100k = slot_of(dev, "size-100000", info.slot_count);
    CHECK(s100k != UINT64_MAX, "size-100000 is in slot %llu", (unsigned long long)s100k);
    CHECK_OK(rb_close(dev));
    if (s100k == UINT64_MAX) return T_EXIT_FAIL;

    uint8_t byte = 0;
    uint64_t at = info.data_base + s100k * info.slot_bytes + info.header_bytes + 5000;
    save(path, at, &byte, 1);
    byte ^= 0x20;
    patch(path, at, &byte, 1);
    dev = open_read_only(path);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    size_t len = 0;
    CHECK_STATUS(rb_get(dev, "size-100000", 11, out, sizeof out, &len), RB_E_CORRUPT);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A header left by a previous format of the same device is stale (and foreign). */
static int test_previous_format_header(void) {
    char path[512];
    test_path(path, sizeof path, "data-reformat");
    rb_device_info info;
    if (!populated(path, &info)) return T_EXIT_FAIL;
    static uint8_t old_header[4096];
    uint64_t old_slot = 2;
    save(path, info.data_base + old_slot * info.slot_bytes, old_header, sizeof old_header);

    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_open(path, NULL, &dev));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_STATUS(rb_recover(dev, NULL, &rep), RB_OK);
    char key[64];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "new-%d", i);
        CHECK_OK(rb_put(dev, key, strlen(key), "v", 1));
    }
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));

    patch(path, info.data_base + old_slot * info.slot_bytes, old_header, sizeof old_header);
    dev = open_read_only(path);
    CHECK_OK(recover_full(dev, &rep));
    CHECK(rep.indexed == 2 && rep.dropped_stale == 1, "the previous format's header is stale (%llu indexed)",
          (unsigned long long)rep.indexed);
    rb_slot_header h = {.struct_size = sizeof h};
    CHECK_OK(rb_read_headers_batched(dev, &old_slot, 1, &h));
    CHECK(h.status == RB_HEADER_FOREIGN, "rb_read_headers_batched calls it foreign (status %d)", h.status);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* RB_RECOVER_SCRUB_FREE finds the header of a put the crash cut off from the checkpoint. */
static int test_scrub_free_finds_orphan(void) {
    char path[512];
    test_path(path, sizeof path, "data-scrub");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_put(dev, "k", 1, "v1", 2));
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_put(dev, "k", 1, "v2", 2));
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_open(path, NULL, &dev));
    rb_recover_options scrub;
    rb_recover_options_init(&scrub);
    scrub.flags = RB_RECOVER_SCRUB_FREE;
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, &scrub, &rep));
    CHECK(rep.indexed == 0 && rep.orphans == 1, "the checkpointed v1 is stale and v2 is an orphan (%llu orphans)",
          (unsigned long long)rep.orphans);
    CHECK(rep.header_reads == 1 + info.slot_count, "one read for the entry and one per free slot");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_roundtrip_sizes);
    RUN(test_replace);
    RUN(test_contains_delete);
    RUN(test_buffer_sizing);
    RUN(test_checkpoint_recover);
    RUN(test_stale_header);
    RUN(test_flipped_value_bit);
    RUN(test_previous_format_header);
    RUN(test_scrub_free_finds_orphan);
    return test_finish("data");
}
