//! `accounts …`: one short function per subcommand.

use crate::account::NewAccount;
use crate::store::Patch;
use crate::store::{self, AccountUpdate, SharedStore};
use crate::view::AccountView;

use super::AccountsCommand;

pub(super) async fn run(cmd: AccountsCommand, store: SharedStore) -> anyhow::Result<()> {
    match cmd {
        AccountsCommand::AddKey {
            name,
            key,
            priority,
            weight,
        } => add_key(&store, name, key, priority, weight).await,
        AccountsCommand::List { json } => list(&store, json).await,
        AccountsCommand::Remove { account } => remove(&store, &account).await,
        AccountsCommand::Disable { account } => disable(&store, &account).await,
        AccountsCommand::Set {
            account,
            name,
            priority,
            weight,
            max_concurrency,
        } => {
            let update = AccountUpdate {
                name,
                priority,
                weight,
                max_concurrency: match max_concurrency {
                    None => Patch::Keep,
                    Some(0) => Patch::Clear,
                    Some(n) => Patch::Set(n),
                },
                ..Default::default()
            };
            set(&store, &account, update).await
        }
        AccountsCommand::Enable { account } => enable(&store, &account).await,
        AccountsCommand::Import { paths, name } => import(&store, &paths, name.as_deref()).await,
    }
}

async fn add_key(
    store: &SharedStore,
    name: String,
    key: String,
    priority: i32,
    weight: u32,
) -> anyhow::Result<()> {
    let key = if key == "-" {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        s.trim().to_string()
    } else {
        key
    };
    anyhow::ensure!(!key.is_empty(), "the API key is empty");
    anyhow::ensure!(weight > 0, "--weight must be at least 1");
    let a = store
        .insert_account(NewAccount {
            priority,
            weight,
            ..NewAccount::api_key(name, key)
        })
        .await?;
    println!("Added API-key account {} (id {})", a.name, a.id);
    Ok(())
}

async fn list(store: &SharedStore, json: bool) -> anyhow::Result<()> {
    let accounts = store.list_accounts().await?;
    let views: Vec<AccountView> = accounts.iter().map(AccountView::stored).collect();
    if json {
        let body = serde_json::json!({ "accounts": views });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    if views.is_empty() {
        println!("No accounts. Add one with `claude-gateway accounts add-key --name NAME KEY`, `claude-gateway login` or `claude-gateway accounts import PATH`.");
        return Ok(());
    }
    println!(
        "  ID  {:<32} {:<8} {:<13} {:<21} EMAIL",
        "NAME", "KIND", "STATE", "EXPIRES"
    );
    for v in views {
        println!(
            "{:>4}  {:<32} {:<8} {:<13} {:<21} {}",
            v.id,
            v.name,
            v.kind,
            v.state,
            v.expires_at.as_deref().unwrap_or("-"),
            v.email.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn remove(store: &SharedStore, account: &str) -> anyhow::Result<()> {
    let a = store::find_account(store.as_ref(), account).await?;
    store.remove_account(a.id).await?;
    println!("Removed account {} (id {})", a.name, a.id);
    Ok(())
}

async fn disable(store: &SharedStore, account: &str) -> anyhow::Result<()> {
    let a = store::find_account(store.as_ref(), account).await?;
    let update = AccountUpdate {
        disabled: Some(true),
        ..Default::default()
    };
    store.update_account(a.id, a.version, update).await?;
    println!("Disabled account {} (id {})", a.name, a.id);
    Ok(())
}

async fn set(store: &SharedStore, account: &str, update: AccountUpdate) -> anyhow::Result<()> {
    anyhow::ensure!(update.weight != Some(0), "--weight must be at least 1");
    let a = store::find_account(store.as_ref(), account).await?;
    let a = store.update_account(a.id, a.version, update).await?;
    println!(
        "Account {} (id {}): priority {}, weight {}, max concurrency {}",
        a.name,
        a.id,
        a.priority,
        a.weight,
        a.max_concurrency
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unlimited".into())
    );
    Ok(())
}

async fn enable(store: &SharedStore, account: &str) -> anyhow::Result<()> {
    let a = store::find_account(store.as_ref(), account).await?;
    let update = AccountUpdate {
        disabled: Some(false),
        needs_reauth: Patch::Clear,
        banned: Patch::Clear,
        ..Default::default()
    };
    store.update_account(a.id, a.version, update).await?;
    println!("Enabled account {} (id {})", a.name, a.id);
    Ok(())
}

async fn import(
    store: &SharedStore,
    paths: &[std::path::PathBuf],
    name: Option<&str>,
) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for p in paths {
        let (found, skipped) = crate::import::read_path(p)?;
        for s in skipped {
            println!("skipped {s}");
        }
        all.extend(found);
    }
    anyhow::ensure!(
        !all.is_empty(),
        "no Claude credentials found in {}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(
        name.is_none() || all.len() == 1,
        "--name needs exactly one credential, found {}",
        all.len()
    );
    let accounts: Vec<_> = all.iter().map(|c| c.account.clone()).collect();
    let saved = crate::store::upsert_oauth(store.as_ref(), &accounts, name).await?;
    for (c, (a, saved)) in all.iter().zip(saved) {
        let kind = if c.account.credential.refresh_token.is_some() {
            "OAuth"
        } else {
            "setup-token"
        };
        println!(
            "{} {kind} account {} (id {}) from {}",
            if saved == crate::store::Saved::Created {
                "Imported"
            } else {
                "Updated"
            },
            a.name,
            a.id,
            c.source.display()
        );
    }
    Ok(())
}
