//! Envoy's Maglev lookup table (Eisenbud et al., NSDI 2016, listing 1,
//! with Envoy's weighting).
//!
//! Each host walks its own permutation of the table slots (offset and
//! skip from two xxHash64s of `ip:port`, seeds 0 and 1) and claims the
//! next free slot on its turns; a host of weight w/max gets a turn every
//! max/w rounds.  Hosts are visited in address order, as Envoy does since
//! it made the table independent of the order hosts arrive in.  The table
//! depends only on addresses and weights, so every shard and restart
//! builds the same one; a pick is `table[hash % size]`.

use xxhash_rust::xxh64::xxh64;

use super::ring::RingHost;

#[derive(Clone, Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

struct Build {
    host: u32,
    offset: u64,
    skip: u64,
    weight: f64,
    target: f64,
    next: u64,
}

impl Maglev {
    /// `table_size` must be prime (the loader checks) so every skip
    /// generates a full permutation.
    pub fn build(hosts: &[RingHost<'_>], table_size: u64) -> Maglev {
        if hosts.is_empty() || table_size < 2 {
            return Maglev::default();
        }
        let total: f64 = hosts.iter().map(|h| f64::from(h.weight)).sum();
        let mut sorted: Vec<&RingHost<'_>> = hosts.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(b.key));
        let max_weight = hosts.iter().map(|h| f64::from(h.weight) / total).fold(0.0, f64::max);
        let mut entries: Vec<Build> = sorted
            .iter()
            .map(|h| Build {
                host: h.host,
                offset: xxh64(h.key.as_bytes(), 0) % table_size,
                skip: xxh64(h.key.as_bytes(), 1) % (table_size - 1) + 1,
                weight: f64::from(h.weight) / total,
                target: 0.0,
                next: 0,
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; table_size as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < table_size {
            for e in entries.iter_mut() {
                if filled >= table_size {
                    break;
                }
                // A host of the heaviest weight takes a slot every round,
                // one of a third of it every third round, and so on.
                if (iteration as f64) * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                let mut c = (e.offset + e.skip * e.next) % table_size;
                while table[c as usize] != EMPTY {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % table_size;
                }
                table[c as usize] = e.host;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Maglev { table }
    }

    pub fn pick(&self, hash: u64) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize])
    }

    #[cfg(test)]
    pub fn entries_of(&self, host: u32) -> usize {
        self.table.iter().filter(|h| **h == host).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_hosts_share_the_table_evenly() {
        let keys = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
        let hs: Vec<RingHost<'_>> =
            keys.iter().enumerate().map(|(i, k)| RingHost { host: i as u32, key: k, weight: 1 }).collect();
        let m = Maglev::build(&hs, 65537);
        let counts: Vec<usize> = (0..3).map(|h| m.entries_of(h)).collect();
        assert_eq!(counts.iter().sum::<usize>(), 65537);
        for c in counts {
            assert!((21845..=21846).contains(&c), "{c}");
        }
    }

    #[test]
    fn order_of_hosts_does_not_matter() {
        let a =
            [RingHost { host: 0, key: "10.0.0.1:80", weight: 1 }, RingHost { host: 1, key: "10.0.0.2:80", weight: 2 }];
        let b =
            [RingHost { host: 1, key: "10.0.0.2:80", weight: 2 }, RingHost { host: 0, key: "10.0.0.1:80", weight: 1 }];
        let (ma, mb) = (Maglev::build(&a, 251), Maglev::build(&b, 251));
        assert_eq!(ma.table, mb.table);
        let (light, heavy) = (ma.entries_of(0) as i64, ma.entries_of(1) as i64);
        assert!((heavy - 2 * light).abs() <= 3, "{light} {heavy}");
    }
}
