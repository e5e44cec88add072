//! Reciprocal-rank fusion of ranked lists.
//!
//! Each list contributes `weight / (k + rank)` (rank 1-based) to every item it holds; items are
//! sorted by the sum. Only ranks matter, so BM25 scores and cosine similarities, which live on
//! unrelated scales, combine without calibration.

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
