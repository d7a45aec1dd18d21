//! How values are written in a config file: human-readable durations and sizes, the
//! compression level (`1..=19` or `"none"`). Each reports the offending text.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); use e.g. \"30s\", \"10m\", \"30days\""
        ))
    })
}

pub(super) fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => s
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                serde::de::Error::custom(format!("invalid size {s:?} ({e}); use e.g. \"16MiB\""))
            }),
    }
}

pub(super) fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

pub(super) fn de_compression<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Level {
        Int(i32),
        Text(String),
    }
    match Level::deserialize(d)? {
        Level::Int(n) if (1..=19).contains(&n) => Ok(Some(n)),
        Level::Int(n) => Err(serde::de::Error::custom(format!(
            "compression_level {n} is out of range: use 1..=19 or \"none\""
        ))),
        Level::Text(s) if s == "none" => Ok(None),
        Level::Text(s) => Err(serde::de::Error::custom(format!(
            "compression_level {s:?}: use 1..=19 or \"none\""
        ))),
    }
}
