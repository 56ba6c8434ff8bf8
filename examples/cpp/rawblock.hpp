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
    Options& read_only() { raw.flags |= RB_OPEN_READ_ONLY; return *this; }
    Options& engine(uint32_t e) { raw.engine = e; return *this; }
    Options& slot_bytes(uint64_t b) { raw.slot_bytes = b; return *this; }
    Options& queue_depth(uint32_t q) { raw.queue_depth = q; return *this; }
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
    rb_device* raw() noexcept { return dev_; }

private:
    rb_device* dev_ = nullptr;
};

}  // namespace rawblock
