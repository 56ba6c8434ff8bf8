/* Creating, opening and reopening devices, and what goes wrong when the device is not right. */
#include "test.h"

/* A fresh device at `path` holding "k" = "value", checkpointed, still open. */
static rb_device *device_with_key(const char *path) {
    rb_device *dev = test_create(path, 16 << 20, 256 << 10, RB_ENGINE_AUTO, 0);
    if (!dev) return NULL;
    CHECK_OK(rb_put(dev, "k", 1, "value", 5));
    CHECK_OK(rb_checkpoint(dev));
    return dev;
}

static int test_version(void) {
    CHECK(strlen(rb_version()) > 0, "rb_version() = %s", rb_version());
    CHECK(rb_abi_version() == RB_ABI_VERSION, "rb_abi_version() == RB_ABI_VERSION");
    return test_result();
}

static int test_create_defaults(void) {
    char path[512];
    test_path(path, sizeof path, "open-create");
    rb_device *dev = test_create(path, 16 << 20, 256 << 10, RB_ENGINE_AUTO, 0);
    if (!dev) return T_EXIT_FAIL;
    rb_device_info info = {.struct_size = sizeof info};
    CHECK_OK(rb_get_info(dev, &info));
    CHECK(info.slot_count > 0 && info.slot_bytes == 256 << 10, "geometry: %llu slots of %llu bytes",
          (unsigned long long)info.slot_count, (unsigned long long)info.slot_bytes);
    CHECK(info.direct_io == 1, "O_DIRECT is on by default");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* A second writer is refused while the first is open. */
static int test_second_writer_busy(void) {
    char path[512];
    test_path(path, sizeof path, "open-busy");
    rb_device *dev = device_with_key(path);
    if (!dev) return T_EXIT_FAIL;
    rb_device *second = NULL;
    CHECK_STATUS(rb_open(path, NULL, &second), RB_E_BUSY);
    CHECK(second == NULL, "a failed open leaves *out NULL");
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* Formatting over a rawblock device needs RB_OPEN_OVERWRITE_OK. */
static int test_format_needs_overwrite_ok(void) {
    char path[512];
    test_path(path, sizeof path, "open-format");
    rb_device *dev = device_with_key(path);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_close(dev));
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE;
    dev = NULL;
    CHECK_STATUS(rb_open(path, &o, &dev), RB_E_EXISTS);
    rb_close(dev);
    unlink(path);
    return test_result();
}

/* Reopen: reads and writes wait for rb_recover, which brings the key back. */
static int test_reopen_waits_for_recover(void) {
    char path[512];
    test_path(path, sizeof path, "open-reopen");
    rb_device *dev = device_with_key(path);
    if (!dev) return T_EXIT_FAIL;
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_open(path, NULL, &dev));
    bool found = true;
    CHECK_STATUS(rb_contains(dev, "k", 1, &found), RB_E_STATE);
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.indexed == 1 && rep.source == RB_RECOVERED_JOURNAL && rep.checkpoint_sequence == 1, "recovered 1 entry from the checkpoint");
    CHECK_OK(rb_contains(dev, "k", 1, &found));
    CHECK(found, "the key survived close and reopen");
    CHECK_OK(rb_close(dev));
    CHECK_OK(rb_close(NULL));
    unlink(path);
    return test_result();
}

static int test_not_rawblock(void) {
    char plain[512];
    test_path(plain, sizeof plain, "open-plain");
    int fd = open(plain, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0, "made a 1 MiB file of zeros");
    close(fd);
    rb_device *dev = NULL;
    CHECK_STATUS(rb_open(plain, NULL, &dev), RB_E_FORMAT);
    rb_close(dev);
    unlink(plain);
    return test_result();
}

static int test_bad_paths(void) {
    rb_device *dev = NULL;
    CHECK_STATUS(rb_open("/nonexistent/rawblock.img", NULL, &dev), RB_E_IO);
    CHECK_STATUS(rb_open("/", NULL, &dev), RB_E_INVALID_ARGUMENT);
    rb_close(dev);
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_version);
    RUN(test_create_defaults);
    RUN(test_second_writer_busy);
    RUN(test_format_needs_overwrite_ok);
    RUN(test_reopen_waits_for_recover);
    RUN(test_not_rawblock);
    RUN(test_bad_paths);
    return test_finish("open");
}
