//! The dashboard drawn on ratatui's TestBackend in each of its states, compared with the
//! snapshots committed under tests/snapshots/ (insta; `cargo insta review` or
//! `INSTA_UPDATE=always` to accept a change). The states are built from data alone — the
//! shipped two-server topology and synthetic agent reports at fixed times — so every frame is
//! deterministic. Plus the keys: what each one asks of the orchestrator.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use halab::state::HostState;
use halab::tui::action::{Command, FaultKey, Update};
use halab::tui::app::{App, key};
use halab::tui::demo;
use halab_protocol::{AgentMsg, ClientEvent, Role};
use halab_workload::ConnEvent;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use std::path::{Path, PathBuf};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// The dashboard's start on the console clock.
const T0: u64 = 100 * S;
/// When the primary is powered off.
const T_FAULT: u64 = T0 + 10 * S;
const CLIENT_RUN: u64 = 2;

fn topology() -> halab::topology::Topology {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/two-server.toml");
    halab::topology::load(&file).expect("the shipped topology is valid")
}

fn all_up() -> App {
    let topo = topology();
    let exps = vec![
        PathBuf::from("experiments/baseline-none.toml"),
        PathBuf::from("experiments/workloads-none.toml"),
    ];
    let mut app = App::new(&topo, demo::host_records(&topo), exps, T0);
    for (i, h) in topo.hosts.iter().enumerate() {
        let msg = AgentMsg::HostStats {
            cpu_pct: 10.0 + i as f64,
            mem_used_bytes: 1_300_000_000,
            mem_total_bytes: 8_000_000_000,
        };
        app.apply(
            Update::Agent {
                host: h.name.clone(),
                msg,
            },
            T0,
        );
    }
    app.apply(
        Update::RunStarted {
            host: "client".into(),
            run: CLIENT_RUN,
        },
        T0 + S,
    );
    app.apply(
        Update::Workload {
            running: true,
            detail: "bulk 20M on 1 client(s)".into(),
        },
        T0 + S,
    );
    // 500 MB/s until the fault.
    telemetry(&mut app, T0 + S, T_FAULT, 0, 50_000_000, vec![]);
    app.tick(T_FAULT);
    app
}

/// Telemetry of the client's run every 100 ms in [from, to), `step` more bytes each time
/// after `bytes`; `events` go with the first. Returns the byte count reached.
fn telemetry(
    app: &mut App,
    from: u64,
    to: u64,
    mut bytes: u64,
    step: u64,
    events: Vec<ClientEvent>,
) -> u64 {
    let mut events = Some(events);
    let mut t = from;
    while t < to {
        bytes += step;
        let msg = AgentMsg::ClientTelemetry {
            run: CLIENT_RUN,
            at_ns: t,
            bytes,
            events: events.take().unwrap_or_default(),
        };
        app.apply(
            Update::Agent {
                host: "client".into(),
                msg,
            },
            t,
        );
        t += 100 * MS;
    }
    bytes
}

fn primary_off_mid_failover() -> App {
    let mut app = all_up();
    let bytes = 50_000_000 * 90;
    app.apply(
        Update::PoweredOff {
            id: 7,
            host: "primary".into(),
            at_ns: T_FAULT,
        },
        T_FAULT,
    );
    let mut hosts = demo::host_records(&topology());
    hosts[0].state = HostState::PoweredOff;
    hosts[0].reason = Some("powered off".into());
    app.apply(Update::Hosts(hosts), T_FAULT + MS);
    // Nothing arrives for the client's idle timeout, then it gives up on the primary and
    // connects to the backup.
    telemetry(&mut app, T_FAULT + 100 * MS, T_FAULT + S, bytes, 0, vec![]);
    let events = vec![
        ClientEvent {
            connection: 0,
            at_ns: T_FAULT + S,
            event: ConnEvent::TimedOut,
        },
        ClientEvent {
            connection: 0,
            at_ns: T_FAULT + S + MS,
            event: ConnEvent::Reconnect {
                to: "10.10.0.2".into(),
            },
        },
    ];
    telemetry(
        &mut app,
        T_FAULT + S + 2 * MS,
        T_FAULT + S + 50 * MS,
        bytes,
        0,
        events,
    );
    app.tick(T_FAULT + S + 50 * MS);
    app
}

fn failover_finished() -> App {
    let mut app = primary_off_mid_failover();
    // The backup took over and said so: it is the primary and holds the service address; the
    // fenced primary is its backup to be.
    let mut hosts = demo::host_records(&topology());
    hosts[0].state = HostState::PoweredOff;
    hosts[0].reason = Some("powered off".into());
    hosts[0].roles = vec![Role::Backup];
    hosts[0].holds_service_address = false;
    hosts[1].roles = vec![Role::Primary];
    hosts[1].holds_service_address = true;
    app.apply(Update::Hosts(hosts), T_FAULT + S + 101 * MS);
    let resumed = telemetry(
        &mut app,
        T_FAULT + S + 102 * MS,
        T_FAULT + 2 * S,
        4_500_000_000,
        40_000_000,
        vec![],
    );
    let _ = resumed;
    let result = demo::bulk_result(
        9,
        20_000_000,
        T0 + S,
        T_FAULT + 2 * S,
        Some((T_FAULT + S, T_FAULT + S + MS, T_FAULT + S + 3 * MS)),
        1003.0,
    );
    app.apply(
        Update::Agent {
            host: "client".into(),
            msg: AgentMsg::ClientDone {
                run: CLIENT_RUN,
                result: Box::new(result),
            },
        },
        T_FAULT + 2 * S,
    );
    app.tick(T_FAULT + 4 * S);
    app
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| app.draw(f)).expect("draw");
    t
}

/// Draws one panel alone in a `w`×`h` area.
fn draw_panel(w: u16, h: u16, f: impl FnOnce(&mut ratatui::Frame, Rect)) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|frame| {
        let area = frame.area();
        f(frame, area)
    })
    .expect("draw");
    t
}

#[test]
fn whole_screen_all_up() {
    insta::assert_snapshot!(draw(&all_up(), 100, 30).backend());
}

#[test]
fn whole_screen_primary_powered_off_mid_failover() {
    insta::assert_snapshot!(draw(&primary_off_mid_failover(), 100, 30).backend());
}

#[test]
fn whole_screen_failover_finished() {
    insta::assert_snapshot!(draw(&failover_finished(), 100, 30).backend());
}

#[test]
fn whole_screen_at_80x24_mid_failover() {
    insta::assert_snapshot!(draw(&primary_off_mid_failover(), 80, 24).backend());
}

#[test]
fn whole_screen_at_160x40_failover_finished() {
    insta::assert_snapshot!(draw(&failover_finished(), 160, 40).backend());
}

#[test]
fn help_overlay() {
    let mut app = all_up();
    let a = app.handle_key(key('?')).unwrap();
    assert!(app.dispatch(a).is_empty());
    insta::assert_snapshot!(draw(&app, 100, 30).backend());
    // `?` again closes it.
    let a = app.handle_key(key('?')).unwrap();
    app.dispatch(a);
    assert!(!app.help.visible);
}

#[test]
fn terminal_too_small() {
    let app = failover_finished();
    insta::assert_snapshot!("too_small_79x24", draw(&app, 79, 24).backend());
    insta::assert_snapshot!("too_small_40x10", draw(&app, 40, 10).backend());
    // 80×24 is the smallest full dashboard.
    let t = draw(&app, 80, 24);
    let text = format!("{}", t.backend());
    assert!(!text.contains("terminal too small"));
    assert!(text.contains("failovers"));
}

#[test]
fn panels_alone_failover_finished() {
    let app = failover_finished();
    use halab::tui::components::Component;
    insta::assert_snapshot!(
        "panel_hosts",
        draw_panel(90, 7, |f, a| app.hosts.draw(f, a)).backend()
    );
    insta::assert_snapshot!(
        "panel_failovers",
        draw_panel(90, 5, |f, a| app.failovers.draw(f, a)).backend()
    );
    insta::assert_snapshot!(
        "panel_chart",
        draw_panel(90, 12, |f, a| app.chart.draw(f, a)).backend()
    );
    insta::assert_snapshot!(
        "panel_events",
        draw_panel(90, 9, |f, a| app.log.draw(f, a)).backend()
    );
    insta::assert_snapshot!(
        "panel_status",
        draw_panel(90, 2, |f, a| app.status.draw(f, a)).backend()
    );
}

#[test]
fn failover_row_settles_from_the_client_s_result() {
    let mid = primary_off_mid_failover();
    let row = &mid.failovers.rows[0];
    assert_eq!(row.label, "power-off primary");
    assert_eq!(row.detect_ms(), Some(1000.0));
    assert_eq!(row.takeover_ms(), Some(1001.0));
    assert_eq!(row.failover_ms(), None, "no byte from the backup yet");
    let done = failover_finished();
    let row = &done.failovers.rows[0];
    assert_eq!(row.state, halab::tui::components::failover::RowState::Done);
    assert_eq!(row.failover_ms(), Some(3.0 + 1000.0));
    let f = row.figures.as_ref().unwrap();
    assert!(f.integrity.integrity_ok);
    assert_eq!(f.stall_ms, Some(1003.0));
}

fn press(app: &mut App, k: KeyEvent) -> Vec<Command> {
    match app.handle_key(k) {
        Some(a) => app.dispatch(a),
        None => Vec::new(),
    }
}

#[test]
fn keys_ask_the_orchestrator_for_faults_on_the_selected_host() {
    let mut app = all_up();
    assert_eq!(press(&mut app, key('w')), vec![Command::ToggleWorkload]);
    assert_eq!(
        press(&mut app, key('p')),
        vec![Command::Fault {
            host: "primary".into(),
            fault: FaultKey::PowerOff
        }]
    );
    press(&mut app, KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    for (c, fault) in [
        ('k', FaultKey::Kill),
        ('h', FaultKey::Hang),
        ('c', FaultKey::Crash),
        ('n', FaultKey::NicDown),
        ('o', FaultKey::PowerOn),
        ('r', FaultKey::RevertAll),
    ] {
        assert_eq!(
            press(&mut app, key(c)),
            vec![Command::Fault {
                host: "backup".into(),
                fault
            }]
        );
    }
    // Loss asks for the percent; a bad one is refused in the prompt.
    assert!(press(&mut app, key('l')).is_empty());
    assert!(press(&mut app, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)).is_empty());
    press(&mut app, key('3'));
    press(&mut app, key('0'));
    insta::assert_snapshot!("loss_prompt", draw(&app, 100, 30).backend());
    assert_eq!(
        press(&mut app, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        vec![Command::Fault {
            host: "backup".into(),
            fault: FaultKey::Loss(30.0)
        }]
    );
    // Partition: pick the other host.
    assert!(press(&mut app, key('x')).is_empty());
    press(&mut app, KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    assert_eq!(
        press(&mut app, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        vec![Command::Fault {
            host: "backup".into(),
            fault: FaultKey::Partition("logger".into())
        }]
    );
    assert_eq!(press(&mut app, key('m')), vec![Command::SwitchMode]);
    assert!(press(&mut app, key('e')).is_empty());
    assert_eq!(
        press(&mut app, KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
        vec![Command::RunExperiment(PathBuf::from(
            "experiments/baseline-none.toml"
        ))]
    );
}

#[test]
fn quit_asks_first_while_faults_are_active() {
    let mut app = all_up();
    assert_eq!(
        press(&mut app, key('q')),
        vec![Command::Shutdown],
        "no fault: quits at once"
    );
    let mut app = primary_off_mid_failover();
    assert!(press(&mut app, key('q')).is_empty());
    insta::assert_snapshot!("confirm_quit", draw(&app, 100, 30).backend());
    assert!(press(&mut app, key('n')).is_empty());
    assert!(app.prompt.is_none());
    press(&mut app, key('q'));
    assert_eq!(press(&mut app, key('y')), vec![Command::Shutdown]);
    assert!(app.status.quitting);
    assert!(
        press(&mut app, key('w')).is_empty(),
        "keys are ignored while tearing down"
    );
}

#[test]
fn status_bar_while_switching_mode_and_when_a_mode_is_refused() {
    use halab::topology::Mode;
    use halab::tui::action::ModeView;
    use halab::tui::components::Component;
    let mut app = all_up();
    app.apply(
        Update::Mode(ModeView {
            current: Mode::StTcp,
            switching: Some(Mode::None),
            note: None,
        }),
        T_FAULT,
    );
    insta::assert_snapshot!(
        "status_switching",
        draw_panel(100, 2, |f, a| app.status.draw(f, a)).backend()
    );
    app.apply(
        Update::Mode(ModeView {
            current: Mode::None,
            switching: None,
            note: None,
        }),
        T_FAULT,
    );
    app.apply(
        Update::Mode(ModeView {
            current: Mode::None,
            switching: None,
            note: Some("app-migration: not runnable yet".into()),
        }),
        T_FAULT,
    );
    insta::assert_snapshot!(
        "status_mode_refused",
        draw_panel(100, 2, |f, a| app.status.draw(f, a)).backend()
    );
    assert!(
        app.log
            .lines
            .iter()
            .any(|(_, _, l)| l == "mode none active"),
        "{:?}",
        app.log.lines
    );
}

#[test]
fn a_client_host_powered_off_stops_the_rows_waiting_for_it() {
    use halab::tui::components::failover::RowState;
    let mut app = all_up();
    app.apply(
        Update::PoweredOff {
            id: 7,
            host: "primary".into(),
            at_ns: T_FAULT,
        },
        T_FAULT,
    );
    assert!(matches!(
        app.failovers.rows[0].state,
        RowState::Measuring(_)
    ));
    app.apply(
        Update::PoweredOff {
            id: 8,
            host: "client".into(),
            at_ns: T_FAULT + S,
        },
        T_FAULT + S,
    );
    assert_eq!(app.failovers.rows[0].state, RowState::Stopped);
    assert_eq!(app.failovers.rows[1].state, RowState::NoWorkload);
}
