//! The YAML files jetq binaries are configured with — the scheduler's schedules file and
//! `jetq-push`'s targets file: a mapping with one key holding a list of entries, each entry read
//! field by field. Nothing stops at the first mistake: every problem is collected and named by
//! its entry and field, so one start of the binary shows them all (feature `config-file`).
//!
//! ```
//! use jetq_contract::config_file::{Entry, ListFile};
//!
//! const SCHEDULES: ListFile = ListFile { key: "schedules", item: "schedule", required: false };
//! let entries = SCHEDULES
//!     .entries("schedules:\n  - name: nightly\n    every: 1h\n", "schedules.yaml".as_ref())
//!     .unwrap();
//! let (mut entry, unknown) = Entry::new("schedule", 0, entries[0].clone(), &["name", "every"]).unwrap();
//! assert!(unknown.is_empty());
//! assert_eq!(entry.string("name", true).as_deref(), Some("nightly"));
//! assert_eq!(entry.duration("every"), Some(std::time::Duration::from_secs(3600)));
//! assert!(entry.into_errors().is_empty());
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use serde_norway::Value;

use crate::name::{self, NameKind};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What the file lists, e.g. `schedule` or `target`.
    pub kind: &'static str,
    /// The entry's name, `#<n>` (1-based position) while it has no usable name, or `(file)`.
    pub item: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

impl FieldError {
    /// A problem of `field` in entry `item` of a file listing `kind`s.
    pub fn new(kind: &'static str, item: &str, field: &str, problem: impl Into<String>) -> Self {
        FieldError {
            kind,
            item: item.to_owned(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: field `{}` {}",
            self.kind, self.item, self.field, self.problem
        )
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        /// What the file holds, e.g. `schedules`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The file is not valid YAML.
    #[error("{what} file {} is not valid YAML: {message}", path.display())]
    Syntax {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more entries are invalid.
    #[error("invalid {what} file {}: {}", path.display(), join(errors))]
    Invalid {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The shape of a file: a mapping whose only key, `key`, lists entries of kind `item`.
#[derive(Debug, Clone, Copy)]
pub struct ListFile {
    /// The top-level key, e.g. `schedules`.
    pub key: &'static str,
    /// What one entry is, e.g. `schedule`.
    pub item: &'static str,
    /// Whether the list must hold at least one entry (else an empty file is an empty list).
    pub required: bool,
}

impl ListFile {
    /// Reads the file at `path` (its text; [`ListFile::entries`] parses it).
    pub fn read(&self, path: &Path) -> Result<String, FileError> {
        std::fs::read_to_string(path).map_err(|source| FileError::Read {
            what: self.key,
            path: path.to_owned(),
            source: Arc::new(source),
        })
    }

    /// The entries of a file's text; `origin` names the file in errors.
    pub fn entries(&self, text: &str, origin: &Path) -> Result<Vec<Value>, FileError> {
        let document: Value = serde_norway::from_str(text).map_err(|err| FileError::Syntax {
            what: self.key,
            path: origin.to_owned(),
            message: err.to_string(),
        })?;
        let list = match document {
            Value::Null => None,
            Value::Mapping(mut top) => {
                let errors: Vec<FieldError> = top
                    .keys()
                    .filter(|key| key.as_str() != Some(self.key))
                    .map(|key| {
                        self.file_error(
                            &describe_key(key),
                            format!(
                                "unknown top-level key; the file holds one key, `{}`",
                                self.key
                            ),
                        )
                    })
                    .collect();
                if !errors.is_empty() {
                    return Err(self.invalid(origin, errors));
                }
                match top.remove(self.key) {
                    None | Some(Value::Null) => None,
                    Some(Value::Sequence(entries)) => Some(entries),
                    Some(_) => {
                        let problem = format!("must be a list of {}s", self.item);
                        return Err(self.invalid(origin, vec![self.file_error(self.key, problem)]));
                    }
                }
            }
            _ => {
                let problem = format!("the file must be a mapping with a `{}` list", self.key);
                return Err(self.invalid(origin, vec![self.file_error(self.key, problem)]));
            }
        };
        let entries = list.unwrap_or_default();
        if entries.is_empty() && self.required {
            let problem = format!("must be a non-empty list of {}s", self.item);
            return Err(self.invalid(origin, vec![self.file_error(self.key, problem)]));
        }
        Ok(entries)
    }

    /// [`FileError::Invalid`] for this file.
    pub fn invalid(&self, origin: &Path, errors: Vec<FieldError>) -> FileError {
        FileError::Invalid {
            what: self.key,
            path: origin.to_owned(),
            errors,
        }
    }

    /// A problem of the file as a whole (reported under `(file)`).
    fn file_error(&self, field: &str, problem: impl Into<String>) -> FieldError {
        FieldError::new(self.item, "(file)", field, problem)
    }
}

/// A mapping key as the user wrote it.
fn describe_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// One entry of a list file, read field by field: each getter takes its field out and records a
/// problem (under the entry's label) instead of failing, so every mistake is reported.
#[derive(Debug)]
pub struct Entry {
    kind: &'static str,
    label: String,
    fields: BTreeMap<String, Value>,
    errors: Vec<FieldError>,
}

impl Entry {
    /// Splits entry number `index` (0-based) into its `known` fields; returns the entry (labelled
    /// `#<index + 1>` until [`Entry::relabel`]) and the unknown keys, or the error if the entry
    /// is not a mapping.
    pub fn new(
        kind: &'static str,
        index: usize,
        value: Value,
        known: &[&str],
    ) -> Result<(Entry, Vec<String>), Vec<FieldError>> {
        let label = format!("#{}", index + 1);
        let Value::Mapping(mapping) = value else {
            return Err(vec![FieldError::new(
                kind,
                &label,
                "(entry)",
                format!("must be a mapping of {kind} fields"),
            )]);
        };
        let mut fields = BTreeMap::new();
        let mut unknown = Vec::new();
        for (key, value) in mapping {
            let key = describe_key(&key);
            if known.contains(&key.as_str()) {
                fields.insert(key, value);
            } else {
                unknown.push(key);
            }
        }
        let entry = Entry {
            kind,
            label,
            fields,
            errors: Vec::new(),
        };
        Ok((entry, unknown))
    }

    /// The label problems are reported under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Reports every problem (also those already recorded) under `label` from now on.
    pub fn relabel(&mut self, label: &str) {
        self.label = label.to_owned();
        for error in &mut self.errors {
            error.item = label.to_owned();
        }
    }

    /// Records one problem per unknown key, listing the `known` fields.
    pub fn unknown_fields(&mut self, unknown: Vec<String>, known: &[&str]) {
        for key in unknown {
            let problem = format!("is not a {} field (known: {})", self.kind, known.join(", "));
            self.error(&key, problem);
        }
    }

    /// Records a problem of `field`.
    pub fn error(&mut self, field: &str, problem: impl Into<String>) {
        let error = FieldError::new(self.kind, &self.label, field, problem);
        self.errors.push(error);
    }

    /// Whether `field` was given (and not yet taken).
    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// Takes `field`'s raw value out (`None` if absent or null).
    pub fn take(&mut self, field: &str) -> Option<Value> {
        match self.fields.remove(field) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        }
    }

    /// A string field; a missing `required` one is a problem.
    pub fn string(&mut self, field: &str, required: bool) -> Option<String> {
        match self.take(field) {
            Some(Value::String(text)) => Some(text),
            None => {
                if required {
                    self.error(field, "is required");
                }
                None
            }
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// A queue or task name ([`name::validate`]).
    pub fn name(&mut self, field: &str, kind: NameKind, required: bool) -> Option<String> {
        let text = self.string(field, required)?;
        match name::validate(kind, &text) {
            Ok(()) => Some(text),
            Err(err) => {
                self.error(field, err.to_string());
                None
            }
        }
    }

    /// A duration with a unit (`500ms`, `30s`, `5m`, `1h`; a bare `0` is zero).
    pub fn duration(&mut self, field: &str) -> Option<Duration> {
        match self.take(field)? {
            Value::String(text) => match humantime::parse_duration(text.trim()) {
                Ok(duration) => Some(duration),
                Err(err) => {
                    let problem =
                        format!("{text:?} is not a duration ({err}); use e.g. 500ms, 30s, 5m, 1h");
                    self.error(field, problem);
                    None
                }
            },
            Value::Number(n) if n.as_u64() == Some(0) => Some(Duration::ZERO),
            _ => {
                self.error(field, "must be a duration with a unit, e.g. 30s, 5m, 1h");
                None
            }
        }
    }

    /// `true` or `false`.
    pub fn bool(&mut self, field: &str) -> Option<bool> {
        match self.take(field)? {
            Value::Bool(value) => Some(value),
            _ => {
                self.error(field, "must be true or false");
                None
            }
        }
    }

    /// A whole number from `min` to `max`.
    pub fn int(&mut self, field: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.take(field)?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(field, format!("must be a whole number from {min} to {max}"));
                None
            }
        }
    }

    /// The problems recorded.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The problems recorded, ending the reading.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: ListFile = ListFile {
        key: "things",
        item: "thing",
        required: false,
    };

    fn only(text: &str) -> Entry {
        let entries = FILE.entries(text, Path::new("t.yaml")).unwrap();
        Entry::new("thing", 0, entries[0].clone(), &["name", "n", "d", "b"])
            .unwrap()
            .0
    }

    #[test]
    fn file_shapes() {
        assert!(FILE.entries("", Path::new("t")).unwrap().is_empty());
        assert!(FILE
            .entries("things:\n", Path::new("t"))
            .unwrap()
            .is_empty());
        let required = ListFile {
            required: true,
            ..FILE
        };
        let err = required
            .entries("things: []", Path::new("t.yaml"))
            .unwrap_err();
        assert!(
            err.to_string().contains("non-empty list of things"),
            "{err}"
        );
        let err = FILE.entries("other: 1", Path::new("t.yaml")).unwrap_err();
        assert!(
            err.to_string().contains("thing (file): field `other`"),
            "{err}"
        );
        let err = FILE.entries("things: 3", Path::new("t.yaml")).unwrap_err();
        assert!(
            err.to_string().contains("must be a list of things"),
            "{err}"
        );
        let err = FILE.entries("- a", Path::new("t.yaml")).unwrap_err();
        assert!(err.to_string().contains("must be a mapping"), "{err}");
        let err = FILE.entries("things: [", Path::new("t.yaml")).unwrap_err();
        assert!(matches!(err, FileError::Syntax { .. }), "{err}");
    }

    #[test]
    fn getters_record_every_problem_under_the_label() {
        let mut entry = only("things:\n  - name: x\n    n: 0\n    d: soon\n    b: 2\n");
        entry.relabel("x");
        assert_eq!(entry.string("name", true).as_deref(), Some("x"));
        assert_eq!(entry.int("n", 1, 10), None);
        assert_eq!(entry.duration("d"), None);
        assert_eq!(entry.bool("b"), None);
        assert_eq!(entry.string("missing", true), None);
        let fields: Vec<(String, String)> = entry
            .into_errors()
            .into_iter()
            .map(|e| (e.item, e.field))
            .collect();
        let expected = [("x", "n"), ("x", "d"), ("x", "b"), ("x", "missing")];
        assert_eq!(
            fields,
            expected.map(|(i, f)| (i.to_owned(), f.to_owned())).to_vec()
        );
    }

    #[test]
    fn values_parse() {
        let mut entry = only("things:\n  - n: 7\n    d: 1m\n    b: true\n");
        assert_eq!(entry.int("n", 1, 10), Some(7));
        assert_eq!(entry.duration("d"), Some(Duration::from_secs(60)));
        assert_eq!(entry.bool("b"), Some(true));
        assert!(entry.errors().is_empty());
    }
}
