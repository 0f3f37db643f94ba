//! The names users give things: projects, domains, tasks, cache versions, workflows,
//! schedules, run ids, execution ids. One rule, checked wherever a name enters (the API, the
//! launcher, the catalog, schedules), so that a hostile or mistaken name is refused with an
//! error naming the field instead of failing deep inside a store.
//!
//! A name is 1 to [`MAX_NAME_CHARS`] characters, none of them a control character (Unicode
//! category Cc: U+0000–U+001F and U+007F–U+009F). Counted in characters, not bytes, so that
//! the rule is exactly what a JSON Schema says ([`PATTERN`], `minLength`, `maxLength`): the
//! API's OpenAPI document states it, and a client can check it before sending. The longest name
//! is 1,020 bytes of UTF-8; keys hold a few names, well under FoundationDB's 10,000-byte keys.

use crate::error::{Error, Result};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// The rule on characters as a regular expression (ECMA 262, as JSON Schema uses): no control
/// characters.
pub const PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// Checks `value` as the name given in `field`.
pub fn check(field: &str, value: &str) -> Result<()> {
    match problem(value) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidInput {
            what: field.to_string(),
            reason,
        }),
    }
}

/// What is wrong with `value` as a name, if anything.
pub fn problem(value: &str) -> Option<String> {
    // The common case, checked byte by byte: ASCII, no longer in bytes than the bound in
    // characters, no control character.
    if !value.is_empty()
        && value.len() <= MAX_NAME_CHARS
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return None;
    }
    let reason = if value.is_empty() {
        "must not be empty".to_string()
    } else if value.chars().count() > MAX_NAME_CHARS {
        format!(
            "is {} characters long; names are at most {MAX_NAME_CHARS} characters",
            value.chars().count()
        )
    } else if let Some(c) = value.chars().find(|c| c.is_control()) {
        format!("contains the control character {c:?}; names may not")
    } else {
        return None;
    };
    Some(reason)
}

/// Checks every `(field, value)`; the first bad one is the error.
pub fn check_all(names: &[(&str, &str)]) -> Result<()> {
    names
        .iter()
        .try_for_each(|(field, value)| check(field, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check("project", "flytesnacks").is_ok());
        assert!(check("project", "données-été").is_ok());
        assert!(check("project", &"x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check("project", &"é".repeat(MAX_NAME_CHARS)).is_ok());
        for bad in ["", "a\nb", "nul\0", "tab\t"] {
            let err = check("project", bad).unwrap_err().to_string();
            assert!(err.contains("project"), "{err}");
        }
        let err = check("domain", &"é".repeat(256)).unwrap_err().to_string();
        assert!(
            err.contains("256 characters") && err.contains("domain"),
            "{err}"
        );
        for c in ['\u{7f}', '\u{85}', '\u{9f}'] {
            assert!(check("task", &format!("a{c}")).is_err(), "{c:?}");
        }
    }
}
