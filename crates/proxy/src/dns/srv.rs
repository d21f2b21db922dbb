//! SRV target ordering (RFC 2782): lowest priority first; within one
//! priority, a weighted random order. The resolver only returns records;
//! choosing among them is ours, as a plain function that tests can drive
//! with a seeded random number generator.

use rand::Rng;

/// One SRV record, as the resolver returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the trailing dot.
    pub target: String,
}

/// Order SRV records for trying in turn.
///
/// RFC 2782 "Usage rules": records are grouped by ascending priority. Inside
/// a group, repeatedly: sum the weights of the records not yet chosen, pick
/// a uniform random number in `0..=sum`, and choose the first record whose
/// running sum of weights reaches it. Zero-weight records are put first in
/// the list so that they keep a small chance of coming first, as the RFC
/// asks. When every remaining weight is zero the RFC's draw would always
/// take the first record; we pick uniformly instead so load still spreads.
pub fn order_srv<R: Rng + ?Sized>(mut records: Vec<SrvRecord>, rng: &mut R) -> Vec<SrvRecord> {
    // Stable sort: zero weights before the others inside each priority.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let end = rest.iter().position(|r| r.priority != first.priority).unwrap_or(rest.len());
        let (group, tail) = rest.split_at(end);
        let mut group: Vec<SrvRecord> = group.to_vec();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let index = if total == 0 {
                rng.random_range(0..group.len())
            } else {
                let pick = rng.random_range(0..=total);
                let mut running = 0u32;
                group
                    .iter()
                    .position(|r| {
                        running += u32::from(r.weight);
                        running >= pick
                    })
                    .unwrap_or(group.len() - 1)
            };
            out.push(group.remove(index));
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn rec(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port: 5060, target: target.to_owned() }
    }

    fn first_counts(records: &[SrvRecord], draws: usize, seed: u64) -> std::collections::HashMap<String, usize> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..draws {
            let ordered = order_srv(records.to_vec(), &mut rng);
            *counts.entry(ordered[0].target.clone()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn lower_priority_always_comes_first() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let ordered =
                order_srv(vec![rec(20, 100, "c"), rec(10, 1, "a"), rec(10, 1, "b"), rec(30, 0, "d")], &mut rng);
            let prios: Vec<u16> = ordered.iter().map(|r| r.priority).collect();
            assert_eq!(prios, vec![10, 10, 20, 30]);
        }
    }

    #[test]
    fn weights_10_90_split_about_10_90() {
        let counts = first_counts(&[rec(1, 10, "light"), rec(1, 90, "heavy")], 10_000, 7);
        let heavy = counts.get("heavy").copied().unwrap_or(0) as f64 / 10_000.0;
        // Expected 90/101 ≈ 0.891 (the draw is over 0..=100).
        assert!((heavy - 0.891).abs() < 0.02, "heavy first in {heavy}");
    }

    #[test]
    fn every_record_appears_exactly_once() {
        let mut rng = StdRng::seed_from_u64(3);
        let input: Vec<SrvRecord> = (0..20).map(|i| rec(i % 3, i * 7 % 5, &format!("h{i}"))).collect();
        for _ in 0..50 {
            let mut out: Vec<String> = order_srv(input.clone(), &mut rng).into_iter().map(|r| r.target).collect();
            out.sort();
            let mut want: Vec<String> = input.iter().map(|r| r.target.clone()).collect();
            want.sort();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn all_zero_weights_spread_evenly() {
        let counts = first_counts(&[rec(1, 0, "a"), rec(1, 0, "b"), rec(1, 0, "c"), rec(1, 0, "d")], 10_000, 11);
        for t in ["a", "b", "c", "d"] {
            let share = counts.get(t).copied().unwrap_or(0) as f64 / 10_000.0;
            assert!((share - 0.25).abs() < 0.03, "{t} first in {share}");
        }
    }

    #[test]
    fn zero_weight_beside_weighted_is_rarely_first() {
        let counts = first_counts(&[rec(1, 50, "w1"), rec(1, 0, "zero"), rec(1, 49, "w2")], 10_000, 5);
        let zero = counts.get("zero").copied().unwrap_or(0) as f64 / 10_000.0;
        // Only a draw of exactly 0 picks it: 1/100.
        assert!(zero > 0.0 && zero < 0.03, "zero-weight first in {zero}");
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert!(order_srv(Vec::new(), &mut StdRng::seed_from_u64(0)).is_empty());
    }
}
