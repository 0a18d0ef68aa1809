//! The fingerprint of a submit body for `Idempotency-Key`: the SHA-256 (hex) of the body's JSON
//! with object keys sorted and no insignificant whitespace, so two bodies that differ only in
//! formatting or key order are the same request.

use longrun_core::compact::lowercase_hex;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fingerprint of a parsed request body.
pub fn fingerprint(body: &Value) -> String {
    let canonical = serde_json::to_vec(&sorted(body)).expect("a JSON value serializes");
    lowercase_hex(&Sha256::digest(&canonical))
}

/// `value` with the keys of every object in sorted order (whatever map type serde_json uses).
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_matter_but_values_do() {
        let a: Value =
            serde_json::from_str(r#"{"name":"x","kwargs":{"b":1,"a":[{"z":1,"y":2}]}}"#).unwrap();
        let b: Value = serde_json::from_str(
            "{ \"kwargs\" : { \"a\": [ {\"y\":2, \"z\":1} ], \"b\": 1 },\n \"name\": \"x\" }",
        )
        .unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&json!({"name": "x", "kwargs": {"b": 2}}))
        );
        assert_eq!(fingerprint(&a).len(), 64);
    }
}
