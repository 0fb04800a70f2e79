//! The tests' data in `fixtures/`: element specs by name, the hostile
//! inputs the hardening tests send, the test-only JWT keys and JWKS, and
//! the webhook deliveries a receiver gets (their shape), and bundles built
//! from their descriptions.
//! A test here holds every spec fixture to its type, and the JWKS to its
//! RSA key, so none can rot.

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::PathBuf;

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// `fixtures/specs/{name}.yaml` as JSON.
pub fn spec(name: &str) -> Value {
    let text = std::fs::read_to_string(path(&format!("specs/{name}.yaml")))
        .unwrap_or_else(|e| panic!("fixture specs/{name}.yaml: {e}"));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("fixture specs/{name}.yaml: {e}"))
}

/// `fixtures/specs/{name}.yaml` with `patch` merged over it as a JSON
/// merge patch (RFC 7396): objects merge key by key, `null` removes a
/// key, anything else replaces. The variation a test makes reads as just
/// that variation.
pub fn spec_with(name: &str, patch: Value) -> Value {
    patched(spec(name), patch)
}

/// `base` with `patch` merged over it, as [`spec_with`] does.
pub fn patched(mut base: Value, patch: Value) -> Value {
    merge(&mut base, patch);
    base
}

fn merge(into: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *into = patch;
        return;
    };
    if !into.is_object() {
        *into = json!({});
    }
    let map = into.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(&k);
        } else {
            merge(map.entry(k).or_insert(Value::Null), v);
        }
    }
}

/// A spec.yaml whose one anchor expands to 36 million values, for `slug`.
pub fn alias_bomb(slug: &str) -> String {
    std::fs::read_to_string(path("hostile/alias-bomb.yaml"))
        .unwrap()
        .replace("slug: SLUG", &format!("slug: {slug}"))
}

/// One file's content in a bundle description: a string, N copies of one
/// character, or another fixture file naming a slug.
fn content(v: &Value) -> Vec<u8> {
    if let Some(text) = v.as_str() {
        return text.as_bytes().to_vec();
    }
    if let (Some(c), Some(n)) = (v["repeat"].as_str(), v["bytes"].as_u64()) {
        return c.repeat(n as usize).into_bytes();
    }
    if let Some(rel) = v["fixture"].as_str() {
        let text =
            std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"));
        let slug = v["slug"].as_str().unwrap_or("SLUG");
        return text
            .replace("slug: SLUG", &format!("slug: {slug}"))
            .into_bytes();
    }
    panic!("a bundle file's content is a string, {{repeat, bytes}} or {{fixture}}: {v}")
}

/// `fixtures/bundles/{name}.yaml` as JSON.
fn bundle_doc(name: &str) -> Value {
    let rel = format!("bundles/{name}.yaml");
    let text = std::fs::read_to_string(path(&rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"));
    yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// The git bundle `fixtures/bundles/{name}.yaml` describes, built with the
/// git CLI: each branch a commit of its files (a branch other than draft
/// starts at draft), then the extra refs at draft. A `raw` description is
/// its bytes as written (a file that only starts like a bundle).
pub fn bundle(name: &str) -> Vec<u8> {
    use crate::git::git_ok;
    let doc = bundle_doc(name);
    if let Some(raw) = doc["raw"].as_str() {
        return raw.as_bytes().to_vec();
    }
    let dir = tempfile::tempdir().unwrap();
    let wt = dir.path().join("wt");
    git_ok(dir.path(), &["init", "-q", "-b", "draft", "wt"]);
    for b in doc["branches"].as_array().expect("branches") {
        let branch = b["branch"].as_str().expect("branch");
        if branch != "draft" {
            git_ok(&wt, &["checkout", "-q", "-B", branch, "draft"]);
        }
        for (file, v) in b["files"].as_object().expect("files") {
            let at = wt.join(file);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, content(v)).unwrap();
        }
        git_ok(&wt, &["add", "-A"]);
        git_ok(&wt, &["commit", "-qm", branch, "--allow-empty"]);
    }
    git_ok(&wt, &["checkout", "-q", "draft"]);
    for r in doc["extra_refs"].as_array().into_iter().flatten() {
        git_ok(&wt, &["update-ref", r.as_str().unwrap(), "draft"]);
    }
    git_ok(&wt, &["bundle", "create", "-q", "../b.bundle", "--all"]);
    std::fs::read(dir.path().join("b.bundle")).unwrap()
}

/// [`bundle`] in base64, as `import/bundle` takes it.
pub fn bundle_b64(name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bundle(name))
}

/// A key pair from `fixtures/jwt/` (test-only keys, never for use).
pub struct Pair {
    pub private: String,
    pub public: String,
}

/// `fixtures/jwt/test-only-{name}-private.pem` and its public half.
pub fn jwt_pair(name: &str) -> Pair {
    let read = |half: &str| {
        let rel = format!("jwt/test-only-{name}-{half}.pem");
        std::fs::read_to_string(path(&rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
    };
    Pair {
        private: read("private"),
        public: read("public"),
    }
}

/// `fixtures/jwt/jwks.json`: the RSA pair's public JWK, kid `test-rsa`.
pub fn jwks() -> String {
    std::fs::read_to_string(path("jwt/jwks.json")).expect("fixture jwt/jwks.json")
}

/// A JSON value's shape: objects by their keys (in order), anything else
/// by its JSON type. Ids, times and other
/// values do not count.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(_) => json!("array"),
        Value::Null => json!("null"),
        Value::Bool(_) => json!("boolean"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
    }
}

/// Holds a webhook delivery's body to `fixtures/webhooks/{kind}.json`:
/// the same keys, in the same order, with values of the same types.
pub fn assert_webhook_shape(kind: &str, body: &Value) {
    let rel = format!("webhooks/{kind}.json");
    let text = std::fs::read_to_string(path(&rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"));
    let want: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {rel}: {e}"));
    assert_eq!(body["type"], kind, "{body}");
    assert_eq!(
        shape(body),
        shape(&want),
        "a {kind} delivery's shape is not fixtures/{rel}'s: {body}"
    );
}

/// The element type a spec fixture is for: its name up to the variant.
fn type_of(name: &str) -> &'static str {
    const TYPES: [&str; 8] = [
        "websocket",
        "webhook",
        "rate-limit",
        "auth-policy",
        "variable",
        "project",
        "app",
        "api-token",
    ];
    TYPES
        .into_iter()
        .find(|t| name == *t || name.starts_with(&format!("{t}-")))
        .unwrap_or_else(|| panic!("fixtures/specs/{name}.yaml names no element type"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_fixture_is_accepted_by_its_type() {
    let app = spawn_app().await;
    app.circle("acme").await;
    // What the manifests name, and the keys the jwt, hooks and webhook
    // fixtures sign or verify with, first.
    for (slug, path) in [("chat", "/m-chat"), ("feed", "/m-feed")] {
        let mut s = spec("websocket-echo");
        s["path"] = json!(path);
        app.element("acme", "websocket", slug, s).await;
    }
    for key in ["jwt-key", "hook-key", "chat-jwt"] {
        let s = json!({"value": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "sensitive": true});
        app.element("acme", "variable", key, s).await;
    }
    let mut names: Vec<String> = std::fs::read_dir(path("specs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|f| f.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 16, "{names:?}");
    for name in &names {
        let ty = type_of(name);
        let mut spec = spec(name);
        // Several websockets serve /chat, as their tests have it; in one
        // circle each gets a path of its own.
        if ty == "websocket" {
            spec["path"] = json!(format!("/fx-{name}"));
        }
        let (s, v) = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": ty, "slug": name, "spec": spec}),
            )
            .await;
        assert_eq!(s.as_u16(), 201, "fixtures/specs/{name}.yaml: {v}");
        assert!(
            v["warnings"].as_array().is_none_or(|w| w.is_empty()),
            "fixtures/specs/{name}.yaml: {v}"
        );
    }
    // The hostile one parses as YAML with its anchor intact.
    let bomb = alias_bomb("bomb");
    assert!(bomb.contains("slug: bomb") && bomb.contains("&a ["));
}

/// The JWKS's key is the RSA pair's: a token signed with the private PEM
/// verifies with the JWK's `n` and `e`, and the public PEM is the same key.
#[test]
fn the_jwks_holds_the_rsa_fixture_key() {
    use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
    let doc: Value = serde_json::from_str(&jwks()).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{doc}");
    let jwk = &keys[0];
    assert_eq!(
        (&jwk["kty"], &jwk["kid"], &jwk["alg"], &jwk["use"]),
        (
            &json!("RSA"),
            &json!("test-rsa"),
            &json!("RS256"),
            &json!("sig")
        )
    );
    let rsa = jwt_pair("rsa");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-rsa".into());
    let claims = json!({"sub": "ann", "exp": 4_000_000_000u64});
    let token = encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(rsa.private.as_bytes()).unwrap(),
    )
    .unwrap();
    let validation = Validation::new(Algorithm::RS256);
    let from_jwk =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let from_pem = DecodingKey::from_rsa_pem(rsa.public.as_bytes()).unwrap();
    for key in [from_jwk, from_pem] {
        let got = decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(got.claims["sub"], "ann");
    }
    // Each pair's halves belong together.
    for (name, alg) in [
        ("p256", Algorithm::ES256),
        ("p384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
    ] {
        let pair = jwt_pair(name);
        let (enc, dec) = match alg {
            Algorithm::EdDSA => (
                EncodingKey::from_ed_pem(pair.private.as_bytes()).unwrap(),
                DecodingKey::from_ed_pem(pair.public.as_bytes()).unwrap(),
            ),
            _ => (
                EncodingKey::from_ec_pem(pair.private.as_bytes()).unwrap(),
                DecodingKey::from_ec_pem(pair.public.as_bytes()).unwrap(),
            ),
        };
        let token = encode(&Header::new(alg), &claims, &enc).unwrap();
        decode::<Value>(&token, &dec, &Validation::new(alg))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Every bundle description builds, and imports (`imports: true`) or is
/// refused with 400 `INVALID_BUNDLE`, creating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundle_fixture_imports_or_is_refused() {
    let app = spawn_app().await;
    let mut names: Vec<String> = std::fs::read_dir(path("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|f| f.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for (i, name) in names.iter().enumerate() {
        let circle = format!("b{i}");
        app.circle(&circle).await;
        let list = format!("/api/{circle}/ops/list");
        let before = app.get(&list).await;
        let got = app
            .post(
                &format!("/api/{circle}/ops/import/bundle"),
                json!({"bundle_base64": bundle_b64(name)}),
            )
            .await;
        if bundle_doc(name)["imports"] == true {
            assert_eq!(
                got.0.as_u16(),
                200,
                "fixtures/bundles/{name}.yaml: {}",
                got.1
            );
            assert_eq!(
                got.1["imported"], 1,
                "fixtures/bundles/{name}.yaml: {}",
                got.1
            );
        } else {
            assert_error(&got, 400, "INVALID_BUNDLE");
            assert_eq!(app.get(&list).await, before, "fixtures/bundles/{name}.yaml");
        }
    }
}

#[test]
fn a_merge_patch_merges_objects_and_replaces_the_rest() {
    let mut s = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
    merge(
        &mut s,
        json!({"a": {"c": [3], "e": {"f": true}}, "d": null, "g": 2}),
    );
    assert_eq!(
        s,
        json!({"a": {"b": 1, "c": [3], "e": {"f": true}}, "g": 2})
    );
    let w = spec_with(
        "webhook",
        json!({"url": "http://127.0.0.1:1/h", "max_attempts": null}),
    );
    assert_eq!(w["url"], "http://127.0.0.1:1/h");
    assert!(w.get("max_attempts").is_none(), "{w}");
    assert_eq!(w["secret"], spec("webhook")["secret"]);
}
