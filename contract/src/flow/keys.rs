//! The keys of flow control: validation of the keys callers give (unique keys, limit keys), the
//! KV keys they are stored under, and unique keys derived from a task's arguments.

use sha2::{Digest, Sha256};

use super::FlowError;

/// Longest unique key, in bytes (as an idempotency key).
pub const MAX_UNIQUE_KEY_LEN: usize = 256;
/// Longest limit key, in bytes.
pub const MAX_LIMIT_KEY_LEN: usize = 128;
/// The prefix of a unique key derived from arguments.
pub const ARGS_KEY_PREFIX: &str = "args:";

fn validate(what: &'static str, value: &str, max: usize) -> Result<(), FlowError> {
    let error = |reason| FlowError::InvalidKey {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(error("it is empty"));
    }
    if value.len() > max {
        return Err(error(if max == MAX_UNIQUE_KEY_LEN {
            "it is longer than 256 bytes"
        } else {
            "it is longer than 128 bytes"
        }));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error("only printable ASCII without spaces is allowed"));
    }
    Ok(())
}

/// A unique key: 1–256 bytes of printable ASCII without spaces (`!` to `~`).
///
/// ```
/// use jetq_contract::flow::validate_unique_key;
/// assert!(validate_unique_key("welcome:user-42").is_ok());
/// assert!(validate_unique_key("two words").is_err());
/// ```
pub fn validate_unique_key(value: &str) -> Result<(), FlowError> {
    validate("unique key", value, MAX_UNIQUE_KEY_LEN)
}

/// A limit key (`Jetq-Limit-Key`): 1–128 bytes of printable ASCII without spaces.
pub fn validate_limit_key(value: &str) -> Result<(), FlowError> {
    validate("limit key", value, MAX_LIMIT_KEY_LEN)
}

/// True when a `Jetq-Limit-Key` header read by a worker is usable; a worker treats an unusable
/// one as absent (the type-wide limit applies) rather than failing the task.
pub fn limit_key_header_ok(value: &str) -> bool {
    validate_limit_key(value).is_ok()
}

/// The KV key (in `<PREFIX>_UNIQUE`) of a task type's unique key:
/// `<queue>.<task>.<encoded key>`, the key encoded as status keys are (PROTOCOL §8).
///
/// ```
/// assert_eq!(
///     jetq_contract::flow::keys::unique_entry("emails", "send_welcome", "user:42"),
///     "emails.send_welcome.user=3A42"
/// );
/// ```
pub fn unique_entry(queue: &str, task: &str, key: &str) -> String {
    format!("{queue}.{task}.{}", crate::status::key(key))
}

/// The KV key (in `<PREFIX>_LIMITS`) of a rate limit's bucket: `rate.<queue>.<task>`, plus
/// `.<encoded limit key>` for a per-key limit.
pub fn rate_entry(queue: &str, task: &str, limit_key: Option<&str>) -> String {
    limit_entry("rate", queue, task, limit_key)
}

/// The KV key of a concurrency limit's slots: `conc.<queue>.<task>[.<encoded limit key>]`.
pub fn concurrency_entry(queue: &str, task: &str, limit_key: Option<&str>) -> String {
    limit_entry("conc", queue, task, limit_key)
}

/// The KV key of a task's rate reservation: `resv.<task stream sequence>`.
pub fn reservation_entry(sequence: u64) -> String {
    format!("resv.{sequence}")
}

/// The KV key of a task waiting for a concurrency slot: `wait.<task stream sequence>`
/// (informational: operators count what waits on a limit).
pub fn waiting_entry(sequence: u64) -> String {
    format!("wait.{sequence}")
}

fn limit_entry(kind: &str, queue: &str, task: &str, limit_key: Option<&str>) -> String {
    match limit_key {
        Some(key) => format!("{kind}.{queue}.{task}.{}", crate::status::key(key)),
        None => format!("{kind}.{queue}.{task}"),
    }
}

/// A unique key derived from chosen fields of a task's JSON arguments: `args:` and the
/// lower-case hex SHA-256 of the compact JSON object of those fields, keys sorted (at every
/// depth), strings as UTF-8. Tasks whose chosen fields are equal get the same key.
///
/// ```
/// let key = jetq_contract::flow::keys::derive_unique_key(br#"{"user":42,"note":"x"}"#, &["user"]).unwrap();
/// assert_eq!(key.len(), 5 + 64);
/// assert!(key.starts_with("args:"));
/// ```
pub fn derive_unique_key(arguments: &[u8], fields: &[&str]) -> Result<String, FlowError> {
    let value: serde_json::Value =
        serde_json::from_slice(arguments).map_err(|_| FlowError::ArgumentsNotAnObject)?;
    let object = value.as_object().ok_or(FlowError::ArgumentsNotAnObject)?;
    let mut chosen = serde_json::Map::new();
    for field in fields {
        let value = object
            .get(*field)
            .ok_or_else(|| FlowError::MissingArgument {
                field: (*field).to_owned(),
            })?;
        chosen.insert((*field).to_owned(), value.clone());
    }
    // serde_json's map is sorted by key (no `preserve_order` in this workspace), at every depth.
    let canonical = serde_json::to_vec(&serde_json::Value::Object(chosen))
        .map_err(|_| FlowError::ArgumentsNotAnObject)?;
    let digest = Sha256::digest(&canonical);
    let mut key = String::with_capacity(ARGS_KEY_PREFIX.len() + 64);
    key.push_str(ARGS_KEY_PREFIX);
    for byte in digest {
        key.push_str(&format!("{byte:02x}"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_refused_with_a_reason() {
        for (key, reason) in [
            ("", "it is empty"),
            ("a b", "only printable ASCII without spaces is allowed"),
            ("é", "only printable ASCII without spaces is allowed"),
        ] {
            match validate_unique_key(key) {
                Err(FlowError::InvalidKey { reason: got, .. }) => assert_eq!(got, reason),
                other => panic!("{key:?}: {other:?}"),
            }
        }
        assert!(validate_unique_key(&"k".repeat(256)).is_ok());
        assert!(validate_unique_key(&"k".repeat(257)).is_err());
        assert!(validate_limit_key(&"k".repeat(129)).is_err());
    }

    #[test]
    fn derived_keys_ignore_other_fields_and_field_order() {
        let a = derive_unique_key(
            br#"{"user":42,"b":{"y":1,"x":2},"note":"a"}"#,
            &["user", "b"],
        );
        let b = derive_unique_key(
            br#"{"note":"b","b":{"x":2,"y":1},"user":42}"#,
            &["b", "user"],
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            derive_unique_key(br#"{"user":43,"b":{"y":1,"x":2}}"#, &["user", "b"])
        );
        assert_eq!(
            derive_unique_key(br#"{"user":42}"#, &["team"]),
            Err(FlowError::MissingArgument {
                field: "team".into()
            })
        );
        assert_eq!(
            derive_unique_key(b"[1]", &["a"]),
            Err(FlowError::ArgumentsNotAnObject)
        );
    }
}
