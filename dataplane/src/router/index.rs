//! The path index of one virtual host: which routes can match a path, found
//! without looking at the others.
//!
//! Envoy matches routes in order and takes the first whose every condition
//! holds.  Doing that literally costs a scan of all routes per request, a
//! regex among them included — fine for ten routes, not for ten thousand.
//! But a route's path condition almost always pins a literal prefix of the
//! path (`prefix`, `path`, `path_separated_prefix` are literals; a
//! `safe_regex` usually starts with one, such as `/api/v[0-9]+/...`), and
//! only routes whose literal is a prefix of the request's path can match.
//!
//! So routes are filed in radix tries (compressed byte tries) under their
//! literal: case-sensitive literals in one trie, case-insensitive ones
//! lower-cased in another, walked with the path folded to lower case.  A
//! lookup walks each trie once along the path; every node it reaches holds
//! the routes filed at that depth, each list in route order.  A k-way
//! merge of those lists visits the candidates in route order, and the
//! first one that passes the remaining checks (exactness, the `/` boundary
//! of a separated prefix, the regex itself, headers, query parameters) is
//! the answer — exactly the route a linear scan would have returned,
//! because no route outside the candidate set can match the path.  Routes
//! with no literal (`prefix: ""`, a regex starting with a class) sit at the
//! root and are candidates for every path, as they must be.
//!
//! The cost of a lookup is one walk over the path bytes (a binary search
//! of at most a node's children per step) plus the candidates checked in
//! order until one matches; nothing is allocated unless more than
//! `INLINE_LISTS` trie nodes along one path hold routes.

use regex_syntax::hir::{Hir, HirKind, Look};

/// How a filed route's literal relates to the path at the node's depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `prefix`: any path through this node.
    Prefix,
    /// `path`: the path must end here.
    Exact,
    /// `path_separated_prefix`: the path ends here or continues with `/`.
    Separated,
    /// A `safe_regex` whose matches all start with this literal: a
    /// candidate, to be confirmed by the regex.
    Regex,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    route: u32,
    kind: Kind,
}

#[derive(Debug, Default)]
struct Node {
    /// The bytes of the edge from the parent into this node.
    label: Box<[u8]>,
    /// (first byte of the child's label, child index), sorted by byte.
    children: Vec<(u8, u32)>,
    /// Routes whose literal ends here, in route order.
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
    /// Keys (and walks) are ASCII-lower-cased.
    fold: bool,
}

impl Trie {
    fn new(fold: bool) -> Trie {
        Trie { nodes: vec![Node::default()], fold }
    }

    fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].entries.is_empty()
    }

    fn insert(&mut self, key: &[u8], entry: Entry) {
        let mut node = 0usize;
        let mut rest = key;
        loop {
            let Some(&first) = rest.first() else {
                self.nodes[node].entries.push(entry);
                return;
            };
            let pos = self.nodes[node].children.binary_search_by_key(&first, |c| c.0);
            let child = match pos {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let leaf = self.nodes.len();
                    self.nodes.push(Node { label: rest.into(), children: Vec::new(), entries: vec![entry] });
                    self.nodes[node].children.insert(i, (first, leaf as u32));
                    return;
                }
            };
            let label = &self.nodes[child].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common == label.len() {
                node = child;
                rest = &rest[common..];
                continue;
            }
            // Split the edge: parent -> mid (common part) -> child (the rest).
            let mid = self.nodes.len();
            let child_rest: Box<[u8]> = label[common..].into();
            let mid_label: Box<[u8]> = label[..common].into();
            self.nodes.push(Node {
                label: mid_label,
                children: vec![(child_rest[0], child as u32)],
                entries: Vec::new(),
            });
            self.nodes[child].label = child_rest;
            let slot = self.nodes[node].children.binary_search_by_key(&first, |c| c.0).expect("child exists");
            self.nodes[node].children[slot].1 = mid as u32;
            node = mid;
            rest = &rest[common..];
        }
    }

    /// Calls `visit(entries, depth)` for every node along `path` that holds
    /// routes, root first.
    fn walk<'t>(&'t self, path: &[u8], mut visit: impl FnMut(&'t [Entry], usize)) {
        let mut node = &self.nodes[0];
        let mut depth = 0;
        loop {
            if !node.entries.is_empty() {
                visit(&node.entries, depth);
            }
            let Some(&b) = path.get(depth) else { return };
            let b = if self.fold { b.to_ascii_lowercase() } else { b };
            let Ok(i) = node.children.binary_search_by_key(&b, |c| c.0) else { return };
            let child = &self.nodes[node.children[i].1 as usize];
            let end = depth + child.label.len();
            if end > path.len() {
                return;
            }
            let same = if self.fold {
                path[depth..end].eq_ignore_ascii_case(&child.label)
            } else {
                path[depth..end] == *child.label
            };
            if !same {
                return;
            }
            node = child;
            depth = end;
        }
    }
}

/// The routes of one virtual host, filed by literal path prefix.
#[derive(Debug)]
pub(super) struct PathIndex {
    sensitive: Trie,
    insensitive: Trie,
}

/// Trie nodes along one path that can hold routes before the merge spills
/// to the heap (one per distinct literal length that prefixes the path).
const INLINE_LISTS: usize = 16;

impl PathIndex {
    pub(super) fn new() -> PathIndex {
        PathIndex { sensitive: Trie::new(false), insensitive: Trie::new(true) }
    }

    /// Files route `route` (routes must be added in order) under `literal`.
    pub(super) fn add(&mut self, route: usize, literal: &[u8], kind: Kind, case_sensitive: bool) {
        let entry = Entry { route: route as u32, kind };
        if case_sensitive {
            self.sensitive.insert(literal, entry);
        } else {
            self.insensitive.insert(&literal.to_ascii_lowercase(), entry);
        }
    }

    /// The first route, in route order, whose literal condition holds for
    /// `path` (no query) and for which `confirm(route, kind)` holds.
    pub(super) fn first(&self, path: &[u8], mut confirm: impl FnMut(usize, Kind) -> bool) -> Option<usize> {
        let mut inline: [(&[Entry], usize); INLINE_LISTS] = [(&[], 0); INLINE_LISTS];
        let mut spill: Vec<(&[Entry], usize)> = Vec::new();
        let mut n = 0;
        let mut visit = |list, depth| {
            if n < INLINE_LISTS {
                inline[n] = (list, depth);
            } else {
                if spill.is_empty() {
                    spill.extend_from_slice(&inline);
                }
                spill.push((list, depth));
            }
            n += 1;
        };
        if !self.sensitive.is_empty() {
            self.sensitive.walk(path, &mut visit);
        }
        if !self.insensitive.is_empty() {
            self.insensitive.walk(path, &mut visit);
        }
        let lists: &mut [(&[Entry], usize)] = if n <= INLINE_LISTS { &mut inline[..n] } else { &mut spill[..] };
        loop {
            // The list whose head comes first in route order.
            let mut best: Option<usize> = None;
            for (i, (list, _)) in lists.iter().enumerate() {
                if let Some(head) = list.first() {
                    if best.is_none_or(|b| head.route < lists[b].0[0].route) {
                        best = Some(i);
                    }
                }
            }
            let i = best?;
            let (list, depth) = lists[i];
            let entry = list[0];
            lists[i].0 = &list[1..];
            let literal_holds = match entry.kind {
                Kind::Prefix | Kind::Regex => true,
                Kind::Exact => depth == path.len(),
                Kind::Separated => depth == path.len() || path[depth] == b'/',
            };
            if literal_holds && confirm(entry.route as usize, entry.kind) {
                return Some(entry.route as usize);
            }
        }
    }
}

/// The literal every full match of `pattern` (already translated to the
/// `regex` crate's syntax) starts with; empty when there is none to rely on
/// (or the pattern does not parse, which compiled patterns always do).
pub(super) fn regex_literal_prefix(pattern: &str) -> Vec<u8> {
    let Ok(hir) = regex_syntax::ParserBuilder::new().utf8(false).build().parse(pattern) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    leading_literal(&hir, &mut out);
    out
}

/// Appends the literal `hir` starts with; `true` when all of `hir` was
/// literal (so what follows it may extend the prefix).
fn leading_literal(hir: &Hir, out: &mut Vec<u8>) -> bool {
    match hir.kind() {
        HirKind::Empty => true,
        HirKind::Literal(lit) => {
            out.extend_from_slice(&lit.0);
            true
        }
        // A start anchor before anything else is zero-width here.
        HirKind::Look(Look::Start) if out.is_empty() => true,
        HirKind::Capture(c) => leading_literal(&c.sub, out),
        HirKind::Concat(items) => items.iter().all(|h| leading_literal(h, out)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(routes: &[(&str, Kind, bool)]) -> PathIndex {
        let mut ix = PathIndex::new();
        for (i, (lit, kind, cs)) in routes.iter().enumerate() {
            ix.add(i, lit.as_bytes(), *kind, *cs);
        }
        ix
    }

    fn all(ix: &PathIndex, path: &str) -> Vec<usize> {
        let mut seen = Vec::new();
        ix.first(path.as_bytes(), |r, _| {
            seen.push(r);
            false
        });
        seen
    }

    #[test]
    fn candidates_come_in_route_order() {
        let ix = index(&[
            ("/api/v2", Kind::Prefix, true),
            ("/", Kind::Prefix, true),
            ("/api", Kind::Exact, true),
            ("/api", Kind::Prefix, true),
            ("", Kind::Prefix, true),
            ("/API/", Kind::Prefix, false),
            ("/api/v", Kind::Regex, true),
            ("/api", Kind::Separated, true),
            ("/apix", Kind::Prefix, true),
        ]);
        assert_eq!(all(&ix, "/api/v2/x"), vec![0, 1, 3, 4, 5, 6, 7]);
        assert_eq!(all(&ix, "/api"), vec![1, 2, 3, 4, 7]);
        assert_eq!(all(&ix, "/apix"), vec![1, 3, 4, 8]);
        assert_eq!(all(&ix, "/Api/V"), vec![1, 4, 5]);
        assert_eq!(all(&ix, ""), vec![4]);
        assert_eq!(ix.first(b"/api/v2", |r, _| r >= 3), Some(3));
    }

    #[test]
    fn edges_split_and_share() {
        let ix = index(&[
            ("/abcdef", Kind::Exact, true),
            ("/abc", Kind::Exact, true),
            ("/abd", Kind::Exact, true),
            ("/ab", Kind::Prefix, true),
            ("/abcdefg", Kind::Prefix, true),
        ]);
        assert_eq!(all(&ix, "/abcdef"), vec![0, 3]);
        assert_eq!(all(&ix, "/abc"), vec![1, 3]);
        assert_eq!(all(&ix, "/abd"), vec![2, 3]);
        assert_eq!(all(&ix, "/abcdefgh"), vec![3, 4]);
        assert_eq!(all(&ix, "/a"), Vec::<usize>::new());
    }

    #[test]
    fn many_lists_spill_to_the_heap() {
        let routes: Vec<(String, Kind, bool)> =
            (0..40).map(|i| ("/".to_string() + &"a".repeat(i), Kind::Prefix, true)).rev().collect();
        let refs: Vec<(&str, Kind, bool)> = routes.iter().map(|(s, k, c)| (s.as_str(), *k, *c)).collect();
        let ix = index(&refs);
        let path = "/".to_string() + &"a".repeat(50);
        assert_eq!(all(&ix, &path), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn regex_prefixes() {
        let p = |s: &str| String::from_utf8(regex_literal_prefix(&format!("^(?:{s})$"))).unwrap();
        assert_eq!(p("/api/v[0-9]+/users"), "/api/v");
        assert_eq!(p("/static/.*"), "/static/");
        assert_eq!(p("(/a)(/b)c*"), "/a/b");
        assert_eq!(p("/a|/b"), "", "alternations are not looked into");
        assert_eq!(p("/ab?"), "/a");
        assert_eq!(p("(?i)/abc"), "/", "a / has no other case");
        assert_eq!(p("[a-z]+"), "");
        assert_eq!(p("/x(?i)abc"), "/x");
    }
}
