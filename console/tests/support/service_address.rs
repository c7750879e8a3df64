//! Who holds the service address, read from the host namespaces themselves (`ip -n … addr`),
//! not from what the console believes: the check behind "never two hosts answering for the
//! service address" (issue 13).

use std::process::Command;

/// One host's IPv4 addresses: (interface, address without prefix, interface up).
pub fn addresses(ns: &str) -> Vec<(String, String, bool)> {
    let read = |up_only: bool| -> Vec<(String, String)> {
        let mut args = vec!["-n", ns, "-4", "-o", "addr", "show"];
        if up_only {
            args.push("up");
        }
        let Ok(out) = Command::new("ip").args(&args).output() else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                // "3: service    inet 10.10.0.100/24 scope global secondary service\ ..."
                let t: Vec<&str> = l.split_whitespace().collect();
                let i = t.iter().position(|w| *w == "inet")?;
                let addr = t.get(i + 1)?.split('/').next()?.to_string();
                Some((t.get(1)?.to_string(), addr))
            })
            .collect()
    };
    let up = read(true);
    read(false)
        .into_iter()
        .map(|(dev, addr)| {
            let is_up = up.iter().any(|(d, a)| *d == dev && *a == addr);
            (dev, addr, is_up)
        })
        .collect()
}

/// What every host namespace of testbed `testbed` (provider local) holds of `addr`:
/// (host, on an interface that is up).
pub fn holders(testbed: &str, hosts: &[&str], addr: &str) -> Vec<(String, bool)> {
    hosts
        .iter()
        .flat_map(|h| {
            let ns = halab::provider::local::host_ns(testbed, h);
            addresses(&ns)
                .into_iter()
                .filter(|(_, a, _)| a == addr)
                .map(|(_, _, up)| (h.to_string(), up))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The hosts that hold `addr`, on any interface, up or down: a powered-off host has no address
/// (the power-off takes it away, as a machine that is off has none), and a host powered on
/// again gets it back only if it holds the service address by its roles now.
pub fn live_holders(testbed: &str, hosts: &[&str], addr: &str) -> Vec<String> {
    let mut v: Vec<String> = holders(testbed, hosts, addr)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    v.dedup();
    v
}

/// Every host's addresses, for a failure message.
pub fn describe(testbed: &str, hosts: &[&str]) -> String {
    hosts
        .iter()
        .map(|h| {
            let ns = halab::provider::local::host_ns(testbed, h);
            let a: Vec<String> = addresses(&ns)
                .into_iter()
                .map(|(dev, a, up)| format!("{a}@{dev}{}", if up { "" } else { "(down)" }))
                .collect();
            format!("{h}: {}", a.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asserts that `addr` is on exactly one host, `expected`, after `step`.
pub fn assert_only_on(testbed: &str, hosts: &[&str], addr: &str, expected: &str, step: &str) {
    let live = live_holders(testbed, hosts, addr);
    assert_eq!(
        live,
        vec![expected.to_string()],
        "{step}: the service address {addr} must be on {expected} only; every namespace: {}",
        describe(testbed, hosts)
    );
}

/// Reads every namespace's addresses over and over in a thread, from `start` until `stop`,
/// and keeps each reading where more than one host holds the address: the window a power-on
/// or a takeover must not open.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<Vec<String>>)>>,
}

impl Sampler {
    pub fn start(testbed: &str, hosts: &[&str], addr: &str) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (testbed, addr) = (testbed.to_string(), addr.to_string());
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let (mut n, mut bad) = (0, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let live = live_holders(&testbed, &hosts, &addr);
                n += 1;
                if live.len() > 1 {
                    bad.push(live);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (n, bad)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Readings taken, and those with more than one holder.
    pub fn stop(mut self) -> (usize, Vec<Vec<String>>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("sampler thread"))
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
