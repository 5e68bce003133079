//! The `JETQ_*` startup-error table shared by the worker's (`tests/tests/config_errors.rs`) and
//! the scheduler's (`scheduler/tests/config_errors.rs`) binary tests: for each variable a value
//! it refuses and what the error must say (the variable and the accepted form), the variables
//! that take any text, and the field lists of the settings structs, so that a setting added
//! without a row fails the test that covers it.

#![allow(dead_code)]

use std::{process::Stdio, time::Duration};

pub(crate) const DURATION: &str = "a duration like 30s, 5m or 1h30m";
pub(crate) const WHOLE_NUMBER: &str = "a whole number";
pub(crate) const BOOLEAN: &str = "true or false";

/// A bad value of one variable and the pieces its startup error must contain.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub variable: &'static str,
    pub value: &'static str,
    pub expected: Vec<&'static str>,
}

pub(crate) fn case(variable: &'static str, value: &'static str, form: &'static str) -> Case {
    Case {
        variable,
        value,
        expected: vec![variable, form],
    }
}

/// Every type's refusal: a duration, a number and a boolean that do not parse.
pub(crate) fn duration(variable: &'static str) -> Case {
    case(variable, "banana", DURATION)
}
pub(crate) fn number(variable: &'static str) -> Case {
    case(variable, "many", WHOLE_NUMBER)
}
pub(crate) fn boolean(variable: &'static str) -> Case {
    case(variable, "maybe", BOOLEAN)
}

/// The connection and stream variables every component reads (`ConnectionConfig`,
/// `StreamSettings`).
pub(crate) fn connection_and_stream_cases() -> Vec<Case> {
    vec![
        boolean("JETQ_NATS_TLS_REQUIRED"),
        duration("JETQ_CONNECT_TIMEOUT"),
        duration("JETQ_REQUEST_TIMEOUT"),
        case("JETQ_REQUEST_TIMEOUT", "0s", "greater than zero"),
        case("JETQ_NATS_URL", " , ", "no server URL"),
        case("JETQ_NATS_URL", "http://[::", "not a NATS URL"),
        case("JETQ_PREFIX", "a.b", "JETQ_PREFIX"),
        case("JETQ_NATS_USER", "app", "JETQ_NATS_PASSWORD"),
        case("JETQ_NATS_PASSWORD", "secret", "JETQ_NATS_USER"),
        case("JETQ_NATS_TLS_CERT", "/c.pem", "JETQ_NATS_TLS_KEY"),
        case("JETQ_NATS_TLS_KEY", "/k.pem", "JETQ_NATS_TLS_CERT"),
        number("JETQ_STREAM_REPLICAS"),
        case("JETQ_STREAM_REPLICAS", "-1", "a whole number (0 or more)"),
        case("JETQ_STREAM_REPLICAS", "7", "outside 1..=5"),
        number("JETQ_STREAM_MAX_MSGS"),
        case("JETQ_STREAM_MAX_MSGS", "0", "-1 for none"),
        number("JETQ_STREAM_MAX_BYTES"),
        duration("JETQ_DUPLICATE_WINDOW"),
        duration("JETQ_DEAD_MAX_AGE"),
        number("JETQ_DEAD_MAX_BYTES"),
        duration("JETQ_STATUS_TTL"),
        number("JETQ_ARTIFACTS_MAX_BYTES"),
        case(
            "JETQ_TASK_RETENTION",
            "interest",
            "\"workqueue\", \"limits\"",
        ),
    ]
}

/// Variables of `ConnectionConfig` that accept any text on their own (secrets, paths read at
/// connect); each is covered by a case in combination above where one exists.
pub(crate) const CONNECTION_TEXT: &[&str] = &[
    "JETQ_NATS_TOKEN",
    "JETQ_NATS_NKEY_SEED",
    "JETQ_NATS_CREDS_FILE",
    "JETQ_NATS_TLS_CA",
];

/// The serde field names of a settings struct: the variables it reads are `JETQ_<FIELD>`.
pub(crate) fn variables<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let mut fields = Vec::new();
    let _ = T::deserialize(FieldNames(&mut fields));
    assert!(!fields.is_empty(), "not a struct");
    fields
        .into_iter()
        .map(|field| format!("JETQ_{}", field.to_uppercase()))
        .collect()
}

struct FieldNames<'a>(&'a mut Vec<&'static str>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(fields);
        Err(serde::de::Error::custom("field names read"))
    }

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Asserts every variable of `structs` has a case or is listed as free text.
pub(crate) fn assert_covered(read: &[String], cases: &[Case], text: &[&str]) {
    for variable in read {
        assert!(
            cases.iter().any(|case| case.variable == variable) || text.contains(&variable.as_str()),
            "{variable} has no startup-error case: add a bad value to the table (or list it as \
             free text)"
        );
    }
}

/// A free local port nothing listens on, for a NATS URL that refuses.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Runs `binary` with `case`'s variable over a minimal valid environment and checks that it
/// exits with status 1 at once and that stderr names the variable and the accepted form.
/// Returns a description of the failure instead of panicking, so one run reports every row.
pub(crate) async fn check(binary: &str, case: &Case) -> Result<(), String> {
    let port = closed_port();
    let mut env: Vec<(&str, String)> = vec![
        ("JETQ_NATS_URL", format!("nats://127.0.0.1:{port}")),
        ("JETQ_CONNECT_TIMEOUT", "500ms".into()),
        ("JETQ_HEALTH_LISTEN", "127.0.0.1:0".into()),
        ("OTEL_SDK_DISABLED", "true".into()),
        ("RUST_LOG", "warn".into()),
    ];
    env.retain(|(name, _)| *name != case.variable);
    env.push((case.variable, case.value.to_owned()));
    let child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start {binary}: {err}"))?;
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "{}={:?}: still running after 20 s",
                case.variable, case.value
            )
        })?
        .map_err(|err| format!("waiting for {binary}: {err}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let missing: Vec<&&str> = case
        .expected
        .iter()
        .filter(|piece| !stderr.contains(**piece))
        .collect();
    if output.status.code() != Some(1) || !missing.is_empty() {
        return Err(format!(
            "{}={:?}: exit {:?}, stderr lacks {missing:?}:\n{stderr}",
            case.variable, case.value, output.status
        ));
    }
    Ok(())
}

/// Checks every case and fails once, listing every row that failed.
pub(crate) async fn check_all(binary: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(failure) = check(binary, case).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} startup-error cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
