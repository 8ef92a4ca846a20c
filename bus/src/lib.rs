//! `agenttier-bus`: the contract between AgentTier processes.
//!
//! Everything two processes must agree on lives here: subject names
//! ([`subject`]), the versioned wire messages ([`msg`]), the resource models
//! ([`model`]), the [`Bus`] trait with its NATS and in-process implementations,
//! and the [`store::Store`] trait with its embedded and NATS KV implementations.
//!
//! It is not a place for behaviour: no HTTP, no actors, no processes.

pub mod memory;
pub mod model;
pub mod msg;
pub mod nats;
pub mod store;
pub mod subject;
mod transport;

pub use transport::{
    Bus, Error, Headers, MAX_MESSAGE_SIZE, Message, Result, Subscription, WIRE_HEADER,
    publish_json, request_json, respond_encoded, respond_json,
};
