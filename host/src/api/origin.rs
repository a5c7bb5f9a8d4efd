//! Refuses what a web page could make an operator's browser send (cross-site request forgery)
//! and what a DNS-rebinding name could read, in every mode, tokens or not.
//!
//! - **`Host`** must name this server: an address it listens on (the listen IP, any IP when
//!   it listens on `0.0.0.0`/`::`, `localhost` when it listens on loopback) or a name in
//!   `[server] allowed_hosts`. A rebinding attack reaches a loopback server under the
//!   attacker's own DNS name, which is none of these. (`*` in `allowed_hosts` turns this
//!   check off; the config accepts it only with tokens.)
//! - **A state-changing request** (anything but GET, HEAD, OPTIONS) whose `Origin` is another
//!   origin than the `Host` it was sent to (or an allowed host), or `null`, is refused; without
//!   `Origin`, a `Sec-Fetch-Site` other than `same-origin` or `none` is refused.
//!
//! Tools that send none of these headers (curl, the CLI, job code) are not affected: browsers
//! always send `Host`, and `Origin` or `Sec-Fetch-Site` with every cross-site POST.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Which `Host` names this server answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// The configured listen address (`None`: unparsable, so only `allowed` names pass).
    listen: Option<SocketAddr>,
    /// `[server] allowed_hosts`, lower-case, without a trailing dot.
    allowed: Vec<String>,
    /// `*` is among them: any `Host` passes.
    any: bool,
    /// `[server] public_url`'s origin (`https://name[:port]`), when a proxy is in front.
    public_origin: Option<String>,
}

impl HostPolicy {
    pub fn new(listen: &str, allowed_hosts: &[String]) -> Self {
        let allowed: Vec<String> = allowed_hosts.iter().map(|h| normalize(h)).collect();
        Self {
            listen: listen.parse().ok(),
            any: allowed.iter().any(|h| h == "*"),
            allowed,
            public_origin: None,
        }
    }

    /// The same policy, also answering to `origin` (`[server] public_url`): its host passes
    /// as `Host`, and a request with `Origin: <origin>` counts as same-origin.
    pub fn with_public_origin(mut self, origin: Option<String>) -> Self {
        if let Some(o) = &origin
            && let Some(name) = o.split_once("://").and_then(|(_, a)| host_name(a))
        {
            self.allowed.push(name);
        }
        self.public_origin = origin;
        self
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) names this server.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(name) = host_name(host) else {
            return false;
        };
        if self.allowed.contains(&name) {
            return true;
        }
        let Some(listen) = self.listen else {
            return false;
        };
        let listen_ip = listen.ip();
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An IP literal is no DNS name, so nothing can rebind it.
            return listen_ip.is_unspecified()
                || ip == listen_ip
                || (ip.is_loopback() && listen_ip.is_loopback());
        }
        name == "localhost" && (listen_ip.is_loopback() || listen_ip.is_unspecified())
    }

    /// Whether `origin`'s host is a name the operator listed (a proxy may rewrite `Host`).
    fn allows_origin_host(&self, origin_authority: &str) -> bool {
        host_name(origin_authority).is_some_and(|name| self.allowed.contains(&name))
    }
}

/// Lower-case, without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of `name[:port]` or `[v6][:port]`, normalized; `None` when malformed.
fn host_name(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let name = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        &authority[..=end]
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => authority,
        }
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    ok.then(|| normalize(name))
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Why a request is refused, if it is.
pub fn check(policy: &HostPolicy, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).map(|v| v.to_str().unwrap_or(""));
    if let Some(host) = host
        && !policy.allows(host)
    {
        return Err(ApiError::HostNotAllowed(format!(
            "Host {host:?} is not an address this server listens on: to reach it under that \
             name, add the name to [server] allowed_hosts (RETRYGUARD_SERVER_ALLOWED_HOSTS)"
        )));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null").trim();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let same = authority.is_some_and(|authority| {
            host.is_some_and(|host| authority.eq_ignore_ascii_case(host.trim()))
                || policy.allows_origin_host(authority)
        }) || policy
            .public_origin
            .as_deref()
            .is_some_and(|o| o.eq_ignore_ascii_case(origin));
        if same {
            return Ok(());
        }
        return Err(ApiError::CrossSite(format!(
            "a {method} from a page of origin {origin:?} is refused: only this server's own \
             origin (or a host in [server] allowed_hosts) may change state"
        )));
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(ApiError::CrossSite(format!(
                "a {method} sent by a browser from another site (Sec-Fetch-Site: {site}) is \
                 refused"
            )));
        }
    }
    Ok(())
}

/// The middleware around every route.
pub async fn same_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check(&state.hosts, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            tracing::warn!(error = %e, "request refused");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn hosts_on_loopback() {
        let p = HostPolicy::new("127.0.0.1:8000", &[]);
        for ok in [
            "127.0.0.1:8000",
            "127.0.0.1",
            "localhost:8000",
            "LOCALHOST",
            "[::1]:8000",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8000",
            "127.0.0.1.nip.io:8000",
            "10.0.0.1:8000",
            "",
            "localhost:80:80",
            "a b",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        let p = HostPolicy::new("127.0.0.1:8000", &["RetryGuard.corp.".into()]);
        assert!(p.allows("retryguard.corp:443"));
        assert!(!p.allows("other.corp"));
    }

    #[test]
    fn hosts_on_every_interface() {
        let p = HostPolicy::new("0.0.0.0:8000", &["rg.internal".into()]);
        assert!(p.allows("10.1.2.3:8000"));
        assert!(p.allows("localhost"));
        assert!(p.allows("rg.internal"));
        assert!(!p.allows("attacker.example"));
        let any = HostPolicy::new("0.0.0.0:8000", &["*".into()]);
        assert!(any.allows("attacker.example"));
    }

    #[test]
    fn state_changes_from_other_sites_are_refused() {
        let p = HostPolicy::new("127.0.0.1:8000", &["rg.corp".into()]);
        let post = Method::POST;
        type Case<'a> = (&'a [(&'static str, &'static str)], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (&[("host", "127.0.0.1:8000")], None),
            (&[], None),
            (
                &[
                    ("host", "127.0.0.1:8000"),
                    ("origin", "http://127.0.0.1:8000"),
                ],
                None,
            ),
            (
                &[("host", "127.0.0.1:8000"), ("origin", "https://rg.corp")],
                None,
            ),
            (
                &[
                    ("host", "127.0.0.1:8000"),
                    ("origin", "http://evil.example"),
                ],
                Some("cross_site"),
            ),
            (
                &[
                    ("host", "127.0.0.1:8000"),
                    ("origin", "http://127.0.0.1:3000"),
                ],
                Some("cross_site"),
            ),
            (
                &[("host", "127.0.0.1:8000"), ("origin", "null")],
                Some("cross_site"),
            ),
            (
                &[("host", "127.0.0.1:8000"), ("sec-fetch-site", "cross-site")],
                Some("cross_site"),
            ),
            (
                &[("host", "127.0.0.1:8000"), ("sec-fetch-site", "same-site")],
                Some("cross_site"),
            ),
            (
                &[
                    ("host", "127.0.0.1:8000"),
                    ("sec-fetch-site", "same-origin"),
                ],
                None,
            ),
            (
                &[("host", "127.0.0.1:8000"), ("sec-fetch-site", "none")],
                None,
            ),
            (
                &[("host", "rebind.evil.example:8000")],
                Some("host_not_allowed"),
            ),
        ];
        for (pairs, want) in cases {
            let got = check(&p, &post, &headers(pairs)).err().map(|e| e.code());
            assert_eq!(got, *want, "{pairs:?}");
        }
        // A GET may come from anywhere the Host allows (a link), but never a rebound name.
        let get = headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://evil.example"),
        ]);
        assert!(check(&p, &Method::GET, &get).is_ok());
        let rebound = headers(&[("host", "evil.example:8000")]);
        assert_eq!(
            check(&p, &Method::GET, &rebound).unwrap_err().code(),
            "host_not_allowed"
        );
    }
}
