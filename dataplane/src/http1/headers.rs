//! An ordered header list stored in two arenas plus an index vector.
//!
//! Field names are lower-cased when they enter the list (HTTP field names are
//! case-insensitive, RFC 9110 §5.1), so lookups compare bytes once and the
//! encoder writes the canonical lower-case form, as Envoy does by default.
//! Names live in a `String` arena so `iter()` can hand out `&str` without a
//! UTF-8 re-check; values are opaque bytes (obs-text is legal, RFC 9110 §5.5).
//! `clear()` keeps every capacity, so a connection that reuses one `Headers`
//! per direction stops allocating after its first few requests.

use std::fmt;

/// One field: byte ranges into the two arenas.  `u32` keeps an entry at
/// 16 bytes; a head is bounded by `Limits::max_head_bytes` long before 4 GiB.
#[derive(Clone, Copy, Debug)]
struct Field {
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
}

/// Header list: names lower-cased on insert/parse; stored in one byte arena
/// (plus a name arena) and an index vector so `clear()` keeps capacity.
///
/// `remove()` only drops index entries; the arena bytes they pointed at stay
/// until `clear()`.  That keeps removal O(n) with no copying, and a head's
/// lifetime (one request) bounds the waste.
#[derive(Clone, Default)]
pub struct Headers {
    names: String,
    values: Vec<u8>,
    fields: Vec<Field>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Pre-sizes the arenas (e.g. once per connection).
    pub fn with_capacity(fields: usize, bytes: usize) -> Headers {
        Headers {
            names: String::with_capacity(fields * 16),
            values: Vec::with_capacity(bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Bytes of storage the arenas hold.
    pub fn storage_capacity(&self) -> usize {
        self.names.capacity() + self.values.capacity() + self.fields.capacity() * std::mem::size_of::<Field>()
    }

    /// Empties the list, keeping all capacity.
    pub fn clear(&mut self) {
        self.names.clear();
        self.values.clear();
        self.fields.clear();
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn name_of(&self, f: &Field) -> &str {
        &self.names[f.name_start as usize..f.name_end as usize]
    }

    fn value_of(&self, f: &Field) -> &[u8] {
        &self.values[f.value_start as usize..f.value_end as usize]
    }

    /// Value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|f| self.name_of(f).eq_ignore_ascii_case(name)).map(|f| self.value_of(f))
    }

    /// Values of every field called `name`, in received order.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.fields.iter().filter(move |f| self.name_of(f).eq_ignore_ascii_case(name)).map(move |f| self.value_of(f))
    }

    /// Number of fields called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|f| self.name_of(f).eq_ignore_ascii_case(name)).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a field.  The caller vouches for syntax (a token name and a
    /// value without CR/LF/NUL, see [`is_valid_name`]/[`is_valid_value`]):
    /// the encoder writes fields verbatim, so an unchecked value taken from
    /// an untrusted source could split the head.
    pub fn append(&mut self, name: &str, value: &[u8]) {
        let name_start = self.names.len();
        self.names.push_str(name);
        self.names[name_start..].make_ascii_lowercase();
        let value_start = self.values.len();
        self.values.extend_from_slice(value);
        self.fields.push(Field {
            name_start: name_start as u32,
            name_end: self.names.len() as u32,
            value_start: value_start as u32,
            value_end: self.values.len() as u32,
        });
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        let names = &self.names;
        self.fields.retain(|f| !names[f.name_start as usize..f.name_end as usize].eq_ignore_ascii_case(name));
        before - self.fields.len()
    }

    /// Replaces every field called `name` by one field with `value`
    /// (appended at the end).
    pub fn set(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.append(name, value);
    }

    /// `(name, value)` pairs in order; names are lower-case.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(move |f| (self.name_of(f), self.value_of(f)))
    }

    /// Keeps only the fields for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        let names = &self.names;
        let values = &self.values;
        self.fields.retain(|f| {
            keep(
                &names[f.name_start as usize..f.name_end as usize],
                &values[f.value_start as usize..f.value_end as usize],
            )
        });
    }

    /// Removes every field whose name is listed in a `list_field` field
    /// (e.g. the Connection options, RFC 9110 §7.6.1), except names for which
    /// `protect` is true.  Works in place without copying the tokens out: the
    /// list fields themselves are never removed here, so their positions are
    /// stable while other entries are dropped around them.
    pub(crate) fn remove_listed(&mut self, list_field: &str, protect: impl Fn(&str) -> bool) {
        let mut k = 0;
        while let Some(&lf) = self.fields.iter().filter(|f| self.name_of(f).eq_ignore_ascii_case(list_field)).nth(k) {
            k += 1;
            let names = &self.names;
            let fields = &mut self.fields;
            let list = &self.values[lf.value_start as usize..lf.value_end as usize];
            for token in list_elements(list) {
                if token.eq_ignore_ascii_case(list_field.as_bytes()) {
                    continue;
                }
                fields.retain(|f| {
                    let n = &names[f.name_start as usize..f.name_end as usize];
                    !n.as_bytes().eq_ignore_ascii_case(token) || protect(n)
                });
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn capacities(&self) -> (usize, usize, usize) {
        (self.names.capacity(), self.values.capacity(), self.fields.capacity())
    }

    /// Total bytes of names and values (what `max_request_headers_kb`-style
    /// accounting counts), ignoring removed fields.
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(|f| (f.name_end - f.name_start + f.value_end - f.value_start) as usize).sum()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_list();
        for (n, v) in self.iter() {
            m.entry(&(n, String::from_utf8_lossy(v)));
        }
        m.finish()
    }
}

/// `tchar` (RFC 9110 §5.6.2): the bytes a token (field name, method,
/// transfer-coding) may contain.
pub(crate) const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// A field-value byte (RFC 9110 §5.5): VCHAR, SP, HTAB or obs-text.
/// Everything else (CTLs including CR, LF and NUL, and DEL) is forbidden.
pub(crate) const fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// True if `name` is a non-empty token and may be used as a field name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// True if `value` contains only field-value bytes (no CR, LF, NUL or other CTL).
pub fn is_valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| is_field_vchar(b))
}

/// Elements of a comma-separated list field (RFC 9110 §5.6.1), OWS-trimmed,
/// with empty elements skipped as the RFC asks recipients to do.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_lowercases_and_lookups_ignore_case() {
        let mut h = Headers::new();
        h.append("Content-Type", b"text/plain");
        h.append("X-A", b"1");
        h.append("x-a", b"2");
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(h.get("CONTENT-TYPE"), Some(&b"text/plain"[..]));
        assert_eq!(h.get_all("X-a").collect::<Vec<_>>(), vec![&b"1"[..], b"2"]);
        assert_eq!(h.count("x-a"), 2);
        assert!(h.contains("x-A"));
        assert!(!h.contains("x-b"));
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["content-type", "x-a", "x-a"]);
    }

    #[test]
    fn remove_set_and_clear() {
        let mut h = Headers::new();
        h.append("a", b"1");
        h.append("b", b"2");
        h.append("A", b"3");
        assert_eq!(h.remove("a"), 2);
        assert_eq!(h.remove("a"), 0);
        assert_eq!(h.len(), 1);
        h.set("b", b"x");
        h.append("c", b"y");
        h.set("B", b"z");
        let all: Vec<_> = h.iter().collect();
        assert_eq!(all, vec![("c", &b"y"[..]), ("b", &b"z"[..])]);
        let cap = h.values.capacity();
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h.values.capacity(), cap);
        assert_eq!(h.get("c"), None);
    }

    #[test]
    fn list_elements_trim_and_skip_empty() {
        let v: Vec<_> = list_elements(b" a ,, b\t,c , ").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(trim_ows(b" \t x y \t"), b"x y");
        assert_eq!(trim_ows(b"   "), b"");
    }

    #[test]
    fn validity_helpers() {
        assert!(is_valid_name("x-foo_bar"));
        assert!(!is_valid_name("x foo"));
        assert!(!is_valid_name(""));
        assert!(is_valid_value(b"a b\tc\xff"));
        assert!(!is_valid_value(b"a\r\nb"));
        assert!(!is_valid_value(b"a\0"));
    }
}
