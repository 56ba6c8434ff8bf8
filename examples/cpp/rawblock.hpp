// A small C++17 RAII wrapper over the rawblock C API: one owning handle,
// exceptions that carry the status and the library's message.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rawblock.h"

namespace rawblock {

class Error : public std::runtime_error {
public:
    Error(rb_status status, const std::string& what) : std::runtime_error(what), status_(status) {}
    rb_status status() const noexcept { return status_; }

private:
    rb_status status_;
};

inline void check(rb_status s, const char* call) {
    if (s != RB_OK)
        throw Error(s, std::string(call) + ": " + rb_status_str(s) + ": " + rb_last_error_message());
}

struct Options {
    rb_options raw;
    Options() { rb_options_init(&raw); }
    Options& create(uint64_t capacity_bytes, bool overwrite = false) {
        raw.flags |= RB_OPEN_CREATE | (overwrite ? RB_OPEN_OVERWRITE_OK : 0);
        raw.capacity_bytes = capacity_bytes;
        return *this;
    }
    // Opens a rawblock device, or formats one holding none (never over data).
    Options& create_if_empty(uint64_t capacity_bytes) {
        raw.flags |= RB_OPEN_CREATE_IF_EMPTY;
        raw.capacity_bytes = capacity_bytes;
        return *this;
    }
    Options& read_only() { raw.flags |= RB_OPEN_READ_ONLY; return *this; }
    Options& engine(uint32_t e) { raw.engine = e; return *this; }
    Options& slot_bytes(uint64_t b) { raw.slot_bytes = b; return *this; }
    Options& queue_depth(uint32_t q) { raw.queue_depth = q; return *this; }
};

struct KeyInfo {
    std::string key;
    uint64_t value_len = 0;
    uint64_t generation = 0;
};

class Device;

// An iteration over a device's indexed keys in bytewise order (rb_list_keys): a key
// indexed throughout comes exactly once, none twice. Movable; frees on destruction.
class KeyCursor {
public:
    explicit KeyCursor(std::string_view after = {}) {
        check(rb_key_cursor_new(after.data(), after.size(), &cur_), "rb_key_cursor_new");
    }
    KeyCursor(KeyCursor&& o) noexcept : cur_(std::exchange(o.cur_, nullptr)) {}
    KeyCursor& operator=(KeyCursor&& o) noexcept {
        if (this != &o) {
            rb_key_cursor_free(cur_);
            cur_ = std::exchange(o.cur_, nullptr);
        }
        return *this;
    }
    KeyCursor(const KeyCursor&) = delete;
    KeyCursor& operator=(const KeyCursor&) = delete;
    ~KeyCursor() { rb_key_cursor_free(cur_); }

    // The next page of up to page_keys keys; empty when the iteration is over.
    inline std::vector<KeyInfo> next(Device& dev, size_t page_keys = 4096);

private:
    rb_key_cursor* cur_ = nullptr;
};

// Thread-safe like the handle it owns; movable, not copyable; closes on destruction.
class Device {
public:
    Device(const std::string& path, const Options& opts = Options()) {
        check(rb_open(path.c_str(), &opts.raw, &dev_), "rb_open");
    }
    Device(Device&& o) noexcept : dev_(std::exchange(o.dev_, nullptr)) {}
    Device& operator=(Device&& o) noexcept {
        if (this != &o) {
            rb_close(dev_);
            dev_ = std::exchange(o.dev_, nullptr);
        }
        return *this;
    }
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;
    ~Device() { rb_close(dev_); }

    void put(std::string_view key, std::string_view value) {
        check(rb_put(dev_, key.data(), key.size(), value.data(), value.size()), "rb_put");
    }
    std::vector<uint8_t> get(std::string_view key) {
        std::vector<uint8_t> buf(4096);
        size_t len = 0;
        rb_status s = rb_get(dev_, key.data(), key.size(), buf.data(), buf.size(), &len);
        if (s == RB_E_BUFFER_TOO_SMALL) {
            buf.resize(len);
            s = rb_get(dev_, key.data(), key.size(), buf.data(), buf.size(), &len);
        }
        check(s, "rb_get");
        buf.resize(len);
        return buf;
    }
    bool contains(std::string_view key) {
        bool found = false;
        check(rb_contains(dev_, key.data(), key.size(), &found), "rb_contains");
        return found;
    }
    void erase(std::string_view key) { check(rb_delete(dev_, key.data(), key.size()), "rb_delete"); }
    void checkpoint() { check(rb_checkpoint(dev_), "rb_checkpoint"); }
    rb_recover_report recover(uint32_t mode = RB_RECOVER_AUTO) {
        rb_recover_options o;
        rb_recover_options_init(&o);
        o.mode = mode;
        rb_recover_report r{};
        r.struct_size = sizeof r;
        check(rb_recover(dev_, &o, &r), "rb_recover");
        return r;
    }
    rb_device_info info() {
        rb_device_info i{};
        i.struct_size = sizeof i;
        check(rb_get_info(dev_, &i), "rb_get_info");
        return i;
    }
    // Whether this handle formatted the device when it opened.
    bool formatted() { return info().formatted != 0; }
    // Calls f(const KeyInfo&) for every indexed key, in bytewise order.
    template <class F>
    void for_each_key(F&& f, size_t page_keys = 4096) {
        KeyCursor cursor;
        for (auto page = cursor.next(*this, page_keys); !page.empty(); page = cursor.next(*this, page_keys))
            for (const KeyInfo& k : page) f(k);
    }
    rb_metrics metrics() {
        rb_metrics m{};
        m.struct_size = sizeof m;
        check(rb_get_metrics(dev_, &m), "rb_get_metrics");
        return m;
    }
    void reset_metrics() { check(rb_reset_metrics(dev_), "rb_reset_metrics"); }
    rb_device* raw() noexcept { return dev_; }

private:
    rb_device* dev_ = nullptr;
};

inline std::vector<KeyInfo> KeyCursor::next(Device& dev, size_t page_keys) {
    std::vector<rb_key_info> out(page_keys == 0 ? 1 : page_keys);
    out[0].struct_size = sizeof(rb_key_info);
    std::vector<char> keys(dev.info().max_key_bytes + 64 * 1024);
    size_t n = 0;
    check(rb_list_keys(dev.raw(), cur_, out.data(), out.size(), keys.data(), keys.size(), &n), "rb_list_keys");
    std::vector<KeyInfo> page(n);
    for (size_t i = 0; i < n; i++)
        page[i] = KeyInfo{std::string(keys.data() + out[i].key_offset, out[i].key_len), out[i].value_len, out[i].generation};
    return page;
}

}  // namespace rawblock
