//! An incremental `text/event-stream` parser that hands each event to a
//! callback, borrowing its fields from buffers it reuses: a stream of a
//! million `log` events costs no allocation per event, so the client stays
//! out of the way of the server it measures on a small machine.

/// One event; `name` is `message` when the event has no `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `id:` field as a number; `None` when absent or not a number.
    pub id: Option<u64>,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

#[derive(Debug, Default)]
pub struct Parser {
    /// An incomplete line carried to the next chunk.
    partial: Vec<u8>,
    id: Option<u64>,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl Parser {
    /// Feeds `chunk`, calling `f` for each event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(Event<'_>)) {
        if self.partial.is_empty() {
            let used = self.lines(chunk, &mut f);
            self.partial.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(chunk);
            let used = self.lines(&buf, &mut f);
            buf.drain(..used);
            self.partial = buf;
        }
    }

    /// Handles every complete line of `input`; returns the bytes used.
    fn lines(&mut self, input: &[u8], f: &mut impl FnMut(Event<'_>)) -> usize {
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &input[pos..]) {
            let mut line = &input[pos..pos + nl];
            pos += nl + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            self.line(line, f);
        }
        pos
    }

    fn line(&mut self, line: &[u8], f: &mut impl FnMut(Event<'_>)) {
        if line.is_empty() {
            if self.has_data || !self.name.is_empty() {
                let name: &[u8] = if self.name.is_empty() {
                    b"message"
                } else {
                    &self.name
                };
                f(Event {
                    id: self.id,
                    name,
                    data: &self.data,
                });
            }
            self.id = None;
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"id" => self.id = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()),
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<(Option<u64>, String, String)> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| {
                out.push((
                    e.id,
                    String::from_utf8_lossy(e.name).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
        }
        out
    }

    #[test]
    fn events_split_anywhere_and_comments_skipped() {
        let whole = b": keepalive\n\nid: 1\nevent: start\ndata: {\"a\":1}\r\n\r\nid:2\ndata: x\ndata: y\n\n";
        let want = vec![
            (Some(1), "start".to_string(), "{\"a\":1}".to_string()),
            (Some(2), "message".to_string(), "x\ny".to_string()),
        ];
        assert_eq!(parse(&[whole]), want);
        for cut in 1..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(parse(&[a, b]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(parse(&bytes), want);
    }
}
