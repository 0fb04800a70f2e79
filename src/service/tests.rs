//! The service tier: use cases called directly, on a real SQLite
//! database and real git repositories in a temporary directory, with no
//! HTTP in between.

use crate::config::Config;
use crate::error_codes::ErrorCode;
use crate::events::Bus;
use crate::model::{Actor, Element, Role, Slug, State};
use crate::runtime::{Outbound, Peers, Runtime, WsLimits};
use crate::service::ctx::OpCtx;
use crate::service::edits::Update;
use crate::service::elements::NewElement;
use crate::service::variables::VarResolver;
use crate::service::{App, Parts};
use crate::store::Db;
use crate::types::Registry;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) struct TestApp {
    pub app: Arc<App>,
    _dir: tempfile::TempDir,
}

/// An `App` over a fresh data directory, as the server composes it.
pub(crate) async fn app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    std::fs::create_dir_all(config.repos_dir()).unwrap();
    let types = Registry::load().unwrap();
    let clock = crate::clock::Clock::default();
    let db = Db::connect_with_clock(&config.database_url(), clock.clone())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let secrets = Arc::new(crate::secrets::Secrets::load(&config.data_dir).unwrap());
    let (bus, _recorder) = Bus::start(db.clone(), clock.clone());
    let resolve = Arc::new(VarResolver {
        db: db.clone(),
        secrets: secrets.clone(),
        types: types.clone(),
    });
    let runtime = Runtime::new(
        types.clone(),
        bus.clone(),
        Peers::alone(),
        Outbound::parse(&[]).unwrap(),
        resolve,
        WsLimits::default(),
        clock.clone(),
    );
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let app = Arc::new(App::new(Parts {
        config,
        db,
        types,
        bus,
        secrets,
        runtime,
        shutdown,
        clock,
    }));
    TestApp { app, _dir: dir }
}

fn ctx(op: &str) -> OpCtx {
    OpCtx::new(Actor::token("t1", Role::Admin), op, None)
}

fn new(ty: &str, slug: &str, spec: Value) -> NewElement {
    NewElement {
        id: None,
        element_type: ty.into(),
        slug: Slug::parse(slug).unwrap(),
        name: None,
        spec: Some(spec),
        intention: None,
        readme: None,
        repo: None,
    }
}

async fn circle(app: &App) -> Element {
    app.elements()
        .create(&ctx("create"), None, new("circle", "acme", json!({})))
        .await
        .unwrap()
        .element
}

#[tokio::test]
async fn an_update_then_a_restore_are_versions_in_order() {
    let t = app().await;
    let app = &t.app;
    let c = circle(app).await;
    let spec = json!({"path": "/chat"});
    let ws = app
        .elements()
        .create(&ctx("create"), Some(&c), new("websocket", "chat", spec))
        .await
        .unwrap()
        .element;
    let input = Update {
        spec: Some(json!({"path": "/talk"})),
        name: Some("Talk".into()),
        intention: None,
        deep: None,
        may_unseal: false,
    };
    let v2 = app
        .elements()
        .update(&ctx("update"), ws, input)
        .await
        .unwrap();
    assert_eq!(v2.element.version, 2);
    assert_eq!(v2.element.spec["path"], "/talk");
    let v4 = app
        .elements()
        .restore(&ctx("restore"), v2.element, 1)
        .await
        .unwrap();
    // One version keeps what was there, the next holds version 1's spec.
    assert_eq!(v4.element.version, 4);
    assert_eq!(v4.element.spec["path"], "/chat");
    assert_eq!(v4.element.name, "Talk");
    let missing = app.elements().restore(&ctx("restore"), v4.element, 9).await;
    assert_eq!(missing.err().unwrap().code, ErrorCode::VersionNotFound);
}

#[tokio::test]
async fn the_write_rules_refuse_a_missing_variable_and_a_variable_in_use() {
    let t = app().await;
    let app = &t.app;
    let c = circle(app).await;
    let refs = json!({"path": "/x", "url": "ws://127.0.0.1:9/{{ vars.key }}"});
    let refused = app
        .elements()
        .create(
            &ctx("create"),
            Some(&c),
            new("websocket", "x", refs.clone()),
        )
        .await;
    assert_eq!(refused.err().unwrap().code, ErrorCode::VariableNotFound);
    let var = app
        .elements()
        .create(
            &ctx("create"),
            Some(&c),
            new("variable", "key", json!({"value": "k"})),
        )
        .await
        .unwrap()
        .element;
    app.elements()
        .create(&ctx("create"), Some(&c), new("websocket", "x", refs))
        .await
        .unwrap();
    let in_use = app.elements().delete(&ctx("delete"), var.clone()).await;
    assert_eq!(in_use.err().unwrap().code, ErrorCode::VariableInUse);
    let kept = app.elements().by_id(&var.id).await.unwrap().unwrap();
    assert_eq!(kept.state, State::Ready);
}

#[tokio::test]
async fn disabling_twice_changes_nothing_the_second_time() {
    let t = app().await;
    let app = &t.app;
    let c = circle(app).await;
    let el = app
        .elements()
        .create(
            &ctx("create"),
            Some(&c),
            new("variable", "v", json!({"value": 1})),
        )
        .await
        .unwrap()
        .element;
    let off = app
        .elements()
        .set_enabled(&ctx("disable"), el, false, Some("paused".into()))
        .await
        .unwrap()
        .element;
    assert_eq!((off.state, off.rev), (State::Disabled, 2));
    let again = app
        .elements()
        .set_enabled(&ctx("disable"), off, false, None)
        .await
        .unwrap()
        .element;
    assert_eq!(again.rev, 2, "no write for the same state");
    assert_eq!(again.state_reason.as_deref(), Some("paused"));
}
