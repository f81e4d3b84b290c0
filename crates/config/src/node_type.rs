//! A node's role in the rack config (`node_type`, the original's `machine-type`), used by
//! the node list and by services' placement constraints.

use crate::words::words;

words! {
    /// A node's role, the original's `machine-type`.
    pub enum NodeType as "node type" {
        /// The controller node (the switch, in the original rack).
        Master = "master",
        /// A compute node.
        Slave = "slave",
    }
}
