//! Pushes are held to the same rules as REST writes (issue 8, items 4
//! and 6): no push turns a secret's `sensitive` off, carries a sealed
//! value, or weakens a modifier guarding elements without the role.

use crate::git::{git, git_ok, url};
use crate::helpers::*;
use elementd::model::Role;
use serde_json::json;
use std::path::PathBuf;

fn clone_as(app: &TestApp, token: &str, slug: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let u = url(app, token, "acme", slug);
    git_ok(dir.path(), &["clone", "-q", &u, "wt"]);
    let wt = dir.path().join("wt");
    (dir, wt)
}

fn edit_spec(wt: &std::path::Path, from: &str, to: &str) {
    let p = wt.join(".triform/spec.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&p, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cannot_unseal_or_smuggle_a_secret() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "api-key",
        json!({"value": "s3cret-one", "sensitive": true}),
    )
    .await;
    let (_d, wt) = clone_as(&app, &app.admin, "api-key");
    edit_spec(&wt, "sensitive: true", "sensitive: false");
    git_ok(&wt, &["commit", "-qam", "unseal"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("turning sensitive off"), "{said}");
    // A sealed value in the pushed spec is refused as well.
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    edit_spec(
        &wt,
        "sensitive: true",
        "sensitive: true\n  value:\n    $sealed: v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    git_ok(&wt, &["commit", "-qam", "smuggle"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("$sealed"), "{said}");
    let (version, spec, _) = app.state_of("acme", "api-key").await;
    assert_eq!((version, spec["sensitive"].clone()), (1, json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_push_to_a_guarding_modifier() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.attach(
        "chat",
        "auth-policy",
        "admins-only",
        json!({"min_role": "admin"}),
    )
    .await;
    let member = app.token("acme", Role::Member).await;
    let (_d, wt) = clone_as(&app, &member, "admins-only");
    edit_spec(&wt, "min_role: admin", "min_role: viewer");
    git_ok(&wt, &["commit", "-qam", "weaken"]);
    let out = git(&wt, &["push", "origin", "draft"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("403"), "{said}");
    let (version, spec, _) = app.state_of("acme", "admins-only").await;
    assert_eq!((version, spec["min_role"].clone()), (1, json!("admin")));
    // The admin may.
    let admin_url = url(&app, &app.admin, "acme", "admins-only");
    git_ok(&wt, &["push", "-q", &admin_url, "draft"]);
    let (version, spec, _) = app.state_of("acme", "admins-only").await;
    assert_eq!((version, spec["min_role"].clone()), (2, json!("viewer")));
}
