//! What mod_wsbridge's FreeSWITCH integration tests and its calls benchmark
//! share: a FreeSWITCH launcher with a temporary loopback config
//! ([`instance`]), a blocking event socket client ([`esl`]), and the /proc
//! readers for CPU time and memory ([`proc_stats`]); and `make demo`
//! ([`demo`]), which an integration test runs too.
//!
//! The launcher needs values that only the targets of the root crate see
//! (its build script's `WSBRIDGE_FS_*` and its manifest directory), so the
//! caller hands them over with [`build_env!`].

pub mod demo;
pub mod esl;
pub mod instance;
pub mod proc_stats;

pub use instance::BuildEnv;
