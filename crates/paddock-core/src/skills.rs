//! Skills (spec §12): the SKILL.md rules, the workspace copies under `.paddock/skills/`, and
//! what a run's system prompt lists (name, description, path; never the body: the model reads
//! the file with `read_file` when it needs it, so many skills cost little context).
//!
//! # Front matter
//!
//! The front matter is parsed by hand as a documented subset of YAML that covers what SKILL.md
//! files use: a flat mapping of `key: value` lines, where a value is a plain scalar, a
//! single-quoted string (`''` escapes a quote) or a double-quoted string (`\"`, `\\`, `\n`,
//! `\t` escapes), or a block scalar (`|` or `>`, optionally with `-`/`+`) made of the
//! following more-indented lines. Blank lines and `#` comment lines are skipped. Keys other
//! than `name` and `description` may hold anything, including nested (indented) mappings and
//! lists, which are skipped. A `name` or `description` that is not a string (a nested mapping,
//! a flow sequence or mapping) breaks its rule.

use std::collections::HashMap;

use thiserror::Error;

/// Largest SKILL.md, in bytes (spec §1.12, §12.1 rule 1).
pub const MAX_SKILL_BYTES: usize = 100 * 1024;

/// Where `inline` and `url` skills are copied before each run, relative to the workspace root.
pub const SKILLS_DIR: &str = ".paddock/skills";

/// The workspace path of the copy of skill `name`.
pub fn copy_path(name: &str) -> String {
    format!("{SKILLS_DIR}/{name}/SKILL.md")
}

/// A SKILL.md that follows the rules: its front-matter `name` and `description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSkill {
    pub name: String,
    pub description: String,
}

/// A broken rule of spec §12.1; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("SKILL.md rule {rule}: {message}")]
pub struct SkillError {
    /// The number of the rule in spec §12.1 (1–6).
    pub rule: u8,
    pub message: String,
}

fn broken(rule: u8, message: impl Into<String>) -> SkillError {
    SkillError {
        rule,
        message: message.into(),
    }
}

/// Whether `name` is a valid skill name (rule 3): 1–64 characters of `a-z`, digits and `-`,
/// no leading or trailing `-`, no `--`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Checks a SKILL.md against spec §12.1 for the skill entry named `expected_name`.
pub fn parse(bytes: &[u8], expected_name: &str) -> Result<ParsedSkill, SkillError> {
    if bytes.len() > MAX_SKILL_BYTES {
        return Err(broken(
            1,
            format!(
                "the file is {} bytes; at most {MAX_SKILL_BYTES} (100 KiB) are allowed",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| broken(1, format!("the file is not valid UTF-8 ({e})")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    if lines.next().map(str::trim_end) != Some("---") {
        return Err(broken(
            2,
            "the file must start with a `---` line, then the YAML front matter, then `---`",
        ));
    }
    let mut front = Vec::new();
    let mut closed = false;
    for line in lines.by_ref() {
        if line.trim_end() == "---" {
            closed = true;
            break;
        }
        front.push(line);
    }
    if !closed {
        return Err(broken(2, "the front matter is not closed by a `---` line"));
    }
    let map = front_matter(&front)?;
    let name = match map.get("name") {
        None => return Err(broken(3, "`name` is required in the front matter")),
        Some(Scalar::NotString) => return Err(broken(3, "`name` must be a string")),
        Some(Scalar::Text(n)) => n.clone(),
    };
    if !valid_name(&name) {
        return Err(broken(
            3,
            format!(
                "`name` {name:?} must be 1–64 characters of lowercase a-z, digits and `-`, \
                 without a leading or trailing `-` or `--`"
            ),
        ));
    }
    let description = match map.get("description") {
        None => return Err(broken(4, "`description` is required in the front matter")),
        Some(Scalar::NotString) => return Err(broken(4, "`description` must be a string")),
        Some(Scalar::Text(d)) => d.clone(),
    };
    let len = description.chars().count();
    if len == 0 || len > 1024 {
        return Err(broken(
            4,
            format!("`description` must be 1–1,024 characters, not {len}"),
        ));
    }
    if name != expected_name {
        return Err(broken(
            6,
            format!(
                "the front-matter `name` {name:?} must equal the skill's name {expected_name:?}"
            ),
        ));
    }
    Ok(ParsedSkill { name, description })
}

/// A front-matter value as far as the rules care.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Text(String),
    NotString,
}

/// Parses the flat mapping (see the module docs). Any line it cannot read breaks rule 2.
fn front_matter(lines: &[&str]) -> Result<HashMap<String, Scalar>, SkillError> {
    let mut map = HashMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Part of a nested value of a key we skip (checked when that key was read).
            return Err(broken(
                2,
                format!(
                    "line {:?} of the front matter is indented under no key",
                    trimmed
                ),
            ));
        }
        let Some((key, rest)) = split_key(line) else {
            return Err(broken(
                2,
                format!("front-matter line {trimmed:?} is not a `key: value` pair"),
            ));
        };
        let rest = rest.trim();
        // Indented lines after this one belong to its value.
        let start = i;
        while i < lines.len() && (lines[i].trim().is_empty() || lines[i].starts_with([' ', '\t'])) {
            i += 1;
        }
        let nested = &lines[start..i];
        let value = if rest.is_empty() {
            // `key:` alone is YAML null, or a nested mapping or list: not a string.
            Scalar::NotString
        } else if let Some(style) = block_style(rest) {
            Scalar::Text(block_scalar(style, nested))
        } else {
            if nested
                .iter()
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
            {
                // A plain scalar continued on more lines: folded with spaces.
                let mut text = inline_scalar(rest).map_err(|m| broken(2, m))?;
                if let Scalar::Text(t) = &mut text {
                    for l in nested.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
                        t.push(' ');
                        t.push_str(l);
                    }
                }
                text
            } else {
                inline_scalar(rest).map_err(|m| broken(2, m))?
            }
        };
        if map.insert(key.to_owned(), value).is_some() {
            return Err(broken(2, format!("front-matter key `{key}` appears twice")));
        }
    }
    Ok(map)
}

/// `key: rest` → (`key`, `rest`); keys are plain (no quotes) here.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let idx = line.find(':')?;
    let key = line[..idx].trim();
    let rest = &line[idx + 1..];
    if key.is_empty() || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, rest))
}

/// `|`, `>`, with an optional chomping indicator.
fn block_style(rest: &str) -> Option<char> {
    let rest = rest.split(" #").next().unwrap_or(rest).trim();
    match rest {
        "|" | "|-" | "|+" => Some('|'),
        ">" | ">-" | ">+" => Some('>'),
        _ => None,
    }
}

fn block_scalar(style: char, lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let body: Vec<&str> = lines
        .iter()
        .map(|l| if l.len() >= indent { &l[indent..] } else { "" })
        .collect();
    let text = if style == '|' {
        body.join("\n")
    } else {
        body.iter()
            .map(|l| l.trim_end())
            .collect::<Vec<_>>()
            .join(" ")
    };
    text.trim().to_owned()
}

fn inline_scalar(rest: &str) -> Result<Scalar, String> {
    if let Some(inner) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated double-quoted string {rest:?}")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    other => {
                        return Err(format!(
                            "unsupported escape `\\{}` in {rest:?}",
                            other.map(String::from).unwrap_or_default()
                        ));
                    }
                },
                Some(c) => out.push(c),
            }
        }
        check_trailer(chars.as_str(), rest)?;
        return Ok(Scalar::Text(out));
    }
    if let Some(inner) = rest.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = inner.chars().peekable();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated single-quoted string {rest:?}")),
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    out.push('\'');
                }
                Some('\'') => break,
                Some(c) => out.push(c),
            }
        }
        let trailer: String = chars.collect();
        check_trailer(&trailer, rest)?;
        return Ok(Scalar::Text(out));
    }
    // Plain scalar: a comment starts at ` #`.
    let value = rest.split(" #").next().unwrap_or(rest).trim();
    if value.starts_with(['[', '{']) {
        return Ok(Scalar::NotString);
    }
    if value.starts_with(['&', '*', '!', '|', '>', '%', '@', '`']) {
        return Err(format!("unsupported YAML value {value:?}"));
    }
    // YAML reads these as null, booleans or numbers, not strings.
    if matches!(
        value,
        "~" | "null" | "Null" | "NULL" | "true" | "false" | "True" | "False"
    ) || value.parse::<f64>().is_ok()
    {
        return Ok(Scalar::NotString);
    }
    Ok(Scalar::Text(value.to_owned()))
}

fn check_trailer(trailer: &str, whole: &str) -> Result<(), String> {
    let t = trailer.trim();
    if t.is_empty() || t.starts_with('#') {
        Ok(())
    } else {
        Err(format!(
            "unexpected text after the quoted string in {whole:?}"
        ))
    }
}

/// Reads and checks a `file` skill at workspace `path`: its description, or why it cannot be
/// used (for the skill's `error`).
pub fn read_file_skill(
    workspace: &crate::workspace::Workspace,
    path: &str,
    name: &str,
) -> Result<String, String> {
    let (_, file, _) = workspace
        .read(path)
        .map_err(|e| format!("Cannot read {path}: {e}."))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_SKILL_BYTES as u64 + 1),
        &mut bytes,
    )
    .map_err(|e| format!("Cannot read {path}: {e}."))?;
    parse(&bytes, name)
        .map(|p| p.description)
        .map_err(|e| format!("{path}: {e}."))
}

/// Makes `.paddock/skills/` hold exactly `<name>/SKILL.md` for each `(name, text)`: copies
/// that differ are rewritten, anything else there is removed.
pub fn sync_copies(
    workspace: &crate::workspace::Workspace,
    copies: &[(String, String)],
) -> Result<(), crate::workspace::FsError> {
    use crate::workspace::FsError;
    if !workspace.root().is_dir() {
        return Ok(());
    }
    match workspace.list(SKILLS_DIR, usize::MAX) {
        Ok(listing) => {
            for entry in listing.entries {
                let keep = entry.is_dir && copies.iter().any(|(n, _)| *n == entry.name);
                if !keep {
                    workspace.remove(&format!("{SKILLS_DIR}/{}", entry.name))?;
                }
            }
        }
        Err(FsError::NotFound) => {}
        Err(FsError::NotDirectory) => {
            workspace.remove(SKILLS_DIR)?;
        }
        Err(e) => return Err(e),
    }
    for (name, text) in copies {
        let path = copy_path(name);
        let same = workspace
            .read(&path)
            .ok()
            .and_then(|(_, mut f, _)| {
                let mut current = String::new();
                std::io::Read::read_to_string(&mut f, &mut current).ok()?;
                Some(current == *text)
            })
            .unwrap_or(false);
        if !same {
            workspace.write(&path, text.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# Thumbnail design\n1. Three words of text at most.\n";

    fn file(front: &str) -> String {
        format!("---\n{front}\n---\n{BODY}")
    }

    #[test]
    fn valid_files() {
        let cases: &[(&str, &str)] = &[
            (
                "name: thumbnail-design\ndescription: Design YouTube thumbnails.",
                "Design YouTube thumbnails.",
            ),
            (
                "name: \"thumbnail-design\"\ndescription: 'It''s: quoted' # comment",
                "It's: quoted",
            ),
            (
                "# a comment\nname: thumbnail-design\nlicense: MIT\nmetadata:\n  author: acme\n  tags: [a, b]\ndescription: \"Line \\\"one\\\"\"",
                "Line \"one\"",
            ),
            (
                "name: thumbnail-design\ndescription: >\n  Folded over\n  two lines.\n",
                "Folded over two lines.",
            ),
            (
                "name: thumbnail-design\ndescription: |-\n  Literal\n  block",
                "Literal\nblock",
            ),
            (
                "name: thumbnail-design\ndescription: Plain that\n  continues here",
                "Plain that continues here",
            ),
        ];
        for (front, description) in cases {
            let parsed = parse(file(front).as_bytes(), "thumbnail-design")
                .unwrap_or_else(|e| panic!("{front:?}: {e}"));
            assert_eq!(parsed.name, "thumbnail-design");
            assert_eq!(&parsed.description, description, "{front:?}");
        }
        // Empty body, CRLF line ends and a BOM are fine.
        let crlf = "\u{feff}---\r\nname: a1\r\ndescription: d\r\n---\r\n";
        assert_eq!(parse(crlf.as_bytes(), "a1").unwrap().description, "d");
        let head = "---\nname: a\ndescription: d\n---\n";
        let exactly_max = format!("{head}{}", "x".repeat(MAX_SKILL_BYTES - head.len()));
        assert_eq!(exactly_max.len(), MAX_SKILL_BYTES);
        assert!(parse(exactly_max.as_bytes(), "a").is_ok());
    }

    #[test]
    fn broken_files_name_their_rule() {
        let too_big = format!(
            "---\nname: a\ndescription: d\n---\n{}",
            "x".repeat(MAX_SKILL_BYTES)
        );
        let long_desc = file(&format!("name: a\ndescription: {}", "d".repeat(1025)));
        let cases: Vec<(&str, Vec<u8>, u8)> = vec![
            ("over 100 KiB", too_big.into_bytes(), 1),
            (
                "not UTF-8",
                b"---\nname: a\ndescription: \xff\n---\n".to_vec(),
                1,
            ),
            ("no opening ---", b"name: a\ndescription: d\n".to_vec(), 2),
            ("not closed", b"---\nname: a\ndescription: d\n".to_vec(), 2),
            ("not a mapping", file("just some words").into_bytes(), 2),
            (
                "unterminated quote",
                file("name: a\ndescription: \"oops").into_bytes(),
                2,
            ),
            (
                "duplicate key",
                file("name: a\nname: a\ndescription: d").into_bytes(),
                2,
            ),
            ("name missing", file("description: d").into_bytes(), 3),
            (
                "name upper case",
                file("name: Thumb\ndescription: d").into_bytes(),
                3,
            ),
            (
                "name leading -",
                file("name: -a\ndescription: d").into_bytes(),
                3,
            ),
            (
                "name trailing -",
                file("name: a-\ndescription: d").into_bytes(),
                3,
            ),
            (
                "name with --",
                file("name: a--b\ndescription: d").into_bytes(),
                3,
            ),
            (
                "name too long",
                file(&format!("name: {}\ndescription: d", "a".repeat(65))).into_bytes(),
                3,
            ),
            (
                "name not a string",
                file("name: [a]\ndescription: d").into_bytes(),
                3,
            ),
            ("description missing", file("name: a").into_bytes(), 4),
            (
                "description empty",
                file("name: a\ndescription: \"\"").into_bytes(),
                4,
            ),
            (
                "description null",
                file("name: a\ndescription:").into_bytes(),
                4,
            ),
            (
                "description a number",
                file("name: a\ndescription: 42").into_bytes(),
                4,
            ),
            ("description too long", long_desc.into_bytes(), 4),
            (
                "name differs from the entry",
                file("name: b\ndescription: d").into_bytes(),
                6,
            ),
        ];
        for (what, bytes, rule) in cases {
            let err = parse(&bytes, "a").expect_err(what);
            assert_eq!(err.rule, rule, "{what}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("SKILL.md rule {rule}: ")),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "a-b", "abc-123", &"a".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "a b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
