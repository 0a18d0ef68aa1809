//! W3C Trace Context: reading `traceparent` and making new trace and span ids.

use uuid::Uuid;

/// A trace id (32 lowercase hex) and span id (16 lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    /// 16 bytes, lowercase hex.
    pub trace_id: String,
    /// 8 bytes, lowercase hex.
    pub span_id: String,
}

impl TraceIds {
    /// Parses a `traceparent` header (`00-<trace-id>-<parent-id>-<flags>`); `None` when it is
    /// malformed or carries the all-zero ids the spec forbids.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && hex(span, 16)
            && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0')
            && span.bytes().any(|b| b != b'0')
            && (version != "00" || parts.next().is_none());
        valid.then(|| Self {
            trace_id: trace.to_owned(),
            span_id: span.to_owned(),
        })
    }

    /// New random ids (from a v4 UUID's random bits).
    pub fn generate() -> Self {
        let trace = Uuid::new_v4().simple().to_string();
        let span = Uuid::new_v4().simple().to_string()[..16].to_owned();
        Self {
            trace_id: trace,
            span_id: span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let ids =
            TraceIds::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ids.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.span_id, "00f067aa0ba902b7");
    }

    #[test]
    fn rejects_malformed_and_zero_ids() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceIds::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_ids_have_the_right_shape() {
        let ids = TraceIds::generate();
        assert!(TraceIds::parse(&format!("00-{}-{}-01", ids.trace_id, ids.span_id)).is_some());
    }
}
