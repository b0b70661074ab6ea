//! Envoy's value matchers, compiled for the request path: `StringMatcher`
//! (exact / prefix / suffix / contains / safe_regex, `ignore_case`) and
//! `HeaderMatcher` (string, legacy exact, range, present; `invert_match`,
//! `treat_missing_header_as_empty`).  Sans-IO: values in, `bool` out.
//!
//! It owns matcher *semantics*, written once so routing and RBAC cannot
//! disagree about what a config means.  It must not own where values come
//! from: callers hand headers in through [`HeaderSource`], whose job is also
//! to answer pseudo-headers (`:path`, `:method`, `:authority`, `:scheme`).
//! An implementation for a parsed HTTP/1 request head is provided here
//! because every HTTP user needs the same mapping.
//!
//! Compiling (`new`) happens once per config snapshot; matching allocates
//! nothing, except when a header occurs several times and its values must be
//! joined with `,` first (Envoy's `getAllOfHeaderAsString`) — a rare shape
//! that the single-value case does not pay for.

use std::borrow::Cow;

use control::model::{HeaderMatch, HeaderMatchSpec, SafeRegex, StringMatch, StringPattern};

use crate::http1::RequestHead;

/// A compiled `StringMatcher`.  With `ignore_case` the pattern is stored
/// lower-cased so each match lower-cases nothing but compares ASCII-folded.
#[derive(Debug, Clone)]
pub struct StringMatcher {
    kind: StringKind,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum StringKind {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Contains(Box<[u8]>),
    Regex(SafeRegex),
}

impl StringMatcher {
    pub fn new(m: &StringMatch) -> StringMatcher {
        let bytes = |s: &str| -> Box<[u8]> {
            if m.ignore_case {
                s.to_ascii_lowercase().into_bytes().into_boxed_slice()
            } else {
                s.as_bytes().into()
            }
        };
        let kind = match &m.pattern {
            StringPattern::Exact(s) => StringKind::Exact(bytes(s)),
            StringPattern::Prefix(s) => StringKind::Prefix(bytes(s)),
            StringPattern::Suffix(s) => StringKind::Suffix(bytes(s)),
            StringPattern::Contains(s) => StringKind::Contains(bytes(s)),
            StringPattern::Regex(r) => StringKind::Regex(r.clone()),
        };
        StringMatcher { kind, ignore_case: m.ignore_case }
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        let eq = |a: &[u8], b: &[u8]| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match &self.kind {
            StringKind::Exact(p) => eq(value, p),
            StringKind::Prefix(p) => value.len() >= p.len() && eq(&value[..p.len()], p),
            StringKind::Suffix(p) => value.len() >= p.len() && eq(&value[value.len() - p.len()..], p),
            StringKind::Contains(p) => {
                if self.ignore_case {
                    // Header values are short; a folded window scan beats
                    // lower-casing a copy of the value.
                    value.len() >= p.len() && value.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
                } else {
                    memchr::memmem::find(value, p).is_some()
                }
            }
            StringKind::Regex(r) => r.is_match(value),
        }
    }
}

/// Where a [`HeaderMatcher`] reads header values from.
pub trait HeaderSource {
    /// Every value of `name` (lower-case, possibly a pseudo-header) joined
    /// with `,`, or `None` when the header is absent.
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>>;
}

/// A source with no headers at all: what a header matcher sees on a plain
/// TCP connection (Envoy evaluates with an empty header map there).
pub struct NoHeaders;

impl HeaderSource for NoHeaders {
    fn header(&self, _: &str) -> Option<Cow<'_, [u8]>> {
        None
    }
}

/// Values of a repeated header joined with `,` without allocating for the
/// common single-value case.
pub fn join_values<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = Vec::with_capacity(first.len() + second.len() + 16);
    joined.extend_from_slice(first);
    for v in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(v);
    }
    Some(Cow::Owned(joined))
}

/// An HTTP/1 request as Envoy's header map presents it to filters: the
/// request line and Host become `:method`, `:path` (path and query, as
/// received in origin form), `:authority` and `:scheme`.  Envoy's codec
/// renames `host` to `:authority`, so a matcher on `host` finds nothing
/// there either.
impl HeaderSource for RequestHead {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        if let Some(pseudo) = name.strip_prefix(':') {
            return match pseudo {
                "path" => Some(Cow::Borrowed(self.path_and_query())),
                "method" => Some(Cow::Borrowed(self.method_str().as_bytes())),
                "authority" => self.host().map(Cow::Borrowed),
                // Plaintext only until TLS lands.
                "scheme" => Some(Cow::Borrowed(b"http")),
                _ => None,
            };
        }
        if name == "host" {
            return None;
        }
        join_values(self.headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v))
    }
}

/// A compiled `HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: Box<str>,
    kind: HeaderKind,
    invert: bool,
    treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
enum HeaderKind {
    String(StringMatcher),
    LegacyExact(Box<[u8]>),
    Range { start: i64, end: i64 },
    Present(bool),
}

impl HeaderMatcher {
    pub fn new(m: &HeaderMatch) -> HeaderMatcher {
        let kind = match &m.spec {
            HeaderMatchSpec::String(s) => HeaderKind::String(StringMatcher::new(s)),
            HeaderMatchSpec::LegacyExact(v) => HeaderKind::LegacyExact(v.as_bytes().into()),
            HeaderMatchSpec::Range { start, end } => HeaderKind::Range { start: *start, end: *end },
            HeaderMatchSpec::Present(p) => HeaderKind::Present(*p),
        };
        HeaderMatcher {
            name: m.name.to_ascii_lowercase().into_boxed_str(),
            kind,
            invert: m.invert_match,
            treat_missing_as_empty: m.treat_missing_header_as_empty,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Envoy's `HeaderUtility::matchHeaders`.
    pub fn matches<H: HeaderSource + ?Sized>(&self, headers: &H) -> bool {
        let found = headers.header(&self.name);
        let value: &[u8] = match &found {
            Some(v) => v,
            None if self.treat_missing_as_empty => b"",
            // An absent header matches only a presence test that asks for
            // absence — and, inverted, only one that asks for presence.
            None => return matches!(self.kind, HeaderKind::Present(p) if p == self.invert),
        };
        let matched = match &self.kind {
            HeaderKind::String(s) => s.matches(value),
            HeaderKind::LegacyExact(v) => v.is_empty() || value == &v[..],
            HeaderKind::Range { start, end } => parse_i64(value).is_some_and(|n| n >= *start && n < *end),
            HeaderKind::Present(p) => *p,
        };
        matched != self.invert
    }
}

/// `absl::SimpleAtoi` for `int64_t`: surrounding ASCII whitespace allowed,
/// optional sign, decimal digits, no overflow.
fn parse_i64(value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // `i64::from_str` accepts a leading `+` and rejects overflow, as absl does.
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(pattern: StringPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher::new(&StringMatch { pattern, ignore_case })
    }

    fn regex(p: &str) -> StringPattern {
        StringPattern::Regex(SafeRegex::new(p).unwrap())
    }

    #[test]
    fn string_exact_prefix_suffix_contains() {
        let exact = sm(StringPattern::Exact("abc".into()), false);
        assert!(exact.matches(b"abc"));
        assert!(!exact.matches(b"ABC"));
        assert!(!exact.matches(b"abcd"));
        let empty = sm(StringPattern::Exact(String::new()), false);
        assert!(empty.matches(b""));
        assert!(!empty.matches(b"x"));

        let prefix = sm(StringPattern::Prefix("/api".into()), false);
        assert!(prefix.matches(b"/api/v1"));
        assert!(prefix.matches(b"/api"));
        assert!(!prefix.matches(b"/ap"));
        assert!(!prefix.matches(b"/API/v1"));

        let suffix = sm(StringPattern::Suffix(".json".into()), false);
        assert!(suffix.matches(b"a.json"));
        assert!(!suffix.matches(b"json"));

        let contains = sm(StringPattern::Contains("needle".into()), false);
        assert!(contains.matches(b"hayneedlehay"));
        assert!(!contains.matches(b"hayNEEDLEhay"));
        assert!(!contains.matches(b"need"));
    }

    #[test]
    fn string_ignore_case_folds_ascii_only() {
        let exact = sm(StringPattern::Exact("AbC".into()), true);
        assert!(exact.matches(b"abc"));
        assert!(exact.matches(b"ABC"));
        let prefix = sm(StringPattern::Prefix("/Api".into()), true);
        assert!(prefix.matches(b"/aPI/x"));
        let suffix = sm(StringPattern::Suffix(".JSON".into()), true);
        assert!(suffix.matches(b"x.json"));
        let contains = sm(StringPattern::Contains("NeEd".into()), true);
        assert!(contains.matches(b"xxneedxx"));
        assert!(!contains.matches(b"ne"));
        // Non-ASCII bytes compare exactly.
        let utf8 = sm(StringPattern::Exact("é".into()), true);
        assert!(utf8.matches("é".as_bytes()));
        assert!(!utf8.matches("É".as_bytes()));
    }

    #[test]
    fn regex_is_a_full_match_and_ignores_ignore_case() {
        let r = sm(regex("[a-z]+-\\d{2}"), false);
        assert!(r.matches(b"abc-12"));
        assert!(!r.matches(b"abc-123"), "must match the whole value");
        assert!(!r.matches(b"xabc-12x"));
        // Alternation binds inside the anchors.
        let alt = sm(regex("a|b"), false);
        assert!(alt.matches(b"a") && alt.matches(b"b"));
        assert!(!alt.matches(b"ab"));
        // `ignore_case` has no effect on safe_regex (Envoy's documentation).
        let r = sm(regex("abc"), true);
        assert!(!r.matches(b"ABC"));
    }

    struct Map(Vec<(&'static str, &'static str)>);

    impl HeaderSource for Map {
        fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
            join_values(self.0.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.as_bytes()))
        }
    }

    fn hm(name: &str, spec: HeaderMatchSpec, invert: bool, missing_empty: bool) -> HeaderMatcher {
        HeaderMatcher::new(&HeaderMatch {
            name: name.into(),
            spec,
            invert_match: invert,
            treat_missing_header_as_empty: missing_empty,
        })
    }

    fn exact(v: &str) -> HeaderMatchSpec {
        HeaderMatchSpec::String(StringMatch { pattern: StringPattern::Exact(v.into()), ignore_case: false })
    }

    #[test]
    fn header_string_match_and_invert() {
        let h = Map(vec![("x-env", "prod")]);
        assert!(hm("x-env", exact("prod"), false, false).matches(&h));
        assert!(!hm("x-env", exact("dev"), false, false).matches(&h));
        assert!(hm("x-env", exact("dev"), true, false).matches(&h));
        assert!(!hm("x-env", exact("prod"), true, false).matches(&h));
        // Names are compared lower-case.
        assert!(hm("X-Env", exact("prod"), false, false).matches(&h));
    }

    #[test]
    fn missing_header_never_matches_except_presence_tests() {
        let h = Map(vec![]);
        assert!(!hm("x", exact(""), false, false).matches(&h));
        assert!(!hm("x", exact("a"), true, false).matches(&h), "inverted value matcher on a missing header");
        assert!(!hm("x", HeaderMatchSpec::Present(true), false, false).matches(&h));
        assert!(hm("x", HeaderMatchSpec::Present(false), false, false).matches(&h));
        assert!(hm("x", HeaderMatchSpec::Present(true), true, false).matches(&h));
        assert!(!hm("x", HeaderMatchSpec::Present(false), true, false).matches(&h));
        let range = HeaderMatchSpec::Range { start: 0, end: 10 };
        assert!(!hm("x", range.clone(), true, false).matches(&h));
    }

    #[test]
    fn treat_missing_as_empty() {
        let h = Map(vec![]);
        assert!(hm("x", exact(""), false, true).matches(&h));
        assert!(!hm("x", exact("a"), false, true).matches(&h));
        assert!(hm("x", exact("a"), true, true).matches(&h));
        // Envoy's documented example: an empty value is not in [0, 10], so inverted it matches.
        let range = HeaderMatchSpec::Range { start: 0, end: 10 };
        assert!(hm("x", range.clone(), true, true).matches(&h));
        assert!(!hm("x", range, false, true).matches(&h));
        assert!(hm("x", HeaderMatchSpec::Present(true), false, true).matches(&h));
    }

    #[test]
    fn present_match_on_a_present_header() {
        let h = Map(vec![("x", "")]);
        assert!(hm("x", HeaderMatchSpec::Present(true), false, false).matches(&h));
        assert!(!hm("x", HeaderMatchSpec::Present(false), false, false).matches(&h));
        assert!(!hm("x", HeaderMatchSpec::Present(true), true, false).matches(&h));
    }

    #[test]
    fn legacy_exact_empty_matches_any_value() {
        let h = Map(vec![("x", "anything")]);
        assert!(hm("x", HeaderMatchSpec::LegacyExact(String::new()), false, false).matches(&h));
        assert!(hm("x", HeaderMatchSpec::LegacyExact("anything".into()), false, false).matches(&h));
        assert!(!hm("x", HeaderMatchSpec::LegacyExact("other".into()), false, false).matches(&h));
        // ... while string_match.exact "" only matches an empty value.
        assert!(!hm("x", exact(""), false, false).matches(&h));
    }

    #[test]
    fn range_is_half_open_and_parses_like_simple_atoi() {
        let m = |v: &'static str| {
            hm("n", HeaderMatchSpec::Range { start: -10, end: 10 }, false, false).matches(&Map(vec![("n", v)]))
        };
        assert!(m("-10"));
        assert!(m("9"));
        assert!(!m("10"), "end is exclusive");
        assert!(m(" 5 "));
        assert!(m("+5"));
        assert!(!m("5x"));
        assert!(!m(""));
        assert!(!m("-"));
        assert!(!m("1.5"));
        assert!(!m("99999999999999999999"), "overflow is not a number");
    }

    #[test]
    fn repeated_headers_are_joined_with_commas() {
        let h = Map(vec![("x", "a"), ("y", "z"), ("x", "b")]);
        assert!(hm("x", exact("a,b"), false, false).matches(&h));
        assert!(!hm("x", exact("a"), false, false).matches(&h));
    }

    #[test]
    fn request_head_pseudo_headers() {
        let mut head = RequestHead::new();
        let raw = b"POST /api/x?q=1 HTTP/1.1\r\nHost: svc.local\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        crate::http1::parse_request_head(raw, &crate::http1::Limits::default(), &mut head).unwrap().unwrap();
        assert_eq!(head.header(":path").as_deref(), Some(&b"/api/x?q=1"[..]));
        assert_eq!(head.header(":method").as_deref(), Some(&b"POST"[..]));
        assert_eq!(head.header(":authority").as_deref(), Some(&b"svc.local"[..]));
        assert_eq!(head.header(":scheme").as_deref(), Some(&b"http"[..]));
        assert_eq!(head.header("host"), None, "Envoy renames host to :authority");
        assert_eq!(head.header("x-a").as_deref(), Some(&b"1,2"[..]));
        assert_eq!(head.header("x-missing"), None);
        assert_eq!(NoHeaders.header(":path"), None);
    }
}
