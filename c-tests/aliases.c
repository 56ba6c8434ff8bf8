/* Issue 11 items 2 and 4 through the C ABI: one writer per device whatever path reaches it
 * (a loop device and its backing file, two nodes of one block device), and a device file on
 * a filesystem that fills up (RB_E_NO_SPACE, checkpoints that still work, RB_OPEN_PREALLOCATE).
 * The loop device cases use the one run.sh attaches (RB_TEST_BLOCK_DEVICE); the full
 * filesystem case mounts a small tmpfs (root). A case that cannot run says why; the program
 * exits 77 when none could. */
#include "test.h"

#include <limits.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define SLOT (64u << 10)

static rb_status open_with(const char *path, uint32_t flags, uint64_t capacity, rb_device **dev) {
    rb_options o;
    rb_options_init(&o);
    o.flags = flags;
    o.capacity_bytes = capacity;
    o.slot_bytes = SLOT;
    *dev = NULL;
    return rb_open(path, &o, dev);
}

/* Checks that opening `path` with `flags` is RB_E_BUSY with a message naming `names`. */
static void check_busy(const char *path, uint32_t flags, const char *names, const char *what) {
    rb_device *dev = NULL;
    CHECK_STATUS(open_with(path, flags, 0, &dev), RB_E_BUSY);
    CHECK(strstr(rb_last_error_message(), names) != NULL, "%s: the message names %s", what, names);
    if (dev) rb_close(dev);
}

static int value_is(rb_device *dev, const char *key, const char *want) {
    char buf[256];
    size_t len = 0;
    rb_status s = rb_get(dev, key, strlen(key), buf, sizeof buf, &len);
    return s == RB_OK && len == strlen(want) && memcmp(buf, want, len) == 0;
}

/* The backing file of the loop device `dev` (from sysfs), or -1. */
static int backing_file_of(const char *dev, char *out, size_t cap) {
    const char *name = strrchr(dev, '/');
    char sys[PATH_MAX];
    snprintf(sys, sizeof sys, "/sys/block/%s/loop/backing_file", name ? name + 1 : dev);
    FILE *f = fopen(sys, "r");
    if (!f) return -1;
    int ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
    return ok ? 0 : -1;
}

static const char *block_device(void) {
    const char *dev = getenv("RB_TEST_BLOCK_DEVICE");
    return dev && dev[0] ? dev : NULL;
}

static const char *no_block_device(void) {
    const char *why = getenv("RB_TEST_BLOCK_DEVICE_SKIP");
    return why ? why : "RB_TEST_BLOCK_DEVICE is not set (c-tests/run.sh attaches a loop device as root)";
}

static const char *scratch_dir(void) {
    const char *dir = getenv("RB_TEST_TMP");
    return dir ? dir : "/tmp";
}

/* A loop device and its backing file: the file is refused for writing while the loop device is
 * attached, and the loop device's writer keeps readers of the file out. */
static int test_loop_backing_file(void) {
    const char *loop = block_device();
    char backing[PATH_MAX];
    if (!loop) SKIP("%s", no_block_device());
    if (backing_file_of(loop, backing, sizeof backing) != 0) SKIP("%s is not a loop device", loop);

    rb_device *dev = NULL;
    CHECK_OK(open_with(loop, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK, 0, &dev));
    CHECK_OK(rb_put(dev, "a", 1, "first", 5));
    CHECK_OK(rb_checkpoint(dev));
    check_busy(backing, 0, loop, "the backing file, read-write");
    check_busy(backing, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK, loop, "the backing file, formatting");
    check_busy(backing, RB_OPEN_READ_ONLY, "open for writing", "the backing file, read-only");
    CHECK_OK(rb_close(dev));

    /* Nobody has the loop device open now; the file still backs it. */
    check_busy(backing, 0, loop, "the backing file of an idle loop device");
    CHECK_OK(open_with(backing, RB_OPEN_READ_ONLY, 0, &dev));
    CHECK_OK(rb_recover(dev, NULL, NULL));
    CHECK(value_is(dev, "a", "first"), "a reader of the backing file sees what the loop device's writer wrote");
    CHECK_OK(rb_close(dev));
    return test_result();
}

/* Two device nodes of one block device: the kernel's exclusive claim covers both. */
static int test_second_node(void) {
    const char *loop = block_device();
    if (!loop) SKIP("%s", no_block_device());
    struct stat st;
    if (stat(loop, &st) != 0 || !S_ISBLK(st.st_mode)) SKIP("%s is not a block device", loop);
    char alias[PATH_MAX];
    snprintf(alias, sizeof alias, "%s/alias-node-%d", scratch_dir(), (int)getpid());
    unlink(alias);
    if (mknod(alias, S_IFBLK | 0600, st.st_rdev) != 0)
        SKIP("cannot make a second node of %s: %s", loop, strerror(errno));

    rb_device *dev = NULL;
    CHECK_OK(open_with(loop, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK, 0, &dev));
    CHECK_OK(rb_put(dev, "a", 1, "first", 5));
    CHECK_OK(rb_checkpoint(dev));
    check_busy(alias, 0, "held exclusively", "a second node while the first has a writer");
    check_busy(alias, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK, "held exclusively", "formatting through a second node");
    CHECK_OK(rb_close(dev));

    CHECK_OK(open_with(alias, 0, 0, &dev));
    CHECK_OK(rb_recover(dev, NULL, NULL));
    CHECK(value_is(dev, "a", "first"), "the second node reads the first one's key once it is free");
    check_busy(loop, 0, "held exclusively", "the first node while the second has a writer");
    CHECK_OK(rb_close(dev));
    /* The claim goes with rb_close, at once. */
    CHECK_OK(open_with(loop, 0, 0, &dev));
    CHECK_OK(rb_close(dev));
    unlink(alias);
    return test_result();
}

/* Writes to `dir/filler` until the filesystem is full. */
static void fill(const char *dir) {
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/filler", dir);
    int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    static char buf[1 << 16];
    memset(buf, 0x5a, sizeof buf);
    for (size_t chunk = sizeof buf; chunk >= 512; chunk /= 8)
        while (write(fd, buf, chunk) > 0) {
        }
    fsync(fd);
    close(fd);
}

/* A device file on a tmpfs that fills up. */
static int test_full_filesystem(void) {
    char dir[PATH_MAX], path[PATH_MAX + 16], fresh[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/nospace-%d", scratch_dir(), (int)getpid());
    mkdir(dir, 0700);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=12m") != 0) {
        int e = errno;
        rmdir(dir);
        SKIP("cannot mount a tmpfs (%s)", strerror(e));
    }
    snprintf(path, sizeof path, "%s/dev.img", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.img", dir);

    /* 64 MiB on a 12 MiB filesystem: the slots stay sparse, the metadata region is allocated. */
    rb_device *dev = NULL;
    CHECK_OK(open_with(path, RB_OPEN_CREATE, 64u << 20, &dev));
    CHECK_OK(rb_put(dev, "a", 1, "first", 5));
    CHECK_OK(rb_put(dev, "b", 1, "kept", 4));
    fill(dir);

    CHECK_STATUS(rb_put(dev, "a", 1, "second", 6), RB_E_NO_SPACE);
    CHECK(strstr(rb_last_error_message(), dir) != NULL, "the message names the filesystem: %s", rb_last_error_message());
    CHECK(value_is(dev, "a", "first"), "the old value of a is still readable");
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_checkpoint(dev));
    CHECK_OK(rb_close(dev));
    CHECK_OK(open_with(path, 0, 0, &dev));
    rb_recover_report rep = {.struct_size = sizeof rep};
    CHECK_OK(rb_recover(dev, NULL, &rep));
    CHECK(rep.source == RB_RECOVERED_JOURNAL && rep.checkpoint_sequence > 0 && rep.indexed == 2,
          "both keys came back from the checkpoint");
    CHECK(value_is(dev, "a", "first") && value_is(dev, "b", "kept"), "with their values");
    CHECK_OK(rb_close(dev));

    /* Formatting on the full filesystem fails before any superblock and leaves no file. */
    CHECK_STATUS(open_with(fresh, RB_OPEN_CREATE, 16u << 20, &dev), RB_E_NO_SPACE);
    CHECK(access(fresh, F_OK) != 0 && errno == ENOENT, "the failed format left no file");

    /* io_uring drops a closed handle's registered file asynchronously: the tmpfs may be busy a moment. */
    int unmounted = 0;
    for (int i = 0; i < 500 && !(unmounted = umount(dir) == 0); i++) usleep(10000);
    CHECK(unmounted, "unmount %s", dir);
    if (!unmounted) umount2(dir, MNT_DETACH);
    rmdir(dir);
    return test_result();
}

/* RB_OPEN_PREALLOCATE allocates the whole file; without it only the metadata region is. */
static int test_preallocate(void) {
    char path[512];
    test_path(path, sizeof path, "aliases-prealloc");
    for (int pre = 0; pre <= 1; pre++) {
        rb_device *dev = NULL;
        CHECK_OK(open_with(path, RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK | (pre ? RB_OPEN_PREALLOCATE : 0), 32u << 20, &dev));
        rb_device_info info = {.struct_size = sizeof info};
        CHECK_OK(rb_get_info(dev, &info));
        CHECK_OK(rb_close(dev));
        struct stat st;
        CHECK(stat(path, &st) == 0, "stat %s", path);
        unsigned long long allocated = (unsigned long long)st.st_blocks * 512;
        unsigned long long whole = info.data_base + info.slot_count * info.slot_bytes;
        if (pre)
            CHECK(allocated >= whole, "RB_OPEN_PREALLOCATE: %llu of %llu bytes allocated", allocated, whole);
        else
            CHECK(allocated >= info.meta_bytes && allocated < whole / 2,
                  "by default the metadata region (%llu bytes) is allocated, the slots are not: %llu bytes",
                  (unsigned long long)info.meta_bytes, allocated);
        unlink(path);
    }
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_loop_backing_file);
    RUN(test_second_node);
    RUN(test_full_filesystem);
    RUN(test_preallocate);
    return test_finish("aliases");
}
