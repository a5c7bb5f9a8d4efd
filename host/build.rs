//! Builds the built-in default policy from source and embeds it as a WebAssembly component.
//!
//! `policies/` is a cargo workspace of its own. This script runs `cargo build --release
//! --locked --target wasm32-unknown-unknown` on its pure policies (the default and payments
//! ones are written with the guest SDK, `policies/sdk`, a dependency they build), in a fixed
//! target directory of its own (`target/wasm-policies`: sharing the outer one would deadlock
//! on cargo's lock), then wraps each core module into a component with `wit-component`. It
//! also builds the WASI probe fixture for wasm32-wasip2, whose linker emits a component
//! directly. The results land in `OUT_DIR`: `src/policy/builtin.rs` includes the default
//! policy, the tests the hostile and WASI probe fixtures and the payments example, so a fresh
//! clone needs no committed `.wasm`. (The Python example, policies/python, needs
//! componentize-py and is built by its own script, not here.)
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// Pure policies: no WASI at all.
const TARGET: &str = "wasm32-unknown-unknown";
const PURE_PACKAGES: [&str; 2] = ["retryguard-policy-default", "retryguard-policy-hostile"];
/// The payments example links the default policy as a library, without its component exports
/// (`default-features = false`): built by a cargo invocation of its own, since one building
/// the default policy too would unify the features and link both sets of exports into it.
const PAYMENTS_PACKAGE: &str = "retryguard-policy-payments";
/// The WASI probe fixture, for the deny-all WASI tests.
const WASI_TARGET: &str = "wasm32-wasip2";
const WASI_PACKAGE: &str = "retryguard-policy-wasi-probe";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    let policies = root.join("policies");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());

    // Watch what the inner build reads, never a folder it writes (or every build reruns).
    for path in [
        "wit",
        "policies/Cargo.toml",
        "policies/Cargo.lock",
        "policies/default/Cargo.toml",
        "policies/default/build.rs",
        "policies/default/src",
        "policies/hostile/Cargo.toml",
        "policies/hostile/src",
        "policies/payments/Cargo.toml",
        "policies/payments/build.rs",
        "policies/payments/src",
        // The guest SDK the default and payments policies are written with.
        "policies/sdk/Cargo.toml",
        "policies/sdk/src",
        "policies/wasi-probe/Cargo.toml",
        "policies/wasi-probe/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    check_wasm_target(TARGET);
    check_wasm_target(WASI_TARGET);

    let target_dir = root.join("target").join("wasm-policies");
    build_policies(&policies, &target_dir, TARGET, &PURE_PACKAGES);
    build_policies(&policies, &target_dir, TARGET, &[PAYMENTS_PACKAGE]);
    build_policies(&policies, &target_dir, WASI_TARGET, &[WASI_PACKAGE]);

    // The default policy ships in the binary; the hostile one is a fixture for the tests, the
    // payments one an example they check.
    for (crate_file, component_file) in [
        ("retryguard_policy_default.wasm", "default_policy.wasm"),
        ("retryguard_policy_hostile.wasm", "hostile_policy.wasm"),
        ("retryguard_policy_payments.wasm", "payments_policy.wasm"),
    ] {
        let module_path = target_dir.join(TARGET).join("release").join(crate_file);
        let dest = out_dir.join(component_file);
        if let Err(e) = fs::write(&dest, wrap_component(&module_path)) {
            fail(&format!("could not write {}: {e}", dest.display()));
        }
    }

    // Already a component (wasm-component-ld made it): copied as is, after a check.
    let probe = target_dir
        .join(WASI_TARGET)
        .join("release")
        .join("retryguard_policy_wasi_probe.wasm");
    let bytes = fs::read(&probe)
        .unwrap_or_else(|e| fail(&format!("could not read {}: {e}", probe.display())));
    if bytes.get(..8) != Some(b"\0asm\x0d\0\x01\0".as_slice()) {
        fail(&format!("{} is not a component", probe.display()));
    }
    let dest = out_dir.join("wasi_probe_policy.wasm");
    if let Err(e) = fs::write(&dest, bytes) {
        fail(&format!("could not write {}: {e}", dest.display()));
    }
}

/// Runs `cargo build --release --locked --target <target>` on `packages` of `policies/`.
fn build_policies(policies: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(policies)
        .args(["build", "--release", "--locked", "--target", target])
        .arg("--target-dir")
        .arg(target_dir)
        // Empty, not removed: otherwise the host's flags leak into the wasm build.
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("RUSTFLAGS")
        // Under `cargo clippy` these would lint the policies inside this build script;
        // the policies are linted on their own (see .ci/run).
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    for package in packages {
        cmd.args(["-p", package]);
    }
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building {} for {target} failed ({status})",
            packages.join(", ")
        )),
        Err(e) => fail(&format!("could not run cargo to build policies/: {e}")),
    }
}

/// Fails in one clear line when a wasm target is missing, instead of a long error buried
/// in the inner build's output.
fn check_wasm_target(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot
        && !sysroot.join("lib/rustlib").join(target).is_dir()
    {
        fail(&format!(
            "the {target} target is not installed: run `rustup target add {target}`"
        ));
    }
}

fn wrap_component(module_path: &Path) -> Vec<u8> {
    let module = fs::read(module_path)
        .unwrap_or_else(|e| fail(&format!("could not read {}: {e}", module_path.display())));
    let encoded = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|encoder| encoder.validate(true).encode());
    encoded.unwrap_or_else(|e| fail(&format!("could not wrap {}: {e:#}", module_path.display())))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1)
}
