//! TLS for everything that speaks it: one crypto provider (rustls with `ring`) for the whole
//! binary, and the PEM files an operator points at (CA bundles, certificates, keys).
//!
//! Redis over `rediss://` (`crate::redis_link`), `serve` over HTTPS and the CLI's HTTP client
//! all load their files here, so a bad path or a file that holds no certificate reads the
//! same everywhere: the setting, the path, and what was wrong.

use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs `ring` as the process's rustls crypto provider. Call once at start, before any
/// TLS is used; calling it again is harmless.
///
/// rustls 0.23.48 deprecates `ring`'s provider because it has no post-quantum key exchange
/// (X25519MLKEM768); aws-lc-rs has one but takes several times longer to build on the 2-core
/// machines this project is built on. The classical key exchanges stay secure today:
/// docs/operations.md says what switching would take.
#[allow(deprecated, reason = "ring on purpose, as said above")]
pub fn install_crypto_provider() {
    // Err only when a provider is already installed: ours, from an earlier call.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A file that could not be used, named by the setting it came from.
#[derive(Debug, thiserror::Error)]
#[error("{setting} = {path:?}: {what}")]
pub struct PemError {
    pub setting: &'static str,
    pub path: String,
    pub what: String,
}

/// Reads a file whole, as raw bytes (PEM is ASCII; the redis crate takes bytes).
pub fn read_pem(setting: &'static str, path: &str) -> Result<Vec<u8>, PemError> {
    std::fs::read(Path::new(path)).map_err(|e| PemError {
        setting,
        path: path.to_owned(),
        what: format!("cannot read it: {e}"),
    })
}

/// Every certificate of a PEM file; an error when it holds none.
pub fn load_certs(
    setting: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read_pem(setting, path)?;
    let bad = |what: String| PemError {
        setting,
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(setting: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read_pem(setting, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PemError {
        setting,
        path: path.to_owned(),
        what: format!("holds no usable private key: {e}"),
    })
}

/// The system's root certificates, plus the CA file's when one is given: the trust anchors
/// of a client (the CLI; Redis builds its own from the same files).
pub fn root_store(
    ca_file: Option<(&'static str, &str)>,
) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        // A CA file replaces the system roots: a private CA is trusted for exactly what the
        // operator named.
        Some((setting, path)) => {
            for cert in load_certs(setting, path)? {
                roots.add(cert).map_err(|e| PemError {
                    setting,
                    path: path.to_owned(),
                    what: format!("a certificate is not a usable CA: {e}"),
                })?;
            }
        }
        None => {
            // Unreadable entries of the system store are skipped, as every client does.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}
