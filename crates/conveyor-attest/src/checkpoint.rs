//! Signed checkpoints of the event log: "the log's event `seq` has hash `head_hash`", signed at
//! `time` in a DSSE envelope of type [`PAYLOAD_TYPE`]. Whoever rewrites the log and recomputes
//! every hash cannot sign a new checkpoint without the private key, so the rewritten chain no
//! longer matches the checkpoints signed before. The payload is this JSON, signed as the exact
//! bytes carried (DSSE needs no canonical form): `{"seq":N,"head_hash":"<hex>","time":"<RFC 3339>"}`.

use serde::{Deserialize, Serialize};

use crate::dsse::{Envelope, KeyPair, PublicKey, VerifyError};

/// The DSSE payload type of a checkpoint; PAE binds it into the signature, so a checkpoint
/// signature can never be passed off as a release's (or the other way round) under the same key.
pub const PAYLOAD_TYPE: &str = "application/vnd.conveyor.checkpoint+json";

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The newest event the checkpoint covers.
    pub seq: i64,
    /// That event's chain hash (hex SHA-256).
    pub head_hash: String,
    /// When it was signed, RFC 3339 (passed in: nothing here reads the clock).
    pub time: String,
}

/// Why an envelope is not a valid checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a checkpoint: payload type is '{0}'")]
    PayloadType(String),
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error("the signed payload is not a checkpoint statement: {0}")]
    Payload(String),
}

impl Checkpoint {
    /// The envelope carrying this statement, signed by `key`.
    pub fn sign(&self, key: &KeyPair) -> Envelope {
        let payload = serde_json::to_vec(self).expect("a checkpoint always serializes");
        key.sign(PAYLOAD_TYPE, &payload)
    }

    /// The statement `envelope` carries, once its type and the signature of one of `keys` (the
    /// server's current key and those it retired) over it are checked.
    pub fn verify(envelope: &Envelope, keys: &[PublicKey]) -> Result<Checkpoint, CheckpointError> {
        if envelope.payload_type != PAYLOAD_TYPE {
            return Err(CheckpointError::PayloadType(envelope.payload_type.clone()));
        }
        let payload = envelope.verify(envelope.signer(keys)?)?;
        serde_json::from_slice(&payload).map_err(|e| CheckpointError::Payload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    fn statement() -> Checkpoint {
        Checkpoint {
            seq: 42,
            head_hash: "ab".repeat(32),
            time: "2026-01-02T03:04:05.000Z".into(),
        }
    }

    #[test]
    fn the_payload_is_the_documented_json() {
        let envelope = statement().sign(&KeyPair::from_seed([3; 32]));
        assert_eq!(envelope.payload_type, PAYLOAD_TYPE);
        let payload = BASE64.decode(&envelope.payload).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!(
                "{{\"seq\":42,\"head_hash\":\"{}\",\"time\":\"2026-01-02T03:04:05.000Z\"}}",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn a_checkpoint_verifies_only_as_signed_by_its_key() {
        let key = KeyPair::from_seed([3; 32]);
        let envelope = statement().sign(&key);
        let keys = [key.public()];
        assert_eq!(Checkpoint::verify(&envelope, &keys), Ok(statement()));
        // Signed before a rotation: the retired key still verifies it.
        let rotated = [KeyPair::from_seed([5; 32]).public(), key.public()];
        assert_eq!(Checkpoint::verify(&envelope, &rotated), Ok(statement()));

        let other = [KeyPair::from_seed([4; 32]).public()];
        assert_eq!(
            Checkpoint::verify(&envelope, &other),
            Err(CheckpointError::Signature(VerifyError::UnknownSigner(
                key.public().key_id()
            )))
        );

        // A statement with another head, under the original signature.
        let mut rewritten = envelope.clone();
        let forged = Checkpoint {
            head_hash: "cd".repeat(32),
            ..statement()
        };
        rewritten.payload = BASE64.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            Checkpoint::verify(&rewritten, &keys),
            Err(CheckpointError::Signature(VerifyError::BadSignature(
                key.public().key_id()
            )))
        );

        // Validly signed, but not a checkpoint: a provenance envelope is refused by its type.
        let provenance = key.sign(crate::dsse::IN_TOTO_PAYLOAD_TYPE, b"{}");
        assert_eq!(
            Checkpoint::verify(&provenance, &keys),
            Err(CheckpointError::PayloadType(
                crate::dsse::IN_TOTO_PAYLOAD_TYPE.into()
            ))
        );
        let not_a_statement = key.sign(PAYLOAD_TYPE, b"{\"seq\":1}");
        assert!(matches!(
            Checkpoint::verify(&not_a_statement, &keys),
            Err(CheckpointError::Payload(_))
        ));
    }
}
