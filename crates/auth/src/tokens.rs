//! Bearer tokens: kube-apiserver's static token file (`--token-auth-file`) and the admin token.
//!
//! The token file is CSV, one user per line: `token,user,uid[,"group1,group2"]`, as
//! kube-apiserver reads it (quoted fields may hold commas). ferrovirt is stricter where
//! kube-apiserver would only warn: an empty or duplicate token, an empty user name or a token with
//! whitespace (which no `Authorization` header can carry) is an error naming the line. Blank lines
//! and lines starting with `#` are skipped; group names are trimmed and empty ones dropped.
//!
//! Tokens are compared in constant time ([`subtle`]) and every entry is compared, so the time a
//! lookup takes does not tell which entry (if any) matched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use subtle::ConstantTimeEq;

use ferrovirt_storage::atomic;

use crate::user::UserInfo;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {source_name}, line {line}: {problem}; {fix}")]
    Line {
        source_name: String,
        line: u64,
        problem: String,
        fix: &'static str,
    },
}

/// One user of the token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub token: String,
    pub user: UserInfo,
    /// The line of the file it came from (1-based).
    pub line: u64,
}

/// The users of a token file, looked up by token in constant time.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    entries: Vec<TokenEntry>,
}

const LINE_FORMAT_FIX: &str =
    "each line is token,user,uid[,\"group1,group2\"] (quote the groups when there are several)";

impl StaticTokens {
    /// Parses a token file's text. `source_name` names it in errors (usually its path).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, TokenFileError> {
        // Comment lines become blank lines (which the reader skips), so line numbers stay right.
        let uncommented: String = text
            .split_inclusive('\n')
            .map(|line| {
                if line.trim_start().starts_with('#') {
                    if line.ends_with('\n') { "\n" } else { "" }
                } else {
                    line
                }
            })
            .collect();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(uncommented.as_bytes());
        let mut entries: Vec<TokenEntry> = Vec::new();
        let mut first_line_of: HashMap<String, u64> = HashMap::new();
        let error = |line: u64, problem: String, fix: &'static str| TokenFileError::Line {
            source_name: source_name.to_owned(),
            line,
            problem,
            fix,
        };
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                error(line, format!("not valid CSV: {e}"), LINE_FORMAT_FIX)
            })?;
            let line = record
                .position()
                .map_or(0, |p| line_of(&uncommented, p.byte()));
            if record.iter().all(|field| field.trim().is_empty()) {
                continue;
            }
            if record.iter().any(|field| field.contains(['\n', '\r'])) {
                return Err(error(
                    line,
                    "a quoted field runs over the end of the line".to_owned(),
                    "close every quote on the line it opens",
                ));
            }
            if record.len() < 3 {
                return Err(error(
                    line,
                    format!(
                        "must have at least 3 columns (token, user name, user uid), found {}",
                        record.len()
                    ),
                    LINE_FORMAT_FIX,
                ));
            }
            if record.len() > 4 {
                return Err(error(
                    line,
                    format!("has {} columns, at most 4 are read", record.len()),
                    LINE_FORMAT_FIX,
                ));
            }
            let token = &record[0];
            if token.is_empty() {
                return Err(error(
                    line,
                    "the token (column 1) is empty".to_owned(),
                    "give every user a token, e.g. from `head -c 32 /dev/urandom | base64`",
                ));
            }
            if token.chars().any(char::is_whitespace) {
                return Err(error(
                    line,
                    "the token (column 1) contains whitespace, which an Authorization header cannot carry".to_owned(),
                    "use tokens of letters, digits and punctuation only",
                ));
            }
            if record[1].is_empty() {
                return Err(error(
                    line,
                    "the user name (column 2) is empty".to_owned(),
                    LINE_FORMAT_FIX,
                ));
            }
            if let Some(first) = first_line_of.get(token) {
                return Err(error(
                    line,
                    format!("the token is the same as the one on line {first}"),
                    "give every user a different token",
                ));
            }
            first_line_of.insert(token.to_owned(), line);
            let groups = record
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            entries.push(TokenEntry {
                token: token.to_owned(),
                user: UserInfo::authenticated(&record[1], &record[2], groups),
                line,
            });
        }
        Ok(StaticTokens { entries })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The user whose token is `token`. Compares against every entry in constant time.
    pub fn lookup(&self, token: &str) -> Option<&UserInfo> {
        let mut found = None;
        for entry in &self.entries {
            if tokens_equal(entry.token.as_bytes(), token.as_bytes()) {
                found = Some(&entry.user);
            }
        }
        found
    }
}

/// The 1-based line of the first character at or after `byte` that is not a line break (the
/// reader reports a record's start before the blank lines it skipped).
fn line_of(text: &str, byte: u64) -> u64 {
    let bytes = text.as_bytes();
    let mut at = usize::try_from(byte)
        .unwrap_or(bytes.len())
        .min(bytes.len());
    while at < bytes.len() && matches!(bytes[at], b'\n' | b'\r') {
        at += 1;
    }
    1 + bytes[..at].iter().filter(|b| **b == b'\n').count() as u64
}

/// Constant-time comparison of two tokens (the length is not secret).
pub fn tokens_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Why the admin token cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("cannot get random bytes for the admin token: {0}")]
    Random(String),
    #[error(transparent)]
    Io(#[from] atomic::AtomicError),
    #[error(
        "the admin token file {path} is empty or not one line of text; delete it and restart `ferrovirt serve` to make a new one (the admin kubeconfig is rewritten too)"
    )]
    Malformed { path: PathBuf },
}

/// The admin token: 32 random bytes, base64url without padding (43 characters).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A new random token.
    pub fn generate() -> Result<Self, AdminTokenError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| AdminTokenError::Random(e.to_string()))?;
        Ok(AdminToken(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    /// Reads the token at `path`, or creates one there (mode 0600, crash-safe) at first start.
    /// Returns the token and whether it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AdminTokenError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim();
                if token.is_empty() || token.chars().any(char::is_whitespace) {
                    return Err(AdminTokenError::Malformed {
                        path: path.to_path_buf(),
                    });
                }
                Ok((AdminToken(token.to_owned()), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = Self::generate()?;
                let mut text = token.0.clone();
                text.push('\n');
                atomic::write_file(path, text.as_bytes(), atomic::PRIVATE_FILE_MODE)?;
                Ok((token, true))
            }
            Err(e) => Err(atomic::AtomicError::Io {
                operation: "read",
                path: path.to_path_buf(),
                source: e,
            }
            .into()),
        }
    }

    /// The token text (goes into the admin kubeconfig).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token (constant time).
    pub fn matches(&self, candidate: &str) -> bool {
        tokens_equal(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl From<String> for AdminToken {
    fn from(token: String) -> Self {
        AdminToken(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::ALL_AUTHENTICATED;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_kube_apiserver_token_files() {
        let text = "# ferrovirt users\n\
                    s3cret,alice,1001,\"dev,ops\"\n\
                    \n\
                    t0ken,bob,1002\n\
                    x,carol,1003,\"  a , ,b\"\n";
        let tokens = StaticTokens::parse(text, "tokens.csv").unwrap();
        let alice = tokens.lookup("s3cret").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "1001");
        assert_eq!(alice.groups, vec!["dev", "ops", ALL_AUTHENTICATED]);
        assert_eq!(
            tokens.lookup("t0ken").unwrap().groups,
            vec![ALL_AUTHENTICATED]
        );
        assert_eq!(
            tokens.lookup("x").unwrap().groups,
            vec!["a", "b", ALL_AUTHENTICATED]
        );
        assert_eq!(tokens.entries()[1].line, 4);
        assert!(tokens.lookup("s3cre").is_none());
        assert!(tokens.lookup("").is_none());
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let cases = [
            ("a,b,c\nonly,two\n", 2, "at least 3 columns"),
            ("a,b,c\n,bob,1\n", 2, "token (column 1) is empty"),
            ("a,b,c\nd,,1\n", 2, "user name (column 2) is empty"),
            ("a,b,c\nx,y,z\na,e,f\n", 3, "same as the one on line 1"),
            ("a b,c,d\n", 1, "whitespace"),
            ("a,b,c,d,e\n", 1, "5 columns"),
            ("a,b,c,\"unterminated\n", 1, "end of the line"),
            ("# c\n\na,b,c\nx\n", 4, "at least 3"),
        ];
        for (text, line, needle) in cases {
            let err = StaticTokens::parse(text, "t.csv").unwrap_err().to_string();
            assert!(err.contains(&format!("line {line}")), "{text:?}: {err}");
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("t.csv"), "{err}");
        }
    }

    #[test]
    fn admin_token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let (token, created) = AdminToken::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(token.as_str().len(), 43);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = AdminToken::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again, token);
        assert!(token.matches(again.as_str()));
        assert!(!token.matches("nope"));
        assert_ne!(AdminToken::generate().unwrap(), token);
        assert!(!format!("{token:?}").contains(token.as_str()));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            AdminToken::load_or_create(&path),
            Err(AdminTokenError::Malformed { .. })
        ));
    }

    fn field() -> impl Strategy<Value = String> {
        "[A-Za-z0-9:._@-]{1,12}"
    }

    fn quote(field: &str) -> String {
        format!("\"{}\"", field.replace('"', "\"\""))
    }

    proptest! {
        /// Any well-formed file parses back to exactly what was written.
        #[test]
        fn written_files_parse_back(
            rows in proptest::collection::vec(
                (field(), field(), "[A-Za-z0-9-]{0,8}", proptest::collection::vec(field(), 0..4), any::<bool>()),
                0..8,
            )
        ) {
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<_> = rows.into_iter().filter(|r| seen.insert(r.0.clone())).collect();
            let mut text = String::from("# generated\n");
            for (token, user, uid, groups, quoted) in &rows {
                let token_field = if *quoted { quote(token) } else { token.clone() };
                if groups.is_empty() {
                    text.push_str(&format!("{token_field},{user},{uid}\n"));
                } else {
                    text.push_str(&format!("{token_field},{user},{uid},{}\n\n", quote(&groups.join(","))));
                }
            }
            let parsed = StaticTokens::parse(&text, "p.csv").unwrap();
            prop_assert_eq!(parsed.entries().len(), rows.len());
            for (token, user, uid, groups, _) in &rows {
                let found = parsed.lookup(token).unwrap();
                prop_assert_eq!(&found.name, user);
                prop_assert_eq!(&found.uid, uid);
                let mut expected = groups.clone();
                if !expected.iter().any(|g| g == ALL_AUTHENTICATED) {
                    expected.push(ALL_AUTHENTICATED.to_owned());
                }
                prop_assert_eq!(&found.groups, &expected);
            }
        }

        /// Arbitrary text never panics: it parses or fails with a line number.
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            match StaticTokens::parse(&text, "x") {
                Ok(tokens) => for e in tokens.entries() {
                    prop_assert!(!e.token.is_empty() && !e.user.name.is_empty());
                },
                Err(e) => prop_assert!(e.to_string().contains("line")),
            }
        }
    }
}
