//! Model operations: A/B and canary tests between two models (`ab`), drift of the features a model is fed
//! against its training data (`drift`), and sampled prediction logging for live metrics (`logging`).

pub mod ab;
pub mod drift;
pub mod logging;
