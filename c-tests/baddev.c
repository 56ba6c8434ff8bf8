/* Bad devices and paths: each gets a clear status and message, and nothing durable is lost. */
#include "test.h"

#include <sys/stat.h>

static rb_status create_with(const char *path, uint64_t capacity, uint64_t slot_bytes, uint32_t header_bytes,
                             uint32_t block_size, uint32_t flags) {
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE | flags;
    o.capacity_bytes = capacity;
    o.slot_bytes = slot_bytes;
    o.header_bytes = header_bytes;
    o.block_size = block_size;
    rb_device *dev = NULL;
    rb_status s = rb_open(path, &o, &dev);
    rb_close(dev);
    return s;
}

static void write_garbage(const char *path, off_t offset, size_t len) {
    int fd = open(path, O_WRONLY);
    char *junk = malloc(len);
    for (size_t i = 0; i < len; i++) junk[i] = (char)(i * 37 + 11);
    CHECK(fd >= 0 && pwrite(fd, junk, len, offset) == (ssize_t)len, "wrote %zu garbage bytes at %lld", len,
          (long long)offset);
    free(junk);
    close(fd);
}

/* A good device with durable data ("durable" = "value", checkpointed), left open: every
 * later mistake must leave it readable. */
static rb_device *durable_device(const char *path, rb_device_info *info) {
    rb_device *dev = test_create(path, 32 << 20, 1 << 20, RB_ENGINE_AUTO, 0);
    if (!dev) return NULL;
    CHECK_OK(rb_put(dev, "durable", 7, "value", 5));
    CHECK_OK(rb_checkpoint(dev));
    *info = (rb_device_info){.struct_size = sizeof *info};
    CHECK_OK(rb_get_info(dev, info));
    return dev;
}

static rb_options read_only(void) {
    rb_options ro;
    rb_options_init(&ro);
    ro.flags = RB_OPEN_READ_ONLY;
    return ro;
}

/* Paths that are not devices. */
static int test_not_a_device(void) {
    rb_device *dev = NULL;
    CHECK_STATUS(rb_open("/nonexistent/dir/dev.img", NULL, &dev), RB_E_IO);
    char dir[512];
    test_path(dir, sizeof dir, "baddev-a-directory");
    mkdir(dir, 0755);
    CHECK_STATUS(rb_open(dir, NULL, &dev), RB_E_INVALID_ARGUMENT);
    rmdir(dir);
    return test_result();
}

/* An empty file cannot be formatted without a capacity; one too small for its geometry is
 * refused; so are unaligned and absurd geometries. */
static int test_bad_geometry(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-geometry");
    CHECK_STATUS(create_with(path, 0, 0, 0, 0, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, 1 << 20, 1 << 20, 0, 0, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, 64 << 20, 1000000, 0, 0, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, 64 << 20, 1 << 20, 5000, 0, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, 64 << 20, 1 << 20, 0, 3000, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, 64 << 20, 1 << 20, 0, 1 << 20, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, 64 << 20, 4096, 4096, 0, 0), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(create_with(path, UINT64_MAX, 1 << 20, 0, 0, 0), RB_E_IO); /* the file cannot grow that far */
    unlink(path);
    return test_result();
}

/* Two handles opening one device: the second is refused; formatting over it without
 * RB_OPEN_OVERWRITE_OK is refused before anything is written. */
static int test_second_handle_and_format_refused(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-busy");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_device *second = NULL;
    CHECK_STATUS(rb_open(path, NULL, &second), RB_E_BUSY);
    rb_options ro = read_only();
    CHECK_STATUS(rb_open(path, &ro, &second), RB_E_BUSY);
    rb_close(dev);
    CHECK_STATUS(create_with(path, 32 << 20, 1 << 20, 0, 0, 0), RB_E_EXISTS);
    /* ... and the durable data is still there. */
    CHECK_OK(rb_open(path, &ro, &dev));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.indexed == 1, "the refused format left the durable key (indexed %llu)", (unsigned long long)rep.indexed);
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* queue_depth 0 and 1,000,000: the default and the clamp, both reported. */
static int test_queue_depth_default_and_clamp(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-queue-depth");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    rb_options o;
    rb_options_init(&o);
    o.queue_depth = 0;
    o.engine = RB_ENGINE_IO_URING;
    CHECK_OK(rb_open(path, &o, &dev));
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.queue_depth == 128, "queue_depth 0 means the default (got %u)", info.queue_depth);
    rb_close(dev);
    o.queue_depth = 1000000;
    CHECK_OK(rb_open(path, &o, &dev));
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.queue_depth == 4096, "queue_depth 1000000 is clamped to 4096 (got %u)", info.queue_depth);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.queue_depth == 4096 && rep.indexed == 1, "the report shows the clamped depth and the data");
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* A write on a read-only handle. */
static int test_read_only_writes(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-read-only");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    rb_options ro = read_only();
    CHECK_OK(rb_open(path, &ro, &dev));
    CHECK_OK(rb_recover(dev, NULL, NULL));
    CHECK_STATUS(rb_put(dev, "x", 1, "y", 1), RB_E_READ_ONLY);
    CHECK_STATUS(rb_delete(dev, "durable", 7), RB_E_READ_ONLY);
    CHECK_STATUS(rb_checkpoint(dev), RB_E_READ_ONLY);
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* Superblock fine, both checkpoint containers garbage: AUTO falls back to a scan and finds the data. */
static int test_garbage_checkpoints(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-checkpoints");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    write_garbage(path, (off_t)info.block_size, 8192);
    write_garbage(path, (off_t)(info.block_size + (info.meta_bytes - info.block_size) / 2), 8192);
    rb_options ro = read_only();
    CHECK_OK(rb_open(path, &ro, &dev));
    rb_recover_options rop;
    rb_recover_options_init(&rop);
    rop.mode = RB_RECOVER_CHECKPOINT;
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, &rop, &rep));
    CHECK(rep.source == RB_RECOVERED_NOTHING && rep.indexed == 0, "no checkpoint verifies: nothing, not an error");
    CHECK_OK(rb_recover(dev, NULL, &rep));
    /* The key was put before the first checkpoint: its lease (epoch 0) is the journal's whole
     * history, so AUTO recovers from the journal alone; a scan finds the same. */
    CHECK(rep.source == RB_RECOVERED_JOURNAL && rep.indexed == 1,
          "AUTO finds the durable key from the journal (source %u, indexed %llu)", rep.source, (unsigned long long)rep.indexed);
    rb_recover_options scan;
    rb_recover_options_init(&scan);
    scan.mode = RB_RECOVER_SCAN;
    CHECK_OK(rb_recover(dev, &scan, &rep));
    CHECK(rep.source == RB_RECOVERED_SCAN && rep.indexed == 1, "a scan finds it too");
    char buf[16];
    size_t len = 0;
    CHECK_OK(rb_get(dev, "durable", 7, buf, sizeof buf, &len));
    CHECK(len == 5 && memcmp(buf, "value", 5) == 0, "the durable value is intact");
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* An image shorter than its superblock says (a truncated copy). */
static int test_truncated_image(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-truncated");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    CHECK(truncate(path, (off_t)(info.data_base + info.slot_bytes)) == 0, "truncated the image");
    rb_options ro = read_only();
    dev = NULL;
    CHECK_STATUS(rb_open(path, &ro, &dev), RB_E_FORMAT);
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* A corrupt superblock opens from its copy (saying so); with the copy corrupt too it is
 * RB_E_FORMAT, on an image of the right length (and on a truncated one). */
static int test_corrupt_superblock(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-superblock");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    write_garbage(path, 20, 4);
    rb_options ro = read_only();
    dev = NULL;
    CHECK_OK(rb_open(path, &ro, &dev));
    rb_device_info got = {.struct_size = sizeof got};
    CHECK_OK(rb_get_info(dev, &got));
    CHECK(got.superblock_source == RB_SUPERBLOCK_COPY, "opened from the superblock's copy");
    CHECK_OK(rb_recover(dev, NULL, NULL));
    CHECK_OK(rb_close(dev));
    dev = NULL;
    write_garbage(path, info.block_size + 20, 4);
    CHECK_STATUS(rb_open(path, &ro, &dev), RB_E_FORMAT);
    CHECK(truncate(path, (off_t)(info.data_base + info.slot_bytes)) == 0, "truncated the image");
    CHECK_STATUS(rb_open(path, &ro, &dev), RB_E_FORMAT);
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* Shorter than a superblock. */
static int test_shorter_than_superblock(void) {
    char path[512];
    test_path(path, sizeof path, "baddev-tiny");
    rb_device_info info;
    rb_device *dev = durable_device(path, &info);
    if (!dev) return T_EXIT_FAIL;
    rb_close(dev);
    CHECK(truncate(path, 100) == 0, "truncated to 100 bytes");
    rb_options ro = read_only();
    dev = NULL;
    CHECK_STATUS(rb_open(path, &ro, &dev), RB_E_FORMAT);
    rb_close(dev);
    unlink(path);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_not_a_device);
    RUN(test_bad_geometry);
    RUN(test_second_handle_and_format_refused);
    RUN(test_queue_depth_default_and_clamp);
    RUN(test_read_only_writes);
    RUN(test_garbage_checkpoints);
    RUN(test_truncated_image);
    RUN(test_corrupt_superblock);
    RUN(test_shorter_than_superblock);
    return test_finish("baddev");
}
