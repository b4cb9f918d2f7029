//! Bisection over two traces: which cuts a round asks for, and the range that is left.
//!
//! Both sides agree on the state at cut `lo` and disagree at `hi`. A round asks both for
//! their state hashes at `lo`, `hi` and points evenly between; the first point where they
//! differ becomes the new `hi`, the point before it the new `lo`. When `hi = lo + 1`, the
//! segment `lo` is the leaf to prove. A round that can carry every cut of the range asks
//! for all of them, so `n` cuts take `ceil(log_arity(n))` rounds (100,000 cuts, arity
//! 128: 3), and a trace of up to [`FULL_REVEAL`] cuts one.

/// A trace with at most this many cuts is revealed whole in one round (32 bytes a cut:
/// 128 KiB, inside one gossip message), with no Merkle proofs: the root is rebuilt.
pub const FULL_REVEAL: u32 = 4096;

/// The cuts round `round` of a range `lo..=hi` asks for, ascending, `lo` and `hi`
/// included. `arity` is how many pieces a range is cut into per round (at least 2).
pub fn query(round: u32, lo: u32, hi: u32, cuts: u32, arity: u32) -> Vec<u32> {
    debug_assert!(lo < hi);
    if round == 0 && cuts <= FULL_REVEAL {
        return (0..cuts).collect();
    }
    let width = u64::from(hi - lo);
    let arity = u64::from(arity.max(2));
    if width <= arity {
        return (lo..=hi).collect();
    }
    let mut points: Vec<u32> = (0..=arity)
        .map(|j| lo + (width * j / arity) as u32)
        .collect();
    points.dedup();
    points
}

/// Whether a round asks for the whole trace (so no Merkle proofs: the root is rebuilt).
pub fn is_full(round: u32, cuts: u32) -> bool {
    round == 0 && cuts <= FULL_REVEAL
}

/// Where two sides' hashes at `points` first differ: the new `(lo, hi)`. `None` when they
/// agree everywhere or already at the first point (neither can happen between sides whose
/// reveals were checked against what they revealed before).
pub fn narrow(points: &[u32], a: &[[u8; 32]], b: &[[u8; 32]]) -> Option<(u32, u32)> {
    let j = a.iter().zip(b).position(|(x, y)| x != y)?;
    (j > 0).then(|| (points[j - 1], points[j]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays a whole bisection between two synthetic traces that part at `first_bad`.
    fn rounds_to_leaf(cuts: u32, first_bad: u32, arity: u32) -> (u32, u32) {
        let honest = |k: u32| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&k.to_le_bytes());
            h
        };
        let liar = |k: u32| {
            let mut h = honest(k);
            if k >= first_bad {
                h[31] = 1;
            }
            h
        };
        let (mut lo, mut hi, mut round) = (0, cuts - 1, 0);
        while hi > lo + 1 {
            let points = query(round, lo, hi, cuts, arity);
            assert!(points.len() <= arity as usize + 1 || is_full(round, cuts));
            assert_eq!((points[0], *points.last().unwrap()), (lo, hi));
            let a: Vec<_> = points.iter().map(|&k| honest(k)).collect();
            let b: Vec<_> = points.iter().map(|&k| liar(k)).collect();
            (lo, hi) = narrow(&points, &a, &b).expect("they differ past lo");
            round += 1;
        }
        (lo, round)
    }

    #[test]
    fn a_hundred_thousand_cuts_take_three_rounds_and_find_the_right_cut() {
        for first_bad in [1, 2, 777, 50_000, 99_998, 99_999] {
            let (leaf, rounds) = rounds_to_leaf(100_000, first_bad, 128);
            assert_eq!(
                leaf,
                first_bad - 1,
                "segment {leaf} for a trace bad from {first_bad}"
            );
            assert!(rounds <= 3, "{rounds} rounds");
        }
    }

    #[test]
    fn a_small_trace_takes_one_round_whatever_segment_is_wrong() {
        for first_bad in 1..=9 {
            let (leaf, rounds) = rounds_to_leaf(10, first_bad, 128);
            assert_eq!((leaf, rounds), (first_bad - 1, 1));
        }
    }

    #[test]
    fn sixteen_million_cuts_take_four_rounds_at_arity_128_and_three_at_256() {
        assert_eq!(rounds_to_leaf(1 << 24, 12_345_678, 128), (12_345_677, 4));
        assert_eq!(rounds_to_leaf(1 << 24, 12_345_678, 256), (12_345_677, 3));
    }
}
