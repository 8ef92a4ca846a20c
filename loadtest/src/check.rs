//! Judging one run's events the way a client must: `start` first, `id`s
//! 1, 2, 3 ... without holes, exactly one `exit` and nothing after it, the
//! exit the scenario expects, and stdout rebuilt byte for byte (`partial`
//! pieces joined, base64 lines decoded) matching what the entrypoint wrote.

use std::borrow::Cow;
use std::time::Instant;

use base64::Engine as _;
use serde::Deserialize;

use crate::sse::Event;
use crate::stats::ErrorKind;

/// FNV-1a, 64 bits: a digest of output, cheap enough to run on the client
/// at hundreds of MB/s (it detects loss, duplication and reordering; it is
/// not a defence against an adversary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

/// What stdout must be, and how the run must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `completed` with exit code 0; stdout not checked.
    Exit0,
    /// `completed`, 0, and stdout exactly these bytes.
    Stdout(Vec<u8>),
    /// `completed`, 0, and stdout of `bytes` bytes in `lines` whole lines
    /// (the rest in `partial` pieces) with this digest.
    Output { lines: u64, bytes: u64, digest: u64 },
    /// `canceled`.
    Canceled,
}

/// The stdout a run delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Output {
    pub lines: u64,
    pub bytes: u64,
    pub digest: u64,
}

#[derive(Deserialize)]
struct Log<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(default)]
    partial: bool,
    #[serde(default, borrow)]
    encoding: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exit {
    exit_code: i64,
    reason: String,
}

/// The judge of one run, fed its events in order.
#[derive(Debug)]
pub struct Check {
    expect: Expect,
    next_seq: u64,
    exits: u32,
    pub invoke_id: Option<String>,
    pub first_event: Option<Instant>,
    pub exit_at: Option<Instant>,
    exit: Option<(i64, String)>,
    out: Output,
    digest: Digest,
    captured: Vec<u8>,
    problem: Option<ErrorKind>,
}

impl Check {
    pub fn new(expect: Expect) -> Self {
        Self {
            expect,
            next_seq: 1,
            exits: 0,
            invoke_id: None,
            first_event: None,
            exit_at: None,
            exit: None,
            out: Output::default(),
            digest: Digest::default(),
            captured: Vec::new(),
            problem: None,
        }
    }

    fn fail(&mut self, kind: ErrorKind) {
        self.problem.get_or_insert(kind);
    }

    /// Takes the next event, received at `now`.
    pub fn event(&mut self, e: Event<'_>, now: Instant) {
        self.first_event.get_or_insert(now);
        if self.exits > 0 {
            self.fail(ErrorKind::AfterExit);
        }
        // A `gap` says events were lost; its id is the end of the range.
        if e.name == b"gap" {
            self.fail(ErrorKind::Gap);
        } else if e.id != Some(self.next_seq) {
            self.fail(ErrorKind::Sequence);
        }
        self.next_seq = e.id.unwrap_or(self.next_seq) + 1;
        match e.name {
            b"start" => {
                if self.invoke_id.is_some() || e.id != Some(1) {
                    self.fail(ErrorKind::MissingStart);
                }
                let v: serde_json::Value = serde_json::from_slice(e.data).unwrap_or_default();
                match v["invokeId"].as_str() {
                    Some(id) => self.invoke_id = Some(id.to_string()),
                    None => self.fail(ErrorKind::BadEvent),
                }
            }
            _ if self.invoke_id.is_none() => self.fail(ErrorKind::MissingStart),
            b"log" => self.log(e.data),
            b"exit" => {
                self.exits += 1;
                if self.exits > 1 {
                    self.fail(ErrorKind::DuplicateExit);
                }
                self.exit_at = Some(now);
                match serde_json::from_slice::<Exit>(e.data) {
                    Ok(x) => self.exit = Some((x.exit_code, x.reason)),
                    Err(_) => self.fail(ErrorKind::BadEvent),
                }
            }
            b"gap" => self.fail(ErrorKind::Gap),
            _ => self.fail(ErrorKind::BadEvent),
        }
    }

    fn log(&mut self, data: &[u8]) {
        let Ok(log) = serde_json::from_slice::<Log<'_>>(data) else {
            return self.fail(ErrorKind::BadEvent);
        };
        if log.stream != "stdout" {
            return;
        }
        let decoded;
        let bytes: &[u8] = match log.encoding.as_deref() {
            None => log.data.as_bytes(),
            Some("base64") => match base64::engine::general_purpose::STANDARD.decode(&*log.data) {
                Ok(b) => {
                    decoded = b;
                    &decoded
                }
                Err(_) => return self.fail(ErrorKind::BadEvent),
            },
            Some(_) => return self.fail(ErrorKind::BadEvent),
        };
        self.digest.update(bytes);
        self.out.bytes += bytes.len() as u64;
        if matches!(self.expect, Expect::Stdout(_)) {
            self.captured.extend_from_slice(bytes);
        }
        if !log.partial {
            self.digest.update(b"\n");
            self.out.bytes += 1;
            self.out.lines += 1;
            if matches!(self.expect, Expect::Stdout(_)) {
                self.captured.push(b'\n');
            }
        }
    }

    /// The verdict once the stream has ended.
    pub fn finish(mut self) -> Result<Output, ErrorKind> {
        self.out.digest = self.digest.value();
        if let Some(p) = self.problem {
            return Err(p);
        }
        if self.invoke_id.is_none() {
            return Err(ErrorKind::MissingStart);
        }
        let Some((code, reason)) = self.exit.take() else {
            return Err(ErrorKind::MissingExit);
        };
        let completed0 = reason == "completed" && code == 0;
        match &self.expect {
            Expect::Canceled if reason != "canceled" => Err(ErrorKind::WrongExit),
            Expect::Canceled => Ok(self.out),
            _ if !completed0 => Err(ErrorKind::WrongExit),
            Expect::Exit0 => Ok(self.out),
            Expect::Stdout(want) if *want == self.captured => Ok(self.out),
            Expect::Output {
                lines,
                bytes,
                digest,
            } if (*lines, *bytes, *digest) == (self.out.lines, self.out.bytes, self.out.digest) => {
                Ok(self.out)
            }
            _ => Err(ErrorKind::WrongOutput),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(id: u64, name: &'a str, data: &'a str) -> Event<'a> {
        Event {
            id: Some(id),
            name: name.as_bytes(),
            data: data.as_bytes(),
        }
    }

    fn run(expect: Expect, events: &[Event<'_>]) -> Result<Output, ErrorKind> {
        let mut c = Check::new(expect);
        for e in events {
            c.event(*e, Instant::now());
        }
        c.finish()
    }

    const START: &str = r#"{"invokeId":"inv-1","startedAt":1}"#;
    const EXIT0: &str = r#"{"invokeId":"inv-1","exitCode":0,"durationMs":1,"reason":"completed"}"#;

    #[test]
    fn a_clean_run_passes_and_rebuilds_stdout() {
        let mut d = Digest::default();
        d.update(b"ab\ncd");
        let events = [
            ev(1, "start", START),
            ev(2, "log", r#"{"stream":"stdout","data":"a","partial":true}"#),
            ev(3, "log", r#"{"stream":"stdout","data":"b"}"#),
            ev(4, "log", r#"{"stream":"stderr","data":"noise"}"#),
            ev(
                5,
                "log",
                r#"{"stream":"stdout","data":"Y2Q=","encoding":"base64","partial":true}"#,
            ),
            ev(6, "exit", EXIT0),
        ];
        let want = Expect::Output {
            lines: 1,
            bytes: 5,
            digest: d.value(),
        };
        assert_eq!(run(want, &events).map(|o| o.lines), Ok(1));
        assert_eq!(
            run(Expect::Stdout(b"ab\ncd".to_vec()), &events).map(|o| o.bytes),
            Ok(5)
        );
        assert_eq!(
            run(Expect::Stdout(b"ab\n".to_vec()), &events),
            Err(ErrorKind::WrongOutput)
        );
    }

    #[test]
    fn protocol_faults_are_named() {
        let s = ev(1, "start", START);
        assert_eq!(run(Expect::Exit0, &[s]), Err(ErrorKind::MissingExit));
        assert_eq!(
            run(Expect::Exit0, &[s, ev(3, "exit", EXIT0)]),
            Err(ErrorKind::Sequence)
        );
        assert_eq!(
            run(
                Expect::Exit0,
                &[s, ev(2, "exit", EXIT0), ev(3, "exit", EXIT0)]
            ),
            Err(ErrorKind::AfterExit)
        );
        assert_eq!(
            run(Expect::Canceled, &[s, ev(2, "exit", EXIT0)]),
            Err(ErrorKind::WrongExit)
        );
        assert_eq!(
            run(Expect::Exit0, &[ev(1, "exit", EXIT0)]),
            Err(ErrorKind::MissingStart)
        );
        assert_eq!(
            run(
                Expect::Exit0,
                &[s, ev(2, "gap", "{}"), ev(3, "exit", EXIT0)]
            ),
            Err(ErrorKind::Gap)
        );
    }
}
