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
        Some(other) => {
            eprintln!("halab-agent: unknown argument `{other}` (try --help)");
            std::process::exit(2);
        }
        None => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("halab-agent: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(halab_agent::run());
    // Exit without waiting for the runtime: its blocking stdin reader may still be parked in
    // read(2) on a pipe nobody will close.
    std::process::exit(code);
}
