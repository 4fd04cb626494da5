//! Sharding functions, bit-identical to their references:
//! - `pg_bigint_hash`: the partition hash PostgreSQL computes for `PARTITION BY HASH (bigint_col)`, i.e.
//!   `hash_combine64(0, hashint8extended(key, HASH_PARTITION_SEED)) % modulus`, so a table hash-partitioned with
//!   modulus = shard count agrees with Ocelot on every key;
//! - the same for text/varchar keys (`hashtextextended`, deterministic collations) and uuid keys
//!   (`uuid_hash_extended`), both built on `hash_bytes_extended` (Bob Jenkins' lookup3 as PostgreSQL uses it);
//! - `sha1`: PgCat's, the last 8 hex digits of the SHA-1 of the key's decimal text, modulo the shard count.
//!
//! Golden vectors are checked against a real PostgreSQL in `tests/it/sharding.rs`.

use sha1::{Digest, Sha1};

/// PostgreSQL's `HASH_PARTITION_SEED` (src/include/catalog/partition.h).
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

#[inline]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline]
fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn seeded(len: u32, seed: u64) -> (u32, u32, u32) {
    let init = 0x9e37_79b9u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

fn le32(k: &[u8]) -> u32 {
    k.iter()
        .enumerate()
        .fold(0u32, |acc, (i, &byte)| acc | (byte as u32) << (8 * i))
}

/// PostgreSQL's `hash_bytes_extended` on a little-endian machine.
pub fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    let (mut a, mut b, mut c) = seeded(k.len() as u32, seed);
    let mut rest = k;
    while rest.len() >= 12 {
        a = a.wrapping_add(le32(&rest[0..4]));
        b = b.wrapping_add(le32(&rest[4..8]));
        c = c.wrapping_add(le32(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    // The last 0..=11 bytes; the lowest byte of c stays free (the length went into the initial value).
    let n = rest.len();
    if n > 8 {
        c = c.wrapping_add(le32(&rest[8..]) << 8);
    }
    if n > 4 {
        b = b.wrapping_add(le32(&rest[4..n.min(8)]));
    }
    if n > 0 {
        a = a.wrapping_add(le32(&rest[..n.min(4)]));
    }
    finish(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// PostgreSQL's `hash_bytes_uint32_extended`.
pub(crate) fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) = seeded(4, seed);
    a = a.wrapping_add(k);
    finish(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// PostgreSQL's `hashint8extended`.
pub fn hashint8extended(val: i64, seed: u64) -> u64 {
    let lo = val as u32;
    let hi = (val >> 32) as u32;
    let lo = lo ^ if val >= 0 { hi } else { !hi };
    hash_uint32_extended(lo, seed)
}

/// PostgreSQL's `hash_combine64`.
pub(crate) fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(0x49a0_f4dd_15e5_a8e3)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// The hash partition (0..modulus) PostgreSQL puts a bigint key in.
pub fn bigint_partition(key: i64, modulus: u64) -> u64 {
    hash_combine64(0, hashint8extended(key, HASH_PARTITION_SEED)) % modulus
}

/// The hash partition of a text/varchar key (deterministic collation).
pub fn text_partition(key: &[u8], modulus: u64) -> u64 {
    hash_combine64(0, hash_bytes_extended(key, HASH_PARTITION_SEED)) % modulus
}

/// The hash partition of a uuid key (its 16 bytes).
pub fn uuid_partition(key: &[u8; 16], modulus: u64) -> u64 {
    hash_combine64(0, hash_bytes_extended(key, HASH_PARTITION_SEED)) % modulus
}

/// PgCat's `sha1` sharding function.
pub fn sha1_shard(key: i64, shards: u64) -> u64 {
    let digest = Sha1::digest(key.to_string().as_bytes());
    // The last 8 hex digits are the last 4 bytes.
    let tail = u32::from_be_bytes([digest[16], digest[17], digest[18], digest[19]]);
    tail as u64 % shards
}

/// Parses a uuid in its text form (with or without hyphens and braces).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s
        .trim_matches(|c| c == '{' || c == '}')
        .bytes()
        .filter(|&b| b != b'-')
        .collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_and_partition_are_stable() {
        // Partitions spread over the modulus.
        let mut seen = [0u32; 3];
        for k in -1000..1000 {
            seen[bigint_partition(k, 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
        assert_eq!(
            parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").map(|u| u[0]),
            Some(0xa0)
        );
        assert!(parse_uuid("nope").is_none());
        assert!(sha1_shard(1, 3) < 3);
    }
}
