//! RE2's regular-expression dialect, checked and translated for the
//! `regex` crate.
//!
//! Envoy compiles every `safe_regex` with Google's RE2.  The `regex` crate
//! is RE2's closest relative (linear time, no backtracking) but its syntax
//! is neither a subset nor a superset of RE2's, and a few shared spellings
//! mean different things:
//!
//! * `\d`, `\s`, `\w` and `\b` are ASCII in RE2 but Unicode-aware in
//!   `regex`: `\d` would match `٣` here and not in Envoy.  They are
//!   rewritten to RE2's ASCII classes (`\s` is `[\t\n\f\r ]`: no `\v`).
//! * RE2 accepts what `regex` rejects: `\Q…\E` quoting, octal escapes
//!   (`\012`), `\p{^Greek}`, a literal `[` inside a class (`[[]`), a `{`
//!   that does not start a repetition (`a{,2}`), any escaped punctuation
//!   (`\<` is `<`).  Those are rewritten into `regex` spellings.
//! * `regex` accepts what RE2 rejects: the `x`, `u` and `R` flags, nested
//!   classes and class set operations (`[a&&b]`, `[a--b]`, `[a~~b]`),
//!   `\<`/`\>`/`\b{start}` boundaries, `\u`/`\U` escapes, repeated
//!   repetition operators (`a**`), counted repetitions over 1000.  Those
//!   are load errors, with RE2's wording where it has one.
//! * Backreferences, lookaround, atomic groups and `\C` are rejected by
//!   both (`\C` is RE2's "any byte", which `regex` has no equivalent for).
//!
//! So a pattern means here what it means to Envoy, and one Envoy refuses
//! to load is refused here too.  Known difference: Envoy additionally
//! refuses patterns whose compiled RE2 program exceeds its
//! `max_program_size` (100 by default); `regex` has its own, much larger
//! size limit and no equivalent measure.
//!
//! This module is pure string processing, run once at config load; nothing
//! here is on the request path.

/// Largest counted repetition RE2 accepts (`kMaxRepeat`).
const MAX_REPEAT: u32 = 1000;

/// RE2's POSIX class names (`[[:alpha:]]`).
const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space", "upper", "word",
    "xdigit",
];

/// Translates an RE2 pattern into the equivalent `regex`-crate pattern, or
/// explains why RE2 would not compile it.  The result is not anchored.
pub fn to_rust(pattern: &str) -> Result<String, String> {
    let mut p = Parser { chars: pattern.chars().collect(), pos: 0, out: String::with_capacity(pattern.len() + 8) };
    p.parse()?;
    Ok(p.out)
}

/// Translates an RE2 rewrite string (`\0`–`\9` name capture groups, `\\`
/// is a backslash, any other escape is invalid) into a `regex` replacement
/// string, checking that every group it names exists (RE2's
/// `CheckRewriteString`).
pub fn substitution_to_rust(substitution: &str, capture_groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(substitution.len() + 4);
    let mut chars = substitution.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let n = d as usize - '0' as usize;
                    if n > capture_groups {
                        return Err(format!(
                            "substitution refers to \\{n}, but the pattern has only {capture_groups} capture group(s)"
                        ));
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('\\') => out.push('\\'),
                Some(other) => {
                    return Err(format!("invalid rewrite pattern: \\{other} (use \\0-\\9 or \\\\)"));
                }
                None => return Err("invalid rewrite pattern: trailing backslash".to_string()),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `regex`-crate meta characters: escaped with a backslash when meant
/// literally (both inside and outside classes).
fn is_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#' | '&' | '-' | '~'
    )
}

fn push_literal(out: &mut String, c: char) {
    if is_meta(c) {
        out.push('\\');
        out.push(c);
    } else if c.is_control() || c == ' ' {
        // Spelled as hex so the output never depends on whitespace handling.
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// What the last emitted item lets a following repetition operator do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    /// Nothing repeatable (start, `|`, `(`, a flag group).
    Nothing,
    /// An atom: a repetition may follow.
    Atom,
    /// A greedy repetition: only a single `?` (lazy) may follow.
    Repeat,
    /// A lazy repetition: nothing more.
    LazyRepeat,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    out: String,
}

/// A single class member produced by an escape inside `[...]`.
enum ClassItem {
    Char(char),
    /// A set (`\d`, `\pL`, ...) already spelled for the output.
    Set(String),
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, c)| self.peek_at(i) == Some(c))
    }

    fn parse(&mut self) -> Result<(), String> {
        let mut last = Last::Nothing;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                '\\' => {
                    if let Some(l) = self.escape()? {
                        last = l;
                    }
                }
                '[' => {
                    self.class()?;
                    last = Last::Atom;
                }
                '(' => {
                    let capturing_or_group = self.group_open()?;
                    if capturing_or_group {
                        depth += 1;
                    }
                    last = Last::Nothing;
                }
                ')' => {
                    if depth == 0 {
                        return Err("unexpected ): unmatched parenthesis".to_string());
                    }
                    depth -= 1;
                    self.out.push(')');
                    last = Last::Atom;
                }
                '|' => {
                    self.out.push('|');
                    last = Last::Nothing;
                }
                '*' | '+' | '?' => last = self.repeat(c.to_string(), last, c == '?')?,
                '{' => match self.counted_repeat()? {
                    Some(op) => last = self.repeat(op, last, false)?,
                    None => {
                        // RE2 reads a `{` that starts no repetition literally.
                        self.out.push_str("\\{");
                        last = Last::Atom;
                    }
                },
                '^' | '$' | '.' => {
                    self.out.push(c);
                    last = Last::Atom;
                }
                c => {
                    push_literal(&mut self.out, c);
                    last = Last::Atom;
                }
            }
        }
        if depth > 0 {
            return Err("missing ): unclosed parenthesis".to_string());
        }
        Ok(())
    }

    /// A repetition operator `op` (already consumed) after `last`.
    fn repeat(&mut self, op: String, last: Last, is_question: bool) -> Result<Last, String> {
        match last {
            Last::Nothing => Err(format!("missing argument to repetition operator: {op}")),
            Last::Atom => {
                self.out.push_str(&op);
                Ok(Last::Repeat)
            }
            Last::Repeat if is_question => {
                self.out.push('?');
                Ok(Last::LazyRepeat)
            }
            Last::Repeat | Last::LazyRepeat => Err(format!("bad repetition operator: {op}")),
        }
    }

    /// After a `{`: `Some("{n}"/"{n,}"/"{n,m}")` when it is a counted
    /// repetition (consumed), `None` when it is a literal brace.
    fn counted_repeat(&mut self) -> Result<Option<String>, String> {
        let start = self.pos;
        let digits = |p: &mut Parser| -> Option<u64> {
            let s = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            if p.pos == s {
                return None;
            }
            let text: String = p.chars[s..p.pos].iter().collect();
            Some(text.parse::<u64>().unwrap_or(u64::MAX))
        };
        let Some(min) = digits(self) else {
            self.pos = start;
            return Ok(None);
        };
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            if self.peek() == Some('}') {
                None
            } else {
                match digits(self) {
                    Some(m) => Some(m),
                    None => {
                        self.pos = start;
                        return Ok(None);
                    }
                }
            }
        } else {
            Some(min)
        };
        if self.peek() != Some('}') {
            self.pos = start;
            return Ok(None);
        }
        self.pos += 1;
        let text: String = self.chars[start - 1..self.pos].iter().collect();
        if min > u64::from(MAX_REPEAT) || max.is_some_and(|m| m > u64::from(MAX_REPEAT) || m < min) {
            return Err(format!("bad repetition operator: {text}"));
        }
        Ok(Some(text))
    }

    /// After a `(`.  Returns whether the group must be closed by a `)`
    /// (everything but a bare flag setting such as `(?i)`).
    fn group_open(&mut self) -> Result<bool, String> {
        if self.peek() != Some('?') {
            self.out.push('(');
            return Ok(true);
        }
        self.pos += 1;
        if self.starts_with("P<") || (self.starts_with("<") && !self.starts_with("<=") && !self.starts_with("<!")) {
            self.pos += if self.peek() == Some('P') { 2 } else { 1 };
            let start = self.pos;
            while self.peek().is_some_and(|c| c != '>') {
                self.pos += 1;
            }
            if self.peek() != Some('>') {
                return Err("invalid named capture group: missing >".to_string());
            }
            let name: String = self.chars[start..self.pos].iter().collect();
            self.pos += 1;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid named capture group: {name:?}"));
            }
            self.out.push_str(&format!("(?P<{name}>"));
            return Ok(true);
        }
        if self.starts_with("P=") || self.starts_with("P>") {
            return Err("backreferences are not supported by RE2".to_string());
        }
        if self.starts_with("=") || self.starts_with("!") || self.starts_with("<=") || self.starts_with("<!") {
            return Err("lookaround assertions are not supported by RE2".to_string());
        }
        // Flags: `(?flags)` or `(?flags:...)`, flags from `imsU`, one `-`.
        let mut flags = String::new();
        let mut negated = false;
        let mut after_dash = 0;
        loop {
            match self.peek() {
                Some(c @ ('i' | 'm' | 's' | 'U')) => {
                    flags.push(c);
                    if negated {
                        after_dash += 1;
                    }
                    self.pos += 1;
                }
                Some('-') if !negated => {
                    negated = true;
                    flags.push('-');
                    self.pos += 1;
                }
                Some(end @ (')' | ':')) => {
                    if flags.is_empty() || (negated && after_dash == 0) {
                        return Err(format!("invalid or unsupported Perl syntax: (?{flags}{end}"));
                    }
                    self.pos += 1;
                    self.out.push_str(&format!("(?{flags}{end}"));
                    return Ok(end == ':');
                }
                Some(other) => {
                    return Err(format!(
                        "invalid or unsupported Perl syntax: (?{flags}{other} (RE2 supports the flags i, m, s, U)"
                    ));
                }
                None => return Err("missing ): unclosed flag group".to_string()),
            }
        }
    }

    /// After a `\` outside a class; `None` leaves the previous item
    /// repeatable as it was (a stray `\E`, which RE2 ignores).
    fn escape(&mut self) -> Result<Option<Last>, String> {
        let Some(c) = self.peek() else {
            return Err("trailing \\".to_string());
        };
        self.pos += 1;
        match c {
            'b' | 'B' => {
                // RE2's word boundary is ASCII.
                self.out.push_str(&format!("(?-u:\\{c})"));
                Ok(Some(Last::Atom))
            }
            'A' | 'z' => {
                self.out.push('\\');
                self.out.push(c);
                Ok(Some(Last::Atom))
            }
            'Q' => {
                let mut any = false;
                while self.pos < self.chars.len() {
                    if self.starts_with("\\E") {
                        self.pos += 2;
                        break;
                    }
                    let lit = self.chars[self.pos];
                    push_literal(&mut self.out, lit);
                    any = true;
                    self.pos += 1;
                }
                Ok(any.then_some(Last::Atom))
            }
            'E' => Ok(None),
            _ => match self.escape_item(c, false)? {
                ClassItem::Char(ch) => {
                    push_literal(&mut self.out, ch);
                    Ok(Some(Last::Atom))
                }
                ClassItem::Set(set) => {
                    self.out.push_str(&set);
                    Ok(Some(Last::Atom))
                }
            },
        }
    }

    /// The escapes shared by both contexts; `c` (after the `\`) is consumed.
    fn escape_item(&mut self, c: char, in_class: bool) -> Result<ClassItem, String> {
        let perl = |class: &str, negated: bool| -> ClassItem {
            ClassItem::Set(match (in_class, negated) {
                (true, false) => class.to_string(),
                (_, true) => format!("[^{class}]"),
                (false, false) => format!("[{class}]"),
            })
        };
        Ok(match c {
            'd' => perl("0-9", false),
            'D' => perl("0-9", true),
            's' => perl("\\t\\n\\x0C\\r\\x20", false),
            'S' => perl("\\t\\n\\x0C\\r\\x20", true),
            'w' => perl("0-9A-Za-z_", false),
            'W' => perl("0-9A-Za-z_", true),
            'p' | 'P' => ClassItem::Set(self.unicode_class(c == 'P')?),
            'a' => ClassItem::Char('\x07'),
            'f' => ClassItem::Char('\x0C'),
            't' => ClassItem::Char('\t'),
            'n' => ClassItem::Char('\n'),
            'r' => ClassItem::Char('\r'),
            'v' => ClassItem::Char('\x0B'),
            'x' => ClassItem::Char(self.hex_escape()?),
            '0'..='7' => ClassItem::Char(self.octal_escape(c)?),
            '8' | '9' => return Err(format!("invalid escape sequence: \\{c} (backreferences are not supported)")),
            'C' => return Err("\\C (any byte) is not supported".to_string()),
            c if c.is_ascii() && !c.is_ascii_alphanumeric() && !c.is_ascii_whitespace() && !c.is_ascii_control() => {
                ClassItem::Char(c)
            }
            c if in_class && matches!(c, 'b' | 'A' | 'z' | 'Q' | 'E') => {
                return Err(format!("invalid escape sequence in a character class: \\{c}"));
            }
            c => return Err(format!("invalid escape sequence: \\{c}")),
        })
    }

    /// `\pN`, `\p{Name}`, `\p{^Name}` (and `\P...`), after the letter.
    fn unicode_class(&mut self, mut negated: bool) -> Result<String, String> {
        let name: String = match self.peek() {
            Some('{') => {
                self.pos += 1;
                let start = self.pos;
                while self.peek().is_some_and(|c| c != '}') {
                    self.pos += 1;
                }
                if self.peek() != Some('}') {
                    return Err("invalid character class range: missing }".to_string());
                }
                let mut name: String = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                if let Some(rest) = name.strip_prefix('^') {
                    negated = !negated;
                    name = rest.to_string();
                }
                name
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.pos += 1;
                c.to_string()
            }
            _ => return Err("invalid character class range: \\p needs a class name".to_string()),
        };
        // RE2 knows `Any`, general categories (`L`, `Lu`) and script names
        // (`Greek`, `Old_Italic`); `regex` knows many more properties.
        let category = name.len() <= 2
            && name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && name.chars().skip(1).all(|c| c.is_ascii_lowercase());
        let script = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
        if !(category || script) {
            return Err(format!("invalid character class range: \\p{{{name}}}"));
        }
        Ok(format!("\\{}{{{name}}}", if negated { 'P' } else { 'p' }))
    }

    /// After `\x`: two hex digits, or `{...}` up to 10FFFF.
    fn hex_escape(&mut self) -> Result<char, String> {
        let digits: String = if self.peek() == Some('{') {
            self.pos += 1;
            let start = self.pos;
            while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.pos += 1;
            }
            if self.peek() != Some('}') || self.pos == start {
                return Err("invalid escape sequence: bad \\x{...}".to_string());
            }
            let d = self.chars[start..self.pos].iter().collect();
            self.pos += 1;
            d
        } else {
            let two: String = self.chars[self.pos..(self.pos + 2).min(self.chars.len())].iter().collect();
            if two.len() != 2 || !two.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("invalid escape sequence: \\x needs two hex digits".to_string());
            }
            self.pos += 2;
            two
        };
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|v| *v <= 0x10FFFF)
            .and_then(char::from_u32)
            .ok_or_else(|| format!("invalid escape sequence: \\x{{{digits}}}"))
    }

    /// RE2's octal escapes: `\0` and up to two more octal digits, or a
    /// digit 1–7 followed by at least one more (a lone `\1` would be a
    /// backreference, which RE2 does not have).
    fn octal_escape(&mut self, first: char) -> Result<char, String> {
        let is_octal = |c: Option<char>| c.is_some_and(|c| ('0'..='7').contains(&c));
        if first != '0' && !is_octal(self.peek()) {
            return Err(format!("invalid escape sequence: \\{first} (backreferences are not supported)"));
        }
        let mut value = first as u32 - '0' as u32;
        for _ in 0..2 {
            if !is_octal(self.peek()) {
                break;
            }
            value = value * 8 + (self.chars[self.pos] as u32 - '0' as u32);
            self.pos += 1;
        }
        Ok(char::from_u32(value).expect("at most 0o777"))
    }

    /// After a `[`: the whole class, through its `]`.
    fn class(&mut self) -> Result<(), String> {
        self.out.push('[');
        if self.peek() == Some('^') {
            self.pos += 1;
            self.out.push('^');
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err("missing ]: unterminated character class".to_string());
            };
            if c == ']' && !first {
                self.pos += 1;
                self.out.push(']');
                return Ok(());
            }
            first = false;
            if c == '[' && self.peek_at(1) == Some(':') {
                if let Some(text) = self.posix_class()? {
                    self.out.push_str(&text);
                    continue;
                }
            }
            let lo = self.class_char()?;
            let ClassItem::Char(lo) = lo else {
                if let ClassItem::Set(s) = lo {
                    self.out.push_str(&s);
                }
                continue;
            };
            // A range needs `-` followed by something other than `]`.
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                let hi = match self.class_char()? {
                    ClassItem::Char(hi) => hi,
                    ClassItem::Set(_) => return Err(format!("bad character class range: {lo}-\\...")),
                };
                if hi < lo {
                    return Err(format!("bad character class range: {lo}-{hi}"));
                }
                push_literal(&mut self.out, lo);
                self.out.push('-');
                push_literal(&mut self.out, hi);
            } else {
                push_literal(&mut self.out, lo);
            }
        }
    }

    /// One member of a class (a character or an escaped set).
    fn class_char(&mut self) -> Result<ClassItem, String> {
        let c = self.peek().ok_or_else(|| "missing ]: unterminated character class".to_string())?;
        self.pos += 1;
        if c == '\\' {
            let e = self.peek().ok_or_else(|| "trailing \\".to_string())?;
            self.pos += 1;
            return self.escape_item(e, true);
        }
        Ok(ClassItem::Char(c))
    }

    /// `[:name:]` / `[:^name:]` at the cursor (which is on the `[`).
    /// `None` (nothing consumed) when it is not one: then RE2 reads the `[`
    /// literally.
    fn posix_class(&mut self) -> Result<Option<String>, String> {
        let start = self.pos;
        let mut end = start + 2;
        while end + 1 < self.chars.len() && !(self.chars[end] == ':' && self.chars[end + 1] == ']') {
            if self.chars[end] == ']' {
                return Ok(None);
            }
            end += 1;
        }
        if end + 1 >= self.chars.len() {
            return Ok(None);
        }
        let inner: String = self.chars[start + 2..end].iter().collect();
        let name = inner.strip_prefix('^').unwrap_or(&inner);
        if !POSIX_CLASSES.contains(&name) {
            return Err(format!("invalid character class range: [:{inner}:]"));
        }
        self.pos = end + 2;
        Ok(Some(format!("[:{inner}:]")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        to_rust(p).unwrap_or_else(|e| panic!("{p:?}: {e}"))
    }

    fn err(p: &str) -> String {
        match to_rust(p) {
            Ok(t) => panic!("{p:?} should be rejected, got {t:?}"),
            Err(e) => e,
        }
    }

    fn full(p: &str) -> regex::Regex {
        regex::Regex::new(&format!("^(?:{})$", ok(p))).unwrap_or_else(|e| panic!("{p:?}: {e}"))
    }

    #[test]
    fn plain_patterns_pass_through() {
        assert_eq!(ok("/api/v[0-9]+/users"), "/api/v[0-9]+/users");
        assert_eq!(ok("a|b(c)*?"), "a|b(c)*?");
        assert_eq!(ok("(?i)abc"), "(?i)abc");
        assert_eq!(ok("(?P<id>[^/]+)"), "(?P<id>[^/]+)");
        assert_eq!(ok("(?<id>x)"), "(?P<id>x)");
        assert_eq!(ok("x{2,5}y{3}z{1,}"), "x{2,5}y{3}z{1,}");
    }

    #[test]
    fn perl_classes_are_ascii() {
        let d = full("\\d+");
        assert!(d.is_match("123"));
        assert!(!d.is_match("١٢٣"), "Arabic-Indic digits are not \\d in RE2");
        let w = full("\\w+");
        assert!(w.is_match("ab_9"));
        assert!(!w.is_match("é"));
        let s = full("\\s");
        assert!(s.is_match(" ") && s.is_match("\t"));
        assert!(!s.is_match("\x0B"), "RE2's \\s has no \\v");
        let neg = full("[\\D]+");
        assert!(neg.is_match("abc") && !neg.is_match("1"));
        let b = regex::Regex::new(&ok("\\bé")).unwrap();
        assert!(b.is_match("xé"), "é is no ASCII word character, so x|é is a boundary");
    }

    #[test]
    fn re2_only_spellings_are_translated() {
        assert!(full("\\Qa.b\\E").is_match("a.b"));
        assert!(!full("\\Qa.b\\E").is_match("axb"));
        assert!(full("\\101").is_match("A"), "octal");
        assert!(full("\\0").is_match("\0"));
        assert!(full("[[]").is_match("["), "a literal [ in a class");
        assert!(full("a{,2}").is_match("a{,2}"), "a brace that starts no repetition is literal");
        assert!(full("\\<x\\>").is_match("<x>"), "escaped punctuation is literal");
        assert!(full("[a&&b]").is_match("&"), "&& is no set operation in RE2");
        assert!(full("[-a-]").is_match("-"));
        assert!(full("a\\E*").is_match("aaa"), "a stray \\E is ignored");
        assert!(full("[a~~]").is_match("~"));
        assert!(full("\\p{^Greek}").is_match("a"));
        assert!(!full("\\p{^Greek}").is_match("α"));
        assert!(full("[[:alpha:]]+").is_match("abc"));
        assert!(full("[[:^digit:]]").is_match("x"));
        assert!(full("\\x41\\x{42}").is_match("AB"));
        assert!(full("[\\x41-\\x43]").is_match("B"));
        assert!(full("a# b").is_match("a# b"), "no extended mode");
    }

    #[test]
    fn what_re2_rejects_is_rejected() {
        assert!(err("(?x)a b").contains("flags i, m, s, U"));
        err("(?u)a");
        err("(?)a");
        err("(?i-)a");
        err("(?=a)");
        err("(?!a)");
        err("(?<=a)b");
        err("(?<!a)b");
        err("(a)\\1");
        err("\\8");
        err("(?P=name)");
        err("(?#comment)");
        err("(?>atomic)");
        assert!(err("a**").contains("bad repetition operator"));
        err("a*+");
        err("a??+");
        assert!(err("*a").contains("missing argument"));
        assert!(err("a{1001}").contains("bad repetition operator"));
        err("a{2,1001}");
        err("a{3,2}");
        err("\\C");
        err("\\Z");
        err("\\u0041");
        err("\\U00000041");
        err("\\e");
        err("[a");
        err("(a");
        err("a)");
        err("[z-a]");
        err("[a--]");
        err("[[:nope:]]");
        err("\\p{Alphabetic2}");
        err("(?P<a-b>x)");
        err("trailing\\");
    }

    #[test]
    fn substitutions() {
        assert_eq!(substitution_to_rust("\\2/instance/\\1", 2).unwrap(), "${2}/instance/${1}");
        assert_eq!(substitution_to_rust("a\\\\b$c", 0).unwrap(), "a\\b$$c");
        assert_eq!(substitution_to_rust("\\0", 0).unwrap(), "${0}");
        assert!(substitution_to_rust("\\3", 2).is_err());
        assert!(substitution_to_rust("\\n", 2).is_err());
        assert!(substitution_to_rust("x\\", 2).is_err());
        let re = regex::Regex::new(&to_rust("^/service/([^/]+)(/.*)$").unwrap()).unwrap();
        let sub = substitution_to_rust("\\2/instance/\\1", 2).unwrap();
        assert_eq!(re.replace_all("/service/foo/v1/api", sub.as_str()), "/v1/api/instance/foo");
    }
}
