//! Benchmark of the dashboard: 20 hosts, 10 clients streaming telemetry every 100 ms, a few
//! failover rows and a full event log. Prints
//! - render time per frame (TestBackend, 80×24 and 160×48): p50, p99, max;
//! - key-to-screen latency: from a key event entering the real event loop to the first frame
//!   that shows its effect (selection moved, help shown, host powered off — the last one a
//!   round trip through a simulated orchestrator task), while the telemetry keeps coming.
//!
//! Targets (issue 7): render < 5 ms per frame, key to screen < 50 ms. Printed, not asserted.
//! Run: `cargo bench -p halab --bench tui_render` (no root needed).

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use halab::tui::action::{Command, FaultKey, Update};
use halab::tui::app::{App, key};
use halab::tui::{LoopIo, demo, event_loop};
use halab_protocol::{AgentMsg, ClientEvent};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const HOSTS: usize = 20;
const STREAMING: usize = 10;
const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn topology() -> halab::topology::Topology {
    let text = halab::topology::synthetic::local_topology("bench-tui", HOSTS);
    halab::topology::parse_str(&text, std::path::Path::new("bench-tui.toml"))
        .expect("synthetic topology is valid")
}

fn clients() -> Vec<String> {
    (3..3 + STREAMING).map(|i| format!("h{i}")).collect()
}

/// One telemetry message per streaming client at `t`, `bytes` cumulative.
fn telemetry(t: u64, bytes: u64, with_event: bool) -> Vec<Update> {
    clients()
        .into_iter()
        .enumerate()
        .map(|(i, host)| {
            let events = if with_event && i == 0 {
                vec![ClientEvent {
                    connection: 0,
                    at_ns: t,
                    event: halab_workload::ConnEvent::Connected,
                }]
            } else {
                Vec::new()
            };
            Update::Agent {
                host,
                msg: AgentMsg::ClientTelemetry {
                    run: 1,
                    at_ns: t,
                    bytes: bytes + (i as u64) * 1_000_000,
                    events,
                },
            }
        })
        .collect()
}

/// A dashboard 60 s into a session: every client streaming, three failovers, a full log.
fn busy_app(t0: u64) -> (App, u64, u64) {
    let topo = topology();
    let mut app = App::new(&topo, demo::host_records(&topo), Vec::new(), t0);
    for (i, h) in topo.hosts.iter().enumerate() {
        let msg = AgentMsg::HostStats {
            cpu_pct: i as f64 * 3.0,
            mem_used_bytes: 1_000_000_000 + i as u64 * 10_000_000,
            mem_total_bytes: 8_000_000_000,
        };
        app.apply(
            Update::Agent {
                host: h.name.clone(),
                msg,
            },
            t0,
        );
    }
    for c in clients() {
        app.apply(Update::RunStarted { host: c, run: 1 }, t0);
    }
    let mut t = t0;
    let mut bytes = 0;
    for step in 0..600u64 {
        t += 100 * MS;
        bytes += 40_000_000;
        for u in telemetry(t, bytes, step % 10 == 0) {
            app.apply(u, t);
        }
        if step % 150 == 75 {
            app.apply(
                Update::FaultSent {
                    id: step,
                    host: "h2".into(),
                    kind: halab::experiment::FaultKind::Loss,
                    label: "loss 5%".into(),
                    lease_ms: Some(300_000),
                },
                t,
            );
            app.apply(
                Update::Agent {
                    host: "h2".into(),
                    msg: AgentMsg::FaultApplied {
                        id: step,
                        at_ns: t,
                        detail: "loss".into(),
                    },
                },
                t,
            );
        }
        if step % 3 == 0 {
            app.apply(
                Update::Log(halab::tui::action::Level::Info, format!("step {step}")),
                t,
            );
        }
    }
    (app, t, bytes)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn report(name: &str, v: &mut [f64], target_ms: f64) {
    let p50 = pct(v, 0.5);
    let p99 = pct(v, 0.99);
    let max = pct(v, 1.0);
    println!(
        "  {name:<34} p50 {p50:>7.3} ms   p99 {p99:>7.3} ms   max {max:>7.3} ms   (target < {target_ms} ms: {})",
        if p99 < target_ms { "met" } else { "MISSED" }
    );
}

fn render_times(w: u16, h: u16, frames: usize) -> Vec<f64> {
    let (mut app, mut t, mut bytes) = busy_app(1000 * S);
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    let mut out = Vec::with_capacity(frames);
    for _ in 0..frames {
        t += 100 * MS;
        bytes += 40_000_000;
        for u in telemetry(t, bytes, false) {
            app.apply(u, t);
        }
        app.tick(t);
        let start = Instant::now();
        term.draw(|f| app.draw(f)).expect("draw");
        out.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn text(buf: &Buffer) -> String {
    let mut s = String::with_capacity(buf.content().len() + buf.area.height as usize);
    for (i, c) in buf.content().iter().enumerate() {
        if i > 0 && i % buf.area.width as usize == 0 {
            s.push('\n');
        }
        s.push_str(c.symbol());
    }
    s
}

/// Whether a frame's text shows a key's effect.
type Effect = Box<dyn Fn(&str) -> bool + Send>;
/// The key in flight: its kind, when it entered the loop, and what shows its effect.
type Pending = Arc<Mutex<Option<(&'static str, Instant, Effect)>>>;

async fn key_latency(rounds: usize) -> Vec<(&'static str, f64)> {
    let clock_base = Instant::now();
    let clock = move || 1000 * S + clock_base.elapsed().as_nanos() as u64;
    let (mut app, _, _) = busy_app(clock());
    let mut term = Terminal::new(TestBackend::new(160, 48)).expect("test backend");
    let (key_tx, key_rx) = mpsc::unbounded_channel::<std::io::Result<Event>>();
    let events =
        futures_util::stream::unfold(
            key_rx,
            |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
        );
    let events = Box::pin(events);
    let (updates_tx, updates) = mpsc::unbounded_channel();
    let (commands, mut commands_rx) = mpsc::unbounded_channel::<Command>();

    // The simulated orchestrator: answers a power-off as the real one does, at once.
    let orch_updates = updates_tx.clone();
    let orchestrator = tokio::spawn(async move {
        let mut id = 1000;
        while let Some(c) = commands_rx.recv().await {
            if let Command::Fault {
                host,
                fault: FaultKey::PowerOff,
            } = c
            {
                id += 1;
                let at_ns = 1000 * S + clock_base.elapsed().as_nanos() as u64;
                let _ = orch_updates.send(Update::PoweredOff { id, host, at_ns });
            }
        }
    });
    // Ten clients streaming telemetry every 100 ms meanwhile.
    let feed_updates = updates_tx.clone();
    let feeder = tokio::spawn(async move {
        let mut bytes = 40_000_000 * 600;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            bytes += 40_000_000;
            let t = 1000 * S + clock_base.elapsed().as_nanos() as u64;
            for u in telemetry(t, bytes, false) {
                if feed_updates.send(u).is_err() {
                    return;
                }
            }
        }
    });

    let pending: Pending = Arc::new(Mutex::new(None));
    let results: Arc<Mutex<Vec<(&'static str, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let driver = {
        let pending = pending.clone();
        let results = results.clone();
        let updates_tx = updates_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let down = KeyEvent::new(KeyCode::Down, KeyModifiers::NONE);
            let mut selected = 1; // h1
            for i in 0..rounds {
                // Selection moves down one host; help opens; the selected host powers off (a
                // round trip through the orchestrator), after the help is closed.
                let (what, ev, pred): (&'static str, KeyEvent, Effect) = match i % 3 {
                    0 => {
                        selected = selected % HOSTS + 1;
                        let row = format!("▶ h{selected} ");
                        (
                            "select (↓)",
                            down,
                            Box::new(move |s: &str| s.contains(&row)),
                        )
                    }
                    1 => (
                        "help (?)",
                        key('?'),
                        Box::new(|s: &str| s.contains("help — ? or Esc closes")),
                    ),
                    _ => {
                        let row = format!("▶ h{selected} ");
                        (
                            "power off (p, via orchestrator)",
                            key('p'),
                            Box::new(move |s: &str| {
                                s.lines()
                                    .any(|l| l.contains(&row) && l.contains("power-off"))
                            }),
                        )
                    }
                };
                if i % 3 == 2 {
                    let _ = key_tx.send(Ok(Event::Key(key('?'))));
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                *pending.lock().unwrap() = Some((what, Instant::now(), pred));
                let _ = key_tx.send(Ok(Event::Key(ev)));
                let sent = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if pending.lock().unwrap().is_none() {
                        break;
                    }
                    if sent.elapsed() > Duration::from_secs(2) {
                        results.lock().unwrap().push((what, f64::INFINITY));
                        pending.lock().unwrap().take();
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(37)).await;
            }
            let _ = updates_tx.send(Update::Down(Ok("bench done".into())));
        })
    };
    let io = LoopIo {
        events,
        updates,
        commands,
        teardown: tokio_util::sync::CancellationToken::new(),
        tick: halab::tui::TICK,
    };
    let on_frame_pending = pending.clone();
    let on_frame_results = results.clone();
    event_loop(&mut term, &mut app, io, clock, |_, buf| {
        let mut p = on_frame_pending.lock().unwrap();
        if let Some((what, t0, pred)) = p.as_ref()
            && pred(&text(buf))
        {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            on_frame_results.lock().unwrap().push((*what, ms));
            *p = None;
        }
    })
    .await
    .expect("event loop");
    let _ = driver.await;
    feeder.abort();
    orchestrator.abort();
    results.lock().unwrap().clone()
}

fn main() {
    println!("tui_render: {HOSTS} hosts, {STREAMING} clients streaming telemetry every 100 ms");
    // The machine's load matters for the tails: say what it was.
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "  load average: {}",
            l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
    }
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let mut v = render_times(w, h, 1000);
        report(&format!("render {w}x{h} (1000 frames)"), &mut v, 5.0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(key_latency(90));
    for kind in ["select (↓)", "help (?)", "power off (p, via orchestrator)"] {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, ms)| *ms)
            .collect();
        if v.is_empty() {
            println!("  key to screen {kind}: no sample");
            continue;
        }
        report(
            &format!("key to screen: {kind} ({})", v.len()),
            &mut v,
            50.0,
        );
    }
}
