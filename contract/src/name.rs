//! Validation of the names that become subject tokens: queues, task types and the subject prefix.
//!
//! A name is copied verbatim into a NATS subject (`<prefix>.task.<queue>.<task>`), so a `.` would
//! add a token, and `*`, `>` or whitespace would turn a publish subject into a wildcard or break
//! the protocol line. Such names are rejected, never escaped: an escaped name would be a second
//! spelling of the same task that other-language producers would have to reproduce exactly.

use std::fmt;

/// The longest name accepted. Stream, consumer and KV names derive from these and the server
/// limits those (and file names on disk) to a few hundred bytes.
pub const MAX_NAME_LEN: usize = 64;

/// What a name is used for; reported in [`NameError`] so the message says which name is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A queue name: one durable consumer and one subject token per queue.
    Queue,
    /// A task type's wire name.
    Task,
    /// The subject prefix (default `jetq`).
    Prefix,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Queue => "queue name",
            NameKind::Task => "task name",
            NameKind::Prefix => "subject prefix",
        })
    }
}

/// A queue, task or prefix name that cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} {value:?}: {reason} (allowed: 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 _ -)"
)]
pub struct NameError {
    /// Which kind of name was rejected.
    pub kind: NameKind,
    /// The rejected name, verbatim.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Checks that `value` is a valid subject token of the given kind: `[A-Za-z0-9_-]{1,64}`.
///
/// ```
/// use jetq_contract::name::{validate, NameKind};
/// assert!(validate(NameKind::Queue, "emails").is_ok());
/// assert!(validate(NameKind::Task, "send.email").is_err());
/// ```
pub fn validate(kind: NameKind, value: &str) -> Result<(), NameError> {
    let error = |reason| NameError {
        kind,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(error("it is empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(error("it is too long"));
    }
    for c in value.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => {}
            '.' => return Err(error("'.' would split it into two subject tokens")),
            '*' | '>' => return Err(error("'*' and '>' are subject wildcards")),
            c if c.is_whitespace() => return Err(error("whitespace is not allowed in subjects")),
            _ => return Err(error("it contains a character outside the allowed set")),
        }
    }
    Ok(())
}

/// The longest idempotency key accepted (it becomes the `Nats-Msg-Id` header).
pub const MAX_KEY_LEN: usize = 256;

/// An idempotency key that cannot be sent as a `Nats-Msg-Id` header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid idempotency key {value:?}: {reason}")]
pub struct KeyError {
    /// The rejected key.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Task-id prefixes jetq itself writes (docs/PROTOCOL.md §3, "Reserved ids"): a replayed dead
/// letter (`replay:`), a released delayed task that had no id (`delayed:`) and a dead letter
/// (`dead:`). An idempotency key starting with one of them is refused, so a caller's key can
/// never be mistaken for (or deduplicated against) one of these.
pub const RESERVED_KEY_PREFIXES: [&str; 3] = ["replay:", "delayed:", "dead:"];

/// Checks an idempotency key: 1-256 printable ASCII characters without spaces, so it survives
/// as a header value in every NATS client unchanged, and none of the ids jetq reserves for
/// itself: a [`RESERVED_KEY_PREFIXES`] prefix, or the shape of a schedule's fire id
/// (`<name>:<YYYY-MM-DDTHH:MM:SSZ>`, see [`is_fire_id`]).
///
/// ```
/// use jetq_contract::name::validate_key;
/// assert!(validate_key("signup:ada@example.com").is_ok());
/// assert!(validate_key("replay:42:01J9ZQ").is_err());
/// assert!(validate_key("nightly-report:2026-11-28T02:00:00Z").is_err());
/// ```
pub fn validate_key(value: &str) -> Result<(), KeyError> {
    let error = |reason| KeyError {
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(error("it is empty"));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(error("it is longer than 256 bytes"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error("only printable ASCII without spaces is allowed"));
    }
    if RESERVED_KEY_PREFIXES
        .iter()
        .any(|prefix| value.starts_with(prefix))
    {
        return Err(error(
            "it starts with a prefix jetq reserves (replay:, delayed:, dead:)",
        ));
    }
    if is_fire_id(value) {
        return Err(error(
            "it has the form of a schedule's fire id (<name>:<YYYY-MM-DDTHH:MM:SSZ>)",
        ));
    }
    Ok(())
}

/// True if `id` has the shape of a periodic fire's id: a name (`[A-Za-z0-9_-]{1,64}`), `:`, and
/// a fire time `YYYY-MM-DDTHH:MM:SSZ` (digits where the shape has them). Such ids belong to
/// the scheduler.
pub fn is_fire_id(id: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:ddZ";
    let Some((name, time)) = id.split_once(':') else {
        return false;
    };
    validate(NameKind::Task, name).is_ok()
        && time.len() == SHAPE.len()
        && time.bytes().zip(SHAPE).all(|(byte, &shape)| match shape {
            b'd' => byte.is_ascii_digit(),
            other => byte == other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_tokens() {
        for ok in ["emails", "send_email", "csv-export", "A1", &"x".repeat(64)] {
            assert!(validate(NameKind::Task, ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_tokens_that_change_the_subject() {
        for bad in ["", "a.b", "a*", ">", "a b", "tab\t", "é", &"x".repeat(65)] {
            let err = validate(NameKind::Queue, bad).unwrap_err();
            assert_eq!(err.kind, NameKind::Queue);
            assert!(err.to_string().contains("invalid queue name"), "{err}");
        }
    }

    #[test]
    fn keys_are_printable_ascii() {
        assert!(validate_key("order-42:confirm").is_ok());
        assert!(validate_key("has space").is_err());
        assert!(validate_key("").is_err());
        assert!(validate_key("line\nbreak").is_err());
        assert!(validate_key(&"k".repeat(257)).is_err());
    }

    #[test]
    fn keys_may_not_take_the_ids_jetq_writes() {
        for reserved in [
            "replay:42:01J9ZQ",
            "replay:42",
            "delayed:9",
            "dead:3:x",
            "nightly-report:2026-11-28T02:00:00Z",
        ] {
            assert!(validate_key(reserved).is_err(), "{reserved}");
        }
        for fine in [
            "Replay:42",
            "my-replay:42",
            "signup:ada@example.com",
            "nightly-report:2026-11-28T02:00:00.000Z",
            "nightly.report:2026-11-28T02:00:00Z",
            "dead",
        ] {
            assert!(validate_key(fine).is_ok(), "{fine}");
        }
    }
}
