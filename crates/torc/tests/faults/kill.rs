//! Owned by a helper of issue 19; see faults.rs.
