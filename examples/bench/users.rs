//! End users on one server: upgrades carrying the application's JWT
//! (HS256, RS256) against upgrades that carry nothing, and the `presence`
//! op against `/healthz`.

use crate::common::*;
use crate::rest::wrk;
use crate::ws::{connect, connect_leaving_nothing};
use futures::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::process::Command;
use std::time::Instant;

const SECTION: &str = "end users (same server)";
const SECRET: &str = "bench-signing-secret-0c41f7";
/// Distinct users the handshakes cycle through.
const USERS: usize = 100;

fn openssl(args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("openssl: {e}"))?;
    if let (Some(i), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(i).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    out.status
        .success()
        .then_some(out.stdout)
        .ok_or_else(|| format!("openssl {args:?} failed"))
}

fn tokens(alg: Algorithm, key: &EncodingKey) -> Result<Vec<String>, String> {
    // In the query string: within the default max_query_lifetime_s (300).
    let exp = chrono::Utc::now().timestamp() + 240;
    (0..USERS)
        .map(|i| {
            let claims = json!({"sub": format!("user-{i}"), "exp": exp, "info": {"n": i}});
            encode(&Header::new(alg), &claims, key).map_err(|e| e.to_string())
        })
        .collect()
}

/// Opens and drops `n` connections, 64 handshakes in flight: per second.
/// Each closes with a reset: a normal close left a TIME_WAIT socket per
/// handshake toward the same server port, and the next row's connects
/// searched past them.
pub async fn handshakes(urls: &[String], n: usize) -> Result<f64, String> {
    let start = Instant::now();
    let opened: Vec<Result<(), String>> = futures::stream::iter(0..n)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            async move { connect_leaving_nothing(&url).await.map(drop) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed = opened.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        return Err(format!(
            "{failed} of {n} handshakes failed: {:?}",
            opened.into_iter().find_map(Result::err)
        ));
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub async fn rows(s: usize) -> Vec<Row> {
    eprintln!("== end users: elementd");
    let run = async {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pg = std::env::var_os("BENCH_PG").is_some();
        let db = if pg { ScratchDb::create("users") } else { None };
        let node = Elementd::start(dir.path(), db.as_ref().map(|d| d.url.as_str()), &[])?;
        let api = node.api();
        // Beside it, a node that writes every connection event (the
        // default writes 100 a second per element and kind).
        let dir_all = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db_all = if pg {
            ScratchDb::create("users_all")
        } else {
            None
        };
        let every = ["--connection-events-per-second", "0"];
        let node_all = Elementd::start(
            dir_all.path(),
            db_all.as_ref().map(|d| d.url.as_str()),
            &every,
        )?;
        let api_all = node_all.api();
        api_all.circle("bench").await?;
        let mut same = ws_spec("/open", "emit");
        same["rooms"] = json!({"enabled": true});
        let body = json!({"element_type": "websocket", "slug": "open", "spec": same});
        api_all.create("bench", body).await?;
        let open_all = [format!("ws://{}/ws/bench/open", node_all.addr)];
        let private = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        )?;
        let public = openssl(&["pkey", "-pubout"], Some(&private))?;
        api.circle("bench").await?;
        api.create(
            "bench",
            json!({"element_type": "variable", "slug": "jwt-key", "spec": {"value": SECRET, "sensitive": true}}),
        )
        .await?;
        let spec = |path: &str, auth: serde_json::Value| {
            let mut s = ws_spec(path, "emit");
            s["auth"] = auth;
            s["rooms"] = json!({"enabled": true});
            s
        };
        let public = String::from_utf8_lossy(&public).to_string();
        for (slug, path, auth) in [
            ("open", "/open", json!({"mode": "none"})),
            (
                "hs",
                "/hs",
                json!({"mode": "jwt", "jwt": {"algorithms": ["HS256"], "secret": "{{ vars.jwt-key }}"}}),
            ),
            (
                "rs",
                "/rs",
                json!({"mode": "jwt", "jwt": {"algorithms": ["RS256"], "public_key": public}}),
            ),
        ] {
            let body = json!({"element_type": "websocket", "slug": slug, "spec": spec(path, auth)});
            api.create("bench", body).await?;
        }
        let base = format!("ws://{}/ws/bench", node.addr);
        let hs = tokens(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )?;
        let rsa = EncodingKey::from_rsa_pem(&private).map_err(|e| e.to_string())?;
        let rs = tokens(Algorithm::RS256, &rsa)?;
        let with = |path: &str, toks: &[String]| -> Vec<String> {
            toks.iter()
                .map(|t| format!("{base}{path}?token={t}"))
                .collect()
        };
        let n = 2000 * s;
        // Each phase leaves its connections' events for the recorder to
        // write: let it settle between phases, and measure `none` first
        // and last, so neither side runs alone on a quiet server.
        let settle = || tokio::time::sleep(std::time::Duration::from_secs(3));
        let open = [format!("{base}/open")];
        let none1 = handshakes(&open, n).await?;
        settle().await;
        let all1 = handshakes(&open_all, n).await?;
        settle().await;
        let hs256 = handshakes(&with("/hs", &hs), n).await?;
        settle().await;
        let rs256 = handshakes(&with("/rs", &rs), n).await?;
        settle().await;
        let all2 = handshakes(&open_all, n).await?;
        settle().await;
        let none2 = handshakes(&open, n).await?;
        eprintln!("   auth none: {none1:.0} then {none2:.0} conn/s");
        eprintln!("   every connection event written: {all1:.0} then {all2:.0} conn/s");
        let none = (none1 + none2) / 2.0;
        let all = (all1 + all2) / 2.0;
        drop((node_all, db_all, dir_all));
        // Presence of a room of USERS users, each on one connection.
        let lobby: Vec<String> = with("/hs", &hs)
            .into_iter()
            .map(|u| format!("{u}&rooms=lobby"))
            .collect();
        let mut held = Vec::new();
        for u in &lobby {
            held.push(connect(u).await?);
        }
        let secs = 3 * s as u64;
        let presence = wrk(&api, "/api/bench/hs/ops/presence?room=lobby", secs, None).await?;
        let health = wrk(&api, "/healthz", secs, None).await?;
        drop(held);
        drop((node, db, dir));
        Ok::<_, String>((none, hs256, rs256, presence, health, all))
    };
    let r = bounded("end users", run).await.and_then(|r| r);
    let r = r.map_err(|e| eprintln!("   elementd: {e}")).ok();
    let none = r.as_ref().map(|r| r.0);
    let hz = "/healthz";
    vec![
        Row::new(
            SECTION,
            "handshakes: auth jwt HS256 (64 in flight)",
            "conn/s",
            true,
            r.as_ref().map(|r| r.1),
            "auth none",
            none,
        ),
        Row::new(
            SECTION,
            "handshakes: auth none, every connection event written",
            "conn/s",
            true,
            r.as_ref().map(|r| r.5),
            "auth none",
            none,
        ),
        Row::new(
            SECTION,
            "handshakes: auth jwt RS256 (64 in flight)",
            "conn/s",
            true,
            r.as_ref().map(|r| r.2),
            "auth none",
            none,
        ),
        Row::new(
            SECTION,
            format!("presence ?room=lobby ({USERS} users): throughput"),
            "req/s",
            true,
            r.as_ref().map(|r| r.3.rps),
            hz,
            r.as_ref().map(|r| r.4.rps),
        ),
        Row::new(
            SECTION,
            format!("presence ?room=lobby ({USERS} users): p99"),
            "ms",
            false,
            r.as_ref().map(|r| r.3.p99_ms),
            hz,
            r.as_ref().map(|r| r.4.p99_ms),
        ),
    ]
}
