//! Bodies of the fuzz targets (fuzz/fuzz_targets/*), kept in the library so
//! `cargo test` replays the committed corpus and every past crash without libFuzzer.
//! Each body panics only on a real defect: a decoder that accepts bytes it
//! cannot re-encode identically, or any panic inside the library.

use crate::format::checkpoint::{decode_payload, encode_payload, CheckpointHeader};
use crate::format::{SlotHeader, SlotIndex, SlotState, Superblock};

/// `data`'s first `len` bytes with the flag and reserved ranges and the trailing CRC zeroed:
/// a v1 reader ignores flags and reserved fields (they are for compatible additions), so
/// those bytes, and the CRC over them, do not round-trip; every other byte must.
fn without_ignored(data: &[u8], len: usize, ignored: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut v = data[..len].to_vec();
    for r in ignored.iter().cloned().chain(std::iter::once(len - 4..len)) {
        v[r].fill(0);
    }
    v
}

/// Superblock decoding: accepted blocks re-encode to the same bytes.
pub fn superblock(data: &[u8]) {
    if let Ok(sb) = Superblock::decode(data, 512) {
        let mut again = vec![0u8; crate::format::superblock::ENCODED_BYTES];
        sb.encode(&mut again);
        assert_eq!(without_ignored(data, again.len(), &[12..16, 84..88]), without_ignored(&again, again.len(), &[12..16, 84..88]), "superblock does not round-trip");
    }
}

/// Checkpoint header and payload decoding: accepted payloads re-encode identically.
pub fn checkpoint(data: &[u8]) {
    if let Some(h) = CheckpointHeader::decode(data) {
        let mut again = vec![0u8; crate::format::checkpoint::HEADER_ENCODED_BYTES];
        h.encode(&mut again);
        assert_eq!(without_ignored(data, again.len(), std::slice::from_ref(&(12..16))), without_ignored(&again, again.len(), std::slice::from_ref(&(12..16))), "checkpoint header does not round-trip");
    }
    let (count, payload) = match data.split_first_chunk::<2>() {
        Some((c, rest)) => (u16::from_le_bytes(*c) as u64, rest),
        None => return,
    };
    if let Ok(entries) = decode_payload(payload, count) {
        let mut again = vec![0u8; payload.len()];
        assert_eq!(encode_payload(entries.iter().copied(), &mut again), payload.len());
        assert_eq!(again, payload, "checkpoint payload does not round-trip");
    }
    // The carried-lease section: any bytes split cleanly or are refused, and what splits
    // re-encodes to the same tail.
    if let Ok((entry_bytes, runs)) = crate::format::checkpoint::split_payload(payload, crate::format::checkpoint::FLAG_CARRIED_LEASES) {
        let tail = &payload[entry_bytes.len()..];
        let mut again = vec![0u8; tail.len()];
        assert_eq!(crate::format::checkpoint::encode_carried(&runs, &mut again), tail.len());
        assert_eq!(again, tail, "carried leases do not round-trip");
    }
    // A delta's prefix: any bytes split cleanly or are refused, never a panic.
    let _ = crate::format::checkpoint::payload_parts(
        payload,
        crate::format::checkpoint::FLAG_CARRIED_LEASES | crate::format::checkpoint::FLAG_DELTA,
    );
    // Lease journal records: a block that decodes re-encodes to itself (the block's tail is zero).
    if data.len() >= 4096 {
        if let Some(rec) = crate::format::lease::LeaseRecord::decode(&data[..4096]) {
            let mut again = vec![0u8; 4096];
            rec.encode(&mut again);
            let used = again.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            assert_eq!(&again[..used], &data[..used], "lease record does not round-trip");
        }
    }
}

/// Slot header classification: valid headers re-encode to the same bytes.
pub fn slot_header(data: &[u8]) {
    const ID: [u8; 16] = *b"fuzz-device-id!!";
    let slot = SlotIndex(7);
    if let SlotState::Valid(h) = SlotHeader::classify(data, &ID, slot) {
        let mut again = vec![0u8; h.encoded_len()];
        h.encode(&mut again);
        assert_eq!(without_ignored(data, again.len(), &[12..16, 62..64]), without_ignored(&again, again.len(), &[12..16, 62..64]), "slot header does not round-trip");
    }
    let _ = SlotHeader::decode(data);
}

/// Open + recover + read everything over a small valid device image patched by the input:
/// `[u32 offset][u8 len][len bytes]...`. Every outcome is fine except a panic or a get that
/// returns bytes whose CRC does not match what the header promised (checked inside get).
pub fn open_recover(data: &[u8]) {
    use crate::store::{FormatOptions, OpenMode, OpenOptions, RecoverMode, RecoverOptions};
    use std::sync::OnceLock;
    static BASE: OnceLock<(Vec<u8>, Vec<Vec<u8>>)> = OnceLock::new();
    let dir = std::env::temp_dir().join(format!("rawblock-fuzz-{}", std::process::id()));
    let (base, keys) = BASE.get_or_init(|| {
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("base.img");
        let _ = std::fs::remove_file(&path);
        let opts = OpenOptions {
            mode: OpenMode::Create(FormatOptions {
                capacity_bytes: 1 << 20,
                geometry: crate::format::GeometryRequest { slot_bytes: 16384, meta_bytes: 9 * 4096, ..Default::default() },
                overwrite: false,
                ..Default::default()
            }),
            buffered: true,
            ..Default::default()
        };
        let s = crate::Store::open(&path, &opts).expect("base image");
        let keys: Vec<Vec<u8>> = (0..8).map(|i| format!("key-{i}").into_bytes()).collect();
        for (i, k) in keys.iter().enumerate() {
            s.put(k, &vec![i as u8; 100 * i]).expect("put");
        }
        s.checkpoint().expect("checkpoint");
        s.put(b"after-checkpoint", b"x").expect("put");
        drop(s);
        let bytes = std::fs::read(&path).expect("read base");
        (bytes, keys)
    });
    let mut image = base.clone();
    let mut rest = data;
    while let Some((head, tail)) = rest.split_first_chunk::<5>() {
        let off = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize % image.len();
        let len = (head[4] as usize).min(tail.len()).min(image.len() - off);
        image[off..off + len].copy_from_slice(&tail[..len]);
        rest = &tail[len..];
    }
    let path = dir.join(format!("work-{:?}.img", std::thread::current().id()));
    std::fs::write(&path, &image).expect("write image");
    let opts = OpenOptions { mode: OpenMode::ReadOnly, buffered: true, ..Default::default() };
    let Ok(s) = crate::Store::open(&path, &opts) else { return };
    for mode in [RecoverMode::Auto, RecoverMode::Checkpoint, RecoverMode::Scan] {
        if s.recover(&RecoverOptions { mode, keep_unreadable: true, scrub_free: true }).is_err() {
            continue;
        }
        let mut buf = vec![0u8; s.geometry().max_payload() as usize];
        for k in keys.iter().map(|k| &k[..]).chain([&b"after-checkpoint"[..]]) {
            let _ = s.get(k, &mut buf);
        }
        let all: Vec<SlotIndex> = s.geometry().all_slots().collect();
        let mut out = vec![(); all.len()];
        let _ = s.read_headers(&all, &mut out, &|_, _| ());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::format::{Generation, SlotIndex};

    /// Replays every committed corpus file and past crash through its target's body.
    #[test]
    fn corpus_replays_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 4] = [
            ("superblock", super::superblock),
            ("checkpoint", super::checkpoint),
            ("slot_header", super::slot_header),
            ("open_recover", super::open_recover),
        ];
        let mut replayed = 0;
        for (name, body) in targets {
            for dir in [root.join("corpus").join(name), root.join("regressions").join(name)] {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries {
                    let data = std::fs::read(entry.unwrap().path()).unwrap();
                    body(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 4, "the committed corpus is missing ({replayed} inputs)");
    }

    /// Writes the seed corpus (valid encodings to mutate from): `cargo test -- --ignored write_seed_corpus`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        use crate::format::checkpoint::{encode_payload, CheckpointEntry, CheckpointHeader};
        use crate::format::{Geometry, GeometryRequest, SlotHeader, Superblock};
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |target: &str, name: &str, data: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        };
        let geometry = Geometry::plan(&GeometryRequest::default(), 1 << 30, 512).unwrap();
        let mut block = vec![0u8; 4096];
        Superblock { device_id: *b"fuzz-device-id!!", geometry }.encode(&mut block);
        write("superblock", "seed-valid", &block[..128]);
        let h = CheckpointHeader { device_id: *b"fuzz-device-id!!", sequence: 3, payload_len: 40, entry_count: 1, payload_crc: 9, flags: 0 };
        h.encode(&mut block);
        write("checkpoint", "seed-header", &block[..64]);
        let e = CheckpointEntry { key: b"key-1", slot: SlotIndex(7), generation: Generation(99), payload_len: 4096, payload_crc: 1 };
        let mut payload = vec![1u8, 0];
        payload.resize(2 + e.encoded_len() as usize, 0);
        encode_payload([e], &mut payload[2..]);
        write("checkpoint", "seed-payload", &payload);
        SlotHeader { device_id: *b"fuzz-device-id!!", slot: SlotIndex(7), generation: Generation(5), payload_len: 100, payload_crc: 3, key: b"model@chunk" }
            .encode(&mut block);
        write("slot_header", "seed-valid", &block[..96]);
        // open_recover: patches [u32 offset][u8 len][bytes] of the base image.
        write("open_recover", "seed-untouched", b"");
        write("open_recover", "seed-superblock-flip", &[20, 0, 0, 0, 1, 0xFF]);
        write("open_recover", "seed-checkpoint-flip", &[0x10, 0x10, 0, 0, 2, 0xAA, 0x55]);
        write("open_recover", "seed-slot-header-flip", &[0x28, 0x90, 0, 0, 1, 0x01]);
    }
}
