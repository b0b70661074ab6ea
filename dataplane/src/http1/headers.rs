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

/// Declares [`WellKnown`]: its variants, their spellings, and the lookup
/// table, from one list so they cannot drift apart.
macro_rules! well_known {
    ($($variant:ident = $name:literal,)*) => {
        /// Field names meshgate itself reads, writes or strips.  A field
        /// whose name is one of these is tagged when it enters the list, so
        /// looking one up compares a byte instead of the name, and asking
        /// for one that is absent (most of them, on most messages) is a
        /// bit test.  Any other name still works through `&str`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum WellKnown {
            $($variant,)*
        }

        /// Spellings by discriminant, for comparing without a `match`.
        static NAMES: &[&[u8]] = &[$($name.as_bytes(),)*];

        impl WellKnown {
            /// Every variant, in discriminant order.
            pub const ALL: &'static [WellKnown] = &[$(WellKnown::$variant,)*];

            /// The lower-case spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(WellKnown::$variant => $name,)*
                }
            }
        }
    };
}

well_known! {
    Host = "host",
    Connection = "connection",
    KeepAlive = "keep-alive",
    ProxyConnection = "proxy-connection",
    Te = "te",
    TransferEncoding = "transfer-encoding",
    Upgrade = "upgrade",
    ContentLength = "content-length",
    ContentType = "content-type",
    Expect = "expect",
    Date = "date",
    Server = "server",
    Cookie = "cookie",
    Http2Settings = "http2-settings",
    SecWebsocketKey = "sec-websocket-key",
    SecWebsocketVersion = "sec-websocket-version",
    SecWebsocketAccept = "sec-websocket-accept",
    XForwardedFor = "x-forwarded-for",
    XForwardedProto = "x-forwarded-proto",
    XForwardedHost = "x-forwarded-host",
    XForwardedClientCert = "x-forwarded-client-cert",
    XRequestId = "x-request-id",
    GrpcTimeout = "grpc-timeout",
    GrpcStatus = "grpc-status",
    GrpcMessage = "grpc-message",
    XEnvoyRetryOn = "x-envoy-retry-on",
    XEnvoyRetryGrpcOn = "x-envoy-retry-grpc-on",
    XEnvoyMaxRetries = "x-envoy-max-retries",
    XEnvoyRetriableStatusCodes = "x-envoy-retriable-status-codes",
    XEnvoyRetriableHeaderNames = "x-envoy-retriable-header-names",
    XEnvoyUpstreamRqTimeoutMs = "x-envoy-upstream-rq-timeout-ms",
    XEnvoyUpstreamRqPerTryTimeoutMs = "x-envoy-upstream-rq-per-try-timeout-ms",
    XEnvoyUpstreamRqTimeoutAltResponse = "x-envoy-upstream-rq-timeout-alt-response",
    XEnvoyHedgeOnPerTryTimeout = "x-envoy-hedge-on-per-try-timeout",
    XEnvoyAttemptCount = "x-envoy-attempt-count",
    XEnvoyOverloaded = "x-envoy-overloaded",
    XEnvoyOriginalPath = "x-envoy-original-path",
    XEnvoyOriginalHost = "x-envoy-original-host",
}

/// A set of [`WellKnown`] names as a bit mask (bit = discriminant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KnownSet(u64);

impl KnownSet {
    pub const fn of(names: &[WellKnown]) -> KnownSet {
        let mut bits = 0u64;
        let mut i = 0;
        while i < names.len() {
            bits |= 1 << names[i] as u8;
            i += 1;
        }
        KnownSet(bits)
    }
}

/// Bit of [`Headers::present`] that says some field's name starts with
/// `x-envoy-` (the request headers Envoy's router consumes).  Above every
/// [`WellKnown`] bit.
const ENVOY_PREFIX_BIT: u64 = 1 << 63;
const ENVOY_PREFIX: &str = "x-envoy-";

fn starts_with_envoy_prefix(name: &str) -> bool {
    name.len() >= ENVOY_PREFIX.len()
        && name.as_bytes()[..ENVOY_PREFIX.len()].eq_ignore_ascii_case(ENVOY_PREFIX.as_bytes())
}

/// The [`WellKnown`] names that start with `x-envoy-`.
const ENVOY_NAMED: KnownSet = {
    let mut bits = 0u64;
    let mut i = 0;
    while i < WellKnown::ALL.len() {
        let name = WellKnown::ALL[i].as_str().as_bytes();
        let prefix = ENVOY_PREFIX.as_bytes();
        let mut j = 0;
        while j < prefix.len() && j < name.len() && name[j] == prefix[j] {
            j += 1;
        }
        if j == prefix.len() {
            bits |= 1 << i;
        }
        i += 1;
    }
    KnownSet(bits)
};
const _: () = assert!(WellKnown::ALL.len() < 63, "WellKnown bits must stay below ENVOY_PREFIX_BIT");

/// `Field::known` of a name that is not [`WellKnown`].
const OTHER: u8 = u8::MAX;

/// Open-addressed table from a cheap hash of a name to its [`WellKnown`]
/// discriminant (`OTHER` = empty slot), built at compile time.  With ~40
/// names in 256 slots a lookup is one hash, usually one probe, and one
/// comparison: cheaper than walking a `match` of every spelling.
const TABLE_SLOTS: usize = 256;
static TABLE: [u8; TABLE_SLOTS] = build_table();

/// Reads only the length and three bytes, lower-cased, so the hash of a
/// query in any case equals the hash of the stored lower-case name.
const fn slot_of(name: &[u8]) -> usize {
    let n = name.len();
    if n == 0 {
        return 0;
    }
    let last = name[n - 1].to_ascii_lowercase() as usize;
    let mid = name[n / 2].to_ascii_lowercase() as usize;
    let third_last = if n >= 3 { name[n - 3].to_ascii_lowercase() as usize } else { 0 };
    (n.wrapping_mul(37) ^ last.wrapping_mul(11) ^ mid.wrapping_mul(5) ^ third_last) % TABLE_SLOTS
}

const fn build_table() -> [u8; TABLE_SLOTS] {
    let mut table = [OTHER; TABLE_SLOTS];
    let mut i = 0;
    while i < WellKnown::ALL.len() {
        let mut slot = slot_of(WellKnown::ALL[i].as_str().as_bytes());
        while table[slot] != OTHER {
            slot = (slot + 1) % TABLE_SLOTS;
        }
        table[slot] = i as u8;
        i += 1;
    }
    table
}

impl WellKnown {
    /// The well-known name `name` spells, in any letter case.
    pub fn classify(name: &str) -> Option<WellKnown> {
        WellKnown::find(name.as_bytes(), |spelling| spelling.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// As [`classify`](Self::classify) for a name already in lower case
    /// (how the list stores them): an exact comparison.
    fn classify_lower(name: &[u8]) -> Option<WellKnown> {
        WellKnown::find(name, |spelling| spelling == name)
    }

    #[inline]
    fn find(name: &[u8], same: impl Fn(&[u8]) -> bool) -> Option<WellKnown> {
        let mut slot = slot_of(name);
        loop {
            let k = TABLE[slot];
            if k == OTHER {
                return None;
            }
            let spelling = NAMES[k as usize];
            if spelling.len() == name.len() && same(spelling) {
                return Some(WellKnown::ALL[k as usize]);
            }
            slot = (slot + 1) % TABLE_SLOTS;
        }
    }

    const fn bit(self) -> u64 {
        1 << self as u8
    }
}

/// What a lookup names: a [`WellKnown`] field (compared by tag) or any other
/// (compared by spelling, ASCII case-insensitively).
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    Known(WellKnown),
    Other(&'a str),
}

/// Anything [`Headers`] can look a field up by: a [`WellKnown`] name (no
/// string work at all) or a string, classified once per call.
pub trait FieldName<'a>: Copy {
    /// The name as given: already a [`WellKnown`], or a string not yet
    /// classified (no work done).
    fn spelled(self) -> Result<WellKnown, &'a str>;

    /// The name classified for a lookup.
    #[inline]
    fn lookup(self) -> Lookup<'a> {
        match self.spelled() {
            Ok(k) => Lookup::Known(k),
            Err(name) => match WellKnown::classify(name) {
                Some(k) => Lookup::Known(k),
                None => Lookup::Other(name),
            },
        }
    }
}

impl<'a> FieldName<'a> for WellKnown {
    #[inline]
    fn spelled(self) -> Result<WellKnown, &'a str> {
        Ok(self)
    }
}

impl<'a> FieldName<'a> for &'a str {
    #[inline]
    fn spelled(self) -> Result<WellKnown, &'a str> {
        Err(self)
    }
}

impl<'a, 'b: 'a> FieldName<'a> for &'a &'b str {
    #[inline]
    fn spelled(self) -> Result<WellKnown, &'a str> {
        Err(*self)
    }
}

impl<'a> FieldName<'a> for &'a String {
    #[inline]
    fn spelled(self) -> Result<WellKnown, &'a str> {
        Err(self.as_str())
    }
}

/// One field: byte ranges into the two arenas, and the name's
/// [`WellKnown`] tag (`OTHER` if none).  `u32` offsets keep an entry at 20
/// bytes; a head is bounded by `Limits::max_head_bytes` long before 4 GiB.
#[derive(Clone, Copy, Debug)]
struct Field {
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
    known: u8,
}

impl Field {
    #[inline]
    fn matches(&self, names: &str, lookup: Lookup<'_>) -> bool {
        match lookup {
            Lookup::Known(k) => self.known == k as u8,
            Lookup::Other(name) => {
                self.known == OTHER
                    && names[self.name_start as usize..self.name_end as usize].eq_ignore_ascii_case(name)
            }
        }
    }
}

/// Header list: names lower-cased on insert/parse; stored in one byte arena
/// (plus a name arena) and an index vector so `clear()` keeps capacity.
///
/// `remove()` only drops index entries; the arena bytes they pointed at stay
/// until `clear()`.  That keeps removal O(n) with no copying, and a head's
/// lifetime (one request) bounds the waste.
///
/// `present` has the bit of every [`WellKnown`] name some field carries
/// (plus [`ENVOY_PREFIX_BIT`]), exactly: every change to `fields` keeps it
/// in step, so a clear bit proves the name absent.
#[derive(Clone, Default)]
pub struct Headers {
    names: String,
    values: Vec<u8>,
    fields: Vec<Field>,
    present: u64,
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
            present: 0,
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
        self.present = 0;
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

    /// False only if no field can match: a well-known name whose bit is clear.
    #[inline]
    fn may_contain(&self, lookup: Lookup<'_>) -> bool {
        match lookup {
            Lookup::Known(k) => self.present & k.bit() != 0,
            Lookup::Other(_) => !self.fields.is_empty(),
        }
    }

    /// Value of the first field called `name` (ASCII case-insensitive).
    pub fn get<'n>(&self, name: impl FieldName<'n>) -> Option<&[u8]> {
        let lookup = name.lookup();
        if !self.may_contain(lookup) {
            return None;
        }
        self.fields.iter().find(|f| f.matches(&self.names, lookup)).map(|f| self.value_of(f))
    }

    /// Values of every field called `name`, in received order.
    pub fn get_all<'s>(&'s self, name: impl FieldName<'s> + 's) -> impl Iterator<Item = &'s [u8]> + 's {
        let lookup = name.lookup();
        let fields = if self.may_contain(lookup) { &self.fields[..] } else { &[] };
        fields.iter().filter(move |f| f.matches(&self.names, lookup)).map(move |f| self.value_of(f))
    }

    /// Number of fields called `name`.
    pub fn count<'n>(&self, name: impl FieldName<'n>) -> usize {
        let lookup = name.lookup();
        if !self.may_contain(lookup) {
            return 0;
        }
        self.fields.iter().filter(|f| f.matches(&self.names, lookup)).count()
    }

    pub fn contains<'n>(&self, name: impl FieldName<'n>) -> bool {
        match name.lookup() {
            Lookup::Known(k) => self.present & k.bit() != 0,
            lookup @ Lookup::Other(_) => self.fields.iter().any(|f| f.matches(&self.names, lookup)),
        }
    }

    /// Whether any of `names` is present: one mask test.
    pub fn contains_any(&self, names: KnownSet) -> bool {
        self.present & names.0 != 0
    }

    /// Whether some field's name starts with `x-envoy-`.
    pub fn has_envoy_prefixed(&self) -> bool {
        self.present & ENVOY_PREFIX_BIT != 0
    }

    /// Appends a field.  The caller vouches for syntax (a token name and a
    /// value without CR/LF/NUL, see [`is_valid_name`]/[`is_valid_value`]):
    /// the encoder writes fields verbatim, so an unchecked value taken from
    /// an untrusted source could split the head.
    pub fn append<'n>(&mut self, name: impl FieldName<'n>, value: &[u8]) {
        let name_start = self.names.len();
        let known = match name.spelled() {
            Ok(k) => {
                self.names.push_str(k.as_str());
                Some(k)
            }
            Err(name) => {
                self.names.push_str(name);
                self.names[name_start..].make_ascii_lowercase();
                WellKnown::classify_lower(&self.names.as_bytes()[name_start..])
            }
        };
        self.present |= match known {
            Some(k) if ENVOY_NAMED.0 & k.bit() != 0 => k.bit() | ENVOY_PREFIX_BIT,
            Some(k) => k.bit(),
            None if self.names[name_start..].starts_with(ENVOY_PREFIX) => ENVOY_PREFIX_BIT,
            None => 0,
        };
        let value_start = self.values.len();
        self.values.extend_from_slice(value);
        self.fields.push(Field {
            name_start: name_start as u32,
            name_end: self.names.len() as u32,
            value_start: value_start as u32,
            value_end: self.values.len() as u32,
            known: known.map_or(OTHER, |k| k as u8),
        });
    }

    /// The `present` bits one field contributes.
    #[inline]
    fn bits_of(&self, f: &Field) -> u64 {
        let known = if f.known == OTHER { 0 } else { 1u64 << f.known };
        let envoy = if self.name_of(f).starts_with(ENVOY_PREFIX) { ENVOY_PREFIX_BIT } else { 0 };
        known | envoy
    }

    /// Recomputes `present` after fields were dropped.
    fn recount(&mut self) {
        self.present = self.fields.iter().fold(0, |bits, f| bits | self.bits_of(f));
    }

    /// Brings `present` in line after every field in `removed` (well-known
    /// names) and perhaps others named `other` went: those bits clear at
    /// once, and only an `x-envoy-` name can have taken the prefix bit's
    /// last holder with it, which needs a rescan.
    fn forget(&mut self, removed: u64, other: Option<&str>) {
        self.present &= !removed;
        let envoy_named = removed & ENVOY_NAMED.0 != 0 || other.is_some_and(starts_with_envoy_prefix);
        if envoy_named && self.present & ENVOY_PREFIX_BIT != 0 {
            self.recount();
        }
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove<'n>(&mut self, name: impl FieldName<'n>) -> usize {
        let lookup = name.lookup();
        if !self.may_contain(lookup) {
            return 0;
        }
        let before = self.fields.len();
        let names = &self.names;
        self.fields.retain(|f| !f.matches(names, lookup));
        let removed = before - self.fields.len();
        if removed > 0 {
            match lookup {
                Lookup::Known(k) => self.forget(k.bit(), None),
                Lookup::Other(name) => self.forget(0, Some(name)),
            }
        }
        removed
    }

    /// Removes every field whose name is in `names`; returns how many.
    pub fn remove_all(&mut self, names: KnownSet) -> usize {
        if !self.contains_any(names) {
            return 0;
        }
        let before = self.fields.len();
        self.fields.retain(|f| f.known == OTHER || names.0 & (1u64 << f.known) == 0);
        self.forget(names.0, None);
        before - self.fields.len()
    }

    /// Replaces every field called `name` by one field with `value`
    /// (appended at the end).
    pub fn set<'n>(&mut self, name: impl FieldName<'n>, value: &[u8]) {
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
        let before = self.fields.len();
        self.fields.retain(|f| {
            keep(
                &names[f.name_start as usize..f.name_end as usize],
                &values[f.value_start as usize..f.value_end as usize],
            )
        });
        if self.fields.len() != before {
            self.recount();
        }
    }

    /// Removes every field whose name is listed in a `list_field` field
    /// (e.g. the Connection options, RFC 9110 §7.6.1), except names for which
    /// `protect` is true.  Works in place without copying the tokens out: the
    /// list fields themselves are never removed here, so their positions are
    /// stable while other entries are dropped around them.
    pub(crate) fn remove_listed(&mut self, list_field: WellKnown, protect: impl Fn(&str) -> bool) {
        if self.present & list_field.bit() == 0 {
            return;
        }
        let before = self.fields.len();
        let mut k = 0;
        while let Some(&lf) = self.fields.iter().filter(|f| f.known == list_field as u8).nth(k) {
            k += 1;
            let names = &self.names;
            let fields = &mut self.fields;
            let list = &self.values[lf.value_start as usize..lf.value_end as usize];
            for token in list_elements(list) {
                match WellKnown::find(token, |spelling| spelling.eq_ignore_ascii_case(token)) {
                    Some(k) if k == list_field || protect(k.as_str()) => {}
                    // Nothing to scan for when no field carries the name.
                    Some(k) if self.present & k.bit() == 0 => {}
                    Some(k) => fields.retain(|f| f.known != k as u8),
                    None => fields.retain(|f| {
                        let n = &names[f.name_start as usize..f.name_end as usize];
                        f.known != OTHER || !n.as_bytes().eq_ignore_ascii_case(token) || protect(n)
                    }),
                }
            }
        }
        if self.fields.len() != before {
            self.recount();
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
    fn every_well_known_name_classifies_to_itself_in_any_case() {
        for &k in WellKnown::ALL {
            assert_eq!(WellKnown::classify(k.as_str()), Some(k));
            assert_eq!(WellKnown::classify(&k.as_str().to_ascii_uppercase()), Some(k));
        }
        for other in ["", "x", "hos", "hostx", "x-envoy-", "x-envoy-retry-onn", "content-lengtH2", "x-forwarded"] {
            assert_eq!(WellKnown::classify(other), None, "{other:?}");
        }
    }

    #[test]
    fn well_known_and_other_names_are_found_however_they_were_spelled() {
        let mut h = Headers::new();
        h.append("Content-Length", b"5");
        h.append(WellKnown::Host, b"a");
        h.append("X-Custom", b"1");
        assert_eq!(h.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["content-length", "host", "x-custom"]);
        assert_eq!(h.get(WellKnown::ContentLength), Some(&b"5"[..]));
        assert_eq!(h.get("CONTENT-LENGTH"), Some(&b"5"[..]));
        assert_eq!(h.get("host"), Some(&b"a"[..]));
        assert_eq!(h.get("x-CUSTOM"), Some(&b"1"[..]));
        assert_eq!(h.get(WellKnown::TransferEncoding), None);
        assert!(h.contains_any(KnownSet::of(&[WellKnown::Te, WellKnown::Host])));
        assert!(!h.contains_any(KnownSet::of(&[WellKnown::Te, WellKnown::Upgrade])));
    }

    /// `present` must follow every removal path, or a later lookup of a
    /// removed name would scan (harmless) and, worse, a re-added one would
    /// be missed if a bit were cleared wrongly.
    #[test]
    fn presence_bits_follow_every_removal() {
        let mut h = Headers::new();
        h.append("te", b"trailers");
        h.append("te", b"x");
        h.append("upgrade", b"websocket");
        h.append("connection", b"upgrade, x-hop");
        h.append("x-hop", b"1");
        h.append("x-envoy-retry-on", b"5xx");
        assert!(h.has_envoy_prefixed());
        assert_eq!(h.remove(WellKnown::Te), 2);
        assert!(!h.contains(WellKnown::Te));
        assert_eq!(h.remove(WellKnown::Te), 0);
        h.remove_listed(WellKnown::Connection, |_| false);
        assert!(!h.contains("x-hop"));
        assert!(!h.contains(WellKnown::Upgrade), "the Connection option named upgrade");
        assert!(h.contains(WellKnown::Connection));
        h.retain(|name, _| name != "x-envoy-retry-on");
        assert!(!h.has_envoy_prefixed());
        assert!(!h.contains(WellKnown::XEnvoyRetryOn));
        h.append("x-envoy-custom", b"1");
        assert!(h.has_envoy_prefixed(), "an unlisted x-envoy- name counts too");
        assert_eq!(h.remove_all(KnownSet::of(&[WellKnown::Connection, WellKnown::Host])), 1);
        assert!(!h.contains(WellKnown::Connection));
        assert!(h.has_envoy_prefixed());
        h.set(WellKnown::Te, b"trailers");
        assert_eq!(h.get("TE"), Some(&b"trailers"[..]));
        h.clear();
        assert!(!h.has_envoy_prefixed() && !h.contains(WellKnown::Te));
    }

    #[test]
    fn the_envoy_prefix_bit_stays_while_any_x_envoy_field_is_left() {
        let mut h = Headers::new();
        h.append("x-envoy-retry-on", b"5xx");
        h.append("X-Envoy-Custom", b"1");
        h.append("x-envoy-max-retries", b"2");
        assert_eq!(h.remove(WellKnown::XEnvoyRetryOn), 1);
        assert!(h.has_envoy_prefixed());
        assert_eq!(h.remove("x-envoy-CUSTOM"), 1);
        assert!(h.has_envoy_prefixed(), "x-envoy-max-retries is left");
        assert_eq!(h.remove_all(KnownSet::of(&[WellKnown::XEnvoyMaxRetries])), 1);
        assert!(!h.has_envoy_prefixed());
        h.append("x-envoy-custom", b"1");
        h.append("host", b"a");
        assert_eq!(h.remove(WellKnown::Host), 1);
        assert!(h.has_envoy_prefixed(), "removing another name keeps the bit");
        assert_eq!(h.remove("x-other"), 0);
        assert_eq!(h.remove("X-ENVOY-custom"), 1);
        assert!(!h.has_envoy_prefixed());
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
