//! Turning a process's output bytes into `log` lines without corrupting them.
//!
//! Lines end at `\n` (removed; `\r` is kept, bytes are bytes). A line longer
//! than [`MAX_LINE`] is split, at a UTF-8 character boundary when the bytes
//! there are UTF-8. A line that is not valid UTF-8 is sent base64-encoded,
//! so nothing is ever replaced or lost.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The longest `data` of one `log` event, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Appends `chunk` and moves every complete line into `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Vec<u8>>) {
        let mut marked = Vec::new();
        self.push_marked(chunk, &mut marked);
        out.extend(marked.into_iter().map(|(line, _)| line));
    }

    /// As [`push`](Self::push), each line paired with whether it is
    /// partial: a piece of a long line, which had no newline after it.
    pub fn push_marked(&mut self, chunk: &[u8], out: &mut Vec<(Vec<u8>, bool)>) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            self.drain_long(out);
            out.push((std::mem::take(&mut self.buf), false));
            rest = &rest[i + 1..];
        }
        self.buf.extend_from_slice(rest);
        self.drain_long(out);
    }

    /// The last line when the output did not end with a newline (always
    /// partial).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }

    /// Emits full-size pieces while the pending line is over the limit.
    fn drain_long(&mut self, out: &mut Vec<(Vec<u8>, bool)>) {
        while self.buf.len() > MAX_LINE {
            let cut = utf8_cut(&self.buf, MAX_LINE);
            let tail = self.buf.split_off(cut);
            out.push((std::mem::replace(&mut self.buf, tail), true));
        }
    }
}

/// A cut point at or before `at` that does not split a UTF-8 character
/// (only moved when the bytes around `at` are a character's continuation).
fn utf8_cut(buf: &[u8], at: usize) -> usize {
    let mut cut = at;
    while cut > at.saturating_sub(3) && cut > 0 && (buf[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if cut == 0 || (buf[cut] & 0xC0) == 0x80 {
        at
    } else {
        cut
    }
}

/// `(data, encoding)` for a `log` event.
pub fn encode_line(line: &[u8]) -> (String, Option<String>) {
    encode_owned(line.to_vec())
}

/// As [`encode_line`], reusing the line's buffer when it is UTF-8.
pub fn encode_owned(line: Vec<u8>) -> (String, Option<String>) {
    match String::from_utf8(line) {
        Ok(s) => (s, None),
        Err(e) => (STANDARD.encode(e.as_bytes()), Some("base64".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn keeps_last_line_without_newline() {
        assert_eq!(split(&[b"a\nb"]), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(split(&[b"a\n"]), vec![b"a".to_vec()]);
        assert_eq!(split(&[b"\n\n"]), vec![b"".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn multibyte_characters_split_across_reads_survive() {
        let s = "héllo 🎉 wörld\n".as_bytes();
        // Every possible split point of the input.
        for i in 0..s.len() {
            let lines = split(&[&s[..i], &s[i..]]);
            assert_eq!(
                lines,
                vec!["héllo 🎉 wörld".as_bytes().to_vec()],
                "split at {i}"
            );
            assert_eq!(encode_line(&lines[0]).1, None);
        }
    }

    #[test]
    fn long_lines_split_on_char_boundaries() {
        let line = "é".repeat(MAX_LINE); // 2 bytes each
        let lines = split(&[line.as_bytes(), b"\n"]);
        assert!(lines.len() >= 2);
        assert!(
            lines
                .iter()
                .all(|l| l.len() <= MAX_LINE && std::str::from_utf8(l).is_ok())
        );
        assert_eq!(lines.concat(), line.as_bytes());
    }

    #[test]
    fn partial_marks_rebuild_the_output_exactly() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"a\n\nb".to_vec();
        input.extend_from_slice(b"\n");
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nend");
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in input.chunks(1000) {
            s.push_marked(c, &mut out);
        }
        out.extend(s.finish().map(|l| (l, true)));
        let mut rebuilt = Vec::new();
        for (line, partial) in &out {
            rebuilt.extend_from_slice(line);
            if !partial {
                rebuilt.push(b'\n');
            }
        }
        assert_eq!(rebuilt, input);
        assert_eq!(out.iter().filter(|(_, p)| *p).count(), 2);
    }

    #[test]
    fn invalid_utf8_is_base64_and_exact() {
        let bytes = [0xff, 0x00, b'a', 0xc3];
        let (data, enc) = encode_line(&bytes);
        assert_eq!(enc.as_deref(), Some("base64"));
        assert_eq!(STANDARD.decode(data).unwrap(), bytes);
        let (data, enc) = encode_line(b"a\rb");
        assert_eq!((data.as_str(), enc), ("a\rb", None));
    }
}
