//! The recency prior: a memory's fused score gains `weight * decay(age)`, `decay` in [0, 1].
//!
//! Only candidates that could still reach the top `n` have their timestamp read (a memory
//! record each): the prior adds at most `weight`, so a candidate whose fused score plus `weight`
//! stays below the `n`-th best fused score is outranked by `n` others whatever its age. The
//! result is the one weighing every candidate would give.

/// `fused` (`(candidate, score)`) re-ranked with the prior, best first, at most `n` kept. `ts_of`
/// reads a candidate's timestamp; `decay` turns a timestamp into a factor in [0, 1].
pub(crate) fn reweigh<E>(
    fused: Vec<(usize, f32)>,
    n: usize,
    weight: f32,
    mut ts_of: impl FnMut(usize) -> Result<i64, E>,
    decay: impl Fn(i64) -> f32,
) -> Result<Vec<(usize, f32)>, E> {
    // The n-th best fused score: the prior only adds, so n candidates end at least this high.
    let bar = if fused.len() > n && n > 0 {
        let mut scores: Vec<f32> = fused.iter().map(|f| f.1).collect();
        let (_, nth, _) = scores.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
        Some(*nth)
    } else {
        None
    };
    let gain = weight.max(0.0);
    let mut out = Vec::with_capacity(fused.len().min(n.max(1) * 2));
    for (c, score) in fused {
        if bar.is_some_and(|bar| score + gain < bar) {
            continue;
        }
        let ts = ts_of(c)?;
        out.push((c, score + weight * decay(ts)));
    }
    // Stable: equal scores keep their fused order.
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Weighing every candidate, as the search did before it pruned.
    fn weigh_all(fused: &[(usize, f32)], n: usize, w: f32, ts: &[i64]) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = fused
            .iter()
            .map(|&(c, s)| (c, s + w * decay(ts[c])))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(n);
        all
    }

    fn decay(ts: i64) -> f32 {
        0.5f64.powf(ts as f64 / 1000.0) as f32
    }

    #[test]
    fn pruning_changes_no_result_and_reads_fewer_timestamps() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut skipped = 0;
        for round in 0..2000 {
            let len = rng.random_range(0..120);
            let n = rng.random_range(1..15);
            let w = [0.0f32, 0.05, 0.2, 1.0][round % 4];
            // Coarse scores, so ties occur.
            let mut fused: Vec<(usize, f32)> = (0..len)
                .map(|c| (c, rng.random_range(0..40) as f32 / 40.0))
                .collect();
            fused.sort_by(|a, b| b.1.total_cmp(&a.1));
            let ts: Vec<i64> = (0..len).map(|_| rng.random_range(0..5000)).collect();
            let mut read = 0;
            let got = reweigh::<()>(
                fused.clone(),
                n,
                w,
                |c| {
                    read += 1;
                    Ok(ts[c])
                },
                decay,
            )
            .unwrap();
            assert_eq!(got, weigh_all(&fused, n, w, &ts), "round {round}");
            skipped += len - read;
        }
        assert!(skipped > 10_000, "only {skipped} timestamp reads saved");
    }

    #[test]
    fn a_read_error_is_returned() {
        let fused = vec![(0, 1.0), (1, 0.5)];
        assert_eq!(reweigh(fused, 1, 0.2, |_| Err("gone"), decay), Err("gone"));
    }
}
