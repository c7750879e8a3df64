//! Error presentation shared by the commands.

/// An error and all its causes on one line, `outer: cause: root cause`, as users need the root
/// cause ("Permission denied") as much as the context ("creating namespace hl.x.primary").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some errors repeat their source's text in their own; do not print it twice.
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
