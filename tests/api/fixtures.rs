//! The tests' data in `fixtures/`: element specs by name, and the hostile
//! inputs the hardening tests send. A test here holds every spec fixture
//! to its type, so none can rot.

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

/// A spec.yaml whose one anchor expands to 36 million values, for `slug`.
pub fn alias_bomb(slug: &str) -> String {
    std::fs::read_to_string(path("hostile/alias-bomb.yaml"))
        .unwrap()
        .replace("slug: SLUG", &format!("slug: {slug}"))
}

/// The element type a spec fixture is for: its name up to the variant.
fn type_of(name: &str) -> &'static str {
    const TYPES: [&str; 7] = [
        "websocket",
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
    // What the manifests name, first.
    for (slug, path) in [("chat", "/m-chat"), ("feed", "/m-feed")] {
        let mut s = spec("websocket-echo");
        s["path"] = json!(path);
        app.element("acme", "websocket", slug, s).await;
    }
    let mut names: Vec<String> = std::fs::read_dir(path("specs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter_map(|f| f.strip_suffix(".yaml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let ty = type_of(name);
        let (s, v) = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": ty, "slug": name, "spec": spec(name)}),
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
