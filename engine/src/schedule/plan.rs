//! The firing decisions for one schedule at one instant, as a pure function of its spec and
//! stored state: which ticks fire, which are missed, which are skipped or buffered for overlap,
//! and the next fire time. No store, no clock.

use super::spec::{CatchUp, Overlap, ScheduleSpec};
use super::state::ScheduleState;
use crate::error::Result;

/// Most past ticks considered in one step (a schedule down for years does not loop forever).
const MAX_DUE: usize = 100_000;

/// What one step decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Ticks to fire now, oldest first.
    pub fire: Vec<i64>,
    /// Ticks passed over (downtime beyond the catch-up policy, or paused).
    pub missed: u64,
    /// Ticks skipped because a run was still running.
    pub skipped_overlap: u64,
}

/// Advances `state` to `now_ms`: returns what to fire; updates `next_fire_ms`, the counters,
/// `running` (for the ticks it fires) and `buffered`.
pub fn step(spec: &ScheduleSpec, state: &mut ScheduleState, now_ms: i64) -> Result<Plan> {
    let mut plan = Plan::default();
    if state.next_fire_ms > now_ms {
        return Ok(plan);
    }
    let mut due = vec![state.next_fire_ms];
    due.extend(spec.trigger.ticks(state.next_fire_ms, now_ms, MAX_DUE)?);
    state.next_fire_ms = spec.trigger.next_after(now_ms)?;
    if state.paused {
        plan.missed = due.len() as u64;
        state.missed += plan.missed;
        return Ok(plan);
    }
    let grace = i64::try_from(spec.misfire_grace_ms).unwrap_or(i64::MAX);
    let (late, on_time): (Vec<i64>, Vec<i64>) = due.into_iter().partition(|t| now_ms - t > grace);
    let caught_up: Vec<i64> = match spec.catch_up {
        CatchUp::Skip => Vec::new(),
        CatchUp::LatestOnly if on_time.is_empty() => late.last().copied().into_iter().collect(),
        CatchUp::LatestOnly => Vec::new(),
        CatchUp::All { window_ms, cap } => {
            let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
            let within: Vec<i64> = late
                .iter()
                .copied()
                .filter(|t| now_ms - t <= window)
                .collect();
            let skip = within.len().saturating_sub(cap as usize);
            within[skip..].to_vec()
        }
    };
    plan.missed = (late.len() - caught_up.len()) as u64;
    state.missed += plan.missed;
    for tick in caught_up.into_iter().chain(on_time) {
        if state.running == 0 || spec.overlap == Overlap::AllowAll {
            state.running += 1;
            plan.fire.push(tick);
        } else if spec.overlap == Overlap::BufferOne {
            if state.buffered.replace(tick).is_some() {
                plan.skipped_overlap += 1;
            }
        } else {
            plan.skipped_overlap += 1;
        }
    }
    state.skipped_overlap += plan.skipped_overlap;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::spec::Trigger;

    fn spec(catch_up: CatchUp, overlap: Overlap) -> ScheduleSpec {
        let mut s = ScheduleSpec::new(
            "s",
            "w",
            Trigger::Every {
                period_ms: 1_000,
                anchor_ms: 0,
            },
        );
        s.catch_up = catch_up;
        s.overlap = overlap;
        s.misfire_grace_ms = 500;
        s
    }

    fn state(next: i64) -> ScheduleState {
        ScheduleState {
            next_fire_ms: next,
            ..ScheduleState::default()
        }
    }

    #[test]
    fn on_time_ticks_fire_once_and_advance() {
        let s = spec(CatchUp::Skip, Overlap::AllowAll);
        let mut st = state(1_000);
        assert_eq!(step(&s, &mut st, 999).unwrap(), Plan::default());
        assert_eq!(step(&s, &mut st, 1_003).unwrap().fire, vec![1_000]);
        assert_eq!(st.next_fire_ms, 2_000);
        assert_eq!(
            step(&s, &mut st, 1_500).unwrap(),
            Plan::default(),
            "nothing twice"
        );
    }

    #[test]
    fn catch_up_policies_after_downtime() {
        // Down from just after 1,000 to 10,200: ticks 2,000…10,000 are due; 10,000 is on time.
        let mut st = state(2_000);
        let p = step(&spec(CatchUp::Skip, Overlap::AllowAll), &mut st, 10_200).unwrap();
        assert_eq!((p.fire, p.missed), (vec![10_000], 8));
        assert_eq!(st.next_fire_ms, 11_000);

        let mut st = state(2_000);
        let p = step(
            &spec(CatchUp::LatestOnly, Overlap::AllowAll),
            &mut st,
            10_900,
        )
        .unwrap();
        assert_eq!(
            (p.fire, p.missed),
            (vec![10_000], 8),
            "the latest of the late ticks"
        );

        let mut st = state(2_000);
        let all = CatchUp::All {
            window_ms: 5_000,
            cap: 3,
        };
        let p = step(&spec(all, Overlap::AllowAll), &mut st, 10_200).unwrap();
        // Late and within 5 s: 6,000…9,000, capped to the 3 most recent; plus 10,000 on time.
        assert_eq!((p.fire, p.missed), (vec![7_000, 8_000, 9_000, 10_000], 5));
    }

    #[test]
    fn overlap_policies() {
        for (overlap, fired, skipped, buffered) in [
            (Overlap::Skip, 1, 2, None),
            (Overlap::BufferOne, 1, 1, Some(3_000)),
            (Overlap::AllowAll, 3, 0, None),
        ] {
            let s = spec(CatchUp::Skip, overlap);
            let mut st = state(1_000);
            let mut fires = 0;
            let mut skips = 0;
            for now in [1_000, 2_000, 3_000] {
                let p = step(&s, &mut st, now).unwrap();
                fires += p.fire.len();
                skips += p.skipped_overlap;
            }
            assert_eq!(
                (fires, skips, st.buffered),
                (fired, skipped, buffered),
                "{overlap:?}"
            );
        }
    }

    #[test]
    fn paused_schedules_count_missed_ticks() {
        let s = spec(CatchUp::Skip, Overlap::AllowAll);
        let mut st = state(1_000);
        st.paused = true;
        let p = step(&s, &mut st, 3_000).unwrap();
        assert_eq!((p.fire.len(), p.missed, st.next_fire_ms), (0, 3, 4_000));
    }

    /// Seeded property test of the planner's decisions: random specs (every catch-up and
    /// overlap policy), a clock that mostly steps forward but also jumps ahead and back, pauses
    /// and resumes, and runs that end at random. Whatever happens, every tick from the first
    /// to the last one due is accounted for exactly once (fired, missed, skipped for overlap,
    /// or buffered), and fired ticks are never repeated and never in the
    /// future.
    #[test]
    fn every_tick_is_fired_missed_skipped_or_buffered_exactly_once() {
        use crate::schedule::spec::Trigger;
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..300u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let catch_up = match rng.random_range(0..3) {
                0 => CatchUp::Skip,
                1 => CatchUp::LatestOnly,
                _ => CatchUp::All {
                    window_ms: rng.random_range(0..5_000),
                    cap: rng.random_range(0..5),
                },
            };
            let overlap = match rng.random_range(0..3) {
                0 => Overlap::Skip,
                1 => Overlap::BufferOne,
                _ => Overlap::AllowAll,
            };
            let period = rng.random_range(10..500u64);
            let mut spec = ScheduleSpec::new(
                "s",
                "w",
                Trigger::Every {
                    period_ms: period,
                    anchor_ms: 0,
                },
            );
            spec.catch_up = catch_up;
            spec.overlap = overlap;
            spec.misfire_grace_ms = rng.random_range(0..2_000);
            let start = 1_000_000i64;
            let mut state = ScheduleState {
                next_fire_ms: spec.trigger.next_after(start).unwrap(),
                ..Default::default()
            };
            let first = state.next_fire_ms;
            let mut now = start;
            let mut fired: Vec<i64> = Vec::new();
            for _ in 0..200 {
                now += match rng.random_range(0..10) {
                    0 => rng.random_range(1_000..20_000),
                    1 => -rng.random_range(0..3_000),
                    _ => rng.random_range(0..300),
                };
                match rng.random_range(0..20) {
                    0 => state.paused = true,
                    1 => state.paused = false,
                    _ => {}
                }
                if state.running > 0 && rng.random_bool(0.3) {
                    state.running -= 1;
                    if state.running == 0
                        && let Some(t) = state.buffered.take()
                    {
                        state.running += 1;
                        fired.push(t);
                    }
                }
                let plan = step(&spec, &mut state, now).unwrap();
                for t in &plan.fire {
                    assert!(
                        *t <= now,
                        "seed {seed}: tick {t} fired before its time ({now})"
                    );
                }
                fired.extend(plan.fire);
            }
            let mut sorted = fired.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                fired.len(),
                "seed {seed}: a tick fired twice: {fired:?}"
            );
            // Every tick in [first, the last one due] is accounted for once.
            let due_until = state.next_fire_ms - 1;
            let total = if due_until >= first {
                spec.trigger
                    .ticks(first - 1, due_until, 1_000_000)
                    .unwrap()
                    .len() as u64
            } else {
                0
            };
            let accounted = fired.len() as u64
                + state.missed
                + state.skipped_overlap
                + u64::from(state.buffered.is_some());
            assert_eq!(
                accounted,
                total,
                "seed {seed}: {} fired, {} missed, {} skipped, \
                 buffered {:?}, of {total} ticks ({catch_up:?}, {overlap:?}, period {period})",
                fired.len(),
                state.missed,
                state.skipped_overlap,
                state.buffered
            );
        }
    }
}
