//! Serde helpers for the original schema's conventions: `""` and null mean "unset", a null
//! list is an empty list.

use std::fmt::Display;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::error::BadIpAddr;

/// A null value (`key:` or `key: ~`) is the type's default, e.g. an empty list. The original
/// shipped `service-groups:` with nothing after it and crashed on it; torc reads it as empty.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An optional value written as text, where null and `""` both mean "unset", as in the
/// original (`management_ip: ""`, `node_name: ""`).
pub(crate) fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    match Option::<String>::deserialize(deserializer)? {
        Some(text) if !text.trim().is_empty() => {
            text.trim().parse().map(Some).map_err(D::Error::custom)
        }
        _ => Ok(None),
    }
}

/// An IP address, with an error that quotes the text (std's says only "invalid IP address
/// syntax").
pub(crate) fn ip_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_ip(&text).map_err(D::Error::custom)
}

/// Like [`ip_addr`], but null and `""` mean "none".
pub(crate) fn opt_ip_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<IpAddr>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        Some(text) if !text.trim().is_empty() => {
            parse_ip(&text).map(Some).map_err(D::Error::custom)
        }
        _ => Ok(None),
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, BadIpAddr> {
    text.trim().parse().map_err(|_| BadIpAddr {
        text: text.to_string(),
    })
}
