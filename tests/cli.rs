//! The `rawblock` tool driven as a user would: on real image files, clean and damaged (bytes
//! written into the image where a header, a value or a checkpoint lives), checking exit
//! statuses and output. The damage is located from `rawblock info --json`'s geometry.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const SLOT_MAGIC: &[u8] = b"RBSLOT\0\x01";

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("device.img")
}

fn rawblock(args: &[&str], img: &Path, stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rawblock"))
        .args(&args[..1])
        .arg(img)
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rawblock");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn run(args: &[&str], img: &Path) -> Output {
    rawblock(args, img, b"")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

/// Runs and insists on the exit status, showing both streams when it differs.
fn expect(args: &[&str], img: &Path, status: i32) -> Output {
    let o = run(args, img);
    assert_eq!(code(&o), status, "rawblock {args:?}\nstdout:\n{}\nstderr:\n{}", text(&o), String::from_utf8_lossy(&o.stderr));
    o
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// A 16 MiB image of 64 KiB slots holding `n` keys, checkpointed by each put.
fn device(name: &str, n: usize) -> PathBuf {
    let img = scratch(name);
    expect(&["format", "--capacity", "16M", "--slot-bytes", "64K"], &img, 0);
    for i in 0..n {
        let o = rawblock(&["put", &format!("key-{i}")], &img, value(i).as_slice());
        assert_eq!(code(&o), 0, "put: {}", String::from_utf8_lossy(&o.stderr));
    }
    img
}

fn value(i: usize) -> Vec<u8> {
    (0..1000 + i * 3000).map(|j| (j * 7 + i * 13) as u8).collect()
}

struct Layout {
    data_base: u64,
    slot_bytes: u64,
    header_bytes: u64,
    slot_count: u64,
    block: u64,
    meta: Value,
}

fn layout(img: &Path) -> Layout {
    let info = json(&expect(&["info", "--json"], img, 0));
    let g = &info["geometry"];
    let n = |k: &str| g[k].as_u64().unwrap();
    Layout {
        data_base: n("data_base"),
        slot_bytes: n("slot_bytes"),
        header_bytes: n("header_bytes"),
        slot_count: n("slot_count"),
        block: n("block_size"),
        meta: info,
    }
}

fn read_at(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn write_at(img: &Path, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// The slots holding a rawblock header, in slot order.
fn used_slots(img: &Path, l: &Layout) -> Vec<u64> {
    (0..l.slot_count).filter(|&s| read_at(img, l.data_base + s * l.slot_bytes, 8) == SLOT_MAGIC).collect()
}

fn flip(img: &Path, offset: u64) {
    let b = read_at(img, offset, 1)[0];
    write_at(img, offset, &[b ^ 0xff]);
}

fn digest(img: &Path) -> Vec<u8> {
    std::fs::read(img).unwrap()
}

#[test]
fn put_get_ls_rm_round_trip() {
    let img = device("kv", 3);
    let binary: Vec<u8> = (0..=255u8).cycle().take(60_000).collect();
    let o = rawblock(&["put", "bin\u{1}key"], &img, &binary);
    assert_eq!(code(&o), 0);
    let o = expect(&["get", "bin\u{1}key"], &img, 0);
    assert_eq!(o.stdout, binary);
    assert_eq!(expect(&["get", "key-2"], &img, 0).stdout, value(2));

    let ls = text(&expect(&["ls"], &img, 0));
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.iter().map(|r| r[2]).collect::<Vec<_>>(), ["bin\\x01key", "key-0", "key-1", "key-2"], "{ls}");
    assert_eq!(rows[2][0], value(1).len().to_string());
    assert!(rows.iter().all(|r| r[1].parse::<u64>().unwrap() > 0), "generations: {ls}");
    let lines: Vec<Value> = text(&expect(&["ls", "--json"], &img, 0)).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[1]["key"], "key-0");
    assert_eq!(lines[1]["value_len"], value(0).len() as u64);

    expect(&["rm", "key-1"], &img, 0);
    let o = expect(&["get", "key-1"], &img, 1);
    assert!(o.stdout.is_empty() && String::from_utf8_lossy(&o.stderr).contains("key-1: no such key"));
    expect(&["rm", "key-1"], &img, 1);
    let stats = json(&expect(&["stats", "--json"], &img, 0));
    assert_eq!(stats["keys"], 3);
    assert_eq!(stats["free_slots"], stats["slots"].as_u64().unwrap() - 3);
    assert_eq!(stats["value_bytes"], (binary.len() + value(0).len() + value(2).len()) as u64);
    assert_eq!(stats["recovered_from"], "checkpoint+journal", "fast recovery from the checkpoint each put and rm took");
    // A value larger than a slot is refused and changes nothing.
    let o = rawblock(&["put", "key-0"], &img, &vec![1u8; 64 << 10]);
    assert_eq!(code(&o), 3, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(expect(&["get", "key-0"], &img, 0).stdout, value(0));
}

#[test]
fn info_names_geometry_checkpoints_and_engines() {
    let img = device("info", 2);
    let l = layout(&img);
    let info = &l.meta;
    assert_eq!((l.slot_bytes, l.block), (64 << 10, 4096));
    assert_eq!(info["device_id"].as_str().unwrap().len(), 32);
    assert_eq!(info["superblock"], "primary");
    // Two puts, a checkpoint after each: sequences 1 (A) and 2 (B), B the newest.
    let cps = info["checkpoints"].as_array().unwrap();
    assert_eq!((cps[0]["sequence"].as_u64(), cps[0]["entries"].as_u64()), (Some(1), Some(1)));
    assert_eq!((cps[1]["sequence"].as_u64(), cps[1]["entries"].as_u64()), (Some(2), Some(2)));
    assert_eq!(info["newest_checkpoint"], "B");
    let engines = info["engines"].as_array().unwrap();
    assert_eq!(engines.iter().map(|e| e["engine"].as_str().unwrap()).collect::<Vec<_>>(), ["posix", "io_uring", "uring_cmd"]);
    assert_eq!(engines[0]["available"], true);
    for e in engines {
        assert!(e["available"] == true || !e["why"].as_str().unwrap().is_empty(), "{e}");
    }
    let t = text(&expect(&["info"], &img, 0));
    assert!(t.contains("checkpoint B: sequence 2, 2 entries") && t.contains("(newest)"), "{t}");
    assert!(t.contains(&format!("{} x 64 KiB", l.slot_count)), "{t}");
}

#[test]
fn check_passes_a_clean_device_quietly() {
    let img = device("clean", 3);
    let o = expect(&["check", "--deep"], &img, 0);
    // stderr is a pipe here: no progress bar.
    assert!(o.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let t = text(&o);
    assert!(t.contains("3 checked: 3 match their slot headers") && t.contains("values: 3 verified, 0 corrupt"), "{t}");
    assert!(t.ends_with("no damage found\n"), "{t}");
    let j = json(&expect(&["check", "--json", "--deep"], &img, 0));
    assert_eq!(j["clean"], true);
    assert_eq!(j["slots"]["valid"], 3);
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn check_finds_a_corrupt_slot_header() {
    let img = device("header", 3);
    let l = layout(&img);
    let slots = used_slots(&img, &l);
    assert_eq!(slots.len(), 3);
    let victim = slots[1];
    flip(&img, l.data_base + victim * l.slot_bytes + 70); // inside the key: the header CRC fails
    let o = expect(&["check"], &img, 1);
    let t = text(&o);
    assert!(t.contains(&format!("slot {victim}: its header fails its CRC")), "{t}");
    assert!(t.contains("1 corrupt") && t.contains("DAMAGE: 1 problem"), "{t}");
    let j = json(&expect(&["check", "--json"], &img, 1));
    assert_eq!((j["clean"].as_bool(), j["slots"]["corrupt"].as_u64(), j["entries"]["damaged"].as_u64()), (Some(false), Some(1), Some(1)));
    assert_eq!(j["problems"][0]["slot"], victim);
}

#[test]
fn check_deep_finds_a_corrupt_value_that_the_quick_check_cannot() {
    let img = device("payload", 3);
    let l = layout(&img);
    let victim = used_slots(&img, &l)[0];
    flip(&img, l.data_base + victim * l.slot_bytes + l.header_bytes + 10);
    let quick = expect(&["check"], &img, 0);
    assert!(text(&quick).contains("no damage found"));
    let t = text(&expect(&["check", "--deep"], &img, 1));
    assert!(t.contains(&format!("slot {victim}: the value of key-")) && t.contains("fails its CRC"), "{t}");
    assert!(t.contains("values: 2 verified, 1 corrupt"), "{t}");
    // get refuses the damaged value rather than print wrong bytes.
    let key = t.split("the value of ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let o = expect(&["get", &key], &img, 3);
    assert!(o.stdout.is_empty(), "get printed bytes of a corrupt value");
    assert!(String::from_utf8_lossy(&o.stderr).to_lowercase().contains("corrupt"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn check_finds_a_torn_checkpoint_and_recover_dry_run_falls_back() {
    let img = device("checkpoint", 2);
    let l = layout(&img);
    let container_b = l.meta["geometry"]["container_b"].as_u64().unwrap();
    // The newest checkpoint (B, sequence 2): damage its payload, as a torn write would.
    flip(&img, container_b + l.block + 3);
    let before = digest(&img);
    let t = text(&expect(&["check"], &img, 1));
    assert!(t.contains("checkpoint B: DAMAGED: sequence 2, 2 entries, but its payload fails"), "{t}");
    assert!(t.contains("checkpoint A: sequence 1, 1 entry, ") && t.contains(" payload (newest)\ncheckpoint B"), "{t}");
    let info = json(&expect(&["info", "--json"], &img, 0));
    assert_eq!(info["newest_checkpoint"], "A");
    assert_eq!(info["checkpoints"][1]["state"], "damaged");
    // AUTO: the newest commit record does not verify, so no fast recovery (the journal may
    // have dropped what the older checkpoint needs): sequence 1 validated entry by entry.
    let r = json(&expect(&["recover", "--dry-run", "--json"], &img, 0));
    assert_eq!((r["from"].as_str(), r["checkpoint_sequence"].as_u64(), r["indexed"].as_u64()), (Some("checkpoint"), Some(1), Some(1)));
    // Full validation of sequence 1 (key-0 only) with the free slots read: key-1, put after it, is an orphan.
    let r = json(&expect(&["recover", "--dry-run", "--json", "--mode", "checkpoint"], &img, 0));
    assert_eq!((r["from"].as_str(), r["checkpoint_sequence"].as_u64(), r["indexed"].as_u64()), (Some("checkpoint"), Some(1), Some(1)));
    assert_eq!(r["orphans"], 1);
    let t = text(&expect(&["recover", "--dry-run"], &img, 0));
    assert!(t.starts_with("dry run: nothing was written\nwould recover from checkpoint sequence 1"), "{t}");
    assert!(before == digest(&img), "check, info or recover --dry-run wrote to the image");
    // Without --dry-run, recover refuses (usage).
    expect(&["recover"], &img, 2);
    // The commit record itself damaged: named as such.
    flip(&img, container_b + 30);
    let t = text(&expect(&["check"], &img, 1));
    assert!(t.contains("checkpoint B: DAMAGED: its commit record fails its CRC"), "{t}");
}

#[test]
fn check_tells_a_misdirected_write_from_an_earlier_formats_leftover() {
    let img = device("foreign", 2);
    let l = layout(&img);
    let slots = used_slots(&img, &l);
    let free = (0..l.slot_count).find(|s| !slots.contains(s)).unwrap();
    // Slot 0's header written into a free slot: this device's header, the wrong slot.
    let header = read_at(&img, l.data_base + slots[0] * l.slot_bytes, l.header_bytes as usize);
    write_at(&img, l.data_base + free * l.slot_bytes, &header);
    let t = text(&expect(&["check"], &img, 1));
    assert!(t.contains(&format!("slot {free}: it holds the header of slot {} (a misdirected write)", slots[0])), "{t}");
    // Formatting again gives a new device id: the old headers are leftovers, not damage.
    write_at(&img, l.data_base + free * l.slot_bytes, &vec![0u8; l.header_bytes as usize]);
    let o = expect(&["format", "--capacity", "16M", "--slot-bytes", "64K"], &img, 3);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"), "{}", String::from_utf8_lossy(&o.stderr));
    expect(&["format", "--capacity", "16M", "--slot-bytes", "64K", "--force"], &img, 0);
    let j = json(&expect(&["check", "--json"], &img, 0));
    assert_eq!(j["slots"]["earlier_format"], 2, "{j}");
    assert_eq!(j["slots"]["valid"], 0);
}

#[test]
fn bad_usage_and_missing_devices_have_their_own_statuses() {
    let img = scratch("usage");
    let o = expect(&["check"], &img, 3);
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("rawblock check: "), "{}", String::from_utf8_lossy(&o.stderr));
    expect(&["check", "--no-such-flag"], &img, 2);
    let o = Command::new(env!("CARGO_BIN_EXE_rawblock")).arg("--help").output().unwrap();
    let help = text(&o);
    for cmd in ["format", "info", "check", "ls", "get", "put", "rm", "stats", "recover"] {
        assert!(help.contains(&format!("  {cmd} ")), "--help lacks {cmd}: {help}");
    }
}

/// rawblock(1) cannot drift from the tool: every subcommand and every long option its --help
/// shows is in docs/man/rawblock.1.md.
#[test]
fn the_man_page_names_every_command_and_option() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man/rawblock.1.md")).unwrap();
    let help = |args: &[&str]| text(&Command::new(env!("CARGO_BIN_EXE_rawblock")).args(args).arg("--help").output().unwrap());
    for cmd in ["format", "info", "check", "ls", "get", "put", "rm", "stats", "recover"] {
        assert!(page.contains(&format!("- **{cmd}**")), "rawblock.1.md does not describe {cmd}");
        for word in help(&[cmd]).split_whitespace() {
            let opt = word.trim_end_matches(',').split('=').next().unwrap();
            if opt.starts_with("--") && opt.len() > 2 && !["--help", "--version"].contains(&opt) {
                assert!(page.contains(opt), "rawblock.1.md does not mention {cmd}'s {opt}");
            }
        }
    }
}

/// On a terminal, check draws a progress bar on stderr (and clears it); with --json, never.
/// Without a terminal it draws nothing (check_passes_a_clean_device_quietly).
#[test]
fn check_draws_a_progress_bar_only_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED check_draws_a_progress_bar_only_on_a_terminal: no script(1) (util-linux) to give it a terminal");
        return;
    }
    let img = device("tty", 1);
    let slots = layout(&img).slot_count;
    let on_tty = |extra: &str| {
        let cmd = format!("{} check {} {extra}", env!("CARGO_BIN_EXE_rawblock"), img.display());
        let o = Command::new("script").args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
        text(&o)
    };
    let t = on_tty("--deep");
    assert!(t.contains(&format!("{slots}/{slots} slots")), "no progress bar on a terminal: {t:?}");
    assert!(t.contains("no damage found"), "{t}");
    let t = on_tty("--json");
    assert!(!t.contains(" slots (") && t.contains("\"clean\": true"), "a bar with --json: {t:?}");
}

#[test]
fn check_finds_a_damaged_superblock() {
    let img = device("superblock", 2);
    let l = layout(&img);
    // The primary damaged: the copy serves, and check says the primary needs attention.
    flip(&img, 40);
    let info = json(&expect(&["info", "--json"], &img, 0));
    assert_eq!(info["superblock"], "copy");
    assert_eq!(info["device_id"], l.meta["device_id"]);
    let t = text(&expect(&["check"], &img, 1));
    assert!(t.contains("superblock: copy (the primary is damaged)") && t.contains("the primary superblock is damaged; its copy was used"), "{t}");
    assert_eq!(expect(&["get", "key-1"], &img, 0).stdout, value(1), "the data stays readable through the copy");
    // Both gone: nothing can be read, and check says so as damage, not as a failure to run.
    flip(&img, l.block + 40);
    let o = expect(&["check"], &img, 1);
    assert!(text(&o).starts_with("DAMAGE: no usable rawblock superblock: "), "{}", text(&o));
    let j = json(&expect(&["check", "--json"], &img, 1));
    assert_eq!((j["clean"].as_bool(), j["problem_count"].as_u64()), (Some(false), Some(1)));
    expect(&["info"], &img, 3);
    // A device that is not there is not damage: the command could not run.
    expect(&["check"], &img.with_file_name("absent.img"), 3);
}

/// A header whose CRC holds but whose value length exceeds a slot (bytes crafted, or a bug
/// in an earlier version): --deep reports it rather than reading past the slot.
#[test]
fn check_deep_reports_a_header_claiming_more_than_a_slot() {
    use rawblock::format::{Generation, SlotHeader, SlotIndex};
    let img = device("oversized", 1);
    let l = layout(&img);
    let id_hex = l.meta["device_id"].as_str().unwrap();
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&id_hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let slot = (0..l.slot_count).find(|s| !used_slots(&img, &l).contains(s)).unwrap();
    let mut block = vec![0u8; l.header_bytes as usize];
    SlotHeader { device_id: id, slot: SlotIndex(slot), generation: Generation(1), payload_len: l.slot_bytes * 4, payload_crc: 0, key: b"huge" }
        .encode(&mut block);
    write_at(&img, l.data_base + slot * l.slot_bytes, &block);
    expect(&["check"], &img, 0); // the header itself is well formed
    let t = text(&expect(&["check", "--deep"], &img, 1));
    assert!(t.contains(&format!("slot {slot}: its header claims a {}-byte value, more than a slot holds", l.slot_bytes * 4)), "{t}");
}
