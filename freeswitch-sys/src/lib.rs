//! Raw bindings to the installed FreeSWITCH headers and to a small C shim
//! (`wsb_*`) for the macros and inline helpers bindgen cannot call.
//!
//! When FreeSWITCH was not found at build time this crate is empty and
//! `cfg(freeswitch)` is unset; see the build script.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, improper_ctypes)]
#![allow(clippy::all)]

#[cfg(freeswitch)]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
