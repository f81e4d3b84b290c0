//! The rack network's vocabulary: an IPv4 block (`198.19.1.0/24`) and which network a task
//! lives on.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 prefix with no host bits set, e.g. a node's task block `198.19.1.0/24`.
///
/// The first address is the network, the last the broadcast, and the one after the network is
/// the block's gateway (the node's end of every task link); tasks get the addresses between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Block {
    network: Ipv4Addr,
    len: u8,
}

/// Why a text is not an [`Ipv4Block`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4BlockError {
    #[error("invalid address block {text:?}: expected ADDRESS/LENGTH, e.g. 198.19.1.0/24")]
    Syntax { text: String },
    #[error("invalid address block {text:?}: the prefix length must be 0 to 32")]
    Length { text: String },
    #[error(
        "invalid address block {text:?}: host bits are set; the block is {block}, or use a \
         longer prefix"
    )]
    HostBits { text: String, block: Ipv4Block },
}

impl Ipv4Block {
    /// The block `network/len`; host bits must be clear.
    pub fn new(network: Ipv4Addr, len: u8) -> Result<Ipv4Block, Ipv4BlockError> {
        let text = format!("{network}/{len}");
        if len > 32 {
            return Err(Ipv4BlockError::Length { text });
        }
        let block = Ipv4Block {
            network: Ipv4Addr::from(u32::from(network) & mask(len)),
            len,
        };
        if block.network != network {
            return Err(Ipv4BlockError::HostBits { text, block });
        }
        Ok(block)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The last address of the block.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.network)
    }

    /// Whether the two blocks share an address (one contains the other).
    pub fn overlaps(&self, other: &Ipv4Block) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The node's end of every task link: the address after the network. `None` for blocks
    /// too small to hold a gateway and a task (/31 and /32).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.len <= 30).then(|| Ipv4Addr::from(u32::from(self.network) + 1))
    }

    /// The addresses tasks may get: after the gateway, before the broadcast address.
    pub fn task_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let block = *self;
        (0..block.task_capacity()).filter_map(move |offset| block.task_address(offset))
    }

    /// Task address number `offset` (from 0, in address order), if the block has that many.
    pub fn task_address(&self, offset: u32) -> Option<Ipv4Addr> {
        let first = u32::from(self.gateway()?) + 1;
        (offset < self.task_capacity()).then(|| Ipv4Addr::from(first + offset))
    }

    /// Which task address `ip` is (the inverse of [`Ipv4Block::task_address`]); `None` for the
    /// network, gateway and broadcast addresses and for addresses outside the block.
    pub fn task_offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let first = u32::from(self.gateway()?) + 1;
        let offset = u32::from(ip).checked_sub(first)?;
        (offset < self.task_capacity()).then_some(offset)
    }

    /// How many task addresses the block has.
    pub fn task_capacity(&self) -> u32 {
        match self.gateway() {
            Some(_) => (!mask(self.len)) - 2,
            None => 0,
        }
    }
}

fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n)),
    }
}

impl fmt::Display for Ipv4Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

impl FromStr for Ipv4Block {
    type Err = Ipv4BlockError;
    fn from_str(text: &str) -> Result<Self, Ipv4BlockError> {
        let syntax = || Ipv4BlockError::Syntax {
            text: text.to_owned(),
        };
        let (addr, len) = text.split_once('/').ok_or_else(syntax)?;
        let network: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| Ipv4BlockError::Length {
            text: text.to_owned(),
        })?;
        Ipv4Block::new(network, len)
    }
}

impl TryFrom<String> for Ipv4Block {
    type Error = Ipv4BlockError;
    fn try_from(text: String) -> Result<Self, Ipv4BlockError> {
        text.parse()
    }
}

impl From<Ipv4Block> for String {
    fn from(block: Ipv4Block) -> String {
        block.to_string()
    }
}

/// Which network a task lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskNetwork {
    /// The node's own network: the task shares the node's address and gets ports from its
    /// range.
    #[default]
    Node,
    /// Its own network namespace with an address from its node's task block, routed by the
    /// switch (the original's `network_type: torc`, a Calico address per container).
    Rack,
}

impl TaskNetwork {
    pub fn is_node(&self) -> bool {
        *self == TaskNetwork::Node
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskNetwork::Node => "node",
            TaskNetwork::Rack => "rack",
        }
    }
}

/// A word that is not a [`TaskNetwork`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network {text:?}, expected `node` or `rack`")]
pub struct UnknownTaskNetwork {
    pub text: String,
}

impl FromStr for TaskNetwork {
    type Err = UnknownTaskNetwork;
    fn from_str(text: &str) -> Result<Self, UnknownTaskNetwork> {
        match text {
            "node" => Ok(TaskNetwork::Node),
            "rack" => Ok(TaskNetwork::Rack),
            _ => Err(UnknownTaskNetwork {
                text: text.to_owned(),
            }),
        }
    }
}

impl fmt::Display for TaskNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(s: &str) -> Ipv4Block {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        let b = block("198.19.1.0/24");
        assert_eq!(b.to_string(), "198.19.1.0/24");
        assert_eq!(b.gateway(), Some(Ipv4Addr::new(198, 19, 1, 1)));
        assert_eq!(b.last(), Ipv4Addr::new(198, 19, 1, 255));
        assert_eq!(b.task_capacity(), 253);
        let hosts: Vec<_> = b.task_addresses().collect();
        assert_eq!(hosts.len(), 253);
        assert_eq!(hosts[0], Ipv4Addr::new(198, 19, 1, 2));
        assert_eq!(hosts[252], Ipv4Addr::new(198, 19, 1, 254));
        assert_eq!(block("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn task_offsets_number_the_task_addresses() {
        let b = block("198.19.1.0/29");
        for (offset, ip) in b.task_addresses().enumerate() {
            assert_eq!(b.task_offset(ip), Some(offset as u32));
            assert_eq!(b.task_address(offset as u32), Some(ip));
        }
        assert_eq!(b.task_address(5), None, "5 task addresses: 0 to 4");
        for not_a_task in [
            "198.19.1.0",
            "198.19.1.1",
            "198.19.1.7",
            "198.19.1.8",
            "10.0.0.1",
        ] {
            assert_eq!(
                b.task_offset(not_a_task.parse().unwrap()),
                None,
                "{not_a_task}"
            );
        }
        assert_eq!(
            block("198.19.1.0/31").task_offset("198.19.1.1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn small_blocks() {
        let b = block("198.19.1.0/30");
        assert_eq!(
            b.task_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(198, 19, 1, 2)]
        );
        assert_eq!(b.task_capacity(), 1);
        for s in ["198.19.1.0/31", "198.19.1.1/32"] {
            assert_eq!(block(s).gateway(), None);
            assert_eq!(block(s).task_capacity(), 0);
            assert_eq!(block(s).task_addresses().count(), 0);
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |s: &str| s.parse::<Ipv4Block>().unwrap_err().to_string();
        assert_eq!(
            err("198.19.1.5/24"),
            "invalid address block \"198.19.1.5/24\": host bits are set; the block is \
             198.19.1.0/24, or use a longer prefix"
        );
        assert_eq!(
            err("198.19.1.0/33"),
            "invalid address block \"198.19.1.0/33\": the prefix length must be 0 to 32"
        );
        assert_eq!(
            err("198.19.1.0/999"),
            "invalid address block \"198.19.1.0/999\": the prefix length must be 0 to 32"
        );
        for bad in [
            "198.19.1.0",
            "198.19.1/24",
            "198.19.1.0/",
            "198.19.1.0/+4",
            "x/24",
        ] {
            assert!(err(bad).contains("expected ADDRESS/LENGTH"), "{bad}");
        }
        let json = serde_json::from_str::<Ipv4Block>("\"10.0.0.1/8\"").unwrap_err();
        assert!(json.to_string().contains("host bits are set"), "{json}");
    }

    #[test]
    fn containment_and_overlap() {
        let a = block("198.19.1.0/24");
        assert!(a.contains(Ipv4Addr::new(198, 19, 1, 77)));
        assert!(!a.contains(Ipv4Addr::new(198, 19, 2, 0)));
        assert!(a.overlaps(&block("198.19.1.128/25")));
        assert!(block("198.19.0.0/16").overlaps(&a));
        assert!(!a.overlaps(&block("198.19.2.0/24")));
    }

    #[test]
    fn task_network_words() {
        assert_eq!(
            serde_json::from_str::<TaskNetwork>("\"rack\"").unwrap(),
            TaskNetwork::Rack
        );
        let err = serde_json::from_str::<TaskNetwork>("\"calico\"").unwrap_err();
        assert!(
            err.to_string().contains("expected `node` or `rack`"),
            "{err}"
        );
    }
}
