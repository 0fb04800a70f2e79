//! `stats` and `batch_stats`: run aggregates and health.

use crate::api::call::{ok, Call, Reply};
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::now_ms;
use crate::service::App;
use crate::store::runs::RunTotals;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct StatsParams {
    period: Option<String>,
    /// Whose runtime metrics (draft, demo or live; default live).
    env: Option<String>,
}

/// The window length in days for `?period=`.
fn period_days(p: Option<&str>) -> Result<(&'static str, f64)> {
    match p.unwrap_or("day") {
        "hour" => Ok(("hour", 1.0 / 24.0)),
        "day" => Ok(("day", 1.0)),
        "week" => Ok(("week", 7.0)),
        other => Err(Error::bad_request(
            ErrorCode::InvalidPeriod,
            format!(
                "period must be hour, day or week, not '{}'",
                crate::error::shown(other)
            ),
        )),
    }
}

/// Health as the seed defines it, over the element's own failures:
/// callers' mistakes (4xx) are `client_errors` and weigh nothing here.
pub fn health(errors_per_day: f64, success_rate: f64) -> &'static str {
    if errors_per_day > 5.0 || success_rate < 0.8 {
        "error"
    } else if errors_per_day > 0.0 || success_rate < 0.95 {
        "warning"
    } else {
        "ok"
    }
}

fn stats_json(t: &RunTotals, days: f64) -> Value {
    let success_rate = if t.runs == 0 {
        1.0
    } else {
        (t.runs - t.errors) as f64 / t.runs as f64
    };
    let errors_per_day = t.errors as f64 / days;
    json!({
        "runs": t.runs,
        "errors": t.errors,
        "client_errors": t.client_errors,
        "runs_per_day": t.runs as f64 / days,
        "errors_per_day": errors_per_day,
        "success_rate": success_rate,
        "avg_duration_ms": t.avg_duration_us / 1000.0,
        "cost_micro_au": t.cost_micro_au,
        "health": health(errors_per_day, success_rate),
    })
}

fn window(p: &StatsParams) -> Result<(&'static str, f64, i64)> {
    let (name, days) = period_days(p.period.as_deref())?;
    let since = now_ms() - (days * 86_400_000.0) as i64;
    Ok((name, days, since))
}

pub async fn stats(app: &App, call: &Call) -> Result<Reply> {
    let q: StatsParams = call.query()?;
    let (period, days, since) = window(&q)?;
    let env = match q.env.as_deref() {
        None => crate::model::Env::Live,
        Some(e) => crate::api::ops::release::env_of(e)?,
    };
    let t = app.elements().run_totals(&call.element.id, since).await?;
    let mut out = stats_json(&t, days);
    out["period"] = json!(period);
    out["element_id"] = json!(call.element.id);
    if let Some(metrics) = app.realtime().metrics(&call.element, env) {
        out["metrics"] = metrics;
        out["env"] = json!(env);
    }
    ok(out)
}

pub async fn batch_stats(app: &App, call: &Call) -> Result<Reply> {
    let (period, days, since) = window(&call.query()?)?;
    let el = &call.element;
    // A circle's children are every element in it.
    let circle = el.is_root().then_some(&el.circle_id);
    let children = call
        .readable(app, app.elements().children(el).await?)
        .await?;
    let totals = app
        .elements()
        .child_run_totals(&el.id, circle, since)
        .await?;
    let mut agg = RunTotals::default();
    let mut weighted = 0.0;
    let mut out = Vec::new();
    for child in &children {
        let t = totals
            .iter()
            .find(|(id, _)| *id == child.id)
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        agg.runs += t.runs;
        agg.errors += t.errors;
        agg.client_errors += t.client_errors;
        agg.cost_micro_au += t.cost_micro_au;
        weighted += t.avg_duration_us * t.runs as f64;
        let mut s = stats_json(&t, days);
        s["element_id"] = json!(child.id);
        s["slug"] = json!(child.slug);
        s["element_type"] = json!(child.element_type);
        out.push(s);
    }
    if agg.runs > 0 {
        agg.avg_duration_us = weighted / agg.runs as f64;
    }
    ok(json!({
        "period": period,
        "children": out,
        "aggregate": stats_json(&agg, days),
    }))
}
