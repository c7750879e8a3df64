//! Order statistics of a set of measurements: nearest-rank percentiles, the way a reader can
//! check them by hand against the runs.

use serde::Serialize;

/// p50, p95, max and mean of the values that were measured (missing values are left out,
/// never counted as zero).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Values measured.
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` when no value was measured.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Option<Summary> {
        let mut v: Vec<f64> = values
            .into_iter()
            .flatten()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        Some(Summary {
            n: v.len(),
            p50: nearest_rank(&v, 50.0),
            p95: nearest_rank(&v, 95.0),
            max: v[v.len() - 1],
            mean,
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty `v`: the smallest value with at least
/// `p` % of the values at or below it.
fn nearest_rank(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_leave_missing_values_out() {
        let s = Summary::of([Some(3.0), None, Some(1.0), Some(2.0), Some(10.0)]).unwrap();
        assert_eq!((s.n, s.p50, s.p95, s.max), (4, 2.0, 10.0, 10.0));
        assert_eq!(s.mean, 4.0);
        let one = Summary::of([Some(7.5)]).unwrap();
        assert_eq!((one.p50, one.p95, one.max), (7.5, 7.5, 7.5));
        assert_eq!(Summary::of([None, None]), None);
        let twenty: Vec<Option<f64>> = (1..=20).map(|i| Some(i as f64)).collect();
        let s = Summary::of(twenty).unwrap();
        assert_eq!((s.p50, s.p95), (10.0, 19.0));
    }
}
