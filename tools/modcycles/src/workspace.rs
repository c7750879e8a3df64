//! Just enough `Cargo.toml` reading to find the workspace's member crates and their names.
//!
//! A TOML parser would be one more dependency for two facts (the `members` array of
//! `[workspace]` and the `name` of `[package]`), both of which our manifests write in the plain
//! form this reader understands. Anything it cannot read is an error rather than a guess, so a
//! manifest written differently fails CI loudly instead of silently checking fewer crates.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The directories of the workspace's members, in manifest order, `*` patterns expanded.
pub fn member_dirs(workspace_root: &Path) -> Result<Vec<PathBuf>> {
    let manifest = workspace_root.join("Cargo.toml");
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let members = members(&text).with_context(|| format!("reading {}", manifest.display()))?;
    let mut dirs = Vec::new();
    for member in members {
        if member.contains('*') {
            dirs.extend(expand(workspace_root, &member)?);
        } else {
            dirs.push(workspace_root.join(member));
        }
    }
    Ok(dirs)
}

/// The `[package] name` of the crate in `dir`; a fixture crate without a manifest is named after
/// its directory.
pub fn package_name(dir: &Path) -> Result<String> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        return Ok(dir_name(dir));
    }
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let section = section(&text, "package")
        .with_context(|| format!("{} has no [package] section", manifest.display()))?;
    for line in section.lines() {
        if let Some(value) = key_value(line, "name") {
            return unquote(value)
                .map(str::to_owned)
                .with_context(|| format!("{}: cannot read `{}`", manifest.display(), line.trim()));
        }
    }
    bail!("{} has no `name` in [package]", manifest.display())
}

/// The last component of `dir`, or the whole of it when it has none (such as `.`).
fn dir_name(dir: &Path) -> String {
    let absolute = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// The strings of `members = [...]` in the `[workspace]` section.
fn members(manifest: &str) -> Result<Vec<String>> {
    let Some(section) = section(manifest, "workspace") else {
        bail!("no [workspace] section");
    };
    let Some(start) = section
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| key_value(line, "members").is_some())
        .map(|(at, _)| at)
    else {
        bail!("no `members` in [workspace]");
    };
    let rest = &section[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        bail!("`members` is not an array written as [\"...\", ...]");
    };
    if close < open {
        bail!("`members` is not an array written as [\"...\", ...]");
    }
    let mut out = Vec::new();
    for line in rest[open + 1..close].lines() {
        for item in strip_comment(line).split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some(value) = unquote(item) else {
                bail!("cannot read member `{item}`");
            };
            out.push(value.to_owned());
        }
    }
    Ok(out)
}

/// The text of section `[name]`, up to the next section header.
fn section<'a>(manifest: &'a str, name: &str) -> Option<&'a str> {
    let header = format!("[{name}]");
    let mut offset = 0;
    let mut start = None;
    for line in manifest.split_inclusive('\n') {
        let trimmed = strip_comment(line).trim();
        if let Some(begin) = start {
            // A header (`[x]` or `[[x]]`); a line of a multi-line array holds quotes or `=`.
            let header = trimmed.starts_with('[') && trimmed.ends_with(']');
            if header && !trimmed.contains(['=', '"']) {
                return Some(&manifest[begin..offset]);
            }
        } else if trimmed == header {
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    start.map(|begin| &manifest[begin..])
}

/// The value of `key = value` on `line`, if the line sets that key.
fn key_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let line = strip_comment(line).trim();
    let rest = line.strip_prefix(key)?.trim_start();
    Some(rest.strip_prefix('=')?.trim())
}

/// `line` without a trailing `# comment` (a `#` inside a string is kept).
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The contents of a basic `"..."` string without escapes.
fn unquote(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then_some(inner)
}

/// The directories matching a member pattern whose last component holds `*`
/// (such as `crates/*`), each holding a `Cargo.toml`, sorted.
fn expand(workspace_root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let (parent, last) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if parent.contains('*') {
        bail!("member pattern `{pattern}`: only the last component may hold `*`");
    }
    let Some((prefix, suffix)) = last.split_once('*') else {
        bail!("member pattern `{pattern}` has no `*`");
    };
    if suffix.contains('*') {
        bail!("member pattern `{pattern}`: only one `*` is supported");
    }
    let dir = workspace_root.join(parent);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let matches = name.len() >= prefix.len() + suffix.len()
            && name.starts_with(prefix)
            && name.ends_with(suffix);
        if matches && entry.path().join("Cargo.toml").is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_line_and_multi_line_members() {
        let one = "[workspace]\nresolver = \"3\"\nmembers = [\"a\", \"tools/b\"]\n\n[workspace.package]\nversion = \"1\"\n";
        assert_eq!(members(one).unwrap(), ["a", "tools/b"]);
        let multi = "[package]\nname = \"x\"\n[workspace]\nmembers = [\n  \"a\", # the first\n  \"b\",\n]\n";
        assert_eq!(members(multi).unwrap(), ["a", "b"]);
        assert!(members("[package]\nname = \"x\"\n").is_err());
    }

    #[test]
    fn finds_the_package_section_only() {
        let text = "[workspace]\nname = \"no\"\n[package]\nname = \"yes\" # comment\n";
        let package = section(text, "package").unwrap();
        assert_eq!(
            key_value(package.lines().next().unwrap(), "name"),
            Some("\"yes\"")
        );
    }
}
