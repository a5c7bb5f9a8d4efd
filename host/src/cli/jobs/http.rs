//! The CLI's HTTP client for the retryguard API: ureq over rustls (the process's ring
//! provider, `crate::tls`), `http://` or `https://`, verified against the system roots or a CA
//! file (`--ca-file`, `RETRYGUARD_CA_FILE`), through the proxy the standard variables name
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`), bounded in time and size. An HTTP
//! error status is an answer, not a failure: the caller prints the API's `code: message`.

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// Connecting to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request: longer than the server's default 60 s request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadUrl(String),
    #[error("--ca-file {0}")]
    BadCaFile(String),
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// The TLS handshake failed: the server answers, but is not trusted (or not TLS).
    #[error("cannot reach {server}: {detail}")]
    Tls { server: String, detail: String },
    #[error("bad answer from {server}: {detail}")]
    BadResponse { server: String, detail: String },
}

/// A server's base URL, `http(s)://host[:port][/prefix]`, with the agent that calls it.
#[derive(Debug, Clone)]
pub struct Server {
    shown: String,
    /// `scheme://authority/prefix`, no trailing `/`: paths are appended to it.
    base: String,
    /// Sent as `Authorization: Bearer …` when set.
    token: Option<String>,
    /// `--ca-file` as given, for messages.
    ca_file: Option<String>,
    agent: ureq::Agent,
}

impl Server {
    /// A server URL, checked, and the agent that calls it: an `https://` server is verified
    /// against the CA certificates of `ca_file` (PEM) when given, else the system roots.
    pub fn new(url: &str, ca_file: Option<&str>) -> Result<Self, HttpError> {
        let url = url.trim();
        let (https, rest) = if let Some(rest) = strip_prefix_ci(url, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ci(url, "https://") {
            (true, rest)
        } else {
            return Err(HttpError::BadUrl(format!(
                "{url:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:8000)"
            )));
        };
        let scheme = if https { "https" } else { "http" };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty()
            || authority.contains('@')
            || authority
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(HttpError::BadUrl(format!(
                "{url:?}: expected {scheme}://host[:port]"
            )));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| HttpError::BadUrl(format!("{url:?}: unclosed [")))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if let Some(p) = port
            && p.parse::<u16>().ok().filter(|p| *p != 0).is_none()
        {
            return Err(HttpError::BadUrl(format!("{url:?}: bad port {p:?}")));
        }
        if host.is_empty() {
            return Err(HttpError::BadUrl(format!("{url:?}: no host")));
        }
        let prefix = path.trim_end_matches('/');
        if prefix.contains(['?', '#']) || prefix.chars().any(|c| c.is_control() || c == ' ') {
            return Err(HttpError::BadUrl(format!(
                "{url:?}: a server URL has no query, fragment or space"
            )));
        }
        let base = if prefix.is_empty() {
            format!("{scheme}://{authority}")
        } else {
            format!("{scheme}://{authority}/{prefix}")
        };
        let ca_file = ca_file.map(str::trim).filter(|p| !p.is_empty());
        let roots = match ca_file {
            Some(path) => ca_roots(path)?,
            // The system's store is read only when it can be used.
            None if https => system_roots(),
            None => RootCerts::Specific(Arc::new(Vec::new())),
        };
        Ok(Self {
            shown: url.trim_end_matches('/').to_string(),
            base,
            token: None,
            ca_file: ca_file.map(str::to_owned),
            agent: agent(roots),
        })
    }

    /// The same server, with a bearer token on every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Sends `method path_and_query` with `body` (content type, bytes) if any; returns the
    /// status and the body.
    pub fn request_with(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let uri = format!("{}{path_and_query}", self.base);
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let (content_type, payload) = body.unwrap_or(("", &[]));
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        let request = request
            .body(payload.to_vec())
            .map_err(|e| HttpError::BadUrl(format!("{uri:?}: {e}")))?;
        let response = self
            .agent
            .run(request)
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .into_with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => HttpError::BadResponse {
                    server: self.shown.clone(),
                    detail: format!("the answer is over {MAX_RESPONSE_BYTES} bytes"),
                },
                e => HttpError::BadResponse {
                    server: self.shown.clone(),
                    detail: format!("reading the answer: {e}"),
                },
            })?;
        Ok((status, bytes))
    }

    /// What went wrong before an answer, said for an operator: a certificate problem names
    /// `--ca-file`.
    fn transport_error(&self, e: ureq::Error) -> HttpError {
        let server = self.shown.clone();
        let tls = match &e {
            ureq::Error::Rustls(tls) => Some(tls.to_string()),
            ureq::Error::Tls(what) => Some((*what).to_string()),
            ureq::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(ToString::to_string),
            _ => None,
        };
        let detail = match (tls, &e) {
            (Some(tls), _) => {
                let against = match &self.ca_file {
                    Some(path) => format!("the CA of --ca-file {path:?}"),
                    None => "the system roots; for a private CA give --ca-file PATH or \
                             RETRYGUARD_CA_FILE"
                        .to_string(),
                };
                return HttpError::Tls {
                    server,
                    detail: format!("TLS: {tls} (the certificate was checked against {against})"),
                };
            }
            (None, ureq::Error::Timeout(what)) => format!("timed out ({what})"),
            (None, ureq::Error::HostNotFound) => "the host name does not resolve".to_string(),
            (None, ureq::Error::Protocol(p)) => {
                return HttpError::BadResponse {
                    server,
                    detail: format!("not an HTTP answer: {p}"),
                };
            }
            (None, other) => other.to_string(),
        };
        HttpError::Unreachable { server, detail }
    }
}

/// The CA certificates of a PEM file, as ureq takes them.
fn ca_roots(path: &str) -> Result<RootCerts, HttpError> {
    let certs = crate::tls::load_certs("--ca-file", path)
        .map_err(|e| HttpError::BadCaFile(format!("{path:?}: {}", e.what)))?;
    let certs: Vec<Certificate<'static>> = certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(RootCerts::Specific(Arc::new(certs)))
}

/// The system's root certificates (rustls-native-certs), as ureq takes them.
fn system_roots() -> RootCerts {
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> = found
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    RootCerts::Specific(Arc::new(certs))
}

/// The agent: rustls with the process's provider, the roots given, the proxy of the
/// environment, timeouts, and HTTP error statuses returned as answers.
fn agent(roots: RootCerts) -> ureq::Agent {
    crate::tls::install_crypto_provider();
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots);
    if let Some(provider) = rustls::crypto::CryptoProvider::get_default() {
        tls = tls.unversioned_rustls_crypto_provider(Arc::clone(provider));
    }
    ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(REQUEST_TIMEOUT))
        .max_redirects(0)
        .user_agent(format!("retryguard/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_https_urls() {
        let s = Server::new("http://127.0.0.1:8000/", None).unwrap();
        assert_eq!(s.base, "http://127.0.0.1:8000");
        let s = Server::new("HTTPS://[::1]:9/rg/", None).unwrap();
        assert_eq!(s.base, "https://[::1]:9/rg");
        assert_eq!(
            Server::new("https://retryguard.example.com", None)
                .unwrap()
                .shown(),
            "https://retryguard.example.com"
        );
        for bad in [
            "",
            "ftp://x",
            "http://",
            "https://",
            "http://h:0",
            "http://h:99999",
            "http://u@h",
            "http://[::1",
            "http://h/p?x=1",
            "http://h p",
        ] {
            assert!(Server::new(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let url = "https://127.0.0.1:1";
        let e = Server::new(url, Some(&path.display().to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--ca-file") && e.contains("no certificate"),
            "{e}"
        );
        let e = Server::new(url, Some("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn encodes() {
        assert_eq!(encode("a b&c=é*"), "a%20b%26c%3D%C3%A9%2A");
    }
}
