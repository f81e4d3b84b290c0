//! A node's role (`node_type`, the original's `machine-type`): in the rack config, in what an
//! agent reports, and in a task's placement constraints. A closed set: the original rack
//! knew `master` (the switch that runs the controller) and `slave` (compute nodes) only.

words! {
    /// A node's role, the original's `machine-type`.
    pub enum NodeType as "node type" {
        /// The controller node (the switch, in the original rack).
        Master = "master",
        /// A compute node.
        Slave = "slave",
    }
}
