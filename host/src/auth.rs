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

/// The configured tokens: a table swapped whole when the configuration is read again
/// (`Auth::replace`, on SIGHUP or a change of the config file), so a removed token fails on
/// the very next request. Whether tokens are required at all is fixed at start: a server
/// started without tokens listens on loopback only and stays open there, and one started
/// with tokens never opens up, even when a reload leaves none (then every request is 401).
#[derive(Debug, Default)]
pub struct Auth {
    enabled: bool,
    tokens: std::sync::RwLock<std::sync::Arc<Vec<Token>>>,
}

/// What [`Auth::replace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// The table changed: the names added and removed (a changed role or digest counts as
    /// removed and added).
    Changed {
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// The same tokens as before.
    Unchanged,
    /// Not applied: the server runs without tokens (loopback only), and adding some needs a
    /// restart.
    NeedsRestart,
}

impl Auth {
    /// From `[auth] tokens` (already validated by the config).
    pub fn from_config(entries: &[String]) -> Self {
        let tokens = parse_all(entries);
        Self {
            enabled: !tokens.is_empty(),
            tokens: std::sync::RwLock::new(std::sync::Arc::new(tokens)),
        }
    }

    /// Whether requests must carry a token (fixed at start).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The current table.
    fn current(&self) -> std::sync::Arc<Vec<Token>> {
        match self.tokens.read() {
            Ok(t) => std::sync::Arc::clone(&t),
            Err(poisoned) => std::sync::Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in the tokens of `entries` (already validated by the config). Requests after
    /// this call see the new table; a request being served keeps its actor.
    pub fn replace(&self, entries: &[String]) -> Replaced {
        let new = parse_all(entries);
        if !self.enabled {
            return if new.is_empty() {
                Replaced::Unchanged
            } else {
                Replaced::NeedsRestart
            };
        }
        let old = self.current();
        let removed: Vec<String> = old
            .iter()
            .filter(|t| !new.contains(t))
            .map(|t| t.name.clone())
            .collect();
        let added: Vec<String> = new
            .iter()
            .filter(|t| !old.contains(t))
            .map(|t| t.name.clone())
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Replaced::Unchanged;
        }
        let new = std::sync::Arc::new(new);
        match self.tokens.write() {
            Ok(mut t) => *t = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Replaced::Changed { added, removed }
    }

    /// How many tokens the table holds now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether the table holds no token now.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The token named `name` (a dashboard session names its token; its role is read here
    /// on every request, so a token removed from the config ends its sessions).
    pub fn by_name(&self, name: &str) -> Option<Token> {
        self.current().iter().find(|t| t.name == name).cloned()
    }

    /// The token whose digest matches `presented`'s. Every configured digest is compared,
    /// each in constant time, so the time taken says nothing about which bytes matched.
    pub fn find(&self, presented: &str) -> Option<Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in self.current().iter() {
            if constant_time_eq(&t.sha256, &digest) && found.is_none() {
                found = Some(t.clone());
            }
        }
        found
    }
}

fn parse_all(entries: &[String]) -> Vec<Token> {
    entries
        .iter()
        .filter_map(|e| Token::parse(e).ok())
        .collect()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `n` random bytes from the kernel, as hex (session ids, CSRF tokens).
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// A new random token (32 bytes from the OS, hex) and its config entry.
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

    #[test]
    fn a_replaced_table_applies_at_once_and_never_opens_the_server() {
        let (alice, alice_entry) = new_token("alice", Role::Read).unwrap();
        let (bob, bob_entry) = new_token("bob", Role::Admin).unwrap();
        let auth = Auth::from_config(&[alice_entry.clone(), bob_entry.clone()]);
        assert_eq!(
            auth.replace(&[alice_entry.clone(), bob_entry.clone()]),
            Replaced::Unchanged
        );
        assert_eq!(
            auth.replace(std::slice::from_ref(&alice_entry)),
            Replaced::Changed {
                added: vec![],
                removed: vec!["bob".into()]
            }
        );
        assert!(auth.find(&bob).is_none() && auth.by_name("bob").is_none());
        assert_eq!(auth.find(&alice).unwrap().name, "alice");
        // A rotated digest under the same name: the old token stops working.
        let (alice2, alice2_entry) = new_token("alice", Role::Read).unwrap();
        assert!(matches!(
            auth.replace(std::slice::from_ref(&alice2_entry)),
            Replaced::Changed { .. }
        ));
        assert!(auth.find(&alice).is_none());
        assert!(auth.find(&alice2).is_some());
        // No token left: still enabled, so every request is refused.
        assert!(matches!(auth.replace(&[]), Replaced::Changed { .. }));
        assert!(auth.enabled() && auth.is_empty() && auth.find(&alice2).is_none());
        // A server started without tokens stays so until a restart.
        let open = Auth::from_config(&[]);
        assert_eq!(open.replace(&[alice_entry]), Replaced::NeedsRestart);
        assert!(!open.enabled() && open.is_empty());
    }
}
