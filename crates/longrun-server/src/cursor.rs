//! List cursors. Clients pass a `nextCursor` back unchanged, so the paging scheme may change;
//! today a cursor is the decimal `seq` the next page continues before. Every string of 1 to 19
//! digits is a valid cursor (`^[0-9]{1,19}$`, declared on the `cursor` parameter): one past
//! every operation just pages from the newest.

use crate::error::ApiError;

/// The cursor that continues a listing before `seq`.
pub fn encode(before_seq: i64) -> String {
    before_seq.to_string()
}

/// The `seq` a cursor continues before; `400` for anything but 1 to 19 digits.
pub fn decode(cursor: &str) -> Result<i64, ApiError> {
    let digits = (1..=19).contains(&cursor.len()) && cursor.bytes().all(|b| b.is_ascii_digit());
    // 19 digits always fit a u64; past i64::MAX means past every operation.
    digits
        .then(|| cursor.parse::<u64>().ok())
        .flatten()
        .map(|seq| i64::try_from(seq).unwrap_or(i64::MAX))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid cursor `{cursor}`: pass back a `nextCursor` unchanged"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_the_pattern_rejects() {
        assert_eq!(decode(&encode(42)).unwrap(), 42);
        assert_eq!(decode("0042").unwrap(), 42);
        assert_eq!(decode("9999999999999999999").unwrap(), i64::MAX);
        for bad in [
            "",
            "not a cursor!",
            "-1",
            "+1",
            "1.5",
            " 1",
            "99999999999999999999",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
