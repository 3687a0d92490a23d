//! One integration-test binary: each module drives a real `conveyor` process (server or CLI) on
//! a temporary data directory over real HTTP, git and processes.

mod harness;

mod analysis;
mod audit;
mod cli;
mod delivery;
mod events;
mod flags;
mod isolation;
mod pipelines;
mod recovery;
mod replicas;
mod safety;
mod security;
mod triggers;
mod ui;
