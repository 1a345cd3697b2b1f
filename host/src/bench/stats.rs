//! Statistics over a case's measured runs: nearest-rank percentiles, the
//! summary row (median, p90, p99, min, max), ratios against a baseline case,
//! and the Mann–Whitney U test `ember bench compare` decides with.

use serde::{Deserialize, Serialize};

/// Nearest-rank percentile (`p` in 0..=100) of `sorted` (ascending): the
/// smallest value with at least p% of the values at or below it. NaN when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The median: the mean of the two middle values for an even count.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `values` sorted ascending (NaNs last).
pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A distribution's summary row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Dist {
    /// The summary of `values`; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Dist> {
        let v = sorted(values);
        let n = v.len();
        if n == 0 {
            return None;
        }
        Some(Dist {
            n,
            median: median(&v),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            min: v[0],
            max: v[n - 1],
            mean: v.iter().sum::<f64>() / n as f64,
        })
    }
}

/// The result of a two-sided Mann–Whitney U test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U of the first sample (the number of (a, b) pairs with a > b, ties
    /// counting one half).
    pub u: f64,
    /// The normal approximation's z (tie- and continuity-corrected).
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Mann–Whitney U with the normal approximation (tie correction, continuity
/// correction). Fine from about 8 values per side; with fewer, p is rough
/// (and `compare` says so). `None` when a side is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // Rank the pooled values, ties sharing their mean rank.
    let mut pooled: Vec<(f64, bool)> = a.iter().map(|&x| (x, true)).collect();
    pooled.extend(b.iter().map(|&x| (x, false)));
    pooled.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = pooled.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && pooled[j + 1].0 == pooled[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += pooled[i..=j].iter().filter(|p| p.1).count() as f64 * mean_rank;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_a - n1f * (n1f + 1.0) / 2.0;
    let mu = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)).max(1.0));
    if var <= 0.0 {
        // Every value equal: nothing distinguishes the samples.
        return Some(MannWhitney { u, z: 0.0, p: 1.0 });
    }
    let diff = u - mu;
    let corrected = (diff.abs() - 0.5).max(0.0) * diff.signum();
    let z = corrected / var.sqrt();
    let p = (2.0 * (1.0 - normal_cdf(z.abs()))).clamp(0.0, 1.0);
    Some(MannWhitney { u, z, p })
}

/// The standard normal CDF.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, Chebyshev
/// fit, fractional error below 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = sorted((1..=10).map(f64::from));
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 90.0), 9.0);
        assert_eq!(percentile(&v, 99.0), 10.0);
        assert_eq!(median(&v), 5.5);
        let d = Dist::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (d.n, d.median, d.min, d.max, d.mean),
            (3, 2.0, 1.0, 3.0, 2.0)
        );
        assert!(Dist::of([]).is_none());
    }

    #[test]
    fn normal_cdf_matches_tables() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
    }

    #[test]
    fn mann_whitney_same_sample_is_not_significant() {
        let a: Vec<f64> = (0..30).map(|i| 10.0 + (i % 7) as f64 * 0.3).collect();
        let r = mann_whitney(&a, &a).unwrap();
        assert!(r.p > 0.99, "{r:?}");
    }

    #[test]
    fn mann_whitney_finds_a_shift() {
        // Worked by hand: a = 1..=10, b = 6..=15 -> U = 12.5 (a 6..10 each
        // tie one b and beat the smaller ones), mu = 50, five ties of two,
        // var = 100/12 * (21 - 30/380) = 174.34, z = -37/13.204 = -2.802,
        // p = erfc(2.802/sqrt 2) = 0.00508 (what scipy's asymptotic
        // mannwhitneyu with continuity correction gives).
        let a: Vec<f64> = (1..=10).map(f64::from).collect();
        let b: Vec<f64> = (6..=15).map(f64::from).collect();
        let r = mann_whitney(&a, &b).unwrap();
        assert_eq!(r.u, 12.5);
        assert!((r.p - 0.005_075).abs() < 2e-5, "{r:?}");
        let far: Vec<f64> = (100..130).map(f64::from).collect();
        let near: Vec<f64> = (0..30).map(f64::from).collect();
        assert!(mann_whitney(&near, &far).unwrap().p < 1e-6);
        assert_eq!(mann_whitney(&[1.0, 1.0], &[1.0]).unwrap().p, 1.0);
    }
}
