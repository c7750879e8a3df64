//! The splice's data path on a host: the tc BPF program of `agents/bpf/splice.bpf.c`, attached
//! to the ingress of the host's interfaces, and its maps. A thin adapter: what to write into
//! the maps is [`super::translation`]'s.
//!
//! Dropping a [`Datapath`] detaches the program from every interface and frees its maps (tcx
//! links on this kernel, netlink filters on older ones; aya removes both on drop). An agent
//! killed with SIGKILL leaves nothing either: a tcx link lives as long as its file descriptor.

use super::translation::{Flow, Rewrite};
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TcAttachType, tc};
use std::net::SocketAddrV4;

/// The program, built by `build.rs` (aligned: the ELF parser reads it in place).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/splice.bpf.o"));

const PROGRAM: &str = "craft_splice";

/// `struct flow_key` of the program (network byte order).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
}

// SAFETY: plain bytes, no padding (12 bytes of u8 arrays), any bit pattern valid.
unsafe impl aya::Pod for FlowKey {}

impl From<Flow> for FlowKey {
    fn from(f: Flow) -> FlowKey {
        FlowKey {
            saddr: f.src.ip().octets(),
            daddr: f.dst.ip().octets(),
            sport: f.src.port().to_be_bytes(),
            dport: f.dst.port().to_be_bytes(),
        }
    }
}

impl From<FlowKey> for Flow {
    fn from(k: FlowKey) -> Flow {
        let end = |a: [u8; 4], p: [u8; 2]| SocketAddrV4::new(a.into(), u16::from_be_bytes(p));
        Flow::new(end(k.saddr, k.sport), end(k.daddr, k.dport))
    }
}

/// `struct splice` of the program.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SpliceValue {
    packets: u64,
    bytes: u64,
    last_ns: u64,
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
    seq_add: u32,
    ack_add: u32,
    tsval_add: u32,
    tsecr_add: u32,
    ifindex: u32,
    pad32: u32,
    state: u8,
    win_shl: u8,
    win_shr: u8,
    ended: u8,
}

// SAFETY: repr(C) with every field's alignment met by the fields before it (64 bytes, no
// padding); any bit pattern is valid.
unsafe impl aya::Pod for SpliceValue {}

/// The redirector's `struct craft_cfg`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CraftCfg {
    vip: [u8; 4],
    source: [u8; 4],
    vport: [u8; 2],
    port_base: u16,
    port_span: u16,
    pad: u16,
    me: u32,
    n_live: u32,
    live: [u32; MAX_PROXIES],
}

// SAFETY: repr(C), 88 bytes without padding (every field aligned by those before it); any
// bit pattern is valid.
unsafe impl aya::Pod for CraftCfg {}

/// The redirector's `struct owner`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OwnerEntry {
    front_mac: [u8; 6],
    mid_mac: [u8; 6],
}

// SAFETY: repr(C), 12 bytes of u8 arrays; any bit pattern is valid.
unsafe impl aya::Pod for OwnerEntry {}

/// How many proxies the redirector knows (its `MAX_PROXIES`).
pub const MAX_PROXIES: usize = 16;

/// The proxies as the packet redirector sees them (thesis §4.6): which proxy holds the sockets
/// of a connection that is not spliced yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTable {
    /// The service address and port clients connect to.
    pub service: SocketAddrV4,
    /// The proxies' shared source address towards the backends.
    pub source: std::net::Ipv4Addr,
    /// Proxy i connects to the backends from ports `[base + i·span, base + (i+1)·span)`.
    pub port_base: u16,
    pub port_span: u16,
    /// This proxy's index in `proxies`.
    pub me: usize,
    /// Every proxy's MAC addresses: (clients' side, backends' side).
    pub proxies: Vec<([u8; 6], [u8; 6])>,
}

const STATE_HOLD: u8 = 0;
const STATE_ACTIVE: u8 = 1;

/// The program's counters (its `STAT_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatapathStats {
    /// Packets of no splice, handed to the host's stack.
    pub passed: u64,
    /// Packets rewritten and forwarded.
    pub spliced: u64,
    /// Packets dropped while their connection was being spliced (their sender sends them
    /// again).
    pub held: u64,
    /// Packets of a spliced connection that could not be rewritten (dropped).
    pub malformed: u64,
    /// Packets not yet spliced, sent on to the proxy that holds their connection.
    pub redirected: u64,
}

/// What one direction of a splice carried through this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub packets: u64,
    pub bytes: u64,
}

/// Why the data path could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading craft's BPF program")]
    Load(#[source] aya::EbpfError),
    #[error("craft's BPF program has no {0}")]
    Missing(&'static str),
    #[error("craft's BPF program")]
    Program(#[source] aya::programs::ProgramError),
    #[error("adding a clsact qdisc to {iface}")]
    Clsact {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching craft's BPF program to {iface}")]
    Attach {
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("craft's BPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("{0} proxies: the redirector knows at most {MAX_PROXIES}")]
    TooManyProxies(usize),
}

/// The program loaded and attached on a host, with its maps.
pub struct Datapath {
    // Owns the program and its links: dropping it detaches everything.
    _ebpf: aya::Ebpf,
    splices: HashMap<MapData, FlowKey, SpliceValue>,
    tsvals: HashMap<MapData, FlowKey, u32>,
    stats: PerCpuArray<MapData, u64>,
    config: Array<MapData, CraftCfg>,
    owners: Array<MapData, OwnerEntry>,
    proxy_macs: HashMap<MapData, u64, u8>,
}

impl Datapath {
    /// Loads the program and attaches it to the ingress of each of `ifaces`.
    pub fn attach(ifaces: &[&str]) -> Result<Datapath, DatapathError> {
        Datapath::attach_at(ifaces, &[])
    }

    /// Loads the program and attaches it to the ingress of each of `ingress` and the egress of
    /// each of `egress`. A backend with a split splice (thesis §4.7.3) takes its own responses
    /// on its egress, rewrites them and sends them straight to the client.
    pub fn attach_at(ingress: &[&str], egress: &[&str]) -> Result<Datapath, DatapathError> {
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(DatapathError::Load)?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::Missing(PROGRAM))?
            .try_into()
            .map_err(DatapathError::Program)?;
        program.load().map_err(DatapathError::Program)?;
        let hooks = ingress
            .iter()
            .map(|i| (*i, TcAttachType::Ingress))
            .chain(egress.iter().map(|i| (*i, TcAttachType::Egress)));
        for (iface, hook) in hooks {
            // tcx needs no qdisc; netlink attachment (kernels before 6.6) does. An existing
            // one (a link shape's, say) is fine.
            if let Err(e) = tc::qdisc_add_clsact(iface)
                && e.kind() != std::io::ErrorKind::AlreadyExists
            {
                return Err(DatapathError::Clsact {
                    iface: iface.to_string(),
                    source: e,
                });
            }
            program
                .attach(iface, hook)
                .map_err(|source| DatapathError::Attach {
                    iface: iface.to_string(),
                    source,
                })?;
        }
        let mut map = |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::Missing(name));
        let splices = HashMap::try_from(map("splices")?).map_err(map_error("splices"))?;
        let tsvals = HashMap::try_from(map("tsvals")?).map_err(map_error("tsvals"))?;
        let stats = PerCpuArray::try_from(map("stats")?).map_err(map_error("stats"))?;
        let config = Array::try_from(map("config")?).map_err(map_error("config"))?;
        let owners = Array::try_from(map("owners")?).map_err(map_error("owners"))?;
        let proxy_macs = HashMap::try_from(map("proxy_macs")?).map_err(map_error("proxy_macs"))?;
        Ok(Datapath {
            _ebpf: ebpf,
            splices,
            tsvals,
            stats,
            config,
            owners,
            proxy_macs,
        })
    }

    /// Turns the packet redirector on with `table`, every proxy in the pool (see
    /// [`Datapath::set_live`]).
    pub fn set_proxies(&mut self, table: &ProxyTable) -> Result<(), DatapathError> {
        let n = table.proxies.len();
        if n > MAX_PROXIES || table.me >= n {
            return Err(DatapathError::TooManyProxies(n));
        }
        for (i, (front, mid)) in table.proxies.iter().enumerate() {
            let entry = OwnerEntry {
                front_mac: *front,
                mid_mac: *mid,
            };
            self.owners
                .set(i as u32, entry, 0)
                .map_err(map_error("owners"))?;
            for mac in [front, mid] {
                self.proxy_macs
                    .insert(mac_key(mac), 1, 0)
                    .map_err(map_error("proxy_macs"))?;
            }
        }
        let mut cfg = CraftCfg {
            vip: table.service.ip().octets(),
            source: table.source.octets(),
            vport: table.service.port().to_be_bytes(),
            port_base: table.port_base,
            port_span: table.port_span,
            me: table.me as u32,
            ..CraftCfg::default()
        };
        let all: Vec<usize> = (0..n).collect();
        fill_live(&mut cfg, &all);
        self.config.set(0, cfg, 0).map_err(map_error("config"))
    }

    /// The proxies in the pool now (indexes into the table), in the pool's order: a client's
    /// connection not yet spliced belongs to one of them by the hash of its address and port.
    pub fn set_live(&mut self, live: &[usize]) -> Result<(), DatapathError> {
        let mut cfg = self.config.get(&0, 0).map_err(map_error("config"))?;
        fill_live(&mut cfg, live);
        self.config.set(0, cfg, 0).map_err(map_error("config"))
    }

    /// The redirector's live set now (indexes into the table).
    pub fn live(&self) -> Result<Vec<usize>, DatapathError> {
        let cfg = self.config.get(&0, 0).map_err(map_error("config"))?;
        let n = (cfg.n_live as usize).min(MAX_PROXIES);
        Ok(cfg.live[..n].iter().map(|i| *i as usize).collect())
    }

    /// Holds `flow`: from now on its segments with data, FIN or RST are dropped here (their
    /// sender sends them again once the splice is in) and its pure ACKs still reach the
    /// host's socket, so that the socket can see what it sent acknowledged.
    pub fn hold(&mut self, flow: Flow) -> Result<(), DatapathError> {
        let value = SpliceValue {
            state: STATE_HOLD,
            ..SpliceValue::default()
        };
        self.put(flow, value)
    }

    /// The newest TCP timestamp value `flow` carried into this host's stack or into a hold,
    /// if it carried any.
    pub fn newest_tsval(&self, flow: Flow) -> Result<Option<u32>, DatapathError> {
        match self.tsvals.get(&FlowKey::from(flow), 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error("tsvals")(e)),
        }
    }

    /// Installs `rewrite`: packets of `rewrite.from` are rewritten into `rewrite.to` and leave
    /// through interface `out` (its neighbour for the new destination found by the kernel).
    pub fn splice(&mut self, rewrite: &Rewrite, out: u32) -> Result<(), DatapathError> {
        let to = FlowKey::from(rewrite.to);
        let value = SpliceValue {
            saddr: to.saddr,
            daddr: to.daddr,
            sport: to.sport,
            dport: to.dport,
            seq_add: rewrite.seq_add,
            ack_add: rewrite.ack_add,
            tsval_add: rewrite.tsval_add,
            tsecr_add: rewrite.tsecr_add,
            ifindex: out,
            state: STATE_ACTIVE,
            win_shl: rewrite.win_shl,
            win_shr: rewrite.win_shr,
            // Idle from its install on: a splice no packet ever crosses here still ages.
            last_ns: halab_protocol::mono_ns(),
            ..SpliceValue::default()
        };
        self.put(rewrite.from, value)
    }

    /// Forgets `flow` (its packets go to the host's stack again).
    pub fn remove(&mut self, flow: Flow) -> Result<(), DatapathError> {
        match self.splices.remove(&FlowKey::from(flow)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error("splices")(e)),
        }
    }

    /// What `flow` carried through this host since it was spliced here.
    pub fn counts(&self, flow: Flow) -> Result<Option<FlowCounts>, DatapathError> {
        Ok(self.get(flow)?.map(|v| FlowCounts {
            packets: v.packets,
            bytes: v.bytes,
        }))
    }

    /// Every flow this host's data path holds a splice (or a hold) for, with what it carried
    /// here.
    pub fn flows(&self) -> Result<Vec<(Flow, FlowCounts)>, DatapathError> {
        self.splices
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let counts = FlowCounts {
                        packets: v.packets,
                        bytes: v.bytes,
                    };
                    (Flow::from(k), counts)
                })
                .map_err(map_error("splices"))
            })
            .collect()
    }

    /// Every active splice on this host, as the sweeper sees it.
    pub fn splices(&self) -> Result<Vec<super::ended::SpliceView>, DatapathError> {
        let mut out = Vec::new();
        for r in self.splices.iter() {
            let (k, v) = r.map_err(map_error("splices"))?;
            if v.state != STATE_ACTIVE {
                continue;
            }
            let to = FlowKey {
                saddr: v.saddr,
                daddr: v.daddr,
                sport: v.sport,
                dport: v.dport,
            };
            out.push(super::ended::SpliceView {
                from: Flow::from(k),
                to: Flow::from(to),
                last_ns: v.last_ns,
                ended: v.ended != 0,
            });
        }
        Ok(out)
    }

    /// The program's counters on this host, summed over its CPUs.
    pub fn stats(&self) -> Result<DatapathStats, DatapathError> {
        let read = |i: u32| -> Result<u64, DatapathError> {
            let per_cpu = self.stats.get(&i, 0).map_err(map_error("stats"))?;
            Ok(per_cpu.iter().sum())
        };
        Ok(DatapathStats {
            passed: read(0)?,
            spliced: read(1)?,
            held: read(2)?,
            malformed: read(3)?,
            redirected: read(4)?,
        })
    }

    fn put(&mut self, flow: Flow, value: SpliceValue) -> Result<(), DatapathError> {
        self.splices
            .insert(FlowKey::from(flow), value, 0)
            .map_err(map_error("splices"))
    }

    fn get(&self, flow: Flow) -> Result<Option<SpliceValue>, DatapathError> {
        match self.splices.get(&FlowKey::from(flow), 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error("splices")(e)),
        }
    }
}

fn mac_key(mac: &[u8; 6]) -> u64 {
    let mut k = [0u8; 8];
    k[..6].copy_from_slice(mac);
    u64::from_ne_bytes(k)
}

fn fill_live(cfg: &mut CraftCfg, live: &[usize]) {
    cfg.live = [0; MAX_PROXIES];
    let live: Vec<u32> = live
        .iter()
        .filter(|i| **i < MAX_PROXIES)
        .map(|i| *i as u32)
        .collect();
    cfg.live[..live.len()].copy_from_slice(&live);
    cfg.n_live = live.len() as u32;
}

/// The error of map `map`'s operation.
fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}

/// The index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Result<u32, DatapathError> {
    let c = std::ffi::CString::new(name).map_err(|_| DatapathError::NoInterface(name.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(DatapathError::NoInterface(name.into()));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_layouts_match_the_programs() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 12);
        assert_eq!(std::mem::size_of::<SpliceValue>(), 64);
        assert_eq!(std::mem::offset_of!(SpliceValue, saddr), 24);
        assert_eq!(std::mem::offset_of!(SpliceValue, seq_add), 36);
        assert_eq!(std::mem::offset_of!(SpliceValue, ifindex), 52);
        assert_eq!(std::mem::offset_of!(SpliceValue, state), 60);
        assert_eq!(std::mem::size_of::<CraftCfg>(), 88);
        assert_eq!(std::mem::offset_of!(CraftCfg, me), 16);
        assert_eq!(std::mem::offset_of!(CraftCfg, live), 24);
        assert_eq!(std::mem::size_of::<OwnerEntry>(), 12);
    }
}
