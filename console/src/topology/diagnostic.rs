//! Errors that point into a file: `file:line:column`, the offending line with carets under the
//! span, and a hint saying what would be accepted (DESIGN §8: every error names the file, line
//! and column).
//!
//! [`Diagnostic`] knows nothing about topologies, so the experiment parser can reuse it as is:
//! build one with [`Diagnostic::at_span`] from any byte span of the text, or with
//! [`Diagnostic::from_toml`] from a `toml` deserialisation error.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where a diagnostic points: 1-based line and column (the column counted in characters, as
/// editors show it), the text of that line and how many characters of it to underline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    /// The line holding the start of the span, without its line ending and with control
    /// characters (tabs) shown as spaces so the carets line up under it.
    pub snippet: String,
    /// Characters to underline, at least one (an empty span, such as the end of the file,
    /// still gets one caret).
    pub width: usize,
}

impl Location {
    /// Locates byte `span` of `text`. Never panics: the span is clamped to the text and moved
    /// back to character boundaries, so any span (even one from a buggy caller) gives a line
    /// and column inside the text.
    pub fn of_span(text: &str, span: Range<usize>) -> Location {
        let start = floor_char_boundary(text, span.start);
        let end = floor_char_boundary(text, span.end.max(start));
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let column = text[line_start..start].chars().count() + 1;
        let width = text[start..end.min(line_end)].chars().count().max(1);
        let raw_line = &text[line_start..line_end];
        let raw_line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let snippet = raw_line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Location {
            line,
            column,
            snippet,
            width,
        }
    }
}

/// The largest char boundary of `text` that is `<= index` (`str::floor_char_boundary` is not
/// stable yet).
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut i = index.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One error in one file. `Display` renders all of it:
///
/// ```text
/// error: topologies/bad.toml:7:1: unknown field `rolez`
///   |
/// 7 | rolez = ["primary"]
///   | ^^^^^
///   = hint: expected one of `name`, `roles`, `addresses`, ...
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    /// The file, exactly as the caller named it (so messages match what the user typed).
    pub path: PathBuf,
    /// `None` only for errors about the file as a whole (it cannot be read).
    pub location: Option<Location>,
    pub message: String,
    /// What would be accepted, or how to fix it.
    pub hint: String,
}

impl Diagnostic {
    /// An error about bytes `span` of `text`, the contents of `path`.
    pub fn at_span(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            path: path.to_path_buf(),
            location: Some(Location::of_span(text, span)),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// An error about the file as a whole, e.g. that it cannot be read.
    pub fn whole_file(path: &Path, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            location: None,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Converts a `toml` error (syntax, or a serde error while deserialising `text`) into a
    /// diagnostic. toml phrases most errors as "what, expected what"; the first part becomes
    /// the message and the second the hint, with serde's Rust type names (`i64`, `struct Run`,
    /// `a sequence`) translated into TOML words. Errors without a span point at the start of the
    /// file, so every diagnostic from a text has a location.
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Diagnostic {
        let span = error.span().unwrap_or(0..0);
        let raw = error.message().trim();
        let (mut message, hint) = split_toml_message(raw);
        // toml does not say which key is duplicated; the span is that key.
        if raw == "duplicate key"
            && let Some(key) = text.get(span.clone())
            && !key.is_empty()
            && !key.contains('\n')
        {
            message = format!("duplicate key `{key}`");
        }
        Diagnostic::at_span(path, text, span, message, hint)
    }

    pub fn line(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.line)
    }

    pub fn column(&self) -> Option<usize> {
        self.location.as_ref().map(|l| l.column)
    }
}

/// Collects the errors of a file while checking it, so the caller can report the one that
/// comes first in the file rather than the one its checks happened to find first. Checks that
/// depend on others run in later stages, after [`Reporter::finish`] found the earlier stages
/// clean, so one mistake does not also show up as a confusing follow-on error further up.
#[derive(Debug)]
pub struct Reporter<'a> {
    path: &'a Path,
    text: &'a str,
    /// (byte offset, diagnostic), in the order the checks found them.
    found: Vec<(usize, Diagnostic)>,
}

impl<'a> Reporter<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Reporter {
            path,
            text,
            found: Vec::new(),
        }
    }

    /// Records an error about bytes `span` of the text.
    pub fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let start = span.start;
        let diagnostic = Diagnostic::at_span(self.path, self.text, span, message, hint);
        self.found.push((start, diagnostic));
    }

    /// The 1-based line of a span, for hints that refer to another place in the file.
    pub fn line_of(&self, span: Range<usize>) -> usize {
        Location::of_span(self.text, span).line
    }

    pub fn has_errors(&self) -> bool {
        !self.found.is_empty()
    }

    /// `Err` with the error that comes first in the file (of those found so far; on a tie, the
    /// one found first) when there is any.
    pub fn finish(&mut self) -> Result<(), Diagnostic> {
        let first = std::mem::take(&mut self.found)
            .into_iter()
            .min_by_key(|(start, _)| *start);
        match first {
            Some((_, diagnostic)) => Err(diagnostic),
            None => Ok(()),
        }
    }

    /// For a check that found nothing to complain about yet could not produce its value: a bug
    /// in the checks, reported as an error rather than a panic.
    pub fn internal(&self, what: &str) -> Diagnostic {
        Diagnostic::at_span(
            self.path,
            self.text,
            0..0,
            format!("internal error: {what} was rejected without a reason"),
            "please report this together with the file",
        )
    }
}

/// Splits a toml/serde message into message and hint, see [`Diagnostic::from_toml`].
fn split_toml_message(raw: &str) -> (String, String) {
    // serde's own messages: "unknown field `x`, expected one of ...", "invalid type: integer
    // `5`, expected a string", "unknown variant ...". toml's syntax errors read "invalid
    // literal string, expected `'`". Split at the first ", expected ".
    if let Some((what, expected)) = raw.split_once(", expected ") {
        let hint = format!("expected {}", tomlish_expectation(expected));
        return (what.to_string(), hint);
    }
    if let Some(field) = raw
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return (
            format!("missing key `{field}`"),
            format!("add `{field} = ...` to this table"),
        );
    }
    let hint = match raw {
        "duplicate key" => "each key may appear only once in a table",
        _ => "check the TOML syntax here (https://toml.io)",
    };
    (raw.to_string(), hint.to_string())
}

/// serde names Rust types in its expectations; say what to write in TOML instead.
fn tomlish_expectation(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => "an integer".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a sequence" => "an array".to_string(),
        "a map" => "a table".to_string(),
        e if e.starts_with("struct ") => "a table".to_string(),
        e => e.to_string(),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let Some(loc) = &self.location else {
            write!(f, "error: {path}: {}", self.message)?;
            return write!(f, "\n  = hint: {}", self.hint);
        };
        writeln!(
            f,
            "error: {path}:{}:{}: {}",
            loc.line, loc.column, self.message
        )?;
        let number = loc.line.to_string();
        let pad = " ".repeat(number.len());
        writeln!(f, "{pad} |")?;
        // Trimmed, so an empty line leaves no trailing space.
        writeln!(f, "{}", format!("{number} | {}", loc.snippet).trim_end())?;
        let indent = " ".repeat(loc.column.saturating_sub(1));
        writeln!(f, "{pad} | {indent}{}", "^".repeat(loc.width))?;
        write!(f, "{pad} = hint: {}", self.hint)
    }
}

/// Why a topology file could not be loaded: it could not be read, or it is not a valid
/// topology. Either way `Display` renders the whole diagnostic (file, line and column when
/// known, the offending line, a hint), ready to print as is.
#[derive(Debug, thiserror::Error)]
#[error("{diagnostic}")]
pub struct TopologyError {
    /// Boxed: it is large, and `Result`s should stay small.
    diagnostic: Box<Diagnostic>,
    /// The read error, when the file could not be read; its text is part of the diagnostic,
    /// so it is not exposed as `source()` as well (it would be printed twice).
    io: Option<std::io::Error>,
}

impl TopologyError {
    /// The file at `path` could not be read.
    pub fn read(path: &Path, error: std::io::Error) -> Self {
        let hint = match error.kind() {
            std::io::ErrorKind::NotFound => {
                "check the path; the shipped topologies are in `topologies/`"
            }
            std::io::ErrorKind::InvalidData => "a topology file must be UTF-8 text",
            std::io::ErrorKind::PermissionDenied => "check the file's permissions",
            _ => "check that the path names a readable file",
        };
        TopologyError {
            diagnostic: Box::new(Diagnostic::whole_file(
                path,
                format!("cannot read the topology file: {error}"),
                hint,
            )),
            io: Some(error),
        }
    }

    pub fn diagnostic(&self) -> &Diagnostic {
        &self.diagnostic
    }

    /// The read error, if the file could not be read.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.io.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.diagnostic.path
    }

    pub fn line(&self) -> Option<usize> {
        self.diagnostic.line()
    }

    pub fn column(&self) -> Option<usize> {
        self.diagnostic.column()
    }

    pub fn message(&self) -> &str {
        &self.diagnostic.message
    }

    pub fn hint(&self) -> &str {
        &self.diagnostic.hint
    }
}

impl From<Diagnostic> for TopologyError {
    fn from(diagnostic: Diagnostic) -> Self {
        TopologyError {
            diagnostic: Box::new(diagnostic),
            io: None,
        }
    }
}

/// The key a toml "missing field" error names, if that is what it is: the loaders replace the
/// generic hint with one that says what to write.
pub fn missing_field(error: &toml::de::Error) -> Option<&str> {
    error
        .message()
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_columns_in_characters() {
        let text = "a = 1\nname = \"é\" x\n";
        let start = text.find('x').unwrap();
        let loc = Location::of_span(text, start..start + 1);
        assert_eq!((loc.line, loc.column, loc.width), (2, 12, 1));
        assert_eq!(loc.snippet, "name = \"é\" x");
    }

    #[test]
    fn spans_past_the_end_or_inside_a_character_are_clamped() {
        let text = "é\n";
        let loc = Location::of_span(text, 1..100);
        assert_eq!((loc.line, loc.column), (1, 1));
        let loc = Location::of_span(text, 50..60);
        assert_eq!((loc.line, loc.column, loc.width), (2, 1, 1));
        // A reversed span, as a buggy caller might pass.
        #[allow(clippy::reversed_empty_ranges)]
        let loc = Location::of_span("", 3..1);
        assert_eq!((loc.line, loc.column, loc.width), (1, 1, 1));
    }

    #[test]
    fn renders_snippet_and_hint() {
        let text = "name = \"x\"\nrolez = [\"primary\"]\n";
        let d = Diagnostic::at_span(
            Path::new("t.toml"),
            text,
            11..16,
            "unknown field `rolez`",
            "expected `roles`",
        );
        assert_eq!(
            d.to_string(),
            "error: t.toml:2:1: unknown field `rolez`\n  |\n\
             2 | rolez = [\"primary\"]\n  | ^^^^^\n  = hint: expected `roles`"
        );
    }

    #[test]
    fn splits_serde_messages() {
        let (m, h) = split_toml_message("invalid type: string \"a\", expected u16");
        assert_eq!(m, "invalid type: string \"a\"");
        assert_eq!(h, "expected an integer");
        let (m, h) = split_toml_message("missing field `mode`");
        assert_eq!(m, "missing key `mode`");
        assert_eq!(h, "add `mode = ...` to this table");
    }
}
