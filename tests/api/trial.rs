//! A new user's trial (issue 18): the small truths the README promises.

use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Callers' mistakes are their own count; they do not make a healthy
/// element look broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_the_elements_not_its_callers() {
    let app = spawn_app().await;
    app.with_chat().await;
    for _ in 0..12 {
        let r = app
            .call(
                Method::POST,
                "/api/acme/chat/ops/broadcast",
                Some(&app.admin),
                Some(json!({"bogus": true})),
            )
            .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
        let r = app
            .call(
                Method::GET,
                "/api/acme/chat/ops/stats",
                Some("edt_wrong"),
                None,
            )
            .await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    }
    let r = app
        .call(
            Method::POST,
            "/api/acme/chat/ops/send",
            Some(&app.admin),
            Some(json!({"connection_id": "nobody", "message": "hi", "env": "draft"})),
        )
        .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
    let (s, v) = app.get("/api/acme/chat/ops/stats").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["health"], "ok", "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["client_errors"].as_i64().unwrap() >= 13, "{v}");
    let (_, all) = app.get("/api/acme/ops/batch_stats").await;
    let chat = all["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slug"] == "chat")
        .unwrap()
        .clone();
    assert_eq!(chat["health"], "ok", "{chat}");
    assert!(
        all["aggregate"]["client_errors"].as_i64().unwrap() >= 13,
        "{all}"
    );
}

fn git_dir(app: &TestApp, id: &str, args: &[&str]) -> String {
    let dir = app.config.repos_dir().join(format!("{id}.git"));
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Branches that disagree with their releases, and stray refs, are seen by
/// status and healed by repair; a branch move that fails is a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_repair_cover_every_branch_and_ref() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.release("acme", "chat").await;
    let (_, el) = app.get("/api/acme/chat").await;
    let id = el["id"].as_str().unwrap().to_string();
    let released = git_dir(&app, &id, &["rev-parse", "refs/heads/live"]);
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"path": "/v2"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let draft = git_dir(&app, &id, &["rev-parse", "refs/heads/draft"]);
    // Someone with disk access moves live and leaves refs behind.
    git_dir(&app, &id, &["update-ref", "refs/heads/live", &draft]);
    git_dir(&app, &id, &["update-ref", "refs/heads/side", &draft]);
    git_dir(&app, &id, &["update-ref", "refs/tags/v1", &draft]);
    let (_, st) = app.get("/api/acme/chat/ops/source/status").await;
    assert_eq!(st["health"], "warning", "{st}");
    let said = st["warnings"].to_string();
    for needle in ["live is at", "refs/heads/side", "refs/tags/v1"] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    let (_, dry) = app
        .post("/api/acme/chat/ops/source/repair", json!({}))
        .await;
    assert_eq!(dry["in_sync"], false, "{dry}");
    assert_eq!(
        git_dir(&app, &id, &["rev-parse", "refs/heads/live"]),
        draft,
        "a dry run changes nothing"
    );
    let (_, fixed) = app
        .post(
            "/api/acme/chat/ops/source/repair",
            json!({"dry_run": false}),
        )
        .await;
    assert_eq!(fixed["in_sync"], true, "{fixed}");
    assert_eq!(
        git_dir(&app, &id, &["rev-parse", "refs/heads/live"]),
        released
    );
    let refs = git_dir(&app, &id, &["for-each-ref", "--format=%(refname)"]);
    assert_eq!(
        refs.lines().collect::<Vec<_>>(),
        ["refs/heads/demo", "refs/heads/draft", "refs/heads/live"]
    );

    // A promotion whose branch cannot move says so, and repair heals it.
    let lock = app
        .config
        .repos_dir()
        .join(format!("{id}.git/refs/heads/demo.lock"));
    std::fs::write(&lock, "").unwrap();
    let (s, r) = app
        .post(
            "/api/acme/chat/ops/source/promote",
            json!({"from": "draft", "to": "demo"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["promoted"], true, "{r}");
    assert!(
        r["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "the failed move is a warning: {r}"
    );
    std::fs::remove_file(&lock).unwrap();
    let (_, st) = app.get("/api/acme/chat/ops/source/status").await;
    assert!(st["warnings"].to_string().contains("demo is at"), "{st}");
    let (_, fixed) = app
        .post(
            "/api/acme/chat/ops/source/repair",
            json!({"dry_run": false}),
        )
        .await;
    assert_eq!(fixed["in_sync"], true, "{fixed}");
    assert_eq!(git_dir(&app, &id, &["rev-parse", "refs/heads/demo"]), draft);
}

/// The recorder keeps what the database refuses for a while (a full
/// descriptor table, a restart) and writes it once it can: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_keeps_runs_the_database_refused_for_a_while() {
    let app = spawn_app().await;
    app.with_chat().await;
    let pg = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
    let block: &[&str] = if pg {
        &[
            "CREATE FUNCTION refuse_runs() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_runs BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION refuse_runs()",
        ]
    } else {
        &["CREATE TRIGGER refuse_runs BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'refused'); END"]
    };
    for sql in block {
        sqlx::query(sql).execute(&app.db.pool).await.unwrap();
    }
    for i in 0..3 {
        let (s, v) = app
            .patch(
                "/api/acme/chat/ops/update",
                json!({"name": format!("n{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Long enough for the recorder to try, fail three times and give up
    // for this turn.
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    let unblock = if pg {
        "DROP TRIGGER refuse_runs ON runs"
    } else {
        "DROP TRIGGER refuse_runs"
    };
    sqlx::query(unblock).execute(&app.db.pool).await.unwrap();
    let (_, s) = app.get("/api/acme/chat/ops/stats").await;
    assert!(
        s["runs"].as_i64().unwrap() >= 3,
        "the refused runs were written later: {s}"
    );
}
