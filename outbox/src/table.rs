//! The outbox table's name and the SQL statements that use it.
//!
//! The name is spliced into SQL (a table name cannot be a bind parameter), so it is validated
//! once, here, to the form both the Rust and the Python writers accept: `[a-z_][a-z0-9_]{0,62}`
//! (a plain PostgreSQL identifier that needs no quoting). It is also the `LISTEN/NOTIFY` channel.

use std::fmt;

use crate::OutboxError;

/// The default table (and NOTIFY channel) name.
pub const DEFAULT_TABLE: &str = "jetq_outbox";

/// A validated outbox table name.
///
/// ```
/// use jetq_outbox::TableName;
/// assert_eq!(TableName::new("jetq_outbox").unwrap().as_str(), "jetq_outbox");
/// assert!(TableName::new("outbox; DROP TABLE users").is_err());
/// assert!(TableName::new("Outbox").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    /// Validates `name`: `[a-z_][a-z0-9_]{0,62}`.
    pub fn new(name: &str) -> Result<TableName, OutboxError> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && name.len() <= 63 {
            Ok(TableName(name.to_owned()))
        } else {
            Err(OutboxError::InvalidTable {
                name: name.to_owned(),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical migration with this table name (and its index, trigger function, trigger
    /// and NOTIFY channel named after it).
    pub fn migration_sql(&self) -> String {
        crate::migrate::MIGRATION_0001.replace(DEFAULT_TABLE, &self.0)
    }

    pub(crate) fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (msg_id, subject, headers, payload) VALUES ($1, $2, $3, $4)",
            self.0
        )
    }
}

impl Default for TableName {
    fn default() -> Self {
        TableName(DEFAULT_TABLE.to_owned())
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_lowercase_identifiers() {
        for good in ["jetq_outbox", "_o", "a1", &"a".repeat(63)] {
            assert!(TableName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "1a", "A", "a-b", "a.b", "a b", "a;", &"a".repeat(64)] {
            assert!(TableName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_migration_follows_the_name() {
        let sql = TableName::new("app_tasks").unwrap().migration_sql();
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS app_tasks ("));
        assert!(sql.contains("pg_notify('app_tasks', '')"));
        assert!(!sql.contains("jetq_outbox"));
    }
}
