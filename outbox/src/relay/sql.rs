//! The relay's SQL, one function per statement, with the table name spliced in (validated by
//! [`TableName`]). The claim protocol is in `claim.rs`; PROTOCOL.md §10 describes it.

use crate::TableName;

use super::row::FIRST_ATTEMPT_KEY;

/// Marks up to `$1` of the oldest rows that no relay holds as being attempted, in its own
/// committed statement: `attempts + 1`, and the first attempt's time (`$2`) in `headers` unless
/// an earlier attempt left one. Returns their ids.
pub(crate) fn mark(table: &TableName) -> String {
    format!(
        "WITH next AS (SELECT id FROM {t} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         UPDATE {t} AS o SET attempts = o.attempts + 1, \
           headers = CASE WHEN jsonb_typeof(o.headers) <> 'object' OR o.headers ? '{k}' \
                          THEN o.headers \
                          ELSE o.headers || jsonb_build_object('{k}', $2::text) END \
         FROM next WHERE o.id = next.id RETURNING o.id",
        t = table,
        k = FIRST_ATTEMPT_KEY
    )
}

/// Locks the marked rows (`$1`) that no other relay locked meanwhile, oldest first.
pub(crate) fn lock(table: &TableName) -> String {
    format!(
        "SELECT id, msg_id, subject, headers, payload, attempts FROM {table} \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"
    )
}

/// Deletes relayed (or dead-lettered) rows `$1`.
pub(crate) fn delete(table: &TableName) -> String {
    format!("DELETE FROM {table} WHERE id = ANY($1)")
}

/// Records why rows `$1` failed (`$2`), and forgets the first-attempt time of those whose
/// attempt provably stored nothing and was their first (`$3`).
pub(crate) fn record_failures(table: &TableName) -> String {
    format!(
        "UPDATE {t} AS o SET last_error = f.error, \
           headers = CASE WHEN f.forget THEN o.headers - '{k}' ELSE o.headers END \
         FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, error, forget) \
         WHERE o.id = f.id",
        t = table,
        k = FIRST_ATTEMPT_KEY
    )
}

/// The age in seconds of the oldest row (NULL when the table is empty).
pub(crate) fn lag(table: &TableName) -> String {
    format!(
        "SELECT EXTRACT(EPOCH FROM (now() - created_at))::float8 FROM {table} \
         ORDER BY created_at LIMIT 1"
    )
}

/// Whether the table exists (its regclass, or NULL).
pub(crate) const TABLE_EXISTS: &str = "SELECT to_regclass($1)::text";
