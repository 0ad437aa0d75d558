//! Validated names that end up as path components: volume names and VM names must be Kubernetes
//! DNS-1123 subdomains (lowercase letters, digits, `-` and `.`, at most 253 characters, each
//! dot-separated label starting and ending with a letter or digit). That rules out `..`, `/`,
//! leading dots and every other path trick.

use std::fmt;

/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

/// Why a name is not a valid DNS-1123 subdomain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} {name:?}: {problem}; a valid name consists of lowercase letters, digits, '-' \
     and '.', starts and ends with a letter or digit, and is at most 253 characters \
     (e.g. 'my-vm' or 'state.v1')"
)]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
    pub problem: String,
}

/// Checks that `name` is a DNS-1123 subdomain; `what` names the thing in the error ("volume name").
pub fn validate_dns1123_subdomain(what: &'static str, name: &str) -> Result<(), NameError> {
    let fail = |problem: String| NameError {
        what,
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(fail("it is empty".into()));
    }
    if name.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        return Err(fail(format!("it is {} characters long", name.len())));
    }
    for label in name.split('.') {
        let bytes = label.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(fail("it has an empty part between dots".into()));
        };
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(fail(format!("it contains the character {bad:?}")));
        }
        if *first == b'-' || *last == b'-' {
            return Err(fail(format!("the part {label:?} starts or ends with '-'")));
        }
    }
    Ok(())
}

/// A volume name that is safe to use as a single path component.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate_dns1123_subdomain("volume name", name)?;
        Ok(VolumeName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for VolumeName {
    type Error = NameError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        VolumeName::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_kubernetes_names() {
        for ok in [
            "a",
            "my-vm",
            "persistent-state-for-my-vm-x7k2p",
            "a.b.c",
            "0abc",
            &"a".repeat(253),
        ] {
            assert!(VolumeName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_path_tricks_and_bad_syntax() {
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "/abs",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a.-b",
            "é",
            "a b",
            &"a".repeat(254),
        ] {
            let err = VolumeName::new(bad).unwrap_err();
            assert!(
                err.to_string().contains("invalid volume name"),
                "{bad}: {err}"
            );
        }
    }

    proptest! {
        #[test]
        fn valid_names_are_single_safe_path_components(s in "\\PC{0,40}") {
            if let Ok(n) = VolumeName::new(&s) {
                let p = std::path::Path::new(n.as_str());
                prop_assert_eq!(p.components().count(), 1);
                prop_assert!(!n.as_str().starts_with('.'));
                prop_assert!(!n.as_str().contains('/'));
            }
        }
    }
}
