//! A real browser for the console tests: Debian's `chromium` driven by
//! `chromedriver` (started here on a free port) through WebDriver
//! (thirtyfour). Waits poll the page; their timeout only ends a broken
//! test, it never stands for an assertion.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thirtyfour::prelude::*;

/// Generous: only to end a broken test.
pub const WAIT: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(100);

/// chromedriver, killed with the test.
pub struct Driver {
    child: Child,
    pub url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver and waits until it answers `/status`.
pub async fn chromedriver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e}): the console tests need Debian's chromium and \
                 chromium-driver (apt-get install -y chromium chromium-driver; scripts/test.sh installs them)"
            )
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        let ready = client
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if ready.is_some() {
            return driver;
        }
        assert!(start.elapsed() < WAIT, "chromedriver did not start");
        tokio::time::sleep(POLL).await;
    }
}

/// A headless Chromium session with a fresh profile.
pub async fn session(driver: &Driver) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    caps.set_binary(&binary).unwrap();
    let profile = format!("--user-data-dir={}", driver._profile.path().display());
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        &profile,
    ] {
        caps.add_arg(arg).unwrap();
    }
    // Failed requests and script errors, for `console_errors`.
    caps.set_browser_log_level(thirtyfour::LoggingPrefsLogLevel::Severe)
        .unwrap();
    WebDriver::new(&driver.url, caps)
        .await
        .expect("a chromium session")
}

/// The first element matching `css` whose text contains `needle`.
pub async fn wait_text(d: &WebDriver, css: &str, needle: &str) -> WebElement {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        seen.clear();
        for el in d.find_all(By::Css(css)).await.unwrap_or_default() {
            let text = el.text().await.unwrap_or_default();
            if text.contains(needle) {
                return el;
            }
            seen.push(text);
        }
        assert!(
            start.elapsed() < WAIT,
            "no '{css}' with text '{needle}' (saw {seen:?})"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The elements matching `css`, once there are `n` of them (a list
/// redrawn after an action is a step of the page's own).
pub async fn wait_count(d: &WebDriver, css: &str, n: usize) -> Vec<WebElement> {
    let start = Instant::now();
    loop {
        let found = d.find_all(By::Css(css)).await.unwrap_or_default();
        if found.len() == n {
            return found;
        }
        assert!(
            start.elapsed() < WAIT,
            "{} of '{css}', not {n}",
            found.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The first element matching `css`, once it is there.
pub async fn wait_el(d: &WebDriver, css: &str) -> WebElement {
    wait_text(d, css, "").await
}

/// Waits until nothing matches `css` (a dialog closing is a step of the
/// page's own, after the click that closes it).
pub async fn wait_gone(d: &WebDriver, css: &str) {
    let start = Instant::now();
    while d.find(By::Css(css)).await.is_ok() {
        assert!(start.elapsed() < WAIT, "'{css}' is still there");
        tokio::time::sleep(POLL).await;
    }
}

/// Opens the console at `base` and signs in with `token` (signing out
/// first when the page holds another); returns once the header says
/// `who`.
pub async fn sign_in(d: &WebDriver, base: &str, token: &str, who: &str) {
    d.goto(format!("{base}/console/")).await.unwrap();
    // The page draws either the sign-in form or, for a token it already
    // holds, the header once whoami answers: wait for one of them.
    let shown = wait_el(d, "#token, #signout").await;
    if shown.id().await.unwrap().as_deref() == Some("signout") {
        click(d, "#signout").await;
    }
    fill(d, "#token", token).await;
    click(d, "#signin").await;
    wait_text(d, "#whoami", who).await;
}

/// Waits until `css` is there and enabled, then clicks it.
pub async fn click(d: &WebDriver, css: &str) {
    let start = Instant::now();
    loop {
        let el = wait_el(d, css).await;
        if el.is_enabled().await.unwrap_or(false) && el.click().await.is_ok() {
            return;
        }
        assert!(start.elapsed() < WAIT, "'{css}' never became clickable");
        tokio::time::sleep(POLL).await;
    }
}

/// Replaces an input's value with `text`, as typed. A page that draws
/// the input again meanwhile (a stale element) gets it typed afresh.
pub async fn fill(d: &WebDriver, css: &str, text: &str) {
    let start = Instant::now();
    loop {
        let el = wait_el(d, css).await;
        if el.clear().await.is_ok() && el.send_keys(text).await.is_ok() {
            return;
        }
        assert!(start.elapsed() < WAIT, "'{css}' could not be filled");
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the page's path is `path`.
pub async fn wait_path(d: &WebDriver, path: &str) {
    let start = Instant::now();
    loop {
        let url = d.current_url().await.unwrap();
        if url.path() == path {
            return;
        }
        assert!(start.elapsed() < WAIT, "at {url}, never at {path}");
        tokio::time::sleep(POLL).await;
    }
}

/// Saves a screenshot as target/console-shots/{name}.png.
pub async fn shot(d: &WebDriver, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-shots");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.png"));
    d.screenshot(&file).await.unwrap();
    file
}

/// What the browser's console showed as errors since the last call (a
/// failed request reads `{url} - Failed to load resource: …`). Reading
/// empties the log.
pub async fn console_errors(d: &WebDriver) -> Vec<String> {
    d.browser_log()
        .await
        .expect("chromedriver keeps the browser log")
        .into_iter()
        .map(|e| e.message)
        .collect()
}
