//! The stored form of an operation: the `body` its row keeps beside the columns queries use.
//!
//! Stores write [MessagePack] with the fields in declaration order and no field names: a third
//! of the bytes of the JSON wire form, about half the time to write and to read again
//! (measured with the yardstick drain, where the SQLite writer spent a fifth of its time
//! turning bodies into JSON and back). Rows written before carry the JSON form and are still
//! read: a body that starts with `{` is JSON; MessagePack starts an operation, an array of
//! its fields, with `0xdc`.
//!
//! Timestamps and trace ids take their compact forms of [`crate::compact`] in the body
//! (`[secs, nanos]` and bytes, not text): about 120 bytes less for an operation that has run,
//! so less to write to the log and to the table on every change.
//!
//! Because fields are stored by position, [`Operation`]'s fields may only ever be appended,
//! each new one with `#[serde(default)]` so that bodies stored before it still decode; never
//! reordered, changed in type, or removed. `decodes_bodies_stored_by_earlier_versions`
//! keeps bodies as earlier versions wrote them.
//!
//! [MessagePack]: https://msgpack.org

use crate::{Operation, StoreError};

/// Bytes reserved for a body up front: a small operation takes 300 to 400, and growing the
/// buffer from empty copied it half a dozen times (0.33 µs to encode one, 0.23 µs reserved).
const BODY_CAPACITY: usize = 512;

/// The body to store for `op`.
pub fn encode(op: &Operation) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::with_capacity(BODY_CAPACITY);
    rmp_serde::encode::write(&mut body, op).map_err(StoreError::database)?;
    Ok(body)
}

/// The operation a stored body holds, in either form.
pub fn decode(body: &[u8]) -> Result<Operation, StoreError> {
    if body.first() == Some(&b'{') {
        serde_json::from_slice(body).map_err(StoreError::database)
    } else {
        rmp_serde::from_slice(body).map_err(StoreError::database)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::{Meta, OperationError, Resource, RetryPolicy, Status};

    /// An operation with every optional field set, and JSON of every kind in its values.
    fn full() -> Operation {
        let id = Uuid::parse_str("01a23729-381c-73b0-8316-0e4351de3855").unwrap();
        Operation {
            id,
            seq: 0,
            name: "reports.build".into(),
            queue: "reports".into(),
            priority: -3,
            status: Status::Failed,
            created_at: datetime!(2026-12-02 14:29:37.948330517 UTC),
            updated_at: datetime!(2026-12-02 14:29:39.5 UTC),
            started_at: Some(datetime!(2026-12-02 14:29:38 UTC)),
            completed_at: Some(datetime!(2026-12-02 14:29:39.5 UTC)),
            run_at: datetime!(2026-12-02 14:29:37.948330517 UTC),
            progress_pct: Some(42.5),
            status_detail: Some("rendering page 3 of 7".into()),
            args: json!([1, -2, 3.25, u64::MAX, "x", null, true, [], {"k": [{"deep": {}}]}]),
            kwargs: json!({"b": 1.0, "a": "é\u{0}\"", "c": {"d": null}}),
            content: Some(json!({"text": "in"})),
            result: Some(json!(7)),
            result_url: Some("https://example.com/r/7".into()),
            resources: vec![Resource {
                id: "r1".into(),
                url: "https://example.com/r1".into(),
            }],
            error: Some(OperationError {
                code: "timeout".into(),
                error_type: "TimeoutError".into(),
                message: "took too long".into(),
            }),
            retries: 2,
            retry_policy: RetryPolicy {
                max_retries: 5,
                backoff_base_secs: 0.5,
                backoff_cap_secs: 60.0,
            },
            meta: Meta {
                url: Some("https://example.com/v1/reports".into()),
                model: Some("report".into()),
                action: None,
            },
            parent_id: Some(Uuid::nil()),
            root_id: id,
            trace_id: "2f93ebacf7e14485bc763c550d6304c4".into(),
            span_id: "05a6ce950c5249dd".into(),
            execution_id: Some(Uuid::max()),
            worker: Some("w-1".into()),
            lease_expires_at: None,
            cancel_requested: true,
            customer: 9,
            created_by: 4,
            created_by_name: "ops".into(),
            version: 6,
        }
    }

    #[test]
    fn an_operation_comes_back_as_it_was_stored() {
        let op = full();
        let body = encode(&op).unwrap();
        assert_eq!(decode(&body).unwrap(), op);
        assert_eq!(
            body[0], 0xdc,
            "an array of the fields, told apart from JSON's `{{`"
        );
        let json = serde_json::to_vec(&op).unwrap();
        assert!(
            body.len() * 2 < json.len(),
            "{} bytes against JSON's {}",
            body.len(),
            json.len()
        );
    }

    #[test]
    fn a_body_stored_as_json_is_read() {
        let op = full();
        assert_eq!(decode(&serde_json::to_vec(&op).unwrap()).unwrap(), op);
    }

    #[test]
    fn decodes_bodies_stored_by_earlier_versions() {
        // `encode(&full())` as of the first version that stored MessagePack (timestamps and
        // trace ids as text), and as of the first with their compact forms: a change to the
        // operation's fields, or to how the encoder lays them out, that breaks this breaks
        // every stored row.
        for stored in [
            &include_bytes!("stored/v1.msgpack")[..],
            &include_bytes!("stored/v2.msgpack")[..],
        ] {
            assert_eq!(decode(stored).unwrap(), full());
        }
    }

    #[test]
    fn timestamps_and_trace_ids_are_stored_compact_and_read_back_exactly() {
        let op = full();
        let body = encode(&op).unwrap();
        let as_text = include_bytes!("stored/v1.msgpack");
        assert!(
            body.len() + 90 < as_text.len(),
            "{} bytes against {} with text",
            body.len(),
            as_text.len()
        );
        let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(b"2026-12-02"), "no date text");
        assert!(!contains(op.trace_id.as_bytes()), "no hex text");

        // Nanoseconds, offsets other than UTC, and ids that are not hex or longer than a trace
        // id survive as they were.
        let mut odd = op.clone();
        odd.created_at = datetime!(1969-07-20 20:17:40.000000001 -05:30);
        odd.trace_id = "Not-Hex".into();
        odd.span_id = "00".repeat(17);
        let back = decode(&encode(&odd).unwrap()).unwrap();
        assert_eq!(back, odd);
        assert_eq!(back.created_at.offset(), odd.created_at.offset());
    }

    #[test]
    fn json_keeps_timestamps_and_trace_ids_as_text() {
        let json = serde_json::to_value(full()).unwrap();
        assert_eq!(json["createdAt"], "2026-12-02T14:29:37.948330517Z");
        assert_eq!(json["startedAt"], "2026-12-02T14:29:38Z");
        assert_eq!(json["leaseExpiresAt"], serde_json::Value::Null);
        assert_eq!(json["traceId"], "2f93ebacf7e14485bc763c550d6304c4");
        assert_eq!(json["spanId"], "05a6ce950c5249dd");
    }

    #[test]
    fn a_damaged_body_is_an_error() {
        let body = encode(&full()).unwrap();
        for bad in [&body[..body.len() / 2], b"{\"id\":", b"", b"\xc1"] {
            assert!(
                matches!(decode(bad), Err(StoreError::Database(_))),
                "{bad:?}"
            );
        }
    }
}
