//! A Server-Sent Events parser (the WHATWG event-stream format, LF or CRLF line ends): bytes
//! in, complete events out.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The last event id seen on the stream (`id:`), if any.
    pub id: Option<String>,
    /// The event type (`event:`), when not the default `message`.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Accumulates chunks and yields events as their terminating blank line arrives.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(len) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + len];
            start += len + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.buf.drain(..start);
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            return self.data.take().map(|data| SseEvent {
                id: self.last_id.clone(),
                event,
                data,
            });
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => {} // a comment, e.g. a keep-alive
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments_are_skipped() {
        let mut parser = SseParser::default();
        assert!(parser.push(b": keep-alive\n\nid: 3\nda").is_empty());
        let events = parser.push(b"ta: {\"a\":\r\ndata: 1}\r\n\r\nevent: end\ndata:x\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("3".into()),
                    event: None,
                    data: "{\"a\":\n1}".into()
                },
                SseEvent {
                    id: Some("3".into()),
                    event: Some("end".into()),
                    data: "x".into()
                },
            ]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"id: 7\n\n").is_empty());
        assert_eq!(parser.push(b"data\n\n")[0].id.as_deref(), Some("7"));
    }
}
