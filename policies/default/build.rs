//! Gives the wasm guest a 64 KiB shadow stack instead of Rust's 1 MiB default, so a fresh
//! instance per evaluation maps and zeroes far less memory. Native builds (tests, the host's
//! benchmarks) are left alone.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=32768");
    }
}
