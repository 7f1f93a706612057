//! Which call comes next, and for which account. The service and every
//! baseline draw from the same generator, so they see the same mix of
//! operations and the same spread over accounts.

use crate::Scenario;

/// Points of one Earn in the load (seeding uses its own amounts).
pub const EARN_POINTS: i64 = 10;
/// Points of one Spend.
pub const SPEND_POINTS: i64 = 1;
/// Point cost of the reward that redeem (and mixed's 1 %) redeems.
pub const REWARD_COST: i64 = 100;
/// Amount of one order in order-earn, in minor units (25.00).
pub const ORDER_AMOUNT_MINOR: i64 = 2_500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read = 0,
    Earn = 1,
    Spend = 2,
    /// Redeem a reward (rewards service).
    Redeem = 3,
    /// GET the loyalty page (HTTP gateway).
    Page = 4,
    /// EarnForOrder: the program's rules, the customer's tier and campaigns.
    Order = 5,
}

impl OpKind {
    pub const COUNT: usize = 6;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    /// Index of the customer: customer `c{account}`, key or row `account`.
    pub account: u32,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub scenario: Scenario,
    pub customers: u32,
    /// Customers `first..first + hot` are the hot set: seeded first, and
    /// the only accounts of spend-contended.
    pub hot: u32,
    /// Start of the hot set: 0, except while spend-contended warms up on
    /// accounts of its own (past the customers), so the measured run starts
    /// on accounts no warmup has drained.
    pub first: u32,
    /// Share of requests that go to the hot set.
    pub skew: f64,
    /// mixed: the 1 % slice redeems a reward (rewards service running) instead of a Spend.
    pub redeem: bool,
}

impl Workload {
    pub fn next(&self, rng: &mut fastrand::Rng) -> Op {
        match self.scenario {
            crate::Scenario::BalanceRead => self.op(OpKind::Read, rng),
            crate::Scenario::Earn => self.op(OpKind::Earn, rng),
            crate::Scenario::SpendContended => Op { kind: OpKind::Spend, account: self.hot_account(rng) },
            crate::Scenario::Mixed => {
                let kind = match rng.u32(0..100) {
                    0..90 => OpKind::Read,
                    90..99 => OpKind::Earn,
                    _ if self.redeem => OpKind::Redeem,
                    _ => OpKind::Spend,
                };
                self.op(kind, rng)
            }
            crate::Scenario::Redeem => self.op(OpKind::Redeem, rng),
            crate::Scenario::LoyaltyPage => self.op(OpKind::Page, rng),
            crate::Scenario::OrderEarn => self.op(OpKind::Order, rng),
        }
    }

    fn op(&self, kind: OpKind, rng: &mut fastrand::Rng) -> Op {
        let account = if rng.f64() < self.skew { self.hot_account(rng) } else { rng.u32(0..self.customers) };
        Op { kind, account }
    }

    fn hot_account(&self, rng: &mut fastrand::Rng) -> u32 {
        self.first + rng.u32(0..self.hot)
    }

    /// The hot set's accounts.
    pub fn hot_accounts(&self) -> std::ops::Range<u32> {
        self.first..self.first + self.hot
    }
}

pub fn customer_id(account: u32) -> String {
    format!("c{account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(scenario: Scenario, skew: f64) -> Workload {
        Workload { scenario, customers: 1_000, hot: 10, first: 0, skew, redeem: false }
    }

    #[test]
    fn mixed_is_ninety_nine_one() {
        let mut rng = fastrand::Rng::with_seed(7);
        let w = workload(Scenario::Mixed, 0.9);
        let mut counts = [0u32; OpKind::COUNT];
        for _ in 0..100_000 {
            counts[w.next(&mut rng).kind as usize] += 1;
        }
        assert!((89_000..91_000).contains(&counts[0]), "{counts:?}");
        assert!((8_500..9_500).contains(&counts[1]), "{counts:?}");
        assert!((800..1_200).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn full_skew_stays_on_the_hot_set_and_spends_never_leave_it() {
        let mut rng = fastrand::Rng::with_seed(7);
        let reads = workload(Scenario::BalanceRead, 1.0);
        let spends = workload(Scenario::SpendContended, 0.0);
        for _ in 0..10_000 {
            assert!(reads.next(&mut rng).account < 10);
            assert!(spends.next(&mut rng).account < 10);
        }
    }

    #[test]
    fn no_skew_spreads_over_every_customer() {
        let mut rng = fastrand::Rng::with_seed(7);
        let w = workload(Scenario::Earn, 0.0);
        let cold = (0..10_000).filter(|_| w.next(&mut rng).account >= 10).count();
        assert!(cold > 9_700, "{cold}");
    }
}
