//! End users connect with the application's JWT (issue 21, items 1-3):
//! each algorithm, each refusal with its reason, the rooms claim, refresh
//! and expiry. Keys are the test-only pairs in `fixtures/jwt/`.

use crate::events::SseReader;
use crate::fixtures::jwt_pair;
use crate::helpers::*;
use crate::ws_client::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::OnceLock;

pub const SECRET: &str = "app-signing-secret-5d1e";

pub use crate::fixtures::Pair;

pub struct Keys {
    pub rsa: Pair,
    pub p256: Pair,
    pub p384: Pair,
    pub ed: Pair,
}

/// The test-only pairs of `fixtures/jwt/`, read once per test run.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: jwt_pair("rsa"),
        p256: jwt_pair("p256"),
        p384: jwt_pair("p384"),
        ed: jwt_pair("ed25519"),
    })
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn mint(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let k = keys();
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(SECRET.as_bytes())
        }
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
            EncodingKey::from_rsa_pem(k.rsa.private.as_bytes()).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(k.p256.private.as_bytes()).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(k.p384.private.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(k.ed.private.as_bytes()).unwrap(),
        _ => unreachable!(),
    };
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, &key).unwrap()
}

pub fn user(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 120})
}

/// Circle acme, the signing secret as a sensitive variable, and a
/// websocket `slug` at `/slug` taking tokens per `jwt`.
pub async fn jwt_element(app: &TestApp, slug: &str, jwt: Value) {
    let (s, _) = app.get("/api/acme/chat-jwt").await;
    if s.as_u16() == 404 {
        app.circle("acme").await;
        app.element(
            "acme",
            "variable",
            "chat-jwt",
            json!({"value": SECRET, "sensitive": true}),
        )
        .await;
    }
    app.element(
        "acme",
        "websocket",
        slug,
        json!({"path": format!("/{slug}"), "auth": {"mode": "jwt", "jwt": jwt},
               "rooms": {"enabled": true}}),
    )
    .await;
}

/// Circle acme, the signing secret as the sensitive variable `chat-jwt`,
/// and a websocket `chat` at `/chat` taking HS256 end-user tokens; `spec`
/// adds to its spec, `jwt` to its `auth.jwt`.
pub async fn hs_chat(app: &TestApp, spec: Value, jwt: Value) {
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "chat-jwt",
        json!({"value": SECRET, "sensitive": true}),
    )
    .await;
    let base = crate::fixtures::spec_with("websocket-jwt-hs", json!({"auth": {"jwt": jwt}}));
    let full = crate::fixtures::patched(base, spec);
    app.element("acme", "websocket", "chat", full).await;
}

pub fn hs() -> Value {
    json!({"algorithms": ["HS256", "HS384", "HS512"], "secret": "{{ vars.chat-jwt }}"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_algorithm_admits_its_users() {
    let app = spawn_app().await;
    let k = keys();
    jwt_element(&app, "hs", hs()).await;
    jwt_element(
        &app,
        "rs",
        json!({"algorithms": ["RS256", "RS384", "RS512"], "public_key": k.rsa.public}),
    )
    .await;
    jwt_element(
        &app,
        "es256",
        json!({"algorithms": ["ES256"], "public_key": k.p256.public}),
    )
    .await;
    jwt_element(
        &app,
        "es384",
        json!({"algorithms": ["ES384"], "public_key": k.p384.public}),
    )
    .await;
    jwt_element(
        &app,
        "ed",
        json!({"algorithms": ["EdDSA"], "public_key": k.ed.public}),
    )
    .await;
    let cases = [
        ("hs", Algorithm::HS256),
        ("hs", Algorithm::HS384),
        ("hs", Algorithm::HS512),
        ("rs", Algorithm::RS256),
        ("rs", Algorithm::RS384),
        ("rs", Algorithm::RS512),
        ("es256", Algorithm::ES256),
        ("es384", Algorithm::ES384),
        ("ed", Algorithm::EdDSA),
    ];
    let mut clients = Vec::new();
    for (slug, alg) in cases {
        let sub = format!("user-{alg:?}");
        let claims = json!({"sub": sub, "exp": now() + 120, "info": {"name": sub}});
        let token = mint(alg, None, &claims);
        // In the query string and as a bearer token alike.
        clients.push(connect(&app, &format!("/ws/acme/{slug}?token={token}")).await);
        clients.push(connect_bearer(&app, &format!("/ws/acme/{slug}"), &token).await);
        let (_, rows) = app.get(&format!("/api/acme/{slug}/ops/connections")).await;
        let mine: Vec<&Value> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["user"] == sub)
            .collect();
        assert_eq!(mine.len(), 2, "{alg:?}: {rows}");
        assert_eq!(mine[0]["info"]["name"], sub, "{rows}");
    }
    let opened = activity(&app, "acme", "ed", "ws.connection.opened").await;
    assert_eq!(opened[0]["data"]["user"], "user-EdDSA", "{opened:?}");
    assert_eq!(opened[0]["actor"]["user"], "user-EdDSA", "{opened:?}");
}

fn unsigned(header: Value, claims: &Value) -> String {
    use base64::Engine;
    let b = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b(&header), b(claims))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_says_its_reason_and_is_recorded() {
    let app = spawn_app().await;
    let mut jwt = hs();
    jwt["issuer"] = json!("https://app.example");
    jwt["audience"] = json!("chat");
    jwt_element(&app, "hs", jwt).await;
    jwt_element(
        &app,
        "rs",
        json!({"algorithms": ["RS256"], "public_key": keys().rsa.public}),
    )
    .await;
    let good = |extra: Value| {
        let mut c = json!({"sub": "alice", "exp": now() + 120, "iss": "https://app.example", "aud": "chat"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs256 = |extra: Value| mint(Algorithm::HS256, None, &good(extra));
    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &good(json!({})),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    // The confusion attack: HS256 keyed with the RSA public key's PEM.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good(json!({})),
        &EncodingKey::from_secret(keys().rsa.public.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, &str, String, Option<String>)> = vec![
        ("missing", "hs", String::new(), None),
        ("malformed", "hs", "?token=abc".into(), None),
        ("signature", "hs", String::new(), Some(other_secret)),
        (
            "expired",
            "hs",
            String::new(),
            Some(hs256(json!({"exp": now() - 120}))),
        ),
        (
            "not_yet_valid",
            "hs",
            String::new(),
            Some(hs256(json!({"nbf": now() + 600}))),
        ),
        (
            "issuer",
            "hs",
            String::new(),
            Some(hs256(json!({"iss": "https://evil.example"}))),
        ),
        (
            "audience",
            "hs",
            String::new(),
            Some(hs256(json!({"aud": "billing"}))),
        ),
        (
            "malformed",
            "hs",
            String::new(),
            Some(hs256(json!({"sub": null}))),
        ),
        (
            "malformed",
            "hs",
            String::new(),
            Some(hs256(json!({"exp": null}))),
        ),
        (
            "algorithm",
            "hs",
            String::new(),
            Some(unsigned(
                json!({"alg": "none", "typ": "JWT"}),
                &good(json!({})),
            )),
        ),
        (
            "algorithm",
            "hs",
            String::new(),
            Some(mint(Algorithm::RS256, None, &good(json!({})))),
        ),
        ("algorithm", "rs", String::new(), Some(confused)),
        // Bounds: a token over 8 KiB, info over 1 KiB, sub over 256,
        // rooms over 1000.
        (
            "malformed",
            "hs",
            String::new(),
            Some(hs256(json!({"info": {"pad": "x".repeat(7000)}}))),
        ),
        (
            "malformed",
            "hs",
            String::new(),
            Some(hs256(json!({"info": {"pad": "x".repeat(1100)}}))),
        ),
        (
            "malformed",
            "hs",
            String::new(),
            Some(hs256(json!({"sub": "u".repeat(257)}))),
        ),
        (
            "malformed",
            "hs",
            String::new(),
            Some(hs256(json!({"rooms": vec!["r"; 1001]}))),
        ),
        // In the URL a token may live at most max_query_lifetime_s more.
        (
            "lifetime",
            "hs",
            format!("?token={}", hs256(json!({"exp": now() + 3600}))),
            None,
        ),
    ];
    let mut live = SseReader::open(&app, "/api/acme/ops/events", None).await;
    for (reason, slug, query, bearer) in &cases {
        let (status, body) =
            refused(&app, &format!("/ws/acme/{slug}{query}"), bearer.as_deref()).await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert_eq!(
            body["error"]["code"], "WS_TOKEN_INVALID",
            "{reason}: {body}"
        );
        assert_eq!(body["error"]["reason"], *reason, "{body}");
        let e = live.next_of("ws.connection.rejected").await;
        assert_eq!(e["data"]["status"], 401, "{e}");
        assert_eq!(e["data"]["error"]["reason"], *reason, "{e}");
    }
    // A long-lived token is fine in the header, and the bounds' edges pass.
    let long = hs256(json!({"exp": now() + 3600, "sub": "u".repeat(256),
                             "rooms": vec!["r"; 1000], "info": {"pad": "x".repeat(900)}}));
    let _c = connect_bearer(&app, "/ws/acme/hs", &long).await;
    assert!(wait_connections(&app, "acme", "hs", 1).await.len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_claim_limits_what_a_user_joins() {
    let app = spawn_app().await;
    jwt_element(&app, "hs", hs()).await;
    let token = mint(
        Algorithm::HS256,
        None,
        &json!({"sub": "bob", "exp": now() + 120, "rooms": ["lobby", "team-*"]}),
    );
    let (status, body) = refused(
        &app,
        &format!("/ws/acme/hs?token={token}&rooms=lobby,admin"),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "ROOM_FORBIDDEN", "{body}");
    let mut c = connect(
        &app,
        &format!("/ws/acme/hs?token={token}&rooms=lobby,team-red"),
    )
    .await;
    send_text(&mut c, r#"{"op":"join","room":"team-blue"}"#).await;
    assert_eq!(next_json(&mut c).await["op"], "joined");
    send_text(&mut c, r#"{"op":"join","room":"admin"}"#).await;
    let v = next_json(&mut c).await;
    assert_eq!(v["op"], "error", "{v}");
    assert_eq!(v["code"], "ROOM_FORBIDDEN", "{v}");
    assert_eq!(v["room"], "admin", "{v}");
    let (_, rows) = app.get("/api/acme/hs/ops/connections").await;
    assert_eq!(
        rows[0]["rooms"],
        json!(["lobby", "team-blue", "team-red"]),
        "{rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_and_expiry_closes_with_4001() {
    let app = spawn_app().await;
    jwt_element(
        &app,
        "hs",
        json!({"algorithms": ["HS256"], "secret": "{{ vars.chat-jwt }}", "leeway_s": 0}),
    )
    .await;
    let short = |sub: &str, life: i64| {
        mint(
            Algorithm::HS256,
            None,
            &json!({"sub": sub, "exp": now() + life}),
        )
    };
    // Refreshed before exp: still open after the first token's exp.
    let mut a = connect(&app, &format!("/ws/acme/hs?token={}", short("carol", 2))).await;
    let later = now() + 60;
    let t = mint(
        Algorithm::HS256,
        None,
        &json!({"sub": "carol", "exp": later}),
    );
    send_text(&mut a, &json!({"op": "refresh", "token": t}).to_string()).await;
    let v = next_json(&mut a).await;
    assert_eq!(v, json!({"op": "refreshed", "exp": later}));
    // Another user's token is refused in band; the connection stays.
    send_text(
        &mut a,
        &json!({"op": "refresh", "token": short("mallory", 60)}).to_string(),
    )
    .await;
    let v = next_json(&mut a).await;
    assert_eq!(v["code"], "WS_TOKEN_INVALID", "{v}");
    assert_eq!(v["reason"], "subject", "{v}");
    // Without a refresh the connection closes at exp.
    let mut b = connect(&app, &format!("/ws/acme/hs?token={}", short("dave", 2))).await;
    assert_eq!(closed_with(&mut b).await, (4001, "token expired".into()));
    let closed = activity_until(&app, "hs", "ws.connection.closed", |e| !e.is_empty()).await;
    assert_eq!(
        closed[0]["data"]["error"]["code"], "WS_TOKEN_EXPIRED",
        "{closed:?}"
    );
    assert_eq!(closed[0]["data"]["user"], "dave", "{closed:?}");
    // carol's first exp has passed; she is still connected.
    let ids = wait_connections(&app, "acme", "hs", 1).await;
    assert_eq!(ids.len(), 1);
    send_text(&mut a, r#"{"op":"join","room":"lobby"}"#).await;
    assert_eq!(next_json(&mut a).await["op"], "joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_variable_is_in_use_and_rekeys_on_change() {
    let app = spawn_app().await;
    jwt_element(&app, "hs", hs()).await;
    let r = app
        .delete("/api/acme/chat-jwt/ops/delete?confirm=true")
        .await;
    assert_error(&r, 409, "VARIABLE_IN_USE");
    let claims = user("erin");
    let _c = connect(
        &app,
        &format!(
            "/ws/acme/hs?token={}",
            mint(Algorithm::HS256, None, &claims)
        ),
    )
    .await;
    let (s, v) = app
        .patch(
            "/api/acme/chat-jwt/ops/update",
            json!({"spec": {"value": "a-new-secret-0b7c", "sensitive": true}}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    // Tokens signed with the old secret no longer pass.
    eventually("the new secret is used", || async {
        let t = mint(Algorithm::HS256, None, &user("erin"));
        refused_or_open(&app, &format!("/ws/acme/hs?token={t}")).await
    })
    .await;
    let new = encode(
        &Header::new(Algorithm::HS256),
        &user("erin"),
        &EncodingKey::from_secret(b"a-new-secret-0b7c"),
    )
    .unwrap();
    let _d = connect(&app, &format!("/ws/acme/hs?token={new}")).await;
}

/// True when the upgrade is refused for its signature.
async fn refused_or_open(app: &TestApp, path: &str) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    match tokio_tungstenite::connect_async(ws_url(app, path)).await {
        Err(Error::Http(r)) => r.status().as_u16() == 401,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_spec_must_hold_one_fitting_key() {
    let app = spawn_app().await;
    app.circle("acme").await;
    for jwt in [
        json!({"algorithms": ["HS256"]}),
        json!({"algorithms": ["RS256"], "secret": "{{ vars.x }}"}),
        json!({"algorithms": ["HS256"], "public_key": keys().rsa.public}),
        json!({"algorithms": ["ES256"], "public_key": keys().rsa.public}),
        json!({"algorithms": ["none"], "public_key": keys().rsa.public}),
        json!({"algorithms": ["RS256"], "public_key": keys().rsa.public, "jwks_url": "https://a.example/jwks"}),
    ] {
        let r = app
            .post(
                "/api/acme/ops/create",
                json!({"element_type": "websocket", "slug": "bad",
                       "spec": {"auth": {"mode": "jwt", "jwt": jwt}}}),
            )
            .await;
        assert_error(&r, 422, "SPEC_INVALID");
    }
    let (s, _) = app.get("/api/acme/bad").await;
    assert_eq!(s.as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_users_are_token_ids_and_none_mode_has_none() {
    let app = spawn_app().await;
    ws_element(
        &app,
        "tok",
        json!({"path": "/tok", "auth": {"mode": "token"}}),
    )
    .await;
    app.element("acme", "websocket", "open", json!({"path": "/open"}))
        .await;
    let viewer = app.token("acme", elementd::model::Role::Viewer).await;
    let _a = connect_bearer(&app, "/ws/acme/tok", &viewer).await;
    let _b = connect(&app, "/ws/acme/open").await;
    let (_, tok) = app.get("/api/acme/tok/ops/connections").await;
    let user = tok[0]["user"].as_str().unwrap_or_default().to_string();
    assert!(
        !user.is_empty() && user != viewer,
        "the id, never the secret: {tok}"
    );
    let opened = activity(&app, "acme", "tok", "ws.connection.opened").await;
    assert_eq!(opened[0]["actor"]["token_id"], user.as_str(), "{opened:?}");
    let (_, open) = app.get("/api/acme/open/ops/connections").await;
    assert!(open[0]["user"].is_null(), "{open}");
}

/// A secret variable that is empty is no key: a token signed with the
/// empty secret, which anyone can make, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_secret_verifies_nothing() {
    let app = spawn_app().await;
    app.circle("acme").await;
    app.element(
        "acme",
        "variable",
        "blank-key",
        json!({"value": "", "sensitive": true}),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "open", "spec": {"path": "/open",
                "auth": {"mode": "jwt", "jwt": {"algorithms": ["HS256"], "secret": "{{ vars.blank-key }}"}}}}),
        )
        .await;
    assert_eq!(s.as_u16(), 201, "{v}");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &user("mallory"),
        &EncodingKey::from_secret(b""),
    )
    .unwrap();
    let (status, body) = refused(&app, &format!("/ws/acme/~draft/open?token={forged}"), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["reason"], "signature", "{body}");
}
