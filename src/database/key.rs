//! Key codec: parts joined by 0xFF (a byte UTF-8 never contains), integers big-endian.

pub const SEP: u8 = 0xFF;

/// Joins parts with the separator: `key(&[a, b])` is `a 0xFF b`.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(part);
    }
    out
}

/// `key(parts)` followed by the separator: the prefix of every key that extends it.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = key(parts);
    out.push(SEP);
    out
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn to_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

/// Splits a key into its parts.
pub fn parts(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.split(|b| *b == SEP)
}

/// The last part of a key, as text.
pub fn last_str(key: &[u8]) -> Option<&str> {
    parts(key).last().and_then(|p| std::str::from_utf8(p).ok())
}

/// Two u64s as one 16-byte key, ordered by the first then the second.
pub fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

pub fn split_pair(bytes: &[u8]) -> (u64, u64) {
    (to_u64(&bytes[..8]), to_u64(&bytes[8..16]))
}
