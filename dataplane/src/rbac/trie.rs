//! A set of CIDR ranges answering "is this address inside any of them?" in
//! time bounded by the address width, whatever the number of ranges.
//!
//! One path-compressed binary trie per address family.  Each node stands for
//! a prefix (`key`, `len` bits); a node is `terminal` when that prefix is one
//! of the ranges.  Because the question is containment, not longest match, a
//! terminal node ends both insertion (everything below is already covered)
//! and lookup (found).  Path compression keeps only the nodes where ranges
//! branch, so 10,000 random prefixes give a trie about log2(10,000) ≈ 14
//! nodes deep instead of 32 (IPv4) or 128 (IPv6).
//!
//! Nodes live in one `Vec`, children are `u32` indices (0 = none: the root,
//! at index 0, is nobody's child); each node keeps its prefix mask, so a
//! lookup step is one load, one xor-and-compare and one bit test.  Keys are
//! the family's native word (`u32` for IPv4, `u128` for IPv6).  Built once
//! per config snapshot, then read-only: a lookup allocates nothing.

use std::net::IpAddr;
use std::ops::{BitAnd, BitXor};

/// A left-aligned address: `u32` for IPv4, `u128` for IPv6, so each family
/// walks with its native word size.
trait Bits: Copy + Eq + BitXor<Output = Self> + BitAnd<Output = Self> {
    const WIDTH: u8;
    const ZERO: Self;
    /// Keeps the first `len` bits.
    fn mask(len: u8) -> Self;
    /// Bit `i`, 0 = most significant; `i < WIDTH`.
    fn bit(self, i: u8) -> usize;
    fn leading_zeros(self) -> u32;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    const ZERO: Self = 0;
    fn mask(len: u8) -> Self {
        !u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn bit(self, i: u8) -> usize {
        ((self >> (31 - u32::from(i))) & 1) as usize
    }
    fn leading_zeros(self) -> u32 {
        u32::leading_zeros(self)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    const ZERO: Self = 0;
    fn mask(len: u8) -> Self {
        !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
    }
    fn bit(self, i: u8) -> usize {
        ((self >> (127 - u32::from(i))) & 1) as usize
    }
    fn leading_zeros(self) -> u32 {
        u128::leading_zeros(self)
    }
}

#[derive(Debug, Clone, Copy)]
struct Node<K> {
    /// The prefix's bits, zero after `len`.
    key: K,
    /// `K::mask(len)`, kept so a lookup step is one xor-and-compare.
    mask: K,
    len: u8,
    terminal: bool,
    child: [u32; 2],
}

#[derive(Debug, Clone)]
struct Trie<K> {
    /// `nodes[0]` is the root: the empty prefix.
    nodes: Vec<Node<K>>,
}

impl<K: Bits> Trie<K> {
    fn new() -> Trie<K> {
        Trie { nodes: vec![Node { key: K::ZERO, mask: K::ZERO, len: 0, terminal: false, child: [0, 0] }] }
    }

    fn push(&mut self, key: K, len: u8, terminal: bool) -> u32 {
        let mask = K::mask(len);
        self.nodes.push(Node { key: key & mask, mask, len, terminal, child: [0, 0] });
        (self.nodes.len() - 1) as u32
    }

    fn insert(&mut self, key: K, len: u8) {
        debug_assert!(len <= K::WIDTH);
        let key = key & K::mask(len);
        let mut at = 0usize;
        loop {
            let node = self.nodes[at];
            if node.terminal {
                return; // already covered by a shorter range
            }
            if node.len == len {
                // This prefix is now a range: whatever hangs below it can
                // never change a containment answer.
                self.nodes[at].terminal = true;
                self.nodes[at].child = [0, 0];
                return;
            }
            let b = key.bit(node.len);
            let c = node.child[b];
            if c == 0 {
                let leaf = self.push(key, len, true);
                self.nodes[at].child[b] = leaf;
                return;
            }
            let child = self.nodes[c as usize];
            let common = ((child.key ^ key).leading_zeros() as u8).min(child.len.min(len));
            if common == child.len {
                at = c as usize;
                continue;
            }
            // The new prefix and the child diverge (or the new one is a
            // prefix of the child) at bit `common`: splice in a node there.
            let fork = if common == len {
                // A range covering the child: the child's subtree is moot.
                self.push(key, len, true)
            } else {
                let leaf = self.push(key, len, true);
                let fork = self.push(key, common, false);
                self.nodes[fork as usize].child[key.bit(common)] = leaf;
                self.nodes[fork as usize].child[child.key.bit(common)] = c;
                fork
            };
            self.nodes[at].child[b] = fork;
            return;
        }
    }

    fn contains(&self, key: K) -> bool {
        let mut node = &self.nodes[0];
        loop {
            if node.terminal {
                return true;
            }
            // A non-terminal node is a fork, always shorter than the width.
            let c = node.child[key.bit(node.len)];
            if c == 0 {
                return false;
            }
            node = &self.nodes[c as usize];
            if (key ^ node.key) & node.mask != K::ZERO {
                return false;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && !self.nodes[0].terminal
    }
}

/// CIDR ranges of both families; an address only ever matches ranges of its
/// own family (as Envoy's `CidrRange::isInRange`).
#[derive(Debug, Clone)]
pub struct CidrSet {
    v4: Trie<u32>,
    v6: Trie<u128>,
}

impl Default for CidrSet {
    fn default() -> Self {
        CidrSet::new()
    }
}

impl CidrSet {
    pub fn new() -> CidrSet {
        CidrSet { v4: Trie::new(), v6: Trie::new() }
    }

    /// Adds `address/prefix_len` (host bits are ignored).
    pub fn insert(&mut self, address: IpAddr, prefix_len: u8) {
        match address {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), prefix_len.min(32)),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), prefix_len.min(128)),
        }
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(a) => self.v4.contains(u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Trie nodes in use (for tests and sizing).
    pub fn node_count(&self) -> usize {
        self.v4.nodes.len() + self.v6.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(ranges: &[(&str, u8)]) -> CidrSet {
        let mut s = CidrSet::new();
        for (a, l) in ranges {
            s.insert(ip(a), *l);
        }
        s
    }

    #[test]
    fn empty_set_contains_nothing() {
        let s = CidrSet::new();
        assert!(s.is_empty());
        assert!(!s.contains(ip("0.0.0.0")));
        assert!(!s.contains(ip("::")));
    }

    #[test]
    fn basic_ranges() {
        let s = set(&[("10.0.0.0", 8), ("192.168.1.0", 24), ("172.16.5.4", 32)]);
        assert!(s.contains(ip("10.255.0.1")));
        assert!(s.contains(ip("192.168.1.77")));
        assert!(!s.contains(ip("192.168.2.1")));
        assert!(s.contains(ip("172.16.5.4")));
        assert!(!s.contains(ip("172.16.5.5")));
        assert!(!s.contains(ip("11.0.0.0")));
    }

    #[test]
    fn zero_length_prefix_matches_its_family_only() {
        let s = set(&[("0.0.0.0", 0)]);
        assert!(s.contains(ip("1.2.3.4")));
        assert!(!s.contains(ip("::1")));
        let s = set(&[("::", 0)]);
        assert!(s.contains(ip("2001:db8::1")));
        assert!(!s.contains(ip("1.2.3.4")));
    }

    #[test]
    fn families_never_mix() {
        // ::ffff:10.0.0.1 is an IPv6 address to Envoy's CidrRange.
        let s = set(&[("10.0.0.0", 8)]);
        assert!(!s.contains(ip("::ffff:10.0.0.1")));
        let s = set(&[("::ffff:10.0.0.0", 104)]);
        assert!(!s.contains(ip("10.0.0.1")));
        assert!(s.contains(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn host_bits_are_ignored_and_order_does_not_matter() {
        let a = set(&[("10.1.2.3", 8), ("10.1.0.0", 16)]);
        let b = set(&[("10.1.0.0", 16), ("10.9.9.9", 8)]);
        for probe in ["10.1.2.3", "10.200.0.1", "11.1.2.3"] {
            assert_eq!(a.contains(ip(probe)), b.contains(ip(probe)), "{probe}");
        }
        assert!(a.contains(ip("10.200.0.1")));
    }

    #[test]
    fn covering_range_added_after_narrower_ones() {
        let s = set(&[("10.1.1.0", 24), ("10.1.2.0", 24), ("10.0.0.0", 8)]);
        assert!(s.contains(ip("10.7.7.7")));
        let s = set(&[("10.1.1.0", 24), ("10.1.0.0", 16)]);
        assert!(s.contains(ip("10.1.200.1")));
        assert!(!s.contains(ip("10.2.0.1")));
    }

    #[test]
    fn ipv6_ranges() {
        let s = set(&[("2001:db8::", 32), ("fe80::1", 128)]);
        assert!(s.contains(ip("2001:db8:1234::5")));
        assert!(!s.contains(ip("2001:db9::")));
        assert!(s.contains(ip("fe80::1")));
        assert!(!s.contains(ip("fe80::2")));
    }

    #[test]
    fn ten_thousand_ranges_stay_shallow() {
        let mut s = CidrSet::new();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..10_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            s.insert(IpAddr::V4(x.into()), 24);
        }
        // Path compression: at most two nodes per range plus the roots.
        assert!(s.node_count() <= 2 * 10_000 + 2, "{}", s.node_count());
    }

    fn linear(ranges: &[(u32, u8)], a: u32) -> bool {
        ranges.iter().any(|(k, l)| {
            let m = if *l == 0 { 0 } else { u32::MAX << (32 - u32::from(*l)) };
            (k & m) == (a & m)
        })
    }

    proptest! {
        /// The trie agrees with a linear scan on random ranges and probes.
        #[test]
        fn agrees_with_linear_scan(
            ranges in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..64),
            probes in proptest::collection::vec(any::<u32>(), 1..64),
        ) {
            let mut s = CidrSet::new();
            for (k, l) in &ranges {
                s.insert(IpAddr::V4((*k).into()), *l);
            }
            for p in probes.iter().copied().chain(ranges.iter().map(|(k, _)| *k)) {
                prop_assert_eq!(s.contains(IpAddr::V4(p.into())), linear(&ranges, p), "probe {:#x}", p);
            }
        }
    }
}
