//! Limits on what a JSON body holds, beyond its byte size: the nesting depth, measured on the
//! raw bytes before parsing (a loop, so no input can exhaust the stack), and the serialized
//! size of the free-form fields (`args`, `kwargs`, `content`, `result`), both `422`.

use std::io::Write;

use serde_json::Value;

use crate::error::ApiError;

/// `422` when arrays and objects in `body` nest deeper than `max` (the outermost is level 1).
/// Brackets inside strings do not count; invalid JSON is left for the parser to reject.
pub fn check_depth(body: &[u8], max: usize) -> Result<(), ApiError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ApiError::invalid(format!(
                        "the request body nests arrays and objects deeper than {max} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `422` naming `field` when `value`, serialized as compact JSON, is over `max` bytes.
pub fn check_size(field: &str, value: Option<&Value>, max: usize) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Ok(());
    };
    if serde_json::to_writer(Budget(max), value).is_err() {
        return Err(ApiError::invalid(format!(
            "`{field}` is over {max} bytes as JSON; store large data elsewhere and pass a reference"
        )));
    }
    Ok(())
}

/// A writer that fails once more than its budget of bytes is written, so measuring stops at
/// the limit instead of serializing a huge value.
struct Budget(usize);

impl Write for Budget {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self
            .0
            .checked_sub(buf.len())
            .ok_or_else(|| std::io::Error::other("over budget"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn depth_counts_containers_outside_strings() {
        assert!(check_depth(b"{}", 1).is_ok());
        assert!(check_depth(br#"{"a":[1]}"#, 1).is_err());
        assert!(check_depth(br#"{"a":[1]}"#, 2).is_ok());
        assert!(check_depth(br#"{"a":"[[[[\"[["}"#, 1).is_ok());
        assert!(check_depth(br#"[[],[],[[]]]"#, 3).is_ok());
        assert!(check_depth(br#"[[],[],[[[]]]]"#, 3).is_err());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(check_depth(deep.as_bytes(), 32).is_err());
    }

    #[test]
    fn size_is_the_compact_json_length() {
        let value = json!({"a": [1, 2]}); // {"a":[1,2]} is 11 bytes
        assert!(check_size("x", Some(&value), 11).is_ok());
        let err = check_size("x", Some(&value), 10).unwrap_err();
        assert!(err.problem().detail.contains("`x`"));
        assert!(check_size("x", None, 0).is_ok());
    }
}
