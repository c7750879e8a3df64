//! Proptest generators of TOML-ish documents and of small edits to valid files, shared by the
//! fuzz tests of the topology and experiment loaders. Each format supplies its own words.

use super::fixtures::{Located, check_location};
use proptest::prelude::*;

/// What differs between the formats: their key names, scalar values, table headers, and so on.
#[derive(Clone, Copy)]
pub struct TomlGen {
    /// The format's real keys (so generated tables get past "unknown field" often enough to
    /// reach the checks); a few that are not are mixed in.
    pub keys: &'static [&'static str],
    /// Scalar values: words the format uses (quoted), ...
    pub words: &'static [&'static str],
    /// ... more of the format's own (e.g. addresses), generated ...
    pub extra_words: Option<fn() -> BoxedStrategy<String>>,
    /// ... integers near its bounds, and other literals (floats, dates).
    pub integers: &'static [&'static str],
    pub others: &'static [&'static str],
    /// Exclusive upper bound on the length of generated arrays.
    pub max_array: usize,
    /// The format's table headers (others are generated too).
    pub headers: &'static [&'static str],
    /// Regex of the short snippets that [`Mutation::Insert`] inserts (besides any string).
    pub insert: &'static str,
}

impl TomlGen {
    pub fn key(self) -> impl Strategy<Value = String> {
        prop_oneof![
            8 => prop::sample::select(self.keys).prop_map(str::to_string),
            1 => "[a-z_]{1,8}",
            1 => "\"[^\"\\\\\n]{0,6}\"",
        ]
    }

    /// Scalar values: the format's words, integers and other literals, and a few random ones.
    pub fn scalar(self) -> impl Strategy<Value = String> {
        let mut arms: Vec<(u32, BoxedStrategy<String>)> = vec![(
            3,
            prop::sample::select(self.words)
                .prop_map(|s| format!("\"{s}\""))
                .boxed(),
        )];
        arms.extend(self.extra_words.map(|extra| (2, extra())));
        arms.extend([
            (
                2,
                prop::sample::select(self.integers)
                    .prop_map(str::to_string)
                    .boxed(),
            ),
            (1, any::<i64>().prop_map(|i| i.to_string()).boxed()),
            (1, any::<bool>().prop_map(|b| b.to_string()).boxed()),
            (
                1,
                prop::sample::select(self.others)
                    .prop_map(str::to_string)
                    .boxed(),
            ),
            (1, "\"[^\"\\\\\n]{0,12}\"".boxed()),
        ]);
        prop::strategy::Union::new_weighted(arms)
    }

    pub fn value(self) -> impl Strategy<Value = String> {
        self.scalar().prop_recursive(2, 12, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..self.max_array)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((self.key(), inner), 0..4).prop_map(|kv| {
                    let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", pairs.join(", "))
                }),
            ]
        })
    }

    pub fn key_values(self) -> impl Strategy<Value = String> {
        prop::collection::vec((self.key(), self.value()), 0..6).prop_map(|kv| {
            kv.iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>()
        })
    }

    /// Whole documents: a `prefix` (e.g. a first line), top-level keys, then tables with the
    /// format's headers (and some others).
    pub fn document(
        self,
        prefix: impl Strategy<Value = &'static str>,
    ) -> impl Strategy<Value = String> {
        let header = prop_oneof![
            prop::sample::select(self.headers).prop_map(str::to_string),
            self.key().prop_map(|k| format!("[{k}]")),
        ];
        (
            prefix,
            self.key_values(),
            prop::collection::vec((header, self.key_values()), 0..8),
        )
            .prop_map(|(prefix, top, tables)| {
                let mut doc = format!("{prefix}{top}");
                for (h, kv) in tables {
                    doc.push_str(&format!("\n{h}\n{kv}"));
                }
                doc
            })
    }

    pub fn mutation(self) -> impl Strategy<Value = Mutation> {
        prop_oneof![
            1 => (0usize..200).prop_map(Mutation::DeleteLine),
            1 => (0usize..200).prop_map(Mutation::DuplicateLine),
            1 => (0usize..200, 0usize..200).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
            3 => (0usize..200, self.value()).prop_map(|(l, v)| Mutation::ReplaceValue(l, v)),
            1 => (0usize..4000, prop_oneof![self.insert, any::<String>()])
                .prop_map(|(at, s)| Mutation::Insert(at, s)),
            1 => (0usize..4000, 1usize..8).prop_map(|(at, n)| Mutation::DeleteChars(at, n)),
        ]
    }

    /// One of the valid `bases` with a few random edits.
    pub fn near_valid(self, bases: Vec<String>) -> impl Strategy<Value = String> {
        (
            prop::sample::select(bases),
            prop::collection::vec(self.mutation(), 1..4),
        )
            .prop_map(|(base, ms)| ms.iter().fold(base, |text, m| apply(&text, m)))
    }
}

/// An edit to a valid file.
#[derive(Debug, Clone)]
pub enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Replace the value of a `key = value` line.
    ReplaceValue(usize, String),
    /// Insert text at a character position.
    Insert(usize, String),
    /// Delete some characters.
    DeleteChars(usize, usize),
}

pub fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::ReplaceValue(i, v) => {
            // Only lines with a value; otherwise the mutation does nothing.
            let candidates: Vec<usize> = (0..n)
                .filter(|&j| lines[j].contains(" = ") && !lines[j].starts_with('#'))
                .collect();
            if !candidates.is_empty() {
                let j = candidates[i % candidates.len()];
                let k = lines[j].split(" = ").next().unwrap_or("").to_string();
                lines[j] = format!("{k} = {v}");
            }
        }
        Mutation::Insert(at, s) => {
            let chars: Vec<char> = text.chars().collect();
            let at = at % (chars.len() + 1);
            let mut out: String = chars[..at].iter().collect();
            out.push_str(s);
            out.extend(&chars[at..]);
            return out;
        }
        Mutation::DeleteChars(at, len) => {
            let chars: Vec<char> = text.chars().collect();
            let at = at % (chars.len() + 1);
            let end = (at + len).min(chars.len());
            return chars[..at].iter().chain(&chars[end..]).collect();
        }
    }
    lines.join("\n")
}

/// The check of one fuzz input: a loader's `parsed` outcome of `text` either holds its
/// `invariants` or is an error that, as `located`, points inside the input.
pub fn check_outcome<T, E>(
    text: &str,
    parsed: Result<T, E>,
    invariants: impl FnOnce(&T),
    located: impl FnOnce(&E) -> Located,
) -> Result<(), TestCaseError> {
    match parsed {
        Ok(t) => {
            invariants(&t);
            Ok(())
        }
        Err(e) => check_location(&located(&e))
            .map_err(|p| TestCaseError::fail(format!("{p}\ninput: {text:?}"))),
    }
}

/// The loader's fuzz tests: `$parse` (text, path) of any string, strings of the `$toml_like`
/// regex, the `$documents` and the `$mutated` files, at `$path`, must not panic, and either
/// holds `$invariants` or is an error that, as `$located` (error, text, path), points inside the
/// input.
#[macro_export]
macro_rules! never_panic_tests {
    (
        parse: $parse:path,
        invariants: $invariants:path,
        located: $located:path,
        path: $path:expr,
        toml_like: $toml_like:literal,
        documents: $documents:expr,
        $mutated_name:ident: $mutated:expr $(,)?
    ) => {
        fn check_any(text: &str) -> Result<(), ::proptest::test_runner::TestCaseError> {
            let parsed = $parse(text, ::std::path::Path::new($path));
            $crate::support::toml_gen::check_outcome(text, parsed, $invariants, |e| {
                $located(e, text, $path)
            })
        }

        ::proptest::proptest! {
            #![proptest_config(::proptest::prelude::ProptestConfig {
                cases: 512,
                ..::proptest::prelude::ProptestConfig::default()
            })]

            #[test]
            fn arbitrary_strings_never_panic(text in ::proptest::prelude::any::<String>()) {
                check_any(&text)?;
            }

            #[test]
            fn toml_like_strings_never_panic(text in $toml_like) {
                check_any(&text)?;
            }

            #[test]
            fn generated_documents_never_panic(text in $documents) {
                check_any(&text)?;
            }

            #[test]
            fn $mutated_name(text in $mutated) {
                check_any(&text)?;
            }
        }
    };
}
