// The shared library's SONAME carries the ABI version (RB_ABI_VERSION in src/ffi/mod.rs),
// so programs linked against ABI 1 refuse to load an incompatible librawblock.
const ABI_VERSION: u32 = 1;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librawblock.so.{ABI_VERSION}");
    println!("cargo:rustc-env=RAWBLOCK_SONAME_ABI={ABI_VERSION}");
    println!("cargo:rerun-if-changed=build.rs");
}
