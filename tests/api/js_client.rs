//! The JavaScript client (`clients/js/elementd.mjs`, served at
//! `/client/elementd.mjs`) in headless Chromium: a page imports it from
//! the server's own origin (the console's page, whose policy allows
//! scripts and websockets of that origin only) and records what it emits.

use crate::browser::{chromedriver, session};
use crate::helpers::*;
use crate::ws_client::eventually;
use elementd::server::Server;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use std::time::Duration;
use thirtyfour::prelude::*;

/// Imports the client, wraps `WebSocket` to count attempts, and starts
/// `new ElementdClient(url, opts)` with `getToken` handing out `tokens` in
/// turn (when given). Everything it emits goes to `window.t`.
const SETUP: &str = r#"
const [url, opts, tokens] = arguments; const done = arguments[arguments.length - 1];
import("/client/elementd.mjs").then(({ ElementdClient }) => {
  const t = window.t = { log: [], tokenCalls: 0, handed: 0, sockets: 0, urls: [], closes: [], opened: [] };
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(...a) {
      super(...a); t.sockets++; t.urls.push(a[0]);
      this.addEventListener("close", (e) => t.closes.push([e.code, Date.now()]));
      this.addEventListener("open", () => t.opened.push(Date.now()));
    }
  };
  // An entry is a token, or [token, ms to wait before handing it out].
  if (tokens) opts.getToken = () => {
    const [token, wait] = [].concat(tokens[t.tokenCalls++]);
    return new Promise((ok) => setTimeout(() => { t.handed++; ok(token); }, wait ?? 0));
  };
  const c = window.c = new ElementdClient(url, opts);
  for (const kind of ["message", "state", "reset", "error", "presence", "joined", "control"]) {
    c.on(kind, (v) => t.log.push({ kind, v }));
  }
  c.connect();
  done(true);
}, (e) => done(String(e)));
"#;

async fn start_page(d: &WebDriver, base: &str, url: &str, opts: Value, tokens: Value) {
    d.goto(format!("{base}/console/")).await.unwrap();
    let r = d
        .execute_async(SETUP, vec![json!(url), opts, tokens])
        .await
        .unwrap();
    assert_eq!(r.json(), &json!(true), "the module loads");
}

/// What the page's client emitted so far, in order: `{kind, v}`.
async fn log(d: &WebDriver) -> Vec<Value> {
    let r = d.execute("return window.t.log", vec![]).await.unwrap();
    r.json().as_array().cloned().unwrap_or_default()
}

async fn page_number(d: &WebDriver, name: &str) -> u64 {
    let r = d
        .execute(&format!("return window.t.{name}"), vec![])
        .await
        .unwrap();
    r.json().as_u64().unwrap()
}

fn of_kind<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| &e["v"])
        .collect()
}

/// Waits until the page's log passes `check`.
async fn wait_log(d: &WebDriver, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let l = log(d).await;
        if check(&l) {
            return l;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}; the page logged {l:?} {:?}",
            d.execute("return window.t.urls", vec![])
                .await
                .unwrap()
                .json()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn opens(l: &[Value]) -> usize {
    of_kind(l, "state")
        .iter()
        .filter(|s| s.as_str() == Some("open"))
        .count()
}

/// A server this test can stop and start again on the same port and data.
struct Node {
    server: Option<Server>,
    config: elementd::config::Config,
    base: String,
    admin: String,
    http: reqwest::Client,
}

impl Node {
    async fn call(&self, get: bool, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = if get {
            self.http.get(url)
        } else {
            self.http.post(url).json(&body)
        };
        let r = req.bearer_auth(&self.admin).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn publish(&self, from: usize, to: usize) {
        for i in from..=to {
            let body = json!({"message": format!("m{i}"), "room": "lobby"});
            self.call(false, "/api/acme/feed/ops/broadcast", body).await;
        }
    }

    /// Closes every connection of the element with 1012; how many were
    /// closed (one listed but already gone answers 404).
    async fn close_all(&self) -> usize {
        let conns = self
            .call(true, "/api/acme/feed/ops/connections", Value::Null)
            .await;
        let mut closed = 0;
        for c in conns.as_array().unwrap() {
            let body =
                json!({"connection_id": c["connection_id"], "code": 1012, "reason": "restarting"});
            let r = self
                .http
                .post(format!("{}/api/acme/feed/ops/close", self.base))
                .bearer_auth(&self.admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => closed += 1,
                404 => {}
                s => panic!("close: {s} {}", r.text().await.unwrap()),
            }
        }
        closed
    }
}

/// The issue's scenario: a page in a room while 200 messages are published;
/// midway every connection is closed with 1012, twice, and the server
/// restarts once (on the same port, so the page's URL and the console
/// page's `connect-src 'self'` still hold). Each message is seen exactly
/// once, in order. On SQLite history lives in memory, so the restart
/// loses it: the page is told `reset`. On PostgreSQL the page recovers
/// across the restart too. The test publishes again only once the page
/// is open after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_once_in_order_across_closes_and_a_restart() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let mut config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    let server = Server::start(config.clone()).await.unwrap();
    config.listen = server.addr.to_string();
    let mut node = Node {
        base: format!("http://{}", server.addr),
        admin: server.admin_token.clone().unwrap(),
        server: Some(server),
        config,
        http: reqwest::Client::new(),
    };
    node.call(
        false,
        "/api/ops/create",
        json!({"element_type": "circle", "slug": "acme"}),
    )
    .await;
    let spec = json!({"path": "/feed", "rooms": {"enabled": true},
                      "history": {"size": 1000, "ttl_s": 600}});
    node.call(
        false,
        "/api/acme/ops/create",
        json!({"element_type": "websocket", "slug": "feed", "spec": spec}),
    )
    .await;

    let driver = chromedriver().await;
    let d = session(&driver).await;
    let ws = format!("{}/ws/acme/feed", node.base.replacen("http", "ws", 1));
    // A shorter backoff than the default (0.5 s to 20 s) keeps the test
    // short; more failures are allowed while the server is down.
    let opts =
        json!({"rooms": ["lobby"], "backoff": {"baseMs": 400, "capMs": 1000, "maxFailures": 60}});
    start_page(&d, &node.base, &ws, opts, Value::Null).await;
    // Open, and the plain join answered the room's place.
    wait_log(&d, "joined", |l| !of_kind(l, "joined").is_empty()).await;

    node.publish(1, 50).await;
    for round in 1..=2 {
        assert_eq!(node.close_all().await, 1, "the page's one connection");
        node.publish(50 + 35 * (round - 1) + 1, 50 + 35 * round)
            .await;
        wait_log(&d, "open again", |l| opens(l) == 1 + round).await;
    }
    wait_log(&d, "120 messages", |l| of_kind(l, "message").len() >= 120).await;

    // The restart: stop, start on the same port and data.
    node.server.take().unwrap().stop().await.unwrap();
    let server = Server::start(node.config.clone()).await.unwrap();
    assert_eq!(server.addr.to_string(), node.config.listen, "the same port");
    node.server = Some(server);
    wait_log(&d, "open after the restart", |l| opens(l) == 4).await;
    node.publish(121, 200).await;
    let l = wait_log(&d, "200 messages", |l| of_kind(l, "message").len() >= 200).await;

    let messages = of_kind(&l, "message");
    let data: Vec<&str> = messages
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (1..=200).map(|i| format!("m{i}")).collect();
    assert_eq!(data, want, "each message once, in order");
    assert!(messages.iter().all(|m| m["room"] == "lobby"));
    // Offsets climb by one within an epoch.
    for w in messages.windows(2) {
        if w[0]["epoch"] == w[1]["epoch"] {
            assert_eq!(
                w[1]["offset"].as_u64(),
                w[0]["offset"].as_u64().map(|o| o + 1),
                "{w:?}"
            );
        }
    }
    let first = messages[0]["epoch"].clone();
    let last = messages[199]["epoch"].clone();

    // The two 1012 closes recovered; messages came as replays (between an
    // open and its `joined`) as well as live.
    let joined = of_kind(&l, "joined");
    let recovered: Vec<&Value> = joined.iter().map(|j| &j["recovered"]).collect();
    let (mut replayed, mut replaying) = (0, false);
    for e in &l {
        match e["kind"].as_str().unwrap() {
            "state" if e["v"] == "open" => replaying = true,
            "joined" => replaying = false,
            "message" if replaying => replayed += 1,
            _ => {}
        }
    }
    assert!(replayed > 0, "some messages were missed and replayed");
    let resets = of_kind(&l, "reset");
    if first != last {
        // The restart lost the history (in memory, alone on SQLite): told once.
        assert!(
            pg.is_none(),
            "PostgreSQL keeps the history across a restart"
        );
        assert_eq!(
            recovered,
            [&Value::Null, &json!(true), &json!(true), &json!(false)]
        );
        assert_eq!(resets.len(), 1, "{resets:?}");
        assert_eq!(resets[0]["room"], "lobby");
        assert_eq!(resets[0]["epoch"], last);
        assert_eq!(
            resets[0]["offset"], 0,
            "nothing published since the restart"
        );
        assert_eq!(messages[120]["offset"], 1, "m121 opens the new epoch");
    } else {
        assert!(pg.is_some(), "on SQLite a restart starts a new epoch");
        assert_eq!(
            recovered,
            [&Value::Null, &json!(true), &json!(true), &json!(true)]
        );
        assert!(resets.is_empty(), "{resets:?}");
    }
    assert!(of_kind(&l, "error").is_empty(), "{l:?}");
    eprintln!(
        "js client: {replayed} of 200 messages came as replays; the restart {} the epoch",
        if first != last { "changed" } else { "kept" }
    );
    d.quit().await.unwrap();
    node.server.take().unwrap().stop().await.unwrap();
    drop(pg);
}

/// A jwt element (with history): `getToken` gives the first token, a new one before the
/// first's `exp` (sent in band: the connection stays), and one more for
/// the reconnect after a close. `presence(room)` answers who is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_renewed_and_presence_answers() {
    use crate::ws_jwt::{mint, now};
    let app = spawn_app().await;
    crate::ws_jwt::hs_chat(
        &app,
        json!({"rooms": {"enabled": true, "presence_events": true}, "history": {"size": 100}}),
        json!({}),
    )
    .await;
    let driver = chromedriver().await;
    let d = session(&driver).await;
    let t = now();
    let info = json!({"name": "Ann"});
    // Minted now that the browser is up. The first lives 40 s: its
    // refresh is due at exp - max(30 s, 10%), 10 s in.
    let tokens = json!([
        mint(
            Algorithm::HS256,
            None,
            &json!({"sub": "ann", "iat": t, "exp": t + 40, "info": info})
        ),
        mint(
            Algorithm::HS256,
            None,
            &json!({"sub": "ann", "iat": t, "exp": t + 200, "info": info})
        ),
        mint(
            Algorithm::HS256,
            None,
            &json!({"sub": "ann", "iat": t, "exp": t + 200, "info": info})
        ),
    ]);

    let ws = format!("{}/ws/acme/chat", app.base.replacen("http", "ws", 1));
    let opts = json!({"rooms": ["lobby"], "backoff": {"baseMs": 100, "capMs": 500}});
    start_page(&d, &app.base, &ws, opts, tokens).await;
    wait_log(&d, "joined", |l| !of_kind(l, "joined").is_empty()).await;
    assert_eq!(page_number(&d, "tokenCalls").await, 1);
    let connections = || async {
        let (s, v) = app.get("/api/acme/chat/ops/connections").await;
        assert_eq!(s.as_u16(), 200, "{v}");
        v.as_array().unwrap().clone()
    };
    let first = connections().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["user"], "ann");

    // In band: who is in the room; and the page's own presence event.
    let p = d
        .execute_async(
            "const done = arguments[0]; \
             window.c.presence('lobby').then(done, (e) => done({error: String(e)}));",
            vec![],
        )
        .await
        .unwrap();
    let p = p.json();
    assert_eq!(p["op"], "presence", "{p}");
    assert_eq!(p["room"], "lobby");
    assert_eq!(
        p["users"],
        json!([{"user": "ann", "connections": 1, "info": info}])
    );
    assert_eq!(
        (p["user_count"].as_u64(), p["connection_count"].as_u64()),
        (Some(1), Some(1))
    );
    let l = log(&d).await;
    let events = of_kind(&l, "presence");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["action"].as_str(), events[0]["user"].as_str()),
        (Some("join"), Some("ann"))
    );

    // Before exp: a second token, refreshed in band on the same connection.
    let l = wait_log(&d, "refreshed", |l| {
        of_kind(l, "control").iter().any(|c| c["op"] == "refreshed")
    })
    .await;
    assert_eq!(page_number(&d, "tokenCalls").await, 2);
    let refreshed = of_kind(&l, "control");
    assert_eq!(refreshed[0]["exp"], t + 200, "the new token's exp");
    assert_eq!(
        connections().await[0]["connection_id"],
        first[0]["connection_id"]
    );

    // A close: the reconnect asks for a third token.
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/close",
            json!({"connection_id": first[0]["connection_id"], "code": 1012}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    wait_log(&d, "open again", |l| opens(l) == 2).await;
    assert_eq!(page_number(&d, "tokenCalls").await, 3);
    eventually("a new connection of ann", || async {
        let c = connections().await;
        c.len() == 1 && c[0]["connection_id"] != first[0]["connection_id"] && c[0]["user"] == "ann"
    })
    .await;
    let l = log(&d).await;
    assert!(of_kind(&l, "error").is_empty(), "{l:?}");
    d.quit().await.unwrap();
}

/// At `exp` the server closes with 4001; the client reconnects at once
/// (not after its backoff, here a minute) with a fresh token. A refresh
/// whose token comes only after that reconnect is not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_reconnects_at_once_with_a_new_one() {
    use crate::ws_jwt::{mint, now};
    let app = spawn_app().await;
    crate::ws_jwt::hs_chat(
        &app,
        json!({"rooms": {"enabled": true}, "history": {"size": 10}}),
        json!({"leeway_s": 0}),
    )
    .await;
    let driver = chromedriver().await;
    let d = session(&driver).await;
    let t = now();
    let token = |exp: i64| mint(Algorithm::HS256, None, &json!({"sub": "ann", "exp": exp}));
    // The first expires in 6 s; its refresh (due at once) waits 8 s for
    // its token, so the server's 4001 comes first.
    let tokens = json!([token(t + 6), [token(t + 200), 8000], token(t + 200)]);
    let ws = format!("{}/ws/acme/chat", app.base.replacen("http", "ws", 1));
    let opts = json!({"rooms": ["lobby"], "backoff": {"baseMs": 60000, "capMs": 60000}});
    start_page(&d, &app.base, &ws, opts, tokens).await;
    wait_log(&d, "open again", |l| opens(l) == 2).await;
    let r = d
        .execute(
            "return [window.t.closes, window.t.opened, window.t.tokenCalls]",
            vec![],
        )
        .await
        .unwrap();
    let (closes, opened) = (&r.json()[0], &r.json()[1]);
    assert_eq!(closes[0][0], 4001, "{r:?}");
    let gap = opened[1].as_i64().unwrap() - closes[0][1].as_i64().unwrap();
    assert!(gap < 1000, "reconnected {gap} ms after the 4001");
    assert_eq!(
        r.json()[2],
        3,
        "a token for the connect, the refresh, the reconnect"
    );
    // The late refresh token arrives after the reconnect: dropped.
    eventually("the late token handed out", || async {
        page_number(&d, "handed").await == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let l = log(&d).await;
    assert!(of_kind(&l, "control").is_empty(), "no refresh sent: {l:?}");
    assert_eq!(opens(&l), 2, "the new connection stays: {l:?}");
    let (_, c) = app.get("/api/acme/chat/ops/connections").await;
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c[0]["user"], "ann");
    d.quit().await.unwrap();
}

/// An address that refuses every upgrade (404 here; a browser sees only
/// 1006): after the capped 8 attempts the client reports `closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_is_closed_after_capped_retries() {
    let app = spawn_app().await;
    let driver = chromedriver().await;
    let d = session(&driver).await;
    // A path alone: the client resolves it against the page, as ws://.
    let opts = json!({"rooms": ["lobby"], "backoff": {"baseMs": 20, "capMs": 200}});
    start_page(&d, &app.base, "/ws/acme/nowhere", opts, Value::Null).await;
    let l = wait_log(&d, "closed", |l| {
        of_kind(l, "state").last().and_then(|s| s.as_str()) == Some("closed")
    })
    .await;
    assert_eq!(
        of_kind(&l, "state"),
        [&json!("connecting"), &json!("closed")]
    );
    let errors = of_kind(&l, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "CLOSED");
    assert_eq!(page_number(&d, "sockets").await, 8);
    let urls = d.execute("return window.t.urls", vec![]).await.unwrap();
    let want = format!(
        "{}/ws/acme/nowhere?rooms=lobby",
        app.base.replacen("http", "ws", 1)
    );
    assert_eq!(urls.json()[0], json!(want));
    // And it stays closed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(page_number(&d, "sockets").await, 8);
    d.quit().await.unwrap();
}

/// The module is served from the binary, revalidated on every use.
#[tokio::test]
async fn the_module_is_served_with_a_validator() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/client/elementd.mjs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["access-control-allow-origin"], "*");
    let tag = h["etag"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    let file = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/js/elementd.mjs"
    ));
    assert_eq!(body, file);
    assert!(body.contains("export class ElementdClient"));
    let again = app
        .client
        .get(format!("{}/client/elementd.mjs", app.base))
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
}
