//! Bearer tokens with roles (`read` < `operate` < `admin`): what a configured token is, how a
//! presented one is matched, and how a new one is made. The config parses tokens with this
//! module; the API's middleware (`api::auth`) applies them to requests.
//!
//! A leaf: it uses nothing else of the crate.

use sha2::{Digest as _, Sha256};

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET endpoints.
    Read,
    /// Retries, operations, the idempotency guard.
    Operate,
    /// Policies, bindings, deleting guard keys.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "operate" => Some(Self::Operate),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

impl Token {
    /// Parses `name:role:sha256hex`; the error says what is wrong (never echoing the digest).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.trim().splitn(3, ':');
        let (Some(name), Some(role), Some(digest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("a token is `name:role:sha256` (see `retryguard auth new-token`)".into());
        };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !valid_name {
            return Err(format!(
                "token name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ - @ (it becomes the audit actor)"
            ));
        }
        let role = Role::parse(role).ok_or_else(|| {
            format!("token {name}: role {role:?} is not one of read, operate, admin")
        })?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(digest, &mut sha256).map_err(|_| {
            format!("token {name}: the third part must be the token's sha256 as 64 hex digits")
        })?;
        Ok(Self {
            name: name.to_string(),
            role,
            sha256,
        })
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Token>,
}

impl Auth {
    /// From `[auth] tokens` (already validated by the config).
    pub fn from_config(entries: &[String]) -> Self {
        Self {
            tokens: entries
                .iter()
                .filter_map(|e| Token::parse(e).ok())
                .collect(),
        }
    }

    /// Whether requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The token whose digest matches `presented`'s. Every configured digest is compared,
    /// each in constant time, so the time taken says nothing about which bytes matched.
    /// The token named `name` (a dashboard session names its token; its role is read here
    /// on every request, so a token removed from the config ends its sessions).
    pub fn by_name(&self, name: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| t.name == name)
    }

    pub fn find(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.sha256, &digest) && found.is_none() {
                found = Some(t);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A new random token (32 bytes from the OS, hex) and its config entry.
/// `n` random bytes from the kernel, as hex (session ids, CSRF tokens).
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

pub fn new_token(name: &str, role: Role) -> std::io::Result<(String, String)> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = format!("rg_{}", hex::encode(bytes));
    let entry = format!(
        "{name}:{}:{}",
        role.as_str(),
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    Ok((token, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match_by_digest_only() {
        let (token, entry) = new_token("ops-alice", Role::Operate).unwrap();
        let auth = Auth::from_config(std::slice::from_ref(&entry));
        assert!(auth.enabled());
        let found = auth.find(&token).unwrap();
        assert_eq!(found.name, "ops-alice");
        assert_eq!(found.role, Role::Operate);
        assert!(auth.find("rg_wrong").is_none());
        assert!(
            !entry.contains(&token),
            "the config holds the digest, not the token"
        );
        for bad in ["x", "a:b", "bad name:read:00", "n:root:00", "n:read:zz"] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
    }
}
