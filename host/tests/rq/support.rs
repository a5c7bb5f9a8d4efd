//! The real-parts harness: a throwaway `redis-server` per test, the Python venv with RQ 2.12
//! that makes real failed jobs, and raw readers of what RQ stored.
//!
//! Modules of this test binary use it as `crate::support`. Each leaf file stands alone (no
//! `super::` between them), so another test binary can take one with
//! `#[path = "../rq/support/redis_server.rs"] mod redis_server;`.
#![allow(dead_code, reason = "shared helpers: not every test uses every one")]

pub mod pki;
pub mod python;
pub mod redis_server;
pub mod rq_data;
pub mod s3;
pub mod serve;

pub use pki::Pki;
pub use python::{MakeFailed, Python};
pub use redis_server::RedisServer;
pub use rq_data::{JobHash, ResultEntry, connect, query, redis_get};
pub use s3::MotoServer;
pub use serve::Serve;
