//! Certificates for the TLS tests, made by the `openssl` command in a temp dir: a CA, and
//! leaves it signs (P-256 keys: quick to make). Files are `NAME.pem` (certificate) and
//! `NAME.key` (key) in [`Pki::path`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A temp dir of certificates; `ca.pem`/`ca.key` from the start.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A new dir with the CA `ca`.
    pub fn new() -> Self {
        let pki = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        pki.ca("ca");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Pki::path`] as a string, as settings take it.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// A self-signed CA `name`.
    pub fn ca(&self, name: &str) {
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=retryguard test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// A server certificate for 127.0.0.1 and localhost, signed by `ca`.
    pub fn server(&self, name: &str) {
        self.leaf(name, "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    }

    /// A certificate `name` signed by the CA `ca`, with one `extension` line
    /// (`subjectAltName=…`, `extendedKeyUsage=clientAuth`).
    pub fn leaf(&self, name: &str, ca: &str, extension: &str) {
        let dir = self.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=retryguard test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        std::fs::write(dir.join(format!("{name}.ext")), format!("{extension}\n")).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is on PATH");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
