//! `conveyor-attest` owns what makes a release trustworthy: the SLSA v1 provenance statement
//! (in-toto Statement v1), the DSSE envelope that carries it, and Ed25519 signing and verification;
//! and the signed checkpoints that make the event log tamper-evident to whoever has its file.
//! Pure: keys, times and digests are passed in; no clock, disk or network here.

pub mod checkpoint;
pub mod dsse;
pub mod provenance;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use dsse::{Envelope, KeyPair, PublicKey, VerifyError, public_keys_from_text};
pub use provenance::{Provenance, Subject};
