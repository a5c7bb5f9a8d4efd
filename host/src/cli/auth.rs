//! `retryguard auth new-token|hash-token`: make bearer tokens for `[auth] tokens`.

use std::io::Read as _;
use std::process::ExitCode;

use clap::Subcommand;
use sha2::{Digest as _, Sha256};

use crate::auth::{Role, new_token};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Make a random token; prints it once (give it to the caller) and the config entry to
    /// add to `[auth] tokens` (which holds only its sha256).
    NewToken {
        /// Who uses it: the actor in the audit trail (A-Z a-z 0-9 . _ - @, up to 64).
        #[arg(long)]
        name: String,
        /// read (GET endpoints), operate (retries, the guard) or admin (everything).
        #[arg(long, value_parser = ["read", "operate", "admin"])]
        role: String,
    },
    /// Print the sha256 of a token read from stdin (for a token you made yourself).
    HashToken,
}

impl AuthCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::NewToken { name, role } => {
                let role = Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role"))?;
                let (token, entry) = new_token(&name, role)?;
                crate::auth::Token::parse(&entry).map_err(|e| anyhow::anyhow!(e))?;
                println!("token (shown once; give it to {name}): {token}");
                println!("add to [auth] tokens in retryguard.toml:");
                println!("  \"{entry}\"");
                Ok(ExitCode::SUCCESS)
            }
            Self::HashToken => {
                let mut token = String::new();
                std::io::stdin().read_to_string(&mut token)?;
                let token = token.trim_end_matches(['\r', '\n']);
                if token.is_empty() {
                    anyhow::bail!("no token on stdin");
                }
                println!("{}", hex::encode(Sha256::digest(token.as_bytes())));
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
