//! A node's role in the rack config (`node_type`, the original's `machine-type`), used by
//! the node list and by services' placement constraints.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's role, the original's `machine-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NodeType {
    /// The controller node (the switch, in the original rack).
    Master,
    /// A compute node.
    Slave,
}

impl NodeType {
    pub const ALL: [NodeType; 2] = [NodeType::Master, NodeType::Slave];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Master => "master",
            NodeType::Slave => "slave",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeType {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        NodeType::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| format!("unknown node type {text:?}, expected `master` or `slave`"))
    }
}

impl TryFrom<String> for NodeType {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}
