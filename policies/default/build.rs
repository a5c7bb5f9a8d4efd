//! Gives the wasm guest a 16 KiB shadow stack instead of Rust's 1 MiB default, so a fresh
//! instance per evaluation maps and zeroes far less memory: with the static data (~22 KiB) and
//! the heap's start (`src/alloc.rs`), the module's initial memory is a single 64 KiB page. The
//! deepest call chain uses under 1 KiB of it; an overflow would trap (the stack lies below
//! the data, at the bottom of memory), not corrupt anything. Native builds (tests, the host's
//! benchmarks) are left alone.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=16384");
    }
}
