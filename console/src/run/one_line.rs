//! One-line texts of a planned run and of a finished one, for `halab run`'s progress and the
//! dashboard's log.

use crate::experiment::RunPlan;
use crate::run::record::RunRecord;

/// `mode=st-tcp workload=bulk heartbeat_ms=200 fault=power-off of primary rep 2`.
pub fn describe(plan: &RunPlan) -> String {
    let s = &plan.settings;
    let mut parts = vec![
        format!("mode={}", s.mode),
        format!("workload={}", s.workload),
    ];
    for (k, v) in &plan.params {
        if !["mode", "workload", "faults"].contains(&k.as_str()) {
            parts.push(format!("{k}={v}"));
        }
    }
    let faults: Vec<String> = plan
        .faults
        .iter()
        .map(|f| format!("{} of {}", f.kind, f.target))
        .collect();
    parts.push(format!(
        "fault={}",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(" + ")
        }
    ));
    parts.push(format!("rep {}", plan.repetition));
    parts.join(" ")
}

/// One line per finished run: the figures a user looks for first.
pub fn summary(r: &RunRecord) -> String {
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.1} ms")).unwrap_or("-".into());
    let mut s = format!(
        "{} in {:.0} ms; failover {}, detect {}, stall {}; {} of {} bytes, lost {}, duplicated {}, corrupted {}, refetched {}",
        if r.integrity.integrity_ok {
            "integrity ok"
        } else {
            "INTEGRITY FAILED"
        },
        r.duration_ms,
        ms(r.failover_ms),
        ms(r.detect_ms),
        ms(r.stall_ms),
        r.integrity.bytes_received,
        r.integrity.bytes_expected,
        r.integrity.bytes_lost,
        r.integrity.bytes_duplicated,
        r.integrity.bytes_corrupted,
        r.integrity.bytes_refetched
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("; error: {e}"));
    }
    s
}
