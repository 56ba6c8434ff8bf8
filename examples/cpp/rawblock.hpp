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
    // Every put and delete acknowledged before it survives a power cut.
    void sync() { check(rb_sync(dev_), "rb_sync"); }
    // Checkpoint by itself after every_changes changes or every_ms ms with changes (0: off).
    void set_auto_checkpoint(uint64_t every_changes, uint64_t every_ms) {
        check(rb_set_auto_checkpoint(dev_, every_changes, every_ms), "rb_set_auto_checkpoint");
    }
    // After a fast recovery: verify up to max_entries entries indexed unread.
    rb_verify_progress verify_step(size_t max_entries) {
        rb_verify_progress p{};
        p.struct_size = sizeof p;
        check(rb_verify_step(dev_, max_entries, &p), "rb_verify_step");
        return p;
    }
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
    // Eviction when no slot is free: RB_EVICT_NONE (default), RB_EVICT_LRU, RB_EVICT_FIFO.
    void set_eviction(uint32_t policy, uint32_t low_watermark_permille = 0) {
        check(rb_set_eviction(dev_, policy, low_watermark_permille), "rb_set_eviction");
    }
    // The keys evicted since the last call, oldest first (up to max_keys; the rest stay queued).
    std::vector<std::string> take_evicted(size_t max_keys = 1024) {
        std::vector<rb_key_info> out(max_keys == 0 ? 1 : max_keys);
        out[0].struct_size = sizeof(rb_key_info);
        std::vector<char> keys(64 * 1024);
        size_t n = 0;
        check(rb_take_evicted(dev_, out.data(), max_keys, keys.data(), keys.size(), &n), "rb_take_evicted");
        std::vector<std::string> got;
        for (size_t i = 0; i < n; i++) got.emplace_back(keys.data() + out[i].key_offset, out[i].key_len);
        return got;
    }
    // Registers memory (a pinned pool) for fixed-buffer batched I/O; returns the region id.
    uint32_t register_memory(void* addr, size_t len) {
        uint32_t region = 0;
        check(rb_register_memory(dev_, addr, len, &region), "rb_register_memory");
        return region;
    }
    void unregister_memory(uint32_t region) { check(rb_unregister_memory(dev_, region), "rb_unregister_memory"); }
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
