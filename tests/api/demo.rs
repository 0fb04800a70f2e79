//! `elementd demo` as a newcomer runs it: from a fresh folder, the demo
//! loads, its chat page works in two browser tabs, a second start keeps
//! what is there, and a server holding other circles is not touched.

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
    assert_eq!(chat["spec"]["on_message"], "room");
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
    fill(&d, "#text", "hello from the second tab").await;
    click(&d, "#send").await;
    wait_text(&d, "#log li.mine", "hello from the second tab").await;
    d.switch_to_window(first.clone()).await.unwrap();
    let seen = wait_text(&d, "#log li.theirs", "hello from the second tab").await;
    assert!(seen.text().await.unwrap().starts_with("bea:"));
    // The chat's presence events: the first tab saw bea arrive.
    wait_text(&d, "#log li.theirs", "bea joined").await;
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
    d.quit().await.unwrap();

    // A second start finds the demo and changes nothing.
    stop(child);
    let (child, _, lines) = start(
        cwd.path(),
        &["demo"],
        url,
        "demo: the development token was shown",
        false,
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "demo: the circle 'demo' is already here; nothing was changed"),
        "{lines:?}"
    );
    // The chat takes end users' JWTs only: the demo's token route mints
    // them with the key kept beside the database, the same after a restart.
    let base = lines
        .iter()
        .find_map(|l| l.strip_prefix("elementd listening on "))
        .unwrap()
        .to_string();
    let key = cwd.path().join("data/demo.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is the owner's only");
    }
    let r = http
        .get(format!("{base}/demo/token?user=cy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: serde_json::Value = r.json().await.unwrap();
    let ws = base.replacen("http://", "ws://", 1);
    let url = format!(
        "{ws}/ws/demo/chat?rooms=lobby&token={}",
        t["token"].as_str().unwrap()
    );
    tokio_tungstenite::connect_async(url)
        .await
        .expect("cy connects");
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
    // Without --demo there is no chat page.
    let page = reqwest::get(format!("{base}/demo/")).await.unwrap();
    assert_eq!(page.status(), 404);
    stop(child);
}
