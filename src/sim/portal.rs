//! The portals' publication endpoints, simulated: `POST /publications/{portal}` receives a
//! revision as the National Public Service Portal, the Ministry of Finance's portal or the tax
//! administration's own portal would. Each keeps what it received once per `Idempotency-Key`
//! (a second send of a key is answered as a duplicate with the first receipt, and not stored
//! again); faults make it fail before storing (`publish_error_rate`), lose its answer after
//! storing (`publish_lost_rate`) or answer slowly after storing (`publish_delay_ms`).
//! `GET /_sim/publications` lists what was received. The routes are in [`super::server`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::faults::Faults;

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
    /// Requests answered with a redirect to a login page, not stored (a fault).
    pub redirected: u64,
}

/// What a portal does with one publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Refused before storing (a fault).
    Failed,
    /// Redirected to a login page before storing (a fault: a portal behind a login proxy).
    Redirected,
    /// Stored now (`duplicate` false) or earlier under the same key (`duplicate` true), with
    /// the receipt; `lost`: the answer never reaches the sender (a fault).
    Stored {
        receipt: String,
        duplicate: bool,
        lost: bool,
    },
}

/// One publication as it arrives.
pub struct Arrival<'a> {
    pub portal: &'a str,
    pub key: &'a str,
    pub period: &'a str,
    pub revision: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl Portals {
    /// Stores `a` once per (portal, key); `roll` (0..1) against the faults decides a refusal
    /// before storing or an answer lost after.
    pub fn receive(&mut self, a: &Arrival<'_>, faults: &Faults, roll: f64) -> Answer {
        if roll < faults.publish_error_rate {
            self.failed += 1;
            return Answer::Failed;
        }
        let refused = faults.publish_error_rate + faults.publish_redirect_rate;
        if roll < refused {
            self.redirected += 1;
            return Answer::Redirected;
        }
        let lost = roll < refused + faults.publish_lost_rate;
        if lost {
            self.lost += 1;
        }
        if let Some(i) = self
            .by_key
            .get(&(a.portal.to_string(), a.key.to_string()))
            .copied()
        {
            self.received[i].duplicates += 1;
            return Answer::Stored {
                receipt: self.received[i].receipt.clone(),
                duplicate: true,
                lost,
            };
        }
        let receipt = format!("{}-{}", a.portal, self.received.len() + 1);
        let at = self.received.len();
        self.by_key
            .insert((a.portal.to_string(), a.key.to_string()), at);
        self.received.push(Received {
            portal: a.portal.to_string(),
            idempotency_key: a.key.to_string(),
            receipt: receipt.clone(),
            period: a.period.to_string(),
            revision: a.revision.to_string(),
            content_type: a.content_type.to_string(),
            bytes: a.body.len(),
            sha256: format!("{:x}", Sha256::digest(a.body)),
            body: String::from_utf8_lossy(a.body).into_owned(),
            duplicates: 0,
        });
        Answer::Stored {
            receipt,
            duplicate: false,
            lost,
        }
    }

    /// What was received, without the bodies (they stay in the process, for tests).
    pub fn listing(&self) -> serde_json::Value {
        let listed: Vec<serde_json::Value> = self
            .received
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("serialisable");
                v.as_object_mut().expect("object").remove("body");
                v
            })
            .collect();
        serde_json::json!({ "received": listed, "failed": self.failed, "lost": self.lost })
    }
}
