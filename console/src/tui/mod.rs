//! The live dashboard of `halab up` (DESIGN §1, §7): hosts, throughput per client with fault,
//! detection, takeover and resume markers, the failover table, an event log and a status bar,
//! with single keys that break hosts.
//!
//! Layout (the gitui / ratatui-template pattern): [`action`] holds the messages, [`app::App`]
//! the state and its panels ([`components`], each with `draw` apart from `handle_event`),
//! [`orchestrator`] the task that owns the testbed, and [`event_loop`] the one loop that
//! selects over terminal events, a tick and the orchestrator's updates. The loop does no I/O
//! but drawing: commands go to the orchestrator on a channel, results come back as updates.

pub mod action;
pub mod app;
pub mod components;
pub mod demo;
pub mod orchestrator;

use action::{Action, Command, Update};
use app::App;
use crossterm::event::{Event, KeyEventKind};
use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::buffer::Buffer;
use std::io;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the screen is redrawn when nothing else happens (time left on leases, the
/// chart's window moving).
pub const TICK: Duration = Duration::from_millis(250);

/// What the event loop is connected to.
pub struct LoopIo<S> {
    /// Terminal events (crossterm's `EventStream`, or a test's).
    pub events: S,
    pub updates: mpsc::UnboundedReceiver<Update>,
    pub commands: mpsc::UnboundedSender<Command>,
    /// Cancelled by SIGTERM, SIGINT or SIGHUP: tear down without asking.
    pub teardown: CancellationToken,
    pub tick: Duration,
}

/// The dashboard's one loop: draws when something changed, then waits for a key, an update,
/// a tick or a teardown signal. Returns once the orchestrator reported the testbed down (or
/// went away). `on_frame` sees every frame drawn (the benchmark times keys with it).
pub async fn event_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut io: LoopIo<S>,
    clock: impl Fn() -> u64,
    mut on_frame: impl FnMut(&App, &Buffer),
) -> io::Result<()>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let mut tick = tokio::time::interval(io.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut events_open = true;
    let send = |cmds: Vec<Command>, io: &LoopIo<S>| {
        for c in cmds {
            // The orchestrator stops listening only after the testbed is down.
            let _ = io.commands.send(c);
        }
    };
    loop {
        if dirty {
            let frame = terminal
                .draw(|f| app.draw(f))
                .map_err(|e| io::Error::other(e.to_string()))?;
            on_frame(app, frame.buffer);
            dirty = false;
        }
        if app.finished.is_some() {
            return Ok(());
        }
        tokio::select! {
            _ = io.teardown.cancelled(), if !app.status.quitting => {
                let cmds = app.dispatch(Action::Quit);
                send(cmds, &io);
                dirty = true;
            }
            ev = io.events.next(), if events_open => match ev {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                    if let Some(a) = app.handle_key(k) {
                        let cmds = app.dispatch(a);
                        send(cmds, &io);
                    }
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // The terminal is gone: nobody can press q, so tear down.
                    events_open = false;
                    if !app.status.quitting {
                        let cmds = app.dispatch(Action::Quit);
                        send(cmds, &io);
                    }
                }
            },
            u = io.updates.recv() => match u {
                Some(u) => {
                    app.apply(u, clock());
                    // Take whatever else is queued before drawing once.
                    while let Ok(u) = io.updates.try_recv() {
                        app.apply(u, clock());
                    }
                    dirty = true;
                }
                None => return Ok(()),
            },
            _ = tick.tick() => {
                app.tick(clock());
                dirty = true;
            }
        }
    }
}

/// The real terminal, in raw mode on the alternate screen, restored when dropped — on every
/// way out, an error or a panic included (ratatui's panic hook restores it before the message
/// prints).
pub struct TerminalGuard {
    pub terminal: ratatui::DefaultTerminal,
}

impl TerminalGuard {
    pub fn enter() -> io::Result<TerminalGuard> {
        // try_init installs the panic hook first, so a failure half-way is restored too.
        let terminal = ratatui::try_init()?;
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// The experiment files `e` offers: `experiments/*.toml` in the current folder, else beside
/// the topology's folder.
pub fn experiment_files(topology: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![std::path::PathBuf::from("experiments")];
    if let Some(d) = topology.parent().and_then(|p| p.parent()) {
        dirs.push(d.join("experiments"));
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut files: Vec<_> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            if !files.is_empty() {
                files.sort();
                return files;
            }
        }
    }
    Vec::new()
}
