//! `halab status`: the testbeds that are up, read from their state files.

use super::{CommandError, Context};
use crate::state::{HostState, TestbedState, process_alive, unix_ms};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    state: &'a TestbedState,
    console_alive: bool,
}

pub fn run(ctx: &Context, json: bool) -> Result<ExitCode, CommandError> {
    let all = TestbedState::load_all(&ctx.state_dir);
    let mut states = Vec::new();
    for r in all {
        match r {
            Ok(s) => states.push(s),
            Err(e) => eprintln!("warning: unreadable state file {e}"),
        }
    }
    if json {
        let out: Vec<StatusJson> = states
            .iter()
            .map(|s| StatusJson {
                state: s,
                console_alive: s.console_alive(&ctx.state_dir),
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&out).map_err(|e| CommandError::Message(e.to_string()))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if states.is_empty() {
        println!("no testbed is up (state dir {})", ctx.state_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    for s in &states {
        print!("{}", render(s, &ctx.state_dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// A testbed and its hosts as text: a heading line and a table.
pub fn render(s: &TestbedState, state_dir: &std::path::Path) -> String {
    let alive = s.console_alive(state_dir);
    let mut out = format!(
        "testbed {} ({}, {}) — {}\n  logs: {}\n",
        s.testbed,
        s.provider,
        s.topology.display(),
        if alive {
            format!("up, console pid {}", s.console_pid)
        } else {
            format!(
                "STALE: console pid {} is not running; `halab down --name {}` removes what it left",
                s.console_pid, s.testbed
            )
        },
        s.log_dir.display()
    );
    let now = unix_ms();
    let rows: Vec<[String; 7]> = s
        .hosts
        .iter()
        .map(|h| {
            let agent_alive = match (s.provider, h.agent_pid) {
                (crate::topology::Provider::Local, Some(pid)) => process_alive(pid),
                (_, Some(_)) => alive,
                (_, None) => false,
            };
            let state = if !alive && h.state == HostState::Connected {
                if agent_alive {
                    "orphaned".to_string()
                } else {
                    "gone".to_string()
                }
            } else {
                h.state.to_string()
            };
            [
                h.name.clone(),
                h.roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                h.location.clone(),
                h.agent_pid.map(|p| p.to_string()).unwrap_or("-".into()),
                state,
                h.rtt_us
                    .map(|us| format!("{:.2} ms", us as f64 / 1000.0))
                    .unwrap_or("-".into()),
                match (h.last_seen_unix_ms, &h.reason) {
                    (_, Some(reason)) => reason.clone(),
                    (Some(t), None) => {
                        format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0)
                    }
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "HOST",
            "ROLES",
            "WHERE",
            "AGENT PID",
            "STATE",
            "RTT",
            "LAST SEEN / REASON",
        ],
        &rows,
    ));
    out
}

/// Left-aligned text table with two-space gutters, indented by two spaces.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::from(" ");
        for (i, c) in cells.iter().enumerate() {
            l.push(' ');
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 1));
            }
        }
        l.push('\n');
        l
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
