//! How figures are written in the report.

use crate::stats::Dist;

/// A duration in seconds, as short as it can be said.
pub fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// A signed difference in milliseconds.
pub fn dms(a: u64, b: u64) -> String {
    let d = a as f64 - b as f64;
    format!(
        "{}{:.3} ms",
        if d >= 0.0 { "+" } else { "−" },
        d.abs() / 1000.0
    )
}

pub fn pct(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "**pass**"
    } else {
        "**MISS**"
    }
}

pub fn dist_cells(d: &Dist) -> String {
    d.percentiles()
        .iter()
        .map(|v| ms(*v))
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn delta_cells(a: &Dist, b: &Dist) -> String {
    a.percentiles()
        .iter()
        .zip(b.percentiles())
        .map(|(x, y)| dms(*x, y))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_signed() {
        assert_eq!(dms(1500, 1000), "+0.500 ms");
        assert_eq!(dms(1000, 1500), "−0.500 ms");
        assert_eq!(secs(std::time::Duration::from_millis(1500)), "1.5 s");
        assert_eq!(pct(0.494), "49 %");
    }
}
