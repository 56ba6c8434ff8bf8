/* Bad arguments: each returns the right code and leaves a message; nothing crashes. */
#include "test.h"

#define CAPACITY (16 << 20)
#define SLOT_BYTES (64 << 10)

static rb_device *create(const char *path, rb_device_info *info) {
    rb_device *dev = test_create(path, CAPACITY, SLOT_BYTES, RB_ENGINE_AUTO, 0);
    if (!dev) return NULL;
    *info = (rb_device_info){.struct_size = sizeof *info};
    CHECK_OK(rb_get_info(dev, info));
    return dev;
}

static int test_null_pointers(void) {
    char path[512];
    test_path(path, sizeof path, "args-null");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    char buf[64];
    size_t len;
    rb_device *tmp = NULL;
    CHECK_STATUS(rb_open(NULL, NULL, &tmp), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_open(path, NULL, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_put(NULL, "k", 1, "v", 1), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_put(dev, NULL, 1, "v", 1), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_put(dev, "k", 1, NULL, 5), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get(dev, "k", 1, buf, sizeof buf, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get(dev, "k", 1, NULL, 10, &len), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_contains(dev, "k", 1, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_delete(NULL, "k", 1), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_checkpoint(NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_recover(NULL, NULL, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get_info(dev, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_get_io_stats(dev, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_options_init(NULL), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_read_headers_batched(dev, NULL, 1, NULL), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_read_headers_batched(dev, NULL, 0, NULL));
    CHECK_STATUS(rb_put(dev, "", 0, "v", 1), RB_E_INVALID_ARGUMENT);
    CHECK_OK(rb_close(dev));
    unlink(path);
    return test_result();
}

/* rb_options.struct_size: zero, too small, larger with unknown non-zero fields, larger with zeros. */
static int test_options_struct_size(void) {
    char path[512];
    test_path(path, sizeof path, "args-options-size");
    rb_device_info info;
    rb_device *dev = create(path, &info);
    if (!dev) return T_EXIT_FAIL;
    struct {
        rb_options o;
        uint64_t future;
    } big;
    rb_options o;
    rb_options_init(&o);
    o.struct_size = 0;
    rb_device *tmp = NULL;
    CHECK_STATUS(rb_open(path, &o, &tmp), RB_E_INVALID_ARGUMENT);
    CHECK(tmp == NULL, "a failed open leaves *out NULL");
    o.struct_size = sizeof o - 8;
    CHECK_STATUS(rb_open(path, &o, &tmp), RB_E_INVALID_ARGUMENT);
    rb_options_init(&big.o);
    big.o.struct_size = sizeof big;
    big.future = 1;
    CHECK_STATUS(rb_open(path, &big.o, &tmp), RB_E_UNSUPPORTED);
    rb_close(dev);
    big.future = 0;
    big.o.flags = RB_OPEN_READ_ONLY;
    rb_device *ro = NULL;
    CHECK_OK(rb_open(path, &big.o, &ro)); /* a larger struct whose unknown tail is zero is accepted */
    rb_close(ro);
    unlink(path);
    return test_result();
}

/* rb_slot_header and rb_device_info struct_size: too small is refused, larger is honoured. */
static int test_output_struct_size(void) {
    char path[512];
    test_path(path, sizeof path, "args-output-size");
    rb_device_info info;
    rb_device *d = create(path, &info);
    if (!d) return T_EXIT_FAIL;
    uint64_t slot = 0;
    rb_slot_header h = {.struct_size = 8};
    CHECK_STATUS(rb_read_headers_batched(d, &slot, 1, &h), RB_E_INVALID_ARGUMENT);
    /* A caller built against a larger rb_slot_header: every element is written at its stride. */
    struct newer_header {
        rb_slot_header h;
        uint64_t future;
    } newer[3];
    memset(newer, 0, sizeof newer);
    for (int i = 0; i < 3; i++) newer[i].future = 0xABCD;
    newer[0].h.struct_size = sizeof newer[0];
    uint64_t three[3] = {0, 1, 2};
    CHECK_OK(rb_put(d, "stride", 6, "v", 1));
    CHECK_OK(rb_read_headers_batched(d, three, 3, &newer[0].h));
    int strided = 1;
    for (int i = 0; i < 3; i++)
        strided &= newer[i].h.slot == (uint64_t)i && newer[i].h.struct_size == sizeof newer[0] && newer[i].future == 0xABCD;
    CHECK(strided && newer[0].h.status == RB_HEADER_VALID && newer[1].h.status == RB_HEADER_EMPTY,
          "a larger element stride is honoured and unknown fields are left alone");
    rb_recover_report small = {.struct_size = 16};
    CHECK_STATUS(rb_get_info(d, (rb_device_info *)&small), RB_E_INVALID_ARGUMENT);
    rb_close(d);
    unlink(path);
    return test_result();
}

/* Unknown engine, flags, modes, fault kinds (while a writer holds the device, as before). */
static int test_unknown_values(void) {
    char path[512];
    test_path(path, sizeof path, "args-unknown");
    rb_device_info info;
    rb_device *d = create(path, &info);
    if (!d) return T_EXIT_FAIL;
    rb_device *tmp = NULL;
    rb_options o;
    rb_options_init(&o);
    o.engine = 99;
    CHECK_STATUS(rb_open(path, &o, &tmp), RB_E_INVALID_ARGUMENT);
    rb_options_init(&o);
    o.flags = 1u << 30;
    CHECK_STATUS(rb_open(path, &o, &tmp), RB_E_INVALID_ARGUMENT);
    rb_options_init(&o);
    o.flags = RB_OPEN_CREATE | RB_OPEN_READ_ONLY;
    CHECK_STATUS(rb_open(path, &o, &tmp), RB_E_INVALID_ARGUMENT);
    rb_recover_options ropts;
    rb_recover_options_init(&ropts);
    ropts.mode = 7;
    CHECK_STATUS(rb_recover(d, &ropts, NULL), RB_E_INVALID_ARGUMENT);
    uint64_t slot = 0;
    CHECK_STATUS(rb_test_inject_read_faults(d, &slot, 1, EIO, 42), RB_E_INVALID_ARGUMENT);
    CHECK_STATUS(rb_test_inject_read_faults(d, &slot, 1, -5, RB_FAULT_PERSISTENT), RB_E_INVALID_ARGUMENT);
    rb_close(d);
    unlink(path);
    return test_result();
}

static char longkey[4096];

/* Sizes: key too long, value too large, slot out of range. */
static int test_sizes(void) {
    char path[512];
    test_path(path, sizeof path, "args-sizes");
    rb_device_info info;
    rb_device *d = create(path, &info);
    if (!d) return T_EXIT_FAIL;
    memset(longkey, 'k', sizeof longkey);
    CHECK_STATUS(rb_put(d, longkey, info.max_key_bytes + 1, "v", 1), RB_E_TOO_LARGE);
    CHECK_OK(rb_put(d, longkey, info.max_key_bytes, "v", 1));
    static uint8_t huge[128 << 10];
    CHECK_STATUS(rb_put(d, "big", 3, huge, info.max_payload + 1), RB_E_TOO_LARGE);
    uint64_t slot = info.slot_count;
    rb_slot_header hs = {.struct_size = sizeof hs};
    CHECK_STATUS(rb_read_headers_batched(d, &slot, 1, &hs), RB_E_INVALID_ARGUMENT);
    rb_close(d);
    unlink(path);
    return test_result();
}

/* A read-only handle written. */
static int test_read_only_handle(void) {
    char path[512];
    test_path(path, sizeof path, "args-read-only");
    rb_device_info info;
    rb_device *d = create(path, &info);
    if (!d) return T_EXIT_FAIL;
    memset(longkey, 'k', sizeof longkey);
    CHECK_OK(rb_put(d, longkey, info.max_key_bytes, "v", 1));
    rb_close(d);
    rb_options o;
    rb_options_init(&o);
    o.flags = RB_OPEN_READ_ONLY;
    rb_device *ro = NULL;
    CHECK_OK(rb_open(path, &o, &ro));
    CHECK_OK(rb_recover(ro, NULL, NULL));
    CHECK_STATUS(rb_put(ro, "k", 1, "v", 1), RB_E_READ_ONLY);
    bool found = false;
    CHECK_OK(rb_contains(ro, longkey, info.max_key_bytes, &found));
    CHECK(found, "the read-only handle still reads");
    rb_close(ro);
    unlink(path);
    return test_result();
}

static int test_status_strings(void) {
    CHECK(strcmp(rb_status_str(RB_E_CORRUPT), "corrupt data detected") == 0, "rb_status_str names codes");
    CHECK(strcmp(rb_status_str(-42), "unknown status") == 0, "rb_status_str survives unknown codes");
    return test_result();
}

int main(int argc, char **argv) {
    test_init(argc, argv);
    RUN(test_null_pointers);
    RUN(test_options_struct_size);
    RUN(test_output_struct_size);
    RUN(test_unknown_values);
    RUN(test_sizes);
    RUN(test_read_only_handle);
    RUN(test_status_strings);
    return test_finish("args");
}
