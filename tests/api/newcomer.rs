//! The README's own way in: `elementd serve` started from a fresh folder
//! with the default `./data` (a relative path), then the git command line.
//! Every push rule must hold there as it does in the harness.

use crate::git::{git, git_ok};
use crate::helpers::*;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command};

/// `elementd serve` in `cwd` with no data-dir setting: answers the child,
/// the base URL, the admin token and every line it printed.
fn serve_in(cwd: &Path, url: Option<&str>) -> (Child, String, String, Vec<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.current_dir(cwd).env_remove("ELEMENTD_DATA_DIR");
    let (child, addr, lines) = crate::cli::start_serve(c, url);
    let token = lines
        .iter()
        .find(|l| l.starts_with("edt_"))
        .expect("admin token printed")
        .clone();
    (child, addr, token, lines)
}

fn rejected(wt: &Path, args: &[&str], why: &str) -> String {
    let out = git(wt, args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{why}: git {args:?} was accepted\n{err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rules_hold_with_the_readme_defaults() {
    init_logs();
    let cwd = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let (mut child, base, token, lines) =
        serve_in(cwd.path(), pg.as_ref().map(|(u, _)| u.as_str()));
    // The startup names the real data directory, not "./data".
    let real = std::fs::canonicalize(cwd.path().join("data")).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("elementd data in {}", real.display())),
        "{lines:?}"
    );
    assert!(real.join("admin.token").exists());

    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/ops/create",
            json!({"element_type": "circle", "slug": "acme"}),
        ),
        (
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "chat"}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{path}");
    }
    let host = base.trim_start_matches("http://");
    let remote = format!("http://t:{token}@{host}/git/acme/chat.git");
    let work = tempfile::tempdir().unwrap();
    git_ok(work.path(), &["clone", "-q", &remote, "wt"]);
    let wt = work.path().join("wt");
    let version = || async {
        let v = get_json(&format!("{base}/api/acme/chat"), &token).await;
        v["version"].as_i64().unwrap()
    };
    let before = version().await;

    // Broken YAML on draft.
    std::fs::write(wt.join(".triform/spec.yaml"), "element_type: [unclosed\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "broken"]);
    let err = rejected(&wt, &["push", "-q", "origin", "draft"], "broken YAML");
    assert!(err.contains("push to draft rejected"), "{err}");
    // Straight to live, and a new branch.
    let err = rejected(&wt, &["push", "-q", "origin", "HEAD:live"], "push to live");
    assert!(err.contains("promotion"), "{err}");
    rejected(
        &wt,
        &["push", "-q", "origin", "HEAD:refs/heads/side"],
        "new branch",
    );
    // A committed .env with a cloud key, in an otherwise good tree.
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    std::fs::write(
        wt.join(".env"),
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    )
    .unwrap();
    git_ok(&wt, &["add", ".env"]);
    git_ok(&wt, &["commit", "-qm", "env"]);
    rejected(&wt, &["push", "-q", "origin", "draft"], "a committed .env");
    // A force push that rewrites draft.
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    std::fs::write(wt.join("README.md"), "# one\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "one"]);
    git_ok(&wt, &["push", "-q", "origin", "draft"]);
    git_ok(&wt, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::write(wt.join("README.md"), "# two\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "two"]);
    rejected(
        &wt,
        &["push", "-q", "--force", "origin", "draft"],
        "force push",
    );
    assert_eq!(
        version().await,
        before + 1,
        "only the one good push became a version"
    );

    // Fail closed: without its hook, git takes no push at all.
    std::fs::remove_file(real.join("hooks/pre-receive")).unwrap();
    git_ok(&wt, &["reset", "-q", "--hard", "origin/draft"]);
    std::fs::write(wt.join("README.md"), "# three\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "three"]);
    let err = rejected(
        &wt,
        &["push", "-q", "origin", "draft"],
        "push without its hook",
    );
    assert!(err.contains("500"), "{err}");
    assert_eq!(version().await, before + 1, "nothing was changed");

    let _ = child.kill();
    let _ = child.wait();
}
