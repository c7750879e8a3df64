//! What the agent's netlink clients share (st-tcp's `sockdiag`, [`crate::netfilter_queue`]):
//! the message header's constants (`linux/netlink.h`) and bounds-checked readers of
//! native-endian fields, which return `None` rather than panic when a field lies beyond the
//! buffer. A leaf: it uses nothing of the crate.

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Netlink messages and attributes are padded to 4 bytes.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
