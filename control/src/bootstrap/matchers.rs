//! Stage 4 for Envoy's shared matcher messages: `StringMatcher`,
//! `RegexMatcher`, `PathMatcher`, `HeaderMatcher` and `CidrRange` →
//! `model`.  Used by RBAC and by route matching, so both read a config the
//! same way.
//!
//! It owns the checks Envoy makes when it loads these messages (its
//! protoc-gen-validate rules and constructor errors: non-empty prefixes,
//! header names, compilable regexes, prefix lengths).  Which fields are
//! *allowed* is the allowlist's business (`supported`); a variant the walk
//! already rejected (e.g. `custom`) is skipped here without a second error.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;

use super::{join, Errors};
use crate::model;

/// `envoy.type.matcher.v3.StringMatcher`.
pub(crate) fn string_matcher(s: &m::StringMatcher, path: &str, errors: &mut Errors) -> Option<model::StringMatch> {
    use m::string_matcher::MatchPattern;
    let non_empty = |v: &str, field: &str, errors: &mut Errors| {
        if v.is_empty() {
            errors.add(join(path, field), "must not be empty");
            None
        } else {
            Some(v.to_string())
        }
    };
    let pattern = match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => model::StringPattern::Exact(v.clone()),
        Some(MatchPattern::Prefix(v)) => model::StringPattern::Prefix(non_empty(v, "prefix", errors)?),
        Some(MatchPattern::Suffix(v)) => model::StringPattern::Suffix(non_empty(v, "suffix", errors)?),
        Some(MatchPattern::Contains(v)) => model::StringPattern::Contains(non_empty(v, "contains", errors)?),
        Some(MatchPattern::SafeRegex(r)) => {
            model::StringPattern::Regex(regex_matcher(r, &join(path, "safe_regex"), errors)?)
        }
        Some(MatchPattern::Custom(_)) => return None, // reported by the allowlist walk
        None => {
            errors.add(path, "needs one of exact, prefix, suffix, contains, safe_regex");
            return None;
        }
    };
    Some(model::StringMatch { pattern, ignore_case: s.ignore_case })
}

/// `envoy.type.matcher.v3.RegexMatcher` (RE2 syntax; the `regex` crate
/// accepts the RE2 subset Envoy configs use and rejects backreferences and
/// lookaround just as RE2 does).
pub(crate) fn regex_matcher(r: &m::RegexMatcher, path: &str, errors: &mut Errors) -> Option<model::SafeRegex> {
    if r.regex.is_empty() {
        errors.add(join(path, "regex"), "must not be empty");
        return None;
    }
    match model::SafeRegex::new(&r.regex) {
        Ok(re) => Some(re),
        Err(e) => {
            errors.add(join(path, "regex"), format!("invalid regex: {e}"));
            None
        }
    }
}

/// `envoy.type.matcher.v3.PathMatcher`: the string matcher it wraps.
pub(crate) fn path_matcher(p: &m::PathMatcher, path: &str, errors: &mut Errors) -> Option<model::StringMatch> {
    match &p.rule {
        Some(m::path_matcher::Rule::Path(s)) => string_matcher(s, &join(path, "path"), errors),
        None => {
            errors.add(join(path, "path"), "required");
            None
        }
    }
}

/// `envoy.config.route.v3.HeaderMatcher`, with the deprecated specifiers
/// folded into the forms they are equivalent to.
#[allow(deprecated)]
pub(crate) fn header_matcher(h: &rt::HeaderMatcher, path: &str, errors: &mut Errors) -> Option<model::HeaderMatch> {
    use rt::header_matcher::HeaderMatchSpecifier as S;
    let mut ok = true;
    if h.name.is_empty() {
        errors.add(join(path, "name"), "required");
        ok = false;
    } else if !valid_header_name(&h.name) {
        errors.add(join(path, "name"), format!("{:?} is not a valid HTTP header name", h.name));
        ok = false;
    }
    let plain = |pattern: model::StringPattern| {
        model::HeaderMatchSpec::String(model::StringMatch { pattern, ignore_case: false })
    };
    let non_empty = |v: &str, field: &str, errors: &mut Errors| {
        if v.is_empty() {
            errors.add(join(path, field), "must not be empty");
            None
        } else {
            Some(v.to_string())
        }
    };
    let spec = match &h.header_match_specifier {
        Some(S::ExactMatch(v)) => Some(model::HeaderMatchSpec::LegacyExact(v.clone())),
        Some(S::SafeRegexMatch(r)) => {
            regex_matcher(r, &join(path, "safe_regex_match"), errors).map(|r| plain(model::StringPattern::Regex(r)))
        }
        Some(S::RangeMatch(r)) => Some(model::HeaderMatchSpec::Range { start: r.start, end: r.end }),
        Some(S::PresentMatch(p)) => Some(model::HeaderMatchSpec::Present(*p)),
        Some(S::PrefixMatch(v)) => non_empty(v, "prefix_match", errors).map(|v| plain(model::StringPattern::Prefix(v))),
        Some(S::SuffixMatch(v)) => non_empty(v, "suffix_match", errors).map(|v| plain(model::StringPattern::Suffix(v))),
        Some(S::ContainsMatch(v)) => {
            non_empty(v, "contains_match", errors).map(|v| plain(model::StringPattern::Contains(v)))
        }
        Some(S::StringMatch(s)) => {
            string_matcher(s, &join(path, "string_match"), errors).map(model::HeaderMatchSpec::String)
        }
        // Envoy: no specifier means "the header is present".
        None => Some(model::HeaderMatchSpec::Present(true)),
    };
    let spec = spec?;
    ok.then(|| model::HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        spec,
        invert_match: h.invert_match,
        treat_missing_header_as_empty: h.treat_missing_header_as_empty,
    })
}

/// RFC 9110 token characters, with an optional leading `:` for
/// pseudo-headers (Envoy's `HTTP_HEADER_NAME` well-known regex).
fn valid_header_name(name: &str) -> bool {
    let body = name.strip_prefix(':').unwrap_or(name);
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `envoy.config.core.v3.CidrRange`.  An unset `prefix_len` is 0, as in
/// Envoy (so `address_prefix` alone matches its whole address family).
pub(crate) fn cidr_range(c: &core::CidrRange, path: &str, errors: &mut Errors) -> Option<model::CidrRange> {
    let Ok(address) = c.address_prefix.parse::<IpAddr>() else {
        errors.add(join(path, "address_prefix"), format!("malformed IP address {:?}", c.address_prefix));
        return None;
    };
    let len = c.prefix_len.map_or(0, |v| v.value);
    let max = if address.is_ipv4() { 32 } else { 128 };
    if len > max {
        errors.add(
            join(path, "prefix_len"),
            format!("{len} is longer than an {} address ({max} bits)", if max == 32 { "IPv4" } else { "IPv6" }),
        );
        return None;
    }
    Some(model::CidrRange { address: mask(address, len as u8), prefix_len: len as u8 })
}

/// `address` with every bit after the first `len` cleared.
pub(crate) fn mask(address: IpAddr, len: u8) -> IpAddr {
    match address {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let keep = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let keep = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::V6((bits & keep).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_clears_host_bits() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(mask(a, 8), "10.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask(a, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(mask(a, 32), a);
        let b: IpAddr = "2001:db8:ffff::1".parse().unwrap();
        assert_eq!(mask(b, 32), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(mask(b, 128), b);
    }

    #[test]
    fn header_names() {
        assert!(valid_header_name("x-user"));
        assert!(valid_header_name(":path"));
        assert!(!valid_header_name(":"));
        assert!(!valid_header_name("bad name"));
        assert!(!valid_header_name("a:b"));
    }
}
