//! Sensitive values at rest: sealed with AES-256-GCM under the node's key
//! (`ELEMENTD_SECRET_KEY`, 64 hex characters, shared by every node of a
//! cluster; else `<data>/secret.key`, made on first start, mode 0600).
//! A seal is bound to its element (the id is the associated data), so a
//! sealed value copied to another element does not open there.

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::Context;
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const TAG: &str = "$sealed";

pub struct Secrets {
    cipher: Aes256Gcm,
}

impl Secrets {
    pub fn load(data_dir: &Path) -> anyhow::Result<Secrets> {
        let hex_key = match std::env::var("ELEMENTD_SECRET_KEY") {
            Ok(k) if !k.is_empty() => k,
            _ => key_file(&data_dir.join("secret.key"))?,
        };
        let bytes =
            hex::decode(hex_key.trim()).context("the secret key must be 64 hex characters")?;
        anyhow::ensure!(
            bytes.len() == 32,
            "the secret key must be 32 bytes (64 hex characters)"
        );
        Ok(Secrets {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
        })
    }

    /// Only `{"$sealed": "<text>"}` is a seal. An object that holds the
    /// tag beside other keys (made by merging into a seal) is not: the
    /// other keys are plain, so it must be sealed whole.
    pub fn is_sealed(v: &Value) -> bool {
        v.as_object()
            .is_some_and(|m| m.len() == 1 && m.get(TAG).is_some_and(Value::is_string))
    }

    /// For a seal with other keys merged beside it, the value those keys
    /// make: what the update that merged them meant to store.
    pub fn merged_into_seal(v: &Value) -> Option<Value> {
        let m = v.as_object()?;
        if m.len() < 2 || !m.contains_key(TAG) {
            return None;
        }
        let mut meant = m.clone();
        meant.remove(TAG);
        Some(Value::Object(meant))
    }

    /// Seals `v` for the element `owner` (its id).
    pub fn seal(&self, v: &Value, owner: &str) -> Value {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let plain = v.to_string();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: owner.as_bytes(),
        };
        let ct = self
            .cipher
            .encrypt(&nonce, payload)
            .expect("AES-GCM encryption of a short value");
        let mut buf = nonce.to_vec();
        buf.extend(ct);
        json!({ TAG: format!("v2:{}", B64.encode(buf)) })
    }

    /// None when the value is not sealed, not under this key, or not for
    /// this element. `v1:` seals (before seals were bound) open anywhere;
    /// only their own element ever held them.
    pub fn open(&self, v: &Value, owner: &str) -> Option<Value> {
        if !Self::is_sealed(v) {
            return None;
        }
        let s = v.get(TAG)?.as_str()?;
        let (aad, rest) = match s.split_once(':')? {
            ("v2", rest) => (owner.as_bytes(), rest),
            ("v1", rest) => (&b""[..], rest),
            _ => return None,
        };
        let buf = B64.decode(rest).ok()?;
        if buf.len() < 12 {
            return None;
        }
        let (nonce, ct) = buf.split_at(12);
        let payload = Payload { msg: ct, aad };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

/// Sealed values come only from the server: one in client input (a spec,
/// a push, a bundle) is refused, so no one can move a seal between
/// elements.
pub fn refuse_sealed(v: &Value) -> Result<()> {
    let found = match v {
        Value::Object(m) => {
            if m.contains_key(TAG) {
                true
            } else {
                return m.values().try_for_each(refuse_sealed);
            }
        }
        Value::Array(a) => return a.iter().try_for_each(refuse_sealed),
        _ => false,
    };
    if found {
        return Err(Error::bad_request(
            ErrorCode::SealedValueRefused,
            format!("'{TAG}' values are made by the server only; send the plain value"),
        ));
    }
    Ok(())
}

fn key_file(path: &Path) -> anyhow::Result<String> {
    if let Ok(k) = std::fs::read_to_string(path) {
        return Ok(k);
    }
    let mut key = [0u8; 32];
    aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut OsRng, &mut key);
    let hex_key = hex::encode(key);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            writeln!(f, "{hex_key}")?;
            f.sync_all()?;
            Ok(hex_key)
        }
        // Another node sharing the data dir made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok(std::fs::read_to_string(path)?)
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::load(dir.path()).unwrap();
        let sealed = s.seal(&json!("s3cret"), "el-1");
        assert!(Secrets::is_sealed(&sealed));
        assert!(!sealed.to_string().contains("s3cret"));
        assert_eq!(s.open(&sealed, "el-1"), Some(json!("s3cret")));
        // Bound to its element: it does not open for another.
        assert_eq!(s.open(&sealed, "el-2"), None);
        // The same key file opens it again; another key does not.
        assert_eq!(
            Secrets::load(dir.path()).unwrap().open(&sealed, "el-1"),
            Some(json!("s3cret"))
        );
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            Secrets::load(other.path()).unwrap().open(&sealed, "el-1"),
            None
        );
    }

    #[test]
    fn only_a_lone_tag_is_a_seal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::load(dir.path()).unwrap();
        let sealed = s.seal(&json!("s3cret"), "el-1");
        assert_eq!(Secrets::merged_into_seal(&sealed), None);
        let mut merged = sealed.clone();
        merged["a"] = json!("plain");
        assert!(!Secrets::is_sealed(&merged));
        assert_eq!(s.open(&merged, "el-1"), None);
        assert_eq!(
            Secrets::merged_into_seal(&merged),
            Some(json!({"a": "plain"}))
        );
        assert!(!Secrets::is_sealed(&json!({"$sealed": 1})));
    }

    #[test]
    fn client_sealed_values_are_refused() {
        assert!(refuse_sealed(&json!({"value": 1, "x": [{"y": 2}]})).is_ok());
        let e = refuse_sealed(&json!({"x": [{"$sealed": "v2:AAAA"}]})).unwrap_err();
        assert_eq!(e.code, "SEALED_VALUE_REFUSED");
        assert!(refuse_sealed(&json!({"value": {"$sealed": "v1:x"}})).is_err());
    }
}
