//! Faults executed by the real agent binary inside real network namespaces, their effect checked
//! from outside: traffic between the faulted host `a` and its neighbours `b` (and `c`), links,
//! nftables tables, processes.
//!
//! Every test builds its own namespaces `hlt-flt-<test>-a`/`-b`(/`-c`), joined by veths on
//! 10.201.N.0/24 (a–b) and 10.202.N.0/24 (a–c), and removes them when it ends, pass or fail.
//! Traffic is UDP from sockets opened in the namespaces (by a thread that entered the
//! namespace with setns(2); a socket stays in the namespace it was created in).
//!
//! Needs root. Without it the tests print why and pass, unless `HALAB_REQUIRE_NETNS=1`, which
//! makes them fail instead.

#[path = "support/netns.rs"]
mod netns;

use halab_protocol::frame::{decode_payload, encode_frame};
use halab_protocol::{
    AgentMsg, ConsoleMsg, Direction, FaultAction, FrameDecoder, Role, RoleState, mono_ns,
};
use netns::{in_ns, must, netns_allowed, remove_namespace};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Namespaces

/// Host `a` with neighbour `b` (and optionally `c`), each in its own namespace. Removed on drop:
/// the processes in them killed first, then the namespaces (and with them their links and
/// nftables tables) deleted.
struct Testbed {
    net: u8,
    names: Vec<String>,
}

impl Testbed {
    fn new(test: &str, net: u8, with_c: bool) -> Testbed {
        let mut tb = Testbed {
            net,
            names: Vec::new(),
        };
        let hosts: &[&str] = if with_c {
            &["a", "b", "c"]
        } else {
            &["a", "b"]
        };
        for h in hosts {
            let ns = format!("hlt-flt-{test}-{h}");
            // A leftover of an earlier run that was killed goes first.
            remove_namespace(&ns);
            must(&["ip", "netns", "add", &ns]);
            tb.names.push(ns.clone());
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        tb.join("b", 201);
        if with_c {
            tb.join("c", 202);
        }
        tb
    }

    /// A veth from `a` to `peer` on 10.<subnet>.<net>.0/24: a is .1, the peer .2.
    fn join(&self, peer: &str, subnet: u8) {
        let (a, p) = (self.ns("a"), self.ns(peer));
        let (la, lp) = (self.link_to(peer), format!("hf{}a{subnet}", self.net));
        must(&[
            "ip", "link", "add", &la, "netns", &a, "type", "veth", "peer", "name", &lp, "netns", &p,
        ]);
        let n = self.net;
        must(&[
            "ip",
            "-n",
            &a,
            "addr",
            "add",
            &format!("10.{subnet}.{n}.1/24"),
            "dev",
            &la,
        ]);
        must(&[
            "ip",
            "-n",
            &p,
            "addr",
            "add",
            &format!("10.{subnet}.{n}.2/24"),
            "dev",
            &lp,
        ]);
        must(&["ip", "-n", &a, "link", "set", &la, "up"]);
        must(&["ip", "-n", &p, "link", "set", &lp, "up"]);
        // Linux activates a link asynchronously (and, with many links changing at once, up to
        // a second late): wait until both ends carry traffic.
        let start = Instant::now();
        while !(operational(&a, &la) && operational(&p, &lp)) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{la} never came up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ns(&self, host: &str) -> String {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{host}")))
            .unwrap_or_else(|| panic!("no host {host}"))
            .clone()
    }

    /// Name, in `a`, of the link towards `peer`.
    fn link_to(&self, peer: &str) -> String {
        format!("hf{}{peer}", self.net)
    }

    /// Address of `host` (`a` on the a–b link, `ac` on the a–c link, `b`, `c`).
    fn addr(&self, host: &str) -> String {
        let n = self.net;
        match host {
            "a" => format!("10.201.{n}.1"),
            "b" => format!("10.201.{n}.2"),
            "ac" => format!("10.202.{n}.1"),
            "c" => format!("10.202.{n}.2"),
            other => panic!("no address for {other}"),
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in &self.names {
            remove_namespace(ns);
        }
    }
}

/// A UDP socket in namespace `ns`, bound to `addr`.
fn udp(ns: &str, addr: &str) -> UdpSocket {
    let addr: SocketAddr = format!("{addr}:0").parse().unwrap();
    in_ns(ns, move || {
        let s = UdpSocket::bind(addr).expect("bind udp");
        // Room for every datagram of a measurement, however late the counting thread runs:
        // only the fault may drop datagrams. (SO_RCVBUFFORCE: root may exceed rmem_max.)
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt(2) on a socket we own, with an int option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        s
    })
}

/// Tags each measurement, so late datagrams of an earlier one are not counted.
static ROUND: AtomicU32 = AtomicU32::new(1);

/// Sends `n` numbered datagrams from `from` to `to` and returns how many arrived.
fn delivered(from: &UdpSocket, to: &UdpSocket, n: u32) -> u32 {
    let round = ROUND.fetch_add(1, Ordering::SeqCst);
    let dest = to.local_addr().unwrap();
    let rx = to.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let sent = Arc::new(AtomicBool::new(false));
    let done = sent.clone();
    let counter = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 64];
        let mut quiet_since: Option<Instant> = None;
        while seen.len() < n as usize {
            match rx.recv(&mut buf) {
                Ok(8) => {
                    let r = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    let i = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                    if r == round {
                        seen.insert(i);
                    }
                    quiet_since = None;
                }
                Ok(_) => {}
                Err(_) => {
                    // 300 ms without a datagram once everything is sent: the rest is lost.
                    if done.load(Ordering::SeqCst) {
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        if q.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                }
            }
        }
        seen.len() as u32
    });
    for i in 0..n {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&round.to_be_bytes());
        msg[4..].copy_from_slice(&i.to_be_bytes());
        // A downed link refuses to send (ENETUNREACH): that datagram is lost, as on the wire.
        let _ = from.send_to(&msg, dest);
        // Paced, so that no socket buffer overflows: only the fault may drop datagrams.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sent.store(true, Ordering::SeqCst);
    counter.join().unwrap()
}

/// Every one of 20 datagrams gets through from `from` to `to`, at once: a revert is reported
/// once the network carries traffic again.
fn assert_flows(from: &UdpSocket, to: &UdpSocket) {
    let got = delivered(from, to, 20);
    assert_eq!(
        got,
        20,
        "traffic {:?} -> {:?}: {got}/20 delivered",
        from.local_addr(),
        to.local_addr()
    );
}

/// Whether `link` in `ns` is administratively up.
fn link_up(ns: &str, link: &str) -> bool {
    let out = must(&["ip", "-n", ns, "-o", "link", "show", "dev", link]);
    let flags = out.split('<').nth(1).and_then(|s| s.split('>').next());
    flags
        .unwrap_or_else(|| panic!("no flags in {out}"))
        .split(',')
        .any(|f| f == "UP")
}

/// Whether `link` in `ns` carries traffic: carrier and operational state up.
fn operational(ns: &str, link: &str) -> bool {
    let out = must(&["ip", "-n", ns, "-o", "link", "show", "dev", link]);
    out.contains("LOWER_UP") && out.contains(" state UP ")
}

fn nft_tables(ns: &str) -> String {
    must(&["ip", "netns", "exec", ns, "nft", "list", "tables"])
        .trim()
        .to_string()
}

fn assert_no_tables(ns: &str) {
    let t = nft_tables(ns);
    assert!(t.is_empty(), "nftables tables left in {ns}: {t}");
}

// ---------------------------------------------------------------------------------------------
// The agent

/// A real `halab-agent` running in a namespace, driven over its stdin/stdout. Pinged every
/// second, so it never takes the test for a silent console. Killed on drop.
struct Agent {
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
    rx: mpsc::Receiver<AgentMsg>,
    /// Everything received, for failure messages.
    seen: Vec<AgentMsg>,
    /// Messages received while waiting for another, not yet matched by any `expect`.
    unclaimed: Vec<AgentMsg>,
}

impl Agent {
    fn start(ns: &str) -> Agent {
        Self::start_with(ns, &[], true)
    }

    fn start_with(ns: &str, env: &[(&str, &str)], ping: bool) -> Agent {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_halab-agent")])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start halab-agent");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut d = FrameDecoder::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                d.feed(&buf[..n]);
                while let Ok(Some(p)) = d.next_frame() {
                    let msg: AgentMsg = decode_payload(&p).expect("valid agent message");
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        });
        let stdin = Arc::new(Mutex::new(child.stdin.take()));
        let mut agent = Agent {
            child,
            stdin: stdin.clone(),
            rx,
            seen: Vec::new(),
            unclaimed: Vec::new(),
        };
        agent.send(&ConsoleMsg::Hello {
            console_version: "test".into(),
            testbed: "faults".into(),
            host: "a".into(),
            probe: false,
        });
        agent.expect("hello", Duration::from_secs(5), |m| {
            matches!(m, AgentMsg::Hello { .. })
        });
        if ping {
            std::thread::spawn(move || {
                for id in 1_000_000u64.. {
                    std::thread::sleep(Duration::from_secs(1));
                    let mut g = stdin.lock().unwrap();
                    let Some(w) = g.as_mut() else { return };
                    if w.write_all(&encode_frame(&ConsoleMsg::Ping { id }).unwrap())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        agent
    }

    fn send(&self, msg: &ConsoleMsg) {
        let mut g = self.stdin.lock().unwrap();
        g.as_mut()
            .expect("stdin open")
            .write_all(&encode_frame(msg).unwrap())
            .expect("write to agent");
    }

    /// The next message matching `pred` within `limit` (others are kept in `seen`).
    fn expect(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&AgentMsg) -> bool,
    ) -> AgentMsg {
        // A message that arrived while the test waited for another (a role's failure report
        // can overtake the fault's own answer) is claimed first.
        if let Some(i) = self.unclaimed.iter().position(&pred) {
            return self.unclaimed.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => {
                    self.seen.push(m.clone());
                    if pred(&m) {
                        return m;
                    }
                    self.unclaimed.push(m);
                }
                Err(_) => panic!(
                    "no {what} from the agent within {limit:?}; received: {:#?}",
                    self.seen
                        .iter()
                        .filter(|m| !matches!(m, AgentMsg::Pong { .. }))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Injects a fault: Ok((T_fault, detail)) or Err(error).
    fn inject(
        &mut self,
        id: u64,
        action: FaultAction,
        lease_ms: Option<u64>,
    ) -> Result<(u64, String), String> {
        self.send(&ConsoleMsg::InjectFault {
            id,
            action,
            lease_ms,
        });
        match self.expect("fault answer", Duration::from_secs(10), |m| {
            matches!(m, AgentMsg::FaultApplied { id: i, .. } | AgentMsg::FaultFailed { id: i, .. } if *i == id)
        }) {
            AgentMsg::FaultApplied { at_ns, detail, .. } => Ok((at_ns, detail)),
            AgentMsg::FaultFailed { error, .. } => Err(error),
            _ => unreachable!(),
        }
    }

    fn apply(&mut self, id: u64, action: FaultAction) -> (u64, String) {
        let before = mono_ns();
        let (at, detail) = self
            .inject(id, action.clone(), None)
            .unwrap_or_else(|e| panic!("{action:?} failed: {e}"));
        // T_fault is on the shared CLOCK_MONOTONIC, taken inside the exchange.
        assert!(
            before <= at && at <= mono_ns(),
            "T_fault {at} outside the exchange"
        );
        (at, detail)
    }

    /// Reverts fault `id`; returns the revert time.
    fn revert(&mut self, id: u64) -> u64 {
        self.send(&ConsoleMsg::RevertFault { id });
        match self.expect(
            "fault-reverted",
            Duration::from_secs(10),
            |m| matches!(m, AgentMsg::FaultReverted { id: i, .. } if *i == id),
        ) {
            AgentMsg::FaultReverted { at_ns, reason, .. } => {
                assert_eq!(reason, "requested");
                assert_clean(&self.seen);
                at_ns
            }
            _ => unreachable!(),
        }
    }

    /// Round trip with a ping: every answer to what was sent before has arrived.
    fn sync(&mut self, id: u64) -> Vec<AgentMsg> {
        let from = self.seen.len();
        self.send(&ConsoleMsg::Ping { id });
        self.expect(
            "pong",
            Duration::from_secs(5),
            |m| matches!(m, AgentMsg::Pong { id: i } if *i == id),
        );
        self.seen[from..].to_vec()
    }

    /// Waits for the agent to exit (within `limit`); returns the remaining messages.
    fn wait_exit(&mut self, limit: Duration) -> (Duration, Vec<AgentMsg>) {
        let start = Instant::now();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "agent did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = start.elapsed();
        // The reader thread ends at end of file; take what it decoded.
        let mut rest = Vec::new();
        while let Ok(m) = self.rx.recv_timeout(Duration::from_secs(1)) {
            rest.push(m);
        }
        assert_clean(&rest);
        (took, rest)
    }

    /// Closes the agent's stdin: the control channel ends.
    fn close(&mut self) -> (Duration, Vec<AgentMsg>) {
        drop(self.stdin.lock().unwrap().take());
        self.wait_exit(Duration::from_secs(2))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        drop(self.stdin.lock().map(|mut g| g.take()));
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn reverted_with(msgs: &[AgentMsg], id: u64, reason: &str) -> bool {
    msgs.iter().any(
        |m| matches!(m, AgentMsg::FaultReverted { id: i, reason: r, .. } if *i == id && r == reason),
    )
}

/// No revert reported a problem (the agent logs an incomplete revert as an error).
fn assert_clean(msgs: &[AgentMsg]) {
    for m in msgs {
        if let AgentMsg::Log { message, .. } = m {
            assert!(!message.contains("revert incomplete"), "{message}");
        }
    }
}

fn loss_rate(got: u32, n: u32) -> f64 {
    f64::from(n - got) / f64::from(n)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn nic_down_stops_traffic_both_ways_and_revert_restores_links_addresses_and_routes() {
    if !netns_allowed("nic_down") {
        return;
    }
    let tb = Testbed::new("nic", 1, false);
    let (a, b, link) = (tb.ns("a"), tb.ns("b"), tb.link_to("b"));
    // What Linux forgets on link down: a gateway route and a static IPv6 address.
    must(&[
        "ip",
        "-n",
        &a,
        "route",
        "add",
        "10.99.1.0/24",
        "via",
        &tb.addr("b"),
    ]);
    must(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        "fd42:1::1/64",
        "dev",
        &link,
        "nodad",
    ]);
    let sa = udp(&a, &tb.addr("a"));
    let sb = udp(&b, &tb.addr("b"));
    assert_eq!(delivered(&sb, &sa, 20), 20);
    assert_eq!(delivered(&sa, &sb, 20), 20);

    let mut agent = Agent::start(&a);
    let (_, detail) = agent.apply(
        1,
        FaultAction::NicDown {
            interface: Some(link.clone()),
        },
    );
    assert!(detail.contains(&link), "{detail}");
    assert!(!link_up(&a, &link));
    assert_eq!(delivered(&sb, &sa, 50), 0, "b -> a while the link is down");
    assert_eq!(delivered(&sa, &sb, 50), 0, "a -> b while the link is down");
    assert!(!must(&["ip", "-n", &a, "route"]).contains("10.99.1.0/24"));

    agent.revert(1);
    assert!(link_up(&a, &link));
    assert_flows(&sb, &sa);
    assert_flows(&sa, &sb);
    let routes = must(&["ip", "-n", &a, "route"]);
    assert!(routes.contains("10.99.1.0/24 via"), "{routes}");
    assert!(
        routes.contains(&format!("10.201.1.0/24 dev {link}")),
        "{routes}"
    );
    let addrs = must(&["ip", "-n", &a, "addr", "show", "dev", &link]);
    assert!(addrs.contains("fd42:1::1/64"), "{addrs}");
    assert_no_tables(&a);

    // Reverting again is harmless and answered by nothing.
    agent.send(&ConsoleMsg::RevertFault { id: 1 });
    let between = agent.sync(7);
    assert!(!reverted_with(&between, 1, "requested"), "{between:?}");

    // Every link but lo, and an unknown interface refused.
    agent.apply(2, FaultAction::NicDown { interface: None });
    assert!(!link_up(&a, &link) && link_up(&a, "lo"));
    let err = agent
        .inject(
            3,
            FaultAction::NicDown {
                interface: Some("nosuch0".into()),
            },
            None,
        )
        .unwrap_err();
    assert!(err.contains("nosuch0"), "{err}");
    agent.revert(2);
    assert!(link_up(&a, &link));
    assert_flows(&sb, &sa);
    let (_, rest) = agent.close();
    assert!(rest.iter().any(|m| matches!(m, AgentMsg::Bye { .. })));
}

#[test]
fn loss_drops_its_share_in_the_chosen_direction() {
    if !netns_allowed("loss") {
        return;
    }
    let tb = Testbed::new("loss", 2, false);
    let (a, b) = (tb.ns("a"), tb.ns("b"));
    let sa = udp(&a, &tb.addr("a"));
    let sb = udp(&b, &tb.addr("b"));
    assert_eq!(delivered(&sb, &sa, 20), 20);
    assert_eq!(delivered(&sa, &sb, 20), 20);
    // A leftover of an agent killed with SIGKILL, under the name the next fault 1 uses: replaced,
    // not merged into.
    let nft = |script: &str| {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &a, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    nft("table inet halab_fault_1 {\n chain stale {\n }\n}\n");
    let mut agent = Agent::start(&a);

    let n = 2000;
    agent.apply(
        1,
        FaultAction::Loss {
            percent: 30.0,
            direction: Direction::Both,
        },
    );
    let table = must(&[
        "ip",
        "netns",
        "exec",
        &a,
        "nft",
        "list",
        "table",
        "inet",
        "halab_fault_1",
    ]);
    assert!(
        table.contains("numgen random mod 10000 < 3000 drop"),
        "{table}"
    );
    assert!(!table.contains("stale"), "{table}");
    for (from, to, what) in [(&sb, &sa, "b -> a"), (&sa, &sb, "a -> b")] {
        let lost = loss_rate(delivered(from, to, n), n);
        assert!((0.25..=0.35).contains(&lost), "{what}: {lost:.3} lost");
    }
    agent.revert(1);
    assert_no_tables(&a);
    assert_eq!(delivered(&sb, &sa, n), n, "no loss after the revert");

    // In only: what a sends is untouched.
    agent.apply(
        2,
        FaultAction::Loss {
            percent: 30.0,
            direction: Direction::In,
        },
    );
    let lost = loss_rate(delivered(&sb, &sa, n), n);
    assert!((0.25..=0.35).contains(&lost), "in: {lost:.3} lost");
    assert_eq!(delivered(&sa, &sb, 500), 500, "out is not lossy");
    agent.revert(2);
    assert_no_tables(&a);

    // Out only, with a fractional percentage.
    agent.apply(
        3,
        FaultAction::Loss {
            percent: 30.5,
            direction: Direction::Out,
        },
    );
    let lost = loss_rate(delivered(&sa, &sb, n), n);
    assert!((0.255..=0.355).contains(&lost), "out: {lost:.3} lost");
    assert_eq!(delivered(&sb, &sa, 500), 500, "in is not lossy");
    agent.revert(3);
    assert_no_tables(&a);
    assert_eq!(delivered(&sa, &sb, n), n, "no loss after the revert");

    let err = agent
        .inject(
            4,
            FaultAction::Loss {
                percent: 130.0,
                direction: Direction::In,
            },
            None,
        )
        .unwrap_err();
    assert!(err.contains("130"), "{err}");
    assert_no_tables(&a);
    agent.close();
}

#[test]
fn partition_cuts_only_the_named_peer() {
    if !netns_allowed("partition") {
        return;
    }
    let tb = Testbed::new("part", 3, true);
    let (a, b, c) = (tb.ns("a"), tb.ns("b"), tb.ns("c"));
    let sab = udp(&a, &tb.addr("a"));
    let sac = udp(&a, &tb.addr("ac"));
    let sb = udp(&b, &tb.addr("b"));
    let sc = udp(&c, &tb.addr("c"));
    for (from, to) in [(&sb, &sab), (&sab, &sb), (&sc, &sac), (&sac, &sc)] {
        assert_eq!(delivered(from, to, 20), 20);
    }
    let mut agent = Agent::start(&a);
    let (_, detail) = agent.apply(
        1,
        FaultAction::Partition {
            peers: vec![tb.addr("b")],
        },
    );
    assert!(detail.contains(&tb.addr("b")), "{detail}");
    assert_eq!(delivered(&sb, &sab, 50), 0, "b -> a across the partition");
    assert_eq!(delivered(&sab, &sb, 50), 0, "a -> b across the partition");
    assert_eq!(delivered(&sc, &sac, 50), 50, "c -> a is not partitioned");
    assert_eq!(delivered(&sac, &sc, 50), 50, "a -> c is not partitioned");

    agent.revert(1);
    assert_no_tables(&a);
    assert_eq!(delivered(&sb, &sab, 50), 50);
    assert_eq!(delivered(&sab, &sb, 50), 50);

    // A network works as a peer too; a name does not.
    agent.apply(
        2,
        FaultAction::Partition {
            peers: vec![format!("10.202.{}.77/24", tb.net)],
        },
    );
    assert_eq!(delivered(&sc, &sac, 50), 0);
    assert_eq!(delivered(&sb, &sab, 50), 50);
    agent.revert(2);
    assert_no_tables(&a);
    assert_eq!(delivered(&sc, &sac, 50), 50);
    let err = agent
        .inject(
            3,
            FaultAction::Partition {
                peers: vec!["host-b".into()],
            },
            None,
        )
        .unwrap_err();
    assert!(err.contains("host-b"), "{err}");
    assert_no_tables(&a);
    agent.close();
}

#[test]
fn an_expired_lease_reverts_by_itself() {
    if !netns_allowed("lease") {
        return;
    }
    let tb = Testbed::new("lease", 4, false);
    let (a, b, link) = (tb.ns("a"), tb.ns("b"), tb.link_to("b"));
    let sa = udp(&a, &tb.addr("a"));
    let sb = udp(&b, &tb.addr("b"));
    assert_eq!(delivered(&sb, &sa, 20), 20);
    let mut agent = Agent::start(&a);

    let (applied, _) = agent
        .inject(1, FaultAction::NicDown { interface: None }, Some(300))
        .expect("nic-down applied");
    let sent_at = Instant::now();
    assert_eq!(
        delivered(&sb, &sa, 20),
        0,
        "the link is down during the lease"
    );
    let m = agent.expect("lease expiry", Duration::from_secs(2), |m| {
        matches!(m, AgentMsg::FaultReverted { id: 1, .. })
    });
    let AgentMsg::FaultReverted { at_ns, reason, .. } = m else {
        unreachable!()
    };
    assert_eq!(reason, "lease expired");
    let lease = Duration::from_nanos(at_ns - applied);
    assert!(
        lease >= Duration::from_millis(300) && lease < Duration::from_millis(600),
        "reverted {lease:?} after it was applied"
    );
    assert!(sent_at.elapsed() < Duration::from_secs(2));
    assert!(link_up(&a, &link));
    assert_flows(&sb, &sa);

    // A loss fault with a lease, reverted by request before it runs out: nothing more comes.
    agent
        .inject(
            2,
            FaultAction::Loss {
                percent: 100.0,
                direction: Direction::In,
            },
            Some(400),
        )
        .unwrap();
    agent.revert(2);
    assert_no_tables(&a);
    std::thread::sleep(Duration::from_millis(600));
    let after = agent.sync(9);
    assert!(
        !after
            .iter()
            .any(|m| matches!(m, AgentMsg::FaultReverted { .. })),
        "{after:?}"
    );
    agent.close();
}

#[test]
fn every_way_out_of_the_agent_reverts_its_faults() {
    if !netns_allowed("channel_close") {
        return;
    }
    let tb = Testbed::new("close", 5, false);
    let (a, b, link) = (tb.ns("a"), tb.ns("b"), tb.link_to("b"));
    let sa = udp(&a, &tb.addr("a"));
    let sb = udp(&b, &tb.addr("b"));
    assert_eq!(delivered(&sb, &sa, 20), 20);

    // End of stdin (the console is gone): loss 100 and nic-down, both undone within 2 s.
    let mut agent = Agent::start(&a);
    agent.apply(
        1,
        FaultAction::Loss {
            percent: 100.0,
            direction: Direction::Both,
        },
    );
    assert_eq!(delivered(&sb, &sa, 20), 0);
    agent.apply(2, FaultAction::NicDown { interface: None });
    assert!(!link_up(&a, &link));
    let (took, rest) = agent.close();
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert!(reverted_with(&rest, 1, "channel closed"), "{rest:?}");
    assert!(reverted_with(&rest, 2, "channel closed"), "{rest:?}");
    assert!(
        matches!(rest.last(), Some(AgentMsg::Bye { .. })),
        "{rest:?}"
    );
    assert_no_tables(&a);
    assert!(link_up(&a, &link));
    assert_flows(&sb, &sa);
    drop(agent);

    // SIGTERM.
    let mut agent = Agent::start(&a);
    agent.apply(
        1,
        FaultAction::Loss {
            percent: 100.0,
            direction: Direction::In,
        },
    );
    // SAFETY: kill(2) of the agent this test started (`ip netns exec` execs it: same pid).
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let (_, rest) = agent.wait_exit(Duration::from_secs(2));
    assert!(reverted_with(&rest, 1, "channel closed"), "{rest:?}");
    assert_no_tables(&a);
    drop(agent);

    // A console that falls silent (half-open channel): stdin stays open, nothing comes.
    let mut agent = Agent::start_with(&a, &[("HALAB_AGENT_SILENCE_MS", "400")], false);
    agent.apply(2, FaultAction::NicDown { interface: None });
    let (_, rest) = agent.wait_exit(Duration::from_secs(3));
    assert!(reverted_with(&rest, 2, "channel closed"), "{rest:?}");
    assert!(link_up(&a, &link));

    // A protocol error.
    let mut agent = Agent::start(&a);
    agent.apply(
        3,
        FaultAction::Partition {
            peers: vec![tb.addr("b")],
        },
    );
    agent
        .stdin
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .write_all(b"garbage that is no frame")
        .unwrap();
    let (_, rest) = agent.wait_exit(Duration::from_secs(2));
    assert!(reverted_with(&rest, 3, "channel closed"), "{rest:?}");
    assert!(
        matches!(rest.last(), Some(AgentMsg::Error { .. })),
        "{rest:?}"
    );
    assert_no_tables(&a);
    assert_flows(&sb, &sa);
}

// ---------------------------------------------------------------------------------------------
// Delay: netem where the kernel has it and only egress is asked for, else the agent's own delay
// line (NFQUEUE). This kernel (the lab's) has no netem, so these tests run the delay line.

fn delay(delay_ms: u64, jitter_ms: u64, interface: &str, direction: Direction) -> FaultAction {
    FaultAction::Delay {
        delay_ms,
        jitter_ms,
        interface: Some(interface.to_string()),
        direction,
    }
}

/// The round-trip times, in ms, of `n` pings from `ns` to `addr`, 10 ms apart. Every ping must
/// be answered: a delay line drops nothing at this rate.
///
/// `-U` (user-to-user times): by default ping takes a reply's arrival from the kernel's receive
/// stamp, which the kernel puts on a packet as the device hands it over, before PREROUTING and
/// so before an ingress delay line; it would not see the delay of the reply's way in.
fn ping_rtts(ns: &str, addr: &str, n: u32) -> Vec<f64> {
    let count = n.to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-U", "-c", &count, "-i", "0.01", "-W", "2", addr,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run ping (package iputils-ping): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(
        rtts.len(),
        n as usize,
        "{n} pings, {} answers: {text}{}",
        rtts.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    rtts.sort_by(f64::total_cmp);
    rtts
}

/// Nearest-rank quantile of sorted values.
/// The tests that measure time (the delay and jitter RTTs) and the one that loads both cores
/// (iperf3 through a delayed link) hold this while they run: on a 2-core machine the iperf3
/// run makes the delay line's threads wake late, which is the scheduler, not the line.
static TIMING: Mutex<()> = Mutex::new(());

fn timing_alone() -> std::sync::MutexGuard<'static, ()> {
    // A test that panicked while holding the lock leaves nothing behind that the next needs.
    TIMING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Rules that queue packets, in `ns`, both families, both tables a delay line uses (`mangle`
/// for a fault, `raw` for a link's own delay).
fn queue_rules(ns: &str) -> String {
    ["iptables", "ip6tables"]
        .iter()
        .flat_map(|p| ["mangle", "raw"].map(|t| (p, t)))
        .flat_map(|(p, table)| {
            must(&["ip", "netns", "exec", ns, p, "-w", "5", "-t", table, "-S"])
                .lines()
                .filter(|l| l.contains("NFQUEUE"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Queues with a listener in `ns`, as the kernel lists them.
fn bound_queues(ns: &str) -> String {
    must(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        "/proc/net/netfilter/nfnetlink_queue",
    ])
    .trim()
    .to_string()
}

/// Nothing of a delay line left in `ns`: no rule, no queue listener, no qdisc.
fn assert_no_delay_left(ns: &str) {
    let rules = queue_rules(ns);
    assert!(rules.is_empty(), "queue rules left in {ns}: {rules}");
    let queues = bound_queues(ns);
    assert!(queues.is_empty(), "queue listeners left in {ns}: {queues}");
    let q = must(&["ip", "netns", "exec", ns, "tc", "qdisc", "show"]);
    assert!(!q.contains("netem"), "{q}");
}

/// The figure after `key` in the delay line's report of direction `way` ("in", "out"), from
/// the agent's log of the revert: `out (NFQUEUE 19000): 200 packets (19600 bytes) delayed,
/// peak 98 bytes held, 0 dropped by the full line, 0 by the kernel queue, ...`.
fn line_figure(agent: &Agent, way: &str, key: &str) -> u64 {
    let report = agent
        .seen
        .iter()
        .rev()
        .find_map(|m| match m {
            AgentMsg::Log { message, .. } if message.contains("delay line removed") => {
                Some(message.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no delay line report in {:?}", agent.seen));
    let part = report
        .split(&format!("{way} (NFQUEUE "))
        .nth(1)
        .unwrap_or_else(|| panic!("no {way} direction in {report}"));
    let words: Vec<&str> = part
        .split([' ', ',', '(', ')'])
        .filter(|w| !w.is_empty())
        .collect();
    let at = words
        .windows(key.split(' ').count())
        .position(|w| w.join(" ") == key)
        .unwrap_or_else(|| panic!("no `{key}` in {part}"));
    // The figure is the word before the key ("0 dropped by"), or after it ("peak 98 bytes").
    let before = at.checked_sub(1).and_then(|i| words[i].parse().ok());
    let after = words
        .get(at + key.split(' ').count())
        .and_then(|w| w.parse().ok());
    before
        .or(after)
        .unwrap_or_else(|| panic!("no figure at `{key}` in {part}"))
}

/// A 20 ms delay on one end of a veth pair, on the agent's host `a`, pinged from `a`:
/// - direction out: the echo request waits 20 ms leaving `a`, the reply enters `a` undelayed,
///   so the RTT is 20 ms plus the pair's own (~0.05 ms): p50 in [20, 21] ms, and no ping under
///   20 ms (no packet leaves early);
/// - direction both (Mininet's link delay): the request waits leaving, the reply entering:
///   40 ms, p50 in [40, 41] ms; this is issue 15's client link of 20 ms seen from the client.
///
/// RTTs are ping's user-to-user times (see [`ping_rtts`]), a few µs more than the wire's.
///
/// Each is gone with its revert (p50 back under 1 ms, no rule, no queue listener), and with
/// the end of the agent's control channel (the dead-man switch), within 2 s.
#[test]
fn delay_adds_its_time_per_direction_crossed_and_goes_with_its_revert() {
    if !netns_allowed("delay") {
        return;
    }
    let _alone = timing_alone();
    let tb = Testbed::new("dly", 8, false);
    let (a, link, b_addr) = (tb.ns("a"), tb.link_to("b"), tb.addr("b"));
    let base = ping_rtts(&a, &b_addr, 50);
    assert!(quantile(&base, 0.5) < 1.0, "undelayed RTT {base:?}");

    let mut agent = Agent::start(&a);
    let (_, detail) = agent.apply(1, delay(20, 0, &link, Direction::Out));
    assert!(detail.contains("20 ms"), "{detail}");
    let rtts = ping_rtts(&a, &b_addr, 200);
    let p50 = quantile(&rtts, 0.5);
    eprintln!(
        "delay out 20 ms: RTT min {:.3} p50 {p50:.3} p99 {:.3} max {:.3} ms ({detail})",
        rtts[0],
        quantile(&rtts, 0.99),
        rtts[rtts.len() - 1]
    );
    assert!((20.0..=21.0).contains(&p50), "p50 {p50}: {rtts:?}");
    assert!(rtts[0] >= 20.0, "a ping under the delay: {rtts:?}");
    agent.revert(1);
    assert!(quantile(&ping_rtts(&a, &b_addr, 50), 0.5) < 1.0);
    assert_no_delay_left(&a);
    let delayed = line_figure(&agent, "out", "packets");
    assert!(delayed >= 200, "{delayed} packets delayed");

    let (_, detail) = agent.apply(2, delay(20, 0, &link, Direction::Both));
    assert!(detail.contains("delay line"), "{detail}");
    // A second delay of the same link and direction would not add up: refused.
    let err = agent
        .inject(3, delay(5, 0, &link, Direction::In), None)
        .unwrap_err();
    assert!(err.contains("already delays"), "{err}");
    let rtts = ping_rtts(&a, &b_addr, 200);
    let p50 = quantile(&rtts, 0.5);
    eprintln!(
        "delay both 20 ms: RTT min {:.3} p50 {p50:.3} p99 {:.3} max {:.3} ms",
        rtts[0],
        quantile(&rtts, 0.99),
        rtts[rtts.len() - 1]
    );
    assert!((40.0..=41.0).contains(&p50), "p50 {p50}: {rtts:?}");
    assert!(rtts[0] >= 40.0, "a ping under the delay: {rtts:?}");
    // The console goes away: the agent reverts on its way out.
    let (took, rest) = agent.close();
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert!(reverted_with(&rest, 2, "channel closed"), "{rest:?}");
    assert_no_delay_left(&a);
    assert!(quantile(&ping_rtts(&a, &b_addr, 50), 0.5) < 1.0);
}

/// 20 ms ± 5 ms (uniform, netem's default) on `a`'s egress: each RTT is 20 ms + U(−5, +5) ms
/// plus the pair's own and the release's lateness (tenths of a ms). Over 200 pings the test
/// expects, with tolerances over four standard errors wide (a uniform quantile's estimate at
/// n = 200 has a standard error of 0.21 ms at p10 and p90 and 0.35 ms at p50, the deviation's
/// 0.1 ms):
/// - every RTT at least 15 ms (no packet leaves before its draw), at most 5 % above 27 ms
///   (2 ms allowed for lateness, more only for a late wake-up);
/// - p10 16 ± 1 ms, p50 20 ± 1.5 ms, p90 24 ± 1 ms;
/// - standard deviation 5/√3 = 2.89 ± 0.5 ms.
#[test]
fn delay_jitter_spreads_the_rtt_as_its_distribution() {
    if !netns_allowed("delay_jitter") {
        return;
    }
    let _alone = timing_alone();
    let tb = Testbed::new("jit", 9, false);
    let (a, link, b_addr) = (tb.ns("a"), tb.link_to("b"), tb.addr("b"));
    let mut agent = Agent::start(&a);
    let (_, detail) = agent.apply(1, delay(20, 5, &link, Direction::Out));
    assert!(detail.contains("± 5 ms"), "{detail}");
    let rtts = ping_rtts(&a, &b_addr, 200);
    agent.revert(1);
    assert_no_delay_left(&a);
    let n = rtts.len() as f64;
    let mean = rtts.iter().sum::<f64>() / n;
    let sd = (rtts.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let (p10, p50, p90) = (
        quantile(&rtts, 0.1),
        quantile(&rtts, 0.5),
        quantile(&rtts, 0.9),
    );
    eprintln!(
        "delay 20 ± 5 ms: RTT min {:.3} p10 {p10:.3} p50 {p50:.3} p90 {p90:.3} max {:.3} sd \
         {sd:.3} ms",
        rtts[0],
        rtts[rtts.len() - 1]
    );
    // No packet leaves before its 20 − 5 ms; above 20 + 5 ms (+ 2 ms of wake-ups) only the
    // scheduler's late wake-ups on this shared machine, which other test binaries still load:
    // at most 5 % of the pings (a line that ignored the jitter's bound would put 20 % there).
    assert!(rtts[0] >= 15.0, "{rtts:?}");
    let late = rtts.iter().filter(|r| **r > 27.0).count();
    assert!(late <= 10, "{late} of 200 RTTs above 27 ms: {rtts:?}");
    assert!((15.0..=17.0).contains(&p10), "p10 {p10}");
    assert!((18.5..=21.5).contains(&p50), "p50 {p50}");
    assert!((23.0..=25.0).contains(&p90), "p90 {p90}");
    assert!((2.39..=3.39).contains(&sd), "sd {sd}");
    agent.close();
}

/// iperf3 from `b` to the agent's host `a`, `b`'s link rate-limited to 100 Mbit/s by tbf:
/// - 50 ms each way on `a`'s link (RTT 100 ms: a bandwidth-delay product of 1.25 MB at
///   100 Mbit/s, the data waiting in the ingress line, the ACKs in the egress one);
/// - 100 ms on `a`'s ingress alone (the same product, all of it data in one line).
///
/// Each moves at least 80 Mbit/s (iperf3's receiver, the first 2 s of slow start left out), and
/// the lines drop nothing; the second holds at least 1 MB at its peak.
#[test]
fn a_delayed_link_carries_its_bandwidth_delay_product() {
    if !netns_allowed("delay_bdp") {
        return;
    }
    let _alone = timing_alone();
    let tb = Testbed::new("bdp", 10, false);
    let (a, b, link) = (tb.ns("a"), tb.ns("b"), tb.link_to("b"));
    let b_link = format!("hf{}a201", tb.net);
    must(&[
        "ip", "netns", "exec", &b, "tc", "qdisc", "add", "dev", &b_link, "root", "tbf", "rate",
        "100mbit", "burst", "32kbit", "latency", "400ms",
    ]);
    let a_addr = tb.addr("a");
    let mut agent = Agent::start(&a);
    for (id, fault, way) in [
        (1, delay(50, 0, &link, Direction::Both), "in"),
        (2, delay(100, 0, &link, Direction::In), "in"),
    ] {
        let mut server = Command::new("ip")
            .args([
                "netns", "exec", &a, "iperf3", "-s", "-1", "-B", &a_addr, "-p", "5201",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server");
        let start = Instant::now();
        while must(&["ip", "netns", "exec", &a, "ss", "-Hltn", "sport = :5201"])
            .trim()
            .is_empty()
        {
            assert!(start.elapsed() < Duration::from_secs(5), "no iperf3 server");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, detail) = agent.apply(id, fault);
        let out = must(&[
            "ip", "netns", "exec", &b, "iperf3", "-c", &a_addr, "-p", "5201", "-t", "10", "-O",
            "2", "-J",
        ]);
        let _ = server.wait();
        let json: serde_json::Value = serde_json::from_str(&out).expect("iperf3 -J output");
        let mbit = json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("received rate")
            / 1e6;
        let retransmits = json["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        agent.revert(id);
        assert_no_delay_left(&a);
        let line_drops = line_figure(&agent, way, "dropped by")
            + line_figure(&agent, way, "by the kernel queue");
        let peak = line_figure(&agent, way, "peak");
        eprintln!(
            "iperf3 through {detail}: {mbit:.1} Mbit/s, {retransmits} retransmits, the {way} \
             line's peak {peak} bytes, {line_drops} dropped"
        );
        assert!(mbit >= 80.0, "{mbit} Mbit/s through {detail}");
        assert_eq!(line_drops, 0, "the line dropped packets");
        if id == 2 {
            assert!(peak >= 1_000_000, "peak {peak} bytes held");
        }
    }
    agent.close();
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Waits (up to 2 s) until `pred` holds for the state of process `pid`: a signal is delivered
/// when the target next runs, after kill(2) returned.
fn wait_state(pid: u32, what: &str, pred: impl Fn(Option<char>) -> bool) {
    let start = Instant::now();
    while !pred(proc_state(pid)) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "process {pid} not {what}: state {:?}",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn server_pid(m: &AgentMsg) -> u32 {
    match m {
        AgentMsg::RoleState {
            detail: Some(d), ..
        } => d
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {d}")),
        other => panic!("not a role state with a pid: {other:?}"),
    }
}

fn connects(ns: &str, addr: &str) -> bool {
    let addr: SocketAddr = format!("{addr}:{}", halab_protocol::WORKLOAD_PORT)
        .parse()
        .unwrap();
    in_ns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    })
}

#[test]
fn process_faults_revert_by_resuming_or_restarting_the_role() {
    if !netns_allowed("process") {
        return;
    }
    let tb = Testbed::new("proc", 7, false);
    let (a, b) = (tb.ns("a"), tb.ns("b"));
    let mut agent = Agent::start(&a);
    agent.send(&ConsoleMsg::StartRole {
        role: Role::Primary,
        mode: Default::default(),
        request: None,
    });
    let running = |m: &AgentMsg| {
        matches!(
            m,
            AgentMsg::RoleState {
                role: Role::Primary,
                state: RoleState::Running,
                ..
            }
        )
    };
    let pid = server_pid(&agent.expect("primary running", Duration::from_secs(10), running));
    assert!(connects(&b, &tb.addr("a")));

    // Hang: the process is stopped, and continued by the revert.
    let (_, detail) = agent.apply(
        1,
        FaultAction::ProcessHang {
            role: Role::Primary,
        },
    );
    assert!(detail.contains(&pid.to_string()), "{detail}");
    wait_state(pid, "stopped", |s| s == Some('T'));
    agent.revert(1);
    wait_state(pid, "running again", |s| s.is_some() && s != Some('T'));

    // Kill: the process is gone, the role fails; the revert starts it again.
    agent.apply(
        2,
        FaultAction::ProcessKill {
            role: Role::Primary,
        },
    );
    agent.expect("primary failed", Duration::from_secs(5), |m| {
        matches!(
            m,
            AgentMsg::RoleState {
                role: Role::Primary,
                state: RoleState::Failed,
                ..
            }
        )
    });
    assert!(
        !connects(&b, &tb.addr("a")),
        "nothing listens after the kill"
    );
    agent.revert(2);
    let again = server_pid(&agent.expect("primary restarted", Duration::from_secs(10), running));
    assert_ne!(again, pid);
    assert!(connects(&b, &tb.addr("a")));

    // Crash (SIGTERM), reverted at once: the revert waits for the old process to end.
    agent.apply(
        3,
        FaultAction::ProcessCrash {
            role: Role::Primary,
        },
    );
    agent.revert(3);
    let third = server_pid(&agent.expect("primary restarted", Duration::from_secs(10), running));
    assert_ne!(third, again);
    assert!(connects(&b, &tb.addr("a")));

    // A role without a process cannot be killed.
    let err = agent
        .inject(4, FaultAction::ProcessKill { role: Role::Backup }, None)
        .unwrap_err();
    assert!(err.contains("backup"), "{err}");

    // A hang still held when the channel closes: the process is stopped with its role.
    agent.apply(
        5,
        FaultAction::ProcessHang {
            role: Role::Primary,
        },
    );
    let (_, rest) = agent.close();
    assert!(reverted_with(&rest, 5, "channel closed"), "{rest:?}");
    wait_state(third, "gone", |s| s.is_none());
}
