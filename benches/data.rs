//! The data path: put and get of KV-cache-sized values (O_DIRECT, one slot each).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rawblock::format::GeometryRequest;
use rawblock::store::{FormatOptions, OpenMode};
use rawblock::{OpenOptions, Store};

fn data_path(c: &mut Criterion) {
    let path = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/criterion-data.img"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let opts = OpenOptions {
        mode: OpenMode::Create(FormatOptions {
            capacity_bytes: 512 << 20,
            geometry: GeometryRequest { slot_bytes: 2 << 20, ..Default::default() },
            overwrite: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = Store::open(&path, &opts).unwrap();
    let mut g = c.benchmark_group("data");
    g.sample_size(20);
    for size in [64 << 10, 1 << 20] {
        let value = vec![0x5Au8; size];
        let mut out = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("put", size), &size, |b, _| b.iter(|| s.put(b"key", &value).unwrap()));
        g.bench_with_input(BenchmarkId::new("get", size), &size, |b, _| b.iter(|| s.get(b"key", &mut out).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, data_path);
criterion_main!(benches);
