use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::json;

/// One event of an invoke or a configure, as published on its events subject.
///
/// `seq` counts 1, 2, 3, ... per invoke and becomes the SSE `id:`; the other
/// fields are exactly the SSE event name and `data` JSON a client sees.
/// Heartbeats repeat the last `seq` and are never shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The event's JSON, as published: what `serde_json` writes for it,
    /// written by hand for `log` events (most of the bytes of a stream).
    pub fn to_json(&self) -> Vec<u8> {
        let EventKind::Log(d) = &self.kind else {
            return serde_json::to_vec(self).unwrap_or_default();
        };
        let mut out = Vec::with_capacity(d.data.len() + 96);
        let _ = write!(out, "{{\"seq\":{},\"event\":\"log\",\"data\":", self.seq);
        d.write_json(&mut out);
        out.push(b'}');
        out
    }
}

/// By hand rather than derived: a derived `flatten` buffers every event
/// into an intermediate tree before decoding it, and routers decode every
/// event of every stream. Here `seq` is taken out of the map as it passes
/// and the rest goes straight to [`EventKind`]'s own decoder.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = Event;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event object with seq, event and data")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Event, A::Error> {
                let mut rest = WithoutSeq { map, seq: None };
                let kind = EventKind::deserialize(MapOf(&mut rest))?;
                let seq = rest.seq.ok_or_else(|| de::Error::missing_field("seq"))?;
                Ok(Event { seq, kind })
            }
        }

        /// The map minus its `seq` entry, which it keeps.
        struct WithoutSeq<A> {
            map: A,
            seq: Option<u64>,
        }
        impl<'de, A: MapAccess<'de>> MapAccess<'de> for WithoutSeq<A> {
            type Error = A::Error;
            fn next_key_seed<K: DeserializeSeed<'de>>(
                &mut self,
                seed: K,
            ) -> Result<Option<K::Value>, A::Error> {
                loop {
                    let Some(key) = self.map.next_key::<Key<'de>>()? else {
                        return Ok(None);
                    };
                    if key.as_str() == "seq" {
                        self.seq = Some(self.map.next_value()?);
                        continue;
                    }
                    return match key {
                        Key::Borrowed(k) => seed
                            .deserialize(de::value::BorrowedStrDeserializer::new(k))
                            .map(Some),
                        Key::Owned(k) => seed.deserialize(k.into_deserializer()).map(Some),
                    };
                }
            }
            fn next_value_seed<V: DeserializeSeed<'de>>(
                &mut self,
                seed: V,
            ) -> Result<V::Value, A::Error> {
                self.map.next_value_seed(seed)
            }
        }

        /// A map key, borrowed from the input when it can be.
        enum Key<'de> {
            Borrowed(&'de str),
            Owned(String),
        }
        impl Key<'_> {
            fn as_str(&self) -> &str {
                match self {
                    Key::Borrowed(k) => k,
                    Key::Owned(k) => k,
                }
            }
        }
        impl<'de> Deserialize<'de> for Key<'de> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl<'de> Visitor<'de> for KeyVisitor {
                    type Value = Key<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                        Ok(Key::Borrowed(v))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                        Ok(Key::Owned(v.to_string()))
                    }
                }
                d.deserialize_str(KeyVisitor)
            }
        }

        /// A deserializer that hands its visitor the given map.
        struct MapOf<'a, A>(&'a mut A);
        impl<'de, A: MapAccess<'de>> serde::Deserializer<'de> for MapOf<'_, A> {
            type Error = A::Error;
            fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, A::Error> {
                v.visit_map(self.0)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map struct enum identifier ignored_any
            }
        }

        d.deserialize_map(EventVisitor)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "lowercase")]
pub enum EventKind {
    Start(StartData),
    Log(LogData),
    Exit(ExitData),
    Gap(GapData),
    /// Configure: a failure in a phase (`files` or `install`).
    Error(serde_json::Value),
    /// Configure: the outcome.
    Result(serde_json::Value),
    /// Liveness of the run; not an SSE event.
    Heartbeat,
}

impl EventKind {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Start(_) => "start",
            EventKind::Log(_) => "log",
            EventKind::Exit(_) => "exit",
            EventKind::Gap(_) => "gap",
            EventKind::Error(_) => "error",
            EventKind::Result(_) => "result",
            EventKind::Heartbeat => "heartbeat",
        }
    }

    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, EventKind::Exit(_) | EventKind::Result(_))
    }

    /// The SSE `data` JSON.
    pub fn data_json(&self) -> String {
        let mut out = Vec::new();
        self.write_data_json(&mut out);
        String::from_utf8(out).unwrap_or_else(|_| "{}".to_string())
    }

    /// Appends the SSE `data` JSON to `out` (compact: never a newline).
    pub fn write_data_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let r = match self {
            EventKind::Start(d) => serde_json::to_writer(&mut *out, d),
            EventKind::Log(d) => {
                d.write_json(out);
                Ok(())
            }
            EventKind::Exit(d) => serde_json::to_writer(&mut *out, d),
            EventKind::Gap(d) => serde_json::to_writer(&mut *out, d),
            EventKind::Error(v) | EventKind::Result(v) => serde_json::to_writer(&mut *out, v),
            EventKind::Heartbeat => {
                out.extend_from_slice(b"{}");
                Ok(())
            }
        };
        if r.is_err() {
            out.truncate(start);
            out.extend_from_slice(b"{}");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartData {
    pub invoke_id: String,
    /// Unix milliseconds.
    pub started_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogData {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub data: String,
    /// `base64` when the line was not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The output did not end with a newline here: a piece of a line longer
    /// than the split size, or the last bytes of a stream without a final
    /// newline. Absent (false) for a whole line, whose newline was removed.
    /// With it a client can rebuild the output byte for byte.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl LogData {
    /// Appends the JSON `serde_json` writes for it (same fields, same order).
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"stream\":");
        json::write_str(out, &self.stream);
        out.extend_from_slice(b",\"data\":");
        json::write_str(out, &self.data);
        if let Some(e) = &self.encoding {
            out.extend_from_slice(b",\"encoding\":");
            json::write_str(out, e);
        }
        if self.partial {
            out.extend_from_slice(b",\"partial\":true");
        }
        out.push(b'}');
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitReason {
    Completed,
    Canceled,
    Timeout,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitData {
    pub invoke_id: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub reason: ExitReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapData {
    pub from: u64,
    pub to: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_event_plus_data() {
        let e = Event {
            seq: 3,
            kind: EventKind::Log(LogData {
                stream: "stdout".into(),
                data: "hello world".into(),
                encoding: None,
                partial: false,
            }),
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"seq":3,"event":"log","data":{"stream":"stdout","data":"hello world"}})
        );
        assert_eq!(serde_json::from_value::<Event>(j).unwrap(), e);
        assert_eq!(
            e.kind.data_json(),
            r#"{"stream":"stdout","data":"hello world"}"#
        );
    }

    #[test]
    fn log_events_are_written_as_serde_json_writes_them() {
        let log = |seq, data: &str, encoding: Option<&str>, partial| Event {
            seq,
            kind: EventKind::Log(LogData {
                stream: "stderr".into(),
                data: data.into(),
                encoding: encoding.map(str::to_string),
                partial,
            }),
        };
        let exit = Event {
            seq: 9,
            kind: EventKind::Exit(ExitData {
                invoke_id: "inv-1".into(),
                exit_code: 3,
                duration_ms: 5,
                reason: ExitReason::Completed,
                cause: None,
                message: Some("a \"b\"".into()),
            }),
        };
        for e in [
            log(1, "", None, false),
            log(u64::MAX, "tab\t\"q\" \\ \u{1}é🎉", None, true),
            log(3, "/w==", Some("base64"), false),
            log(4, &"0123456789abcdef".repeat(4096), None, true),
            exit,
        ] {
            assert_eq!(
                String::from_utf8(e.to_json()).unwrap(),
                serde_json::to_string(&e).unwrap()
            );
            let mut data = Vec::new();
            e.kind.write_data_json(&mut data);
            let want = match &e.kind {
                EventKind::Log(d) => serde_json::to_string(d),
                EventKind::Exit(d) => serde_json::to_string(d),
                other => panic!("{other:?}"),
            };
            assert_eq!(String::from_utf8(data).unwrap(), want.unwrap());
        }
    }

    #[test]
    fn events_decode_whatever_the_field_order_and_escapes() {
        let cases = [
            (r#"{"seq":1,"event":"heartbeat"}"#, 1, "heartbeat"),
            (r#"{"event":"heartbeat","seq":2}"#, 2, "heartbeat"),
            (
                r#"{"data":{"stream":"stderr","data":"x"},"seq":3,"event":"log"}"#,
                3,
                "log",
            ),
            (
                r#"{"seq":4,"event":"gap","data":{"from":1,"to":3}}"#,
                4,
                "gap",
            ),
            (
                r#"{"seq":5,"event":"result","data":{"skipped":true},"extra":[1]}"#,
                5,
                "result",
            ),
        ];
        for (json, seq, name) in cases {
            let e: Event = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!((e.seq, e.kind.name()), (seq, name), "{json}");
            let again: Event = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
            assert_eq!(again, e);
        }
        for bad in [
            r#"{"event":"log","data":{"stream":"stdout","data":"x"}}"#,
            r#"{"seq":1,"event":"nope"}"#,
            r#"{"seq":"1","event":"heartbeat"}"#,
            r#"[1]"#,
        ] {
            assert!(serde_json::from_str::<Event>(bad).is_err(), "{bad}");
        }
    }
}
