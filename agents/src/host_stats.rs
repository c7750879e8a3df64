//! The host's load for the dashboard (DESIGN §7 hosts panel): CPU busy since the previous
//! sample, from `/proc/stat`, and memory in use, from `/proc/meminfo`. The parsers take the
//! files' text and do no I/O; [`Sampler`] reads the files.

use halab_protocol::AgentMsg;

/// Aggregate CPU time counters of `/proc/stat`'s first line, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the `cpu ` line of `/proc/stat`: user nice system idle iowait irq softirq steal …;
/// idle and iowait are idle time, the rest busy. `None` when the line is missing or malformed.
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Busy share of the CPUs between two samples, in percent.
pub fn cpu_pct(before: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = now.busy.saturating_sub(before.busy).min(total);
    busy as f64 * 100.0 / total as f64
}

/// (used, total) bytes from `/proc/meminfo`: used = MemTotal − MemAvailable.
pub fn parse_mem(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// Reads /proc every call and turns two successive readings into a [`AgentMsg::HostStats`].
#[derive(Debug, Default)]
pub struct Sampler {
    last: Option<CpuTimes>,
}

impl Sampler {
    /// The next message, or `None` when /proc cannot be read (the dashboard then shows `-`).
    pub fn sample(&mut self) -> Option<AgentMsg> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let now = parse_cpu(&stat)?;
        let (mem_used_bytes, mem_total_bytes) = parse_mem(&meminfo)?;
        let cpu = self.last.map(|b| cpu_pct(b, now)).unwrap_or(0.0);
        self.last = Some(now);
        Some(AgentMsg::HostStats {
            cpu_pct: cpu,
            mem_used_bytes,
            mem_total_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_share_between_two_samples() {
        let a = parse_cpu("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let b = parse_cpu("cpu  200 0 200 1300 100 0 0 0 0 0\n").unwrap();
        assert!((cpu_pct(a, b) - 25.0).abs() < 1e-9);
        assert_eq!(cpu_pct(b, b), 0.0);
        assert_eq!(
            cpu_pct(b, a),
            0.0,
            "a counter going back never gives a negative share"
        );
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        assert_eq!(parse_cpu(""), None);
        assert_eq!(parse_cpu("cpu  1 x 3 4"), None);
        assert_eq!(parse_cpu("cpu  1 2"), None);
        assert_eq!(parse_mem("MemTotal: lots"), None);
        assert_eq!(parse_mem("MemTotal: 10 kB\n"), None);
    }

    #[test]
    fn memory_in_use_is_total_minus_available() {
        let m = "MemTotal:       8000 kB\nMemFree:        1000 kB\nMemAvailable:   6000 kB\n";
        assert_eq!(parse_mem(m), Some((2000 * 1024, 8000 * 1024)));
    }
}
