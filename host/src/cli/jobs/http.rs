//! A small HTTP/1.1 client for the retryguard API over `std::net::TcpStream`: one request per
//! connection (`Connection: close`), bounded in time and size, plain `http://` only.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// Connecting to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Any one read or write: longer than the server's default 60 s request timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadUrl(String),
    #[error("cannot reach {server}: {detail}")]
    Unreachable { server: String, detail: String },
    #[error("bad answer from {server}: {detail}")]
    BadResponse { server: String, detail: String },
}

/// A server's base URL: `http://host[:port][/prefix]`.
#[derive(Debug, Clone)]
pub struct Server {
    shown: String,
    host: String,
    port: u16,
    prefix: String,
    /// Sent as `Authorization: Bearer …` when set.
    token: Option<String>,
}

impl Server {
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let url = url.trim();
        let rest = if let Some(rest) = strip_prefix_ci(url, "http://") {
            rest
        } else if strip_prefix_ci(url, "https://").is_some() {
            return Err(HttpError::BadUrl(format!(
                "{url}: https is not supported; retryguard serve listens on plain http on a \
                 loopback address (use http://…, or put a TLS proxy in front of it)"
            )));
        } else {
            return Err(HttpError::BadUrl(format!(
                "{url:?} is not an http:// URL (e.g. http://127.0.0.1:8000)"
            )));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty()
            || authority.contains('@')
            || authority.chars().any(char::is_control)
        {
            return Err(HttpError::BadUrl(format!(
                "{url:?}: expected http://host[:port]"
            )));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| HttpError::BadUrl(format!("{url:?}: unclosed [")))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| HttpError::BadUrl(format!("{url:?}: bad port {p:?}")))?,
        };
        if host.is_empty() {
            return Err(HttpError::BadUrl(format!("{url:?}: no host")));
        }
        let prefix = path.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(Self {
            shown: url.trim_end_matches('/').to_string(),
            host,
            port,
            prefix,
            token: None,
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
        let unreachable = |detail: String| HttpError::Unreachable {
            server: self.shown.clone(),
            detail,
        };
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = format!("{} resolves to no address", self.host);
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let mut stream = stream.ok_or_else(|| unreachable(last))?;
        let io = |e: std::io::Error| unreachable(e.to_string());
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let host_header = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let (content_type, payload) = match body {
            Some((content_type, bytes)) => (format!("Content-Type: {content_type}\r\n"), bytes),
            None => (String::new(), &[][..]),
        };
        let request = format!(
            "{method} {}{path_and_query} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: \
             retryguard/{}\r\nAccept: application/json\r\n{auth}{content_type}Content-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.prefix,
            env!("CARGO_PKG_VERSION"),
            payload.len(),
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        stream.write_all(payload).map_err(io)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| HttpError::BadResponse {
                server: self.shown.clone(),
                detail: format!("reading the answer: {e}"),
            })?;
        if raw.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(HttpError::BadResponse {
                server: self.shown.clone(),
                detail: format!("the answer is over {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        parse_response(&raw).map_err(|detail| HttpError::BadResponse {
            server: self.shown.clone(),
            detail,
        })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits a whole HTTP/1.1 response into its status and body (de-chunked).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no complete header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "not an HTTP/1.x answer: {:?}",
            truncate(status_line, 80)
        ));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("bad status line {:?}", truncate(status_line, 80)))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or_else(|| format!("the answer ended after {} of {n} body bytes", body.len()))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {:?}", truncate(size_text, 20)))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("the answer ended inside a chunk")?;
        out.extend_from_slice(chunk);
        data = data
            .get(size + 2..)
            .ok_or("the answer ended after a chunk")?;
    }
}

/// `s` cut to at most `max` characters, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
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
    fn parses_urls_and_refuses_https() {
        let s = Server::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("127.0.0.1", 8000, "")
        );
        let s = Server::parse("HTTP://[::1]:9/rg/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("::1", 9, "/rg")
        );
        assert_eq!(Server::parse("http://localhost").unwrap().port, 80);
        let e = Server::parse("https://x").unwrap_err().to_string();
        assert!(e.contains("https is not supported"), "{e}");
        for bad in [
            "",
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u@h",
            "http://[::1",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"{}".as_slice()));
        let (s, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (404, b"abcd".as_slice()));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nff\r\nab",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encodes_and_truncates() {
        assert_eq!(encode("a b&c=é*"), "a%20b%26c%3D%C3%A9%2A");
        assert_eq!(truncate("héllo", 3), "hé…");
        assert_eq!(truncate("hé", 3), "hé");
    }
}
