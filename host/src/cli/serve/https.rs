//! `serve` over HTTPS (`[tls] cert_file`, `key_file`): rustls with the process's crypto
//! provider (`crate::tls`), a listener that hands axum handshaken streams, and a certificate
//! that can be swapped while connections go on.
//!
//! - **Handshakes run beside accepting.** Each accepted connection's handshake is its own
//!   task, bounded by [`HANDSHAKE_TIMEOUT`]; a silent or slow client never stalls the accept
//!   loop, and a failed handshake (a client that does not trust the certificate, plain HTTP
//!   on the TLS port, a port scan) is logged at debug and dropped. At most
//!   [`MAX_HANDSHAKES`] run at once; more connections wait in the kernel's backlog.
//! - **The certificate reloads** ([`CertResolver::reload`], called on SIGHUP and when the
//!   files change, `super::reload`): new handshakes get the new certificate, connections
//!   already made keep theirs. A reload that fails keeps the certificate in use.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// The certificate `serve` presents, swappable while it runs.
#[derive(Debug)]
pub struct CertResolver {
    cert_file: String,
    key_file: String,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// Loads `[tls]`'s certificate and key; the error names the setting, the file and what
    /// is wrong with it.
    pub fn load(config: &TlsConfig) -> Result<Self, String> {
        let (cert_file, key_file) = (config.cert_file.trim(), config.key_file.trim());
        let key = certified_key(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// The two files, for the reloader to watch.
    pub fn files(&self) -> [&str; 2] {
        [&self.cert_file, &self.key_file]
    }

    /// Reads the files again and swaps the certificate in; on an error the one in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = Arc::new(certified_key(&self.cert_file, &self.key_file)?);
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The rustls server configuration over this resolver: HTTP/1.1 (what `serve` speaks),
    /// no client certificates.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        let provider = provider()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The process's crypto provider (`crate::tls::install_crypto_provider`, at start).
fn provider() -> Result<Arc<rustls::crypto::CryptoProvider>, String> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| "tls: no crypto provider is installed".to_string())
}

/// The certificate chain of `cert_file` with the key of `key_file`, checked to belong together.
fn certified_key(cert_file: &str, key_file: &str) -> Result<CertifiedKey, String> {
    let certs = crate::tls::load_certs("tls.cert_file", cert_file).map_err(|e| e.to_string())?;
    let key = crate::tls::load_key("tls.key_file", key_file).map_err(|e| e.to_string())?;
    let provider = provider()?;
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "tls.key_file = {key_file:?} is not the key of the certificate in tls.cert_file = \
             {cert_file:?}"
        ),
        e => format!("tls.key_file = {key_file:?}: not a usable private key: {e}"),
    })?;
    Ok(certified)
}

/// A TCP listener whose `accept` yields connections with their TLS handshake done.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out after {HANDSHAKE_TIMEOUT:?}");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Cancel-safe: axum drops this future at shutdown. `accept` and `join_next` lose
        // nothing when dropped, and a handshake goes on in its task.
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(e) => accept_error(e).await,
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own listener: a connection's own error is skipped; anything else (out of file
/// descriptors) is logged and waited out for a second.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
