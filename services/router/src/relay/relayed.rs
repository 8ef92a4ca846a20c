//! What a relay hands on: events decoded, except output lines, whose `data`
//! JSON goes to the client exactly as the executor published it. Lines are
//! most of a stream's events and bytes; parsing each into strings only to
//! write the same JSON again was most of the router's work per line.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use agenttier_bus::msg::{Event, EventKind, LogData};

use super::sequencer::Sequenced;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Relayed {
    Event(Event),
    /// A `log` event: its seq and its `data` object's JSON as published
    /// (compact: no line break in it).
    Log {
        seq: u64,
        data: Bytes,
    },
}

impl Relayed {
    /// An event as published on the bus; a `log` keeps its `data` unparsed.
    pub fn decode(payload: &Bytes) -> serde_json::Result<Self> {
        if let Some((seq, json)) = executor_log(payload) {
            return Ok(Relayed::Log {
                seq,
                data: payload.slice_ref(json),
            });
        }
        #[derive(Deserialize)]
        struct Envelope<'a> {
            seq: u64,
            #[serde(borrow)]
            event: Cow<'a, str>,
            #[serde(borrow, default)]
            data: Option<&'a RawValue>,
        }
        let env: Envelope = serde_json::from_slice(payload)?;
        if let (true, Some(raw)) = (env.event == "log", env.data) {
            let json = raw.get().as_bytes();
            // Written to SSE as one `data:` line: a line break (whitespace
            // some other publisher left in) would end it, so that JSON goes
            // the long way, decoded and written again.
            if json.first() == Some(&b'{') && memchr::memchr2(b'\n', b'\r', json).is_none() {
                return Ok(Relayed::Log {
                    seq: env.seq,
                    data: payload.slice_ref(json),
                });
            }
        }
        serde_json::from_slice::<Event>(payload).map(Relayed::Event)
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Relayed::Event(e) => e.kind.name(),
            Relayed::Log { .. } => "log",
        }
    }

    /// Appends the SSE `data` JSON (compact: never a line break).
    pub fn write_data_json(&self, out: &mut Vec<u8>) {
        match self {
            Relayed::Event(e) => e.kind.write_data_json(out),
            Relayed::Log { data, .. } => out.extend_from_slice(data),
        }
    }

    /// About the bytes it takes on the way to the client (what delivery
    /// reports count, and what an SSE frame reserves for it).
    pub fn size(&self) -> usize {
        match self {
            Relayed::Event(Event {
                kind: EventKind::Log(l),
                ..
            }) => l.data.len() + 64,
            Relayed::Event(_) => 64,
            Relayed::Log { data, .. } => data.len() + 64,
        }
    }

    /// The event with every field decoded, for consumers that read them
    /// (an exec's JSON answer, a terminal's bytes). `None` for a `log`
    /// whose `data` is not a log's (no executor publishes that).
    pub fn into_event(self) -> Option<Event> {
        match self {
            Relayed::Event(e) => Some(e),
            Relayed::Log { seq, data } => match serde_json::from_slice::<LogData>(&data) {
                Ok(l) => Some(Event {
                    seq,
                    kind: EventKind::Log(l),
                }),
                Err(e) => {
                    tracing::warn!(seq, error = %e, "undecodable log event skipped");
                    None
                }
            },
        }
    }
}

/// A line as the executor publishes it ([`Event::to_json`]:
/// `{"seq":N,"event":"log","data":{...}}`, in that order): its seq and its
/// `data` JSON, found without parsing that JSON. The bus is trusted for
/// what a line says, as for every other event (a publisher on a run's
/// subject can already write any output and any exit); what is checked is
/// what the SSE response itself needs: one `data:` line (no line break)
/// of UTF-8. Anything else is `None` and takes the parser's way.
fn executor_log(payload: &[u8]) -> Option<(u64, &[u8])> {
    let rest = payload.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let json = rest[digits..]
        .strip_prefix(b",\"event\":\"log\",\"data\":")?
        .strip_suffix(b"}")?;
    let framed = json.len() >= 2 && json[0] == b'{' && json[json.len() - 1] == b'}';
    (framed && memchr::memchr2(b'\n', b'\r', json).is_none() && std::str::from_utf8(json).is_ok())
        .then_some((seq, json))
}

impl From<Event> for Relayed {
    fn from(e: Event) -> Self {
        Relayed::Event(e)
    }
}

impl Sequenced for Relayed {
    fn seq(&self) -> u64 {
        match self {
            Relayed::Event(e) => e.seq,
            Relayed::Log { seq, .. } => *seq,
        }
    }
    fn is_heartbeat(&self) -> bool {
        matches!(self, Relayed::Event(e) if Sequenced::is_heartbeat(e))
    }
    fn is_terminal(&self) -> bool {
        matches!(self, Relayed::Event(e) if Sequenced::is_terminal(e))
    }
    fn gap(from: u64, to: u64) -> Self {
        Relayed::Event(<Event as Sequenced>::gap(from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenttier_bus::msg::{ExitData, ExitReason};

    fn sse_data(r: &Relayed) -> String {
        let mut out = Vec::new();
        r.write_data_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_log_passes_through_as_published_and_reads_back_the_same() {
        let line = Event {
            seq: 7,
            kind: EventKind::Log(LogData {
                stream: "stderr".into(),
                data: "tab\t\"q\" \\ é🎉 \u{1}".into(),
                encoding: None,
                partial: true,
            }),
        };
        let payload = Bytes::from(line.to_json());
        let r = Relayed::decode(&payload).unwrap();
        assert!(matches!(r, Relayed::Log { seq: 7, .. }), "{r:?}");
        assert_eq!(r.name(), "log");
        let mut want = Vec::new();
        line.kind.write_data_json(&mut want);
        assert_eq!(sse_data(&r), String::from_utf8(want).unwrap());
        assert_eq!(r.into_event(), Some(line));
    }

    #[test]
    fn only_the_executors_layout_of_a_line_skips_the_parser() {
        let line = Event {
            seq: 18_446_744_073_709_551_615,
            kind: EventKind::Log(LogData {
                stream: "stdout".into(),
                data: "{\"seq\":1} \u{7f} 日本".into(),
                encoding: None,
                partial: false,
            }),
        };
        let payload = line.to_json();
        let mut want = Vec::new();
        line.kind.write_data_json(&mut want);
        assert_eq!(executor_log(&payload), Some((line.seq, &want[..])));

        for other in [
            // Another field order, or spacing: valid, but parsed.
            r#"{"event":"log","seq":3,"data":{"stream":"stdout","data":"x"}}"#,
            r#"{"seq": 3,"event":"log","data":{"stream":"stdout","data":"x"}}"#,
            // Not a log, a `data` that is not an object, a message cut short.
            r#"{"seq":3,"event":"stderr","data":{"stream":"stdout","data":"x"}}"#,
            r#"{"seq":3,"event":"log","data":"x"}"#,
            r#"{"seq":3,"event":"log","data":{}"#,
            // A seq past u64, no seq.
            r#"{"seq":18446744073709551616,"event":"log","data":{"stream":"stdout","data":"x"}}"#,
            r#"{"seq":,"event":"log","data":{"stream":"stdout","data":"x"}}"#,
            // A line break would end the SSE `data:` line.
            "{\"seq\":3,\"event\":\"log\",\"data\":{\"stream\":\"stdout\",\r\"data\":\"x\"}}",
        ] {
            assert_eq!(executor_log(other.as_bytes()), None, "{other}");
        }
        // Not UTF-8: not passed on, and the parser refuses it.
        let mut bad = br#"{"seq":3,"event":"log","data":{"stream":"stdout","data":"x"#.to_vec();
        bad.extend_from_slice(b"\xff\"}}");
        assert_eq!(executor_log(&bad), None);
        assert!(Relayed::decode(&Bytes::from(bad)).is_err());
    }

    #[test]
    fn other_events_and_odd_logs_are_decoded() {
        let exit = Event {
            seq: 9,
            kind: EventKind::Exit(ExitData {
                invoke_id: "inv-1".into(),
                exit_code: 0,
                duration_ms: 3,
                reason: ExitReason::Completed,
                cause: None,
                message: None,
            }),
        };
        let r = Relayed::decode(&Bytes::from(exit.to_json())).unwrap();
        assert_eq!(r, Relayed::Event(exit));
        assert!(Sequenced::is_terminal(&r));

        // Pretty-printed by some other publisher: still one SSE line.
        let pretty = "{\"seq\":2,\"event\":\"log\",\"data\":{\n  \"stream\": \"stdout\",\n  \"data\": \"x\"\n}}";
        let r = Relayed::decode(&Bytes::from(pretty)).unwrap();
        assert!(matches!(r, Relayed::Event(_)), "{r:?}");
        assert_eq!(sse_data(&r), r#"{"stream":"stdout","data":"x"}"#);

        let beat = Relayed::decode(&Bytes::from(r#"{"seq":4,"event":"heartbeat"}"#)).unwrap();
        assert!(beat.is_heartbeat());
        for bad in [
            r#"{"event":"log","data":{"stream":"stdout","data":"x"}}"#,
            r#"{"seq":1,"event":"nope"}"#,
            r#"{"seq":1,"event":"log","data":{"stream":"stdout"}"#,
        ] {
            assert!(Relayed::decode(&Bytes::from(bad)).is_err(), "{bad}");
        }
    }
}
