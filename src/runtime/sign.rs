//! Standard Webhooks signatures for every request elementd makes to an
//! application: `webhook-id`, `webhook-timestamp` and `webhook-signature:
//! v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//!
//! The key is the secret's bytes, or for `whsec_<base64>` the decoded
//! bytes. It never prints: [`SigningKey`]'s `Debug` hides it, and nothing
//! here formats it into an error.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The key a secret names, keyed once.
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// `whsec_<base64>` is decoded; any other secret is its own bytes. An
    /// empty key, or a `whsec_` that is not base64, is refused without
    /// quoting it.
    pub fn parse(secret: &str) -> Result<SigningKey, &'static str> {
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => B64
                .decode(b64.trim())
                .map_err(|_| "a whsec_ secret must be base64 after the prefix")?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("the secret is empty");
        }
        Hmac::<Sha256>::new_from_slice(&key)
            .map(SigningKey)
            .map_err(|_| "the secret cannot key HMAC-SHA256")
    }

    /// `v1,<base64 signature>` of one request.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(id, timestamp, body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// Whether `header` (space-separated `v1,<base64>` signatures, as a
    /// receiver gets them) holds this request's signature. Compared in
    /// constant time; other versions and garbled entries are skipped.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split_whitespace().any(|s| {
            let Some(Ok(sig)) = s.strip_prefix("v1,").map(|b| B64.decode(b)) else {
                return false;
            };
            self.mac(id, timestamp, body).verify_slice(&sig).is_ok()
        })
    }

    /// The three headers of one request, signed now.
    pub fn headers(&self, id: &str, body: &[u8]) -> [(&'static str, String); 3] {
        let ts = chrono::Utc::now().timestamp();
        [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", self.sign(id, ts, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_example_signs_alike() {
        // The example of the Standard Webhooks specification.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_signature_verifies_and_nothing_else_does() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign("m1", 7, b"{}");
        assert!(key.verify("m1", 7, b"{}", &sig));
        assert!(key.verify("m1", 7, b"{}", &format!("v2,xx v1,AAAA {sig}")));
        for (id, ts, body) in [("m2", 7, &b"{}"[..]), ("m1", 8, b"{}"), ("m1", 7, b"{ }")] {
            assert!(!key.verify(id, ts, body, &sig));
        }
        let other = SigningKey::parse("another-key").unwrap();
        assert!(!other.verify("m1", 7, b"{}", &sig));
        assert!(!key.verify("m1", 7, b"{}", ""));
        assert!(!key.verify("m1", 7, b"{}", "v1,!!!"));
    }

    #[test]
    fn a_plain_secret_is_its_bytes_and_never_shown() {
        let plain = SigningKey::parse("hunter2-secret").unwrap();
        let same = SigningKey(Hmac::new_from_slice(b"hunter2-secret").unwrap());
        assert_eq!(plain.sign("a", 1, b"{}"), same.sign("a", 1, b"{}"));
        assert!(!format!("{plain:?}").contains("hunter2"));
        assert!(SigningKey::parse("").is_err());
        let err = SigningKey::parse("whsec_!!not-base64!!").unwrap_err();
        assert!(!err.contains("not-base64"));
    }
}
