//! Rolling replacement: a role's `[roles.NAME.rolling]` settings and the rollout they make
//! of its replaced instances, batch by batch. Pure; apply runs the rounds.
//!
//! A replaced slot keeps its old instance until its successor is healthy and what pointed
//! at the old one (CNAMEs, an Elastic IP) points at the successor; only then does the old
//! one go. `max_unavailable` lets some old instances of a batch go first instead, and
//! `batch = "100%"` with `max_unavailable = "100%"` is replacement all at once.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::definition::DefinitionError;

/// How a role's replaced instances are rolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// Slots replaced at once.
    pub batch: Amount,
    /// Old instances of the role that may be gone before their successor is healthy.
    pub max_unavailable: Amount,
    /// What makes a successor healthy.
    pub health: Health,
    /// How long a batch's successors have to become healthy.
    pub timeout: Duration,
}

impl Default for Rolling {
    fn default() -> Rolling {
        Rolling {
            batch: Amount::Percent(25),
            max_unavailable: Amount::Count(0),
            health: Health::Running,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a batch may take to become healthy.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A number of instances, or a share of a role's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    /// 1 to 100.
    Percent(u32),
}

impl Amount {
    /// Of a role of `n` instances, rounded up: a batch is never less than what it says.
    fn up(self, n: u32) -> u32 {
        match self {
            Amount::Count(c) => c,
            Amount::Percent(p) => (n * p).div_ceil(100),
        }
    }

    /// Of a role of `n` instances, rounded down: never more unavailable than it allows.
    fn down(self, n: u32) -> u32 {
        match self {
            Amount::Count(c) => c,
            Amount::Percent(p) => n * p / 100,
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(c) => write!(f, "{c}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// When a successor counts as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// EC2 says `running`.
    Running,
    /// `running`, and both EC2 status checks (system and instance) `ok`.
    StatusOk,
    /// `running`, and healthy in its role's target group (`load_balancer`).
    TargetGroup,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Running => "running",
            Health::StatusOk => "status-ok",
            Health::TargetGroup => "target-group",
        }
    }
}

/// `rolling` as written, in `[defaults]` or a role; a role's keys win one by one.
#[derive(Deserialize, Default, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rolling")]
pub struct RawRolling {
    #[schemars(with = "Option<serde_json::Value>")]
    batch: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<serde_json::Value>")]
    max_unavailable: Option<Spanned<toml::Value>>,
    #[schemars(with = "Option<String>")]
    health: Option<Spanned<String>>,
    #[schemars(with = "Option<serde_json::Value>")]
    timeout: Option<Spanned<toml::Value>>,
}

impl RawRolling {
    /// Where `health` is written, as a byte offset.
    pub(crate) fn health_at(&self) -> Option<usize> {
        self.health.as_ref().map(|h| h.span().start)
    }
}

/// A role's rolling settings from its own `rolling` table and the defaults'. `error` makes
/// a definition error at a byte offset of the file; `role` names the role in messages.
pub fn build(
    role: &str,
    own: Option<&RawRolling>,
    defaults: Option<&RawRolling>,
    error: &dyn Fn(usize, String) -> DefinitionError,
) -> Result<Rolling, DefinitionError> {
    let none = RawRolling::default();
    let (own, defaults) = (own.unwrap_or(&none), defaults.unwrap_or(&none));
    let pick = |f: fn(&RawRolling) -> &Option<Spanned<toml::Value>>| {
        f(own).as_ref().or(f(defaults).as_ref())
    };
    let at = |v: &Spanned<toml::Value>, m: String| error(v.span().start, m);
    let mut r = Rolling::default();
    if let Some(v) = pick(|r| &r.batch) {
        r.batch = amount(v.get_ref())
            .filter(|a| *a != Amount::Count(0))
            .ok_or_else(|| {
                at(
                    v,
                    format!(
                        "roles.{role}.rolling.batch is a count of at least 1 or a share, e.g. 2 or \"25%\""
                    ),
                )
            })?;
    }
    if let Some(v) = pick(|r| &r.max_unavailable) {
        r.max_unavailable = amount(v.get_ref()).ok_or_else(|| {
            at(
                v,
                format!(
                    "roles.{role}.rolling.max_unavailable is a count or a share, e.g. 0 or \"50%\""
                ),
            )
        })?;
    }
    if let Some(h) = own.health.as_ref().or(defaults.health.as_ref()) {
        r.health = match h.get_ref().as_str() {
            "running" => Health::Running,
            "status-ok" => Health::StatusOk,
            "target-group" => Health::TargetGroup,
            other => {
                return Err(error(
                    h.span().start,
                    format!(
                        "roles.{role}.rolling.health is \"running\", \"status-ok\" or \"target-group\", not {other:?}"
                    ),
                ));
            }
        };
    }
    if let Some(v) = pick(|r| &r.timeout) {
        r.timeout = duration(v.get_ref())
            .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
            .ok_or_else(|| {
                at(
                    v,
                    format!(
                        "roles.{role}.rolling.timeout is seconds or a duration up to 1h, e.g. 300 or \"5m\""
                    ),
                )
            })?;
    }
    Ok(r)
}

/// `2`, or `"25%"` (1 to 100 %).
pub(crate) fn amount(v: &toml::Value) -> Option<Amount> {
    match v {
        toml::Value::Integer(n) => u32::try_from(*n).ok().map(Amount::Count),
        toml::Value::String(s) => {
            let p: u32 = s.strip_suffix('%')?.trim().parse().ok()?;
            (1..=100).contains(&p).then_some(Amount::Percent(p))
        }
        _ => None,
    }
}

/// `300` (seconds), `"90s"`, `"5m"` or `"1h"`.
pub(crate) fn duration(v: &toml::Value) -> Option<Duration> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        toml::Value::String(s) => {
            let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
            let n: u64 = n.parse().ok()?;
            let scale = match unit {
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => return None,
            };
            Some(Duration::from_secs(n.checked_mul(scale)?))
        }
        _ => None,
    }
}

/// Where one replaced slot is in its role's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The round its successor is launched in, from 0: round k holds batch k of every role
    /// (roles roll side by side).
    pub round: u32,
    /// How many rounds its role's rollout takes.
    pub rounds: u32,
    /// Whether the old instance stays until its successor is healthy (create before
    /// destroy); otherwise it goes first, within `max_unavailable`.
    pub overlap: bool,
}

/// The rollout of a role of `count` instances whose `replaced` slots (in slot order) get
/// successors: their steps, in the same order. `resumed` says a rollout is under way (some
/// slot has its successor already, finished in round 0): the rest start in round 1.
pub fn steps(r: &Rolling, count: u32, replaced: usize, resumed: bool) -> Vec<Step> {
    let batch = r.batch.up(count).max(1) as usize;
    let unavailable = r.max_unavailable.down(count) as usize;
    let first = u32::from(resumed);
    let rounds = replaced.div_ceil(batch) as u32 + first;
    (0..replaced)
        .map(|i| Step {
            round: first + (i / batch) as u32,
            rounds,
            overlap: i % batch >= unavailable,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn raw(src: &str) -> RawRolling {
        toml::from_str(src).unwrap()
    }

    fn err(at: usize, message: String) -> DefinitionError {
        DefinitionError {
            file: PathBuf::from("heet.toml"),
            at: Some((1, at + 1)),
            message,
        }
    }

    #[test]
    fn a_roles_keys_win_one_by_one_over_the_defaults() {
        let defaults = raw("batch = 2\nhealth = \"status-ok\"\ntimeout = \"5m\"");
        let own = raw("batch = \"50%\"\nmax_unavailable = 1");
        let r = build("www", Some(&own), Some(&defaults), &err).unwrap();
        assert_eq!(
            r,
            Rolling {
                batch: Amount::Percent(50),
                max_unavailable: Amount::Count(1),
                health: Health::StatusOk,
                timeout: Duration::from_secs(300),
            }
        );
        assert_eq!(build("www", None, None, &err).unwrap(), Rolling::default());
    }

    #[test]
    fn bad_values_say_what_to_write() {
        for (src, says) in [
            ("batch = 0", "rolling.batch is a count of at least 1"),
            ("batch = \"0%\"", "rolling.batch is a count of at least 1"),
            ("batch = \"120%\"", "rolling.batch"),
            ("max_unavailable = -1", "rolling.max_unavailable is a count"),
            ("health = \"pingable\"", "not \"pingable\""),
            ("timeout = \"2d\"", "rolling.timeout is seconds"),
            ("timeout = 0", "rolling.timeout is seconds"),
            ("timeout = \"2h\"", "up to 1h"),
        ] {
            let e = build("www", Some(&raw(src)), None, &err).unwrap_err();
            assert!(e.message.contains(says), "{src}: {}", e.message);
            assert!(e.message.starts_with("roles.www.rolling."), "{}", e.message);
        }
        assert!(toml::from_str::<RawRolling>("batches = 2").is_err());
    }

    fn shape(steps: &[Step]) -> Vec<(u32, bool)> {
        steps.iter().map(|s| (s.round, s.overlap)).collect()
    }

    #[test]
    fn by_default_a_quarter_of_the_role_at_a_time_each_new_one_before_its_old_one_goes() {
        let s = steps(&Rolling::default(), 8, 8, false);
        assert_eq!(
            shape(&s),
            [0, 0, 1, 1, 2, 2, 3, 3].map(|r| (r, true)).to_vec()
        );
        assert!(s.iter().all(|s| s.rounds == 4));
        // A role of 1 to 4 rolls one at a time.
        assert_eq!(shape(&steps(&Rolling::default(), 3, 3, false)).len(), 3);
        assert_eq!(steps(&Rolling::default(), 3, 3, false)[2].round, 2);
    }

    #[test]
    fn max_unavailable_lets_that_many_of_each_batch_go_first() {
        let r = Rolling {
            batch: Amount::Count(3),
            max_unavailable: Amount::Percent(50),
            ..Rolling::default()
        };
        // 50 % of 4 is 2 of each batch of 3.
        assert_eq!(
            shape(&steps(&r, 4, 4, false)),
            [(0, false), (0, false), (0, true), (1, false)]
        );
    }

    #[test]
    fn all_at_once_is_replacement_as_it_always_was() {
        let r = Rolling {
            batch: Amount::Percent(100),
            max_unavailable: Amount::Percent(100),
            ..Rolling::default()
        };
        let s = steps(&r, 5, 5, false);
        assert!(
            s.iter()
                .all(|s| s.round == 0 && !s.overlap && s.rounds == 1)
        );
    }

    #[test]
    fn a_resumed_rollout_finishes_its_batch_in_flight_first() {
        let s = steps(&Rolling::default(), 4, 2, true);
        assert_eq!(shape(&s), [(1, true), (2, true)]);
        assert!(s.iter().all(|s| s.rounds == 3));
    }
}
