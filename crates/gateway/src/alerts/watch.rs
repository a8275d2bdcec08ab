//! The conditions worth an alert, read from the live pool: one per account that needs a login, is banned or whose
//! refresh is backing off, and one per priority tier whose every enabled account is cooling or unusable while at least
//! one of them is cooling; and one per client key and budget (tokens per day, spend per month) used to 80 % and
//! one at 100 %.

use std::collections::BTreeMap;

use super::{AlertAccount, Condition};
use crate::clock::Clock;
use crate::pool::AccountEntry;
use crate::tenants::ring::BudgetUse;
use crate::view::{live_state, AccountView};

pub fn conditions(
    entries: &[std::sync::Arc<AccountEntry>],
    budgets: &[BudgetUse],
    clock: &dyn Clock,
) -> Vec<Condition> {
    // Every account's state, but a full view only of those an alert names: with 10,000 accounts, views of all of them
    // every two seconds held a worker for milliseconds.
    let mut out = Vec::new();
    let mut tiers = Tiers::default();
    for e in entries {
        let account = e.cell.account();
        let state = live_state(e, &account);
        tiers.count(account.priority, state);
        if per_account(state).is_some() {
            out.extend(account_condition(&AccountView::live(e, clock)));
        }
    }
    out.extend(tiers.conditions());
    out.extend(from_budgets(budgets));
    out
}

/// The budget conditions of client keys (pure, for tests).
pub fn from_budgets(budgets: &[BudgetUse]) -> Vec<Condition> {
    let mut out = Vec::new();
    for b in budgets {
        for (budget, share) in [("tokens_per_day", b.day), ("usd_per_month", b.month)] {
            let Some(share) = share else { continue };
            for (threshold, event) in [(0.8, "key_budget_80"), (1.0, "key_budget_100")] {
                if share >= threshold {
                    out.push(Condition {
                        key: format!("{event}:{}:{budget}", b.key.id),
                        event,
                        summary: format!(
                            "client key {:?} used {:.0} % of its {budget}",
                            b.key.name,
                            share * 100.0
                        ),
                        account: None,
                        tier: None,
                        detail: Some(format!("key {} ({budget})", b.key.name)),
                    });
                }
            }
        }
    }
    out
}

/// The conditions of a set of account views (pure, for tests; [`conditions`] must agree with it).
#[cfg(test)]
pub fn from_views(views: &[AccountView]) -> Vec<Condition> {
    let mut tiers = Tiers::default();
    let mut out: Vec<Condition> = views
        .iter()
        .inspect(|v| tiers.count(v.priority, v.state))
        .filter_map(account_condition)
        .collect();
    out.extend(tiers.conditions());
    out
}

/// The alert an account's state raises on its own, if any: (event, what the summary says).
fn per_account(state: &str) -> Option<(&'static str, &'static str)> {
    match state {
        "needs_reauth" => Some(("account_needs_login", "needs a login")),
        "banned" => Some(("account_banned", "is banned")),
        "refresh_backoff" => Some(("refresh_failing", "cannot refresh its token")),
        _ => None,
    }
}

fn account_condition(v: &AccountView) -> Option<Condition> {
    let (event, what) = per_account(v.state)?;
    Some(Condition {
        key: format!("{event}:{}", v.id),
        event,
        summary: format!("account {:?} {what}", v.name),
        account: Some(AlertAccount {
            id: v.id,
            name: v.name.clone(),
        }),
        tier: None,
        detail: v.last_error.clone(),
    })
}

/// Per priority tier: (enabled accounts, of them not ready, of them cooling).
#[derive(Default)]
struct Tiers(BTreeMap<i32, (usize, usize, usize)>);

impl Tiers {
    fn count(&mut self, priority: i32, state: &str) {
        if state != "disabled" {
            let t = self.0.entry(priority).or_default();
            t.0 += 1;
            t.1 += usize::from(state != "ready");
            t.2 += usize::from(state == "cooling_down");
        }
    }

    /// One condition per tier whose every enabled account is cooling or unusable while at least one is cooling.
    fn conditions(self) -> impl Iterator<Item = Condition> {
        self.0
            .into_iter()
            .filter(|(_, (enabled, unusable, cooling))| {
                *enabled > 0 && unusable == enabled && *cooling > 0
            })
            .map(|(tier, (enabled, _, cooling))| Condition {
                key: format!("tier_cooling:{tier}"),
                event: "tier_cooling",
                summary: format!(
                    "every account of priority tier {tier} is cooling or unusable ({cooling} of {enabled} cooling)"
                ),
                account: None,
                tier: Some(tier),
                detail: None,
            })
    }
}
