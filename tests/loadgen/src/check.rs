//! After the load: does every touched account's ledger add up to its
//! balance, did any balance ever go below zero, and (when every write got a
//! definite answer) does the ledger hold exactly what the clients were told?

use futures::StreamExt;
use serde::Serialize;

use loyalty_common::peer::PeerChannel;
use loyalty_proto::points::v1 as pb;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;
use tonic::transport::Channel;

use crate::Plan;
use crate::client::{Channels, Expected, Tally};
use crate::workload::{REWARD_COST, customer_id};
use loyalty_proto::rewards::v1 as rpb;
use loyalty_proto::rewards::v1::rewards_service_client::RewardsServiceClient;

/// Violations listed in the report; the count covers all of them.
const MAX_LISTED: usize = 20;
const PAGE_SIZE: i32 = 200;

#[derive(Debug, Clone, Serialize)]
pub struct Correctness {
    pub ok: bool,
    pub accounts_checked: usize,
    /// Balances seen below zero: in a Spend answer, at the end, or at any point of the ledger.
    pub overdrafts: u64,
    /// Whether acknowledged earns and spends were compared with the ledger
    /// (only when no write ended in an error that leaves its outcome unknown).
    pub acknowledged_compared: bool,
    pub violation_count: usize,
    pub violations: Vec<String>,
    /// Accounts whose redemptions (rewards service) were compared with their ledger.
    pub redemptions_checked: usize,
}

impl Correctness {
    pub fn summary(&self) -> String {
        if self.ok {
            format!(
                "correctness: ok ({} accounts: ledger sums = balances{}, zero overdrafts{})",
                self.accounts_checked,
                if self.acknowledged_compared { ", ledger = acknowledged writes" } else { "" },
                if self.redemptions_checked > 0 {
                    format!("; {} accounts: redemptions match the ledger", self.redemptions_checked)
                } else {
                    String::new()
                }
            )
        } else {
            let mut text =
                format!("correctness: {} violation(s), {} overdraft(s)", self.violation_count, self.overdrafts);
            for violation in &self.violations {
                text.push_str("\n  ");
                text.push_str(violation);
            }
            text
        }
    }
}

#[derive(Default)]
struct AccountCheck {
    violations: Vec<String>,
    overdraft: bool,
}

/// Accounts whose redemptions are listed after the load.
const REDEMPTION_SAMPLE: usize = 50;

pub async fn run(
    channels: &Channels,
    plan: &Plan,
    tally: &Tally,
    rewards: Option<&RewardsServiceClient<Channel>>,
) -> Correctness {
    let compare = tally.uncertain_writes == 0;
    let mut accounts: Vec<(u32, Expected)> = tally.accounts.iter().map(|(a, e)| (*a, *e)).collect();
    accounts.sort_unstable_by_key(|(account, _)| *account);
    let accounts_checked = accounts.len();
    let checks: Vec<AccountCheck> = futures::stream::iter(accounts)
        .enumerate()
        .map(|(i, (account, expected))| {
            let client = channels.client(i);
            let program = plan.program.clone();
            async move { check_account(client, program, account, expected, compare).await }
        })
        .buffer_unordered(plan.concurrency)
        .collect()
        .await;

    let mut violations = Vec::new();
    let mut overdrafts = tally.overdrafts;
    if tally.overdrafts > 0 {
        violations.push(format!("{} successful Spend answer(s) carried a negative balance", tally.overdrafts));
    }
    for check in checks {
        overdrafts += u64::from(check.overdraft);
        violations.extend(check.violations);
    }
    let mut redemptions_checked = 0;
    if let Some(rewards) = rewards {
        // Every account that was told of a redemption, at most REDEMPTION_SAMPLE of them.
        let mut sample: Vec<(u32, Expected)> =
            tally.accounts.iter().filter(|(_, e)| e.redeemed > 0).map(|(a, e)| (*a, *e)).collect();
        sample.sort_unstable_by_key(|(account, _)| *account);
        sample.truncate(REDEMPTION_SAMPLE);
        redemptions_checked = sample.len();
        let strict = plan.scenario == crate::Scenario::Redeem;
        let found: Vec<Vec<String>> = futures::stream::iter(sample)
            .enumerate()
            .map(|(i, (account, expected))| {
                let points = channels.client(i);
                let rewards = rewards.clone();
                let program = plan.program.clone();
                async move { check_redemptions(points, rewards, program, account, expected, compare, strict).await }
            })
            .buffer_unordered(plan.concurrency)
            .collect()
            .await;
        violations.extend(found.into_iter().flatten());
    }
    let violation_count = violations.len();
    violations.truncate(MAX_LISTED);
    Correctness {
        ok: violation_count == 0,
        accounts_checked,
        overdrafts,
        acknowledged_compared: compare,
        violation_count,
        violations,
        redemptions_checked,
    }
}

/// ACTIVE redemptions × the reward's cost must be what the ledger spent
/// (`strict`: only redemptions spend, as in redeem), and as many as the
/// clients were told (`compare`).
async fn check_redemptions(
    mut points: PointsServiceClient<PeerChannel>,
    mut rewards: RewardsServiceClient<Channel>,
    program_id: String,
    account: u32,
    expected: Expected,
    compare: bool,
    strict: bool,
) -> Vec<String> {
    let customer = customer_id(account);
    let mut violations = Vec::new();
    let mut redemptions = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = rpb::ListRedemptionsRequest {
            program_id: program_id.clone(),
            customer_id: customer.clone(),
            page_size: PAGE_SIZE,
            page_token,
        };
        match rewards.list_redemptions(request).await {
            Ok(page) => {
                let page = page.into_inner();
                redemptions.extend(page.redemptions);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Err(status) => {
                violations.push(format!("{customer}: ListRedemptions failed: {status}"));
                return violations;
            }
        }
    }
    let active = redemptions.iter().filter(|r| r.status == rpb::RedemptionStatus::Active as i32).count() as i64;
    let unfinished = redemptions.iter().filter(|r| r.status == rpb::RedemptionStatus::Pending as i32).count();
    if unfinished > 0 {
        violations.push(format!("{customer}: {unfinished} redemption(s) still PENDING after the load"));
    }
    if compare && active != expected.redeemed {
        violations
            .push(format!("{customer}: {active} ACTIVE redemption(s), clients were told of {}", expected.redeemed));
    }
    if strict {
        let entries = match all_entries(&mut points, &program_id, &customer).await {
            Ok(entries) => entries,
            Err(status) => {
                violations.push(format!("{customer}: ListTransactions failed: {status}"));
                return violations;
            }
        };
        let spent: i64 = -entries
            .iter()
            .filter(|e| {
                matches!(
                    pb::EntryKind::try_from(e.kind),
                    Ok(pb::EntryKind::Spend | pb::EntryKind::Reverse | pb::EntryKind::Restore)
                )
            })
            .map(|e| e.points + e.pending_points)
            .sum::<i64>();
        if spent != active * REWARD_COST {
            violations.push(format!(
                "{customer}: ledger spent {spent} points net, {active} ACTIVE redemption(s) × {REWARD_COST} = {}",
                active * REWARD_COST
            ));
        }
    }
    violations
}

async fn check_account(
    mut client: PointsServiceClient<PeerChannel>,
    program_id: String,
    account: u32,
    expected: Expected,
    compare: bool,
) -> AccountCheck {
    let customer = customer_id(account);
    let mut check = AccountCheck::default();
    let balance = match client
        .get_balance(pb::GetBalanceRequest { program_id: program_id.clone(), customer_id: customer.clone() })
        .await
    {
        Ok(answer) => answer.into_inner().balance.unwrap_or_default(),
        Err(status) => {
            check.violations.push(format!("{customer}: GetBalance failed: {status}"));
            return check;
        }
    };
    let entries = match all_entries(&mut client, &program_id, &customer).await {
        Ok(entries) => entries,
        Err(status) => {
            check.violations.push(format!("{customer}: ListTransactions failed: {status}"));
            return check;
        }
    };

    let available: i64 = entries.iter().map(|e| e.points).sum();
    let pending: i64 = entries.iter().map(|e| e.pending_points).sum();
    if available != balance.available {
        check.violations.push(format!(
            "{customer}: ledger entries sum to {available}, GetBalance.available is {}",
            balance.available
        ));
    }
    if pending != balance.pending {
        check
            .violations
            .push(format!("{customer}: ledger pending sums to {pending}, GetBalance.pending is {}", balance.pending));
    }
    if balance.available < 0 {
        check.overdraft = true;
        check.violations.push(format!("{customer}: available is {} after the spends", balance.available));
    }
    // Oldest first: the running balance must never have dipped below zero.
    let mut running = 0i64;
    for entry in entries.iter().rev() {
        running += entry.points;
        if running < 0 {
            check.overdraft = true;
            check.violations.push(format!("{customer}: balance went to {running} at entry {}", entry.transaction_id));
            break;
        }
    }
    if compare {
        let of_kind = |kind: pb::EntryKind| {
            entries.iter().filter(|e| e.kind == kind as i32).map(|e| e.points + e.pending_points).sum::<i64>()
        };
        let earned = of_kind(pb::EntryKind::Earn);
        let spent = -of_kind(pb::EntryKind::Spend);
        if earned != expected.earned || spent != expected.spent {
            check.violations.push(format!(
                "{customer}: ledger has earned {earned} / spent {spent}, clients were told earned {} / spent {}",
                expected.earned, expected.spent
            ));
        }
    }
    check
}

async fn all_entries(
    client: &mut PointsServiceClient<PeerChannel>,
    program_id: &str,
    customer_id: &str,
) -> Result<Vec<pb::LedgerEntry>, tonic::Status> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_transactions(pb::ListTransactionsRequest {
                program_id: program_id.to_owned(),
                customer_id: customer_id.to_owned(),
                page_size: PAGE_SIZE,
                page_token,
            })
            .await?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            return Ok(entries);
        }
        page_token = page.next_page_token;
    }
}
