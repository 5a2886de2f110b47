//! The portals' publication endpoints, simulated: `POST /publications/{portal}` receives a
//! revision as the National Public Service Portal, the Ministry of Finance's portal or the tax
//! administration's own portal would. Each keeps what it received once per `Idempotency-Key`
//! (a second send of a key is answered as a duplicate with the first receipt, and not stored
//! again); faults make it fail before storing (`publish_error_rate`), lose its answer after
//! storing (`publish_lost_rate`) or answer slowly after storing (`publish_delay_ms`).
//! `GET /_sim/publications` lists what was received, for tests.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::server::{Shared, SimState};

/// One publication a portal stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Received {
    pub portal: String,
    pub idempotency_key: String,
    pub receipt: String,
    pub period: String,
    pub revision: String,
    pub content_type: String,
    pub bytes: usize,
    pub sha256: String,
    /// The body as received (text: JSON or CSV).
    pub body: String,
    /// Sends of the same key after the first, answered as duplicates.
    pub duplicates: u32,
}

/// What the portals received, in order.
#[derive(Debug, Default)]
pub struct Portals {
    pub received: Vec<Received>,
    /// (portal, key) → index in `received`.
    by_key: BTreeMap<(String, String), usize>,
    /// Requests refused by a fault (503 before storing).
    pub failed: u64,
    /// Requests stored whose answer was lost (503 after storing).
    pub lost: u64,
}

impl SimState {
    /// What the portals received so far.
    pub fn publications(&self) -> Vec<Received> {
        self.portals.lock().expect("portals lock").received.clone()
    }
}

pub(super) async fn receive(
    State(state): State<Shared>,
    Path(portal): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !state.authorised(&headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong credentials").into_response();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let key = header("idempotency-key");
    if key.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "an Idempotency-Key header is required",
        )
            .into_response();
    }
    let faults = state.faults.read().expect("faults lock").clone();
    let (fail, lose) = {
        let mut rng = state.dice.next();
        let x: f64 = rng.random();
        (
            x < faults.publish_error_rate,
            x >= faults.publish_error_rate
                && x < faults.publish_error_rate + faults.publish_lost_rate,
        )
    };
    if fail {
        state.portals.lock().expect("portals lock").failed += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "simulated fault: portal unavailable",
        )
            .into_response();
    }
    let (receipt, duplicate) = {
        let mut p = state.portals.lock().expect("portals lock");
        match p.by_key.get(&(portal.clone(), key.clone())).copied() {
            Some(i) => {
                p.received[i].duplicates += 1;
                (p.received[i].receipt.clone(), true)
            }
            None => {
                let receipt = format!("{portal}-{}", p.received.len() + 1);
                let r = Received {
                    portal: portal.clone(),
                    idempotency_key: key.clone(),
                    receipt: receipt.clone(),
                    period: header("x-chiso-period"),
                    revision: header("x-chiso-revision"),
                    content_type: header("content-type"),
                    bytes: body.len(),
                    sha256: format!("{:x}", Sha256::digest(&body)),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    duplicates: 0,
                };
                let at = p.received.len();
                p.by_key.insert((portal.clone(), key), at);
                p.received.push(r);
                (receipt, false)
            }
        }
    };
    if faults.publish_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.publish_delay_ms)).await;
    }
    if lose {
        state.portals.lock().expect("portals lock").lost += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "simulated fault: answer lost",
        )
            .into_response();
    }
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        Json(serde_json::json!({ "receipt": receipt, "duplicate": duplicate })),
    )
        .into_response()
}

pub(super) async fn list(State(state): State<Shared>) -> Response {
    let p = state.portals.lock().expect("portals lock");
    let listed: Vec<serde_json::Value> = p
        .received
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("serialisable");
            // The list says what arrived; the bodies stay in the process (tests read them).
            v.as_object_mut().expect("object").remove("body");
            v
        })
        .collect();
    Json(serde_json::json!({
        "received": listed,
        "failed": p.failed,
        "lost": p.lost,
    }))
    .into_response()
}
