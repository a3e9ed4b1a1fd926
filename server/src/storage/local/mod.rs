//! Storage in a local directory.

pub mod digest;
pub mod partial;
pub mod store;
