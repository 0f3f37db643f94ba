//! What a schedule is: a workflow, its fixed input, a trigger and its policies.

use crate::error::{Error, Result};
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// A cron expression (5 fields, or 6 with seconds first), in a time zone (IANA name).
    Cron {
        /// The expression, e.g. `"0 30 2 * * *"`.
        expr: String,
        /// The time zone, e.g. `"Europe/Paris"`; `"UTC"` by default.
        tz: String,
    },
    /// Every `period_ms`, at `anchor_ms + k × period_ms`.
    Every {
        /// The period in milliseconds (at least 1).
        period_ms: u64,
        /// A tick time the others are aligned to (Unix ms).
        anchor_ms: i64,
    },
}

/// What to do with ticks that passed while no scheduler was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatchUp {
    /// Fire none of them.
    Skip,
    /// Fire only the latest.
    LatestOnly,
    /// Fire those within `window_ms` of now, at most `cap` (the most recent ones).
    All {
        /// How far back.
        window_ms: u64,
        /// At most this many.
        cap: u32,
    },
}

/// What to do when a tick comes while the schedule's previous run is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Skip the tick (counted).
    Skip,
    /// Keep the latest such tick and fire it when the running run ends.
    BufferOne,
    /// Fire anyway.
    AllowAll,
}

/// A schedule (a launch plan): a workflow bound to a fixed input and a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Unique name.
    pub name: String,
    /// The workflow to run (by registered name).
    pub workflow: String,
    /// Project of its runs.
    pub project: String,
    /// Domain of its runs.
    pub domain: String,
    /// Its fixed input (MessagePack).
    pub input: Vec<u8>,
    /// When it fires.
    pub trigger: Trigger,
    /// Delay each run's start by a random amount up to this (ms), to spread load.
    pub jitter_ms: u64,
    /// Ticks older than this when seen are "missed" and follow `catch_up` (ms).
    pub misfire_grace_ms: u64,
    /// Missed ticks.
    pub catch_up: CatchUp,
    /// Overlapping runs.
    pub overlap: Overlap,
}

impl ScheduleSpec {
    /// A schedule of `workflow` on `trigger` in project `default`, domain `development`, with an
    /// empty input, skip catch-up, skip overlap, no jitter and a one-minute misfire grace.
    pub fn new(name: impl Into<String>, workflow: impl Into<String>, trigger: Trigger) -> Self {
        ScheduleSpec {
            name: name.into(),
            workflow: workflow.into(),
            project: "default".into(),
            domain: "development".into(),
            input: Vec::new(),
            trigger,
            jitter_ms: 0,
            misfire_grace_ms: 60_000,
            catch_up: CatchUp::Skip,
            overlap: Overlap::Skip,
        }
    }

    /// Checks the trigger; errors name the schedule.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidInput {
            what: format!("schedule {:?}", self.name),
            reason,
        };
        crate::names::check_all(&[
            ("schedule name", &self.name),
            ("workflow", &self.workflow),
            ("project", &self.project),
            ("domain", &self.domain),
        ])?;
        match &self.trigger {
            Trigger::Every { period_ms: 0, .. } => {
                Err(bad("the period must be at least 1 ms".into()))
            }
            Trigger::Every { .. } => Ok(()),
            Trigger::Cron { expr, tz } => {
                croner::Cron::from_str(expr).map_err(|e| bad(format!("cron {expr:?}: {e}")))?;
                chrono_tz::Tz::from_str(tz).map_err(|e| bad(format!("time zone {tz:?}: {e}")))?;
                Ok(())
            }
        }
    }
}

impl Trigger {
    /// The first tick strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Result<i64> {
        match self {
            Trigger::Every {
                period_ms,
                anchor_ms,
            } => {
                let p = i64::try_from((*period_ms).max(1)).unwrap_or(i64::MAX);
                // Checked: a time near the ends of the range must not wrap around.
                after_ms
                    .checked_sub(*anchor_ms)
                    .map(|d| d.div_euclid(p))
                    .and_then(|k| k.checked_add(1))
                    .and_then(|k| k.checked_mul(p))
                    .and_then(|t| t.checked_add(*anchor_ms))
                    .ok_or_else(|| Error::InvalidInput {
                        what: format!("time {after_ms}"),
                        reason: "the next tick after it is not a representable time".into(),
                    })
            }
            Trigger::Cron { expr, tz } => {
                let bad = |reason: String| Error::InvalidInput {
                    what: format!("cron {expr:?}"),
                    reason,
                };
                let cron = croner::Cron::from_str(expr).map_err(|e| bad(e.to_string()))?;
                let tz = chrono_tz::Tz::from_str(tz).map_err(|e| bad(e.to_string()))?;
                let start = Utc
                    .timestamp_millis_opt(after_ms)
                    .single()
                    .ok_or_else(|| bad(format!("{after_ms} is not a representable time")))?
                    .with_timezone(&tz);
                let next = cron
                    .find_next_occurrence(&start, false)
                    .map_err(|e| bad(e.to_string()))?;
                Ok(next.timestamp_millis())
            }
        }
    }

    /// Every tick in `(after_ms, until_ms]`, at most `limit` of them (the earliest).
    pub fn ticks(&self, after_ms: i64, until_ms: i64, limit: usize) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        let mut t = after_ms;
        while out.len() < limit {
            let next = match self.next_after(t) {
                Ok(next) => next,
                // No representable tick after `t`: the range has no more ticks.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            };
            if next <= t || next > until_ms {
                break;
            }
            t = next;
            out.push(t);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_ticks_align_to_the_anchor() {
        let t = Trigger::Every {
            period_ms: 1_000,
            anchor_ms: 500,
        };
        assert_eq!(t.next_after(0).unwrap(), 500);
        assert_eq!(t.next_after(500).unwrap(), 1_500);
        assert_eq!(t.next_after(1_499).unwrap(), 1_500);
        assert_eq!(
            t.ticks(0, 3_500, 10).unwrap(),
            vec![500, 1_500, 2_500, 3_500]
        );
        assert_eq!(t.ticks(0, 3_500, 2).unwrap(), vec![500, 1_500]);
    }

    #[test]
    fn cron_with_seconds_and_a_time_zone() {
        // 02:30:15 every day in Paris (UTC+1 in November).
        let t = Trigger::Cron {
            expr: "15 30 2 * * *".into(),
            tz: "Europe/Paris".into(),
        };
        let nov_25_midnight_utc = 1_795_564_800_000; // 2026-11-25T00:00:00Z
        let next = t.next_after(nov_25_midnight_utc).unwrap();
        assert_eq!(
            next,
            nov_25_midnight_utc + (3_600 + 30 * 60 + 15) * 1_000,
            "01:30:15 UTC"
        );
        let bad = ScheduleSpec::new(
            "s",
            "w",
            Trigger::Cron {
                expr: "61 * * * *".into(),
                tz: "UTC".into(),
            },
        );
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("schedule \"s\"")
        );
        let bad_tz = ScheduleSpec::new(
            "s",
            "w",
            Trigger::Cron {
                expr: "* * * * *".into(),
                tz: "Mars/Olympus".into(),
            },
        );
        assert!(
            bad_tz
                .validate()
                .unwrap_err()
                .to_string()
                .contains("Mars/Olympus")
        );
    }
}
