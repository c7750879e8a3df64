//! The content generator: any range equals the same range cut out of a larger fill, and the
//! single-byte, compare and header functions agree with it.

use halab_workload::content::{self, BLOCK_LEN, Content};
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_range_is_a_cut_of_a_larger_fill(
        seed in any::<u64>(),
        base in prop_oneof![0u64..1 << 20, any::<u64>()],
        cut_start in 0usize..5000,
        cut_len in 0usize..5000,
    ) {
        let mut big = vec![0u8; 10_000];
        content::fill(seed, base, &mut big);
        let mut small = vec![0u8; cut_len];
        content::fill(seed, base.wrapping_add(cut_start as u64), &mut small);
        prop_assert_eq!(&small[..], &big[cut_start..cut_start + cut_len]);
        for (i, b) in small.iter().enumerate().step_by(97) {
            prop_assert_eq!(*b, content::content(seed, base.wrapping_add((cut_start + i) as u64)));
        }
        prop_assert_eq!(content::first_mismatch(seed, base.wrapping_add(cut_start as u64), &small), None);
    }

    #[test]
    fn first_mismatch_is_the_first_differing_byte(
        seed in any::<u64>(),
        offset in any::<u64>(),
        len in 1usize..4000,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
    ) {
        let c = Content::new(seed);
        let mut data = vec![0u8; len];
        c.fill(offset, &mut data);
        let mut first = usize::MAX;
        for (i, x) in flips {
            let i = i.index(len);
            data[i] ^= x;
            first = first.min(i);
        }
        prop_assert_eq!(c.first_mismatch(offset, &data), Some(first));
    }

    #[test]
    fn header_at_finds_exactly_the_block_starts(seed in any::<u64>(), block in 0u64..1 << 40, skew in 1usize..BLOCK_LEN) {
        let c = Content::new(seed);
        let at = block * BLOCK_LEN as u64;
        let mut data = vec![0u8; 2 * BLOCK_LEN];
        c.fill(at, &mut data);
        prop_assert_eq!(content::header_at(seed, &data), Some(at));
        prop_assert_eq!(content::header_at(seed, &data[BLOCK_LEN..]), Some(at + BLOCK_LEN as u64));
        prop_assert_eq!(content::header_at(seed, &data[skew..]), None);
        prop_assert_eq!(content::header_at(seed.wrapping_add(1), &data), None);
        prop_assert_eq!(content::header_at(seed, &data[..15]), None);
    }
}

#[test]
fn different_seeds_differ() {
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    content::fill(1, 0, &mut a);
    content::fill(2, 0, &mut b);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(same < 64, "{same} equal bytes");
}
