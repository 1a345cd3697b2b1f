//! The `ember creds add|list|revoke` commands and how every other `ember`
//! command finds the key it signs with: `--access-key/--secret-key`, else
//! `AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY`, else the first key of the
//! default account in emberd's credentials file.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::auth::creds::{self, CredError, DEFAULT_ACCOUNT};
use crate::auth::sigv4::Credentials;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CredsCmd {
    /// Create an access key (printed once) for an account (default 000000000000).
    Add {
        /// 12-digit account id: keys of different accounts see different functions.
        #[arg(long)]
        account: Option<String>,
        /// An operator key: sees every account in `/metrics` and the
        /// `/ember/*` listings (the key emberd creates first is one).
        #[arg(long)]
        operator: bool,
    },
    /// List access key ids and their accounts (never the secrets).
    List,
    /// Delete an access key; requests signed with it are refused at once.
    Revoke { access_key_id: String },
}

/// The credentials file: `--credentials`, else `$EMBER_DATA_DIR` or the
/// default data directory + `credentials.json`.
pub fn credentials_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let data = std::env::var_os("EMBER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::daemon::default_data_dir);
    data.join(creds::FILE_NAME)
}

/// The key to sign with; `None` when nothing is configured (requests then go
/// unsigned and emberd answers 403, which says what is missing).
pub fn signing_credentials(
    access_key: Option<String>,
    secret_key: Option<String>,
    file: &Path,
) -> Option<Credentials> {
    if let (Some(a), Some(s)) = (access_key, secret_key) {
        return Some(Credentials {
            access_key_id: a,
            secret_access_key: s,
        });
    }
    let keys = creds::list(file).ok()?;
    keys.iter()
        .find(|k| k.account == DEFAULT_ACCOUNT)
        .or(keys.first())
        .map(|k| k.credentials())
}

/// Runs one `ember creds` command on `file`.
pub fn run(cmd: CredsCmd, file: &Path, as_json: bool) -> Result<(), CredError> {
    match cmd {
        CredsCmd::Add { account, operator } => {
            let k = creds::add(file, account.as_deref(), operator)?;
            if as_json {
                println!(
                    "{}",
                    json!({"AccessKeyId": k.access_key_id, "SecretAccessKey": k.secret_access_key, "Account": k.account, "Operator": k.operator})
                );
            } else {
                println!("account               {}", k.account);
                if k.operator {
                    println!("operator              yes");
                }
                println!("AWS_ACCESS_KEY_ID     {}", k.access_key_id);
                println!("AWS_SECRET_ACCESS_KEY {}", k.secret_access_key);
            }
        }
        CredsCmd::List => {
            let keys = creds::list(file)?;
            if as_json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| json!({"AccessKeyId": k.access_key_id, "Account": k.account, "Created": k.created, "Operator": k.operator}))
                    .collect();
                println!("{}", json!({ "AccessKeys": v }));
            } else {
                println!(
                    "{:<22} {:<14} {:<9} CREATED",
                    "ACCESS KEY ID", "ACCOUNT", "OPERATOR"
                );
                for k in keys {
                    let op = if k.operator { "yes" } else { "" };
                    println!(
                        "{:<22} {:<14} {:<9} {}",
                        k.access_key_id, k.account, op, k.created
                    );
                }
            }
        }
        CredsCmd::Revoke { access_key_id } => {
            let k = creds::revoke(file, &access_key_id)?;
            if !as_json {
                println!("revoked {} (account {})", k.access_key_id, k.account);
            }
        }
    }
    Ok(())
}
