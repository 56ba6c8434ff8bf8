#![no_main]
// The body lives in rawblock::fuzzing so cargo test replays the corpus without libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rawblock::fuzzing::checkpoint(data));
