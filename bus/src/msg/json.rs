//! Writing JSON strings fast: output lines are most of the bytes an
//! executor encodes and a router writes to SSE, and `serde_json` looks at
//! them one byte at a time (its `format_escaped_str` was the largest item
//! of a 64 MiB raw-stream profile, once in each process).
//!
//! [`write_str`] writes exactly what `serde_json` writes for a string: `"`,
//! `\` and control characters escaped (`\b \t \n \f \r`, otherwise
//! `\u00xx`), everything else as it is. It skips 32 bytes at a time while
//! none of them needs escaping.

/// Bytes looked at together: a fold over a fixed-size chunk without an
/// early exit, which the compiler turns into vector compares (`write_str`
/// of 64 KiB of text: ~7 GB/s here, against ~4 with eight-byte words and
/// bit tricks; a 63-byte line ~3 against ~2).
const CHUNK: usize = 32;

/// Whether any byte of `chunk` is below 0x20, `"` or `\`.
fn needs_escape(chunk: &[u8; CHUNK]) -> bool {
    chunk.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// How many bytes at the start of `bytes` need no escaping: whole chunks,
/// and all of a shorter tail (padded to a chunk) when it needs none.
fn plain_chunks(bytes: &[u8]) -> usize {
    let (chunks, tail) = bytes.as_chunks::<CHUNK>();
    let plain = chunks.iter().take_while(|c| !needs_escape(c)).count();
    if plain < chunks.len() || tail.is_empty() {
        return plain * CHUNK;
    }
    let mut padded = [b'a'; CHUNK];
    padded[..tail.len()].copy_from_slice(tail);
    bytes.len() - if needs_escape(&padded) { tail.len() } else { 0 }
}

/// Appends `s` to `out` as a JSON string, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `bytes[start..i]` is waiting to be copied as it is.
    let mut start = 0;
    let mut i = 0;
    loop {
        i += plain_chunks(&bytes[i..]);
        // Byte by byte through the chunk that needs escaping (or the tail
        // shorter than a chunk), then whole chunks again.
        let end = (i + CHUNK).min(bytes.len());
        if i == end {
            break;
        }
        for (k, &b) in bytes.iter().enumerate().take(end).skip(i) {
            let escaped: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => &[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ],
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..k]);
            out.extend_from_slice(escaped);
            start = k + 1;
        }
        i = end;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn writes_what_serde_json_writes() {
        // Every ASCII byte, alone and at every offset of a longer string
        // (so each lands in every position of a chunk, and in the tail).
        for b in 0u8..0x80 {
            let c = char::from(b);
            for pad in 0..2 * CHUNK + 1 {
                let s = format!("{}{c}{}", "a".repeat(pad), "z".repeat(9));
                assert_eq!(
                    ours(&s),
                    serde_json::to_string(&s).unwrap(),
                    "{b:#x} at {pad}"
                );
            }
        }
        for s in [
            "",
            "plain text that needs nothing",
            "tab\there \"quoted\" back\\slash\r\n",
            "héllo 🎉 wörld \u{7f}\u{80}\u{2028}",
            "\u{0}\u{1}\u{1f} \u{8}\u{c}",
            &"0123456789abcdef".repeat(4096),
            &"x\"".repeat(1000),
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn the_chunk_test_finds_every_byte_that_needs_escaping() {
        for b in 0u8..=255 {
            let needs = b < 0x20 || b == b'"' || b == b'\\';
            for at in 0..CHUNK {
                // Among bytes that need nothing, low and high ones.
                for fill in [b'a', b' ', 0x7f, 0xff] {
                    let mut c = [fill; CHUNK];
                    c[at] = b;
                    assert_eq!(needs_escape(&c), needs, "{b:#x} at {at} among {fill:#x}");
                }
            }
        }
    }
}
