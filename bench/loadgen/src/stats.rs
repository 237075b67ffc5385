//! Percentiles over collected samples.

/// The `p`-th percentile (0–100) of `sorted`, nearest-rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts samples for [`percentile`].
pub fn sorted(mut samples: Vec<f64>) -> Vec<f64> {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples
}

/// Samples summed up: how many are below zero (for lateness: closed early), and the minimum,
/// median, 99th percentile and maximum; all 0 when there are none.
pub struct Summary {
    pub count: usize,
    pub below_zero: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: Vec<f64>) -> Summary {
        let s = sorted(samples);
        Summary {
            count: s.len(),
            below_zero: s.partition_point(|&x| x < 0.0),
            min: s.first().copied().unwrap_or(0.0),
            p50: percentile(&s, 50.0),
            p99: percentile(&s, 99.0),
            max: s.last().copied().unwrap_or(0.0),
        }
    }
}
