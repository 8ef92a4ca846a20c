//! Writing JSON strings fast: output lines are most of the bytes an
//! executor encodes and a router writes to SSE, and `serde_json` looks at
//! them one byte at a time (its `format_escaped_str` was the largest item
//! of a 64 MiB raw-stream profile, once in each process).
//!
//! [`write_str`] writes exactly what `serde_json` writes for a string: `"`,
//! `\` and control characters escaped (`\b \t \n \f \r`, otherwise
//! `\u00xx`), everything else as it is. It skips eight bytes at a time
//! while none of them needs escaping.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\`.
fn needs_escape(w: u64) -> bool {
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | zero_in(w ^ (ONES * b'"' as u64)) | zero_in(w ^ (ONES * b'\\' as u64)) != 0
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
        while let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if needs_escape(w) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
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
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        i += 1;
        start = i;
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
        // (so each lands in every lane of the eight-byte words).
        for b in 0u8..0x80 {
            let c = char::from(b);
            for pad in 0..17 {
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
    fn the_word_test_finds_every_byte_that_needs_escaping() {
        for b in 0u8..=255 {
            let needs = b < 0x20 || b == b'"' || b == b'\\';
            for lane in 0..8 {
                let mut w = [b'a'; 8];
                w[lane] = b;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(w)),
                    needs,
                    "{b:#x} in lane {lane}"
                );
                // Neighbours that do not need escaping never hide it.
                let mut w = [0xffu8; 8];
                w[lane] = b;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(w)),
                    needs,
                    "{b:#x} among 0xff"
                );
            }
        }
    }
}
