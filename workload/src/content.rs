//! Server content as a pure function of `(seed, offset)` (DESIGN §7).
//!
//! Every byte a server sends, and every request byte a client sends, is `content(seed, offset)`.
//! Nothing needs to be stored or transferred to know what a stream should contain, so a client
//! can check every byte it receives, and a server can start a stream at any offset (the
//! `download` workload resumes at the client's offset).
//!
//! # Layout
//!
//! The content is cut into blocks of [`BLOCK_LEN`] bytes. Block `i` covers the offsets
//! `[i * 1024, (i + 1) * 1024)` and is 128 little-endian 64-bit words:
//!
//! | word  | value                                      | why                                   |
//! |-------|--------------------------------------------|---------------------------------------|
//! | 0     | `block_offset ^ k_off(seed)`               | says where the block belongs          |
//! | 1     | `mix64(block_offset ^ k_chk(seed))`        | keyed check: random bytes pass w.p. ~2⁻⁶⁴ |
//! | 2..128| `splitmix64(k_body(seed) + w · φ)`, `w` = offset / 8 | pseudo-random body          |
//!
//! The 16-byte header makes the content *self-locating*: when a received stream loses its
//! place (bytes lost or delivered twice by a broken takeover), the next header in it tells the
//! checker which offset the bytes really came from, without any guess (see
//! [`crate::integrity`]). The body is a counter-mode splitmix64, one independent mix per word,
//! which a superscalar core runs at several GB/s, so the measuring stick is never the
//! bottleneck (issue 3, "must hold" 4).
//!
//! Offsets are `u64`; the content is periodic with period 2⁶⁴ (word indices wrap), so any
//! `(offset, len)` is valid, including ranges that run past `u64::MAX`.
//!
//! # No panics
//!
//! Every function here is total: no input (offset, seed, buffer length) makes it panic. Slices
//! are split only at lengths computed from the slices themselves.

/// Bytes per block. Each block starts with a [`HEADER_LEN`]-byte header.
pub const BLOCK_LEN: usize = 1024;
/// Bytes of the self-locating header at the start of each block.
pub const HEADER_LEN: usize = 16;

/// Words per block.
const WORDS_PER_BLOCK: u64 = (BLOCK_LEN / 8) as u64;
/// Word indices live in `[0, 2^61)`: byte offsets are `u64`, so the content has period 2^64.
const WORD_MASK: u64 = (1 << 61) - 1;
/// splitmix64's increment (2^64 / φ): consecutive counters land far apart before mixing.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The splitmix64 finalizer: a bijection on `u64` with full avalanche, 2 multiplications.
#[inline(always)]
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The content of one seed, with its keys derived once.
///
/// The free functions ([`fill`], [`first_mismatch`], [`header_at`], [`content`]) build one of
/// these per call (three mixes); hot loops should keep a `Content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Content {
    seed: u64,
    /// XORed into the header's offset word, so two seeds' headers differ.
    k_off: u64,
    /// Keys the header's check word.
    k_chk: u64,
    /// Keys the body's counter.
    k_body: u64,
}

impl Content {
    /// The content of stream `seed`. Every seed is valid.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Content {
            seed,
            k_off: mix64(seed ^ 0x6861_6c61_622d_6f66),
            k_chk: mix64(seed.wrapping_add(0x6861_6c61_622d_636b)),
            k_body: mix64(seed ^ 0x6861_6c61_622d_6264).wrapping_add(GOLDEN),
        }
    }

    /// The seed this content was made from.
    #[must_use]
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// The two header words of the block at `block_offset` (a multiple of [`BLOCK_LEN`]).
    #[inline(always)]
    const fn header_words(&self, block_offset: u64) -> (u64, u64) {
        (block_offset ^ self.k_off, mix64(block_offset ^ self.k_chk))
    }

    /// Body word for word index `w` (already masked).
    #[inline(always)]
    const fn body_word(&self, w: u64) -> u64 {
        mix64(self.k_body.wrapping_add(w.wrapping_mul(GOLDEN)))
    }

    /// The little-endian word at word index `w` (byte offset `8 * w`).
    #[inline]
    fn word(&self, w: u64) -> u64 {
        let w = w & WORD_MASK;
        let block_offset = (w / WORDS_PER_BLOCK) * BLOCK_LEN as u64;
        match w % WORDS_PER_BLOCK {
            0 => self.header_words(block_offset).0,
            1 => self.header_words(block_offset).1,
            _ => self.body_word(w),
        }
    }

    /// The byte at `offset`.
    #[must_use]
    pub fn byte(&self, offset: u64) -> u8 {
        let bytes = self.word(offset >> 3).to_le_bytes();
        // `offset & 7` is below 8, the length of `bytes`.
        bytes[(offset & 7) as usize]
    }

    /// Writes the content at `[offset, offset + buf.len())` into `buf`. Any offset and length.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let lead = (offset & 7) as usize;
        let mut w = offset >> 3;
        let mut buf = buf;
        if lead != 0 {
            let bytes = self.word(w).to_le_bytes();
            let n = (8 - lead).min(buf.len());
            let (head, tail) = buf.split_at_mut(n);
            head.copy_from_slice(&bytes[lead..lead + n]);
            buf = tail;
            w = w.wrapping_add(1);
        }
        let (words, tail) = buf.as_chunks_mut::<8>();
        self.fill_words(w, words);
        if !tail.is_empty() {
            let bytes = self.word(w.wrapping_add(words.len() as u64)).to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&bytes[..n]);
        }
    }

    /// Fills whole words starting at word index `w`, one block segment at a time so that the
    /// body loop has no branch and the compiler can keep several mixes in flight.
    fn fill_words(&self, w: u64, words: &mut [[u8; 8]]) {
        let mut w = w & WORD_MASK;
        let mut words = words;
        while !words.is_empty() {
            let j = (w % WORDS_PER_BLOCK) as usize;
            let n = (WORDS_PER_BLOCK as usize - j).min(words.len());
            let (cur, rest) = std::mem::take(&mut words).split_at_mut(n);
            let mut start = 0;
            while j + start < 2 && start < n {
                cur[start] = self.word(w + start as u64).to_le_bytes();
                start += 1;
            }
            let mut s = self
                .k_body
                .wrapping_add((w + start as u64).wrapping_mul(GOLDEN));
            for c in &mut cur[start..] {
                *c = mix64(s).to_le_bytes();
                s = s.wrapping_add(GOLDEN);
            }
            words = rest;
            // A block never straddles the 2^61 wrap (2^61 is a multiple of 128).
            w = (w + n as u64) & WORD_MASK;
        }
    }

    /// The index of the first byte of `data` that differs from the content at
    /// `[offset, offset + data.len())`, or `None` if all match. Generates and compares in one
    /// pass, without a buffer.
    #[must_use]
    pub fn first_mismatch(&self, offset: u64, data: &[u8]) -> Option<usize> {
        let lead = (offset & 7) as usize;
        let mut w = offset >> 3;
        let mut data = data;
        let mut base = 0usize;
        if lead != 0 {
            let bytes = self.word(w).to_le_bytes();
            let n = (8 - lead).min(data.len());
            let (head, tail) = data.split_at(n);
            if let Some(i) = head.iter().zip(&bytes[lead..]).position(|(a, b)| a != b) {
                return Some(i);
            }
            data = tail;
            base = n;
            w = w.wrapping_add(1);
        }
        let (words, tail) = data.as_chunks::<8>();
        if let Some(i) = self.first_mismatch_words(w, words) {
            return Some(base + i);
        }
        if !tail.is_empty() {
            let bytes = self.word(w.wrapping_add(words.len() as u64)).to_le_bytes();
            if let Some(i) = tail.iter().zip(&bytes).position(|(a, b)| a != b) {
                return Some(base + words.len() * 8 + i);
            }
        }
        None
    }

    /// Byte index of the first mismatch in whole words from word index `w`. The body loop
    /// ORs the differences together and only looks for the culprit when a block segment
    /// differs: the clean path has no data-dependent branch.
    fn first_mismatch_words(&self, w: u64, words: &[[u8; 8]]) -> Option<usize> {
        let mut w = w & WORD_MASK;
        let mut done = 0usize;
        while done < words.len() {
            let j = (w % WORDS_PER_BLOCK) as usize;
            let n = (WORDS_PER_BLOCK as usize - j).min(words.len() - done);
            let cur = &words[done..done + n];
            let mut acc = 0u64;
            let mut start = 0;
            while j + start < 2 && start < n {
                acc |= u64::from_le_bytes(cur[start]) ^ self.word(w + start as u64);
                start += 1;
            }
            let mut s = self
                .k_body
                .wrapping_add((w + start as u64).wrapping_mul(GOLDEN));
            for c in &cur[start..] {
                acc |= u64::from_le_bytes(*c) ^ mix64(s);
                s = s.wrapping_add(GOLDEN);
            }
            if acc != 0 {
                for (i, c) in cur.iter().enumerate() {
                    let diff = u64::from_le_bytes(*c) ^ self.word(w + i as u64);
                    if diff != 0 {
                        // Little-endian: the lowest differing bits are the first differing byte.
                        return Some((done + i) * 8 + (diff.trailing_zeros() / 8) as usize);
                    }
                }
            }
            done += n;
            w = (w + n as u64) & WORD_MASK;
        }
        None
    }

    /// If `bytes` starts with a valid block header of this content, the block offset it
    /// claims. A random 16-byte sequence is accepted with probability about 2⁻⁷⁴ (the offset
    /// must be a multiple of 1024, and the 64-bit check must match).
    #[must_use]
    pub fn header_at(&self, bytes: &[u8]) -> Option<u64> {
        let (w0, rest) = bytes.split_first_chunk::<8>()?;
        let w1 = rest.first_chunk::<8>()?;
        let block_offset = u64::from_le_bytes(*w0) ^ self.k_off;
        if !block_offset.is_multiple_of(BLOCK_LEN as u64) {
            return None;
        }
        (u64::from_le_bytes(*w1) == self.header_words(block_offset).1).then_some(block_offset)
    }
}

/// The byte of stream `seed` at `offset`.
#[must_use]
pub fn content(seed: u64, offset: u64) -> u8 {
    Content::new(seed).byte(offset)
}

/// Writes the content of stream `seed` at `[offset, offset + buf.len())` into `buf`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    Content::new(seed).fill(offset, buf);
}

/// The index of the first byte of `data` that is not the content of stream `seed` at
/// `offset + index`, or `None` if `data` is exactly the content there.
#[must_use]
pub fn first_mismatch(seed: u64, offset: u64, data: &[u8]) -> Option<usize> {
    Content::new(seed).first_mismatch(offset, data)
}

/// If `bytes` starts with a valid block header for stream `seed`, the block offset it claims.
#[must_use]
pub fn header_at(seed: u64, bytes: &[u8]) -> Option<u64> {
    Content::new(seed).header_at(bytes)
}

/// Seed of a named file (the download and http workloads): FNV-1a of the name, so that anyone
/// who knows a file's name — a test comparing what curl saved — can generate its content.
pub fn name_seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_sit_at_block_starts() {
        let c = Content::new(7);
        let mut buf = vec![0u8; 4 * BLOCK_LEN];
        c.fill(3 * BLOCK_LEN as u64, &mut buf);
        for p in 0..buf.len() {
            let h = c.header_at(&buf[p..]);
            if p % BLOCK_LEN == 0 {
                assert_eq!(h, Some((3 * BLOCK_LEN + p) as u64));
            } else {
                assert_eq!(h, None, "no header at {p}");
            }
        }
        // Another seed's headers are not ours.
        assert_eq!(header_at(8, &buf), None);
    }

    #[test]
    fn byte_matches_fill_and_wraps() {
        let c = Content::new(1);
        let mut buf = [0u8; 40];
        let start = u64::MAX - 19;
        c.fill(start, &mut buf);
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(*b, c.byte(start.wrapping_add(i as u64)), "byte {i}");
        }
        let mut low = [0u8; 20];
        c.fill(0, &mut low);
        assert_eq!(&buf[20..], &low);
    }

    #[test]
    fn mismatch_finds_the_first_differing_byte() {
        let c = Content::new(3);
        let mut buf = vec![0u8; 3000];
        c.fill(5, &mut buf);
        assert_eq!(c.first_mismatch(5, &buf), None);
        for i in [0, 1, 2, 3, 7, 8, 1018, 1019, 1020, 1035, 2999] {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert_eq!(c.first_mismatch(5, &b), Some(i));
        }
    }
}
