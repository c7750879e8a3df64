//! Craft's roles on a testbed host (registry rows): the balancer, the gateway (role logger),
//! the proxies and the backends (roles primary and backup), from the console's
//! [`CraftConfig`]. Each sets up what its host needs for the mode (addresses, routes,
//! sysctls), and runs its parts until the role stops. A proxy takes its service and source
//! addresses off `lo` when it stops (they would answer for the service under another mode);
//! the routes, the gateway's forwarding and neighbour entry and the ARP sysctls stay (they
//! change nothing for another mode's traffic), and go with the host's namespace.

use super::balancer::{self, BalancerConfig, Report};
use super::datapath::{Datapath, ProxyTable};
use super::health::{self, Target};
use super::peers::{self, Peer};
use super::proxy::{self, ProxyConfig, Replication};
use super::replica::{self, Peers};
use super::splicer::Exits;
use super::spray::{Hook, Mac, Sprayer};
use super::{ended, sweeper};
use crate::role_ctx::{RoleCtx, StartedRole};
use halab_protocol::modes::craft::{CraftConfig, Endpoint, Event, HEALTH_PORT, SPLICE_PORT};
use halab_protocol::sealed::Key;
use halab_protocol::{AgentMsg, ModeEvent, mono_ns};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why a craft role did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("craft's configuration: {0}")]
    Config(String),
    #[error("this host is none of craft's {0}")]
    NotListed(&'static str),
    #[error("{what}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the data path")]
    Datapath(#[from] super::datapath::DatapathError),
    #[error(transparent)]
    Server(#[from] crate::server_process::ServeError),
}

fn addr(s: &str) -> Result<Ipv4Addr, StartError> {
    s.parse()
        .map_err(|_| StartError::Config(format!("{s:?} is not an IPv4 address")))
}

fn mac(e: &Endpoint) -> Result<Mac, StartError> {
    e.mac
        .parse()
        .map_err(|e: super::spray::NotAMac| StartError::Config(e.to_string()))
}

fn key(cfg: &CraftConfig) -> Result<Key, StartError> {
    Key::from_hex(&cfg.key_hex).map_err(|e| StartError::Config(format!("key: {e}")))
}

/// Runs `ip` with `args`; an error names the command.
async fn ip(args: &[&str]) -> Result<(), StartError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|source| StartError::Setup {
            what: format!("running ip {}", args.join(" ")),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(StartError::Setup {
        what: format!("ip {}", args.join(" ")),
        source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    })
}

fn sysctl(path: &str, value: &str) -> Result<(), StartError> {
    std::fs::write(format!("/proc/sys/{path}"), value).map_err(|source| StartError::Setup {
        what: format!("setting {path} to {value}"),
        source,
    })
}

/// Whether `a` is one of this host's addresses.
fn is_local(a: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((a, 0)).is_ok()
}

async fn emit(outbound: &mpsc::Sender<AgentMsg>, event: Event) {
    let _ = outbound
        .send(AgentMsg::Mode {
            event: ModeEvent::Craft(event),
        })
        .await;
}

fn report_event(r: Report) -> Event {
    match r {
        Report::Down {
            proxy,
            silent_ns,
            at_ns,
            applied_ns,
            live,
        } => Event::PoolDown {
            proxy,
            silent_ms: silent_ns / 1_000_000,
            live,
            at_ns,
            applied_ns,
        },
        Report::Up {
            proxy,
            at_ns,
            applied_ns,
            live,
        } => Event::PoolUp {
            proxy,
            live,
            at_ns,
            applied_ns,
        },
        Report::Failed { why, at_ns } => Event::Error {
            message: why,
            at_ns,
        },
    }
}

/// A sprayer over the proxies' links on one side, with its own health checks.
fn sprayer_task(ctx: RoleCtx, cfg: BalancerConfig, key: Key, what: &'static str) -> StartedRole {
    let RoleCtx {
        cancel, outbound, ..
    } = ctx;
    let task = tokio::spawn(async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = {
            let outbound = outbound.clone();
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    emit(&outbound, report_event(r)).await;
                }
            })
        };
        if let Err(e) = balancer::run(cfg, key, cancel, |r| {
            let _ = tx.send(r);
        })
        .await
        {
            emit(
                &outbound,
                Event::Error {
                    message: format!("{what}: {}", crate::error::chain(&e)),
                    at_ns: mono_ns(),
                },
            )
            .await;
        }
        forward.abort();
    });
    StartedRole {
        task,
        detail: Some(what.to_string()),
        commands: None,
    }
}

/// The proxies as a sprayer sees them: their link on one side (`side`), probed there.
fn sprayed(
    cfg: &CraftConfig,
    side: impl Fn(&halab_protocol::modes::craft::ProxyEndpoints) -> &Endpoint,
) -> Result<Vec<balancer::Proxy>, StartError> {
    cfg.proxies
        .iter()
        .map(|p| {
            let e = side(p);
            Ok(balancer::Proxy {
                target: Target {
                    name: e.host.clone(),
                    addr: SocketAddr::V4(SocketAddrV4::new(addr(&e.addr)?, HEALTH_PORT)),
                },
                mac: mac(e)?,
            })
        })
        .collect()
}

/// Role lb: sprays the service address's packets over the live proxies.
pub async fn start_balancer(ctx: RoleCtx, cfg: CraftConfig) -> Result<StartedRole, StartError> {
    let b = &cfg.balancer;
    let bc = BalancerConfig {
        sprayer: Sprayer {
            table: "halab_craft_lb".into(),
            device: b.device.clone(),
            hook: Hook::IngressHairpin,
            daddr: addr(&cfg.service_addr)?,
            dport: Some(cfg.service_port),
            own_mac: mac(b)?,
        },
        proxies: sprayed(&cfg, |p| &p.front)?,
        interval: Duration::from_millis(cfg.heartbeat_ms),
        missed: cfg.missed_heartbeats,
    };
    Ok(sprayer_task(
        ctx,
        bc,
        key(&cfg)?,
        "balancer: spraying over the live proxies",
    ))
}

/// Role logger under craft: the gateway between the proxies and the backends, spraying the
/// backends' packets to the proxies' shared source address over the live proxies.
pub async fn start_gateway(ctx: RoleCtx, cfg: CraftConfig) -> Result<StartedRole, StartError> {
    let Some(g) = cfg.gateway.as_ref() else {
        return Err(StartError::NotListed(
            "gateways (the backends share the proxies' network)",
        ));
    };
    sysctl("net/ipv4/ip_forward", "1")?;
    let first = cfg
        .proxies
        .first()
        .ok_or_else(|| StartError::Config("no proxy".into()))?;
    // The source address answers no ARP: a static neighbour, rewritten per packet.
    ip(&[
        "neigh",
        "replace",
        &cfg.source_addr,
        "lladdr",
        &first.back.mac,
        "dev",
        &g.proxies_side.device,
        "nud",
        "permanent",
    ])
    .await?;
    let bc = BalancerConfig {
        sprayer: Sprayer {
            table: "halab_craft_return".into(),
            device: g.proxies_side.device.clone(),
            hook: Hook::Egress,
            daddr: addr(&cfg.source_addr)?,
            dport: None,
            own_mac: mac(&g.proxies_side)?,
        },
        proxies: sprayed(&cfg, |p| &p.back)?,
        interval: Duration::from_millis(cfg.heartbeat_ms),
        missed: cfg.missed_heartbeats,
    };
    Ok(sprayer_task(
        ctx,
        bc,
        key(&cfg)?,
        "gateway: spraying the return path over the live proxies",
    ))
}

/// Roles primary and backup under craft: the plain workload server, and the route to the
/// proxies' source address through the gateway.
pub async fn start_backend(ctx: RoleCtx, cfg: CraftConfig) -> Result<StartedRole, StartError> {
    if let Some(g) = &cfg.gateway {
        ip(&[
            "route",
            "replace",
            &format!("{}/32", cfg.source_addr),
            "via",
            &g.backends_side.addr,
        ])
        .await?;
    }
    Ok(super::super::none::start_server(ctx).await?)
}

/// Role proxy: the service and source addresses on `lo` (unannounced), the route to the
/// backends, the data path, the splice listener, health answers, checks of the other proxies,
/// the sweeper and the proxy itself.
pub async fn start_proxy(ctx: RoleCtx, cfg: CraftConfig) -> Result<StartedRole, StartError> {
    let mut me = None;
    for (i, p) in cfg.proxies.iter().enumerate() {
        if is_local(addr(&p.back.addr)?) {
            me = Some(i);
        }
    }
    let me = me.ok_or(StartError::NotListed("proxies"))?;
    let mine = cfg.proxies[me].clone();
    let service = addr(&cfg.service_addr)?;
    let source = addr(&cfg.source_addr)?;
    for a in [service, source] {
        ip(&["addr", "replace", &format!("{a}/32"), "dev", "lo"]).await?;
    }
    for (k, v) in [
        ("net/ipv4/conf/all/arp_ignore", "1"),
        ("net/ipv4/conf/all/arp_announce", "2"),
        ("net/ipv4/conf/all/rp_filter", "0"),
    ] {
        sysctl(k, v)?;
    }
    if let Some(g) = &cfg.gateway {
        for b in &cfg.backends {
            ip(&[
                "route",
                "replace",
                &format!("{}/32", b.addr),
                "via",
                &g.proxies_side.addr,
            ])
            .await?;
        }
    }
    let exits = Exits {
        to_backend: super::datapath::ifindex(&mine.back.device)?,
        to_client: super::datapath::ifindex(&mine.front.device)?,
    };
    let mut dp = Datapath::attach(&[&mine.front.device, &mine.back.device])?;
    let proxies: Vec<([u8; 6], [u8; 6])> = cfg
        .proxies
        .iter()
        .map(|p| Ok((mac(&p.front)?.0, mac(&p.back)?.0)))
        .collect::<Result<_, StartError>>()?;
    dp.set_proxies(&ProxyTable {
        service: SocketAddrV4::new(service, cfg.service_port),
        source,
        port_base: cfg.port_base,
        port_span: cfg.port_span,
        me,
        proxies,
    })?;
    let dp = Arc::new(Mutex::new(dp));
    let key = key(&cfg)?;
    let splice_addr =
        |p: &halab_protocol::modes::craft::ProxyEndpoints| -> Result<SocketAddr, StartError> {
            Ok(SocketAddr::V4(SocketAddrV4::new(
                addr(&p.back.addr)?,
                SPLICE_PORT,
            )))
        };
    let mut peer_list = Vec::new();
    for (j, p) in cfg.proxies.iter().enumerate() {
        if j == me {
            continue;
        }
        peer_list.push(Peer {
            index: j,
            health: Target {
                name: p.back.host.clone(),
                addr: SocketAddr::V4(SocketAddrV4::new(addr(&p.back.addr)?, HEALTH_PORT)),
            },
            splices: splice_addr(p)?,
        });
    }
    let setup = |what: &str| {
        let what = what.to_string();
        move |source| StartError::Setup { what, source }
    };
    let splices = tokio::net::TcpListener::bind(splice_addr(&mine)?)
        .await
        .map_err(setup("the splice listener"))?;
    let health_sock = tokio::net::UdpSocket::bind(("0.0.0.0", HEALTH_PORT))
        .await
        .map_err(setup("the health port"))?;
    let listen = SocketAddrV4::new(service, cfg.service_port);
    let listener = proxy::listen(listen).map_err(setup("listening on the service address"))?;
    let backend = cfg
        .backends
        .first()
        .ok_or_else(|| StartError::Config("no backend".into()))?;
    let pcfg = Arc::new(ProxyConfig {
        listen,
        source,
        backends: vec![SocketAddrV4::new(
            addr(&backend.addr)?,
            halab_protocol::HTTP_PORT,
        )],
        exits,
        source_ports: Some((cfg.port_base + cfg.port_span * me as u16, cfg.port_span)),
    });
    let rep = Arc::new(Replication {
        peers: Peers::new(Arc::new(key.clone())),
        live: Mutex::new(peer_list.iter().map(|p| p.splices).collect()),
    });
    let links = vec![mine.front.device.clone(), mine.back.device.clone()];
    let interval = Duration::from_millis(cfg.heartbeat_ms);
    let cancel = ctx.cancel.clone();
    let name = mine.front.host.clone();
    let detail = format!(
        "proxy {} of {}: splicing on {listen}",
        me + 1,
        cfg.proxies.len()
    );
    let task = tokio::spawn(async move {
        tokio::join!(
            replica::serve(
                splices,
                Arc::new(key.clone()),
                dp.clone(),
                exits,
                cancel.clone()
            ),
            health::answer(health_sock, key.clone(), name, links, cancel.clone()),
            peers::watch(
                me,
                peer_list,
                Vec::new(),
                dp.clone(),
                rep.clone(),
                key.clone(),
                interval,
                cfg.missed_heartbeats,
                cancel.clone()
            ),
            sweeper::sweep(
                dp.clone(),
                Some(rep.clone()),
                ended::LINGER,
                ended::IDLE_LIMIT,
                cancel.clone()
            ),
            proxy::serve(listener, pcfg, dp.clone(), Some(rep), cancel.clone()),
        );
        // The mode's addresses leave with the role (a mode switch must find the host as it
        // was); the data path goes with `dp`.
        for a in [service, source] {
            let _ = ip(&["addr", "del", &format!("{a}/32"), "dev", "lo"]).await;
        }
    });
    Ok(StartedRole {
        task,
        detail: Some(detail),
        commands: None,
    })
}
