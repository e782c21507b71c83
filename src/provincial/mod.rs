//! The provincial portal adapter: the read API of `provincial-portal.md`. A vendor whose API
//! differs gets another adapter behind the same `Source` trait, not a fork of the engine.

pub mod client;

pub use client::HttpProvincial;
