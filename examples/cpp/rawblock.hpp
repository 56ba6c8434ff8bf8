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

    // Batched calls: one status per item (RB_OK or an RB_E_* code), in input order.
    std::vector<rb_status> put_many(const std::vector<std::pair<std::string_view, std::string_view>>& kvs) {
        std::vector<rb_item> items(kvs.size());
        for (size_t i = 0; i < kvs.size(); i++)
            items[i] = item(kvs[i].first, const_cast<char*>(kvs[i].second.data()), kvs[i].second.size());
        check(rb_put_many(dev_, items.data(), items.size()), "rb_put_many");
        return statuses(items);
    }
    // Reads each key into its buffer (a 4096-aligned buffer padded to the block size is filled
    // without a copy); lens[i] is the value's length, or the length needed with
    // RB_E_BUFFER_TOO_SMALL.
    std::vector<rb_status> get_many(const std::vector<std::string_view>& keys, std::vector<std::pair<void*, size_t>>& bufs,
                                    std::vector<size_t>& lens) {
        if (bufs.size() != keys.size()) throw Error(RB_E_INVALID_ARGUMENT, "get_many: one buffer per key");
        std::vector<rb_item> items(keys.size());
        for (size_t i = 0; i < keys.size(); i++) items[i] = item(keys[i], bufs[i].first, bufs[i].second);
        check(rb_get_many(dev_, items.data(), items.size()), "rb_get_many");
        lens.resize(items.size());
        for (size_t i = 0; i < items.size(); i++) lens[i] = items[i].len;
        return statuses(items);
    }
    std::vector<rb_status> erase_many(const std::vector<std::string_view>& keys) {
        std::vector<rb_item> items = key_items(keys);
        check(rb_delete_many(dev_, items.data(), items.size()), "rb_delete_many");
        return statuses(items);
    }
    std::vector<bool> contains_many(const std::vector<std::string_view>& keys) {
        std::vector<rb_item> items = key_items(keys);
        check(rb_contains_many(dev_, items.data(), items.size()), "rb_contains_many");
        std::vector<bool> found(items.size());
        for (size_t i = 0; i < items.size(); i++) found[i] = items[i].status == RB_OK;
        return found;
    }
    size_t count_present_prefix(const std::vector<std::string_view>& keys) {
        std::vector<rb_item> items = key_items(keys);
        size_t count = 0;
        check(rb_count_present_prefix(dev_, items.data(), items.size(), &count), "rb_count_present_prefix");
        return count;
    }
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
    static rb_item item(std::string_view key, void* value, size_t value_len) {
        rb_item it{};
        it.struct_size = sizeof(rb_item);
        it.key = key.data();
        it.key_len = key.size();
        it.value = value;
        it.value_len = value_len;
        return it;
    }
    static std::vector<rb_item> key_items(const std::vector<std::string_view>& keys) {
        std::vector<rb_item> items(keys.size());
        for (size_t i = 0; i < keys.size(); i++) items[i] = item(keys[i], nullptr, 0);
        return items;
    }
    static std::vector<rb_status> statuses(const std::vector<rb_item>& items) {
        std::vector<rb_status> s(items.size());
        for (size_t i = 0; i < items.size(); i++) s[i] = items[i].status;
        return s;
    }

    rb_device* dev_ = nullptr;
};

}  // namespace rawblock
