//! Webhooks (SPEC 10.2): the write rule that keeps a webhook's spec
//! usable, the delivery worker, and the `deliveries`, `redeliver` and
//! `test` use cases. Deliveries themselves are written by the store, in
//! the transaction of their event (`store::outbox`).

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::model::{now_ms, Element, Env, State};
use crate::runtime::sign::SigningKey;
use crate::service::ctx::OpCtx;
use crate::service::variables::value_in;
use crate::service::App;
use crate::store::outbox::{Attempt, Claimed, Delivery};
use crate::types::Capability;
use crate::vars::{self, Resolved};
use crate::webhook::WebhookSpec;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// How long a node holds a claimed delivery: well past the request's
/// deadline, so a live node always finishes what it took.
const LEASE: Duration = Duration::from_secs(60);
/// The whole of one attempt: connecting, sending and reading the answer
/// (Standard Webhooks asks receivers to answer within 15 to 30 s).
const DEADLINE: Duration = Duration::from_secs(15);
/// The most of a receiver's answer that is read (and then dropped).
const MAX_ANSWER: usize = 64 * 1024;
/// Deliveries in flight on a node; a slow receiver holds only its own.
const IN_FLIGHT: usize = 32;
/// Delivered and failed rows are kept this long for `deliveries`.
const KEEP_FINISHED_MS: i64 = 7 * 24 * 3600 * 1000;

/// A webhook's url and key, filled from the circle's variables.
struct Target {
    url: String,
    /// What errors name instead of the url when a sensitive value filled it.
    shown: Option<String>,
    key: SigningKey,
}

/// Webhook deliveries: claimed, sent, retried, listed and tested.
pub struct Webhooks<'a> {
    app: &'a App,
}

impl App {
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks { app: self }
    }
}

impl App {
    /// The write rule of a webhook: its secret names a sensitive variable
    /// of the circle, its url names variables that exist, is http(s) with
    /// a host, and is not refused by the outbound policy. 422 otherwise;
    /// no message quotes a sensitive value.
    pub(in crate::service) async fn check_webhook(&self, el: &Element) -> Result<()> {
        if el.state == State::Deleted || !self.types.has(&el.element_type, Capability::Webhook) {
            return Ok(());
        }
        let spec = WebhookSpec::of(&el.spec).ok_or_else(|| {
            Error::unprocessable(ErrorCode::SpecInvalid, "the webhook's spec does not parse")
        })?;
        let secret_slug = vars::refs(&spec.secret).into_iter().next();
        let Some(secret_slug) = secret_slug else {
            return Err(Error::unprocessable(
                ErrorCode::SpecInvalid,
                "spec.secret must be one {{ vars.slug }} reference to a sensitive variable",
            ));
        };
        let secret = self.variable(el, &secret_slug).await?;
        if secret
            .spec
            .get("sensitive")
            .and_then(serde_json::Value::as_bool)
            != Some(true)
        {
            return Err(Error::unprocessable(
                ErrorCode::SpecInvalid,
                format!(
                    "spec.secret names variable '{secret_slug}', which is not sensitive; \
                     a signing key must be a sensitive variable"
                ),
            ));
        }
        // A value that cannot key HMAC (empty, or a whsec_ that is not
        // base64) is refused now rather than at every delivery.
        if let Ok(v) = value_in(&self.secrets, &secret, Env::Draft) {
            if let Err(why) = SigningKey::parse(&v.text) {
                return Err(Error::unprocessable(
                    ErrorCode::SpecInvalid,
                    format!("spec.secret names variable '{secret_slug}', whose value cannot sign: {why}"),
                ));
            }
        }
        let mut values = HashMap::new();
        for slug in vars::refs(&spec.url) {
            let var = self.variable(el, &slug).await?;
            if let Ok(v) = value_in(&self.secrets, &var, Env::Draft) {
                values.insert(slug, v);
            }
        }
        let filled = vars::fill(&spec.url, &values);
        let why = match url::Url::parse(&filled) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                self.runtime.outbound().check_without_network(&filled)
            }
            Ok(_) => Some("it needs http:// or https:// and a host".to_string()),
            Err(e) => Some(format!("it does not parse ({e})")),
        };
        match why {
            None => Ok(()),
            Some(why) => Err(Error::unprocessable(
                ErrorCode::SpecInvalid,
                format!(
                    "spec.url '{}' cannot be delivered to: {}",
                    spec.url,
                    vars::redact(&why, &values)
                ),
            )),
        }
    }

    /// The webhooks of a variable's circle whose url or secret name it.
    pub(in crate::service) async fn webhook_users(&self, var: &Element) -> Result<Vec<Element>> {
        let types: Vec<String> = self
            .types
            .all()
            .filter(|t| t.has_capability(Capability::Webhook))
            .map(|t| t.name().to_string())
            .collect();
        let all = self
            .db
            .elements_of_types(Some(&var.circle_id), &types)
            .await?;
        Ok(all
            .into_iter()
            .filter(|w| w.state != State::Deleted)
            .filter(|w| {
                let spec = WebhookSpec::of(&w.spec);
                spec.is_some_and(|s| {
                    vars::refs(&s.url).contains(&var.slug)
                        || vars::refs(&s.secret).contains(&var.slug)
                })
            })
            .collect())
    }

    /// A live variable of the webhook's circle; 422 when there is none.
    async fn variable(&self, el: &Element, slug: &str) -> Result<Element> {
        self.db
            .find_in(&el.circle_id, slug)
            .await?
            .filter(|v| {
                self.types.has(&v.element_type, Capability::Resource) && v.state != State::Deleted
            })
            .ok_or_else(|| {
                Error::unprocessable(
                    ErrorCode::VariableNotFound,
                    format!(
                        "{{{{ vars.{slug} }}}} names no variable of circle '{}'; create \
                         variable '{slug}' first",
                        el.circle()
                    ),
                )
            })
    }

    /// The url and key a webhook delivers with now. Errors are for the
    /// delivery's `last_error`: they name variables, never values.
    async fn target(
        &self,
        el: &Element,
        spec: &WebhookSpec,
    ) -> std::result::Result<Target, String> {
        let mut values: HashMap<String, Resolved> = HashMap::new();
        let slugs = vars::refs(&spec.url)
            .into_iter()
            .chain(vars::refs(&spec.secret));
        for slug in slugs {
            let var = self
                .db
                .find_in(&el.circle_id, &slug)
                .await
                .map_err(|_| "the database is unavailable".to_string())?
                .filter(|v| v.state == State::Ready)
                .ok_or_else(|| format!("variable '{slug}' does not exist or is disabled"))?;
            let value = value_in(&self.secrets, &var, Env::Draft)?;
            values.insert(slug, value);
        }
        let secret_slug = vars::refs(&spec.secret)
            .into_iter()
            .next()
            .unwrap_or_default();
        let key = values
            .get(&secret_slug)
            .ok_or("spec.secret names no variable")
            .and_then(|v| SigningKey::parse(&v.text))
            .map_err(|why| format!("variable '{secret_slug}' cannot sign: {why}"))?;
        let shown = vars::fills_secret(&spec.url, &values).then(|| spec.url.clone());
        Ok(Target {
            url: vars::fill(&spec.url, &values),
            shown,
            key,
        })
    }

    /// Sends one delivery and says how it went.
    async fn attempt(&self, c: &Claimed) -> Attempt {
        let el = match self.db.element_by_id(&c.webhook_id).await {
            Ok(Some(el)) => el,
            Ok(None) => return give_up("the webhook does not exist"),
            Err(_) => return self.retry(c, None, "the database is unavailable", None),
        };
        let Some(spec) = WebhookSpec::of(&el.spec) else {
            return give_up("the webhook's spec does not parse");
        };
        match el.state {
            State::Deleted => return give_up("the webhook was deleted"),
            State::Disabled => return self.retry(c, None, "the webhook is disabled", Some(&spec)),
            State::Ready => {}
        }
        let target = match self.target(&el, &spec).await {
            Ok(t) => t,
            Err(why) => return self.retry(c, None, &why, Some(&spec)),
        };
        let headers = target.key.headers(&c.event_id, c.body.as_bytes());
        let sent = self
            .runtime
            .http()
            .post(
                &target.url,
                target.shown.as_deref(),
                &headers,
                bytes::Bytes::from(c.body.clone()),
                MAX_ANSWER,
                DEADLINE,
            )
            .await;
        match sent {
            Ok(a) if (200..300).contains(&a.status) => Attempt::Delivered {
                status: i64::from(a.status),
            },
            Ok(a) => self.retry(
                c,
                Some(i64::from(a.status)),
                &format!("HTTP {}", a.status),
                Some(&spec),
            ),
            Err(why) => self.retry(c, None, &why, Some(&spec)),
        }
    }

    /// Tried again after the backoff, or failed once `max_attempts` ran out.
    fn retry(
        &self,
        c: &Claimed,
        status: Option<i64>,
        why: &str,
        spec: Option<&WebhookSpec>,
    ) -> Attempt {
        let attempts = c.attempts + 1;
        let next_at = match spec {
            Some(s) if attempts >= s.max_attempts => None,
            Some(s) => {
                let jitter = rand::random_range(0.5..=1.0);
                Some(now_ms() + s.backoff(attempts, jitter).as_millis() as i64)
            }
            // The spec could not be read this time: a minute, not counted
            // against a limit we cannot see.
            None => Some(now_ms() + 60_000),
        };
        Attempt::Retry {
            status,
            error: why.chars().take(500).collect(),
            next_at,
        }
    }
}

impl Webhooks<'_> {
    /// Claims up to `limit` due deliveries for `node` (none when nothing
    /// is due: that check is a read, so an idle node never takes SQLite's
    /// write turn).
    pub async fn claim_due(&self, node: &str, limit: usize) -> Vec<Claimed> {
        match self.app.db.has_due_deliveries().await {
            Ok(true) => {}
            Ok(false) => return Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox unreadable");
                return Vec::new();
            }
        }
        let lease_until = now_ms() + LEASE.as_millis() as i64;
        match self
            .app
            .db
            .claim_deliveries(node, lease_until, limit as i64)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            }
        }
    }

    /// Sends one claimed delivery and records how it went.
    pub async fn deliver(&self, node: &str, c: Claimed) {
        let attempt = self.app.attempt(&c).await;
        if let Attempt::Retry { error, next_at, .. } = &attempt {
            // The error names variables by their reference, never a value.
            tracing::debug!(webhook = %c.webhook_id, event = %c.event_id,
                attempts = c.attempts + 1, again = next_at.is_some(), %error,
                "webhook delivery failed");
        }
        if let Err(e) = self.app.db.finish_delivery(node, &c, &attempt).await {
            // The lease runs out and a later round takes it again.
            tracing::warn!(error = %e, webhook = %c.webhook_id, "recording a delivery failed");
        }
    }

    /// `deliveries`: newest first, and how many the bound dropped.
    pub async fn deliveries(
        &self,
        el: &Element,
        before: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Delivery>, i64)> {
        let rows = self.app.db.deliveries(&el.id, before, limit).await?;
        let dropped = self.app.db.dropped_deliveries(&el.id).await?;
        Ok((rows, dropped))
    }

    /// `redeliver`: pending again, due now.
    pub async fn redeliver(&self, el: &Element, id: &str) -> Result<Delivery> {
        self.app.db.redeliver(&el.id, id).await?.ok_or_else(|| {
            Error::not_found(
                ErrorCode::DeliveryNotFound,
                format!(
                    "webhook '{}' has no delivery '{}'",
                    el.slug,
                    crate::error::shown(id)
                ),
            )
        })
    }

    /// `test`: one `webhook.test` event, written with its one delivery
    /// (to this webhook, whatever its `events` say).
    pub async fn test(&self, ctx: &OpCtx, el: &Element) -> Result<Delivery> {
        let mut event = ctx.event(
            el,
            EventKind::WebhookTest,
            json!({"webhook": el.slug, "message": "a test delivery"}),
        );
        event.id = crate::model::new_event_id();
        self.app.db.record_test_event(&el.id, &event).await?;
        let at = event.at;
        let delivery = Delivery {
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            status: "pending".into(),
            attempts: 0,
            last_status: None,
            last_error: None,
            next_attempt_at: at,
            created_at: at,
            updated_at: at,
        };
        self.app.bus.publish_stored(event);
        Ok(delivery)
    }
}

/// Failed for good: nothing to deliver with.
fn give_up(why: &str) -> Attempt {
    Attempt::Retry {
        status: None,
        error: why.to_string(),
        next_at: None,
    }
}

/// The delivery worker: every half second it claims as many due
/// deliveries as it has room for and sends each in a task of its own.
/// Each node claims under its own name, so a node that dies mid-delivery
/// leaves its rows to the others once the lease ends, or (PostgreSQL)
/// once its heartbeat is stale. At shutdown the
/// sends in flight are dropped; their leases run out the same way.
pub async fn deliver_loop(
    app: std::sync::Weak<App>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // With several nodes, the cluster's own name: a node the others find
    // dead (a stale heartbeat) loses its claims at once, not at the
    // lease's end.
    let node = match app
        .upgrade()
        .and_then(|a| a.runtime.broker().node_id().map(str::to_string))
    {
        Some(id) => id,
        None => format!("webhooks-{}", uuid::Uuid::new_v4().simple()),
    };
    let Some(news) = app.upgrade().map(|a| a.db.outbox_news()) else {
        return;
    };
    let room = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut sending = tokio::task::JoinSet::new();
    let mut every = tokio::time::interval(Duration::from_millis(500));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept_at = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            // Deliveries committed here: claimed now, not at the tick.
            _ = news.notified() => {}
            _ = shutdown.changed() => return,
            // A send finished: room for another, claimed at once.
            Some(_) = sending.join_next() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(app) = app.upgrade() else { return };
        if now_ms() - swept_at > 60_000 {
            swept_at = now_ms();
            if let Err(e) = app.db.sweep_deliveries(now_ms() - KEEP_FINISHED_MS).await {
                tracing::warn!(error = %e, "sweeping old webhook deliveries failed");
            }
        }
        let free = room.available_permits();
        if free == 0 {
            continue;
        }
        let claimed = app.webhooks().claim_due(&node, free).await;
        if claimed.len() == free {
            // A full claim: more may be due, so no wait for the tick.
            every.reset_immediately();
        }
        for c in claimed {
            let Ok(permit) = room.clone().try_acquire_owned() else {
                break;
            };
            let (app, node) = (app.clone(), node.clone());
            sending.spawn(async move {
                app.webhooks().deliver(&node, c).await;
                drop(permit);
            });
        }
    }
}
