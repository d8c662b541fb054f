//! Who may see the dashboard: whoever holds the API token, presented once through the login
//! form (which sets a session cookie) or on every request as `Authorization: Bearer TOKEN`.
//!
//! The cookie never holds the token: it holds `EXPIRY.NONCE.MAC`, the MAC an HMAC-SHA256 under
//! the token of the expiry and a random nonce. A session therefore survives a manager restart
//! and dies when the token is rotated, and the manager keeps no session table. Each session's
//! CSRF token is another HMAC of its nonce, so forms carry it and actions check it in constant
//! time. A logout revokes its nonce in memory (a restarted manager forgets the revocation, but
//! the expiry still bounds the session).

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{constant_time_eq, Secret};

/// The session cookie's name.
pub const COOKIE: &str = "batchgrid_session";
/// How long a login lasts.
const SESSION_SECONDS: i64 = 12 * 3600;
/// Revoked sessions kept before the oldest are forgotten (they also expire).
const MAX_REVOKED: usize = 10_000;

/// Issues and checks sessions and CSRF tokens under the API token.
pub struct Sessions {
    token: Secret,
    revoked: Mutex<HashSet<String>>,
}

/// A checked session (or a bearer caller, which has none).
#[derive(Debug, Clone)]
pub enum Caller {
    /// Logged in through the form: forms need the session's CSRF token.
    Session {
        /// The session's nonce.
        nonce: String,
        /// Its CSRF token.
        csrf: String,
    },
    /// Sent the bearer header: a browser never adds it on its own, so no CSRF token is needed.
    Bearer,
}

impl Caller {
    /// The CSRF token forms must carry ("" for a bearer caller, which needs none).
    pub fn csrf(&self) -> &str {
        match self {
            Caller::Session { csrf, .. } => csrf,
            Caller::Bearer => "",
        }
    }
}

impl Sessions {
    /// Sessions under `token`.
    pub fn new(token: Secret) -> Self {
        Self { token, revoked: Mutex::new(HashSet::new()) }
    }

    fn mac(&self, purpose: &str, value: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length, so this cannot fail; a fresh key per call is cheap.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.token.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(purpose.as_bytes());
        mac.update(b"|");
        mac.update(value.as_bytes());
        mac
    }

    fn hex_mac(&self, purpose: &str, value: &str) -> String {
        hex(&self.mac(purpose, value).finalize().into_bytes())
    }

    /// Whether `presented` is the API token (constant time).
    pub fn is_token(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.token.expose().as_bytes())
    }

    /// A new session's cookie value, valid from `now` (Unix seconds).
    pub fn issue(&self, now: i64) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)?;
        let body = format!("{}.{}", now + SESSION_SECONDS, hex(&nonce));
        Ok(format!("{body}.{}", self.hex_mac("session", &body)))
    }

    /// The session a cookie value stands for, if it is genuine, unexpired and not revoked.
    pub fn check(&self, cookie: &str, now: i64) -> Option<Caller> {
        let (body, mac) = cookie.rsplit_once('.')?;
        let (expiry, nonce) = body.split_once('.')?;
        let mac = unhex(mac)?;
        self.mac("session", body).verify_slice(&mac).ok()?;
        if expiry.parse::<i64>().ok()? <= now || self.revoked.lock().ok()?.contains(nonce) {
            return None;
        }
        Some(Caller::Session { nonce: nonce.to_owned(), csrf: self.hex_mac("csrf", nonce) })
    }

    /// Whether `presented` is `caller`'s CSRF token (constant time); a bearer caller needs none.
    pub fn csrf_ok(&self, caller: &Caller, presented: Option<&str>) -> bool {
        match caller {
            Caller::Bearer => true,
            Caller::Session { csrf, .. } => presented.is_some_and(|p| constant_time_eq(p.as_bytes(), csrf.as_bytes())),
        }
    }

    /// Ends a session: its cookie no longer opens anything in this process.
    pub fn revoke(&self, caller: &Caller) {
        if let (Caller::Session { nonce, .. }, Ok(mut revoked)) = (caller, self.revoked.lock()) {
            if revoked.len() >= MAX_REVOKED {
                revoked.clear();
            }
            revoked.insert(nonce.clone());
        }
    }

    /// The caller of a request: the bearer header, or else the session cookie.
    pub fn caller(&self, headers: &HeaderMap, now: i64) -> Option<Caller> {
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return self.is_token(token).then_some(Caller::Bearer);
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE)
            .find_map(|(_, value)| self.check(value, now))
    }
}

/// A fresh random token (64 hex digits), for a run that was given none.
pub fn random_token() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Secret::new(hex(&bytes)))
}

/// The `Set-Cookie` value for a session (HttpOnly: no script reads it; SameSite=Strict: no
/// other site's page sends it).
pub fn set_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Secret::new("the-token".to_owned()))
    }

    #[test]
    fn a_session_checks_until_it_expires_or_is_revoked() {
        let sessions = sessions();
        let cookie = sessions.issue(1_000).expect("random");
        assert!(!cookie.contains("the-token"));
        let caller = sessions.check(&cookie, 1_001).expect("valid");
        assert!(sessions.check(&cookie, 1_000 + SESSION_SECONDS).is_none(), "expired");
        sessions.revoke(&caller);
        assert!(sessions.check(&cookie, 1_001).is_none(), "revoked");
    }

    #[test]
    fn a_forged_or_foreign_cookie_is_refused() {
        let sessions = sessions();
        let cookie = sessions.issue(1_000).expect("random");
        let (body, _) = cookie.rsplit_once('.').expect("mac");
        let longer = body.replacen(&(1_000 + SESSION_SECONDS).to_string(), "99999999999", 1);
        assert!(sessions.check(&format!("{longer}.00"), 1_001).is_none());
        let other = Sessions::new(Secret::new("another-token".to_owned()));
        assert!(other.check(&cookie, 1_001).is_none(), "a rotated token ends every session");
        assert!(sessions.check("garbage", 1_001).is_none());
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let sessions = sessions();
        let a = sessions.check(&sessions.issue(1_000).expect("random"), 1_001).expect("a");
        let b = sessions.check(&sessions.issue(1_000).expect("random"), 1_001).expect("b");
        assert!(sessions.csrf_ok(&a, Some(a.csrf())));
        assert!(!sessions.csrf_ok(&a, Some(b.csrf())));
        assert!(!sessions.csrf_ok(&a, None));
        assert!(sessions.csrf_ok(&Caller::Bearer, None));
    }
}
