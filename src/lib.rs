//! Switchboard: a self-hostable calling backend that speaks HubSpot's calling API.
//!
//! Start with `ARCHITECTURE.md`. The layers, outside in:
//! - [`http`]: one file per API family, one error type, the request middleware;
//! - [`records`] and [`crm`]: the rules of CRM records and the one write path that keeps
//!   caller ID exact;
//! - [`callerid`]: normalisation, the in-memory index, tiers and ranking;
//! - [`store`]: persistence behind one trait (SQLite today), with group commit for calls.

pub mod callerid;
pub mod clock;
pub mod crm;
pub mod demo;
pub mod http;
pub mod import;
pub mod packed_map;
pub mod records;
pub mod search;
pub mod server;
pub mod state;
pub mod store;
