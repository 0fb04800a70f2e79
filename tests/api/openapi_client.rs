//! A client generated from the served document with a real generator
//! (openapi-python-client, pinned in scripts/test.sh) promotes and
//! broadcasts through its typed methods against the running server.

use crate::helpers::spawn_app;
use crate::ws_client::{connect, next_text};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Imports the generated package and calls `source/promote` and
/// `broadcast` with its typed bodies; prints what the typed answers say.
const SCRIPT: &str = r#"
import json, sys
from elementd_client import AuthenticatedClient
from elementd_client.api.source import source_promote_post
from elementd_client.api.websocket import broadcast_post
from elementd_client.models import (
    BroadcastPostBody, BroadcastPostResponse200, Env, Release, SourcePromotePostBody,
)

base, token = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)
r = source_promote_post.sync(
    client=client, circle="acme", slug="chat",
    body=SourcePromotePostBody(from_=Env.DRAFT, to=Env.DEMO, message="from python"),
)
assert isinstance(r, Release), repr(r)
b = broadcast_post.sync(
    client=client, circle="acme", slug="chat",
    body=BroadcastPostBody(message="hello from python"),
)
assert isinstance(b, BroadcastPostResponse200), repr(b)
print(json.dumps({
    "promote": {"from": r.from_.value, "to": r.to.value, "promoted": r.promoted,
                "commit": r.commit, "version": r.version},
    "broadcast": {"delivered_to": b.delivered_to, "subscriber_count": b.subscriber_count,
                  "env": b.env.value},
}))
"#;

/// Runs `cmd` to success; its stdout and stderr.
fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_promotes_and_broadcasts() {
    // Never skipped quietly: without the generator this test proves nothing.
    let generator = std::env::var("ELEMENTD_OPENAPI_CLIENT_GENERATOR").expect(
        "ELEMENTD_OPENAPI_CLIENT_GENERATOR must name openapi-python-client \
         (scripts/test.sh installs it into target/openapi-venv)",
    );
    // The generator's venv has what the generated code imports (httpx, attrs).
    let python = Path::new(&generator).with_file_name("python");
    let app = spawn_app().await;
    app.with_chat().await;
    // A change on draft, so the promotion moves demo forward.
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"heartbeat": {"interval_ms": 20000}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (_, doc) = app.get("/api/openapi.json").await;
    let dir = tempfile::tempdir().unwrap();
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, doc.to_string()).unwrap();
    let package = dir.path().join("elementd_client");
    let (_, said) = run(Command::new(&generator)
        .arg("generate")
        .arg("--path")
        .arg(&doc_file)
        .args(["--meta", "none", "--output-path"])
        .arg(&package));
    assert!(package.join("api/source/source_promote_post.py").exists());
    // Every part of the API is understood; only git's own wire formats
    // (not JSON) are left out of a generated client.
    let skipped: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("WARNING parsing") && !l.contains(" /git/"))
        .collect();
    assert!(
        skipped.is_empty(),
        "the generator skipped: {skipped:?}\n{said}"
    );
    let script = dir.path().join("call.py");
    std::fs::write(&script, SCRIPT).unwrap();

    // A real client on live (where the broadcast goes; the promotion
    // moves demo), connected before the script runs.
    let mut ws = connect(&app, "/ws/acme/ws").await;
    let out = tokio::task::spawn_blocking({
        let (python, script, dir) = (python.clone(), script.clone(), dir.path().to_owned());
        let (base, token) = (app.base.clone(), app.admin.clone());
        move || {
            run(Command::new(&python)
                .arg(&script)
                .arg(&base)
                .arg(&token)
                .env("PYTHONPATH", &dir))
        }
    })
    .await
    .unwrap()
    .0;
    assert_eq!(next_text(&mut ws).await, "hello from python");
    let got: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(got["promote"]["from"], "draft", "{got}");
    assert_eq!(got["promote"]["to"], "demo");
    assert_eq!(got["promote"]["promoted"], true);
    assert_eq!(got["broadcast"]["delivered_to"], 1, "{got}");
    assert_eq!(got["broadcast"]["env"], "live");
    // The server agrees: demo runs the promoted commit, with its message.
    let (_, list) = app
        .get("/api/acme/chat/ops/source/promotions?env=demo&limit=1")
        .await;
    assert_eq!(list["promotions"][0]["message"], "from python", "{list}");
    assert_eq!(list["promotions"][0]["commit"], got["promote"]["commit"]);
}
