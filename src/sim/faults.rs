//! Switchable faults of the simulator: server errors (503), slow answers, bodies cut short,
//! and malformed records mixed into pages. Set at start (`chiso sim serve --fault-…`) or at run
//! time (`POST /_sim/faults`). Decisions come from a seeded counter, so a run is repeatable.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of requests answered `503 Service Unavailable`.
    pub error_rate: f64,
    /// Share of requests delayed by `slow_ms` before answering.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Share of answers whose body is cut in half.
    pub truncate_rate: f64,
    /// Malformed copies added per record served (a bad timestamp, a missing key, a wrong type).
    pub malformed_rate: f64,
    /// The paged (POST) feeds serve each record's current version only, as a live portal API
    /// does, and every request for a page after the first updates the earliest record not
    /// updated yet: it moves to the end with a new update time, and the records behind it shift
    /// up a place while a client walks the pages.
    #[serde(default)]
    pub moving_records: bool,
    /// Share of publications (`POST /publications/{portal}`) refused with 503 before storing.
    pub publish_error_rate: f64,
    /// Share of publications stored whose answer is lost (503 after storing).
    pub publish_lost_rate: f64,
    /// Share of publications answered `302 Found` to a login page, not stored (a portal
    /// behind a login proxy whose session ran out).
    #[serde(default)]
    pub publish_redirect_rate: f64,
    /// Milliseconds a portal waits after storing a publication before it answers.
    pub publish_delay_ms: u64,
    /// Share of (unit, ended period) pairs whose published evaluation differs from what the
    /// records say, the ways the real portal's does (`super::evaluation_api`).
    #[serde(default)]
    pub portal_divergence: f64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults::default()
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("slow_rate", self.slow_rate),
            ("truncate_rate", self.truncate_rate),
            ("malformed_rate", self.malformed_rate),
            ("publish_error_rate", self.publish_error_rate),
            ("publish_lost_rate", self.publish_lost_rate),
            ("publish_redirect_rate", self.publish_redirect_rate),
            ("portal_divergence", self.portal_divergence),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} = {v}: must be between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// What to do to one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Error,
    Slow(u64),
    Truncate,
}

/// Draws fault decisions from (seed, request number).
pub struct Dice {
    seed: u64,
    counter: AtomicU64,
}

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice {
            seed,
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh generator for the next request.
    pub fn next(&self) -> ChaCha8Rng {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        ChaCha8Rng::seed_from_u64(self.seed ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ 0xfa17)
    }

    pub fn decide(faults: &Faults, rng: &mut ChaCha8Rng) -> Fault {
        let x: f64 = rng.random();
        if x < faults.error_rate {
            Fault::Error
        } else if x < faults.error_rate + faults.truncate_rate {
            Fault::Truncate
        } else if x < faults.error_rate + faults.truncate_rate + faults.slow_rate {
            Fault::Slow(faults.slow_ms)
        } else {
            Fault::None
        }
    }
}

/// A malformed copy of a record: one of a broken timestamp, a missing key, or a wrong type.
pub fn corrupt(json: &str, key_field: &str, ts_field: &str, rng: &mut ChaCha8Rng) -> String {
    let mut v: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return "{}".into(),
    };
    let Some(obj) = v.as_object_mut() else {
        return "{}".into();
    };
    match rng.random_range(0..3) {
        0 => {
            obj.insert(
                ts_field.into(),
                serde_json::Value::String("2026-13-45 25:61:00".into()),
            );
        }
        1 => {
            obj.remove(key_field);
        }
        _ => {
            obj.insert(key_field.into(), serde_json::json!([1, 2, 3]));
        }
    }
    v.to_string()
}
