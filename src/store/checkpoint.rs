//! Writing and loading checkpoints in the two alternating containers.

use super::Store;
use crate::aligned::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::checkpoint::{
    carried_len, decode_payload, encode_carried, encode_payload, split_payload, CheckpointEntry, CheckpointHeader,
    ENTRY_FIXED_BYTES, FLAG_CARRIED_LEASES,
};
use crate::format::lease::SlotRun;
use crate::format::{crc32, round_up, Container};
use crate::sync::lock;

/// Which container to write next, and with which sequence.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cursor {
    /// The container holding the newest checkpoint that verifies.
    pub newest: Option<Container>,
    /// Above every sequence seen on the device, valid or not.
    pub next_sequence: u64,
}

impl Cursor {
    fn target(&self) -> Container {
        self.newest.map_or(Container::A, Container::other)
    }
}

/// What a completed checkpoint wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub sequence: u64,
    pub entries: u64,
    pub payload_bytes: u64,
}

/// When a handle checkpoints by itself, checked after each write call: after `every_changes`
/// puts, deletes and evictions since the last checkpoint, or once `every` has passed since
/// it with anything changed. Zero turns a trigger off; both off (the default) leaves
/// checkpoints to the caller. An idle handle takes none: nothing changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoCheckpoint {
    pub every_changes: u64,
    pub every: std::time::Duration,
}

/// A checkpoint whose header and payload both verified.
pub(super) struct LoadedCheckpoint {
    pub header: CheckpointHeader,
    /// The payload, padded to the block size; `payload_len` bytes of it are meaningful.
    pub payload: AlignedBuf,
}

impl LoadedCheckpoint {
    pub fn entries(&self) -> std::result::Result<Vec<CheckpointEntry<'_>>, String> {
        let (entries, _) = split_payload(&self.payload[..self.header.payload_len as usize], self.header.flags)?;
        decode_payload(entries, self.header.entry_count)
    }

    /// The slots leased but not installed when its snapshot was taken (none before leases).
    pub fn carried(&self) -> std::result::Result<Vec<SlotRun>, String> {
        split_payload(&self.payload[..self.header.payload_len as usize], self.header.flags).map(|(_, runs)| runs)
    }
}

/// The index encoded as a checkpoint payload, padded to the block size.
struct EncodedIndex {
    payload: AlignedBuf,
    entries: u64,
    len: u64,
    flags: u32,
}

/// Big sequential reads for loading a checkpoint payload.
const LOAD_CHUNK: usize = 8 << 20;

impl Store {
    /// Writes the index to the container not holding the newest checkpoint:
    /// payload, fdatasync, then the header block as the commit record, fdatasync.
    /// A checkpoint too large for its container is [`Error::CheckpointTooLarge`] and writes nothing.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        let mut cursor = lock(&self.checkpoints);
        let target = cursor.target();
        let sequence = cursor.next_sequence.max(1);
        // No batch is leased while the snapshot is taken (see store/lease.rs).
        let leasing = lock(&self.lease_io);
        let encoded = self.encode_index(sequence)?;
        drop(leasing);
        let header = CheckpointHeader {
            device_id: self.sb.device_id,
            sequence,
            payload_len: encoded.len,
            entry_count: encoded.entries,
            payload_crc: crc32(&encoded.payload[..encoded.len as usize]),
            flags: encoded.flags,
        };
        self.write_checkpoint(target, &header, &encoded.payload)?;
        *cursor = Cursor { newest: Some(target), next_sequence: sequence + 1 };
        let mut st = lock(&self.state);
        st.leases.committed(sequence);
        st.checkpointed_changes = st.changes;
        st.checkpointed_at = std::time::Instant::now();
        Ok(CheckpointInfo { sequence, entries: encoded.entries, payload_bytes: encoded.len })
    }

    /// Encodes the index under the state lock (a writable, recovered handle only). On a
    /// device with a lease journal this is the snapshot of checkpoint `sequence`: the slots
    /// leased and not installed are carried in the payload, and later leases belong to
    /// `sequence`'s epoch.
    fn encode_index(&self, sequence: u64) -> Result<EncodedIndex> {
        let g = self.sb.geometry;
        let mut st = self.writable()?;
        let carried = if self.has_journal() { Some(st.leases.carried()) } else { None };
        let entries_len: u64 = st.index.iter().map(|(k, _)| ENTRY_FIXED_BYTES + k.len() as u64).sum();
        let len = entries_len + carried.as_ref().map_or(0, |c| carried_len(c.len()));
        let entries = st.index.len() as u64;
        if len > g.checkpoint_capacity() {
            return Err(Error::CheckpointTooLarge { entries, needed: len, capacity: g.checkpoint_capacity() });
        }
        let padded = round_up(len, g.block_size() as u64);
        let mut payload = usize::try_from(padded)
            .ok()
            .and_then(AlignedBuf::try_zeroed)
            .ok_or_else(|| Error::out_of_memory("the checkpoint payload", padded))?;
        let written = encode_payload(
            st.index.iter().map(|(key, e)| CheckpointEntry {
                key,
                slot: e.slot,
                generation: e.generation,
                payload_len: e.payload_len,
                payload_crc: e.payload_crc,
            }),
            &mut payload,
        );
        debug_assert_eq!(written as u64, entries_len);
        let flags = match &carried {
            Some(runs) => {
                encode_carried(runs, &mut payload[written..]);
                st.leases.epoch = sequence;
                FLAG_CARRIED_LEASES
            }
            None => 0,
        };
        Ok(EncodedIndex { payload, entries, len, flags })
    }

    /// Payload, sync, commit record, sync: a crash anywhere leaves the other container newest.
    fn write_checkpoint(&self, target: Container, header: &CheckpointHeader, payload: &[u8]) -> Result<()> {
        let g = self.sb.geometry;
        let base = g.container_offset(target);
        let block = g.block_size() as u64;
        let mut header_block = AlignedBuf::zeroed(block as usize);
        header.encode(&mut header_block);
        let io = |what: &str, e| Error::io(format!("checkpoint {}: {what}", header.sequence), e);
        if !payload.is_empty() {
            self.dev.write_at(payload, base + block).map_err(|e| io("writing the payload", e))?;
        }
        self.dev.sync().map_err(|e| io("syncing the payload", e))?;
        self.dev.write_at(&header_block, base).map_err(|e| io("writing the commit record", e))?;
        self.dev.sync().map_err(|e| io("syncing the commit record", e))
    }

    /// Sets when this handle checkpoints by itself ([`AutoCheckpoint`]).
    pub fn set_auto_checkpoint(&self, policy: AutoCheckpoint) {
        lock(&self.state).auto_checkpoint = policy;
    }

    /// Takes a checkpoint when the auto-checkpoint policy says it is due. A failure leaves
    /// the write that triggered it acknowledged: it is counted, and the next write tries again.
    pub(super) fn maybe_checkpoint(&self) {
        let due = {
            let st = lock(&self.state);
            let changed = st.changes - st.checkpointed_changes;
            let p = st.auto_checkpoint;
            changed > 0
                && st.phase == super::Phase::Ready
                && ((p.every_changes > 0 && changed >= p.every_changes)
                    || (!p.every.is_zero() && st.checkpointed_at.elapsed() >= p.every))
        };
        // One at a time: a write that finds a checkpoint running leaves it to that one.
        if !due || self.checkpoints.try_lock().is_err() {
            return;
        }
        if self.checkpoint().is_err() {
            lock(&self.state).auto_checkpoint_failures += 1;
        }
    }

    /// Checkpoints the policy took by itself that failed (the writes stayed acknowledged).
    pub fn auto_checkpoint_failures(&self) -> u64 {
        lock(&self.state).auto_checkpoint_failures
    }

    /// Finds the newest checkpoint of this device whose header and payload both verify.
    /// None verifying is `Ok(None)`, not an error.
    pub(super) fn load_checkpoint(&self) -> Result<(Cursor, Option<LoadedCheckpoint>)> {
        let (mut headers, max_seq) = self.read_checkpoint_headers()?;
        headers.sort_by_key(|(_, h)| std::cmp::Reverse(h.sequence));
        let mut cursor = Cursor { newest: None, next_sequence: max_seq + 1 };
        for (which, header) in headers {
            let payload = self.read_payload(which, header.payload_len)?;
            if crc32(&payload[..header.payload_len as usize]) != header.payload_crc {
                continue;
            }
            let loaded = LoadedCheckpoint { header, payload };
            if loaded.entries().is_err() {
                continue;
            }
            cursor.newest = Some(which);
            return Ok((cursor, Some(loaded)));
        }
        Ok((cursor, None))
    }

    /// The well-formed commit records of this device, and the highest sequence of any.
    fn read_checkpoint_headers(&self) -> Result<(Vec<(Container, CheckpointHeader)>, u64)> {
        let g = self.sb.geometry;
        let mut headers = Vec::with_capacity(2);
        let mut max_seq = 0;
        for which in Container::BOTH {
            let mut buf = AlignedBuf::zeroed(g.block_size() as usize);
            self.dev
                .read_at(&mut buf, g.container_offset(which))
                .map_err(|e| Error::io(format!("reading checkpoint container {which}"), e))?;
            if let Some(h) = CheckpointHeader::decode(&buf) {
                max_seq = max_seq.max(h.sequence);
                if h.device_id == self.sb.device_id && h.payload_len <= g.checkpoint_capacity() {
                    headers.push((which, h));
                }
            }
        }
        Ok((headers, max_seq))
    }

    fn read_payload(&self, which: Container, len: u64) -> Result<AlignedBuf> {
        let g = self.sb.geometry;
        let padded = round_up(len, g.block_size() as u64);
        let mut payload = usize::try_from(padded)
            .ok()
            .and_then(AlignedBuf::try_zeroed)
            .ok_or_else(|| Error::out_of_memory("loading a checkpoint payload", padded))?;
        let base = g.container_offset(which) + g.block_size() as u64;
        for (i, chunk) in payload.chunks_mut(LOAD_CHUNK).enumerate() {
            self.dev
                .read_at(chunk, base + (i * LOAD_CHUNK) as u64)
                .map_err(|e| Error::io(format!("reading checkpoint container {which}"), e))?;
        }
        Ok(payload)
    }
}
