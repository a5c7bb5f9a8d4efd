//! Queue backends: reading failed jobs from, and requeueing them into, the Redis a job queue
//! already uses. Nothing above this module knows a queue's key names or encodings.

pub mod rq;
