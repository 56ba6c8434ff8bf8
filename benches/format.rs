//! Encode/decode costs of the on-device records.
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rawblock::format::checkpoint::{decode_payload, encode_payload, CheckpointEntry};
use rawblock::format::{Generation, SlotHeader, SlotIndex};

const ID: [u8; 16] = *b"bench-device-id!";
const KEY: &[u8] = b"vllm@meta-llama/Llama-3.1-8B@1@0@9e3779b97f4a7c150000000000000001";

fn slot_header(c: &mut Criterion) {
    let h = SlotHeader { device_id: ID, slot: SlotIndex(42), generation: Generation(1 << 60), payload_len: 1 << 19, payload_crc: 7, key: KEY };
    let mut block = vec![0u8; 4096];
    c.bench_function("slot_header/encode", |b| b.iter(|| black_box(&h).encode(black_box(&mut block))));
    h.encode(&mut block);
    c.bench_function("slot_header/classify", |b| b.iter(|| SlotHeader::classify(black_box(&block), &ID, SlotIndex(42))));
}

fn checkpoint(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..100_000u64).map(|i| format!("vllm@model@1@0@{i:032x}").into_bytes()).collect();
    let entries: Vec<CheckpointEntry<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| CheckpointEntry { key: k, slot: SlotIndex(i as u64), generation: Generation(i as u64), payload_len: 4096, payload_crc: 1 })
        .collect();
    let len: u64 = entries.iter().map(|e| e.encoded_len()).sum();
    let mut buf = vec![0u8; len as usize];
    let mut g = c.benchmark_group("checkpoint_100k");
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("encode", |b| b.iter(|| encode_payload(entries.iter().copied(), black_box(&mut buf))));
    encode_payload(entries.iter().copied(), &mut buf);
    g.bench_function("decode", |b| b.iter(|| decode_payload(black_box(&buf), 100_000).unwrap().len()));
    g.finish();
}

criterion_group!(benches, slot_header, checkpoint);
criterion_main!(benches);
