//! Where files are stored.

pub mod local;
