//! One policy gate on every path (hardening round two, item 1): git, the
//! event streams and the children of circle ops are held to an element's
//! auth-policy as its REST ops are; a manifest's members cannot leave its
//! cascade without the guard's role; other callers' addresses and token
//! ids are for admins only.

use crate::events::SseReader;
use crate::git::{git, git_ok, url};
use crate::helpers::*;
use elementd::model::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `acme` with `chat` guarded by an admins-only auth-policy, and `open`
/// guarded by nothing.
async fn guarded(app: &TestApp) {
    app.with_chat().await;
    app.element("acme", "websocket", "open", json!({"path": "/open"}))
        .await;
    app.attach(
        "chat",
        "auth-policy",
        "admins-only",
        json!({"min_role": "admin"}),
    )
    .await;
}

fn slugs(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|e| e["slug"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_is_held_to_the_elements_policy() {
    let app = spawn_app().await;
    guarded(&app).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let member = app.token("acme", Role::Member).await;
    let dir = tempfile::tempdir().unwrap();
    for (who, token) in [("viewer", &viewer), ("member", &member)] {
        let out = git(
            dir.path(),
            &["clone", "-q", &url(&app, token, "acme", "chat"), who],
        );
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a {who} cloned the guarded chat");
        assert!(said.contains("403"), "{said}");
        // The unguarded element is theirs to read as before.
        git_ok(
            dir.path(),
            &[
                "clone",
                "-q",
                &url(&app, token, "acme", "open"),
                &format!("{who}-open"),
            ],
        );
    }
    // The admin clones; a member's push to that clone is refused.
    git_ok(
        dir.path(),
        &["clone", "-q", &url(&app, &app.admin, "acme", "chat"), "wt"],
    );
    let wt = dir.path().join("wt");
    std::fs::write(wt.join("README.md"), "# by a member\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "member edit"]);
    let out = git(
        &wt,
        &["push", "-q", &url(&app, &member, "acme", "chat"), "draft"],
    );
    assert!(!out.status.success(), "a member pushed past the policy");
    assert_eq!(app.state_of("acme", "chat").await.0, 1, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_held_to_the_policy() {
    let app = spawn_app().await;
    guarded(&app).await;
    let viewer = app.token("acme", Role::Viewer).await;
    let r = app
        .client
        .get(format!("{}/api/acme/chat/ops/events", app.base))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The circle's stream leaves the guarded element's events out.
    let mut circle = SseReader::open_as(&app, &viewer, "/api/acme/ops/events", None).await;
    for slug in ["chat", "open"] {
        let (s, v) = app
            .patch(
                &format!("/api/acme/{slug}/ops/update"),
                json!({"name": format!("{slug} renamed")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let seen = circle.next_of("element.updated").await;
    assert_eq!(seen["element"]["slug"], "open", "{seen}");
    // The circle's activity leaves the guarded element out the same way.
    let (s, act) = app
        .call(
            Method::GET,
            "/api/acme/ops/activity?limit=500",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{act}");
    let slugs: Vec<&str> = act["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["element"]["slug"].as_str())
        .collect();
    assert!(
        slugs.contains(&"open") && !slugs.contains(&"chat"),
        "{slugs:?}"
    );
    let (_, all) = app.get("/api/acme/ops/activity?limit=500").await;
    assert!(all.to_string().contains("\"chat\""), "the admin sees it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circle_ops_leave_out_what_the_caller_may_not_read() {
    let app = spawn_app().await;
    guarded(&app).await;
    let member = app.token("acme", Role::Member).await;
    let as_member = |m: Method, path: &'static str, body: Option<Value>| {
        let (app, member) = (&app, member.clone());
        async move { app.call(m, path, Some(&member), body).await }
    };
    let (s, list) = as_member(Method::GET, "/api/acme/ops/list", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let listed = slugs(&list, "elements");
    assert!(
        listed.contains(&"open".into()) && !listed.contains(&"chat".into()),
        "{listed:?}"
    );
    // The admin still sees it.
    let (_, all) = app.get("/api/acme/ops/list").await;
    assert!(slugs(&all, "elements").contains(&"chat".into()));

    let (s, stats) = as_member(Method::GET, "/api/acme/ops/batch_stats", None).await;
    assert_eq!(s, StatusCode::OK, "{stats}");
    assert!(!stats.to_string().contains("\"chat\""), "{stats}");

    let (s, export) = as_member(Method::GET, "/api/acme/ops/export/bundle", None).await;
    assert_eq!(s, StatusCode::OK, "{export}");
    assert!(
        !slugs(&export, "elements").contains(&"chat".into()),
        "{export}"
    );
    assert_eq!(
        slugs(&export, "withheld"),
        vec!["chat".to_string()],
        "{export}"
    );

    // Overwriting the guarded element by import is an update it may not make.
    let (_, full) = app.get("/api/acme/ops/export/bundle").await;
    let chat = full["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["slug"] == "chat")
        .unwrap()
        .clone();
    let before = app.state_of("acme", "chat").await;
    let (s, v) = as_member(
        Method::POST,
        "/api/acme/ops/import/bundle",
        Some(json!({"elements": [{"bundle_base64": chat["bundle_base64"]}], "overwrite": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["imported"], 0, "{v}");
    assert_eq!(v["errors"][0]["slug"], "chat", "{v}");
    assert_eq!(
        app.state_of("acme", "chat").await,
        before,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_drop_out_of_a_cascade() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.element("acme", "project", "shop", json!({"members": ["chat"]}))
        .await;
    // An admin's rate limit holds the project and its members.
    app.element(
        "acme",
        "rate-limit",
        "shop-limit",
        crate::fixtures::spec("rate-limit-roomy"),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/shop/ops/compose",
            json!({"add": [{"ref": "shop-limit", "cascade_policy": "children"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let member = app.token("acme", Role::Member).await;
    let before = app.state_of("acme", "shop").await;
    let r = app
        .call(
            Method::PATCH,
            "/api/acme/shop/ops/update",
            Some(&member),
            Some(json!({"spec": {"members": []}})),
        )
        .await;
    assert_error(&r, 403, "FORBIDDEN");
    assert_eq!(
        app.state_of("acme", "shop").await,
        before,
        "nothing changed"
    );
    // Adding one is no escape; an admin may drop one.
    app.element("acme", "websocket", "feed", json!({"path": "/feed"}))
        .await;
    let r = app
        .call(
            Method::PATCH,
            "/api/acme/shop/ops/update",
            Some(&member),
            Some(json!({"spec": {"members": ["chat", "feed"]}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let (s, v) = app
        .patch(
            "/api/acme/shop/ops/update",
            json!({"spec": {"members": []}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_scope_does_not_release_an_api_token() {
    let app = spawn_app().await;
    app.circle("acme").await;
    let v = app
        .element(
            "acme",
            "api-token",
            "releaser",
            json!({"scopes": ["deploy"]}),
        )
        .await;
    let deploy = v["token"]["secret"].as_str().unwrap().to_string();
    app.element("acme", "api-token", "other", json!({"scopes": ["read"]}))
        .await;
    for (from, to) in [("draft", "demo"), ("demo", "live")] {
        let r = app
            .call(
                Method::POST,
                "/api/acme/other/ops/source/promote",
                Some(&deploy),
                Some(json!({"from": from, "to": to})),
            )
            .await;
        assert_error(&r, 403, "FORBIDDEN");
    }
    let r = app
        .call(
            Method::POST,
            "/api/acme/other/ops/source/rollback",
            Some(&deploy),
            Some(json!({"env": "live", "version": 1})),
        )
        .await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_no_other_callers_addresses_or_token_ids() {
    let app = spawn_app().await;
    app.with_chat().await;
    app.element(
        "acme",
        "rate-limit",
        "rl",
        crate::fixtures::spec_with("rate-limit-roomy", json!({"key": "token"})),
    )
    .await;
    let (s, v) = app
        .post(
            "/api/acme/chat/ops/compose",
            json!({"add": [{"ref": "rl"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let viewer = app.token("acme", Role::Viewer).await;
    // The admin's and the viewer's calls are counted.
    assert_eq!(app.get("/api/acme/chat").await.0, StatusCode::OK);
    let r = app
        .call(Method::GET, "/api/acme/chat", Some(&viewer), None)
        .await;
    assert_eq!(r.0, StatusCode::OK);
    let (_, all) = app.get("/api/acme/rl/ops/status").await;
    assert_eq!(all["keys"].as_array().unwrap().len(), 2, "{all}");
    let (s, seen) = app
        .call(Method::GET, "/api/acme/rl/ops/status", Some(&viewer), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{seen}");
    assert_eq!(seen["keys"].as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen["hidden_keys"], 1, "{seen}");
    let admin_key = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .find(|k| !seen.to_string().contains(k.as_str()))
        .unwrap();
    assert!(!seen.to_string().contains(&admin_key));

    // A connected client's address, on the draft preview.
    let (_ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws/acme/~draft/ws",
        app.base.replace("http", "ws")
    ))
    .await
    .unwrap();
    let path = "/api/acme/chat/ops/connections?env=draft";
    let (_, rows) = app.get(path).await;
    assert!(rows[0]["remote_addr"].is_string(), "{rows}");
    let r = app.call(Method::GET, path, Some(&viewer), None).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1[0]["connection_id"], rows[0]["connection_id"], "{}", r.1);
    assert!(r.1[0].get("remote_addr").is_none(), "{}", r.1);
    // Nor in the events that tell of it.
    let path = "/api/acme/chat/ops/activity?type=ws.connection.opened";
    let (_, mine) = app.get(path).await;
    assert!(
        mine["events"][0]["data"]["remote_addr"].is_string(),
        "{mine}"
    );
    let r = app.call(Method::GET, path, Some(&viewer), None).await;
    assert_eq!(
        r.1["events"][0]["data"]["connection_id"],
        mine["events"][0]["data"]["connection_id"]
    );
    assert!(
        r.1["events"][0]["data"].get("remote_addr").is_none(),
        "{}",
        r.1
    );
}

/// Failed token guesses are held per address (item 11): past the limit,
/// REST, git and the upgrade answer 429 with Retry-After, even to a good
/// token from that address; another address is not slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_guesses_are_throttled_per_address() {
    let app = spawn_app_with(|c| c.limits.auth_failures_per_minute = 5).await;
    app.with_chat().await;
    let guess = |n: usize| format!("edt_guess{n:04}");
    for n in 0..5 {
        let r = app
            .call(Method::GET, "/api/acme/chat", Some(&guess(n)), None)
            .await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED, "guess {n}: {}", r.1);
    }
    let r = app
        .client
        .get(format!("{}/api/acme/chat", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AUTH_THROTTLED", "{body}");
    // Git and the upgrade from the same address are held too.
    let dir = tempfile::tempdir().unwrap();
    let out = git(
        dir.path(),
        &["clone", "-q", &url(&app, &guess(9), "acme", "chat"), "wt"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("429"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("{}/ws/acme/~draft/ws", app.base.replace("http", "ws")),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", guess(10)).parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS)
        }
        other => panic!("upgrade not throttled: {:?}", other.map(|_| ())),
    }
    // A good token from another loopback address is served at once.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = other
        .get(format!("{}/api/acme/chat", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = other
        .get(format!("{}/metrics", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("elementd_auth_failures_total 5"), "{text}");
    assert!(text.contains("elementd_auth_throttled_total"), "{text}");
}

/// Behind a trusted proxy the client it names is the one counted and
/// checked (hardening round two, item 5); anyone else's forwarding
/// headers are ignored, so a client cannot pick its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.limits.auth_failures_per_minute = 3;
    })
    .await;
    app.with_chat().await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let get = |client: reqwest::Client, token: String, xff: &'static str| {
        let url = format!("{}/api/acme/chat", app.base);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .header("x-forwarded-for", xff)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let proxy = from("127.0.0.1");
    for _ in 0..3 {
        assert_eq!(
            get(proxy.clone(), "edt_bad".into(), "203.0.113.5").await,
            401
        );
    }
    // That client is throttled; another behind the same proxy is not.
    assert_eq!(
        get(proxy.clone(), app.admin.clone(), "203.0.113.5").await,
        429
    );
    assert_eq!(
        get(proxy.clone(), app.admin.clone(), "203.0.113.6").await,
        200
    );
    // A client that is no proxy cannot hide behind made-up addresses.
    let direct = from("127.0.0.2");
    for xff in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        assert_eq!(get(direct.clone(), "edt_bad".into(), xff).await, 401);
    }
    assert_eq!(
        get(direct.clone(), app.admin.clone(), "198.51.100.5").await,
        429
    );
    // allowed_ips sees the named client.
    let v = app
        .element(
            "acme",
            "api-token",
            "office",
            json!({"scopes": ["read"], "allowed_ips": ["203.0.113.0/28"]}),
        )
        .await;
    let office = v["token"]["secret"].as_str().unwrap().to_string();
    assert_eq!(get(proxy.clone(), office.clone(), "203.0.113.7").await, 200);
    assert_eq!(
        get(proxy.clone(), office.clone(), "198.51.100.77").await,
        403
    );
}

/// Operator quotas per circle (item 12): elements, versions and
/// repository bytes; past them 409 QUOTA_EXCEEDED and nothing changes,
/// and another circle is not held to the first one's use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circles_are_held_to_their_quotas() {
    let app = spawn_app_with(|c| {
        c.limits.max_elements_per_circle = 2;
        c.limits.max_versions_per_circle = 6;
    })
    .await;
    app.with_chat().await;
    app.element("acme", "websocket", "two", json!({"path": "/two"}))
        .await;
    let r = app
        .post(
            "/api/acme/ops/create",
            json!({"element_type": "websocket", "slug": "three", "spec": {"path": "/three"}}),
        )
        .await;
    assert_error(&r, 409, "QUOTA_EXCEEDED");
    assert_error(&app.get("/api/acme/three").await, 404, "ELEMENT_NOT_FOUND");
    // Another circle has its own.
    app.circle("other").await;
    app.element("other", "websocket", "one", json!({})).await;
    // Versions: the circle, chat and two hold three; three more fit.
    for i in 0..3 {
        let (s, v) = app
            .patch(
                "/api/acme/chat/ops/update",
                json!({"name": format!("v{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let before = app.state_of("acme", "chat").await;
    let r = app
        .patch("/api/acme/chat/ops/update", json!({"name": "one too many"}))
        .await;
    assert_error(&r, 409, "QUOTA_EXCEEDED");
    assert_eq!(
        app.state_of("acme", "chat").await,
        before,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_circle_takes_no_push_or_import() {
    let app = spawn_app_with(|c| c.limits.max_repo_bytes_per_circle = 1).await;
    app.with_chat().await;
    let dir = tempfile::tempdir().unwrap();
    git_ok(
        dir.path(),
        &["clone", "-q", &url(&app, &app.admin, "acme", "chat"), "wt"],
    );
    let wt = dir.path().join("wt");
    std::fs::write(wt.join("README.md"), "# more\n").unwrap();
    git_ok(&wt, &["commit", "-qam", "more"]);
    let out = git(&wt, &["push", "-q", "origin", "draft"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("409"), "{said}");
    let (_, bundle) = app.get("/api/acme/ops/export/bundle").await;
    let r = app
        .post(
            "/api/acme/ops/import/bundle",
            json!({"elements": bundle["elements"], "overwrite": true}),
        )
        .await;
    assert_error(&r, 409, "QUOTA_EXCEEDED");
    assert_eq!(app.state_of("acme", "chat").await.0, 1, "nothing changed");
}

/// An api-token's allowed_origins hold on every entrance (item 9): a page
/// of another origin is refused on an event stream, git and the upgrade,
/// as on REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_hold_on_streams_git_and_the_upgrade() {
    let app = spawn_app().await;
    app.with_chat().await;
    let v = app
        .element(
            "acme",
            "api-token",
            "page",
            json!({"scopes": ["write"], "allowed_origins": ["https://ok.example"]}),
        )
        .await;
    let secret = v["token"]["secret"].as_str().unwrap().to_string();
    let send = |path: &str, origin: &str| {
        app.client
            .get(format!("{}{path}", app.base))
            .bearer_auth(&secret)
            .header("origin", origin)
            .send()
    };
    for path in [
        "/api/acme/chat",
        "/api/acme/chat/ops/events",
        "/api/acme/ops/events",
        "/git/acme/chat.git/info/refs?service=git-upload-pack",
    ] {
        let r = send(path, "https://evil.example").await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "ORIGIN_NOT_ALLOWED",
            "{path}: {body}"
        );
        let r = send(path, "https://ok.example").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} from its own origin");
    }
    // The upgrade of an element that asks for a token.
    let (s, v) = app
        .patch(
            "/api/acme/chat/ops/update",
            json!({"spec": {"auth": {"mode": "token"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let upgrade = |origin: &'static str| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("{}/ws/acme/~draft/ws", app.base.replace("http", "ws")),
            )
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    match upgrade("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("the upgrade took another origin: {:?}", other.map(|_| ())),
    }
    assert!(upgrade("https://ok.example").await.is_ok());
}
