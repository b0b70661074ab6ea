//! Toeplitz RSS hashing, as NICs compute it, so meshgate can pick source
//! ports whose replies land on a chosen receive queue.
//!
//! The hash is defined in Microsoft's "RSS hashing functions" specification
//! (the Toeplitz function over the IPv4 source address, destination address,
//! source port, destination port of the *received* packet).  The NIC maps
//! the hash to a queue through its redirection table; with DPDK's default
//! table that is `hash % queues` over the table's low bits, which is what
//! [`crate::toeplitz_hash`] callers use.

/// The RSS key meshgate programs into every port (the well-known default key
/// from the Microsoft specification, also Intel's and DPDK's test key).
pub const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// Toeplitz hash of `input` with `key` (key must be at least input + 4 bytes).
pub fn toeplitz_hash(key: &[u8], input: &[u8]) -> u32 {
    assert!(key.len() >= input.len() + 4, "RSS key too short for the input");
    let mut result = 0u32;
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, byte) in input.iter().enumerate() {
        let next = key[i + 4];
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= window;
            }
            window = (window << 1) | ((next >> (7 - bit)) & 1) as u32;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verification vectors from Microsoft's RSS specification (IPv4 with TCP ports).
    #[test]
    fn matches_the_specification_vectors() {
        type Case = ([u8; 4], [u8; 4], u16, u16, u32);
        let cases: [Case; 3] = [
            ([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766, 0x51cc_c178),
            ([199, 92, 111, 2], [65, 69, 140, 83], 14230, 4739, 0xc626_b0ea),
            ([24, 19, 198, 95], [12, 22, 207, 184], 12898, 38024, 0x5c2b_394a),
        ];
        for (src, dst, sport, dport, want) in cases {
            let mut input = Vec::new();
            input.extend_from_slice(&src);
            input.extend_from_slice(&dst);
            input.extend_from_slice(&sport.to_be_bytes());
            input.extend_from_slice(&dport.to_be_bytes());
            assert_eq!(toeplitz_hash(&RSS_KEY, &input), want, "{src:?}:{sport} -> {dst:?}:{dport}");
        }
    }
}
