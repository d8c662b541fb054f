//! What a spot instance cost: the integral of its zone's spot price, a step function of time,
//! over the time it ran. EC2 bills spot capacity per second at the price in effect each
//! second, so this is the bill, not an estimate (the per-second minimum of 60 s aside).

use crate::aws::ec2::SpotPriceChange;

/// The spot price of one instance type in one zone over time.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSteps {
    /// Price changes, oldest first, no two at one time.
    changes: Vec<SpotPriceChange>,
}

impl PriceSteps {
    /// The steps of `changes` (any order); `None` when there is none.
    pub fn new(mut changes: Vec<SpotPriceChange>) -> Option<Self> {
        changes.sort_by_key(|c| c.at_ms);
        changes.dedup_by_key(|c| c.at_ms);
        (!changes.is_empty()).then_some(Self { changes })
    }

    /// US dollars for one instance running from `from_ms` to `to_ms` (Unix milliseconds).
    /// Before the first change known, the first price holds: EC2 answers a history request
    /// with the change in effect at its start, so that gap appears only when the history has
    /// been cut short, and the nearest price is the best one known.
    pub fn cost(&self, from_ms: i64, to_ms: i64) -> f64 {
        if to_ms <= from_ms {
            return 0.0;
        }
        let mut dollars = 0.0;
        for (i, change) in self.changes.iter().enumerate() {
            let start = if i == 0 { i64::MIN } else { change.at_ms };
            let end = self.changes.get(i + 1).map_or(i64::MAX, |next| next.at_ms);
            let (a, b) = (start.max(from_ms), end.min(to_ms));
            if b > a {
                dollars += change.usd_per_hour * (b - a) as f64 / 3_600_000.0;
            }
        }
        dollars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn change(at_hours: f64, usd_per_hour: f64) -> SpotPriceChange {
        SpotPriceChange { at_ms: (at_hours * HOUR as f64) as i64, usd_per_hour }
    }

    #[test]
    fn a_run_is_priced_change_by_change() {
        // 0.06 from hour 0, 0.08 from hour 10, 0.05 from hour 12 (given out of order).
        let steps = PriceSteps::new(vec![change(12.0, 0.05), change(0.0, 0.06), change(10.0, 0.08)]).expect("steps");
        // 9:30 to 12:30: half an hour at 0.06, two at 0.08, half an hour at 0.05.
        let cost = steps.cost(9 * HOUR + HOUR / 2, 12 * HOUR + HOUR / 2);
        let by_hand = 0.5 * 0.06 + 2.0 * 0.08 + 0.5 * 0.05;
        assert!((cost - by_hand).abs() < 1e-12, "{cost} against {by_hand}");
        // Inside one step, and after the last change.
        assert!((steps.cost(HOUR, 3 * HOUR) - 0.12).abs() < 1e-12);
        assert!((steps.cost(20 * HOUR, 21 * HOUR) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn before_the_first_change_its_price_holds_and_empty_runs_cost_nothing() {
        let steps = PriceSteps::new(vec![change(5.0, 0.1)]).expect("steps");
        assert!((steps.cost(4 * HOUR, 6 * HOUR) - 0.2).abs() < 1e-12);
        assert_eq!(steps.cost(6 * HOUR, 6 * HOUR), 0.0);
        assert_eq!(steps.cost(7 * HOUR, 6 * HOUR), 0.0);
        assert_eq!(PriceSteps::new(Vec::new()), None);
    }
}
