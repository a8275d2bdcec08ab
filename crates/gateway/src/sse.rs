//! A small, split-invariant Server-Sent Events decoder.
//!
//! It only *observes*: the proxy relays the upstream's original bytes untouched and feeds a copy of each chunk here.
//! Events come out the same however the input is split into chunks, with LF, CRLF or CR line endings (a CR at the end
//! of one chunk followed by LF at the start of the next is one line break). Memory is bounded: a line longer than
//! `max_line` is discarded and its event marked truncated, so an upstream cannot make the gateway buffer without end.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, `None` when absent (the SSE default type "message").
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// A line of this event exceeded the decoder's limit and was dropped.
    pub truncated: bool,
}

/// Why an Anthropic stream event cannot be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// A line exceeded the decoder's limit.
    TooLarge,
    /// An `event: error` whose data is not JSON.
    BrokenError,
    /// Data that is not JSON on any other event: skipped.
    Skip,
}

impl Unreadable {
    /// Why the stream fails here (a translator ends its client's stream with it), or `None` for an event to skip.
    pub fn failure(self) -> Option<&'static str> {
        match self {
            Unreadable::TooLarge => Some("upstream sent an event too large to relay"),
            Unreadable::BrokenError => Some("upstream stream failed"),
            Unreadable::Skip => None,
        }
    }
}

impl SseEvent {
    /// The event's JSON data and its type (the data's `type`, else the `event:` field): the one reading of an Anthropic
    /// stream event that every translator shares.
    pub fn anthropic(&self) -> Result<(String, serde_json::Value), Unreadable> {
        if self.truncated {
            return Err(Unreadable::TooLarge);
        }
        let Ok(data) = serde_json::from_str::<serde_json::Value>(&self.data) else {
            return Err(if self.event.as_deref() == Some("error") {
                Unreadable::BrokenError
            } else {
                Unreadable::Skip
            });
        };
        let kind = data
            .get("type")
            .and_then(serde_json::Value::as_str)
            .or(self.event.as_deref())
            .unwrap_or_default()
            .to_string();
        Ok((kind, data))
    }
}

#[derive(Debug)]
pub struct SseDecoder {
    line: Vec<u8>,
    line_overflow: bool,
    after_cr: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    truncated: bool,
    max_line: usize,
}

/// Default longest line kept: 4 MiB (Anthropic events are small deltas; a whole message never comes as one line).
pub const DEFAULT_MAX_LINE: usize = 4 * 1024 * 1024;

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::with_max_line(DEFAULT_MAX_LINE)
    }
}

impl SseDecoder {
    pub fn with_max_line(max_line: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            line_overflow: false,
            after_cr: false,
            event: None,
            data: Vec::new(),
            has_data: false,
            truncated: false,
            max_line,
        }
    }

    /// Whether no event is partly received (nothing buffered since the last dispatch).
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && !self.line_overflow && !self.has_data && self.event.is_none()
    }

    /// Feeds one chunk; calls `on_event` for every event completed by it.
    pub fn push(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(SseEvent)) {
        if chunk.is_empty() {
            return; // an empty chunk must not end a pending CR (its LF may come next)
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    self.append(&chunk[..i]);
                    let cr = chunk[i] == b'\r';
                    chunk = &chunk[i + 1..];
                    if cr {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    self.end_line(on_event);
                }
                None => {
                    self.append(chunk);
                    chunk = &[];
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line {
            self.line_overflow = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        if std::mem::take(&mut self.line_overflow) {
            self.truncated = true;
            return;
        }
        if self.line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if self.line[0] != b':' {
            // (a line starting with ':' is a comment)
            let line = &self.line;
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (&line[..], &[][..]),
            };
            match field {
                b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
                _ => {} // id, retry and unknown fields do not matter to the gateway
            }
        }
        self.line.clear(); // keeps the allocation
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent)) {
        let event = self.event.take();
        let truncated = std::mem::take(&mut self.truncated);
        if !std::mem::take(&mut self.has_data) && !truncated {
            self.data.clear();
            return;
        }
        // Validate UTF-8 once per event (fast path), not per line.
        let data = String::from_utf8(std::mem::take(&mut self.data))
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        on_event(SseEvent {
            event,
            data,
            truncated,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut |e| out.push(e));
        }
        out
    }

    const SAMPLE: &str = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n: comment\nevent: ping\ndata: {}\n\n\
event: content_block_delta\ndata: {\"a\":\ndata:  1}\n\nretry: 5\ndata:no-space\n\nevent: message_stop\ndata: {}\n\n";

    fn expected() -> Vec<SseEvent> {
        let ev = |e: Option<&str>, d: &str| SseEvent {
            event: e.map(str::to_string),
            data: d.into(),
            truncated: false,
        };
        vec![
            ev(Some("message_start"), "{\"type\":\"message_start\"}"),
            ev(Some("ping"), "{}"),
            ev(Some("content_block_delta"), "{\"a\":\n 1}"),
            ev(None, "no-space"),
            ev(Some("message_stop"), "{}"),
        ]
    }

    #[test]
    fn decodes_fields_comments_and_multiline_data() {
        assert_eq!(decode_chunks(&[SAMPLE.as_bytes()]), expected());
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_is_harmless() {
        let events = decode_chunks(&[b"event: ping\r", b"", b"\ndata: {}\r\n\r\n"]);
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some("ping".into()),
                data: "{}".into(),
                truncated: false
            }]
        );
    }

    #[test]
    fn incomplete_trailing_event_is_not_dispatched() {
        assert!(decode_chunks(&[b"event: x\ndata: 1\n"]).is_empty());
    }

    #[test]
    fn overlong_line_is_dropped_and_memory_stays_bounded() {
        let mut d = SseDecoder::with_max_line(16);
        let mut out = Vec::new();
        d.push(b"event: big\ndata: ", &mut |e| out.push(e));
        for _ in 0..1000 {
            d.push(b"xxxxxxxxxxxxxxxxxxxxxxxx", &mut |e| out.push(e));
        }
        assert!(d.line.capacity() <= 64);
        d.push(b"\n\nevent: small\ndata: ok\n\n", &mut |e| out.push(e));
        assert_eq!(out.len(), 2);
        assert!(out[0].truncated);
        assert_eq!(out[1].data, "ok");
    }

    proptest! {
        /// However the stream is split, and whichever line ending it uses, the same events come out.
        #[test]
        fn split_invariant(cuts in proptest::collection::vec(0usize..400, 0..12), ending in 0usize..3) {
            let text = match ending {
                0 => SAMPLE.to_string(),
                1 => SAMPLE.replace('\n', "\r\n"),
                _ => SAMPLE.replace('\n', "\r"),
            };
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut prev = 0;
            for c in cuts {
                chunks.push(&bytes[prev..c]);
                prev = c;
            }
            chunks.push(&bytes[prev..]);
            prop_assert_eq!(decode_chunks(&chunks), expected());
        }

        /// Arbitrary bytes never panic and byte-at-a-time decoding equals whole decoding.
        #[test]
        fn arbitrary_bytes_one_by_one(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let whole = decode_chunks(&[&bytes]);
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(decode_chunks(&singles), whole);
        }
    }
}
