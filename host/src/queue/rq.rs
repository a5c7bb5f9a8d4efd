//! The RQ 2.x adapter (DESIGN.md §6 has the data layout and its traps).

pub mod decode;
