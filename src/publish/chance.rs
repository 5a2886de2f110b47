//! What chance allows: how the guard judges a unit's move and its dossier count from one
//! period to the next (docs/publication.md, "Movement against chance").
//!
//! A base unit with a handful of dossiers swings by tens of points by chance; a unit whose
//! dossiers vanish because a feed broke or a code was remapped does not. The guard holds a
//! final for what chance does not explain, and notes (without holding) what it does:
//!
//! - **a move** over `max_change_points`, taken like for like (the indicators scored in both
//!   periods), beyond [`Chance::z`] times its sampling spread;
//! - **a count that fell** (dossiers received) further than the two periods' working days
//!   explain: given `N` dossiers over both, the current period's share is binomial with `p` its
//!   share of the working days; a fall to none is the case `k = 0`;
//! - **many small units falling to none at once**: each alone may be chance, together they are
//!   not (the number expected by chance is the sum of each one's probability; the count seen
//!   is judged against its Poisson tail);
//! - **a unit missing** from the period that the registry does not close.
//!
//! Each unit takes two tests (its move, its count), each at the per-unit tail
//! `erfc(sigmas / √2) / (2 × units)` (Bonferroni), so a final is held by chance alone about as
//! often as one move beyond `sigmas` standard errors (two-sided): once in 370 at 3.

use std::collections::BTreeMap;

use crate::config::PublishConfig;
use crate::duck;
use serde::{Deserialize, Serialize};

/// Units listed in a warning shown to a person (all are kept in the ledger and the manifest).
const SHOWN: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Warning {
    /// `stale_warehouse`, `moved`, `incomplete_feed`, `units_without_dossiers`, or the note
    /// `not_judged`.
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub units: Vec<String>,
    /// Whether it blocks a final revision unless accepted. A note (`not_judged`: units whose
    /// move chance explains) is shown and recorded and blocks nothing.
    #[serde(default = "blocks")]
    pub blocking: bool,
}

fn blocks() -> bool {
    true
}

impl Warning {
    /// One line: the message and the first units.
    pub fn line(&self) -> String {
        if self.units.is_empty() {
            return self.message.clone();
        }
        let more = self.units.len().saturating_sub(SHOWN);
        format!(
            "{}: {}{}",
            self.message,
            self.units[..self.units.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// What chance allows in a period of `units` units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chance {
    pub sigmas: f64,
    pub units: i64,
    /// The chance of holding a final by chance alone (two-sided tail of `sigmas`).
    pub family: f64,
    /// Each unit's test is judged at this tail.
    pub tail: f64,
    /// The per-unit threshold, in spreads.
    pub z: f64,
    /// The smallest count of records of an indicator whose fall to none is news (½^n below
    /// `tail`); procedures to announce or in the catalogue are never news.
    pub floor: i64,
}

fn two_sided(z: f64) -> f64 {
    libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The standard normal distribution function.
fn phi(u: f64) -> f64 {
    0.5 * libm::erfc(-u / std::f64::consts::SQRT_2)
}

impl Chance {
    pub fn new(sigmas: f64, units: i64) -> Chance {
        if sigmas <= 0.0 {
            return Chance {
                sigmas: 0.0,
                units,
                family: 1.0,
                tail: 1.0,
                z: 0.0,
                floor: 1,
            };
        }
        let family = two_sided(sigmas);
        let tail = family / (2 * units.max(1)) as f64;
        // z with erfc(z / √2) = tail, by bisection (erfc falls with z).
        let (mut lo, mut hi) = (0.0f64, 40.0f64);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if two_sided(mid) > tail {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let floor = if tail > 0.0 {
            ((-tail.log2()).floor() as i64).saturating_add(1)
        } else {
            i64::MAX
        };
        Chance {
            sigmas,
            units,
            family,
            tail,
            z: hi,
            floor,
        }
    }

    /// How it was judged, for a message.
    pub fn said(&self) -> String {
        if self.sigmas == 0.0 {
            "movement_sigmas = 0: every move and every fall to none judged".into()
        } else {
            format!(
                "{} sigmas over the period's {} units: {:.2} spreads, a tail of {:.1e}, per unit and test",
                self.sigmas, self.units, self.z, self.tail
            )
        }
    }
}

/// P(X ≤ k) for X binomial with `n` trials of probability `p`, summed in log space.
pub fn binomial_at_most(n: u64, k: u64, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let ln_choose = |i: u64| {
        libm::lgamma(n as f64 + 1.0)
            - libm::lgamma(i as f64 + 1.0)
            - libm::lgamma((n - i) as f64 + 1.0)
    };
    let terms: Vec<f64> = (0..=k)
        .map(|i| ln_choose(i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln())
        .collect();
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln())
        .min(0.0)
        .exp()
}

/// P(X ≥ k) for X Poisson with mean `lambda`.
pub fn poisson_at_least(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let mut term = (-lambda).exp();
    let mut below = term;
    for i in 1..k {
        term *= lambda / i as f64;
        below += term;
    }
    (1.0 - below).max(0.0)
}

/// One side of an indicator's pair: records counted, of them in the numerator, its points.
#[derive(Debug, Clone, Copy, Default)]
pub struct Side {
    pub x: f64,
    pub n: f64,
    pub points: Option<f64>,
}

/// An indicator of a unit in both periods, with its methodology.
#[derive(Debug, Clone)]
pub struct Pair {
    pub now: Side,
    pub before: Side,
    pub max_points: f64,
    pub target: f64,
    pub attribution: String,
    pub applies_to: String,
}

impl Pair {
    /// Compared like for like: records in both periods; or at least the floor in one and none
    /// in the other, for records that arrive as a flow (not procedures announced in batches or
    /// the catalogue as of now).
    fn alike(&self, chance: &Chance) -> bool {
        let (a, b) = (self.now.n, self.before.n);
        let flow = !matches!(self.attribution.as_str(), "announcement" | "as_of_now");
        (a > 0.0 && b > 0.0) || (flow && a.max(b) >= chance.floor as f64 && a.min(b) == 0.0)
    }

    /// The variance of its points' move under no change: `(max / target)² p (1 − p)
    /// (1/n₁ + 1/n₂)` with `p` pooled over both periods as `(x₁ + x₂ + 1) / (n₁ + n₂ + 2)`,
    /// times the share of the ratio's sampling spread below the target (points are capped at
    /// the maximum: a unit far above its target cannot move by chance). 0 when either period
    /// has no records, or the points are fixed (0 below the top of a tree, not scored).
    pub fn variance(&self) -> f64 {
        let (a, b) = (self.now, self.before);
        if a.n <= 0.0 || b.n <= 0.0 || self.max_points <= 0.0 || self.target <= 0.0 {
            return 0.0;
        }
        if a.points.is_none() || b.points.is_none() {
            return 0.0;
        }
        if self.applies_to == "top" && a.points == Some(0.0) && b.points == Some(0.0) {
            return 0.0;
        }
        let p = (a.x + b.x + 1.0) / (a.n + b.n + 2.0);
        let raw = (self.max_points / self.target).powi(2) * p * (1.0 - p) * (1.0 / a.n + 1.0 / b.n);
        let sd = (p * (1.0 - p) / a.n.min(b.n)).sqrt();
        let below = if sd > 0.0 {
            phi((self.target - p) / sd)
        } else if p < self.target {
            1.0
        } else {
            0.0
        };
        raw * below
    }
}

/// A unit's move like for like and its sampling spread.
pub fn like_for_like(pairs: &[Pair], chance: &Chance) -> (f64, f64) {
    let (mut moved, mut variance) = (0.0, 0.0);
    for p in pairs.iter().filter(|p| p.alike(chance)) {
        moved += p.now.points.unwrap_or(0.0) - p.before.points.unwrap_or(0.0);
        variance += p.variance();
    }
    (moved, variance.sqrt())
}

/// The units whose total moved more than `max_change_points` from the previous period beyond
/// what chance allows (a blocking `moved` warning), and those whose move chance or an empty
/// count explains (a `not_judged` note).
pub fn movement(
    conn: &duck::Connection,
    candidate: &str,
    published_previous: Option<&(String, i64)>,
    prev: &str,
    cfg: &PublishConfig,
    chance: &Chance,
    period: &str,
) -> anyhow::Result<Vec<Warning>> {
    // The previous period's counts as published, when it was (the change is against those).
    let previous_rows = match published_previous {
        Some((p, rev)) => format!(
            "SELECT * FROM pub_index_indicator WHERE period = {} AND revision = {rev}",
            duck::lit(p)
        ),
        None => format!(
            "SELECT * FROM wh.mart_index_indicator WHERE period = {}",
            duck::lit(prev)
        ),
    };
    let sql = format!(
        "WITH cand AS ({candidate}), \
         now AS (SELECT * FROM wh.mart_index_indicator WHERE period = $1), \
         before AS ({previous_rows}) \
         SELECT c.unit_id, c.change_from_previous, a.indicator IS NOT NULL, \
                a.numerator, a.denominator, a.points, b.numerator, b.denominator, b.points, \
                a.max_points, m.target, coalesce(m.period_attribution, ''), coalesce(m.applies_to, '') \
         FROM cand AS c \
         LEFT JOIN now AS a ON a.unit_id = c.unit_id \
         LEFT JOIN before AS b ON b.unit_id = a.unit_id AND b.indicator = a.indicator \
         LEFT JOIN wh.methodology AS m ON m.methodology = a.methodology AND m.indicator = a.indicator \
         WHERE abs(c.change_from_previous) > $2 \
         ORDER BY abs(c.change_from_previous) DESC, c.unit_id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(duckdb::params![period, cfg.max_change_points], |r| {
        let side = |x: usize, n: usize, p: usize| -> duckdb::Result<Side> {
            Ok(Side {
                x: r.get::<_, Option<f64>>(x)?.unwrap_or(0.0),
                n: r.get::<_, Option<f64>>(n)?.unwrap_or(0.0),
                points: r.get(p)?,
            })
        };
        let pair = if r.get::<_, bool>(2)? {
            Some(Pair {
                now: side(3, 4, 5)?,
                before: side(6, 7, 8)?,
                max_points: r.get::<_, Option<f64>>(9)?.unwrap_or(0.0),
                target: r.get::<_, Option<f64>>(10)?.unwrap_or(0.0),
                attribution: r.get(11)?,
                applies_to: r.get(12)?,
            })
        } else {
            None
        };
        Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?, pair))
    })?;
    // In the order read (largest change first), each unit's pairs.
    let mut order: Vec<(String, f64)> = Vec::new();
    let mut pairs: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    for row in rows {
        let (unit, change, pair) = row?;
        if !pairs.contains_key(&unit) {
            order.push((unit.clone(), change));
        }
        let list = pairs.entry(unit).or_default();
        list.extend(pair);
    }
    let (mut moved, mut within, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for (unit, change) in order {
        let list = &pairs[&unit];
        let (alike, spread) = if list.is_empty() {
            (change, 0.0)
        } else {
            like_for_like(list, chance)
        };
        if alike.abs() <= cfg.max_change_points {
            empty.push(format!("{unit} ({change:+.2}; like for like {alike:+.2})"));
        } else if alike.abs() <= chance.z * spread {
            within.push(format!("{unit} ({change:+.2}; spread ±{spread:.2})"));
        } else {
            moved.push(format!("{unit} ({change:+.2})"));
        }
    }
    let mut out = Vec::new();
    if !moved.is_empty() {
        out.push(Warning {
            kind: "moved".into(),
            message: format!(
                "{} unit(s) moved more than {} points from {prev} on the indicators scored in both periods, beyond what the sampling spread of their counts allows ({})",
                moved.len(),
                cfg.max_change_points,
                chance.said()
            ),
            units: moved,
            blocking: true,
        });
    }
    if !within.is_empty() || !empty.is_empty() {
        let mut why = Vec::new();
        if !within.is_empty() {
            why.push(format!(
                "{} within {:.2} times the sampling spread of their few records ({})",
                within.len(),
                chance.z,
                chance.said()
            ));
        }
        if !empty.is_empty() {
            why.push(format!(
                "{} by indicators with nothing to score in one of the periods (no procedure to announce, no petition)",
                empty.len()
            ));
        }
        out.push(Warning {
            kind: "not_judged".into(),
            message: format!(
                "{} unit(s) moved more than {} points from {prev} as chance allows, not judged: {}",
                within.len() + empty.len(),
                cfg.max_change_points,
                why.join("; ")
            ),
            units: within.into_iter().chain(empty).collect(),
            blocking: false,
        });
    }
    Ok(out)
}

/// One unit's dossiers received in the previous period and in this one.
#[derive(Debug, Clone)]
pub struct Count {
    pub unit: String,
    pub before: u64,
    pub now: u64,
    /// It has a row in this period.
    pub kept: bool,
    /// The registry closes it before this period's end.
    pub closed: bool,
}

/// The counts' warnings, given each unit's counts and the two periods' working days.
pub fn judge_counts(
    counts: &[Count],
    days_now: i64,
    days_before: i64,
    chance: &Chance,
    prev: &str,
    period: &str,
) -> Vec<Warning> {
    // The current period's expected share of a unit's dossiers over both.
    let p = if days_now > 0 && days_before > 0 {
        days_now as f64 / (days_now + days_before) as f64
    } else {
        0.5
    };
    let (mut missing, mut gone, mut fell, mut few) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut expected_empty = 0.0;
    for c in counts {
        if !c.kept {
            if !c.closed {
                missing.push(format!("{} ({} dossiers in {prev})", c.unit, c.before));
            }
            continue;
        }
        let n = c.before + c.now;
        if n == 0 {
            continue;
        }
        expected_empty += (1.0 - p).powf(n as f64);
        if (c.now as f64) >= n as f64 * p {
            continue;
        }
        let shown = format!("{} ({} → {})", c.unit, c.before, c.now);
        // At 0 sigmas every fall to none is judged, and a count that only fell is not.
        let judged = if chance.sigmas == 0.0 {
            c.now == 0
        } else {
            binomial_at_most(n, c.now, p) < chance.tail
        };
        if judged {
            if c.now == 0 {
                gone.push(shown);
            } else {
                fell.push(shown);
            }
        } else if c.now == 0 {
            few.push(shown);
        }
    }
    let mut out = Vec::new();
    if !missing.is_empty() {
        out.push(Warning {
            kind: "units_missing".into(),
            message: format!(
                "{} unit(s) of {prev} have no row in {period} and the registry does not close them (a registry snapshot cut short, a unit dropped by the models?)",
                missing.len()
            ),
            units: missing,
            blocking: true,
        });
    }
    if !gone.is_empty() {
        out.push(Warning {
            kind: "units_without_dossiers".into(),
            message: format!(
                "{} unit(s) received dossiers in {prev} and none in {period}, more than chance allows ({})",
                gone.len(),
                chance.said()
            ),
            units: gone,
            blocking: true,
        });
    }
    if !fell.is_empty() {
        out.push(Warning {
            kind: "dossiers_fell".into(),
            message: format!(
                "{} unit(s) received far fewer dossiers in {period} than in {prev}, more than the working days ({days_now} against {days_before}) and chance allow ({})",
                fell.len(),
                chance.said()
            ),
            units: fell,
            blocking: true,
        });
    }
    // Each small unit's fall may be chance; so many at once is not (the number of units
    // falling to none by chance is about Poisson, with the sum of their chances as mean).
    let empty = few.len() as u64;
    let together = chance.sigmas > 0.0
        && empty >= 2
        && poisson_at_least(empty, expected_empty) < chance.family;
    if together {
        out.push(Warning {
            kind: "units_without_dossiers".into(),
            message: format!(
                "{empty} unit(s) received no dossiers in {period} where chance expects {expected_empty:.1}: each small unit may be chance, so many at once is not (a feed or a code mapping broken?)"
            ),
            units: few,
            blocking: true,
        });
    } else if !few.is_empty() {
        out.push(Warning {
            kind: "not_judged".into(),
            message: format!(
                "{} small unit(s) received a few dossiers in {prev} and none in {period}: not judged, as so few can fall to none by chance ({:.1} expected)",
                few.len(),
                expected_empty
            ),
            units: few,
            blocking: false,
        });
    }
    out
}

/// Reads the counts of [`judge_counts`] from the warehouse and judges them.
pub fn counts(
    conn: &duck::Connection,
    period: &str,
    prev: &str,
    chance: &Chance,
) -> anyhow::Result<Vec<Warning>> {
    let days = |p: &str| -> anyhow::Result<i64> {
        Ok(conn.query_row(
            "SELECT count(w.calendar_date) FROM wh.int_period_judgement AS j \
             JOIN wh.dim_working_days AS w \
               ON w.calendar_date >= j.starts_on AND w.calendar_date < least(j.ends_before, j.judged_on + 1) \
             WHERE j.period = ?",
            [p],
            |r| r.get(0),
        )?)
    };
    let (days_now, days_before) = (days(period)?, days(prev)?);
    let mut stmt = conn.prepare(
        "WITH counted AS ( \
           SELECT unit_id, period, CAST(denominator AS BIGINT) AS n FROM wh.mart_index_indicator \
           WHERE indicator = 'ONLINE_DOSSIER_SHARE' AND period IN ($1, $2)), \
         period_end AS (SELECT ends_before - 1 AS last_day FROM wh.int_period_judgement WHERE period = $1) \
         SELECT w.unit_id, coalesce(b.n, 0), coalesce(c.n, 0), k.unit_id IS NOT NULL, \
                EXISTS (SELECT 1 FROM wh.dim_units AS d WHERE d.unit_id = w.unit_id) \
                AND NOT EXISTS (SELECT 1 FROM wh.dim_units AS d, period_end AS e \
                                WHERE d.unit_id = w.unit_id AND (d.valid_to IS NULL OR d.valid_to >= e.last_day)) \
         FROM (SELECT unit_id FROM wh.mart_index_unit_period WHERE period = $2) AS w \
         LEFT JOIN counted AS b ON b.unit_id = w.unit_id AND b.period = $2 \
         LEFT JOIN counted AS c ON c.unit_id = w.unit_id AND c.period = $1 \
         LEFT JOIN (SELECT unit_id FROM wh.mart_index_unit_period WHERE period = $1) AS k ON k.unit_id = w.unit_id \
         ORDER BY w.unit_id",
    )?;
    let rows = stmt.query_map([period, prev], |r| {
        Ok(Count {
            unit: r.get(0)?,
            before: r.get::<_, i64>(1)?.max(0) as u64,
            now: r.get::<_, i64>(2)?.max(0) as u64,
            kept: r.get(3)?,
            closed: r.get(4)?,
        })
    })?;
    let counts: Vec<Count> = rows.collect::<Result<_, _>>()?;
    Ok(judge_counts(
        &counts,
        days_now,
        days_before,
        chance,
        prev,
        period,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tails_are_the_textbook_ones() {
        assert!((binomial_at_most(10, 0, 0.5) - 1.0 / 1024.0).abs() < 1e-12);
        assert!((binomial_at_most(3, 1, 0.5) - 0.5).abs() < 1e-12);
        assert!((binomial_at_most(5003, 3, 0.5)).abs() < 1e-300);
        assert_eq!(binomial_at_most(4, 4, 0.3), 1.0);
        assert!((poisson_at_least(2, 1.0) - (1.0 - 2.0 * (-1.0f64).exp())).abs() < 1e-12);
        assert_eq!(poisson_at_least(0, 3.0), 1.0);
    }

    #[test]
    fn what_chance_allows_holds_a_final_by_chance_once_in_370_whatever_the_units() {
        // One unit, two tests: 0.27 % / 2 = 0.135 % each, 3.21 sigmas; ½^9 = 0.195 % is not
        // rarer, ½^10 = 0.098 % is.
        let one = Chance::new(3.0, 1);
        assert!((one.family - 0.0026998).abs() < 1e-6, "{one:?}");
        assert!((one.z - 3.205).abs() < 0.001, "{one:?}");
        assert_eq!(one.floor, 10);
        // 357 units (the tax administration's tree): 0.27 % / 714 = 3.8e-6 each, 4.62 sigmas;
        // ½^18 = 3.8e-6 is not rarer (by a hair), ½^19 is.
        let tree = Chance::new(3.0, 357);
        assert!((tree.z - 4.62).abs() < 0.01, "{tree:?}");
        assert_eq!(tree.floor, 19);
        assert_eq!(Chance::new(0.0, 357).z, 0.0);
        assert_eq!(Chance::new(0.0, 357).floor, 1);
        assert_eq!(Chance::new(1e6, 1).floor, i64::MAX);
    }

    #[test]
    fn a_unit_at_its_maximum_cannot_move_by_chance() {
        let pair = |x: f64, n: f64, max: f64, target: f64| Pair {
            now: Side {
                x,
                n,
                points: Some(0.0),
            },
            before: Side {
                x,
                n,
                points: Some(0.0),
            },
            max_points: max,
            target,
            attribution: "receipt".into(),
            applies_to: "all".into(),
        };
        // 12 of 12 online twice against a target of 0.5: pinned at the maximum.
        assert!(pair(12.0, 12.0, 6.0, 0.5).variance() < 1e-9);
        // 5 of 10 twice against a target of 1: p = 11/22, 400 × ¼ × (1/10 + 1/10) = 20, of
        // which Φ((1 − ½) / √(¼ / 10)) = Φ(3.16) = 99.92 % lies below the cap.
        let v = pair(5.0, 10.0, 20.0, 1.0).variance();
        assert!((v - 19.984).abs() < 0.01, "{v}");
    }

    /// Four units each move more than 15 points from 2026-09 to 2026-10 (and one does not).
    /// Six units, judged at 3 sigmas: 0.27 % / 12 = 0.0225 % per unit and test, 3.69 spreads,
    /// and an indicator's fall to none is news from 13 records (½^13 = 0.012 %). By hand:
    /// - BIG, ON_TIME_HANDLING (max 20, target 1) 380 of 400 then 60 of 400: −16 points.
    ///   Pooled p = 441/802 = 0.5499, variance 400 × 0.2475 × (2/400) = 0.495, spread 0.70;
    ///   −16 is 23 spreads. Judged: `moved`.
    /// - SMALL, 2 of 2 then 0 of 2: −20. p = 3/6, variance 400 × ¼ × 1 = 100, of which
    ///   Φ(0.5 / 0.354) = 92.1 % lies below the cap: 92.1, spread 9.60; 3.69 spreads are 35.4
    ///   > 20: chance. A note.
    /// - EMPTY, 3 of 3 then no dossier (the `zero` rule gives 0 points): −20, all from an
    ///   indicator with nothing to score in October, whose 3 September records are fewer than
    ///   13; like for like it moved 0. A note.
    /// - BATCH, 15 procedures announced then none (16 points, then not scored): a batch of
    ///   announcements is never news. A note.
    /// - GONE, 40 of 40 then none of 0 (like EMPTY, but 40 records falling to none is news):
    ///   like for like −20, spread 0. Judged.
    ///
    /// At `movement_sigmas = 0` every move on records is judged: all but BATCH are `moved`.
    #[test]
    fn a_move_is_judged_beyond_the_spread_of_its_counts_and_like_for_like() {
        let conn = duck::in_memory(1).unwrap();
        conn.execute_batch(
            "ATTACH ':memory:' AS wh;
             CREATE TABLE wh.methodology AS SELECT 'm' AS methodology, 'ON_TIME_HANDLING' AS indicator, 1.0::DOUBLE AS target,
               'handled_or_open' AS period_attribution, 'all' AS applies_to
               UNION ALL SELECT 'm', 'ANNOUNCED', 1.0, 'announcement', 'all';
             CREATE TABLE wh.mart_index_indicator (unit_id VARCHAR, period VARCHAR, indicator VARCHAR, methodology VARCHAR,
               numerator DOUBLE, denominator DOUBLE, points DOUBLE, max_points DOUBLE);
             INSERT INTO wh.mart_index_indicator VALUES
               ('BIG', '2026-09', 'ON_TIME_HANDLING', 'm', 380, 400, 19, 20),
               ('BIG', '2026-10', 'ON_TIME_HANDLING', 'm', 60, 400, 3, 20),
               ('SMALL', '2026-09', 'ON_TIME_HANDLING', 'm', 2, 2, 20, 20),
               ('SMALL', '2026-10', 'ON_TIME_HANDLING', 'm', 0, 2, 0, 20),
               ('EMPTY', '2026-09', 'ON_TIME_HANDLING', 'm', 3, 3, 20, 20),
               ('EMPTY', '2026-10', 'ON_TIME_HANDLING', 'm', 0, 0, 0, 20),
               ('GONE', '2026-09', 'ON_TIME_HANDLING', 'm', 40, 40, 20, 20),
               ('GONE', '2026-10', 'ON_TIME_HANDLING', 'm', 0, 0, 0, 20),
               ('STILL', '2026-09', 'ON_TIME_HANDLING', 'm', 9, 10, 18, 20),
               ('STILL', '2026-10', 'ON_TIME_HANDLING', 'm', 8, 10, 16, 20),
               ('BATCH', '2026-09', 'ANNOUNCED', 'm', 15, 15, 16, 16),
               ('BATCH', '2026-10', 'ANNOUNCED', 'm', 0, 0, NULL, 16);",
        )
        .unwrap();
        let candidate =
            "SELECT * FROM (VALUES ('BIG', -16.0), ('SMALL', -20.0), ('EMPTY', -20.0), \
                         ('GONE', -20.0), ('STILL', -2.0), ('BATCH', -16.0)) \
                         AS t(unit_id, change_from_previous) WHERE $1 = '2026-10'";
        let judge = |sigmas: f64| {
            let cfg = PublishConfig {
                movement_sigmas: sigmas,
                ..PublishConfig::default()
            };
            let chance = Chance::new(sigmas, 6);
            movement(&conn, candidate, None, "2026-09", &cfg, &chance, "2026-10").unwrap()
        };
        let w = judge(3.0);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].kind.as_str(), w[0].blocking), ("moved", true));
        assert_eq!(w[0].units, vec!["GONE (-20.00)", "BIG (-16.00)"]);
        assert_eq!((w[1].kind.as_str(), w[1].blocking), ("not_judged", false));
        assert_eq!(
            w[1].units,
            vec![
                "SMALL (-20.00; spread ±9.60)",
                "EMPTY (-20.00; like for like +0.00)",
                "BATCH (-16.00; like for like +0.00)"
            ]
        );
        assert!(
            w[1].message
                .contains("1 within 3.69 times the sampling spread")
                && w[1]
                    .message
                    .contains("2 by indicators with nothing to score"),
            "{}",
            w[1].message
        );
        let w = judge(0.0);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].kind, "moved");
        assert_eq!(
            w[0].units,
            vec![
                "EMPTY (-20.00)",
                "GONE (-20.00)",
                "SMALL (-20.00)",
                "BIG (-16.00)"
            ]
        );
        assert_eq!(w[1].units, vec!["BATCH (-16.00; like for like +0.00)"]);
    }

    fn count(unit: &str, before: u64, now: u64) -> Count {
        Count {
            unit: unit.into(),
            before,
            now,
            kept: true,
            closed: false,
        }
    }

    /// Counts, with 20 working days in each period (the current one's share is ½), 357 units
    /// at 3 sigmas (tail 3.8e-6 per unit and test):
    /// - 5,000 dossiers, then 3 (pages skipped, a code remapped): P(X ≤ 3 | 5,003, ½) is
    ///   astronomically small: `dossiers_fell`. Its move alone would be a note (a count that
    ///   collapses widens its own spread), which is why the count is tested.
    /// - 12, then 0: ½^12 = 2.4e-4, not below 3.8e-6: alone, a note.
    /// - 40, then 0: ½^40: `units_without_dossiers`.
    /// - 30, then 12: P(X ≤ 12 | 42, ½) = 0.5 %: chance at this many units.
    /// - a unit with no row this period: closed by the registry, not looked for; not closed,
    ///   `units_missing`.
    #[test]
    fn a_count_that_falls_further_than_chance_is_judged_and_many_small_falls_together_too() {
        let chance = Chance::new(3.0, 357);
        let mut counts = vec![
            count("COLLAPSE", 5000, 3),
            count("QUIET", 12, 0),
            count("GONE", 40, 0),
            count("LESS", 30, 12),
            Count {
                closed: true,
                kept: false,
                ..count("CLOSED", 41, 0)
            },
            Count {
                kept: false,
                ..count("DROPPED", 25, 0)
            },
        ];
        counts.extend((0..300).map(|i| count(&format!("U{i:03}"), 12, 12)));
        let w = judge_counts(&counts, 20, 20, &chance, "2026-09", "2026-10");
        let kinds: Vec<(&str, bool, Vec<String>)> = w
            .iter()
            .map(|w| (w.kind.as_str(), w.blocking, w.units.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    "units_missing",
                    true,
                    vec!["DROPPED (25 dossiers in 2026-09)".to_string()]
                ),
                (
                    "units_without_dossiers",
                    true,
                    vec!["GONE (40 → 0)".to_string()]
                ),
                (
                    "dossiers_fell",
                    true,
                    vec!["COLLAPSE (5000 → 3)".to_string()]
                ),
                ("not_judged", false, vec!["QUIET (12 → 0)".to_string()]),
            ]
        );
        // A code mapping broken: 40 base units of 12 dossiers each lose them all. Each is
        // 2.4e-4, alone a note; chance expects 40 × 2.4e-4 + … ≈ 0.01 empty units, and 41
        // (with GONE) at once is not chance.
        counts.extend((0..40).map(|i| count(&format!("B{i:02}"), 12, 0)));
        let w = judge_counts(&counts, 20, 20, &chance, "2026-09", "2026-10");
        let together = w
            .iter()
            .find(|w| w.kind == "units_without_dossiers" && w.message.contains("so many at once"))
            .unwrap_or_else(|| panic!("{w:?}"));
        assert!(together.blocking);
        assert_eq!(together.units.len(), 41, "QUIET and the 40");
        // Working days: February after Tết has 15 against January's 22, so 22 → 10 is the
        // share expected (15/37 of 32 is 13), not a fall.
        let w = judge_counts(
            &[count("T", 22, 10)],
            15,
            22,
            &Chance::new(3.0, 1),
            "2026-01",
            "2026-02",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    /// The counts as the warehouse gives them: the working days of each period (October 2026
    /// judged to its end: 22; September: 21, less the 2 September holiday), each unit's
    /// dossiers received (`ONLINE_DOSSIER_SHARE`'s denominator), whether it has a row now and
    /// whether the registry closed it before the period's end.
    #[test]
    fn the_counts_are_read_from_the_warehouse_as_judged() {
        let conn = duck::in_memory(1).unwrap();
        conn.execute_batch(
            "ATTACH ':memory:' AS wh;
             CREATE TABLE wh.int_period_judgement AS
               SELECT * FROM (VALUES ('2026-09', DATE '2026-09-01', DATE '2026-10-01', DATE '2026-09-30'),
                                     ('2026-10', DATE '2026-10-01', DATE '2026-11-01', DATE '2026-11-05'))
               AS t(period, starts_on, ends_before, judged_on);
             CREATE TABLE wh.dim_working_days AS
               SELECT d::DATE AS calendar_date FROM range(DATE '2026-09-01', DATE '2026-11-01', INTERVAL 1 DAY) AS r(d)
               WHERE dayofweek(d) BETWEEN 1 AND 5 AND d::DATE <> DATE '2026-09-02';
             CREATE TABLE wh.mart_index_unit_period AS
               SELECT * FROM (VALUES ('A', '2026-09'), ('A', '2026-10'), ('CLOSED', '2026-09'), ('DROPPED', '2026-09'))
               AS t(unit_id, period);
             CREATE TABLE wh.mart_index_indicator AS
               SELECT *, 'ONLINE_DOSSIER_SHARE' AS indicator FROM (VALUES
                 ('A', '2026-09', 40.0), ('A', '2026-10', 0.0), ('CLOSED', '2026-09', 41.0), ('DROPPED', '2026-09', 25.0))
               AS t(unit_id, period, denominator);
             CREATE TABLE wh.dim_units AS
               SELECT * FROM (VALUES ('A', NULL::DATE), ('CLOSED', DATE '2026-09-30'), ('DROPPED', NULL::DATE))
               AS t(unit_id, valid_to);",
        )
        .unwrap();
        let w = counts(&conn, "2026-10", "2026-09", &Chance::new(3.0, 357)).unwrap();
        let got: Vec<(&str, Vec<String>)> = w
            .iter()
            .map(|w| (w.kind.as_str(), w.units.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "units_missing",
                    vec!["DROPPED (25 dossiers in 2026-09)".to_string()]
                ),
                ("units_without_dossiers", vec!["A (40 → 0)".to_string()]),
            ]
        );
        assert!(w[1].message.contains("none in 2026-10"), "{}", w[1].message);
    }
}
