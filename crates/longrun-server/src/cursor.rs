//! List cursors: opaque to clients (base64url of the last `seq` seen), so the paging scheme can
//! change without breaking them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

/// The cursor that continues a listing before `seq`.
pub fn encode(before_seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("seq:{before_seq}"))
}

/// The `seq` a cursor continues before; `400` for a cursor this server did not make.
pub fn decode(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("seq:")?.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid cursor `{cursor}`: pass back a `nextCursor` unchanged"
            ))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_rejects_garbage() {
        assert_eq!(super::decode(&super::encode(42)).unwrap(), 42);
        assert!(super::decode("not a cursor!").is_err());
        assert!(super::decode("c2VxOng").is_err()); // "seq:x"
    }
}
