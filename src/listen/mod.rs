//! Hygiene shared by the daemon's listeners (the admin console and the
//! metrics endpoint): bounded accept-error handling, the metrics HTTP server
//! with its connection limits, and the open-files limit they all draw on.

pub mod accept;
pub mod http;
pub mod rlimit;
