//! Test support for `drbuild`'s end-to-end tests: the fault-injecting registry proxy
//! and helpers that bring up and drive the local Docker world (`scripts/testbed`).
#![deny(missing_docs)]

pub mod faultproxy;
pub mod seed;
pub mod testbed;
