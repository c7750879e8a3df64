//! The dashboard's panels. Each owns the data it shows; `draw` only reads it and
//! `handle_event` turns a key into an [`Action`] without touching the network.

pub mod chart;
pub mod failover;
pub mod help;
pub mod hosts;
pub mod log;
pub mod prompt;
pub mod status;

use super::action::Action;
use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;

/// One panel of the dashboard (the gitui / ratatui-template component pattern).
pub trait Component {
    /// What `key` means to this panel, if anything.
    fn handle_event(&mut self, _key: KeyEvent) -> Option<Action> {
        None
    }
    fn draw(&self, frame: &mut Frame, area: Rect);
}

/// A duration in ms, short: `3.4ms`, `1012ms`, `12.3s`; `-` when unknown.
pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() < 10.0 => format!("{x:.1}ms"),
        Some(x) if x.abs() < 10_000.0 => format!("{x:.0}ms"),
        Some(x) => format!("{:.1}s", x / 1000.0),
    }
}

/// A byte count, short: `0`, `512B`, `20M`, `1.2G`.
pub fn bytes(b: u64) -> String {
    const K: f64 = 1000.0;
    let f = b as f64;
    if b == 0 {
        "0".into()
    } else if f < K {
        format!("{b}B")
    } else if f < K * K {
        format!("{:.0}k", f / K)
    } else if f < K * K * K {
        format!("{:.0}M", f / (K * K))
    } else {
        format!("{:.1}G", f / (K * K * K))
    }
}

/// Seconds, short: `45s`, `4m05s`.
pub fn secs(s: u64) -> String {
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// A rectangle of at most `w`×`h` in the middle of `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
