//! Signed HTTP push requests for jetq.
//!
//! When `jetq-push` delivers a task to an HTTP endpoint, it signs the request so the endpoint can
//! tell that it came from jetq, was not altered on the way, and is not a replay of an old request.
//! This crate is the scheme, shared by the dispatcher (which calls [`sign`]) and by Rust
//! endpoints (which call [`Verifier::verify`], or use the `VerifiedPush` axum extractor behind
//! the `axum` feature). `docs/PUSH-SIGNATURES.md` spells the scheme out for other languages;
//! the Python client has the same verification in `jetq.push`, and both are tested against the
//! shared vectors in `docs/push/signature-vectors.json`.
//!
//! # The scheme (`v1`)
//!
//! The dispatcher sets three headers:
//!
//! | header | value |
//! |---|---|
//! | [`TIMESTAMP_HEADER`] `Jetq-Timestamp` | Unix time of signing, in seconds, decimal |
//! | [`TASK_ID_HEADER`] `Jetq-Task-Id` | the task id |
//! | [`SIGNATURE_HEADER`] `Jetq-Signature` | `v1=<hex>` per signing key, comma separated (at most 2) |
//!
//! `<hex>` is the lowercase hex HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the bytes
//! `v1:` + timestamp + `:` + task id + `:` + the raw request body.
//!
//! A receiver accepts the request when the timestamp is within a tolerance of its clock
//! ([`DEFAULT_TOLERANCE`], 5 minutes, either direction) and one of its keys (one or two)
//! produces one of the `v1=` signatures; the comparison is constant time. Both sides read their
//! keys from `JETQ_PUSH_SIGNING_KEYS=key1[,key2]` ([`SigningKeys::from_env`]).
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use jetq_push_signature::{sign, SigningKeys, Verifier, VerifyError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = SigningKeys::new(["whsec_new", "whsec_old"])?;
//! let body = br#"{"to":"ada@example.com"}"#;
//! let now = SystemTime::now();
//! let timestamp = now.duration_since(UNIX_EPOCH)?.as_secs();
//!
//! // Sender (the dispatcher): one `v1=` entry per key.
//! let signature = sign(&keys, timestamp, "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S", body);
//!
//! // Receiver: knows only the old key, still accepts during the rotation.
//! let verifier = Verifier::new(SigningKeys::new(["whsec_old"])?);
//! let ts = timestamp.to_string();
//! verifier.verify(Some(&ts), Some("01JDQ5X1ZB8Y2K3M4N5P6Q7R8S"), Some(&signature), body, now)?;
//!
//! // A tampered body is refused.
//! let err = verifier
//!     .verify(Some(&ts), Some("01JDQ5X1ZB8Y2K3M4N5P6Q7R8S"), Some(&signature), b"{}", now)
//!     .unwrap_err();
//! assert_eq!(err, VerifyError::Mismatch);
//!
//! // So is a replay ten minutes later.
//! let later = now + Duration::from_secs(600);
//! let err = verifier
//!     .verify(Some(&ts), Some("01JDQ5X1ZB8Y2K3M4N5P6Q7R8S"), Some(&signature), body, later)
//!     .unwrap_err();
//! assert!(matches!(err, VerifyError::Stale { .. }));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "axum")]
pub use extract::{PushRejection, VerifiedPush};

/// Header carrying the signing time: Unix seconds, decimal (`Jetq-Timestamp: 1764240000`).
pub const TIMESTAMP_HEADER: &str = "Jetq-Timestamp";

/// Header carrying the id of the task the request runs (`Jetq-Task-Id`).
pub const TASK_ID_HEADER: &str = "Jetq-Task-Id";

/// Header carrying the signatures: `v1=<lowercase hex HMAC-SHA256>`, one entry per signing key,
/// comma separated (`Jetq-Signature: v1=…,v1=…`).
pub const SIGNATURE_HEADER: &str = "Jetq-Signature";

/// How far the timestamp may be from the receiver's clock, in either direction, by default:
/// 300 seconds.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The environment variable both sides read their keys from: `JETQ_PUSH_SIGNING_KEYS=key1[,key2]`.
pub const SIGNING_KEYS_ENV: &str = "JETQ_PUSH_SIGNING_KEYS";

/// The most keys a [`SigningKeys`] holds: the new key and the old one, during a rotation.
pub const MAX_KEYS: usize = 2;

/// The scheme tag: the prefix of the signed bytes and of each signature entry.
const VERSION: &str = "v1";

/// Length of a hex-encoded HMAC-SHA256.
const HEX_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// One or two HMAC keys: the dispatcher signs with each, a receiver accepts a match with any.
///
/// During a rotation the dispatcher holds `[new, old]` and receivers hold either key (or both),
/// so they can be switched one at a time; see `docs/PUSH-SIGNATURES.md`. A key is the secret's
/// UTF-8 bytes. The secrets are never shown: `Debug` prints only how many keys there are, and no
/// error message contains one.
#[derive(Clone)]
pub struct SigningKeys {
    /// HMAC state already keyed with each secret (the secrets themselves are not kept).
    macs: Vec<HmacSha256>,
}

impl SigningKeys {
    /// Keys from code: one or two non-empty secrets, the one to sign with first.
    ///
    /// ```
    /// use jetq_push_signature::{KeyError, SigningKeys};
    ///
    /// assert_eq!(SigningKeys::new(["new-secret", "old-secret"]).unwrap().len(), 2);
    /// assert_eq!(SigningKeys::new(Vec::<String>::new()).unwrap_err(), KeyError::NoKeys);
    /// assert_eq!(SigningKeys::new(["a", "b", "c"]).unwrap_err(), KeyError::TooMany { count: 3 });
    /// ```
    pub fn new(keys: impl IntoIterator<Item = impl Into<String>>) -> Result<Self, KeyError> {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyError::TooMany { count: keys.len() });
        }
        let mut macs = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            if key.is_empty() {
                return Err(KeyError::EmptyKey { index });
            }
            let mac = <HmacSha256 as Mac>::new_from_slice(key.as_bytes())
                .map_err(|_| KeyError::Unusable { index })?;
            macs.push(mac);
        }
        Ok(SigningKeys { macs })
    }

    /// Keys from `JETQ_PUSH_SIGNING_KEYS` (see [`SigningKeys::from_env_value`] for the format).
    ///
    /// Fails with [`KeyError::MissingEnv`] when the variable is unset (or not valid Unicode).
    pub fn from_env() -> Result<Self, KeyError> {
        match std::env::var(SIGNING_KEYS_ENV) {
            Ok(value) => Self::from_env_value(&value),
            Err(_) => Err(KeyError::MissingEnv),
        }
    }

    /// Keys from the value of `JETQ_PUSH_SIGNING_KEYS`: `key1[,key2]`.
    ///
    /// Entries are separated by `,`; whitespace around an entry (a trailing newline from a
    /// mounted secret file, a space after the comma) is ignored, so a key cannot contain a comma
    /// or begin or end with whitespace. An empty entry is an error, never skipped.
    ///
    /// ```
    /// use jetq_push_signature::{KeyError, SigningKeys};
    ///
    /// assert_eq!(SigningKeys::from_env_value("new-secret, old-secret\n").unwrap().len(), 2);
    /// assert_eq!(
    ///     SigningKeys::from_env_value("new-secret,").unwrap_err(),
    ///     KeyError::EmptyKey { index: 1 }
    /// );
    /// ```
    pub fn from_env_value(value: &str) -> Result<Self, KeyError> {
        if value.trim().is_empty() {
            return Err(KeyError::NoKeys);
        }
        Self::new(value.split(',').map(str::trim))
    }

    /// How many keys there are (1 or 2).
    pub fn len(&self) -> usize {
        self.macs.len()
    }

    /// Always false: a `SigningKeys` holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    /// The raw HMAC-SHA256 of the `v1` message under each key, in key order.
    fn macs_of(&self, timestamp: &str, task_id: &str, body: &[u8]) -> Vec<[u8; 32]> {
        self.macs
            .iter()
            .map(|prototype| {
                let mut mac = prototype.clone();
                mac.update(VERSION.as_bytes());
                mac.update(b":");
                mac.update(timestamp.as_bytes());
                mac.update(b":");
                mac.update(task_id.as_bytes());
                mac.update(b":");
                mac.update(body);
                mac.finalize().into_bytes().into()
            })
            .collect()
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeys({} key(s), redacted)", self.macs.len())
    }
}

/// Why a set of signing keys was refused. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key at all (an empty list, or an empty `JETQ_PUSH_SIGNING_KEYS`).
    #[error("no push signing key: set {SIGNING_KEYS_ENV}=key1[,key2]")]
    NoKeys,
    /// More than [`MAX_KEYS`] keys.
    #[error("{count} push signing keys given: at most {MAX_KEYS} (the new key and the old one)")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// The key at `index` (0-based) is empty.
    #[error("push signing key #{} is empty", .index + 1)]
    EmptyKey {
        /// 0-based position of the empty key.
        index: usize,
    },
    /// The HMAC implementation refused the key at `index` (does not happen with HMAC-SHA256).
    #[error("push signing key #{} cannot be used as an HMAC key", .index + 1)]
    Unusable {
        /// 0-based position of the key.
        index: usize,
    },
    /// `JETQ_PUSH_SIGNING_KEYS` is not set, or not valid Unicode.
    #[error("{SIGNING_KEYS_ENV} is not set (or not valid Unicode): set it to key1[,key2]")]
    MissingEnv,
}

/// The `Jetq-Signature` header value for a request: `v1=<hex>` per key, comma separated, in
/// key order.
///
/// `timestamp` is the Unix time in seconds that goes into `Jetq-Timestamp` (as decimal), and
/// `task_id` the value of `Jetq-Task-Id`; `body` is exactly the bytes sent as the request body.
///
/// ```
/// use jetq_push_signature::{sign, SigningKeys};
///
/// let keys = SigningKeys::new(["whsec_new", "whsec_old"]).unwrap();
/// let value = sign(&keys, 1_764_240_000, "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S", b"{}");
/// assert!(value.starts_with("v1="));
/// assert_eq!(value.split(',').count(), 2);
/// ```
pub fn sign(keys: &SigningKeys, timestamp: u64, task_id: &str, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mut out = String::with_capacity(keys.len() * (VERSION.len() + 1 + HEX_LEN + 1));
    for (i, mac) in keys.macs_of(&timestamp, task_id, body).iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(VERSION);
        out.push('=');
        push_hex(&mut out, mac);
    }
    out
}

/// Checks signed push requests: the receiver's side of the scheme.
///
/// Holds the receiver's keys (one, or two during a rotation) and the tolerance for the
/// timestamp. Cheap to clone, so it can live in an axum state.
///
/// ```
/// use std::time::Duration;
/// use jetq_push_signature::{SigningKeys, Verifier};
///
/// let verifier = Verifier::new(SigningKeys::from_env_value("whsec_current").unwrap())
///     .tolerance(Duration::from_secs(60));
/// # let _ = verifier;
/// ```
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: SigningKeys,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier with these keys and the [`DEFAULT_TOLERANCE`] (300 s).
    pub fn new(keys: SigningKeys) -> Self {
        Verifier {
            keys,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// A verifier with the keys from `JETQ_PUSH_SIGNING_KEYS` and the default tolerance.
    pub fn from_env() -> Result<Self, KeyError> {
        SigningKeys::from_env().map(Verifier::new)
    }

    /// Sets how far the timestamp may be from the receiver's clock, in either direction.
    ///
    /// The comparison is in whole seconds: a request is stale when the difference between the
    /// receiver's clock (rounded down to the second) and `Jetq-Timestamp` exceeds this.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The tolerance in use.
    pub fn current_tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies a request from its three header values (None when the header is absent), its
    /// raw body and the receiver's clock.
    ///
    /// Checks, in this order (the first failure is returned): every header present
    /// ([`VerifyError::MissingHeader`]); each well formed ([`VerifyError::Malformed`]); the
    /// timestamp within the tolerance of `now` ([`VerifyError::Stale`]); one of the receiver's
    /// keys producing one of the `v1=` signatures ([`VerifyError::Mismatch`]), compared in
    /// constant time.
    ///
    /// Header values are taken as they arrived; leading and trailing spaces and tabs are
    /// ignored. The timestamp is signed as its header text, so it must be plain decimal digits.
    /// Entries of `Jetq-Signature` other than `v1=` (a future scheme) are ignored, but there
    /// must be at least one `v1=` entry, and every `v1=` entry must be 64 hex digits.
    pub fn verify(
        &self,
        timestamp_header: Option<&str>,
        task_id_header: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        self.check(
            timestamp_header,
            task_id_header,
            signature_header,
            body,
            now,
        )
        .map(|_| ())
    }

    /// [`Verifier::verify`], returning the parsed timestamp on success.
    fn check(
        &self,
        timestamp_header: Option<&str>,
        task_id_header: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<u64, VerifyError> {
        let timestamp_text = timestamp_header
            .map(trim_ows)
            .ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
        let task_id = task_id_header
            .map(trim_ows)
            .ok_or(VerifyError::MissingHeader(TASK_ID_HEADER))?;
        let signature = signature_header
            .map(trim_ows)
            .ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;

        let timestamp = parse_timestamp(timestamp_text)?;
        if task_id.is_empty() {
            return Err(VerifyError::Malformed {
                header: TASK_ID_HEADER,
                reason: "empty",
            });
        }
        let candidates = parse_signatures(signature)?;

        let age = age_secs(now, timestamp);
        if age.unsigned_abs() > u128::from(self.tolerance.as_secs()) {
            return Err(VerifyError::Stale {
                age: age.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            });
        }

        let expected = self.keys.macs_of(timestamp_text, task_id, body);
        // Compare every pair without stopping early, so the time taken does not depend on
        // which (if any) entry matched.
        let mut matched = subtle::Choice::from(0u8);
        for mac in &expected {
            for candidate in &candidates {
                matched |= mac.ct_eq(candidate);
            }
        }
        if bool::from(matched) {
            Ok(timestamp)
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// Why a push request was refused. Match on it to log or count refusals; answer the sender
/// with 401 in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent; the value is its name ([`TIMESTAMP_HEADER`],
    /// [`TASK_ID_HEADER`] or [`SIGNATURE_HEADER`]).
    #[error("push request header {0} is missing")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's format.
    #[error("push request header {header} is malformed: {reason}")]
    Malformed {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The timestamp is further from the receiver's clock than the tolerance: a replay, a
    /// request held up for too long, or a skewed clock.
    #[error("push request timestamp is {} s {} (outside the tolerance)", .age.unsigned_abs(), if *.age >= 0 { "old" } else { "in the future" })]
    Stale {
        /// Receiver's clock minus the timestamp, in seconds: positive for a timestamp in the
        /// past, negative for one in the future.
        age: i64,
    },
    /// No signature matches any of the receiver's keys: a forged or altered request, or keys
    /// that differ between the dispatcher and the receiver.
    #[error("push request signature does not match")]
    Mismatch,
}

/// Strips HTTP optional whitespace (spaces and tabs) from both ends.
fn trim_ows(value: &str) -> &str {
    value.trim_matches(|c| c == ' ' || c == '\t')
}

fn parse_timestamp(text: &str) -> Result<u64, VerifyError> {
    let malformed = |reason| VerifyError::Malformed {
        header: TIMESTAMP_HEADER,
        reason,
    };
    if text.is_empty() {
        return Err(malformed("empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("not decimal Unix seconds"));
    }
    text.parse::<u64>().map_err(|_| malformed("out of range"))
}

fn parse_signatures(header: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    let malformed = |reason| VerifyError::Malformed {
        header: SIGNATURE_HEADER,
        reason,
    };
    if header.is_empty() {
        return Err(malformed("empty"));
    }
    let mut out = Vec::new();
    for entry in header.split(',').map(trim_ows) {
        let Some((scheme, value)) = entry.split_once('=') else {
            return Err(malformed("an entry is not scheme=value"));
        };
        if scheme != VERSION {
            continue;
        }
        out.push(decode_hex(value).ok_or_else(|| malformed("a v1 value is not 64 hex digits"))?);
    }
    if out.is_empty() {
        return Err(malformed("no v1 signature"));
    }
    Ok(out)
}

/// Receiver's clock (whole seconds, rounded down) minus the timestamp.
fn age_secs(now: SystemTime, timestamp: u64) -> i128 {
    let now_secs: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs() as i128,
        Err(before) => {
            let d = before.duration();
            // Round down (towards the past) for times before the epoch too.
            -(d.as_secs() as i128) - i128::from(d.subsec_nanos() > 0)
        }
    };
    now_secs - timestamp as i128
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0x0f) as usize] as char);
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != HEX_LEN {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S";
    const BODY: &[u8] = br#"{"to":"ada@example.com","subject":"Welcome"}"#;
    const TS: u64 = 1_764_240_000;

    fn keys(list: &[&str]) -> SigningKeys {
        SigningKeys::new(list.iter().copied()).expect("test keys")
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn check(
        receiver: &[&str],
        header: &str,
        ts: &str,
        task: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        Verifier::new(keys(receiver)).verify(Some(ts), Some(task), Some(header), body, now)
    }

    #[test]
    fn signs_the_documented_bytes() {
        // Independent HMAC of the spelled-out message.
        let mut mac = HmacSha256::new_from_slice(b"secret").expect("hmac key");
        mac.update(format!("v1:{TS}:{TASK}:").as_bytes());
        mac.update(BODY);
        let mut hex = String::new();
        push_hex(&mut hex, &mac.finalize().into_bytes());
        assert_eq!(
            sign(&keys(&["secret"]), TS, TASK, BODY),
            format!("v1={hex}")
        );
    }

    #[test]
    fn round_trip() {
        let header = sign(&keys(&["secret"]), TS, TASK, BODY);
        assert_eq!(
            check(&["secret"], &header, "1764240000", TASK, BODY, at(TS)),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_is_a_mismatch() {
        let header = sign(&keys(&["secret"]), TS, TASK, BODY);
        let tampered = br#"{"to":"eve@example.com","subject":"Welcome"}"#;
        assert_eq!(
            check(&["secret"], &header, "1764240000", TASK, tampered, at(TS)),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&["secret"], &header, "1764240000", TASK, b"", at(TS)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn wrong_task_id_is_a_mismatch() {
        let header = sign(&keys(&["secret"]), TS, TASK, BODY);
        assert_eq!(
            check(
                &["secret"],
                &header,
                "1764240000",
                "01JDQ5X1ZB8Y2K3M4N5P6Q7R8T",
                BODY,
                at(TS)
            ),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn changed_timestamp_is_a_mismatch() {
        let header = sign(&keys(&["secret"]), TS, TASK, BODY);
        assert_eq!(
            check(&["secret"], &header, "1764240001", TASK, BODY, at(TS)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps() {
        let header = sign(&keys(&["secret"]), TS, TASK, BODY);
        let ts = "1764240000";
        // Exactly at the tolerance, both ways: accepted.
        assert_eq!(
            check(&["secret"], &header, ts, TASK, BODY, at(TS + 300)),
            Ok(())
        );
        assert_eq!(
            check(&["secret"], &header, ts, TASK, BODY, at(TS - 300)),
            Ok(())
        );
        // Sub-second parts of the clock are rounded down.
        let almost = at(TS + 300) + Duration::from_millis(999);
        assert_eq!(check(&["secret"], &header, ts, TASK, BODY, almost), Ok(()));
        assert_eq!(
            check(&["secret"], &header, ts, TASK, BODY, at(TS + 301)),
            Err(VerifyError::Stale { age: 301 })
        );
        assert_eq!(
            check(&["secret"], &header, ts, TASK, BODY, at(TS - 301)),
            Err(VerifyError::Stale { age: -301 })
        );
        // Stale is reported even when the signature would not match either.
        assert_eq!(
            check(&["other"], &header, ts, TASK, BODY, at(TS + 3600)),
            Err(VerifyError::Stale { age: 3600 })
        );
    }

    #[test]
    fn custom_tolerance() {
        let header = sign(&keys(&["secret"]), TS, TASK, BODY);
        let verifier = Verifier::new(keys(&["secret"])).tolerance(Duration::from_secs(5));
        assert_eq!(verifier.current_tolerance(), Duration::from_secs(5));
        let v = |now| verifier.verify(Some("1764240000"), Some(TASK), Some(&header), BODY, now);
        assert_eq!(v(at(TS + 5)), Ok(()));
        assert_eq!(v(at(TS + 6)), Err(VerifyError::Stale { age: 6 }));
    }

    #[test]
    fn clock_before_the_epoch_is_stale_not_a_panic() {
        let header = sign(&keys(&["secret"]), 0, TASK, BODY);
        let before = UNIX_EPOCH - Duration::from_millis(301_500);
        assert_eq!(
            check(&["secret"], &header, "0", TASK, BODY, before),
            Err(VerifyError::Stale { age: -302 })
        );
        let huge = u64::MAX.to_string();
        let header = sign(&keys(&["secret"]), u64::MAX, TASK, BODY);
        assert!(matches!(
            check(&["secret"], &header, &huge, TASK, BODY, at(TS)),
            Err(VerifyError::Stale { age }) if age < 0
        ));
    }

    #[test]
    fn key_rotation() {
        // The dispatcher signs with [new, old].
        let header = sign(&keys(&["new-key", "old-key"]), TS, TASK, BODY);
        assert_eq!(header.split(',').count(), 2);
        let ts = "1764240000";
        // Receiver not yet rotated (old only), already rotated (new only), or mid-rotation.
        assert_eq!(check(&["old-key"], &header, ts, TASK, BODY, at(TS)), Ok(()));
        assert_eq!(check(&["new-key"], &header, ts, TASK, BODY, at(TS)), Ok(()));
        assert_eq!(
            check(&["new-key", "old-key"], &header, ts, TASK, BODY, at(TS)),
            Ok(())
        );
        assert_eq!(
            check(&["old-key", "new-key"], &header, ts, TASK, BODY, at(TS)),
            Ok(())
        );
        // Receiver rotated first ([new, old]), dispatcher still signs with old only.
        let old_only = sign(&keys(&["old-key"]), TS, TASK, BODY);
        assert_eq!(
            check(&["new-key", "old-key"], &old_only, ts, TASK, BODY, at(TS)),
            Ok(())
        );
        // An unrelated key matches nothing.
        assert_eq!(
            check(&["unrelated"], &header, ts, TASK, BODY, at(TS)),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&["unrelated", "another"], &header, ts, TASK, BODY, at(TS)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn missing_headers_in_order() {
        let v = Verifier::new(keys(&["secret"]));
        let sig = sign(&keys(&["secret"]), TS, TASK, BODY);
        let now = at(TS);
        assert_eq!(
            v.verify(None, None, None, BODY, now),
            Err(VerifyError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            v.verify(Some("1764240000"), None, Some(&sig), BODY, now),
            Err(VerifyError::MissingHeader(TASK_ID_HEADER))
        );
        assert_eq!(
            v.verify(Some("1764240000"), Some(TASK), None, BODY, now),
            Err(VerifyError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn malformed_headers() {
        let sig = sign(&keys(&["secret"]), TS, TASK, BODY);
        let malformed = |header: &'static str| move |r: Result<(), VerifyError>| matches!(r, Err(VerifyError::Malformed { header: h, .. }) if h == header);
        let ts_bad = malformed(TIMESTAMP_HEADER);
        for ts in [
            "",
            "abc",
            "-5",
            "+1764240000",
            "1.7e9",
            "1764240000.5",
            "١٢٣",
            "99999999999999999999999",
        ] {
            assert!(
                ts_bad(check(&["secret"], &sig, ts, TASK, BODY, at(TS))),
                "{ts:?}"
            );
        }
        assert!(malformed(TASK_ID_HEADER)(check(
            &["secret"],
            &sig,
            "1764240000",
            "",
            BODY,
            at(TS)
        )));
        let sig_bad = malformed(SIGNATURE_HEADER);
        let short = &sig[..sig.len() - 2];
        let not_hex = format!("v1={}", "g".repeat(64));
        for header in [
            "",
            "v1=",
            short,
            &not_hex,
            "sha256=abcd",
            "v1",
            "garbage",
            &format!("{sig},"),
        ] {
            assert!(
                sig_bad(check(&["secret"], header, "1764240000", TASK, BODY, at(TS))),
                "{header:?}"
            );
        }
    }

    #[test]
    fn lenient_where_documented() {
        let sig = sign(&keys(&["secret"]), TS, TASK, BODY);
        let ts = "1764240000";
        // Surrounding whitespace, whitespace after commas, unknown schemes, uppercase hex.
        assert_eq!(
            check(
                &["secret"],
                &format!(" {sig}\t"),
                " 1764240000 ",
                TASK,
                BODY,
                at(TS)
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &["secret"],
                &format!("v0=zz, {sig}"),
                ts,
                TASK,
                BODY,
                at(TS)
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &["secret"],
                &format!("v1={}", sig[3..].to_uppercase()),
                ts,
                TASK,
                BODY,
                at(TS)
            ),
            Ok(())
        );
        // The timestamp is signed as sent: leading zeros are fine if the sender signed them.
        let mut mac = HmacSha256::new_from_slice(b"secret").expect("hmac key");
        mac.update(format!("v1:0{TS}:{TASK}:").as_bytes());
        mac.update(BODY);
        let mut zero = String::from("v1=");
        push_hex(&mut zero, &mac.finalize().into_bytes());
        assert_eq!(
            check(&["secret"], &zero, "01764240000", TASK, BODY, at(TS)),
            Ok(())
        );
        assert_eq!(
            check(&["secret"], &sig, "01764240000", TASK, BODY, at(TS)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn key_rules() {
        assert_eq!(
            SigningKeys::new(Vec::<String>::new()).unwrap_err(),
            KeyError::NoKeys
        );
        assert_eq!(
            SigningKeys::new(["a", "", "c"]).unwrap_err(),
            KeyError::TooMany { count: 3 }
        );
        assert_eq!(
            SigningKeys::new(["a", ""]).unwrap_err(),
            KeyError::EmptyKey { index: 1 }
        );
        assert_eq!(
            SigningKeys::new([""]).unwrap_err(),
            KeyError::EmptyKey { index: 0 }
        );
        assert_eq!(
            SigningKeys::new(vec![String::from("k")]).map(|k| k.len()),
            Ok(1)
        );
        assert!(!keys(&["a"]).is_empty());
        assert_eq!(
            SigningKeys::from_env_value("").unwrap_err(),
            KeyError::NoKeys
        );
        assert_eq!(
            SigningKeys::from_env_value(" \n").unwrap_err(),
            KeyError::NoKeys
        );
        assert_eq!(
            SigningKeys::from_env_value(",b").unwrap_err(),
            KeyError::EmptyKey { index: 0 }
        );
        assert_eq!(
            SigningKeys::from_env_value("a,b,c").unwrap_err(),
            KeyError::TooMany { count: 3 }
        );
        // Trimmed entries sign like the trimmed keys.
        let from_env = SigningKeys::from_env_value(" new ,\told\n").expect("two keys");
        assert_eq!(
            sign(&from_env, TS, TASK, BODY),
            sign(&keys(&["new", "old"]), TS, TASK, BODY)
        );
    }

    #[test]
    fn secrets_never_shown() {
        let k = keys(&["super-secret-value", "other-secret"]);
        let debug = format!("{k:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(debug, "SigningKeys(2 key(s), redacted)");
        let v = format!("{:?}", Verifier::new(k));
        assert!(
            !v.contains("super-secret-value") && !v.contains("other-secret"),
            "{v}"
        );
        for e in [
            KeyError::NoKeys,
            KeyError::TooMany { count: 3 },
            KeyError::EmptyKey { index: 0 },
            KeyError::Unusable { index: 1 },
            KeyError::MissingEnv,
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            KeyError::EmptyKey { index: 1 }.to_string(),
            "push signing key #2 is empty"
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            VerifyError::Stale { age: 400 }.to_string(),
            "push request timestamp is 400 s old (outside the tolerance)"
        );
        assert_eq!(
            VerifyError::Stale { age: -400 }.to_string(),
            "push request timestamp is 400 s in the future (outside the tolerance)"
        );
        assert_eq!(
            VerifyError::MissingHeader(SIGNATURE_HEADER).to_string(),
            "push request header Jetq-Signature is missing"
        );
    }

    #[test]
    fn hex_round_trip() {
        let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
        let mut hex = String::new();
        push_hex(&mut hex, &bytes);
        assert_eq!(decode_hex(&hex).map(|a| a.to_vec()), Some(bytes));
        assert_eq!(decode_hex("zz"), None);
    }
}
