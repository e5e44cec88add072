//! Fusion of the vector and BM25 rankings, two ways:
//!
//! - [`reciprocal_rank`]: each list contributes `weight / (k + rank)` (rank 1-based) to every
//!   item it holds; items are sorted by the sum. Only ranks matter.
//! - [`convex`]: each side's scores are normalised per query (min-max or z-score) and mixed
//!   `w * vector + (1 - w) * bm25`. How far apart two scores are counts, not only their order.
//!   [`convex_with`] adds a third side (the phonetic ranking) on top, with its own weight.

use std::collections::HashMap;
use std::hash::Hash;

/// One ranked list: items best first, and its weight.
pub struct RankedList<'a, T> {
    pub items: &'a [T],
    pub weight: f32,
}

/// A fused item: its score and its 1-based rank in each input list (`None` where absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Fused<T> {
    pub item: T,
    pub score: f32,
    pub ranks: Vec<Option<usize>>,
}

/// Fuses `lists` with constant `k` (60 is the usual choice). Ties keep the order of first
/// appearance (list order, then rank), so the result is deterministic. Duplicates within one
/// list count at their best rank only.
pub fn reciprocal_rank<T: Clone + Eq + Hash>(lists: &[RankedList<'_, T>], k: f32) -> Vec<Fused<T>> {
    let mut order: Vec<Fused<T>> = Vec::new();
    let mut slot: HashMap<&T, usize> = HashMap::new();
    for (li, list) in lists.iter().enumerate() {
        for (pos, item) in list.items.iter().enumerate() {
            let rank = pos + 1;
            let i = *slot.entry(item).or_insert_with(|| {
                order.push(Fused {
                    item: item.clone(),
                    score: 0.0,
                    ranks: vec![None; lists.len()],
                });
                order.len() - 1
            });
            let f = &mut order[i];
            if f.ranks[li].is_none() {
                f.ranks[li] = Some(rank);
                f.score += list.weight / (k + rank as f32);
            }
        }
    }
    // Stable sort: equal scores keep first-appearance order.
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    order
}

/// How one side's scores are put on a common scale, per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// `(x - min) / (max - min)` over the side's candidates.
    MinMax,
    /// `(x - mean) / std` over the side's candidates.
    ZScore,
}

/// One candidate for [`convex`]: its scores on each side (`None`: that side did not score it,
/// which counts as the side's lowest normalised score).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<T> {
    pub item: T,
    pub vector: Option<f32>,
    pub bm25: Option<f32>,
}

/// Normalised scores of one side, `None` kept as `None`.
fn normalise(values: &[Option<f32>], how: Normalization) -> Vec<Option<f32>> {
    let present: Vec<f32> = values.iter().flatten().copied().collect();
    if present.is_empty() {
        return values.to_vec();
    }
    let n = present.len() as f32;
    let (lo, hi) = present
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let mean = present.iter().sum::<f32>() / n;
    let std = (present.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
    values
        .iter()
        .map(|v| {
            v.map(|x| match how {
                // One candidate, or all equal: every one is as good as the best.
                Normalization::MinMax if hi - lo <= f32::EPSILON => 1.0,
                Normalization::MinMax => (x - lo) / (hi - lo),
                Normalization::ZScore if std <= f32::EPSILON => 0.0,
                Normalization::ZScore => (x - mean) / std,
            })
        })
        .collect()
}

/// Scores over the best one (`None` kept): a side whose scores are nearly flat (a name on every
/// candidate) lifts them all alike instead of spreading them from 0 to 1 as min-max would.
fn over_best(values: &[Option<f32>]) -> Vec<Option<f32>> {
    let best = values.iter().flatten().copied().fold(0.0f32, f32::max);
    values
        .iter()
        .map(|v| v.map(|x| if best > 0.0 { x / best } else { 0.0 }))
        .collect()
}

/// Convex combination: `vector_weight * v + (1 - vector_weight) * b` of the per-query
/// normalised scores, best first (ties keep input order). A side that did not score an item
/// gives it that side's lowest normalised score.
pub fn convex<T: Clone>(
    candidates: &[Scored<T>],
    vector_weight: f32,
    how: Normalization,
) -> Vec<(T, f32)> {
    convex_with(candidates, &[], 0.0, vector_weight, how)
}

/// [`convex`] plus a third side added on top: candidate `i` gains `extra_weight` times
/// `extra[i]` over the side's best score (a missing score gains nothing). Not min-max: a side
/// whose scores are nearly flat (a name on every candidate) lifts them all alike rather than
/// spreading them from 0 to 1. An `extra_weight` of 0 or an empty `extra` gives exactly
/// [`convex`]'s scores.
pub fn convex_with<T: Clone>(
    candidates: &[Scored<T>],
    extra: &[Option<f32>],
    extra_weight: f32,
    vector_weight: f32,
    how: Normalization,
) -> Vec<(T, f32)> {
    let v = normalise(
        &candidates.iter().map(|c| c.vector).collect::<Vec<_>>(),
        how,
    );
    let b = normalise(&candidates.iter().map(|c| c.bm25).collect::<Vec<_>>(), how);
    let floor = |side: &[Option<f32>]| {
        side.iter()
            .flatten()
            .copied()
            .fold(f32::INFINITY, f32::min)
            .min(0.0)
    };
    let (vmin, bmin) = (floor(&v), floor(&b));
    let e = if extra_weight != 0.0 && extra.len() == candidates.len() {
        over_best(extra)
    } else {
        Vec::new()
    };
    let mut out: Vec<(T, f32)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut score =
                vector_weight * v[i].unwrap_or(vmin) + (1.0 - vector_weight) * b[i].unwrap_or(bmin);
            if let Some(Some(x)) = e.get(i) {
                score += extra_weight * x;
            }
            (c.item.clone(), score)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

#[cfg(test)]
mod convex_tests {
    use super::*;

    fn c(item: &'static str, vector: Option<f32>, bm25: Option<f32>) -> Scored<&'static str> {
        Scored { item, vector, bm25 }
    }

    #[test]
    fn min_max_mixes_both_sides() {
        let cands = [
            c("a", Some(0.9), None),
            c("b", Some(0.5), Some(10.0)),
            c("c", Some(0.7), Some(2.0)),
        ];
        let out = convex(&cands, 0.5, Normalization::MinMax);
        // a: v 1.0, b 0 (absent) -> 0.5; b: v 0, b 1 -> 0.5; c: v 0.5, b 0 -> 0.25.
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!((out[0].1 - 0.5).abs() < 1e-6 && (out[2].1 - 0.25).abs() < 1e-6);
        let vector_only = convex(&cands, 1.0, Normalization::MinMax);
        assert_eq!(vector_only[1].0, "c");
    }

    #[test]
    fn a_third_side_adds_on_top_and_weight_zero_is_plain_convex() {
        let cands = [
            c("a", Some(0.9), Some(4.0)),
            c("b", Some(0.8), None),
            c("c", Some(0.5), Some(2.0)),
        ];
        // "b" sounds most like the query, "c" half as much.
        let extra = [None, Some(8.0), Some(4.0)];
        let plain = convex(&cands, 0.8, Normalization::MinMax);
        assert_eq!(
            convex_with(&cands, &extra, 0.0, 0.8, Normalization::MinMax),
            plain
        );
        assert_eq!(
            plain.iter().map(|x| x.0).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let with = convex_with(&cands, &extra, 0.5, 0.8, Normalization::MinMax);
        // b: 0.8 * 0.75 + 0.2 * 0 + 0.5 * 1 = 1.1; a: 0.8 * 1 + 0.2 * 1 + 0.5 * 0 = 1.0.
        assert_eq!(
            with.iter().map(|x| x.0).collect::<Vec<_>>(),
            ["b", "a", "c"]
        );
        assert!((with[0].1 - 1.1).abs() < 1e-6 && (with[1].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn z_scores_and_degenerate_sides() {
        let cands = [c("a", Some(1.0), Some(3.0)), c("b", Some(0.0), None)];
        let out = convex(&cands, 0.5, Normalization::ZScore);
        assert_eq!(out[0].0, "a");
        // A single BM25 score has no spread: z-score 0, min-max 1.
        assert_eq!(
            normalise(&[Some(4.0), None], Normalization::ZScore),
            [Some(0.0), None]
        );
        assert_eq!(
            normalise(&[Some(4.0), None], Normalization::MinMax),
            [Some(1.0), None]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(f: &[Fused<&'static str>]) -> Vec<&'static str> {
        f.iter().map(|x| x.item).collect()
    }

    #[test]
    fn item_in_both_lists_beats_items_in_one() {
        let v = ["a", "b", "c"];
        let b = ["c", "d", "e"];
        let out = reciprocal_rank(
            &[
                RankedList {
                    items: &v,
                    weight: 1.0,
                },
                RankedList {
                    items: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        assert_eq!(out[0].item, "c");
        assert_eq!(out[0].ranks, vec![Some(3), Some(1)]);
        let expected = 1.0 / 63.0 + 1.0 / 61.0;
        assert!((out[0].score - expected).abs() < 1e-7);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn scores_follow_the_formula_and_ties_keep_first_appearance() {
        let v = ["a", "b"];
        let b = ["x", "y"];
        let out = reciprocal_rank(
            &[
                RankedList {
                    items: &v,
                    weight: 1.0,
                },
                RankedList {
                    items: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        // a and x tie (1/61), b and y tie (1/62): list order breaks ties.
        assert_eq!(ids(&out), vec!["a", "x", "b", "y"]);
        assert!((out[0].score - 1.0 / 61.0).abs() < 1e-7);
        assert_eq!(out[1].ranks, vec![None, Some(1)]);
    }

    #[test]
    fn weights_shift_the_order() {
        let v = ["a", "b"];
        let b = ["b", "a"];
        let even = reciprocal_rank(
            &[
                RankedList {
                    items: &v,
                    weight: 1.0,
                },
                RankedList {
                    items: &b,
                    weight: 1.0,
                },
            ],
            60.0,
        );
        assert_eq!(even[0].score, even[1].score);
        let bm25_heavy = reciprocal_rank(
            &[
                RankedList {
                    items: &v,
                    weight: 0.5,
                },
                RankedList {
                    items: &b,
                    weight: 2.0,
                },
            ],
            60.0,
        );
        assert_eq!(ids(&bm25_heavy), vec!["b", "a"]);
        let vector_heavy = reciprocal_rank(
            &[
                RankedList {
                    items: &v,
                    weight: 2.0,
                },
                RankedList {
                    items: &b,
                    weight: 0.5,
                },
            ],
            60.0,
        );
        assert_eq!(ids(&vector_heavy), vec!["a", "b"]);
    }

    #[test]
    fn small_k_favours_top_ranks() {
        // "a" is first in one list only; "b" is second in both.
        let v = ["a", "b"];
        let b = ["c", "b"];
        let lists = [
            RankedList {
                items: &v[..],
                weight: 1.0,
            },
            RankedList {
                items: &b[..],
                weight: 1.0,
            },
        ];
        let k0 = reciprocal_rank(&lists, 0.0);
        // k = 0: a = 1, b = 1/2 + 1/2 = 1: tie, a first by appearance.
        assert_eq!(k0[0].item, "a");
        let k60 = reciprocal_rank(&lists, 60.0);
        assert_eq!(k60[0].item, "b");
    }

    #[test]
    fn empty_lists_and_duplicates() {
        let empty: [&str; 0] = [];
        assert!(
            reciprocal_rank(
                &[RankedList {
                    items: &empty,
                    weight: 1.0
                }],
                60.0
            )
            .is_empty()
        );
        let dup = ["a", "a", "b"];
        let out = reciprocal_rank(
            &[RankedList {
                items: &dup,
                weight: 1.0,
            }],
            60.0,
        );
        assert_eq!(ids(&out), vec!["a", "b"]);
        assert_eq!(out[0].ranks, vec![Some(1)]);
        assert!((out[1].score - 1.0 / 63.0).abs() < 1e-7);
    }
}
