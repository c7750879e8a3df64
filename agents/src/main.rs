//! `halab-agent`: started by the halab console on each testbed host; not meant to be run by hand.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("halab-agent {}", halab_protocol::HALAB_VERSION);
            return;
        }
        Some("--help") | Some("-h") => {
            println!(
                "halab-agent {}\n\nThe halab agent runs on every testbed host, started by the halab console.\n\
                 It speaks the halab control protocol (framed, version {}) on stdin/stdout and exits,\n\
                 reverting every fault it holds, when stdin closes. It is not meant to be run by hand.",
                halab_protocol::HALAB_VERSION,
                halab_protocol::PROTOCOL_VERSION
            );
            return;
        }
        Some("serve") => {
            // A mode whose server roles run a process of their own names it by a flag
            // (the mode table's `SERVER_PROCESSES`); without one it is the plain workload
            // server.
            let mode_server = args
                .get(1)
                .and_then(|flag| halab_agent::modes::registry::server_process(flag));
            std::process::exit(match mode_server {
                Some(main) => main(),
                None => serve(&args[1..]),
            })
        }
        Some(other) => {
            eprintln!("halab-agent: unknown argument `{other}` (try --help)");
            std::process::exit(2);
        }
        None => {}
    }
    let Some(runtime) = runtime("halab-agent") else {
        std::process::exit(1);
    };
    let code = runtime.block_on(halab_agent::run());
    // Exit without waiting for the runtime: its blocking stdin reader may still be parked in
    // read(2) on a pipe nobody will close.
    std::process::exit(code);
}

/// `halab-agent serve [--bind ADDR] [--port N] [--http-port N]`: the workload server process
/// the agent starts for the server roles. Prints `ready <port> <http-port>` once it listens.
fn serve(args: &[String]) -> i32 {
    let (mut port, mut http_port) = halab_agent::workload::server::default_ports();
    let mut bind = std::net::IpAddr::from([0, 0, 0, 0]);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next();
        let ok = match (a.as_str(), value) {
            ("--port", Some(v)) => v.parse().map(|v| port = v).is_ok(),
            ("--http-port", Some(v)) => v.parse().map(|v| http_port = v).is_ok(),
            ("--bind", Some(v)) => v.parse().map(|v| bind = v).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!(
                "halab-agent serve: bad argument `{a}` (usage: serve [--bind ADDR] [--port N] [--http-port N])"
            );
            return 2;
        }
    }
    // One thread: a killed server is torn down, and its sockets closed, sooner than one with
    // several workers, which keeps T_fault close to the FIN/RST the client sees.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("halab-agent serve: cannot start runtime: {e}");
            return 1;
        }
    };
    // The process's one shutdown owner: SIGINT only cancels `stop`; `serve` returns once its
    // connections are shut down, and `main` exits with the code. (The agent ends this process
    // with SIGKILL when its role stops.)
    let stop = tokio_util::sync::CancellationToken::new();
    let code = runtime.block_on(async {
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            s.cancel();
        });
        // The agent waits for this line before it reports the server role running.
        let ready = |port: u16, http_port: u16| {
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "ready {port} {http_port}");
            let _ = out.flush();
        };
        match halab_agent::workload::server::serve(bind, port, http_port, stop, ready).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("halab-agent serve: {e}");
                1
            }
        }
    });
    runtime.shutdown_background();
    code
}

/// The runtime both modes use: two workers, as agents share small hosts with their workloads.
fn runtime(who: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{who}: cannot start runtime: {e}");
            None
        }
    }
}
