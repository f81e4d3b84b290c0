//! Unit tests of the auth rules (added below).
