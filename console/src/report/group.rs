//! Parameter sets: the runs of a report grouped by what was varied — mode and its parameters,
//! workload and size, clients, and the fault — in the order they first ran.

use super::stats::Summary;
use crate::run::record::RunRecord;

/// The runs of one parameter set.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub mode: String,
    /// The mode's parameters, e.g. `HB 200 ms × 3`; empty for none.
    pub mode_params: String,
    /// Workload, size and clients, e.g. `bulk 20 MB`: what `none` is compared against.
    pub load: String,
    /// The faults, e.g. `power-off of primary`; `None`: failure-free.
    pub fault: Option<String>,
    /// The shaped links, e.g. `client.service delay 20ms`; empty: every link plain.
    pub links: String,
    pub runs: Vec<&'a RunRecord>,
}

impl Group<'_> {
    /// Mode parameters and load, as one table cell.
    pub fn parameters(&self) -> String {
        let mut parts = Vec::new();
        if !self.mode_params.is_empty() {
            parts.push(self.mode_params.clone());
        }
        parts.push(self.load.clone());
        if !self.links.is_empty() {
            parts.push(self.links.clone());
        }
        if let Some(f) = &self.fault {
            parts.push(f.clone());
        }
        parts.join(", ")
    }

    pub fn summary(&self, figure: impl Fn(&RunRecord) -> Option<f64>) -> Option<Summary> {
        Summary::of(self.runs.iter().map(|r| figure(r)))
    }

    pub fn faulted(&self) -> bool {
        self.fault.is_some()
    }
}

/// The runs grouped into parameter sets, in the order of each set's first run.
pub fn groups(records: &[RunRecord]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for r in records {
        let (mode_params, load, fault, links) = (mode_params(r), load(r), fault(r), links(r));
        let found = groups.iter_mut().find(|g| {
            g.mode == r.mode
                && g.mode_params == mode_params
                && g.load == load
                && g.fault == fault
                && g.links == links
        });
        match found {
            Some(g) => g.runs.push(r),
            None => groups.push(Group {
                mode: r.mode.clone(),
                mode_params,
                load,
                fault,
                links,
                runs: vec![r],
            }),
        }
    }
    groups
}

/// `HB 200 ms × 3, trigger server`: heartbeat interval × missed heartbeats, trigger.
pub fn mode_params(r: &RunRecord) -> String {
    let mut parts = Vec::new();
    let p = &r.mode_params;
    match (p.get("heartbeat_ms"), p.get("missed_heartbeats")) {
        (Some(hb), Some(m)) => parts.push(format!("HB {} ms × {m}", hb)),
        (Some(hb), None) => parts.push(format!("HB {hb} ms")),
        (None, Some(m)) => parts.push(format!("{m} missed HB")),
        (None, None) => {}
    }
    if let Some(t) = p.get("trigger") {
        parts.push(format!("trigger {}", t.as_str().unwrap_or("?")));
    }
    for (k, v) in p {
        if !["heartbeat_ms", "missed_heartbeats", "trigger"].contains(&k.as_str()) {
            parts.push(format!("{k} {v}"));
        }
    }
    parts.join(", ")
}

/// `bulk 20 MB`, `echo`, `download 6.6 KB × 4 clients`.
pub fn load(r: &RunRecord) -> String {
    let mut s = r.workload.clone();
    if let Some(size) = r.size {
        s.push(' ');
        s.push_str(&size_text(size));
    }
    if r.clients != 1 {
        s.push_str(&format!(" × {} clients", r.clients));
    }
    s
}

/// The run's shaped links, `client.service delay 20ms; service rate 10Mbit`; empty when every
/// link was plain.
pub fn links(r: &RunRecord) -> String {
    r.links
        .iter()
        .map(|(link, settings)| format!("{link} {}", settings.replace(", ", " ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The faults of a run, `None` when it had none.
pub fn fault(r: &RunRecord) -> Option<String> {
    if r.faults.is_empty() {
        return None;
    }
    Some(
        r.faults
            .iter()
            .map(|f| format!("{} of {}", f.kind, f.target))
            .collect::<Vec<_>>()
            .join(" + "),
    )
}

/// Bytes in decimal units with at most one decimal, as the papers write sizes: `6.6 KB`,
/// `20 MB`, `223 MB`, `999 B`.
pub fn size_text(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "KB")];
    for (factor, unit) in UNITS {
        if bytes >= factor {
            let tenths = (bytes as f64 / factor as f64 * 10.0).round() / 10.0;
            return if tenths.fract() == 0.0 {
                format!("{tenths:.0} {unit}")
            } else {
                format!("{tenths:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_papers_write_them() {
        assert_eq!(size_text(6600), "6.6 KB");
        assert_eq!(size_text(49_000), "49 KB");
        assert_eq!(size_text(20_000_000), "20 MB");
        assert_eq!(size_text(223_000_000), "223 MB");
        assert_eq!(size_text(999), "999 B");
        assert_eq!(size_text(1_500_000_000), "1.5 GB");
    }
}
