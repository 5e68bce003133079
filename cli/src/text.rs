//! Text as the CLI and the dashboard show it in a table cell or a detail line.

/// `text` on one line (line breaks become spaces), cut to at most `max` characters with `…` as
/// the last one when it was longer.
///
/// ```
/// assert_eq!(jetq_cli::text::cut("smtp\nrefused", 20), "smtp refused");
/// assert_eq!(jetq_cli::text::cut("abcdef", 4), "abc…");
/// ```
pub fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}
