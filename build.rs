// The shared library's SONAME carries the ABI version, so programs linked against
// ABI N refuse to load an incompatible librawblock. The number has one home,
// src/ffi/abi.rs; this reads it from there.
fn main() {
    let src = std::fs::read_to_string("src/ffi/abi.rs").expect("src/ffi/abi.rs");
    let abi: u32 = src
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const RB_ABI_VERSION: u32 = ")?.strip_suffix(';')?.parse().ok())
        .expect("src/ffi/abi.rs defines `pub const RB_ABI_VERSION: u32 = N;`");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librawblock.so.{abi}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ffi/abi.rs");
}
