/* One code path for a first start and a restart: RB_OPEN_CREATE_IF_EMPTY, and rb_recover on a
 * handle that has just formatted. */
#include "test.h"

#include <stdint.h>

static rb_status open_or_create(const char *path, rb_device **dev) {
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE_IF_EMPTY;
    o.capacity_bytes = 16 << 20;
    o.slot_bytes = 64 << 10;
    return rb_open(path, &o, dev);
}

static uint32_t formatted(rb_device *dev) {
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    return info.formatted;
}

/* Open, recover, serve: the same calls on the first start and after a restart. */
static int test_same_calls_first_start_and_restart(void) {
    char path[512];
    test_path(path, sizeof path, "first-start");
    for (int start = 0; start < 3; start++) {
        rb_device *dev = NULL;
        CHECK_OK(open_or_create(path, &dev));
        if (!dev) return T_EXIT_FAIL;
        CHECK(formatted(dev) == (start == 0), "start %d: formatted %u", start, formatted(dev));
        rb_recover_report r = {.struct_size = sizeof r};
        CHECK_OK(rb_recover(dev, NULL, &r));
        CHECK(r.indexed == (uint64_t)start, "start %d: %llu keys recovered", start, (unsigned long long)r.indexed);
        if (start == 0)
            CHECK(r.source == RB_RECOVERED_NOTHING && r.header_reads == 0 && r.checkpoint_sequence == 0,
                  "the first start's recovery is empty and reads nothing");
        else
            CHECK(r.source == RB_RECOVERED_JOURNAL && r.checkpoint_sequence > 0, "a restart recovers from the checkpoint");
        char key[16], value[16];
        size_t len = 0;
        for (int i = 0; i < start; i++) {
            snprintf(key, sizeof key, "k%d", i);
            CHECK_OK(rb_get(dev, key, strlen(key), value, sizeof value, &len));
        }
        snprintf(key, sizeof key, "k%d", start);
        CHECK_OK(rb_put(dev, key, strlen(key), "v", 1));
        CHECK_OK(rb_checkpoint(dev));
        CHECK_OK(rb_close(dev));
    }
    unlink(path);
    return test_result();
}

/* An existing file of zeros, or an empty one, is formatted; a file holding data is not. */
static int test_formats_zeros_never_data(void) {
    char path[512];
    test_path(path, sizeof path, "first-start-data");
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0, "made an empty file");
    close(fd);
    rb_device *dev = NULL;
    CHECK_OK(open_or_create(path, &dev));
    CHECK(dev && formatted(dev) == 1, "an empty file is formatted");
    CHECK_OK(rb_close(dev));

    unsigned char block[8192];
    memset(block, 0, sizeof block);
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, block, sizeof block) == (ssize_t)sizeof block, "a file of zeros");
    close(fd);
    dev = NULL;
    CHECK_OK(open_or_create(path, &dev));
    CHECK(dev && formatted(dev) == 1, "a file of zeros is formatted");
    CHECK_OK(rb_close(dev));

    for (size_t i = 0; i < sizeof block; i++) block[i] = (unsigned char)(i * 7 + 1);
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, block, sizeof block) == (ssize_t)sizeof block, "a file of data");
    close(fd);
    dev = NULL;
    CHECK_STATUS(open_or_create(path, &dev), RB_E_EXISTS);
    CHECK(dev == NULL, "no handle");
    unsigned char back[sizeof block];
    fd = open(path, O_RDONLY);
    CHECK(read(fd, back, sizeof back) == (ssize_t)sizeof back && memcmp(back, block, sizeof block) == 0,
          "the data is untouched");
    close(fd);
    unlink(path);
    return test_result();
}

static int test_flag_combinations(void) {
    char path[512];
    test_path(path, sizeof path, "first-start-flags");
    const uint32_t bad[] = {RB_OPEN_CREATE_IF_EMPTY | RB_OPEN_CREATE, RB_OPEN_CREATE_IF_EMPTY | RB_OPEN_READ_ONLY,
                            RB_OPEN_CREATE_IF_EMPTY | RB_OPEN_OVERWRITE_OK};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rb_options o;
        rb_options_init(&o);
        o.flags = bad[i];
        o.capacity_bytes = 16 << 20;
        rb_device *dev = NULL;
        CHECK_STATUS(rb_open(path, &o, &dev), RB_E_INVALID_ARGUMENT);
    }
    CHECK(access(path, F_OK) != 0, "nothing was created");
    return test_result();
}

/* rb_recover after RB_OPEN_CREATE: an empty report (it was RB_E_STATE), until the first write. */
static int test_recover_after_create(void) {
    char path[512];
    test_path(path, sizeof path, "first-start-create");
    rb_device *dev = test_create(path, 16 << 20, 64 << 10, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_recover_report r;
    memset(&r, 0xAB, sizeof r);
    r.struct_size = sizeof r;
    CHECK_OK(rb_recover(dev, NULL, &r));
    CHECK(r.source == RB_RECOVERED_NOTHING && r.indexed == 0 && r.dropped_stale == 0 && r.header_reads == 0 &&
              r.io.reads_submitted == 0 && r.first_errno == 0 && r.orphans == 0,
          "an empty report");
    CHECK_OK(rb_recover(dev, NULL, NULL));
    CHECK_OK(rb_put(dev, "k", 1, "v", 1));
    CHECK_STATUS(rb_recover(dev, NULL, NULL), RB_E_STATE);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A caller built before `formatted` existed passes the shorter struct; nothing past it is written. */
static int test_info_before_formatted(void) {
    char path[512];
    test_path(path, sizeof path, "first-start-info");
    rb_device *dev = test_create(path, 16 << 20, 64 << 10, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_device_info info;
    memset(&info, 0x5A, sizeof info);
    info.struct_size = offsetof(rb_device_info, formatted);
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.formatted == 0x5A5A5A5A && info.superblock_source == RB_SUPERBLOCK_PRIMARY,
          "fields up to superblock_source written, formatted left alone");
    CHECK(formatted(dev) == 1, "the full struct says formatted");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_same_calls_first_start_and_restart);
    RUN(test_formats_zeros_never_data);
    RUN(test_flag_combinations);
    RUN(test_recover_after_create);
    RUN(test_info_before_formatted);
    return test_finish("first_start");
}
