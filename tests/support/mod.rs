//! Helpers shared by the end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod bare_swtpm;
pub mod guest;
pub mod migration;
