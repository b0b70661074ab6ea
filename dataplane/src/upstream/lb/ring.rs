//! Envoy's ring hash ("ketama") table.
//!
//! Every host gets `scale × normalized weight` points on a 64-bit ring,
//! point `i` of host `ip:port` being `xxHash64("ip:port_i")`; a request
//! hash maps to the first point at or after it, wrapping around.  Points
//! depend only on the host's address and the weights, so every shard and
//! every restart builds the same ring, and adding or removing a host moves
//! only the keys that land on its points (about 1/N of them).  The ring is
//! built once per host-set change; a pick is a binary search.

use xxhash_rust::xxh64::xxh64;

/// One host as the ring builder sees it.
pub struct RingHost<'a> {
    pub host: u32,
    /// `ip:port` as Envoy prints it (`[v6]:port` for IPv6).
    pub key: &'a str,
    pub weight: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// (point, host), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn build(hosts: &[RingHost<'_>], min_ring_size: u64, max_ring_size: u64) -> Ring {
        if hosts.is_empty() {
            return Ring::default();
        }
        let total: f64 = hosts.iter().map(|h| f64::from(h.weight)).sum();
        let min_weight = hosts.iter().map(|h| f64::from(h.weight) / total).fold(1.0, f64::min);
        // Scale so the lightest host gets a whole number of points, capped
        // by the maximum ring size (Envoy's arithmetic, in doubles).
        let scale = ((min_weight * min_ring_size as f64).ceil() / min_weight).min(max_ring_size as f64);
        let mut points = Vec::with_capacity(scale.ceil() as usize);
        let mut key = String::with_capacity(64);
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        for h in hosts {
            // Running sums let fractional shares carry over to the next
            // host instead of being rounded per host.
            target += scale * (f64::from(h.weight) / total);
            let mut i = 0u64;
            while current < target {
                key.clear();
                key.push_str(h.key);
                key.push('_');
                key.push_str(itoa::Buffer::new().format(i));
                points.push((xxh64(key.as_bytes(), 0), h.host));
                i += 1;
                current += 1.0;
            }
        }
        points.sort_unstable_by_key(|p| p.0);
        Ring { points }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// The host owning `hash`: the first point ≥ hash, or the first point
    /// of the ring past the last one (what Envoy's ketama search returns).
    pub fn pick(&self, hash: u64) -> Option<u32> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|p| p.0 < hash);
        Some(self.points[if i == self.points.len() { 0 } else { i }].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts<'a>(keys: &'a [&'a str]) -> Vec<RingHost<'a>> {
        keys.iter().enumerate().map(|(i, k)| RingHost { host: i as u32, key: k, weight: 1 }).collect()
    }

    #[test]
    fn sizes_follow_envoy() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        // 1/3 each: ceil(1024/3) = 342 points per host.
        assert_eq!(Ring::build(&hosts(&keys), 1024, 8 << 20).len(), 1026);
        // Capped by the maximum.
        assert_eq!(Ring::build(&hosts(&keys), 1024, 600).len(), 600);
        assert_eq!(Ring::build(&[], 1024, 2048).len(), 0);
    }

    #[test]
    fn wraps_past_the_last_point() {
        let keys = ["10.0.0.1:80"];
        let ring = Ring::build(&hosts(&keys), 4, 4);
        assert_eq!(ring.pick(u64::MAX), Some(0));
        assert_eq!(ring.pick(0), Some(0));
    }

    /// Envoy's xxHash64 of the point key, seed 0: the known vector for
    /// "" guards against a wrong hash function or seed.
    #[test]
    fn xxhash64_is_the_reference_one() {
        assert_eq!(xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(xxh64(b"a", 0), 0xd24ec4f1a98c6e5b);
    }

    #[test]
    fn weights_scale_point_counts() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80"];
        let hs = vec![RingHost { host: 0, key: keys[0], weight: 3 }, RingHost { host: 1, key: keys[1], weight: 1 }];
        let ring = Ring::build(&hs, 1024, 8 << 20);
        let heavy = ring.points.iter().filter(|p| p.1 == 0).count();
        let light = ring.points.iter().filter(|p| p.1 == 1).count();
        assert_eq!((heavy, light), (768, 256));
    }
}
