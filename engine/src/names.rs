//! The names users give things: projects, domains, tasks, cache versions, workflows,
//! schedules, run ids, execution ids. One rule, checked wherever a name enters (the API, the
//! launcher, the catalog, schedules), so that a hostile or mistaken name is refused with an
//! error naming the field instead of failing deep inside a store.
//!
//! A name is 1 to [`MAX_NAME_BYTES`] bytes of UTF-8 without control characters.

use crate::error::{Error, Result};

/// Longest name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks `value` as the name given in `field`.
pub fn check(field: &str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        "must not be empty".to_string()
    } else if value.len() > MAX_NAME_BYTES {
        format!(
            "is {} bytes long; names are at most {MAX_NAME_BYTES} bytes",
            value.len()
        )
    } else if let Some(c) = value.chars().find(|c| c.is_control()) {
        format!("contains the control character {c:?}; names may not")
    } else {
        return Ok(());
    };
    Err(Error::InvalidInput {
        what: field.to_string(),
        reason,
    })
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
        assert!(check("project", &"x".repeat(MAX_NAME_BYTES)).is_ok());
        for bad in ["", "a\nb", "nul\0", "tab\t"] {
            let err = check("project", bad).unwrap_err().to_string();
            assert!(err.contains("project"), "{err}");
        }
        let err = check("domain", &"é".repeat(200)).unwrap_err().to_string();
        assert!(err.contains("400 bytes") && err.contains("domain"), "{err}");
    }
}
