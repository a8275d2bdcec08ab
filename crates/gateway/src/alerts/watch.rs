//! The conditions worth an alert, read from the live pool: one per account that needs a login, is banned or whose
//! refresh is backing off, and one per priority tier whose every enabled account is cooling or unusable while at least
//! one of them is cooling; and one per client key and budget (tokens per day, spend per month) used to 80 % and
//! one at 100 %.

use std::collections::BTreeMap;

use super::{AlertAccount, Condition};
use crate::clock::Clock;
use crate::pool::AccountEntry;
use crate::tenants::ring::BudgetUse;
use crate::view::AccountView;

pub fn conditions(
    entries: &[std::sync::Arc<AccountEntry>],
    budgets: &[BudgetUse],
    clock: &dyn Clock,
) -> Vec<Condition> {
    let views: Vec<AccountView> = entries
        .iter()
        .map(|e| AccountView::live(e, clock))
        .collect();
    let mut out = from_views(&views);
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

/// The conditions of a set of account views (pure, for tests).
pub fn from_views(views: &[AccountView]) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut tiers: BTreeMap<i32, (usize, usize, usize)> = BTreeMap::new();
    for v in views {
        let account = Some(AlertAccount {
            id: v.id,
            name: v.name.clone(),
        });
        let per_account = match v.state {
            "needs_reauth" => Some(("account_needs_login", "needs a login")),
            "banned" => Some(("account_banned", "is banned")),
            "refresh_backoff" => Some(("refresh_failing", "cannot refresh its token")),
            _ => None,
        };
        if let Some((event, what)) = per_account {
            out.push(Condition {
                key: format!("{event}:{}", v.id),
                event,
                summary: format!("account {:?} {what}", v.name),
                account,
                tier: None,
                detail: v.last_error.clone(),
            });
        }
        if v.state != "disabled" {
            let t = tiers.entry(v.priority).or_default();
            t.0 += 1;
            t.1 += usize::from(v.state != "ready");
            t.2 += usize::from(v.state == "cooling_down");
        }
    }
    for (tier, (enabled, unusable, cooling)) in tiers {
        if enabled > 0 && unusable == enabled && cooling > 0 {
            out.push(Condition {
                key: format!("tier_cooling:{tier}"),
                event: "tier_cooling",
                summary: format!(
                    "every account of priority tier {tier} is cooling or unusable ({cooling} of {enabled} cooling)"
                ),
                account: None,
                tier: Some(tier),
                detail: None,
            });
        }
    }
    out
}
