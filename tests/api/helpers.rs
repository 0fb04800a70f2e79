//! The test harness: a real server on port 0 per test, on SQLite by
//! default or on a fresh PostgreSQL database when TEST_DATABASE_URL is set.

use elementd::config::Config;
use elementd::model::Role;
use elementd::server::Server;
use elementd::store::Db;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Once;

pub struct TestApp {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub config: Config,
    /// The internal listener, when the config asks for one.
    pub internal: Option<String>,
    _server: Server,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

/// A throwaway PostgreSQL database, dropped with the test.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(db) = Db::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&db.pool)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Every test server's log lines, kept (the last 32 MiB) so a test can
/// show a value never reached them; TEST_LOG also prints them.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());
const LOG_KEEP: usize = 32 << 20;

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
        if logs.len() + b.len() > LOG_KEEP {
            let cut = logs.len() / 2;
            logs.drain(..cut);
        }
        logs.extend_from_slice(b);
        if std::env::var_os("TEST_LOG").is_some() {
            eprint!("{}", String::from_utf8_lossy(b));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the servers of this test run have logged so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).to_string()
}

pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("elementd=debug,warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

/// Makes the database for one test; None means the SQLite default.
pub async fn fresh_database() -> Option<(String, PgDatabase)> {
    let base = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())?;
    let name = format!("elementd_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Db::connect(&base).await.expect("connect TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin.pool)
        .await
        .expect("create test database");
    admin.pool.close().await;
    let mut url = url::Url::parse(&base).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    Some((
        url.to_string(),
        PgDatabase {
            admin_url: base,
            name,
        },
    ))
}

/// A server on port 0 with its data under `dir` (SQLite there unless a
/// database URL is given) and this build's binary as the git hook.
/// Driven links may reach loopback: the tests' peers listen there
/// (tests/api/outbound.rs clears this to show the default refusal).
pub fn test_config(dir: &std::path::Path, database_url: Option<String>) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        database_url,
        hook_bin: Some(env!("CARGO_BIN_EXE_elementd").into()),
        outbound_allow: vec!["127.0.0.0/8".into()],
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings `adjust` changes from the test defaults.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_database().await;
    let mut config = test_config(dir.path(), pg.as_ref().map(|(u, _)| u.clone()));
    adjust(&mut config);
    let server = Server::start(config.clone()).await.expect("server starts");
    let admin = server
        .admin_token
        .clone()
        .expect("first start makes an admin token");
    let db = Db::connect(&config.database_url()).await.unwrap();
    TestApp {
        base: format!("http://{}", server.addr),
        internal: server.internal_addr.map(|a| format!("http://{a}")),
        admin,
        client: reqwest::Client::new(),
        db,
        config,
        _server: server,
        _dir: Some(dir),
        _pg: pg.map(|(_, p)| p),
    }
}

/// Two servers on one fresh PostgreSQL database and one data dir (SPEC
/// §9); None without TEST_DATABASE_URL. The second holds the database and
/// the directory, so keep both until the test ends.
pub async fn spawn_cluster() -> Option<(TestApp, TestApp)> {
    init_logs();
    let Some((url, pg)) = fresh_database().await else {
        // Never a silent pass: only scripts/test.sh's SQLite pass, which
        // says it leaves these to its PostgreSQL pass, may skip them.
        assert!(
            std::env::var("ELEMENTD_TEST_SQLITE_PASS").is_ok_and(|v| v == "1"),
            "this test needs two nodes on PostgreSQL: set \
             TEST_DATABASE_URL=postgres://user@host:port/db, or run scripts/test.sh"
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), Some(url));
    let a = Server::start(config.clone()).await.expect("node A starts");
    let b = Server::start(config.clone()).await.expect("node B starts");
    let admin = a.admin_token.clone().expect("node A made the admin token");
    assert!(b.admin_token.is_none(), "only the first node bootstraps");
    let node = |server: Server, dir: Option<tempfile::TempDir>, pg: Option<PgDatabase>| {
        let config = config.clone();
        let admin = admin.clone();
        async move {
            TestApp {
                base: format!("http://{}", server.addr),
                internal: server.internal_addr.map(|a| format!("http://{a}")),
                admin,
                client: reqwest::Client::new(),
                db: Db::connect(&config.database_url()).await.unwrap(),
                config,
                _server: server,
                _dir: dir,
                _pg: pg,
            }
        }
    };
    let a = node(a, None, None).await;
    let b = node(b, Some(dir), Some(pg)).await;
    Some((a, b))
}

impl TestApp {
    /// Moves this server's clock forward (no other server's): what it
    /// judges by time (cache TTLs, token expiry, a JWKS's refetch
    /// interval, sampling seconds) sees `by` pass at once. Tokio timers
    /// (heartbeats, deadlines, worker ticks) do not follow it.
    pub fn advance(&self, by: std::time::Duration) {
        self._server.clock.advance(by);
    }

    /// Ages out this server's read caches: a token revoked by another
    /// process (the CLI, another node, a test's own connection) stops
    /// working once their TTL has passed.
    pub fn caches_expire(&self) {
        self.advance(elementd::store::cache::TTL);
    }

    /// Sends a request and returns the status and the JSON body (Null when
    /// the body is empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.admin), None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.admin), Some(body))
            .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(&self.admin), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(&self.admin), None)
            .await
    }

    pub async fn circle(&self, slug: &str) -> Value {
        let (s, v) = self
            .post(
                "/api/ops/create",
                json!({"element_type": "circle", "slug": slug}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn element(&self, circle: &str, ty: &str, slug: &str, spec: Value) -> Value {
        let (s, v) = self
            .post(
                &format!("/api/{circle}/ops/create"),
                json!({"element_type": ty, "slug": slug, "spec": spec}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Releases an element's draft to demo and then to live (only a
    /// promotion changes what demo and live run).
    pub async fn release(&self, circle: &str, slug: &str) {
        for (from, to) in [("draft", "demo"), ("demo", "live")] {
            let (s, v) = self
                .post(
                    &format!("/api/{circle}/{slug}/ops/source/promote"),
                    json!({"from": from, "to": to}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "promote {from} to {to}: {v}");
        }
    }

    /// A circle and one element in it.
    pub async fn element_in_new_circle(
        &self,
        circle: &str,
        ty: &str,
        slug: &str,
        spec: Value,
    ) -> Value {
        self.circle(circle).await;
        self.element(circle, ty, slug, spec).await
    }

    /// GET with the admin token; the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("request sent");
        (resp.status(), resp.text().await.unwrap_or_default())
    }

    /// Creates a modifier in `acme` and attaches it to `acme/{target}`.
    pub async fn attach(&self, target: &str, ty: &str, slug: &str, spec: Value) {
        self.element("acme", ty, slug, spec).await;
        let (s, v) = self
            .post(
                &format!("/api/acme/{target}/ops/compose"),
                json!({"add": [{"ref": slug}]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// A circle `acme` with a websocket element `chat`.
    pub async fn with_chat(&self) {
        self.circle("acme").await;
        self.element("acme", "websocket", "chat", json!({})).await;
    }

    pub async fn token(&self, circle: &str, role: Role) -> String {
        self.db
            .create_token(circle, role, "test", None)
            .await
            .unwrap()
            .1
    }

    /// Version and spec of an element, to show a rejected request changed
    /// nothing.
    pub async fn state_of(&self, circle: &str, slug: &str) -> (i64, Value, Value) {
        let (s, v) = self.get(&format!("/api/{circle}/{slug}/ops/get")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        (
            v["version"].as_i64().unwrap(),
            v["spec"].clone(),
            v["name"].clone(),
        )
    }
}

/// Asserts the error envelope with this status and code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    let (s, v) = got;
    assert_eq!(s.as_u16(), status, "status; body {v}");
    let e = &v["error"];
    assert_eq!(e["code"], code, "code; body {v}");
    assert!(
        e["class"].is_string() && e["message"].is_string() && e["retryable"].is_boolean(),
        "envelope: {v}"
    );
}

/// GET `url` with a bearer `token` from a fresh client: the JSON answer.
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
