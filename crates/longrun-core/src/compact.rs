//! Serde helpers that keep [`crate::Operation`]'s timestamps and trace ids compact where the
//! format is not meant for people.
//!
//! In JSON (a human-readable format) nothing changes: timestamps are RFC 3339 text and trace
//! and span ids lowercase hex. In the stored MessagePack body a timestamp is `[secs, nanos]`
//! (`[secs, nanos, offset_secs]` when not in UTC) and an id its bytes: 11 bytes instead of 31
//! for a timestamp, 18 instead of 34 for a trace id, and no date text to format or parse on
//! every write and read. Readers take both forms, so bodies stored as text still decode.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `#[serde(with = "crate::compact::timestamp")]` for an [`OffsetDateTime`].
pub mod timestamp {
    use super::*;

    /// Writes RFC 3339 text to a human-readable format, `[secs, nanos(, offset)]` otherwise.
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return time::serde::rfc3339::serialize(at, s);
        }
        let offset = at.offset().whole_seconds();
        let mut tuple = s.serialize_tuple(if offset == 0 { 2 } else { 3 })?;
        tuple.serialize_element(&at.unix_timestamp())?;
        tuple.serialize_element(&at.nanosecond())?;
        if offset != 0 {
            tuple.serialize_element(&offset)?;
        }
        tuple.end()
    }

    /// Reads either form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        if d.is_human_readable() {
            time::serde::rfc3339::deserialize(d)
        } else {
            d.deserialize_any(TimestampVisitor)
        }
    }
}

/// `#[serde(with = "crate::compact::timestamp_option")]` for an `Option<OffsetDateTime>`.
pub mod timestamp_option {
    use super::*;

    /// Writes `None` as nil, a timestamp as [`timestamp::serialize`] does.
    pub fn serialize<S: Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&Compact(at)),
            None => s.serialize_none(),
        }
    }

    /// Reads nil or either form of a timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        if d.is_human_readable() {
            time::serde::rfc3339::option::deserialize(d)
        } else {
            d.deserialize_option(OptionVisitor)
        }
    }

    /// A timestamp serialized as [`timestamp::serialize`] does, for `serialize_some`.
    struct Compact<'a>(&'a OffsetDateTime);

    impl serde::Serialize for Compact<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            timestamp::serialize(self.0, s)
        }
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<OffsetDateTime>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("nil or a timestamp")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(TimestampVisitor).map(Some)
        }
    }
}

/// `#[serde(with = "crate::compact::hex_id")]` for a trace or span id kept as lowercase hex.
pub mod hex_id {
    use super::*;

    /// Writes the text to a human-readable format, its bytes otherwise (text that is not
    /// lowercase hex of even length, or longer than a trace id, is written as text).
    pub fn serialize<S: Serializer>(id: &str, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = [0; MAX_BYTES];
        match (!s.is_human_readable())
            .then(|| decode_hex(id, &mut bytes))
            .flatten()
        {
            Some(bytes) => s.serialize_bytes(bytes),
            None => s.serialize_str(id),
        }
    }

    /// Reads text or bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        if d.is_human_readable() {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(HexVisitor)
        }
    }

    /// A trace id's 16 bytes: the longest id kept as bytes.
    const MAX_BYTES: usize = 16;

    /// `text`'s bytes, decoded into `out` without allocating.
    fn decode_hex<'a>(text: &str, out: &'a mut [u8; MAX_BYTES]) -> Option<&'a [u8]> {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let text = text.as_bytes();
        let len = text.len() / 2;
        if !text.len().is_multiple_of(2) || len > MAX_BYTES {
            return None;
        }
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(&out[..len])
    }

    struct HexVisitor;

    impl Visitor<'_> for HexVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an id as text or bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_owned())
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<String, E> {
            Ok(lowercase_hex(bytes))
        }
    }
}

/// `bytes` as lowercase hex text (also how key secrets' and request bodies' SHA-256 digests are
/// kept).
pub fn lowercase_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)].into());
        text.push(DIGITS[usize::from(byte & 0xf)].into());
    }
    text
}

/// Reads a timestamp as RFC 3339 text or as `[secs, nanos(, offset)]`.
struct TimestampVisitor;

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = OffsetDateTime;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp or [secs, nanos(, offset)]")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<OffsetDateTime, E> {
        OffsetDateTime::parse(text, &Rfc3339).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OffsetDateTime, A::Error> {
        let missing = || de::Error::custom("a timestamp needs seconds and nanoseconds");
        let secs: i64 = seq.next_element()?.ok_or_else(missing)?;
        let nanos: u32 = seq.next_element()?.ok_or_else(missing)?;
        let offset: i32 = seq.next_element()?.unwrap_or(0);
        let at = OffsetDateTime::from_unix_timestamp(secs)
            .and_then(|at| at.replace_nanosecond(nanos))
            .map_err(de::Error::custom)?;
        if offset == 0 {
            return Ok(at);
        }
        UtcOffset::from_whole_seconds(offset)
            .map_err(de::Error::custom)
            .and_then(|offset| {
                at.checked_to_offset(offset)
                    .ok_or_else(|| de::Error::custom("timestamp out of range in its offset"))
            })
    }
}
