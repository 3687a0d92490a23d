//! `conveyor-attest` owns what makes a release trustworthy: the SLSA v1 provenance statement
//! (in-toto Statement v1), the DSSE envelope that carries it, and Ed25519 signing and verification.
//! Pure: keys, times and digests are passed in; no clock, disk or network here.

pub mod dsse;
pub mod provenance;

pub use dsse::{Envelope, KeyPair, PublicKey, VerifyError};
pub use provenance::{Provenance, Subject};
