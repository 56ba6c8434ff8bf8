//! Recovery of a small fixture per engine. The fixture is written once under
//! target/ and opened read-only for every iteration; O_DIRECT as in production.
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rawblock::engine::{EngineChoice, EngineConfig};
use rawblock::format::GeometryRequest;
use rawblock::store::RecoverOptions;
use rawblock::store::{FormatOptions, OpenMode};
use rawblock::{OpenOptions, Store};

const ENTRIES: u64 = 4096;

fn fixture() -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/criterion-fixture.img"));
    let ready = std::fs::metadata(&path).is_ok()
        && Store::open(&path, &OpenOptions { mode: OpenMode::ReadOnly, ..Default::default() })
            .and_then(|s| s.recover(&RecoverOptions::default()))
            .is_ok_and(|r| r.indexed == ENTRIES);
    if !ready {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let opts = OpenOptions {
            mode: OpenMode::Create(FormatOptions {
                capacity_bytes: (ENTRIES + 64) * (256 << 10),
                geometry: GeometryRequest { slot_bytes: 256 << 10, ..Default::default() },
                overwrite: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = Store::open(&path, &opts).unwrap();
        for i in 0..ENTRIES {
            s.put(format!("vllm@model@1@0@{i:032x}").as_bytes(), &[7u8; 64]).unwrap();
        }
        s.checkpoint().unwrap();
    }
    path
}

fn recovery(c: &mut Criterion) {
    let path = fixture();
    let mut g = c.benchmark_group("recover_4096");
    g.throughput(Throughput::Elements(ENTRIES));
    g.sample_size(10);
    let engines = [
        ("posix_serial", EngineChoice::Posix, 1),
        ("posix_pool_8", EngineChoice::Posix, 8),
        ("io_uring_qd128", EngineChoice::IoUring, 1),
    ];
    for (name, choice, threads) in engines {
        let opts = OpenOptions {
            mode: OpenMode::ReadOnly,
            engine: EngineConfig::new(choice, threads, 128),
            ..Default::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = Store::open(&path, &opts).unwrap();
                let r = s.recover(&RecoverOptions::default()).unwrap();
                assert_eq!(r.indexed, ENTRIES);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
