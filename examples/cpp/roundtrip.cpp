// Formats, puts, checkpoints, closes, reopens, recovers and verifies every value; lists the
// keys to rebuild an index, and reads the metrics.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "rawblock.hpp"

int main(int argc, char** argv) {
    const std::string path = argc > 1 ? argv[1] : "target/examples-cpp.img";
    const int n = 100;
    auto value_of = [](int i) { return std::string(static_cast<size_t>(i * 37 % 5000), static_cast<char>('a' + i % 26)); };
    try {
        std::remove(path.c_str());
        {
            // The first start: open-or-create formats, and recover answers an empty report.
            rawblock::Device dev(path, rawblock::Options().create_if_empty(64 << 20).slot_bytes(256 << 10));
            rb_recover_report fresh = dev.recover();
            if (!dev.formatted() || fresh.source != RB_RECOVERED_NOTHING || fresh.indexed != 0) {
                std::fprintf(stderr, "open-or-create did not format a missing file\n");
                return 1;
            }
            for (int i = 0; i < n; i++) dev.put("cpp-key-" + std::to_string(i), value_of(i));
            dev.erase("cpp-key-0");
            dev.sync();
            dev.checkpoint();
        }
        rawblock::Device dev(path, rawblock::Options().read_only());
        rb_recover_report r = dev.recover();
        if (r.indexed != n - 1 || r.dropped_stale != 0) {
            std::fprintf(stderr, "recovered %llu entries (%llu stale), want %d\n", (unsigned long long)r.indexed,
                         (unsigned long long)r.dropped_stale, n - 1);
            return 1;
        }
        // Fast recovery indexed the checkpoint's entries unread; verify them all now.
        rb_verify_progress v = dev.verify_step(1000);
        if (r.source != RB_RECOVERED_JOURNAL || v.verified != (uint64_t)(n - 1) || v.dropped != 0 || v.remaining != 0) {
            std::fprintf(stderr, "fast recovery or verification: source %u, %llu verified, %llu dropped, %llu left\n",
                         r.source, (unsigned long long)v.verified, (unsigned long long)v.dropped,
                         (unsigned long long)v.remaining);
            return 1;
        }
        size_t listed = 0;
        std::string last;
        bool ascending = true;
        dev.for_each_key([&](const rawblock::KeyInfo& k) {
            ascending &= listed == 0 || last < k.key;
            last = k.key;
            listed++;
        }, 16);
        if (listed != size_t(n - 1) || !ascending) {
            std::fprintf(stderr, "listed %zu keys (ascending %d), want %d\n", listed, ascending, n - 1);
            return 1;
        }
        for (int i = 1; i < n; i++) {
            auto got = dev.get("cpp-key-" + std::to_string(i));
            if (std::string(got.begin(), got.end()) != value_of(i)) {
                std::fprintf(stderr, "cpp-key-%d: wrong value\n", i);
                return 1;
            }
        }
        try {
            dev.get("cpp-key-0");
            std::fprintf(stderr, "a deleted key came back\n");
            return 1;
        } catch (const rawblock::Error& e) {
            if (e.status() != RB_E_NOT_FOUND) throw;
        }
        rb_metrics m = dev.metrics();
        if (m.hits != uint64_t(n - 1) || m.misses != 1 || m.get_latency.count != uint64_t(n)) {
            std::fprintf(stderr, "metrics: %llu hits, %llu misses\n", (unsigned long long)m.hits, (unsigned long long)m.misses);
            return 1;
        }
        // Batched calls on a fresh device: puts, gets into exact buffers, the prefix, deletes.
        {
            rawblock::Device b(path + ".batch", rawblock::Options().create(64 << 20, true).slot_bytes(256 << 10));
            std::vector<std::string> keys, values;
            for (int i = 0; i < 10; i++) keys.push_back("batch-" + std::to_string(i)), values.push_back(value_of(i + 1));
            std::vector<std::pair<std::string_view, std::string_view>> kvs;
            for (int i = 0; i < 10; i++) kvs.emplace_back(keys[i], values[i]);
            for (rb_status s : b.put_many(kvs)) rawblock::check(s, "put_many item");
            std::vector<std::string_view> ks(keys.begin(), keys.end());
            std::vector<std::vector<char>> store(10);
            std::vector<std::pair<void*, size_t>> bufs;
            for (int i = 0; i < 10; i++) store[i].resize(values[i].size()), bufs.emplace_back(store[i].data(), store[i].size());
            std::vector<size_t> lens;
            auto st = b.get_many(ks, bufs, lens);
            for (int i = 0; i < 10; i++) {
                rawblock::check(st[i], "get_many item");
                if (std::string(store[i].data(), lens[i]) != values[i]) {
                    std::fprintf(stderr, "batch-%d: wrong value\n", i);
                    return 1;
                }
            }
            ks.insert(ks.begin() + 3, "absent");
            if (b.count_present_prefix(ks) != 3 || b.contains_many(ks)[3]) {
                std::fprintf(stderr, "prefix or contains_many wrong\n");
                return 1;
            }
            auto del = b.erase_many({"batch-0", "batch-0"});
            if (del[0] != RB_OK || del[1] != RB_E_NOT_FOUND) {
                std::fprintf(stderr, "erase_many: the second delete of a key must be not found\n");
                return 1;
            }
            // Eviction on a full device: the least recently used key goes and is reported.
            b.set_eviction(RB_EVICT_LRU);
            for (int i = 0; i < 100000; i++) {
                std::string k = "fill-" + std::to_string(i);
                b.put(k, "v");
                if (!b.take_evicted().empty()) break;
            }
            if (b.metrics().evictions == 0) {
                std::fprintf(stderr, "filling the device evicted nothing\n");
                return 1;
            }
        }
        std::remove((path + ".batch").c_str());
        std::printf("C++ round trip: %llu entries recovered from checkpoint %llu, listed and verified; "
                    "get p50 %llu ns, p99 %llu ns; batched calls verified\n",
                    (unsigned long long)r.indexed, (unsigned long long)r.checkpoint_sequence,
                    (unsigned long long)m.get_latency.p50_ns, (unsigned long long)m.get_latency.p99_ns);
    } catch (const rawblock::Error& e) {
        std::fprintf(stderr, "%s (status %d)\n", e.what(), e.status());
        return 1;
    }
    std::remove(path.c_str());
    return 0;
}
