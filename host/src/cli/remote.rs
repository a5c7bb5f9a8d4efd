//! The flags of every command that calls a running `retryguard serve` over its HTTP API
//! (`jobs`, `breakers`, `auto-retry`): where the server is, the token, and `--json`.

use std::process::ExitCode;

use clap::Args;

use super::jobs::Client;
use super::jobs::http::Server;

/// Where the server is and how to print: the flags of every command that calls a running
/// `retryguard serve` (`jobs`, `breakers`, `auto-retry`).
#[derive(Debug, Args)]
pub struct Remote {
    /// The retryguard server.
    #[arg(
        long,
        global = true,
        env = "RETRYGUARD_SERVER",
        default_value = "http://127.0.0.1:8000",
        value_name = "URL"
    )]
    server: String,
    /// Print the API's JSON as is.
    #[arg(long, global = true)]
    json: bool,
    /// The bearer token, when the server has `[auth] tokens` (prefer the variable: a flag
    /// shows in `ps`).
    #[arg(long, global = true, env = "RETRYGUARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Remote {
    /// The client, or exit code 2 (bad usage) after saying why the URL is refused.
    pub(crate) fn client(&self) -> Result<Client, ExitCode> {
        match Server::parse(&self.server) {
            Ok(s) => Ok(Client {
                server: s.with_token(self.token.clone()),
                json: self.json,
            }),
            Err(e) => {
                eprintln!("error: --server {e}");
                Err(ExitCode::from(2))
            }
        }
    }
}
