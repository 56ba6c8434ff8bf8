/* Values: round trips of many sizes, replace, delete, contains, buffer sizing; then what a
 * checkpoint, close, reopen and recover bring back, and what damaged bytes turn into. */
#include "test.h"

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
    static rb_slot_header out[256];
    uint64_t slots[256] = {0};
    uint64_t n = slot_count < 256 ? slot_count : 256;
    for (uint64_t i = 0; i < n; i++) slots[i] = i;
    out[0].struct_size = sizeof out[0];
    rb_read_headers_batched(dev, slots, n, out);
    for (uint64_t i = 0; i < n; i++)
        if (out[i].status == RB_HEADER_VALID && out[i].key_len == strlen(key) && memcmp(out[i].key, key, out[i].key_len) == 0)
            return out[i].slot;
    return UINT64_MAX;
}

int main(void) {
    char path[512];
    test_path(path, sizeof path, "data");
    rb_device *dev = test_create(path, 32 << 20, 256 << 10, RB_ENGINE_AUTO, 0);
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    static uint8_t in[256 << 10], out[256 << 10];

    size_t sizes[] = {0, 1, 4095, 4096, 4097, 100000, (size_t)info.max_payload};
    char key[64];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        snprintf(key, sizeof key, "size-%zu", sizes[i]);
        fill(in, sizes[i], (unsigned)i);
        CHECK_OK(rb_put(dev, key, strlen(key), in, sizes[i]));
        size_t len = 12345;
        CHECK_OK(rb_get(dev, key, strlen(key), out, sizeof out, &len));
        CHECK(len == sizes[i] && memcmp(in, out, len) == 0, "%s: the %zu bytes read back are the bytes written", key, len);
    }
    /* Replace, contains, delete. */
    CHECK_OK(rb_put(dev, "size-1", 6, "replaced", 8));
    size_t len = 0;
    CHECK_OK(rb_get(dev, "size-1", 6, out, sizeof out, &len));
    CHECK(len == 8 && memcmp(out, "replaced", 8) == 0, "a put replaces the value");
    bool found = false;
    CHECK_OK(rb_contains(dev, "size-1", 6, &found));
    CHECK(found, "contains: present");
    CHECK_OK(rb_delete(dev, "size-1", 6));
    CHECK_OK(rb_contains(dev, "size-1", 6, &found));
    CHECK(!found, "contains: gone after delete");
    CHECK_STATUS(rb_get(dev, "size-1", 6, out, sizeof out, &len), RB_E_NOT_FOUND);
    CHECK_STATUS(rb_delete(dev, "size-1", 6), RB_E_NOT_FOUND);
    /* Buffer sizing. */
    len = 0;
    CHECK_STATUS(rb_get(dev, "size-4097", 9, out, 100, &len), RB_E_BUFFER_TOO_SMALL);
    CHECK(len == 4097, "a too-small buffer reports the needed length (%zu)", len);
    len = 0;
    CHECK_STATUS(rb_get(dev, "size-4097", 9, NULL, 0, &len), RB_E_BUFFER_TOO_SMALL);
    CHECK(len == 4097, "buf NULL with cap 0 asks for the length (%zu)", len);
    CHECK_OK(rb_get(dev, "size-0", 6, NULL, 0, &len));
    CHECK(len == 0, "an empty value fits a NULL buffer");

    /* Fill up with many keys, checkpoint, close, reopen, recover. */
    int many = 60;
    for (int i = 0; i < many; i++) {
        snprintf(key, sizeof key, "many-%02d", i);
        CHECK_STATUS(rb_put(dev, key, strlen(key), key, strlen(key)), RB_OK);
    }
    uint64_t stale_slot = slot_of(dev, "many-17", info.slot_count);
    CHECK(stale_slot != UINT64_MAX, "many-17 is in slot %llu", (unsigned long long)stale_slot);
    CHECK_OK(rb_get_info(dev, &info));
    uint64_t indexed = info.indexed;
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));

    rb_options ro;
    rb_options_init(&ro);
    ro.flags = RB_OPEN_READ_ONLY;
    CHECK_OK(rb_open(path, &ro, &dev));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.source == RB_RECOVERED_CHECKPOINT && rep.checkpoint_sequence == 1, "recovered from checkpoint 1");
    CHECK(rep.checkpoint_entries == indexed && rep.indexed == indexed && rep.header_reads == indexed,
          "all %llu entries validated and indexed", (unsigned long long)indexed);
    CHECK(rep.dropped_stale == 0 && rep.dropped_unreadable == 0 && rep.engine == RB_ENGINE_IO_URING,
          "nothing dropped; io_uring did the reads");
    CHECK(rep.elapsed_ns > 0 && rep.elapsed_ns >= rep.validate_ns, "timings are reported");
    CHECK_OK(rb_get(dev, "size-100000", 11, out, sizeof out, &len));
    fill(in, 100000, 5);
    CHECK(len == 100000 && memcmp(in, out, len) == 0, "a value survives close and reopen");
    CHECK_OK(rb_close(dev));

    /* One stale header among many: only that entry is dropped. */
    uint8_t junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    patch(path, info.data_base + stale_slot * info.slot_bytes + 40, junk, sizeof junk);
    CHECK_OK(rb_open(path, &ro, &dev));
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.indexed == indexed - 1 && rep.dropped_stale == 1, "exactly one entry dropped as stale (%llu of %llu)",
          (unsigned long long)rep.dropped_stale, (unsigned long long)indexed);
    CHECK_OK(rb_contains(dev, "many-17", 7, &found));
    CHECK(!found, "the stale entry is gone");
    CHECK_OK(rb_contains(dev, "many-16", 7, &found));
    CHECK(found, "its neighbour is not");

    /* A flipped bit in a value: RB_E_CORRUPT, never the bytes. */
    uint64_t s100k = slot_of(dev, "size-100000", info.slot_count);
    CHECK_OK(rb_close(dev));
    uint8_t byte = 0;
    uint64_t at = info.data_base + s100k * info.slot_bytes + info.header_bytes + 5000;
    save(path, at, &byte, 1);
    byte ^= 0x20;
    patch(path, at, &byte, 1);
    CHECK_OK(rb_open(path, &ro, &dev));
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK_STATUS(rb_get(dev, "size-100000", 11, out, sizeof out, &len), RB_E_CORRUPT);
    CHECK_OK(rb_close(dev));

    /* A header left by a previous format of the same device is stale (and foreign). */
    static uint8_t old_header[4096];
    uint64_t old_slot = 2;
    save(path, info.data_base + old_slot * info.slot_bytes, old_header, sizeof old_header);
    rb_close(test_create(path, 32 << 20, 256 << 10, RB_ENGINE_AUTO, 0));
    CHECK_OK(rb_open(path, NULL, &dev));
    CHECK_STATUS(rb_recover(dev, NULL, &rep), RB_OK);
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "new-%d", i);
        CHECK_OK(rb_put(dev, key, strlen(key), "v", 1));
    }
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));
    patch(path, info.data_base + old_slot * info.slot_bytes, old_header, sizeof old_header);
    CHECK_OK(rb_open(path, &ro, &dev));
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.indexed == 2 && rep.dropped_stale == 1, "the previous format's header is stale (%llu indexed)",
          (unsigned long long)rep.indexed);
    rb_slot_header h = {.struct_size = sizeof h};
    CHECK_OK(rb_read_headers_batched(dev, &old_slot, 1, &h));
    CHECK(h.status == RB_HEADER_FOREIGN, "rb_read_headers_batched calls it foreign (status %d)", h.status);
    CHECK_OK(rb_close(dev));

    /* RB_RECOVER_SCRUB_FREE finds the header of a put the crash cut off from the checkpoint. */
    dev = test_create(path, 32 << 20, 256 << 10, RB_ENGINE_AUTO, 0);
    CHECK_OK(rb_put(dev, "k", 1, "v1", 2));
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_put(dev, "k", 1, "v2", 2));
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_open(path, NULL, &dev));
    rb_recover_options scrub;
    rb_recover_options_init(&scrub);
    scrub.flags = RB_RECOVER_SCRUB_FREE;
    CHECK_OK(rb_recover(dev, &scrub, &rep));
    CHECK(rep.indexed == 0 && rep.orphans == 1, "the checkpointed v1 is stale and v2 is an orphan (%llu orphans)",
          (unsigned long long)rep.orphans);
    CHECK(rep.header_reads == 1 + info.slot_count, "one read for the entry and one per free slot");
    CHECK_OK(rb_close(dev));

    unlink(path);
    return test_finish("data");
}
