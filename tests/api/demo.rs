//! `elementd demo` as a newcomer runs it: from a fresh folder, the demo
//! loads, its chat page works in two browser tabs through the demo's
//! backend (hooks refuse, answer and pass messages on; the webhook's
//! deliveries show on the page), a second start keeps what is there, the
//! backend takes signed requests only, and a server holding other circles
//! is not touched.

use crate::browser::*;
use crate::helpers::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `elementd <args>` in `cwd` with no data-dir setting, read as
/// `cli::start_until` does.
fn start(
    cwd: &Path,
    args: &[&str],
    url: Option<&str>,
    last: &str,
    and_next: bool,
) -> (Child, String, Vec<String>) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.current_dir(cwd).env_remove("ELEMENTD_DATA_DIR");
    crate::cli::start_until(c, args, url, last, and_next)
}

/// `elementd demo --listen addr` in `cwd` (the port the last start had),
/// read up to its last line about the demo.
fn start_on(cwd: &Path, addr: &str, url: Option<&str>) -> (Child, Vec<String>) {
    use std::io::BufRead;
    let mut c = Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.current_dir(cwd)
        .env_remove("ELEMENTD_DATA_DIR")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .args(["demo", "--listen", addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(u) = url {
        c.env("DATABASE_URL", u);
    }
    let mut child = c.spawn().unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut done = false;
    for l in out.lines() {
        let l = l.unwrap();
        done = l.starts_with("demo: the development token was shown");
        lines.push(l);
        if done {
            break;
        }
    }
    if !done {
        let _ = child.kill();
        let _ = child.wait();
        panic!("elementd demo on {addr} stopped early: {lines:?}");
    }
    (child, lines)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_loads_once_and_two_tabs_chat() {
    init_logs();
    let cwd = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let url = pg.as_ref().map(|(u, _)| u.as_str());
    let (child, base, lines) = start(cwd.path(), &["demo"], url, "demo: development token", true);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("demo: loaded the circle 'demo'")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!(
            "demo: chat page {base}/demo/ (open it in two tabs)"
        )),
        "{lines:?}"
    );
    let token = lines.last().unwrap().clone();
    assert!(token.starts_with("edt_"), "{lines:?}");

    // The development token writes on the circle; the chat runs on live
    // (the project was promoted) and the feed's link reaches the echo.
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let r = http.get(path).bearer_auth(&token).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (s, chat) = get(format!("{base}/api/demo/chat")).await;
    assert_eq!(s, 200, "{chat}");
    assert_eq!(chat["spec"]["on_message"], "hook");
    assert_eq!(chat["spec"]["hooks"]["connect"], true);
    let (s, att) = get(format!("{base}/api/demo/chat/ops/attachments")).await;
    assert_eq!(s, 200, "{att}");
    assert!(att.to_string().contains("backend-events"), "{att}");
    let (s, project) = get(format!("{base}/api/demo/chat-app")).await;
    assert_eq!(s, 200, "{project}");
    assert!(
        project["spec"]["environments"]["live"]["members"].is_object(),
        "{project}"
    );
    let (s, att) = get(format!("{base}/api/demo/chat/ops/attachments")).await;
    assert_eq!(s, 200, "{att}");
    assert!(att.to_string().contains("msg-limit"), "{att}");
    let start_at = Instant::now();
    loop {
        let (s, c) = get(format!("{base}/api/demo/feed/ops/connections")).await;
        assert_eq!(s, 200, "{c}");
        if c.as_array()
            .is_some_and(|a| a.iter().any(|l| l["state"] == "open"))
        {
            break;
        }
        assert!(
            start_at.elapsed() < Duration::from_secs(20),
            "the feed never reached the echo: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two tabs of the chat page: one says something, the other sees it.
    let driver = chromedriver().await;
    let d = session(&driver).await;
    d.goto(format!("{base}/demo/")).await.unwrap();
    let first = d.window().await.unwrap();
    click(&d, "#connect").await;
    wait_text(&d, "#status", "in room lobby").await;
    let second = d.new_tab().await.unwrap();
    d.switch_to_window(second.clone()).await.unwrap();
    d.goto(format!("{base}/demo/")).await.unwrap();
    fill(&d, "#name", "bea").await;
    click(&d, "#connect").await;
    wait_text(&d, "#status", "in room lobby").await;
    let say = |text: &'static str| {
        let d = d.clone();
        async move {
            fill(&d, "#text", text).await;
            click(&d, "#send").await;
        }
    };
    // A message goes through the backend to the room, the sender too.
    say("hello from the second tab").await;
    wait_text(&d, "#log li.mine", "hello from the second tab").await;
    // The backend answers a command to the sender alone and refuses a
    // banned word with an error frame.
    say("/roll").await;
    let rolled = wait_text(&d, "#log li.backend", "you rolled").await;
    assert!(rolled.text().await.unwrap().starts_with("backend:"));
    say("a spoiler: it was the butler").await;
    let refused = wait_text(&d, "#log li.refused", "DEMO_WORD_REFUSED").await;
    assert!(
        refused.text().await.unwrap().contains("'spoiler'"),
        "{}",
        refused.text().await.unwrap()
    );
    say("after the roll").await;
    d.switch_to_window(first.clone()).await.unwrap();
    let seen = wait_text(&d, "#log li.theirs", "hello from the second tab").await;
    assert!(seen.text().await.unwrap().starts_with("bea:"));
    // One connection's messages reach the backend in order: once the last
    // is here, what the backend kept from this tab is known.
    wait_text(&d, "#log li.theirs", "after the roll").await;
    let log = d.find(thirtyfour::By::Css("#log")).await.unwrap();
    let log = log.text().await.unwrap();
    assert!(
        !log.contains("rolled") && !log.contains("butler") && !log.contains("DEMO_WORD"),
        "the first tab saw bea's command or refusal: {log}"
    );
    // The chat's presence events: the first tab saw bea arrive.
    wait_text(&d, "#log li.theirs", "bea joined").await;
    // The connect hook gave bea a colour.
    let (s, conns) = get(format!("{base}/api/demo/chat/ops/connections?user=bea")).await;
    assert_eq!(s, 200, "{conns}");
    assert!(
        conns[0]["info"]["color"]
            .as_str()
            .is_some_and(|c| c.starts_with('#')),
        "{conns}"
    );
    // The backend's panel: the hooks it answered, and the webhook's
    // deliveries of the chat's events.
    wait_text(
        &d,
        "#received li",
        "hook message · bea: /roll → answered to bea alone",
    )
    .await;
    wait_text(&d, "#received li", "butler → refused").await;
    wait_text(&d, "#received li", "after the roll → passed to lobby").await;
    wait_text(
        &d,
        "#received li",
        "webhook ws.connection.opened · bea on live",
    )
    .await;
    wait_text(&d, "#received li", "webhook ws.message.received · bea").await;
    // The first tab is dropped (1012, as a restart would); what bea says
    // meanwhile reaches it once it has recovered.
    let r = http
        .post(format!("{base}/api/demo/chat/ops/close"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"user": "guest", "code": 1012, "reason": "restarting"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    d.switch_to_window(second.clone()).await.unwrap();
    fill(&d, "#text", "while you were away").await;
    click(&d, "#send").await;
    d.switch_to_window(first.clone()).await.unwrap();
    wait_text(&d, "#log li.theirs", "while you were away").await;
    let got = d
        .find_all(thirtyfour::By::Css("#log li.theirs"))
        .await
        .unwrap();
    let mut away = 0;
    for li in got {
        away += li.text().await.unwrap().contains("while you were away") as usize;
    }
    assert_eq!(away, 1, "seen once");
    wait_text(&d, "#status", "in room lobby").await;
    shot(&d, "demo-chat").await;
    assert_eq!(console_errors(&d).await, Vec::<String>::new());
    // bea's tab: the backend's answer and refusal, seen by her alone.
    d.switch_to_window(second.clone()).await.unwrap();
    shot(&d, "demo-chat-sender").await;
    assert_eq!(console_errors(&d).await, Vec::<String>::new());
    d.quit().await.unwrap();

    // A second start finds the demo and changes nothing but the address
    // it dials on itself: this start listens on another port.
    stop(child);
    let (child, base, lines) = start(
        cwd.path(),
        &["demo"],
        url,
        "demo: the development token was shown",
        false,
    );
    let addr = base.strip_prefix("http://").unwrap();
    assert!(
        lines.contains(&format!(
            "demo: the circle 'demo' is already here; its variable demo-address now holds {addr}, \
             where this server listens (nothing else was changed)"
        )),
        "{lines:?}"
    );
    let (s, var) = get(format!("{base}/api/demo/demo-address")).await;
    assert_eq!((s, &var["spec"]["value"]), (200, &serde_json::json!(addr)));
    #[cfg(unix)]
    for key in ["demo.key", "demo-backend.key"] {
        use std::os::unix::fs::PermissionsExt;
        let file = cwd.path().join("data").join(key);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key} is the owner's only");
    }
    let r = http
        .get(format!("{base}/demo/token?user=cy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: serde_json::Value = r.json().await.unwrap();
    let ws = base.replacen("http://", "ws://", 1);
    let cy_url = format!(
        "{ws}/ws/demo/chat?rooms=lobby&token={}",
        t["token"].as_str().unwrap()
    );
    // The connect hook reaches the backend at the new address, and so
    // does the message hook: cy's command is answered.
    let (mut cy, _) = tokio_tungstenite::connect_async(cy_url)
        .await
        .expect("cy connects");
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    cy.send(Message::text(r#"{"text":"/time"}"#)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = cy.next().await {
            if let Ok(Message::Text(t)) = m {
                if t.contains("clock says") {
                    return t.to_string();
                }
            }
        }
        panic!("cy's connection ended unanswered")
    })
    .await
    .expect("the backend answers /time");
    assert!(answer.contains(r#""from":"backend""#), "{answer}");
    // A third start on the same address changes nothing at all.
    stop(child);
    let (child, lines) = start_on(cwd.path(), addr, url);
    assert!(
        lines
            .iter()
            .any(|l| l == "demo: the circle 'demo' is already here; nothing was changed"),
        "{lines:?}"
    );
    let no_token = tokio_tungstenite::connect_async(format!("{ws}/ws/demo/chat")).await;
    assert!(no_token.is_err(), "no token, no chat");
    for bad in ["", "a b", "x!", &"u".repeat(33)] {
        let r = http
            .get(format!("{base}/demo/token"))
            .query(&[("user", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "user {bad:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "INVALID_USER");
    }
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_leaves_a_server_with_other_circles_alone() {
    init_logs();
    let cwd = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let url = pg.as_ref().map(|(u, _)| u.as_str());
    let (child, base, lines) = start(cwd.path(), &["serve"], url, "elementd listening on", false);
    let admin = lines
        .iter()
        .find(|l| l.starts_with("edt_"))
        .expect("admin token printed")
        .clone();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/ops/create"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"element_type": "circle", "slug": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    stop(child);

    let mut c = Command::new(env!("CARGO_BIN_EXE_elementd"));
    c.current_dir(cwd.path())
        .env_remove("ELEMENTD_DATA_DIR")
        .env_remove("DATABASE_URL")
        .args(["demo", "--listen", "127.0.0.1:0"]);
    if let Some(u) = url {
        c.env("DATABASE_URL", u);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the demo ran beside acme");
    assert!(
        err.contains("already holds circles (acme)") && err.contains("--anyway"),
        "{err}"
    );
    // Nothing was loaded: the next plain start lists acme alone.
    let (child, base, _) = start(cwd.path(), &["serve"], url, "elementd listening on", false);
    let list = get_json(&format!("{base}/api/ops/list"), &admin).await;
    let slugs: Vec<&str> = list["circles"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["acme"], "{list}");
    // Without --demo there is no chat page, nor the demo's backend.
    let http = reqwest::Client::new();
    for (post, path) in [
        (false, "/demo/"),
        (false, "/demo/token?user=ann"),
        (false, "/demo/backend/received"),
        (true, "/demo/backend/hook"),
        (true, "/demo/backend/webhook"),
    ] {
        let url = format!("{base}{path}");
        let req = if post {
            http.post(url).body("{}")
        } else {
            http.get(url)
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "ROUTE_NOT_FOUND", "{path}");
    }
    stop(child);
}

/// The demo's backend takes what is signed with the demo's key, fresh,
/// and nothing else: a refusal is a 401 envelope and is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_backend_takes_signed_requests_only() {
    init_logs();
    let cwd = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let url = pg.as_ref().map(|(u, _)| u.as_str());
    let (child, base, _) = start(cwd.path(), &["demo"], url, "demo: development token", true);
    let key = std::fs::read_to_string(cwd.path().join("data/demo-backend.key")).unwrap();
    assert!(key.starts_with("whsec_"), "a Standard Webhooks secret");
    let ours = standardwebhooks::Webhook::new(key.trim()).unwrap();
    let theirs = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let send = |path: &str, body: &str, wh: Option<(&standardwebhooks::Webhook, i64)>| {
        let mut req = http.post(format!("{base}{path}")).body(body.to_string());
        if let Some((wh, ts)) = wh {
            let sig = wh.sign("msg_1", ts, body.as_bytes()).unwrap();
            req = req
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sig);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            )
        }
    };
    let received = || {
        let http = http.clone();
        let url = format!("{base}/demo/backend/received");
        async move {
            let v: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
            v["received"].as_array().unwrap().clone()
        }
    };
    let connect = r#"{"type":"connect","user":"ann"}"#;
    for path in ["/demo/backend/hook", "/demo/backend/webhook"] {
        // Unsigned, signed with another key, signed 10 minutes ago, or
        // with a garbled timestamp: refused, the same way.
        let before = received().await;
        for wh in [None, Some((&theirs, now)), Some((&ours, now - 600))] {
            let got = send(path, connect, wh).await;
            assert_eq!(got.0, 401, "{path}: {}", got.1);
            assert_eq!(got.1["error"]["code"], "UNAUTHORIZED", "{path}");
            assert!(
                !got.1.to_string().contains(key.trim()),
                "the key never shows"
            );
        }
        let r = http
            .post(format!("{base}{path}"))
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", "soon")
            .header("webhook-signature", ours.sign("msg_1", now, b"{}").unwrap())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        // Signed but not JSON: 400.
        let got = send(path, "not json", Some((&ours, now))).await;
        assert_eq!(got.0, 400, "{path}: {}", got.1);
        assert_eq!(got.1["error"]["code"], "INVALID_BODY");
        assert_eq!(received().await, before, "{path}: nothing refused is kept");
    }
    let r = http
        .get(format!("{base}/demo/backend/hook"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // Signed with the demo's key: answered and kept.
    let got = send("/demo/backend/hook", connect, Some((&ours, now))).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["allow"], true);
    assert_eq!(got.1["info"]["name"], "ann");
    let msg = r#"{"type":"message","user":"ann","rooms":["lobby"],"message":"{\"text\":\"no spoiler\"}"}"#;
    let got = send("/demo/backend/hook", msg, Some((&ours, now))).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["reply"]["code"], "DEMO_WORD_REFUSED", "{}", got.1);
    let event =
        r#"{"id":"e1","type":"ws.connection.opened","data":{"data":{"user":"ann","env":"live"}}}"#;
    let got = send("/demo/backend/webhook", event, Some((&ours, now))).await;
    assert_eq!(got.0, 204);
    let kept = received().await;
    let firsts: Vec<(&str, &str)> = kept
        .iter()
        .take(3)
        .map(|e| (e["via"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        firsts,
        [
            ("webhook", "ws.connection.opened"),
            ("hook", "message"),
            ("hook", "connect")
        ],
        "{kept:?}"
    );
    // The panel keeps the newest 50.
    for _ in 0..60 {
        assert_eq!(
            send("/demo/backend/webhook", event, Some((&ours, now)))
                .await
                .0,
            204
        );
    }
    assert_eq!(received().await.len(), 50);
    stop(child);
}

/// A circle `demo` from before the backend (no `demo-address`) is the
/// demo already here: it stays as it was, and the start says why the
/// hooks and the webhook are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_demo_stays_as_it_was() {
    init_logs();
    let cwd = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let url = pg.as_ref().map(|(u, _)| u.as_str());
    let (child, base, lines) = start(cwd.path(), &["serve"], url, "elementd listening on", false);
    let admin = lines
        .iter()
        .find(|l| l.starts_with("edt_"))
        .expect("admin token printed")
        .clone();
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/ops/create",
            serde_json::json!({"element_type": "circle", "slug": "demo"}),
        ),
        (
            "/api/demo/ops/create",
            serde_json::json!({"element_type": "websocket", "slug": "chat",
                               "spec": {"path": "/chat", "on_message": "room"}}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{path}");
    }
    stop(child);
    let (child, base, lines) = start(
        cwd.path(),
        &["demo"],
        url,
        "demo: the development token was shown",
        false,
    );
    for want in [
        "demo: the circle 'demo' is already here; nothing was changed",
        "demo: this demo predates the backend's hooks and webhook and stays as it was; \
         start with a fresh --data-dir to see them",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want}: {lines:?}");
    }
    let chat = get_json(&format!("{base}/api/demo/chat"), &admin).await;
    assert_eq!(chat["spec"]["on_message"], "room", "{chat}");
    assert!(chat["spec"].get("hooks").is_none(), "{chat}");
    let list = get_json(&format!("{base}/api/demo/ops/list"), &admin).await;
    let text = list.to_string();
    assert!(
        text.contains("\"chat\"") && !text.contains("backend-events"),
        "{list}"
    );
    stop(child);
}
