//! Policies written as inline WAT core modules and wrapped into components here, for the
//! cases a Rust guest cannot express: bytes that are not UTF-8, wrong worlds, missing
//! exports, unexpected imports, non-components.

use retryguard::policy::{Decision, EvalError, LoadError, LoadOptions, PolicyLimits};
use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

use crate::common::*;

/// Wraps a core module (WAT) into a component of `world`, resolved from the contract in
/// `wit/` plus `extra_wit` (packages of its own).
fn component(core_wat: &str, extra_wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit"))
        .expect("the contract parses");
    let main = if extra_wit.is_empty() {
        resolve
            .packages
            .iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>()
    } else {
        vec![
            resolve
                .push_str("extra.wit", extra_wit)
                .expect("extra wit parses"),
        ]
    };
    let world = resolve
        .select_world(&main, Some(world))
        .expect("world exists");
    let mut module = wat::parse_str(core_wat).expect("valid WAT");
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).expect("embed");
    ComponentEncoder::default()
        .module(&module)
        .and_then(|e| e.validate(true).encode())
        .expect("encodes")
}

/// A core module implementing the contract with static answers. `$classify_body` decides
/// what `classify` returns: a pointer to a classification record in memory.
/// Memory map: 256 zeros (describe, validate-params), 512 a valid classification
/// (`temporary_error`), 544 one whose failure type is not UTF-8, 600 zeros (decision:
/// retry at 0), 1024.. strings, 4096.. the bump allocator.
fn contract_module(classify_body: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 4096))
  (data (i32.const 512) "\00\04\00\00\0f\00\00\00\01\00\00\00\00\00\00\00\00\00\00\00")
  (data (i32.const 544) "\20\04\00\00\02\00\00\00\01\00\00\00\00\00\00\00\00\00\00\00")
  (data (i32.const 1024) "temporary_error")
  (data (i32.const 1056) "\ff\fe")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
               (i32.sub (i32.const 0) (local.get 2))))
    (global.set $next (i32.add (local.get $ptr) (local.get 3)))
    (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (i32.sub (global.get $next)
        (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1))))))
    (local.get $ptr))
  (func (export "describe") (result i32) (i32.const 256))
  (func (export "validate-params") (param i32 i32) (result i32) (i32.const 256))
  (func (export "classify") (param $args i32) (result i32) {classify_body})
  (func (export "decide") (param i32) (result i32) (i32.const 600))
)"#
    )
}

/// `attempts` sits at byte 72 of the failure record (7 strings, then two u64s).
const GARBAGE_WHEN_ATTEMPTS_IS_99: &str = "(if (result i32) (i32.eq (i32.load offset=72 (local.get $args)) (i32.const 99)) (then (i32.const 544)) (else (i32.const 512)))";

#[test]
fn a_wat_policy_that_follows_the_contract_works() {
    let bytes = component(&contract_module("(i32.const 512)"), "", "retry-policy");
    let policy = engine()
        .load(&bytes, &LoadOptions::default())
        .expect("loads");
    assert!(policy.imports().is_empty());
    let eval = engine()
        .evaluate(&policy, &failure("t", ""), &vec![], NOON_MS)
        .expect("evaluates");
    assert_eq!(eval.classification.failure_type, "temporary_error");
    assert_eq!(eval.decision, Decision::RetryAt { at_ms: 0 });
}

#[test]
fn invalid_utf8_output_is_malformed_and_the_next_evaluation_works() {
    let bytes = component(
        &contract_module(GARBAGE_WHEN_ATTEMPTS_IS_99),
        "",
        "retry-policy",
    );
    let policy = engine()
        .load(&bytes, &LoadOptions::default())
        .expect("loads");
    let mut bad = failure("t", "");
    bad.attempts = 99;
    let err = engine()
        .evaluate(&policy, &bad, &vec![], NOON_MS)
        .unwrap_err();
    assert!(
        matches!(&err, EvalError::MalformedOutput(msg) if msg.contains("utf-8")),
        "{err:?}"
    );
    let ok = engine().evaluate(&policy, &failure("t", ""), &vec![], NOON_MS);
    assert_eq!(
        ok.expect("good input").classification.failure_type,
        "temporary_error"
    );
}

#[test]
fn a_policy_that_always_loops_fails_its_smoke_test() {
    let bytes = component(
        &contract_module("(loop br 0) (i32.const 512)"),
        "",
        "retry-policy",
    );
    let err = engine().load(&bytes, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::SmokeFailed {
                source: EvalError::OutOfFuel { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_component_of_another_world_is_refused() {
    let wit = "package test:other; world other { export classify: func(n: u32) -> u32; }";
    let module = r#"(module (func (export "classify") (param i32) (result i32) (local.get 0)))"#;
    let err = engine()
        .load(&component(module, wit, "other"), &LoadOptions::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err:?}");
}

#[test]
fn a_component_missing_an_export_is_refused() {
    // Only `describe` of the contract's four exports.
    let partial = r#"package test:partial;
world partial {
  record param-spec { name: string, default-value: string, description: string }
  record policy-info { name: string, version: string, description: string, params: list<param-spec> }
  export describe: func() -> policy-info;
}"#;
    let module = r#"(module (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096))
      (func (export "describe") (result i32) (i32.const 256)))"#;
    let err = engine()
        .load(
            &component(module, partial, "partial"),
            &LoadOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::WrongWorld(msg) if msg.contains("no export")),
        "{err:?}"
    );
}

const WASI_IMPORTER: &str = r#"package test:wasi-user;
world wasi-user {
  import wasi:cli/environment@0.2.0;
}
package wasi:cli@0.2.0 {
  interface environment { get-arguments: func() -> list<string>; }
}"#;

#[test]
fn wasi_imports_are_refused_unless_allowed() {
    let module = r#"(module
      (import "wasi:cli/environment@0.2.0" "get-arguments" (func (param i32)))
      (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))"#;
    let bytes = component(module, WASI_IMPORTER, "wasi-user");
    let err = engine().load(&bytes, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LoadError::WasiNotAllowed(names) if names == &["wasi:cli/environment@0.2.0"]),
        "{err:?}"
    );
}

#[test]
fn allowed_wasi_is_linked_then_the_exports_are_checked() {
    let module = r#"(module
      (import "wasi:cli/environment@0.2.0" "get-arguments" (func (param i32)))
      (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 4096)))"#;
    let bytes = component(module, WASI_IMPORTER, "wasi-user");
    let options = LoadOptions {
        allow_wasi: true,
        ..LoadOptions::default()
    };
    // The deny-all WASI provides wasi:cli/environment; what fails is the missing exports.
    let err = engine().load(&bytes, &options).unwrap_err();
    assert!(matches!(&err, LoadError::WrongWorld(_)), "{err:?}");
}

#[test]
fn wasi_interfaces_the_deny_all_wasi_lacks_are_refused_by_name() {
    let wit = r#"package test:http-user;
world http-user {
  import wasi:http/outgoing-handler@0.2.0;
}
package wasi:http@0.2.0 {
  interface outgoing-handler { handle: func(); }
}"#;
    let module = r#"(module (import "wasi:http/outgoing-handler@0.2.0" "handle" (func)))"#;
    let options = LoadOptions {
        allow_wasi: true,
        ..LoadOptions::default()
    };
    let err = engine()
        .load(&component(module, wit, "http-user"), &options)
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::UnsupportedImports(names)
            if names.iter().any(|n| n.contains("wasi:http/outgoing-handler@0.2.0"))),
        "{err:?}"
    );
}

#[test]
fn other_imports_are_refused() {
    let wit = r#"package test:importer;
interface host { poke: func(); }
world importer { import host; }"#;
    let module = r#"(module (import "test:importer/host" "poke" (func)))"#;
    let err = engine()
        .load(&component(module, wit, "importer"), &LoadOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::UnsupportedImports(names) if names == &["test:importer/host"]),
        "{err:?}"
    );
}

#[test]
fn a_core_module_is_not_a_component() {
    let module = wat::parse_str("(module)").expect("valid WAT");
    let err = engine().load(&module, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, LoadError::NotAComponent(msg) if msg.contains("core")),
        "{err:?}"
    );
}

#[test]
fn garbage_is_not_a_component() {
    let err = engine()
        .load(b"definitely not wasm", &LoadOptions::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err:?}");
}

#[test]
fn a_truncated_component_does_not_compile() {
    let bytes = component(&contract_module("(i32.const 512)"), "", "retry-policy");
    let err = engine()
        .load(&bytes[..bytes.len() / 2], &LoadOptions::default())
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile(_)), "{err:?}");
}

#[test]
fn instance_cap_is_enforced() {
    // The contract policy plus a second, idle core instance appended to the component.
    let bytes = component(&contract_module("(i32.const 512)"), "", "retry-policy");
    let text = wasmprinter::print_bytes(&bytes).expect("prints");
    let end = text.rfind(')').expect("closing paren");
    let two = format!(
        "{}(core module $idle) (core instance (instantiate $idle)))",
        &text[..end]
    );
    let bytes = wat::parse_str(&two).expect("valid component text");
    let loads = |instances| {
        let limits = PolicyLimits {
            instances,
            ..PolicyLimits::default()
        };
        engine().load(
            &bytes,
            &LoadOptions {
                limits,
                allow_wasi: false,
            },
        )
    };
    assert!(loads(2).is_ok(), "two core instances fit a cap of 2");
    let err = loads(1).unwrap_err();
    assert!(
        matches!(&err, LoadError::SmokeFailed { source: EvalError::Instantiate(msg), .. } if msg.contains("instance")),
        "{err:?}"
    );
}
