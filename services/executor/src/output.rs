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
    /// Appends `chunk` and moves every complete line into `out`, each paired
    /// with whether it is partial: a piece of a long line, which had no
    /// newline after it.
    pub fn push_marked(&mut self, chunk: &[u8], out: &mut Vec<(Vec<u8>, bool)>) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.append(&rest[..i], out);
            out.push((std::mem::take(&mut self.buf), false));
            rest = &rest[i + 1..];
        }
        self.append(rest, out);
    }

    /// The last line when the output did not end with a newline (always
    /// partial).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }

    /// Adds `bytes` to the pending line, emitting a piece each time the line
    /// goes past the limit. Each byte is copied once (a piece is cut off
    /// the front of the pending line, not the rest copied out of it).
    fn append(&mut self, mut bytes: &[u8], out: &mut Vec<(Vec<u8>, bool)>) {
        while self.buf.len() + bytes.len() > MAX_LINE {
            let take = MAX_LINE - self.buf.len();
            if self.buf.capacity() < MAX_LINE {
                self.buf.reserve_exact(MAX_LINE - self.buf.len());
            }
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // The piece ends before a character that the cut would split
            // (the 1-3 bytes it moves back go on with the next piece).
            let next = |k: usize| self.buf.get(k).or_else(|| bytes.get(k - MAX_LINE)).copied();
            let cut = utf8_cut(next, MAX_LINE);
            // The line goes on: the next piece gets room for a whole piece
            // at once (not regrown, and copied, as the reads come in).
            let mut carried = Vec::with_capacity(MAX_LINE);
            carried.extend_from_slice(&self.buf[cut..]);
            self.buf.truncate(cut);
            out.push((std::mem::replace(&mut self.buf, carried), true));
        }
        self.buf.extend_from_slice(bytes);
    }
}

/// A cut point at or before `at` that does not split a UTF-8 character
/// (only moved when the bytes around `at` are a character's continuation),
/// `byte(k)` giving the line's byte `k`.
fn utf8_cut(byte: impl Fn(usize) -> Option<u8>, at: usize) -> usize {
    let continuation = |k: usize| byte(k).is_some_and(|b| (b & 0xC0) == 0x80);
    let mut cut = at;
    while cut > at.saturating_sub(3) && cut > 0 && continuation(cut) {
        cut -= 1;
    }
    if cut == 0 || continuation(cut) {
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
            s.push_marked(c, &mut out);
        }
        let mut lines: Vec<Vec<u8>> = out.into_iter().map(|(line, _)| line).collect();
        lines.extend(s.finish());
        lines
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

    /// What the splitter must give for `input` as a whole: its lines, each
    /// cut into pieces of at most [`MAX_LINE`] bytes at a character boundary
    /// (when there is one within 3 bytes); the last line, without a newline,
    /// partial.
    fn reference(input: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
        let last = lines.pop().unwrap_or_default();
        let mut out = Vec::new();
        let mut pieces = |line: &[u8], whole: bool| {
            let mut buf = line.to_vec();
            while buf.len() > MAX_LINE {
                let cut = utf8_cut(|k| buf.get(k).copied(), MAX_LINE);
                let tail = buf.split_off(cut);
                out.push((std::mem::replace(&mut buf, tail), true));
            }
            if whole || !buf.is_empty() {
                out.push((buf, !whole));
            }
        };
        for line in lines {
            pieces(line, true);
        }
        pieces(last, false);
        out
    }

    #[test]
    fn any_chunking_gives_the_lines_of_the_whole() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet: [&[u8]; 6] = [
            b"a",
            b"\n",
            "é".as_bytes(),
            "🎉".as_bytes(),
            &[0xff],
            &[0x80],
        ];
        for round in 0..40 {
            let len = next(3 * MAX_LINE as u64) as usize;
            // Long runs of one kind of character, so cuts land everywhere.
            let mut input = Vec::with_capacity(len);
            while input.len() < len {
                let piece = alphabet[next(if round % 4 == 0 { 6 } else { 4 }) as usize];
                for _ in 0..1 + next(40_000) {
                    if piece == b"\n" && next(50) != 0 {
                        break;
                    }
                    input.extend_from_slice(piece);
                }
            }
            let mut s = LineSplitter::default();
            let mut out = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = (1 + next(100_000) as usize).min(rest.len());
                s.push_marked(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            out.extend(s.finish().map(|l| (l, true)));
            let want = reference(&input);
            assert_eq!(
                out.len(),
                want.len(),
                "round {round}: {} bytes",
                input.len()
            );
            assert!(out == want, "round {round}: {} bytes", input.len());
        }
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
