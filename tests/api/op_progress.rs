//! Long ops (import, export, a manifest's promotion, repair) tell
//! `op.progress` between `started` and their terminal event, and one whose
//! caller leaves stops between two whole steps with `op.cancelled`.

use crate::events::SseReader;
use crate::git::git_ok;
use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Events of one invocation from `sse`, from its `started` up to and
/// including its terminal event.
async fn one_invocation(sse: &mut SseReader, op: &str) -> Vec<(String, Value)> {
    let started = loop {
        let (_, kind, v) = sse.next().await;
        if kind == "op.started" && v["op"] == op {
            break v;
        }
    };
    let inv = started["invocation_id"].clone();
    let mut out = vec![("op.started".to_string(), started)];
    loop {
        let (_, kind, v) = sse.next().await;
        if v["invocation_id"] != inv {
            continue;
        }
        let end = matches!(kind.as_str(), "op.completed" | "op.failed" | "op.cancelled");
        out.push((kind, v));
        if end {
            return out;
        }
    }
}

/// The `(done, total)` of each progress event, in order.
fn progress(events: &[(String, Value)]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter(|(k, _)| k == "op.progress")
        .map(|(_, v)| {
            let d = &v["data"];
            (d["done"].as_u64().unwrap(), d["total"].as_u64().unwrap())
        })
        .collect()
}

/// A circle `src` with `n` variables, exported: the bundles an import takes.
async fn exported(app: &TestApp, n: usize) -> Vec<Value> {
    app.circle("src").await;
    for i in 0..n {
        let slug = format!("v{i:02}");
        app.element("src", "variable", &slug, json!({"value": "x"}))
            .await;
    }
    let mut sse = SseReader::open(app, "/api/src/ops/events", None).await;
    let (s, v) = app.get("/api/src/ops/export/bundle").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let told = progress(&one_invocation(&mut sse, "export_bundle").await);
    let want: Vec<(u64, u64)> = (1..=n as u64).map(|d| (d, n as u64)).collect();
    assert_eq!(told, want, "the export tells each bundle");
    let elements = v["elements"].as_array().unwrap().clone();
    assert_eq!(elements.len(), n);
    elements
}

/// POSTs `body` to `path` on a raw connection and closes it once the op
/// told its first step: the op's invocation id and its `op.cancelled`
/// data.
async fn leave_after_first_step(
    app: &TestApp,
    sse: &mut SseReader,
    path: &str,
    body: Value,
) -> (Value, Value) {
    let body = body.to_string();
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        app.admin,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let started = sse.next_of("op.started").await;
    let inv = started["invocation_id"].clone();
    let first = sse.next_of("op.progress").await;
    assert_eq!(first["invocation_id"], inv);
    drop(conn);
    let mut kinds = Vec::new();
    loop {
        let (_, kind, v) = sse.next().await;
        if v["invocation_id"] != inv {
            continue;
        }
        kinds.push(kind.clone());
        if kind.starts_with("op.") && kind != "op.progress" {
            assert_eq!(kind, "op.cancelled", "{kinds:?}: {v}");
            return (inv, v["data"].clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_tells_its_progress_between_started_and_completed() {
    let app = spawn_app().await;
    let bundles = exported(&app, 4).await;
    app.circle("acme").await;
    let mut sse = SseReader::open(&app, "/api/acme/ops/events", None).await;
    let (s, v) = app
        .post("/api/acme/ops/import/bundle", json!({"elements": bundles}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["imported"], 4);
    let events = one_invocation(&mut sse, "import_bundle").await;
    assert_eq!(events.last().unwrap().0, "op.completed");
    assert_eq!(progress(&events), [(1, 4), (2, 4), (3, 4), (4, 4)]);
    // Each step is told after its element was made.
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let first_progress = kinds.iter().position(|k| *k == "op.progress").unwrap();
    let first_created = kinds.iter().position(|k| *k == "element.created").unwrap();
    assert!(first_created < first_progress, "{kinds:?}");
    // A bad import tells no progress: it fails before any step.
    let (s, _) = app
        .post(
            "/api/acme/ops/import/bundle",
            json!({"bundle_base64": "bm90IGEgYnVuZGxl"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let events = one_invocation(&mut sse, "import_bundle").await;
    assert_eq!(events.last().unwrap().0, "op.failed");
    assert!(progress(&events).is_empty(), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_leaves_stops_the_import_between_whole_elements() {
    let app = spawn_app().await;
    let n = 40;
    let bundles = exported(&app, n).await;
    app.circle("acme").await;
    let mut sse = SseReader::open(&app, "/api/acme/ops/events", None).await;
    let body = json!({"elements": bundles});
    let (inv, data) =
        leave_after_first_step(&app, &mut sse, "/api/acme/ops/import/bundle", body).await;
    let data = &data;
    assert_eq!(data["code"], "OP_CANCELLED");
    assert_eq!(data["status"], 499);
    assert_eq!(data["total"], n);
    let done = data["done"].as_u64().unwrap();
    assert!(done >= 1 && done < n as u64, "stopped part way: {data}");
    // What it did is whole: exactly the elements it got to, each with its
    // version and an intact repository; nothing else.
    let (_, list) = app.get("/api/acme/ops/list").await;
    let made: Vec<String> = list["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(made.len() as u64, done, "{made:?}");
    for slug in &made {
        let (s, st) = app
            .get(&format!("/api/acme/{slug}/ops/source/status"))
            .await;
        assert_eq!(s, StatusCode::OK, "{st}");
        assert_eq!(st["health"], "ok", "{slug}: {st}");
        assert_eq!(app.state_of("acme", slug).await.0, 1);
    }
    // Exactly one terminal event: the next op's events follow, and no
    // `completed` of the import comes between.
    app.get("/api/acme").await;
    loop {
        let (_, kind, v) = sse.next().await;
        assert_ne!(v["invocation_id"], inv, "after op.cancelled: {kind}");
        if kind == "op.started" && v["op"] == "get" {
            break;
        }
    }
    // Run again, it takes the rest: the done ones are skipped.
    let (s, v) = app
        .post("/api/acme/ops/import/bundle", json!({"elements": bundles}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["imported"].as_u64().unwrap() + done, n as u64, "{v}");
    assert_eq!(v["skipped"].as_u64().unwrap(), done, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_promotion_tells_each_member_checked() {
    let app = spawn_app().await;
    app.circle("acme").await;
    for slug in ["a", "b", "c"] {
        let spec = json!({"path": format!("/{slug}")});
        app.element("acme", "websocket", slug, spec).await;
    }
    app.element(
        "acme",
        "project",
        "shop",
        json!({"members": ["a", "b", "c"]}),
    )
    .await;
    let mut sse = SseReader::open(&app, "/api/acme/shop/ops/events", None).await;
    let (s, v) = app
        .post("/api/acme/shop/ops/promote", json!({"to": "demo"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let events = one_invocation(&mut sse, "promote").await;
    assert_eq!(progress(&events), [(1, 3), (2, 3), (3, 3)]);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"op.started"));
    assert_eq!(kinds.last(), Some(&"op.completed"));
    let promoted = kinds.iter().position(|k| *k == "element.promoted").unwrap();
    let last_progress = kinds.iter().rposition(|k| *k == "op.progress").unwrap();
    assert!(
        last_progress < promoted,
        "checked before written: {kinds:?}"
    );
    // A refused promotion (live before demo on another project) tells no
    // progress and writes nothing.
    app.element("acme", "project", "new", json!({"members": ["a"]}))
        .await;
    let mut sse = SseReader::open(&app, "/api/acme/new/ops/events", None).await;
    let got = app
        .post("/api/acme/new/ops/promote", json!({"to": "live"}))
        .await;
    assert_error(&got, 412, "PROMOTE_DEMO_FIRST");
    let events = one_invocation(&mut sse, "promote").await;
    assert_eq!(events.last().unwrap().0, "op.failed");
    assert!(progress(&events).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_leaves_a_promotion_leaves_nothing_written() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let n = 30;
    let members: Vec<String> = (0..n).map(|i| format!("w{i:02}")).collect();
    for slug in &members {
        let spec = json!({"path": format!("/{slug}")});
        app.element("acme", "websocket", slug, spec).await;
    }
    app.element("acme", "project", "shop", json!({"members": members}))
        .await;
    let mut sse = SseReader::open(&app, "/api/acme/shop/ops/events", None).await;
    let body = json!({"to": "demo", "message": "all at once"});
    let (_, data) =
        leave_after_first_step(&app, &mut sse, "/api/acme/shop/ops/promote", body).await;
    assert_eq!(data["code"], "OP_CANCELLED");
    assert_eq!(data["total"], n);
    assert!(data["done"].as_u64().unwrap() < n as u64, "{data}");
    // Stopped before its one transaction: no snapshot, and each member has
    // only the releases its creation made.
    let (_, snaps) = app.get("/api/acme/shop/ops/snapshots").await;
    assert_eq!(snaps["snapshots"], json!([]), "{snaps}");
    for slug in &members {
        let (_, p) = app
            .get(&format!("/api/acme/{slug}/ops/source/promotions"))
            .await;
        let made: Vec<&str> = p["promotions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["message"].as_str().unwrap())
            .collect();
        assert_eq!(made, ["created", "created"], "{slug}: {p}");
    }
    // Asked again and left alone, it goes through whole.
    let (s, v) = app
        .post("/api/acme/shop/ops/promote", json!({"to": "demo"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["changes"].as_array().unwrap().len(), n);
    let (_, snaps) = app.get("/api/acme/shop/ops/snapshots").await;
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 1, "{snaps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_tells_each_fix() {
    let app = spawn_app().await;
    app.with_chat().await;
    let id = app.get("/api/acme/chat").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = app.config.repos_dir().join(format!("{id}.git"));
    git_ok(&repo, &["update-ref", "-d", "refs/heads/demo"]);
    git_ok(
        &repo,
        &["update-ref", "refs/heads/stray", "refs/heads/draft"],
    );
    git_ok(&repo, &["update-ref", "refs/tags/v9", "refs/heads/draft"]);
    let mut sse = SseReader::open(&app, "/api/acme/chat/ops/events", None).await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/source/repair",
            json!({"dry_run": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["in_sync"], true, "{v}");
    let found = v["drift"].as_array().unwrap().len() as u64;
    let fixed = v["repaired"].as_array().unwrap().len() as u64;
    assert_eq!((found, fixed), (3, 3), "{v}");
    let events = one_invocation(&mut sse, "source_repair").await;
    assert_eq!(events.last().unwrap().0, "op.completed");
    assert_eq!(progress(&events), [(1, 3), (2, 3), (3, 3)]);
    // A dry run reports and fixes nothing, so it tells no progress.
    git_ok(
        &repo,
        &["update-ref", "refs/heads/stray", "refs/heads/draft"],
    );
    let (_, dry) = app
        .post("/api/acme/chat/ops/source/repair", json!({}))
        .await;
    assert_eq!(dry["drift"].as_array().unwrap().len(), 1, "{dry}");
    let events = one_invocation(&mut sse, "source_repair").await;
    assert_eq!(events.last().unwrap().0, "op.completed");
    assert!(progress(&events).is_empty(), "{events:?}");
}
