//! Writing and loading checkpoints in the two alternating containers.

use super::Store;
use crate::sync::lock;
use crate::aligned::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::checkpoint::{encode_payload, CheckpointEntry, CheckpointHeader};
use crate::format::{crc32, round_up};

/// Which container to write next, and with which sequence.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cursor {
    /// The container holding the newest checkpoint that verifies.
    pub newest: Option<usize>,
    /// Above every sequence seen on the device, valid or not.
    pub next_sequence: u64,
}

impl Cursor {
    fn target(&self) -> usize {
        self.newest.map_or(0, |c| 1 - c)
    }
}

/// What a completed checkpoint wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub sequence: u64,
    pub entries: u64,
    pub payload_bytes: u64,
}

/// A checkpoint whose header and payload both verified.
pub(super) struct LoadedCheckpoint {
    pub header: CheckpointHeader,
    /// The payload, padded to the block size; `payload_len` bytes of it are meaningful.
    pub payload: AlignedBuf,
}

impl LoadedCheckpoint {
    pub fn entries(&self) -> std::result::Result<Vec<CheckpointEntry<'_>>, String> {
        crate::format::checkpoint::decode_payload(&self.payload[..self.header.payload_len as usize], self.header.entry_count)
    }
}

/// Big sequential reads for loading a checkpoint payload.
const LOAD_CHUNK: usize = 8 << 20;

impl Store {
    /// Writes the index to the container not holding the newest checkpoint:
    /// payload, fdatasync, then the header block as the commit record, fdatasync.
    /// A checkpoint too large for its container is [`Error::NoSpace`] and writes nothing.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        let g = self.sb.geometry;
        let mut cursor = lock(&self.checkpoints);
        let (payload, entries, payload_len) = {
            let st = self.writable()?;
            let len: u64 = st.index.iter().map(|(k, _)| crate::format::checkpoint::ENTRY_FIXED_BYTES + k.len() as u64).sum();
            if len > g.checkpoint_capacity() {
                return Err(Error::NoSpace(format!(
                    "a checkpoint of {} entries needs {len} bytes; each container holds {}",
                    st.index.len(),
                    g.checkpoint_capacity()
                )));
            }
            let mut payload = AlignedBuf::zeroed(round_up(len, g.block_size as u64) as usize);
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
            debug_assert_eq!(written as u64, len);
            (payload, st.index.len() as u64, len)
        };
        let target = cursor.target();
        let sequence = cursor.next_sequence.max(1);
        let base = g.container_offset(target);
        let block = g.block_size as u64;
        let header = CheckpointHeader {
            device_id: self.sb.device_id,
            sequence,
            payload_len,
            entry_count: entries,
            payload_crc: crc32(&payload[..payload_len as usize]),
        };
        let mut header_block = AlignedBuf::zeroed(block as usize);
        header.encode(&mut header_block);
        let io = |what: &str, e| Error::io(format!("checkpoint {sequence}: {what}"), e);
        if !payload.is_empty() {
            self.dev.write_at(&payload, base + block).map_err(|e| io("writing the payload", e))?;
        }
        self.dev.sync().map_err(|e| io("syncing the payload", e))?;
        self.dev.write_at(&header_block, base).map_err(|e| io("writing the commit record", e))?;
        self.dev.sync().map_err(|e| io("syncing the commit record", e))?;
        *cursor = Cursor { newest: Some(target), next_sequence: sequence + 1 };
        Ok(CheckpointInfo { sequence, entries, payload_bytes: payload_len })
    }

    /// Finds the newest checkpoint of this device whose header and payload both verify.
    /// None verifying is `Ok(None)`, not an error.
    pub(super) fn load_checkpoint(&self) -> Result<(Cursor, Option<LoadedCheckpoint>)> {
        let g = self.sb.geometry;
        let block = g.block_size as usize;
        let mut headers = Vec::with_capacity(2);
        let mut max_seq = 0;
        for which in 0..2 {
            let mut buf = AlignedBuf::zeroed(block);
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

    fn read_payload(&self, which: usize, len: u64) -> Result<AlignedBuf> {
        let g = self.sb.geometry;
        let mut payload = AlignedBuf::zeroed(round_up(len, g.block_size as u64) as usize);
        let base = g.container_offset(which) + g.block_size as u64;
        for (i, chunk) in payload.chunks_mut(LOAD_CHUNK).enumerate() {
            self.dev
                .read_at(chunk, base + (i * LOAD_CHUNK) as u64)
                .map_err(|e| Error::io(format!("reading checkpoint container {which}"), e))?;
        }
        Ok(payload)
    }
}
