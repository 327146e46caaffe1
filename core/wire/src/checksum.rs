//! The Internet checksum (RFC 1071), computed in software: a user-space stack has no offload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes summed before the wide accumulator is folded: at most 2^13 pairs of 32-bit words,
/// each pair below 2^33, so a block adds less than 2^46 to a sum that is below 2^33 after
/// every fold, and the accumulator can never overflow, whatever the length.
const BLOCK_LEN: usize = 1 << 16;

/// Adds `data` to a running one's-complement sum, as big-endian 16-bit words. An odd final
/// byte is padded with zero, so only the last chunk of a packet may have odd length. The
/// result is folded to at most `0xFFFF` (zero only when `sum` and every byte are zero);
/// `sum` may be any value.
///
/// The words are summed eight bytes at a time, as two big-endian 32-bit halves added into a
/// 64-bit accumulator and folded only once per block: the loop has no data-dependent branch
/// and vectorises. This gives the same one's-complement sum as adding 16-bit words, because
/// 2^16 is 1 modulo 2^16 - 1: a 32-bit word `high * 2^16 + low` counts as `high + low`.
pub fn accumulate(sum: u32, data: &[u8]) -> u32 {
    let mut total = u64::from(sum);
    // Every block but the last has an even length, so no odd byte lands inside the data.
    for block in data.chunks(BLOCK_LEN) {
        total = fold_to_33_bits(total + sum_block(block));
    }
    // Folded to 16 bits, so callers can add a few more small values (the pseudo-header's
    // protocol and length) with plain wrapping additions and never lose a carry.
    while total > 0xFFFF {
        total = (total & 0xFFFF) + (total >> 16);
    }
    total as u32
}

/// The sum of `block` (at most [`BLOCK_LEN`] bytes) as big-endian words, not yet folded.
fn sum_block(block: &[u8]) -> u64 {
    let (octets, rest) = block.as_chunks::<8>();
    let mut total = 0u64;
    for octet in octets {
        let word = u64::from_be_bytes(*octet);
        total += (word >> 32) + (word & 0xFFFF_FFFF);
    }
    let (pairs, odd) = rest.as_chunks::<2>();
    for pair in pairs {
        total += u64::from(u16::from_be_bytes(*pair));
    }
    if let [last] = odd {
        total += u64::from(*last) << 8;
    }
    total
}

/// Adds the upper 32 bits of `total` to its lower 32 (an end-around carry): the result is
/// below 2^33 and equal to `total` modulo 2^16 - 1, and zero only when `total` is.
const fn fold_to_33_bits(total: u64) -> u64 {
    (total & 0xFFFF_FFFF) + (total >> 32)
}

/// Folds a running sum into the final 16-bit checksum (one's complement of the folded sum).
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` alone (the IPv4 header checksum, ICMP).
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// The running sum of the IPv4 pseudo-header that TCP and UDP checksums cover.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum = sum.wrapping_add(u32::from(protocol));
    sum.wrapping_add(u32::from(length))
}

/// The running sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u32 {
    let mut sum = accumulate(0, &src.octets());
    sum = accumulate(sum, &dst.octets());
    sum = accumulate(sum, &length.to_be_bytes());
    sum.wrapping_add(u32::from(next_header))
}

/// The pseudo-header sum for either address family; mixed families sum to zero, which makes
/// every checksum over them fail.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo_header_v4(s, d, protocol, u16::try_from(length).unwrap_or(u16::MAX))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_header_v6(s, d, protocol, length),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The worked example of RFC 1071 section 3: the sum of these words is 0xddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(accumulate(0, &data)), !0xddf2);
    }

    /// A real IPv4 header (from a capture) whose checksum field is 0xb1e6.
    #[test]
    fn ipv4_header_verifies_to_zero() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0);
        let mut zeroed = header;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), checksum(&[0x12, 0x00]));
    }

    #[test]
    fn long_input_does_not_overflow() {
        let data = vec![0xff; 1 << 20];
        assert_eq!(checksum(&data), 0);
    }

    /// The definition, one 16-bit word at a time into a wide sum, folded at the end.
    fn reference_sum(sum: u32, data: &[u8]) -> u64 {
        let mut total = u64::from(sum);
        for pair in data.chunks(2) {
            let high = u64::from(pair[0]) << 8;
            let low = pair.get(1).copied().map_or(0, u64::from);
            total += high | low;
        }
        total
    }

    fn reference_finish(mut total: u64) -> u16 {
        while total > 0xFFFF {
            total = (total & 0xFFFF) + (total >> 16);
        }
        !(total as u16)
    }

    /// Bytes from a small linear congruential generator: varied, and the same every run.
    fn noise(len: usize, mut state: u32) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    /// Lengths around the folding block, odd and even, all 0xFF (the largest sums) and
    /// varied, with the largest running sum.
    #[test]
    fn inputs_longer_than_a_block_match_the_reference() {
        for len in [
            BLOCK_LEN - 1,
            BLOCK_LEN,
            BLOCK_LEN + 1,
            BLOCK_LEN + 7,
            3 * BLOCK_LEN + 5,
        ] {
            for data in [vec![0xFF; len], noise(len, len as u32)] {
                for sum in [0, 1, 0xFFFF, u32::MAX] {
                    let expected = reference_finish(reference_sum(sum, &data));
                    assert_eq!(finish(accumulate(sum, &data)), expected, "length {len}");
                }
            }
        }
    }

    #[test]
    fn zero_stays_zero_and_folds_are_not_lost() {
        assert_eq!(accumulate(0, &[]), 0);
        assert_eq!(accumulate(0, &[0; 9]), 0);
        assert_eq!(accumulate(u32::MAX, &[]), 0xFFFF);
        // 0xFFFF_FFFF_FFFF_FFFF sums to 4 * 0xFFFF, which is 0xFFFF once folded, not 0.
        assert_eq!(accumulate(0, &[0xFF; 8]), 0xFFFF);
        assert_eq!(accumulate(0, &[0x80, 0, 0, 0, 0x80, 0, 0, 0]), 1);
    }

    proptest! {
        /// Any data, any running sum, cut into any chunks at even offsets: the same
        /// checksum as the word-by-word definition, and a sum that stays folded.
        #[test]
        fn accumulate_matches_the_reference(
            sum in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..1500, 0..4),
        ) {
            let expected = reference_finish(reference_sum(sum, &data));
            let whole = accumulate(sum, &data);
            prop_assert!(whole <= 0xFFFF);
            prop_assert_eq!(finish(whole), expected);
            prop_assert_eq!(u64::from(whole) % 0xFFFF, reference_sum(sum, &data) % 0xFFFF);

            // Only the last chunk may be odd: cut at even offsets.
            let mut offsets: Vec<usize> = cuts.iter().map(|cut| (2 * cut).min(data.len())).collect();
            offsets.sort_unstable();
            let mut running = sum;
            let mut start = 0;
            for end in offsets.into_iter().chain([data.len()]) {
                running = accumulate(running, &data[start..end]);
                start = end;
            }
            prop_assert_eq!(finish(running), expected);
        }
    }
}
