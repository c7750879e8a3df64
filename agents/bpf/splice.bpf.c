// SPDX-License-Identifier: GPL-2.0
// halab craft: the TCP splice's data path (thesis chapter 4's tcpdistsplice, on an unmodified
// kernel). A tc (clsact) program on a proxy's interfaces: a packet of a spliced connection is
// rewritten (addresses, ports, sequence and acknowledgement numbers, window, timestamps, SACK
// blocks) and sent on towards the other end with bpf_redirect_neigh; no socket is in its path.
// The translation of each direction of a connection is one entry of `splices`, written by the
// agent (agents/src/modes/craft/) on every proxy before it takes effect.
//
// Built by agents/build.rs with clang -target bpf; loaded by the agent with aya.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// What a packet of a flow in `splices` meets.
#define STATE_HOLD 0   // being spliced: segments that carry data, FIN or RST are dropped (the
                       // peer sends them again once the splice is in), pure ACKs go to the
                       // proxy's sockets so they can finish what they sent
#define STATE_ACTIVE 1 // spliced: rewritten and forwarded

// A connection's direction as it arrives (network byte order).
struct flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

// How that direction is rewritten. Layout shared with agents/src/modes/craft/datapath.rs.
struct splice {
	__u64 packets;    // carried by this host (counted here)
	__u64 bytes;
	__u64 last_ns;    // CLOCK_MONOTONIC of the last packet carried here (or of the install)
	__be32 saddr;     // the other connection's addresses and ports
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 seq_add;    // added to the sequence number
	__u32 ack_add;    // added to the acknowledgement number and the SACK edges
	__u32 tsval_add;  // added to the timestamp value
	__u32 tsecr_add;  // added to the timestamp echo
	__u32 ifindex;    // where the rewritten packet leaves
	__u32 pad32;
	__u8 state;
	__u8 win_shl;     // window' = min(window << win_shl >> win_shr, 65535)
	__u8 win_shr;
	__u8 ended;       // ENDED_FIN | ENDED_RST: what this host saw of the connection's end
};

#define ENDED_FIN 1
#define ENDED_RST 2

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct splice);
} splices SEC(".maps");

// The newest TCP timestamp value of each flow that reached this host's stack or was held: a
// splice moves a peer's timestamps onto the other leg's clock from there.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u32);
} tsvals SEC(".maps");

// The packet redirector (thesis §4.6, `packetredirector`): until a connection is spliced, its
// packets must reach the one proxy that holds its sockets, wherever the sprayer sent them.
// A client's packets to the service address go to the live proxy its (address, port) hashes
// to; a backend's packets to the proxies' shared source address go to the proxy whose port
// range holds the destination port. A packet that comes from another proxy is never sent on
// again (tables that disagree for a moment must not bounce a packet between two proxies).
#define MAX_PROXIES 16

struct craft_cfg {
	__be32 vip;    // the service address (0: no redirector, a proxy alone)
	__be32 source; // the proxies' shared source address towards the backends
	__be16 vport;  // the service port
	__u16 port_base; // proxy i's source ports are [base + i·span, base + (i+1)·span)
	__u16 port_span;
	__u16 pad;
	__u32 self;   // this proxy's index in `owners`
	__u32 n_live; // how many of `live` count
	__u32 live[MAX_PROXIES]; // the live proxies' indexes, in the pool's order
};

struct owner {
	__u8 front_mac[6]; // its address on the clients' side
	__u8 mid_mac[6];   // its address on the backends' side
};

// Every proxy's MAC addresses (as 8-byte keys, zero-padded): a frame from one of them was
// sent on by a redirector already.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_PROXIES);
	__type(key, __u64);
	__type(value, __u8);
} proxy_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct craft_cfg);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PROXIES);
	__type(key, __u32);
	__type(value, struct owner);
} owners SEC(".maps");

// Counters of this host's program, summed over CPUs by the agent.
#define STAT_PASSED 0    // no splice: to the stack
#define STAT_SPLICED 1   // rewritten and redirected
#define STAT_HELD 2      // dropped while a splice was being made
#define STAT_MALFORMED 3 // a spliced flow's packet that could not be rewritten: dropped
#define STAT_REDIRECTED 4 // not yet spliced, sent on to the proxy that holds its sockets
#define STAT_COUNT 5

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &what);
	if (v)
		*v += 1;
}

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))
#define MAX_OPTION_WALK 40

// Replaces 4 bytes of the TCP header at `off` (host order `from`/`to`), fixing its checksum.
static __always_inline int tcp_set32(struct __sk_buff *skb, __u32 tcp_off, __u32 off, __u32 from,
				     __u32 to)
{
	__be32 f = bpf_htonl(from), t = bpf_htonl(to);
	if (f == t)
		return 0;
	if (bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), f, t, 4))
		return -1;
	return bpf_skb_store_bytes(skb, off, &t, 4, 0);
}

static __always_inline int tcp_set16(struct __sk_buff *skb, __u32 tcp_off, __u32 off, __be16 f,
				     __be16 t)
{
	if (f == t)
		return 0;
	if (bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), f, t, 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &t, 2, 0);
}

// Replaces an IPv4 address: the IP header's checksum and, as part of the pseudo header, the
// TCP checksum.
static __always_inline int ip_set_addr(struct __sk_buff *skb, __u32 tcp_off, __u32 off, __be32 f,
				       __be32 t)
{
	if (f == t)
		return 0;
	if (bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), f, t,
				BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, f, t, 4))
		return -1;
	return bpf_skb_store_bytes(skb, off, &t, 4, 0);
}

// Walks the TCP options. With a splice `s`, moves the timestamps and the SACK edges by its
// offsets; without, records the flow's timestamp value in `tsvals`.
static __always_inline int walk_options(struct __sk_buff *skb, __u32 tcp_off, __u32 end,
					struct splice *s, struct flow_key *key)
{
	__u32 off = tcp_off + sizeof(struct tcphdr);
	for (int i = 0; i < MAX_OPTION_WALK; i++) {
		__u8 kind, len;
		if (off >= end)
			break;
		if (bpf_skb_load_bytes(skb, off, &kind, 1))
			return -1;
		if (kind == 0)
			break;
		if (kind == 1) {
			off += 1;
			continue;
		}
		if (off + 2 > end || bpf_skb_load_bytes(skb, off + 1, &len, 1))
			return -1;
		if (len < 2 || off + len > end)
			return -1;
		if (kind == 8 && len == 10) {
			__be32 ts[2];
			if (bpf_skb_load_bytes(skb, off + 2, ts, 8))
				return -1;
			__u32 tsval = bpf_ntohl(ts[0]), tsecr = bpf_ntohl(ts[1]);
			if (!s) {
				bpf_map_update_elem(&tsvals, key, &tsval, BPF_ANY);
				return 0;
			} else {
				if (tcp_set32(skb, tcp_off, off + 2, tsval, tsval + s->tsval_add))
					return -1;
				if (tcp_set32(skb, tcp_off, off + 6, tsecr, tsecr + s->tsecr_add))
					return -1;
			}
		} else if (kind == 5 && s) {
			__u32 blocks = (len - 2) / 8;
			for (__u32 b = 0; b < 4; b++) {
				if (b >= blocks)
					break;
				__u32 at = off + 2 + b * 8;
				__be32 edge[2];
				if (bpf_skb_load_bytes(skb, at, edge, 8))
					return -1;
				__u32 left = bpf_ntohl(edge[0]), right = bpf_ntohl(edge[1]);
				if (tcp_set32(skb, tcp_off, at, left, left + s->ack_add))
					return -1;
				if (tcp_set32(skb, tcp_off, at + 4, right, right + s->ack_add))
					return -1;
			}
		}
		off += len;
	}
	return 0;
}

// Sends a not-yet-spliced packet to the proxy that owns its connection; TC_ACT_OK when that
// is this host (or the packet is not the redirector's).
static __always_inline int redirect_to_owner(struct __sk_buff *skb, struct ethhdr *eth,
					     struct iphdr *ip, struct tcphdr *tcp)
{
	__u32 zero = 0;
	struct craft_cfg *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || cfg->vip == 0)
		return TC_ACT_OK;
	__u32 self = cfg->self & (MAX_PROXIES - 1);
	struct owner *me = bpf_map_lookup_elem(&owners, &self);
	if (!me)
		return TC_ACT_OK;
	__u64 src = 0;
	__builtin_memcpy(&src, eth->h_source, 6);
	if (bpf_map_lookup_elem(&proxy_macs, &src))
		return TC_ACT_OK;
	__u32 to;
	int front;
	if (ip->daddr == cfg->vip && tcp->dest == cfg->vport) {
		__u32 n = cfg->n_live;
		if (n == 0 || n > MAX_PROXIES)
			return TC_ACT_OK;
		__u32 h = bpf_ntohl(ip->saddr) * 2654435761u ^ (__u32)bpf_ntohs(tcp->source) * 40503u;
		h ^= h >> 16;
		__u32 at = h % n;
		// Hide the bound from the compiler, so the mask stays for the verifier.
		asm volatile("" : "+r"(at));
		to = cfg->live[at & (MAX_PROXIES - 1)];
		front = 1;
	} else if (ip->daddr == cfg->source) {
		__u32 port = bpf_ntohs(tcp->dest);
		if (cfg->port_span == 0 || port < cfg->port_base)
			return TC_ACT_OK;
		to = (port - cfg->port_base) / cfg->port_span;
		if (to >= MAX_PROXIES)
			return TC_ACT_OK;
		front = 0;
	} else {
		return TC_ACT_OK;
	}
	to &= MAX_PROXIES - 1;
	if (to == self)
		return TC_ACT_OK;
	struct owner *o = bpf_map_lookup_elem(&owners, &to);
	if (!o)
		return TC_ACT_OK;
	__u8 macs[12];
	__builtin_memcpy(macs, front ? o->front_mac : o->mid_mac, 6);
	__builtin_memcpy(macs + 6, front ? me->front_mac : me->mid_mac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TC_ACT_SHOT;
	count(STAT_REDIRECTED);
	return bpf_redirect(skb->ifindex, 0);
}

SEC("classifier")
int craft_splice(struct __sk_buff *skb)
{
	struct ethhdr eth;
	struct iphdr ip;
	struct tcphdr tcp;

	// A frame for another host (a hub floods every frame to every port) is the stack's to
	// drop, never this host's to carry.
	if (skb->pkt_type != PACKET_HOST)
		goto pass;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || eth.h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	if (bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP ||
	    ip.ihl < 5)
		goto pass;
	// Fragments are not spliced (the balancer's and the proxies' MTU are the same).
	if (ip.frag_off & bpf_htons(0x3fff))
		goto pass;
	__u32 tcp_off = IP_OFF + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, tcp_off, &tcp, sizeof(tcp)))
		goto pass;

	struct flow_key key = {
		.saddr = ip.saddr,
		.daddr = ip.daddr,
		.sport = tcp.source,
		.dport = tcp.dest,
	};
	__u32 doff = tcp.doff * 4;
	__u32 end = tcp_off + doff;
	struct splice *s = bpf_map_lookup_elem(&splices, &key);
	// A SYN on a spliced flow opens a new connection on the same addresses and ports (the old
	// one's splice outlived it here): the old splice is forgotten on this host.
	if (s && s->state == STATE_ACTIVE && tcp.syn && !tcp.ack) {
		bpf_map_delete_elem(&splices, &key);
		s = NULL;
	}
	if (!s || s->state != STATE_ACTIVE) {
		if (doff > sizeof(tcp) && end <= skb->len)
			walk_options(skb, tcp_off, end, NULL, &key);
		if (!s) {
			int r = redirect_to_owner(skb, &eth, &ip, &tcp);
			if (r != TC_ACT_OK)
				return r;
			goto pass;
		}
		__u32 payload = bpf_ntohs(ip.tot_len) - ip.ihl * 4 - doff;
		if (payload > 0 || tcp.fin || tcp.rst || tcp.syn) {
			count(STAT_HELD);
			return TC_ACT_SHOT;
		}
		goto pass;
	}
	if (doff < sizeof(tcp) || end > skb->len)
		goto malformed;

	if (ip_set_addr(skb, tcp_off, IP_SRC_OFF, ip.saddr, s->saddr) ||
	    ip_set_addr(skb, tcp_off, IP_DST_OFF, ip.daddr, s->daddr) ||
	    tcp_set16(skb, tcp_off, tcp_off + offsetof(struct tcphdr, source), tcp.source,
		      s->sport) ||
	    tcp_set16(skb, tcp_off, tcp_off + offsetof(struct tcphdr, dest), tcp.dest, s->dport))
		goto malformed;
	__u32 seq = bpf_ntohl(tcp.seq);
	if (tcp_set32(skb, tcp_off, tcp_off + offsetof(struct tcphdr, seq), seq, seq + s->seq_add))
		goto malformed;
	if (tcp.ack) {
		__u32 ack = bpf_ntohl(tcp.ack_seq);
		if (tcp_set32(skb, tcp_off, tcp_off + offsetof(struct tcphdr, ack_seq), ack,
			      ack + s->ack_add))
			goto malformed;
	}
	if (s->win_shl != s->win_shr) {
		__u32 w = ((__u32)bpf_ntohs(tcp.window) << (s->win_shl & 15)) >> (s->win_shr & 15);
		if (w > 65535)
			w = 65535;
		if (tcp_set16(skb, tcp_off, tcp_off + offsetof(struct tcphdr, window), tcp.window,
			      bpf_htons((__u16)w)))
			goto malformed;
	}
	if (doff > sizeof(tcp) && walk_options(skb, tcp_off, end, s, &key))
		goto malformed;

	__sync_fetch_and_add(&s->packets, 1);
	__sync_fetch_and_add(&s->bytes, skb->len);
	s->last_ns = bpf_ktime_get_ns();
	if (tcp.fin)
		s->ended |= ENDED_FIN;
	if (tcp.rst)
		s->ended |= ENDED_RST;
	count(STAT_SPLICED);
	return bpf_redirect_neigh(s->ifindex, NULL, 0, 0);

malformed:
	count(STAT_MALFORMED);
	return TC_ACT_SHOT;
pass:
	count(STAT_PASSED);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
