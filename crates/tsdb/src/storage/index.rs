//! A shard's series index: its series (key, measurement, tags) by id, and per measurement its
//! series, field types and tag values' series.
//! What it does not do: hold data (see [`super::shard`]); an id is the series' position, so
//! the index only grows until a deletion rebuilds it (see [`super::delete`]).

use std::collections::{BTreeMap, HashMap};

use crate::model::FieldType;

/// A series in a shard's index.
#[derive(Debug)]
pub struct SeriesInfo {
    pub key: String,
    pub measurement: String,
    pub tags: Vec<(String, String)>,
}

impl SeriesInfo {
    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(tk, _)| tk == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Per-measurement index.
#[derive(Debug, Default)]
pub struct MeasurementIndex {
    pub series: Vec<u32>,
    pub fields: BTreeMap<String, FieldType>,
    /// tag key -> tag value -> series ids.
    pub tags: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
}

/// Series and field index of one shard.
#[derive(Debug, Default)]
pub struct Index {
    pub series: Vec<SeriesInfo>,
    pub(super) by_key: HashMap<String, u32>,
    pub measurements: BTreeMap<String, MeasurementIndex>,
}

impl Index {
    pub(super) fn get_or_insert(
        &mut self,
        key: String,
        measurement: &str,
        tags: &[(String, String)],
    ) -> u32 {
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = self.series.len() as u32;
        let m = self
            .measurements
            .entry(measurement.to_string())
            .or_default();
        m.series.push(id);
        for (k, v) in tags {
            m.tags
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id);
        }
        self.by_key.insert(key.clone(), id);
        self.series.push(SeriesInfo {
            key,
            measurement: measurement.to_string(),
            tags: tags.to_vec(),
        });
        id
    }
}
