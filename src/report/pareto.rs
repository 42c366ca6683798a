//! Pareto frontiers of (size, quality) points.
//!
//! A point is on the frontier when no other point is at least as good on both axes and strictly
//! better on one. Equal points do not dominate each other, so duplicates of a frontier point are all
//! on the frontier. Points with a NaN coordinate are never on it. The result is deterministic:
//! indices into the input, ordered by x ascending, then by y (best first), then by index.

use std::cmp::Ordering;

/// Frontier minimizing both x (e.g. file size) and y (e.g. perplexity).
pub fn pareto_min_min(points: &[(f64, f64)]) -> Vec<usize> {
    frontier(points, |a, b| a.total_cmp(&b))
}

/// Frontier minimizing x (e.g. file size) and maximizing y (e.g. accuracy, tokens/s).
pub fn pareto_min_max(points: &[(f64, f64)]) -> Vec<usize> {
    frontier(points, |a, b| b.total_cmp(&a))
}

/// `better_y(a, b)` is `Less` when y value `a` is better than `b`.
fn frontier(points: &[(f64, f64)], better_y: impl Fn(f64, f64) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).filter(|&i| !points[i].0.is_nan() && !points[i].1.is_nan()).collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (points[i], points[j]);
        a.0.total_cmp(&b.0).then(better_y(a.1, b.1)).then(i.cmp(&j))
    });
    let mut out = Vec::new();
    // The best y seen so far, and the x of the first point that reached it.
    let mut best: Option<(f64, f64)> = None;
    for i in order {
        let (x, y) = points[i];
        let on = match best {
            None => true,
            // Strictly better y than every point with x' <= x.
            Some((bx, by)) => better_y(y, by) == Ordering::Less || (y == by && x == bx),
        };
        if on {
            if best.is_none_or(|(_, by)| better_y(y, by) == Ordering::Less) {
                best = Some((x, y));
            }
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: i is on the frontier iff no j dominates it.
    fn brute(points: &[(f64, f64)], max_y: bool) -> Vec<usize> {
        let better_eq = |a: f64, b: f64| if max_y { a >= b } else { a <= b };
        let mut v: Vec<usize> = (0..points.len())
            .filter(|&i| {
                !(0..points.len()).any(|j| {
                    let (p, q) = (points[j], points[i]);
                    p.0 <= q.0 && better_eq(p.1, q.1) && (p.0 < q.0 || p.1 != q.1)
                })
            })
            .collect();
        v.sort_by(|&i, &j| {
            let (a, b) = (points[i], points[j]);
            let y = if max_y { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) };
            a.0.total_cmp(&b.0).then(y).then(i.cmp(&j))
        });
        v
    }

    #[test]
    fn dominated_points_are_excluded() {
        // size, ppl
        let p = [(100.0, 20.0), (50.0, 25.0), (80.0, 30.0), (200.0, 19.0), (210.0, 19.0), (50.0, 26.0)];
        assert_eq!(pareto_min_min(&p), vec![1, 0, 3]);
        // size, accuracy
        let a = [(100.0, 0.60), (50.0, 0.55), (80.0, 0.50), (200.0, 0.61), (210.0, 0.61)];
        assert_eq!(pareto_min_max(&a), vec![1, 0, 3]);
    }

    #[test]
    fn equal_points_are_all_kept_in_index_order() {
        let p = [(10.0, 5.0), (20.0, 1.0), (10.0, 5.0), (20.0, 1.0)];
        assert_eq!(pareto_min_min(&p), vec![0, 2, 1, 3]);
        assert_eq!(pareto_min_max(&p), vec![0, 2]);
    }

    #[test]
    fn single_and_empty() {
        assert_eq!(pareto_min_min(&[(3.0, 4.0)]), vec![0]);
        assert_eq!(pareto_min_max(&[(3.0, 4.0)]), vec![0]);
        assert!(pareto_min_min(&[]).is_empty());
        assert_eq!(pareto_min_min(&[(f64::NAN, 1.0), (2.0, 2.0)]), vec![1]);
    }

    #[test]
    fn all_on_frontier() {
        let p = [(4.0, 1.0), (1.0, 4.0), (3.0, 2.0), (2.0, 3.0)];
        assert_eq!(pareto_min_min(&p), vec![1, 3, 2, 0]);
        let q = [(4.0, 4.0), (1.0, 1.0), (3.0, 3.0), (2.0, 2.0)];
        assert_eq!(pareto_min_max(&q), vec![1, 3, 2, 0]);
        // ... and then nothing but the smallest-and-best point survives in the other direction.
        assert_eq!(pareto_min_min(&q), vec![1]);
    }

    #[test]
    fn same_x_keeps_only_the_best_y() {
        let p = [(10.0, 3.0), (10.0, 2.0), (10.0, 4.0)];
        assert_eq!(pareto_min_min(&p), vec![1]);
        assert_eq!(pareto_min_max(&p), vec![2]);
    }

    #[test]
    fn matches_brute_force() {
        // A small deterministic pseudo-random sweep, with many ties from a coarse grid.
        let mut rng = crate::util::rng::XorShift64::new(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.below(6) as f64;
        for n in 0..40 {
            let p: Vec<(f64, f64)> = (0..n % 13).map(|_| (next(), next())).collect();
            assert_eq!(pareto_min_min(&p), brute(&p, false), "{p:?}");
            assert_eq!(pareto_min_max(&p), brute(&p, true), "{p:?}");
        }
    }
}
