//! Kubernetes label selectors: the parser for the string syntax used by `?labelSelector=`
//! (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, comma-separated,
//! all of them must match) and a matcher against an object's `metadata.labels`.
//!
//! The grammar and the corner cases follow `k8s.io/apimachinery/pkg/labels`: `in`/`notin` are
//! keywords in key position, values may be empty (`a=`, `a in (,x)`, `a in ()` = the empty value),
//! `!=` and `notin` also match objects without the label, `>`/`<` need integer values.
//! `Display` prints a canonical form that parses back to the same [`Selector`].

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// A parsed label selector: every requirement must match (logical AND).
/// The empty selector (parsed from `""`) matches every object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
}

/// What a requirement demands of the label `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `key` (the label exists, any value).
    Exists,
    /// `!key` (the label is absent).
    DoesNotExist,
    /// `key=value` or `key==value`.
    Equals(String),
    /// `key!=value` (also matches when the label is absent).
    NotEquals(String),
    /// `key in (v1,v2)`.
    In(BTreeSet<String>),
    /// `key notin (v1,v2)` (also matches when the label is absent).
    NotIn(BTreeSet<String>),
    /// `key>n`: the label exists and its value is an integer greater than `n`.
    GreaterThan(i64),
    /// `key<n`: the label exists and its value is an integer less than `n`.
    LessThan(i64),
}

/// Why a label selector string could not be parsed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse label selector \"{input}\" at position {position}: {message}")]
pub struct SelectorParseError {
    /// The whole selector string as given.
    pub input: String,
    /// Character offset (0-based) of the offending token.
    pub position: usize,
    /// What was found and what was expected there.
    pub message: String,
}

impl Selector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses Kubernetes' label selector syntax.
    pub fn parse(input: &str) -> Result<Self, SelectorParseError> {
        Parser::new(input).parse()
    }

    /// True when there are no requirements (matches every object).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches against a label lookup function.
    pub fn matches_with<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches(lookup(&r.key)))
    }

    /// Matches against a JSON labels map (`metadata.labels`; `None` = no labels).
    /// Non-string label values are treated as absent.
    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let map = labels.and_then(Value::as_object);
        self.matches_with(|key| map.and_then(|m| m.get(key)).and_then(Value::as_str))
    }

    /// Matches against a whole Kubernetes object (reads `metadata.labels`).
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches_labels(object.pointer("/metadata/labels"))
    }
}

impl Requirement {
    /// Whether the label value (`None` = label absent) satisfies this requirement.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (&self.operator, value) {
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
            (Operator::Equals(want), Some(v)) => v == want,
            (Operator::Equals(_), None) => false,
            (Operator::NotEquals(want), v) => v != Some(want.as_str()),
            (Operator::In(set), Some(v)) => set.contains(v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(set), v) => v.is_none_or(|v| !set.contains(v)),
            (Operator::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
            (Operator::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
            (Operator::GreaterThan(_) | Operator::LessThan(_), None) => false,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.operator {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals(v) => write!(f, "{key}={v}"),
            Operator::NotEquals(v) => write!(f, "{key}!={v}"),
            Operator::In(set) => write!(f, "{key} in ({})", join(set)),
            Operator::NotIn(set) => write!(f, "{key} notin ({})", join(set)),
            Operator::GreaterThan(n) => write!(f, "{key}>{n}"),
            Operator::LessThan(n) => write!(f, "{key}<{n}"),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Identifier(s) => format!("'{s}'"),
            Token::Bang => "'!'".into(),
            Token::Equals => "'='".into(),
            Token::DoubleEquals => "'=='".into(),
            Token::NotEquals => "'!='".into(),
            Token::In => "'in'".into(),
            Token::NotIn => "'notin'".into(),
            Token::GreaterThan => "'>'".into(),
            Token::LessThan => "'<'".into(),
            Token::OpenParen => "'('".into(),
            Token::CloseParen => "')'".into(),
            Token::Comma => "','".into(),
            Token::End => "end of string".into(),
        }
    }

    /// In value position the keywords `in`/`notin` are plain identifiers.
    fn as_value(&self) -> Option<String> {
        match self {
            Token::Identifier(s) => Some(s.clone()),
            Token::In => Some("in".into()),
            Token::NotIn => Some("notin".into()),
            _ => None,
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

/// Splits the input into tokens with their character positions.
fn lex(input: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let next = chars.get(i + 1).copied();
        let (token, len) = match (c, next) {
            ('!', Some('=')) => (Token::NotEquals, 2),
            ('!', _) => (Token::Bang, 1),
            ('=', Some('=')) => (Token::DoubleEquals, 2),
            ('=', _) => (Token::Equals, 1),
            ('(', _) => (Token::OpenParen, 1),
            (')', _) => (Token::CloseParen, 1),
            (',', _) => (Token::Comma, 1),
            ('>', _) => (Token::GreaterThan, 1),
            ('<', _) => (Token::LessThan, 1),
            _ => {
                let mut end = i;
                while end < chars.len() && !chars[end].is_whitespace() && !is_special(chars[end]) {
                    end += 1;
                }
                let word: String = chars[i..end].iter().collect();
                let token = match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Identifier(word),
                };
                (token, end - i)
            }
        };
        tokens.push((start, token));
        i += len;
    }
    tokens.push((chars.len(), Token::End));
    tokens
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            tokens: lex(input),
            pos: 0,
        }
    }

    fn peek(&self) -> (usize, &Token) {
        match self.tokens.get(self.pos) {
            Some((p, t)) => (*p, t),
            None => (self.input.chars().count(), &Token::End),
        }
    }

    fn advance(&mut self) -> (usize, Token) {
        let (p, t) = self.peek();
        let out = (p, t.clone());
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        out
    }

    fn error(&self, position: usize, message: impl Into<String>) -> SelectorParseError {
        SelectorParseError {
            input: self.input.to_string(),
            position,
            message: message.into(),
        }
    }

    fn parse(mut self) -> Result<Selector, SelectorParseError> {
        let mut requirements = Vec::new();
        if matches!(self.peek().1, Token::End) {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            let (p, t) = self.advance();
            match t {
                Token::End => return Ok(Selector { requirements }),
                Token::Comma => {}
                other => {
                    return Err(self.error(
                        p,
                        format!("found {}, expected: ',' or end of string", other.describe()),
                    ));
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, SelectorParseError> {
        let (p, t) = self.advance();
        match t {
            Token::Identifier(key) => {
                validate_key(&key).map_err(|m| self.error(p, m))?;
                Ok(key)
            }
            other => Err(self.error(
                p,
                format!("found {}, expected: label key", other.describe()),
            )),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorParseError> {
        if matches!(self.peek().1, Token::Bang) {
            self.advance();
            let key = self.key()?;
            let (p, t) = self.peek();
            if !matches!(t, Token::Comma | Token::End) {
                return Err(self.error(
                    p,
                    format!(
                        "found {}, expected: ',' or end of string ('!key' takes no operator)",
                        t.describe()
                    ),
                ));
            }
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
            });
        }
        let key = self.key()?;
        let (p, t) = self.peek();
        let operator = match t {
            Token::Comma | Token::End => Operator::Exists,
            Token::Equals | Token::DoubleEquals => {
                self.advance();
                Operator::Equals(self.exact_value()?)
            }
            Token::NotEquals => {
                self.advance();
                Operator::NotEquals(self.exact_value()?)
            }
            Token::In => {
                self.advance();
                Operator::In(self.value_set()?)
            }
            Token::NotIn => {
                self.advance();
                Operator::NotIn(self.value_set()?)
            }
            Token::GreaterThan => {
                self.advance();
                Operator::GreaterThan(self.integer()?)
            }
            Token::LessThan => {
                self.advance();
                Operator::LessThan(self.integer()?)
            }
            other => {
                return Err(self.error(
                    p,
                    format!(
                        "found {}, expected: one of '=', '==', '!=', 'in', 'notin', '>', '<', ',' or end of string",
                        other.describe()
                    ),
                ));
            }
        };
        Ok(Requirement { key, operator })
    }

    fn exact_value(&mut self) -> Result<String, SelectorParseError> {
        let (p, t) = self.peek();
        if matches!(t, Token::Comma | Token::End) {
            return Ok(String::new());
        }
        let (p2, t) = self.advance();
        match t.as_value() {
            Some(v) => {
                validate_value(&v).map_err(|m| self.error(p2, m))?;
                Ok(v)
            }
            None => Err(self.error(p, format!("found {}, expected: label value", t.describe()))),
        }
    }

    fn integer(&mut self) -> Result<i64, SelectorParseError> {
        let (p, t) = self.advance();
        match t.as_value() {
            Some(v) => v.parse::<i64>().map_err(|_| {
                self.error(
                    p,
                    format!("found '{v}', expected: an integer ('>' and '<' compare numbers)"),
                )
            }),
            None => Err(self.error(p, format!("found {}, expected: an integer", t.describe()))),
        }
    }

    /// `( v1 , v2 )`; empty entries mean the empty value, as in Kubernetes.
    fn value_set(&mut self) -> Result<BTreeSet<String>, SelectorParseError> {
        let (p, t) = self.advance();
        if t != Token::OpenParen {
            return Err(self.error(p, format!("found {}, expected: '('", t.describe())));
        }
        let mut set = BTreeSet::new();
        // `expect_value` is true right after '(' or ','.
        let mut expect_value = true;
        loop {
            let (p, t) = self.advance();
            match t {
                Token::CloseParen => {
                    if expect_value {
                        set.insert(String::new());
                    }
                    return Ok(set);
                }
                Token::Comma => {
                    if expect_value {
                        set.insert(String::new());
                    }
                    expect_value = true;
                }
                other => match other.as_value() {
                    Some(v) if expect_value => {
                        validate_value(&v).map_err(|m| self.error(p, m))?;
                        set.insert(v);
                        expect_value = false;
                    }
                    _ => {
                        let expected = if expect_value {
                            "a label value, ',' or ')'"
                        } else {
                            "',' or ')'"
                        };
                        return Err(self.error(
                            p,
                            format!("found {}, expected: {expected}", other.describe()),
                        ));
                    }
                },
            }
        }
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// The name part of a qualified name / a label value: at most 63 characters of
/// `[A-Za-z0-9_.-]`, beginning and ending with an alphanumeric character.
fn validate_name_part(s: &str, what: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "{what} '{s}' is longer than 63 characters; shorten it"
        ));
    }
    let ok_chars = s
        .chars()
        .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'));
    let ok_ends = s.chars().next().is_some_and(is_alnum) && s.chars().last().is_some_and(is_alnum);
    if !ok_chars || !ok_ends {
        return Err(format!(
            "{what} '{s}' is invalid: it must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Label keys are qualified names: `[prefix/]name`, prefix a DNS subdomain.
fn validate_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && label.chars().next().is_some_and(|c| c != '-')
                        && label.chars().last().is_some_and(|c| c != '-')
                });
            if !ok {
                return Err(format!(
                    "label key prefix '{prefix}' is invalid: it must be a DNS subdomain (lowercase alphanumeric characters, '-' and '.')"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err(format!("label key '{key}' has an empty name part"));
    }
    validate_name_part(name, "label key name")
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name_part(value, "label value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    fn req(key: &str, operator: Operator) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
        }
    }

    #[test]
    fn parses_every_operator() {
        let sel = Selector::parse(
            "a=b, c==d,e!=f, g in (x, y), h notin (z), i, !j, k>5, l<-2, kubevirt.io/vm=v1",
        )
        .unwrap();
        assert_eq!(
            sel.requirements,
            vec![
                req("a", Operator::Equals("b".into())),
                req("c", Operator::Equals("d".into())),
                req("e", Operator::NotEquals("f".into())),
                req("g", Operator::In(set(&["x", "y"]))),
                req("h", Operator::NotIn(set(&["z"]))),
                req("i", Operator::Exists),
                req("j", Operator::DoesNotExist),
                req("k", Operator::GreaterThan(5)),
                req("l", Operator::LessThan(-2)),
                req("kubevirt.io/vm", Operator::Equals("v1".into())),
            ]
        );
        assert_eq!(
            sel.to_string(),
            "a=b,c=d,e!=f,g in (x,y),h notin (z),i,!j,k>5,l<-2,kubevirt.io/vm=v1"
        );
    }

    #[test]
    fn empty_values_as_kubernetes_parses_them() {
        assert_eq!(
            Selector::parse("a=").unwrap().requirements,
            vec![req("a", Operator::Equals(String::new()))]
        );
        assert_eq!(
            Selector::parse("a in ()").unwrap().requirements,
            vec![req("a", Operator::In(set(&[""])))]
        );
        assert_eq!(
            Selector::parse("a in (,x)").unwrap().requirements,
            vec![req("a", Operator::In(set(&["", "x"])))]
        );
        assert_eq!(
            Selector::parse("a in (x,)").unwrap().requirements,
            vec![req("a", Operator::In(set(&["", "x"])))]
        );
        assert_eq!(
            Selector::parse("a in (in, notin)").unwrap().requirements,
            vec![req("a", Operator::In(set(&["in", "notin"])))]
        );
        assert!(Selector::parse("").unwrap().is_empty());
        assert!(Selector::parse("   ").unwrap().is_empty());
    }

    #[test]
    fn errors_say_where() {
        let cases = [
            ("a in (x y)", 8, "found 'y', expected: ',' or ')'"),
            ("a=b,", 4, "found end of string, expected: label key"),
            ("a b", 2, "found 'b', expected: one of"),
            ("!a=b", 2, "'!key' takes no operator"),
            ("a in x", 5, "found 'x', expected: '('"),
            ("a>x", 2, "expected: an integer"),
            ("-a=b", 0, "label key name '-a' is invalid"),
            ("a=-b", 2, "label value '-b' is invalid"),
            ("Bad_/x=1", 0, "label key prefix 'Bad_' is invalid"),
            ("a=b)", 3, "found ')', expected: ',' or end of string"),
            ("a in (x", 7, "found end of string, expected: ',' or ')'"),
        ];
        for (input, position, message) in cases {
            let err = Selector::parse(input).unwrap_err();
            assert_eq!(err.position, position, "{input}: {err}");
            assert!(err.message.contains(message), "{input}: {err}");
            assert!(err.to_string().contains(&format!("\"{input}\"")));
        }
    }

    #[test]
    fn matcher_semantics() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "3", "empty": ""}}});
        let m = |s: &str| Selector::parse(s).unwrap().matches_object(&obj);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"), "!= matches an absent label");
        assert!(!m("app!=web"));
        assert!(m("app in (db,web)"));
        assert!(!m("missing in (x)"));
        assert!(m("missing notin (x)"));
        assert!(!m("app notin (web)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("tier>2"));
        assert!(!m("tier>3"));
        assert!(m("tier<4"));
        assert!(!m("app>1"), "non-integer value never satisfies >");
        assert!(m("empty="));
        assert!(m("empty in ()"));
        assert!(
            !Selector::parse("app")
                .unwrap()
                .matches_object(&json!({"metadata": {}}))
        );
    }

    fn name_part() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9]", "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,20}[a-zA-Z0-9]",]
            .prop_filter("keywords are not keys", |s| s != "in" && s != "notin")
    }

    fn key() -> impl Strategy<Value = String> {
        (
            proptest::option::of("[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,2}"),
            name_part(),
        )
            .prop_map(|(prefix, name)| match prefix {
                Some(p) => format!("{p}/{name}"),
                None => name,
            })
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), name_part(), Just("in".to_string())]
    }

    fn operator() -> impl Strategy<Value = Operator> {
        let values = || proptest::collection::btree_set(value(), 1..4);
        prop_oneof![
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
            value().prop_map(Operator::Equals),
            value().prop_map(Operator::NotEquals),
            values().prop_map(Operator::In),
            values().prop_map(Operator::NotIn),
            any::<i64>().prop_map(Operator::GreaterThan),
            any::<i64>().prop_map(Operator::LessThan),
        ]
    }

    fn selector() -> impl Strategy<Value = Selector> {
        proptest::collection::vec(
            (key(), operator()).prop_map(|(key, operator)| Requirement { key, operator }),
            0..5,
        )
        .prop_map(|requirements| Selector { requirements })
    }

    proptest! {
        #[test]
        fn parser_never_panics(input in "\\PC{0,40}") {
            let _ = Selector::parse(&input);
        }

        #[test]
        fn parser_never_panics_on_selector_alphabet(input in "[a-z!=(), <>/.0-9-]{0,30}") {
            let _ = Selector::parse(&input);
        }

        #[test]
        fn display_round_trips(sel in selector()) {
            let text = sel.to_string();
            let parsed = Selector::parse(&text);
            prop_assert_eq!(parsed, Ok(sel), "text: {}", text);
        }
    }
}
