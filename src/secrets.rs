//! Sensitive values at rest: sealed with AES-256-GCM under the node's key
//! (`ELEMENTD_SECRET_KEY`, 64 hex characters, shared by every node of a
//! cluster; else `<data>/secret.key`, made on first start, mode 0600).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
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

    pub fn is_sealed(v: &Value) -> bool {
        v.get(TAG).is_some_and(Value::is_string)
    }

    pub fn seal(&self, v: &Value) -> Value {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let plain = v.to_string();
        let ct = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .expect("AES-GCM encryption of a short value");
        let mut buf = nonce.to_vec();
        buf.extend(ct);
        json!({ TAG: format!("v1:{}", B64.encode(buf)) })
    }

    /// None when the value is not sealed or not sealed under this key.
    pub fn open(&self, v: &Value) -> Option<Value> {
        let s = v.get(TAG)?.as_str()?.strip_prefix("v1:")?;
        let buf = B64.decode(s).ok()?;
        if buf.len() < 12 {
            return None;
        }
        let (nonce, ct) = buf.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()?;
        serde_json::from_slice(&plain).ok()
    }
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
        let sealed = s.seal(&json!("s3cret"));
        assert!(Secrets::is_sealed(&sealed));
        assert!(!sealed.to_string().contains("s3cret"));
        assert_eq!(s.open(&sealed), Some(json!("s3cret")));
        // The same key file opens it again; another key does not.
        assert_eq!(
            Secrets::load(dir.path()).unwrap().open(&sealed),
            Some(json!("s3cret"))
        );
        let other = tempfile::tempdir().unwrap();
        assert_eq!(Secrets::load(other.path()).unwrap().open(&sealed), None);
    }
}
