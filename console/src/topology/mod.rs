//! Topology files: parsing, validation and the validated model (DESIGN §8).

pub mod model;

pub use model::*;
