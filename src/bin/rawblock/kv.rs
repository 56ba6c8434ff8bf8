//! The commands that go through a recovered Store: format, ls, get, put, rm, stats, recover.

use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;

use rawblock::format::GeometryRequest;
use rawblock::store::{FormatOptions, KeyCursor, OpenMode, RecoverMode, RecoverOptions, RecoverReport, RecoveredFrom};
use rawblock::{Error, Store};
use serde_json::json;

use crate::args::{Common, FormatArgs, KeyArgs, LsArgs, RecoverArgs, StatsArgs};
use crate::{open, show, Failure, Outcome, Result};

fn u32_arg(v: Option<u64>, what: &str) -> Result<u32> {
    u32::try_from(v.unwrap_or(0)).map_err(|_| Failure(format!("--{what} is too large")))
}

pub fn format(a: &FormatArgs) -> Result<Outcome> {
    let geometry = GeometryRequest {
        block_size: u32_arg(a.block_size, "block-size")?,
        header_bytes: u32_arg(a.header_bytes, "header-bytes")?,
        slot_bytes: a.slot_bytes.unwrap_or(0),
        meta_bytes: 0,
        max_key_bytes: a.max_key_bytes.unwrap_or(0),
        journal_blocks: 0,
    };
    let f = FormatOptions { geometry, capacity_bytes: a.capacity.unwrap_or(0), overwrite: a.force, preallocate: a.preallocate };
    let store = open(&a.common, OpenMode::Create(f)).map_err(|Failure(m)| match a.force {
        false => Failure(format!("{m} (--force formats over it)")),
        true => Failure(m),
    })?;
    let g = store.geometry();
    println!(
        "formatted {}: {} slots of {} (values up to {}, keys up to {} B), device id {}",
        a.common.device.display(),
        g.slot_count(),
        show::bytes(g.slot_bytes()),
        show::bytes(g.max_payload()),
        g.max_key_bytes(),
        show::hex(&store.device_id())
    );
    Ok(Outcome::Done)
}

/// Opens and recovers: the index a server would serve after a restart.
fn recovered(common: &Common, writable: bool) -> Result<(Store, RecoverReport)> {
    let store = open(common, if writable { OpenMode::ReadWrite } else { OpenMode::ReadOnly })?;
    let report = store.recover(&RecoverOptions::default())?;
    Ok((store, report))
}

/// Every indexed key with its value length and generation, in key order.
fn each_key(store: &Store, mut f: impl FnMut(&rawblock::store::KeyInfo) -> Result<()>) -> Result<()> {
    let mut cursor = KeyCursor::new();
    let max_key = store.geometry().max_key_bytes() as usize;
    loop {
        let page = store.list_keys(&mut cursor, 4096, (1 << 20).max(max_key))?;
        if page.is_empty() {
            return Ok(());
        }
        page.iter().try_for_each(&mut f)?;
    }
}

pub fn ls(a: &LsArgs) -> Result<Outcome> {
    let (store, _) = recovered(&a.common, false)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    each_key(&store, |k| {
        if a.json {
            writeln!(out, "{}", json!({"key": show::key(&k.key), "value_len": k.value_len, "generation": k.generation.0}))?;
        } else {
            writeln!(out, "{:>12} {:>20} {}", k.value_len, k.generation.0, show::key(&k.key))?;
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(Outcome::Done)
}

pub fn get(a: &KeyArgs) -> Result<Outcome> {
    let (store, _) = recovered(&a.common, false)?;
    let key = a.key.as_bytes();
    let mut buf = vec![0u8; store.geometry().max_payload() as usize];
    match store.get(key, &mut buf) {
        Ok(n) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf[..n])?;
            out.flush()?;
            Ok(Outcome::Done)
        }
        Err(Error::NotFound) => {
            eprintln!("rawblock get: {}: no such key", show::key(key));
            Ok(Outcome::No)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn put(a: &KeyArgs) -> Result<Outcome> {
    // Read the value before opening for writing, so a slow producer holds no lock.
    let mut value = Vec::new();
    std::io::stdin().lock().read_to_end(&mut value)?;
    let (store, _) = recovered(&a.common, true)?;
    store.put(a.key.as_bytes(), &value)?;
    store.checkpoint()?;
    Ok(Outcome::Done)
}

pub fn rm(a: &KeyArgs) -> Result<Outcome> {
    let (store, _) = recovered(&a.common, true)?;
    let key = a.key.as_bytes();
    match store.delete(key) {
        Ok(()) => {
            store.checkpoint()?;
            Ok(Outcome::Done)
        }
        Err(Error::NotFound) => {
            eprintln!("rawblock rm: {}: no such key", show::key(key));
            Ok(Outcome::No)
        }
        Err(e) => Err(e.into()),
    }
}

fn from_name(f: RecoveredFrom) -> &'static str {
    match f {
        RecoveredFrom::Nothing => "nothing",
        RecoveredFrom::Checkpoint => "checkpoint",
        RecoveredFrom::Scan => "scan",
        RecoveredFrom::Journal => "checkpoint+journal",
    }
}

pub fn stats(a: &StatsArgs) -> Result<Outcome> {
    let (store, report) = recovered(&a.common, false)?;
    let g = *store.geometry();
    let (mut keys, mut value_bytes) = (0u64, 0u64);
    each_key(&store, |k| {
        keys += 1;
        value_bytes += k.value_len;
        Ok(())
    })?;
    let free = g.slot_count() - keys;
    let fill = keys as f64 / g.slot_count() as f64;
    if a.json {
        let v = json!({
            "keys": keys, "slots": g.slot_count(), "free_slots": free, "fill": fill,
            "value_bytes": value_bytes, "value_capacity_bytes": g.slot_count() * g.max_payload(),
            "recovered_from": from_name(report.from), "checkpoint_sequence": report.checkpoint_sequence,
            "engine": report.engine.name(), "recovery_ns": report.elapsed_ns, "header_reads": report.header_reads,
        });
        println!("{v:#}");
        return Ok(Outcome::Done);
    }
    println!("keys:        {keys}");
    println!("slots:       {} used, {free} free of {} ({:.1}% full)", keys, g.slot_count(), fill * 100.0);
    println!(
        "values:      {} stored, {} average, in slots holding up to {}",
        show::bytes(value_bytes),
        show::bytes(value_bytes.checked_div(keys).unwrap_or(0)),
        show::bytes(g.max_payload())
    );
    println!(
        "recovery:    from {}{} with {}: {} header reads in {}",
        from_name(report.from),
        if matches!(report.from, RecoveredFrom::Checkpoint | RecoveredFrom::Journal) {
            format!(" (sequence {})", report.checkpoint_sequence)
        } else {
            String::new()
        },
        report.engine.name(),
        report.header_reads,
        show::millis(report.elapsed_ns)
    );
    Ok(Outcome::Done)
}

pub fn recover(a: &RecoverArgs) -> Result<Outcome> {
    debug_assert!(a.dry_run, "clap requires --dry-run");
    // Read-only: recovery writes nothing, and a read-only handle cannot. In checkpoint mode
    // scrub_free also reads the free slots, to count what a writable recovery would invalidate;
    // AUTO runs as a server's would (fast recovery when the device has a lease journal).
    let store = open(&a.common, OpenMode::ReadOnly)?;
    let mode = a.mode.mode();
    let opts = RecoverOptions { mode, keep_unreadable: false, scrub_free: mode == RecoverMode::Checkpoint };
    let r = store.recover(&opts)?;
    if a.json {
        let v = json!({
            "dry_run": true, "from": from_name(r.from), "engine": r.engine.name(),
            "checkpoint_sequence": r.checkpoint_sequence, "checkpoint_entries": r.checkpoint_entries,
            "indexed": r.indexed, "dropped_stale": r.dropped_stale, "dropped_unreadable": r.dropped_unreadable,
            "empty_slots": r.empty_slots, "orphans": r.orphans, "header_reads": r.header_reads,
            "trusted_unread": r.trusted_unread, "leased_slots": r.leased_slots,
            "recovered_since_checkpoint": r.recovered_since_checkpoint,
            "elapsed_ns": r.elapsed_ns, "first_errno": r.first_errno,
        });
        println!("{v:#}");
        return Ok(Outcome::Done);
    }
    println!("dry run: nothing was written");
    match r.from {
        RecoveredFrom::Checkpoint => println!(
            "would recover from checkpoint sequence {} ({} entries), each entry checked against its slot header",
            r.checkpoint_sequence, r.checkpoint_entries
        ),
        RecoveredFrom::Scan => println!("would recover by scanning every slot header (no checkpoint verifies)"),
        RecoveredFrom::Nothing => println!("would recover nothing: no checkpoint verifies (checkpoint mode)"),
        RecoveredFrom::Journal => println!(
            "would recover fast from checkpoint sequence {} ({} entries trusted unread, each verified on its first get) \
             and the {} slots leased since it: {} puts made since the checkpoint recovered",
            r.checkpoint_sequence, r.trusted_unread, r.leased_slots, r.recovered_since_checkpoint
        ),
    }
    println!("would index:  {} keys", r.indexed);
    println!("would drop:   {} stale (replaced, deleted or damaged since), {} unreadable", r.dropped_stale, r.dropped_unreadable);
    if r.from == RecoveredFrom::Scan {
        println!("empty slots:  {}", r.empty_slots);
    }
    if opts.scrub_free {
        println!(
            "orphans:      {} valid headers in free slots (puts after the checkpoint); a writable open invalidates them before its first write",
            r.orphans
        );
    }
    println!("read:         {} headers with {} in {}", r.header_reads, r.engine.name(), show::millis(r.elapsed_ns));
    Ok(Outcome::Done)
}
