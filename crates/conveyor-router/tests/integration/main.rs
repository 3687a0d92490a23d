//! Integration tests: real upstream servers and a real router on loopback ports, driven by a real
//! HTTP client. One binary, one module per area.

mod harness;

mod failover;
mod metrics;
mod protocols;
mod routing;
mod timeout;
mod update;
