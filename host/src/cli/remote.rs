//! The flags of every command that calls a running `retryguard serve` over its HTTP API
//! (`jobs`, `breakers`, `auto-retry`, `policy`'s registry commands, `audit`): where the server
//! is, how to trust it, the token, and `--json`.

use std::process::ExitCode;

use clap::Args;

use super::jobs::Client;
use super::jobs::http::{HttpError, Server};

/// Where the server is and how to print: the flags of every command that calls a running
/// `retryguard serve` (`jobs`, `breakers`, `auto-retry`).
#[derive(Debug, Args)]
pub struct Remote {
    /// The retryguard server: http:// or https:// (default http://127.0.0.1:8000).
    /// `RETRYGUARD_URL`, the Python client's old name, is read (with a warning) when
    /// `RETRYGUARD_SERVER` is not set.
    #[arg(long, global = true, env = "RETRYGUARD_SERVER", value_name = "URL")]
    server: Option<String>,
    /// The CA certificate(s) (PEM) to verify an https:// server with, instead of the system
    /// roots.
    #[arg(long, global = true, env = "RETRYGUARD_CA_FILE", value_name = "PATH")]
    ca_file: Option<String>,
    /// Print the API's JSON as is.
    #[arg(long, global = true)]
    json: bool,
    /// The bearer token, when the server has `[auth] tokens` (prefer the variable: a flag
    /// shows in `ps`).
    #[arg(long, global = true, env = "RETRYGUARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The server when neither `--server` nor `RETRYGUARD_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8000";

impl Remote {
    /// The client, or exit code 2 (bad usage) after saying why the URL is refused.
    pub(crate) fn client(&self) -> Result<Client, ExitCode> {
        let url = match &self.server {
            Some(url) => url.clone(),
            None => match std::env::var("RETRYGUARD_URL") {
                Ok(url) if !url.trim().is_empty() => {
                    eprintln!(
                        "warning: RETRYGUARD_URL is the old name of RETRYGUARD_SERVER: set \
                         RETRYGUARD_SERVER instead (using {url:?})"
                    );
                    url
                }
                _ => DEFAULT_SERVER.to_string(),
            },
        };
        match Server::new(&url, self.ca_file.as_deref()) {
            Ok(s) => Ok(Client {
                server: s.with_token(self.token.clone()),
                json: self.json,
            }),
            Err(e) => {
                match e {
                    HttpError::BadUrl(_) => eprintln!("error: --server {e}"),
                    _ => eprintln!("error: {e}"),
                }
                Err(ExitCode::from(2))
            }
        }
    }

    /// Whether `--json` was given.
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}
