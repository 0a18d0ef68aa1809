//! `longrun keys`: API keys, managed directly in the database (so the first key can be made
//! before any server runs with authentication).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use longrun_core::{ApiKey, NewKey, Role, Token};
use longrun_server::ServerConfig;
use uuid::Uuid;

use super::serve::DatabaseArgs;
use crate::output;

/// Arguments of `longrun keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Makes a key and prints it once (only its hash is stored).
    Create(CreateArgs),
    /// Lists keys (never their secrets).
    List,
    /// Revokes a key; it stops working at once.
    Revoke {
        /// The key id (`longrun keys list`), or the whole key.
        key: String,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Tenant id recorded as `customer` on what the key submits.
    #[arg(long)]
    customer: i64,
    /// Tenant name.
    #[arg(long)]
    customer_name: String,
    /// User id recorded as `createdBy`.
    #[arg(long)]
    user: i64,
    /// User name recorded as `createdByName`.
    #[arg(long)]
    user_name: String,
    /// submitter, worker or admin.
    #[arg(long)]
    role: Role,
    /// Worker keys: only operations with this name (repeatable; default any).
    #[arg(long = "name")]
    names: Vec<String>,
    /// Worker keys: only operations in this queue (repeatable; default any).
    #[arg(long = "queue")]
    queues: Vec<String>,
}

/// `longrun keys ...`.
pub async fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let store = args.database.open().await?;
    match args.command {
        KeysCommand::Create(create) => {
            let token = Token::generate();
            let new = NewKey {
                customer: create.customer,
                customer_name: create.customer_name,
                user: create.user,
                user_name: create.user_name,
                role: create.role,
                names: create.names,
                queues: create.queues,
            };
            let key = store.create_key(new, &token).await?;
            if args.json {
                output::json(&serde_json::json!({ "key": token.to_string(), "apiKey": key }));
            } else {
                println!("{token}");
                eprintln!(
                    "{} key {} for customer {} ({}); shown once, keep it secret",
                    key.role, key.id, key.customer, key.user_name
                );
            }
        }
        KeysCommand::List => {
            let keys = store.list_keys().await?;
            if args.json {
                output::json(&keys);
            } else {
                print_keys(&keys);
            }
        }
        KeysCommand::Revoke { key } => {
            let id = Token::parse(&key)
                .map(|t| t.id)
                .map_or_else(|| Uuid::parse_str(&key), Ok)?;
            let key = store.revoke_key(id).await?;
            if args.json {
                output::json(&key);
            } else {
                println!("revoked {}", key.id);
                eprintln!(
                    "servers refuse it within their --key-cache-secs ({} s unless set otherwise)",
                    ServerConfig::default().key_cache_ttl.as_secs_f64()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_keys(keys: &[ApiKey]) {
    println!(
        "{:<32} {:<9} {:>8} {:<16} {:<7} CREATED",
        "ID", "ROLE", "CUSTOMER", "USER", "STATE"
    );
    for key in keys {
        let state = if key.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<32} {:<9} {:>8} {:<16} {:<7} {}",
            key.id.simple(),
            key.role,
            key.customer,
            key.user_name,
            state,
            output::timestamp(key.created_at)
        );
    }
}
