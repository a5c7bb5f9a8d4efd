//! The one place the WIT contract becomes Rust: everything else imports from here.
//!
//! The generated types carry wasmtime's derive impls, so nothing outside `policy/` uses them
//! directly: `types.rs` converts between them and the host's own types.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "retry-policy",
});
