use super::watch::from_views;
use super::*;
use crate::account::NewAccount;
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::view::AccountView;

async fn view(name: &str, priority: i32, state: &str) -> AccountView {
    let store = MemoryStore::default();
    let a = store
        .insert_account(NewAccount {
            priority,
            ..NewAccount::api_key(name.into(), "k".into())
        })
        .await
        .unwrap();
    let mut v = AccountView::stored(&a);
    v.state = match state {
        "ready" => "ready",
        "cooling_down" => "cooling_down",
        "needs_reauth" => "needs_reauth",
        "refresh_backoff" => "refresh_backoff",
        "banned" => "banned",
        _ => "disabled",
    };
    v.id = i64::from(priority) * 100 + i64::try_from(name.len()).unwrap();
    v
}

fn config() -> AlertsConfig {
    AlertsConfig {
        webhooks: vec!["http://127.0.0.1:9/hook".into()],
        secret: Some("s".into()),
        ..AlertsConfig::default()
    }
}

#[tokio::test]
async fn each_condition_fires_once_per_episode() {
    let alerts = Alerts::new(config(), reqwest::Client::new());
    let mut rx = alerts.take_receiver().unwrap();
    let bad = vec![
        view("a", 0, "needs_reauth").await,
        view("bb", 0, "ready").await,
    ];
    let fired = alerts.observe(from_views(&bad), "t".into(), "r");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].event, "account_needs_login");
    assert_eq!(fired[0].account.as_ref().unwrap().name, "a");
    assert_eq!(rx.try_recv().unwrap().id, fired[0].id);
    // Still the same episode: nothing new, however often it is checked.
    for _ in 0..5 {
        assert!(alerts.observe(from_views(&bad), "t".into(), "r").is_empty());
    }
    assert!(rx.try_recv().is_err());
    // It ends, then comes back: a new episode, a new alert.
    let good = vec![view("a", 0, "ready").await];
    assert!(alerts
        .observe(from_views(&good), "t".into(), "r")
        .is_empty());
    let again = alerts.observe(from_views(&bad), "t".into(), "r");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, fired[0].id);
}

#[tokio::test]
async fn a_tier_alerts_when_all_its_enabled_accounts_cool_and_bans_and_refresh_failures_alert() {
    let views = vec![
        view("a", 0, "cooling_down").await,
        view("bb", 0, "needs_reauth").await,
        view("ccc", 0, "disabled").await,
        view("d", 1, "cooling_down").await,
        view("ee", 1, "ready").await,
        view("f", 2, "banned").await,
        view("gg", 3, "refresh_backoff").await,
    ];
    let mut events: Vec<(&str, Option<i32>)> = from_views(&views)
        .iter()
        .map(|c| (c.event, c.tier))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("account_banned", None),
            ("account_needs_login", None),
            ("refresh_failing", None),
            ("tier_cooling", Some(0)),
        ],
        "tier 1 still has a ready account; a disabled account does not count"
    );
}

#[tokio::test]
async fn a_full_queue_drops_alerts_instead_of_blocking() {
    let alerts = Alerts::new(
        AlertsConfig {
            max_queue: 2,
            ..config()
        },
        reqwest::Client::new(),
    );
    let mut rx = alerts.take_receiver().unwrap();
    let mut views = Vec::new();
    for n in 1..=5 {
        views.push(view(&"x".repeat(n), 0, "needs_reauth").await);
    }
    assert_eq!(alerts.observe(from_views(&views), "t".into(), "r").len(), 5);
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_ok());
    assert!(rx.try_recv().is_err(), "bounded");
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        webhook::sign(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a key longer than the block is hashed first.
    assert_eq!(
        webhook::sign(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}
