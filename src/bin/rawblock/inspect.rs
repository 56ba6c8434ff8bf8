//! `info` and `check`: what the device holds, read through the library's decoders and engine.
//!
//! The Store (opened read-only, so a server holding the device for writing makes this
//! refuse rather than read half-written state) gives the superblock, the geometry and the
//! batched header reads; a second read-only descriptor reads what the Store keeps to itself:
//! the checkpoint containers, a foreign header's bytes, and the values for --deep.

use std::collections::HashMap;
use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};
use rawblock::aligned::AlignedBuf;
use rawblock::device::{self, Access, Device};
use rawblock::engine::{Engine, EngineChoice, EngineConfig};
use rawblock::format::checkpoint::{decode_payload, payload_parts, CheckpointHeader, MAGIC as CHECKPOINT_MAGIC};
use rawblock::format::{crc32, round_up, Container, Decoded, Geometry, SlotHeader, SlotIndex, SlotState};
use rawblock::store::{HeaderRead, OpenMode, SuperblockSource};
use rawblock::Store;
use serde_json::{json, Value};

use crate::args::{CheckArgs, Common, InfoArgs};
use crate::{open, open_store, show, Failure, Outcome, Result};

/// A second descriptor on the device, read-only, for the reads the Store does not offer.
fn open_raw(common: &Common) -> Result<Device> {
    // Through /dev/ngXnY (or with --engine uring_cmd) the raw reads go as NVMe commands too.
    let passthrough = matches!(common.engine, crate::args::Engine::UringCmd);
    let mode = device::OpenMode { access: Access::ReadOnly, buffered: common.buffered, sync_writes: false, passthrough };
    Ok(Device::open(&common.device, mode)?)
}

/// `len` bytes (a multiple of the block size) at `offset`.
fn read(dev: &Device, offset: u64, len: u64, what: &str) -> Result<AlignedBuf> {
    let mut buf = usize::try_from(len)
        .ok()
        .and_then(AlignedBuf::try_zeroed)
        .ok_or_else(|| Failure(format!("no memory for {len} bytes ({what})")))?;
    dev.read_at(&mut buf, offset).map_err(|e| Failure(format!("reading {what} at byte {offset}: {e}")))?;
    Ok(buf)
}

/// One checkpoint entry, owned.
struct Entry {
    key: Vec<u8>,
    slot: u64,
    generation: u64,
    len: u64,
    crc: u32,
}

enum ContainerState {
    /// Zeros: no checkpoint was ever written here.
    Empty,
    Valid { header: CheckpointHeader, entries: Vec<Entry> },
    /// A well-formed commit record of another device id: left by an earlier format.
    OtherDevice(CheckpointHeader),
    Damaged { header: Option<CheckpointHeader>, why: String },
}

struct ContainerReport {
    which: Container,
    state: ContainerState,
}

fn read_containers(store: &Store, raw: &Device) -> Result<Vec<ContainerReport>> {
    let g = store.geometry();
    let block = g.block_size() as u64;
    let mut out = Vec::new();
    for which in Container::BOTH {
        let base = g.container_offset(which);
        let commit = read(raw, base, block, &format!("checkpoint container {which}"))?;
        let state = match CheckpointHeader::decode(&commit) {
            None if commit.iter().all(|&b| b == 0) => ContainerState::Empty,
            None if commit.starts_with(&CHECKPOINT_MAGIC) => ContainerState::Damaged {
                header: None,
                why: "its commit record fails its CRC (a torn or overwritten write)".into(),
            },
            None => ContainerState::Damaged { header: None, why: "it holds bytes that are not a commit record".into() },
            Some(h) if h.device_id != store.device_id() => ContainerState::OtherDevice(h),
            Some(h) if h.payload_len > g.checkpoint_capacity() => ContainerState::Damaged {
                header: Some(h),
                why: format!("its payload length {} exceeds the container ({})", h.payload_len, g.checkpoint_capacity()),
            },
            Some(h) => {
                let payload = read(raw, base + block, round_up(h.payload_len, block), &format!("checkpoint {which}'s payload"))?;
                let bytes = &payload[..h.payload_len as usize];
                if crc32(bytes) != h.payload_crc {
                    ContainerState::Damaged {
                        header: Some(h),
                        why: "its payload fails the commit record's CRC (a torn or damaged write)".into(),
                    }
                } else {
                    // The payload may start with a delta's base and removed keys and end with the
                    // slots leased at its snapshot; a delta's entries are the keys put since its base.
                    match payload_parts(bytes, h.flags).and_then(|p| decode_payload(p.entries, h.entry_count)) {
                        Ok(es) => ContainerState::Valid {
                            header: h,
                            entries: es
                                .iter()
                                .map(|e| Entry {
                                    key: e.key.to_vec(),
                                    slot: e.slot.0,
                                    generation: e.generation.0,
                                    len: e.payload_len,
                                    crc: e.payload_crc,
                                })
                                .collect(),
                        },
                        Err(why) => ContainerState::Damaged { header: Some(h), why: format!("its payload does not decode: {why}") },
                    }
                }
            }
        };
        out.push(ContainerReport { which, state });
    }
    Ok(out)
}

/// The container holding the newest checkpoint that verifies.
fn newest(containers: &[ContainerReport]) -> Option<&ContainerReport> {
    containers
        .iter()
        .filter_map(|c| match &c.state {
            ContainerState::Valid { header, .. } => Some((header.sequence, c)),
            _ => None,
        })
        .max_by_key(|(seq, _)| *seq)
        .map(|(_, c)| c)
}

fn container_json(c: &ContainerReport, newest: Option<Container>) -> Value {
    let is_newest = newest == Some(c.which);
    let which = c.which.to_string();
    match &c.state {
        ContainerState::Empty => json!({"container": which, "state": "empty"}),
        ContainerState::Valid { header, .. } => json!({"container": which, "state": "valid", "sequence": header.sequence,
            "entries": header.entry_count, "payload_bytes": header.payload_len, "newest": is_newest}),
        ContainerState::OtherDevice(h) => json!({"container": which, "state": "other_device", "sequence": h.sequence,
            "entries": h.entry_count, "device_id": show::hex(&h.device_id)}),
        ContainerState::Damaged { header, why } => json!({"container": which, "state": "damaged", "why": why,
            "sequence": header.map(|h| h.sequence), "entries": header.map(|h| h.entry_count)}),
    }
}

fn container_text(c: &ContainerReport, newest: Option<Container>) -> String {
    match &c.state {
        ContainerState::Empty => "empty (no checkpoint written here)".into(),
        ContainerState::Valid { header, .. } => format!(
            "sequence {}, {}{}, {} payload{}",
            header.sequence,
            if header.flags & rawblock::format::checkpoint::FLAG_DELTA != 0 { "a delta: " } else { "" },
            show::count(header.entry_count, "entry", "entries"),
            show::bytes(header.payload_len),
            if newest == Some(c.which) { " (newest)" } else { "" }
        ),
        ContainerState::OtherDevice(h) => format!(
            "sequence {}, {} of another device id ({}): left by an earlier format, ignored",
            h.sequence,
            show::count(h.entry_count, "entry", "entries"),
            show::hex(&h.device_id)
        ),
        ContainerState::Damaged { header: Some(h), why } => {
            format!("DAMAGED: sequence {}, {}, but {why}", h.sequence, show::count(h.entry_count, "entry", "entries"))
        }
        ContainerState::Damaged { header: None, why } => format!("DAMAGED: {why}"),
    }
}

/// Whether each engine can run on this device, and why not when it cannot.
fn engines(raw: &Device, g: &Geometry) -> Vec<(EngineChoice, std::result::Result<usize, String>)> {
    [EngineChoice::Posix, EngineChoice::IoUring, EngineChoice::UringCmd]
        .into_iter()
        .map(|choice| {
            let r = Engine::new(&EngineConfig::new(choice, 0, 0), raw, g.header_bytes() as usize);
            (choice, r.map(|e| e.concurrency()).map_err(|e| e.to_string()))
        })
        .collect()
}

fn superblock_text(store: &Store) -> &'static str {
    match store.superblock_source() {
        SuperblockSource::Primary => "primary",
        SuperblockSource::Copy => "copy (the primary is damaged)",
    }
}

pub fn info(a: &InfoArgs) -> Result<Outcome> {
    let store = open(&a.common, OpenMode::ReadOnly)?;
    let raw = open_raw(&a.common)?;
    let g = *store.geometry();
    let containers = read_containers(&store, &raw)?;
    let newest_which = newest(&containers).map(|c| c.which);
    let engines = engines(&raw, &g);
    let auto = (store.engine_kind().name(), store.engine_note().unwrap_or(""));
    if a.json {
        let v = json!({
            "device": a.common.device.display().to_string(),
            "device_bytes": raw.capacity(),
            "device_id": show::hex(&store.device_id()),
            "superblock": match store.superblock_source() { SuperblockSource::Primary => "primary", SuperblockSource::Copy => "copy" },
            "geometry": {
                "block_size": g.block_size(), "header_bytes": g.header_bytes(), "slot_bytes": g.slot_bytes(),
                "slot_count": g.slot_count(), "max_key_bytes": g.max_key_bytes(), "max_value_bytes": g.max_payload(),
                "meta_bytes": g.meta_bytes(), "data_base": g.data_base(), "checkpoint_capacity": g.checkpoint_capacity(),
                "container_a": g.container_offset(Container::A), "container_b": g.container_offset(Container::B),
                "journal_offset": g.journal_offset(), "journal_blocks": g.journal_blocks(),
                "used_bytes": g.device_bytes(),
            },
            "checkpoints": containers.iter().map(|c| container_json(c, newest_which)).collect::<Vec<_>>(),
            "newest_checkpoint": newest_which.map(|c| c.to_string()),
            "engines": engines.iter().map(|(c, r)| match r {
                Ok(depth) => json!({"engine": engine_name(*c), "available": true, "in_flight": depth}),
                Err(why) => json!({"engine": engine_name(*c), "available": false, "why": why}),
            }).collect::<Vec<_>>(),
            "auto_engine": auto.0,
            "auto_note": auto.1,
        });
        println!("{v:#}");
        return Ok(Outcome::Done);
    }
    println!("device:      {} ({})", a.common.device.display(), show::bytes(raw.capacity()));
    println!("device id:   {}", show::hex(&store.device_id()));
    println!("superblock:  {}", superblock_text(&store));
    println!(
        "slots:       {} x {} (header {}, values up to {}), data from byte {}",
        g.slot_count(),
        show::bytes(g.slot_bytes()),
        show::bytes(g.header_bytes() as u64),
        show::bytes(g.max_payload()),
        g.data_base()
    );
    println!("block size:  {} B; keys up to {} B", g.block_size(), g.max_key_bytes());
    println!(
        "metadata:    {} (superblocks, two checkpoint containers of up to {} payload each, a lease journal of {} blocks)",
        show::bytes(g.meta_bytes()),
        show::bytes(g.checkpoint_capacity()),
        g.journal_blocks()
    );
    for c in &containers {
        println!("checkpoint {}: {}", c.which, container_text(c, newest_which));
    }
    for (choice, r) in &engines {
        match r {
            Ok(depth) => println!("engine {:<10} available ({depth} in flight)", engine_name(*choice)),
            Err(why) => println!("engine {:<10} unavailable: {why}", engine_name(*choice)),
        }
    }
    match auto.1 {
        "" => println!("engine auto:      {}", auto.0),
        note => println!("engine auto:      {} ({note})", auto.0),
    }
    Ok(Outcome::Done)
}

fn engine_name(c: EngineChoice) -> &'static str {
    match c {
        EngineChoice::Auto => "auto",
        EngineChoice::Posix => "posix",
        EngineChoice::IoUring => "io_uring",
        EngineChoice::UringCmd => "uring_cmd",
    }
}

/// What one slot's header read found.
#[derive(Clone)]
enum Seen {
    Valid { key: Vec<u8>, generation: u64, len: u64, crc: u32 },
    Empty,
    Corrupt,
    Foreign,
    IoError(i32),
}

#[derive(Default)]
struct SlotCounts {
    read: u64,
    valid: u64,
    empty: u64,
    earlier_format: u64,
    corrupt: u64,
    misdirected: u64,
    unreadable: u64,
}

#[derive(Default)]
struct EntryCounts {
    checked: u64,
    verified: u64,
    stale: u64,
    damaged: u64,
}

#[derive(Default)]
struct PayloadCounts {
    verified: u64,
    corrupt: u64,
    unreadable: u64,
}

struct Problem {
    slot: Option<u64>,
    what: String,
}

/// Slots whose headers one engine batch reads: bounds memory on any device size.
const CHUNK: u64 = 1 << 16;

/// The problems a check keeps to print; more are counted. Bounds its memory on a device
/// damaged throughout.
const KEPT_PROBLEMS: usize = 100_000;

/// Problems found, the first KEPT_PROBLEMS kept.
#[derive(Default)]
struct Problems {
    kept: Vec<Problem>,
    total: u64,
}

impl Problems {
    fn push(&mut self, p: Problem) {
        self.total += 1;
        if self.kept.len() < KEPT_PROBLEMS {
            self.kept.push(p);
        }
    }
}

pub fn check(a: &CheckArgs) -> Result<Outcome> {
    let store = match open_store(&a.common, OpenMode::ReadOnly) {
        Ok(s) => s,
        // No usable superblock (as opposed to a device that is missing, busy or failing
        // I/O): nothing else can be read, and that is the finding.
        Err(e) if e.status() == rawblock::Status::Format => {
            if a.json {
                println!("{:#}", json!({"device": a.common.device.display().to_string(), "clean": false,
                    "problem_count": 1, "problems": [{"slot": null, "what": e.to_string()}]}));
            } else {
                println!("DAMAGE: no usable rawblock superblock: {e}");
            }
            return Ok(Outcome::No);
        }
        Err(e) => return Err(e.into()),
    };
    let raw = open_raw(&a.common)?;
    let g = *store.geometry();
    let mut problems = Problems::default();
    if store.superblock_source() == SuperblockSource::Copy {
        problems.push(Problem { slot: None, what: "the primary superblock is damaged; its copy was used".into() });
    }
    let containers = read_containers(&store, &raw)?;
    for c in &containers {
        if let ContainerState::Damaged { .. } = c.state {
            problems.push(Problem { slot: None, what: format!("checkpoint container {}: {}", c.which, container_text(c, None)) });
        }
    }
    let newest_c = newest(&containers);
    let entries: &[Entry] = match newest_c.map(|c| &c.state) {
        Some(ContainerState::Valid { entries, .. }) => entries,
        _ => &[],
    };
    // The newest checkpoint's entries by slot, checked as the scan reaches each slot.
    let mut by_slot: HashMap<u64, usize> = HashMap::with_capacity(entries.len());
    let mut ecounts = EntryCounts { checked: entries.len() as u64, ..Default::default() };
    for (i, e) in entries.iter().enumerate() {
        if e.slot >= g.slot_count() {
            ecounts.damaged += 1;
            problems.push(Problem { slot: None, what: format!("checkpoint entry {}: slot {} is beyond the device", show::key(&e.key), e.slot) });
        } else if let Some(other) = by_slot.insert(e.slot, i) {
            ecounts.damaged += 1;
            problems.push(Problem {
                slot: Some(e.slot),
                what: format!("checkpoint names this slot for two keys: {} and {}", show::key(&entries[other].key), show::key(&e.key)),
            });
        }
    }

    let bar = if !a.json && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(g.slot_count());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} slots ({eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(if a.deep { "headers and values" } else { "headers" });
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut slots = SlotCounts::default();
    let mut payloads = PayloadCounts::default();
    let mut value_buf: Option<AlignedBuf> = None;
    let block = g.block_size() as u64;
    let mut start = 0;
    while start < g.slot_count() {
        let end = (start + CHUNK).min(g.slot_count());
        let batch: Vec<SlotIndex> = (start..end).map(SlotIndex).collect();
        let mut seen = vec![Seen::Empty; batch.len()];
        store.read_headers(&batch, &mut seen, &|_, r| match r {
            HeaderRead::State(SlotState::Valid(h)) => Seen::Valid {
                key: h.key.to_vec(),
                generation: h.generation.0,
                len: h.payload_len,
                crc: h.payload_crc,
            },
            HeaderRead::State(SlotState::Empty) => Seen::Empty,
            HeaderRead::State(SlotState::Corrupt) => Seen::Corrupt,
            HeaderRead::State(SlotState::Foreign) => Seen::Foreign,
            HeaderRead::IoError(errno) => Seen::IoError(errno),
        })?;
        for (slot, s) in (start..end).zip(&seen) {
            slots.read += 1;
            let entry = by_slot.get(&slot).map(|&i| &entries[i]);
            match s {
                Seen::Valid { key, generation, len, crc } => {
                    slots.valid += 1;
                    if let Some(e) = entry {
                        if e.key != *key || e.generation != *generation {
                            ecounts.stale += 1; // replaced or deleted since, and the slot reused
                        } else if e.len != *len || e.crc != *crc {
                            ecounts.damaged += 1;
                            problems.push(Problem {
                                slot: Some(slot),
                                what: format!(
                                    "checkpoint entry {} says {} bytes with CRC {:08x}, the header says {} bytes with CRC {:08x}",
                                    show::key(key),
                                    e.len,
                                    e.crc,
                                    len,
                                    crc
                                ),
                            });
                        } else {
                            ecounts.verified += 1;
                        }
                    }
                    if a.deep && *len > g.max_payload() {
                        payloads.corrupt += 1;
                        problems.push(Problem {
                            slot: Some(slot),
                            what: format!("its header claims a {len}-byte value, more than a slot holds ({})", g.max_payload()),
                        });
                    } else if a.deep {
                        let padded = round_up(*len, block);
                        let buf = value_buf.get_or_insert_with(|| AlignedBuf::zeroed(round_up(g.max_payload(), block) as usize));
                        let offset = g.slot_offset(SlotIndex(slot)) + g.header_bytes() as u64;
                        match raw.read_at(&mut buf[..padded as usize], offset) {
                            Ok(()) if crc32(&buf[..*len as usize]) == *crc => payloads.verified += 1,
                            Ok(()) => {
                                payloads.corrupt += 1;
                                problems.push(Problem {
                                    slot: Some(slot),
                                    what: format!("the value of {} ({} bytes) fails its CRC", show::key(key), len),
                                });
                            }
                            Err(e) => {
                                payloads.unreadable += 1;
                                problems.push(Problem { slot: Some(slot), what: format!("reading the value of {}: {e}", show::key(key)) });
                            }
                        }
                    }
                }
                Seen::Empty => {
                    slots.empty += 1;
                    if entry.is_some() {
                        ecounts.stale += 1; // deleted or replaced since the checkpoint
                    }
                }
                Seen::Corrupt => {
                    slots.corrupt += 1;
                    ecounts.damaged += entry.is_some() as u64;
                    problems.push(Problem { slot: Some(slot), what: "its header fails its CRC (a torn or damaged write)".into() });
                }
                Seen::Foreign => {
                    let (counts_as_damage, what) = foreign(&raw, &g, slot, &store.device_id())?;
                    ecounts.damaged += (entry.is_some() && counts_as_damage) as u64;
                    ecounts.stale += (entry.is_some() && !counts_as_damage) as u64;
                    if counts_as_damage {
                        slots.misdirected += 1;
                        problems.push(Problem { slot: Some(slot), what });
                    } else {
                        slots.earlier_format += 1;
                    }
                }
                Seen::IoError(errno) => {
                    slots.unreadable += 1;
                    ecounts.damaged += entry.is_some() as u64;
                    problems.push(Problem {
                        slot: Some(slot),
                        what: format!("its header cannot be read: {}", std::io::Error::from_raw_os_error(*errno)),
                    });
                }
            }
        }
        bar.set_position(end);
        start = end;
    }
    bar.finish_and_clear();

    let clean = problems.total == 0;
    if a.json {
        let newest_which = newest_c.map(|c| c.which);
        let v = json!({
            "device": a.common.device.display().to_string(),
            "clean": clean,
            "superblock": match store.superblock_source() { SuperblockSource::Primary => "primary", SuperblockSource::Copy => "copy" },
            "checkpoints": containers.iter().map(|c| container_json(c, newest_which)).collect::<Vec<_>>(),
            "entries": {"checked": ecounts.checked, "verified": ecounts.verified, "stale": ecounts.stale, "damaged": ecounts.damaged},
            "slots": {"read": slots.read, "valid": slots.valid, "empty": slots.empty, "earlier_format": slots.earlier_format,
                      "corrupt": slots.corrupt, "misdirected": slots.misdirected, "unreadable": slots.unreadable},
            "payloads": if a.deep { json!({"verified": payloads.verified, "corrupt": payloads.corrupt, "unreadable": payloads.unreadable}) } else { Value::Null },
            "problem_count": problems.total,
            "problems": problems.kept.iter().map(|p| json!({"slot": p.slot, "what": p.what})).collect::<Vec<_>>(),
        });
        println!("{v:#}");
    } else {
        println!("superblock: {}", superblock_text(&store));
        for c in &containers {
            println!("checkpoint {}: {}", c.which, container_text(c, newest_c.map(|c| c.which)));
        }
        match newest_c {
            Some(c) => println!(
                "checkpoint {} entries: {} checked: {} match their slot headers, {} stale (replaced or deleted since), {} damaged",
                c.which, ecounts.checked, ecounts.verified, ecounts.stale, ecounts.damaged
            ),
            None => println!("checkpoint entries: none (no checkpoint verifies)"),
        }
        println!(
            "slot headers: {} read: {} valid, {} empty, {} left by an earlier format, {} corrupt, {} misdirected, {} unreadable",
            slots.read, slots.valid, slots.empty, slots.earlier_format, slots.corrupt, slots.misdirected, slots.unreadable
        );
        if a.deep {
            println!("values: {} verified, {} corrupt, {} unreadable", payloads.verified, payloads.corrupt, payloads.unreadable);
        } else {
            println!("values: not read (--deep reads and verifies every value)");
        }
        if clean {
            println!("no damage found");
        } else {
            println!("DAMAGE: {}", show::count(problems.total, "problem", "problems"));
            for p in problems.kept.iter().take(a.max_problems) {
                match p.slot {
                    Some(s) => println!("  slot {s}: {}", p.what),
                    None => println!("  {}", p.what),
                }
            }
            if problems.total > a.max_problems as u64 {
                println!("  ... and {} more (--max-problems, or --json)", problems.total - a.max_problems as u64);
            }
        }
    }
    Ok(if clean { Outcome::Done } else { Outcome::No })
}

/// A well-formed header that is not this slot's: left by an earlier format (another device
/// id: harmless, recovery ignores it) or this device's header for another slot (a misdirected
/// write: damage). Returns whether it is damage, and what to say.
fn foreign(raw: &Device, g: &Geometry, slot: u64, id: &[u8; 16]) -> Result<(bool, String)> {
    let block = read(raw, g.slot_offset(SlotIndex(slot)), g.header_bytes() as u64, &format!("slot {slot}'s header"))?;
    Ok(match SlotHeader::decode(&block) {
        Decoded::Header(h) if h.device_id != *id => (false, String::new()),
        Decoded::Header(h) => (true, format!("it holds the header of slot {} (a misdirected write)", h.slot.0)),
        // Changed between the two reads (the device is being written): say so.
        _ => (true, "its header changed while it was read".into()),
    })
}
