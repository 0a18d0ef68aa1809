//! Client commands: submit, get, list, cancel, delete, wait.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use longrun_client::{Client, ListParams};
use longrun_core::{Operation, Status, views::View, wire::SubmitRequest};
use serde_json::Value;
use uuid::Uuid;

use super::ServerArgs;
use crate::output;

/// Arguments of `longrun submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Task name, e.g. reports.render.
    name: String,
    /// Positional arguments, a JSON array.
    #[arg(long, value_parser = json_value)]
    args: Option<Value>,
    /// Keyword arguments, a JSON object.
    #[arg(long, value_parser = json_value)]
    kwargs: Option<Value>,
    /// Free JSON kept with the operation.
    #[arg(long, value_parser = json_value)]
    content: Option<Value>,
    /// Queue.
    #[arg(long)]
    queue: Option<String>,
    /// Priority (higher runs first).
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// Retries after the first attempt.
    #[arg(long)]
    max_retries: Option<u32>,
    /// Parent operation id.
    #[arg(long)]
    parent: Option<Uuid>,
    /// Idempotency key: repeating the same submit returns the same operation.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow it until it finishes (as `longrun wait`).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Arguments of `longrun get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Operation id.
    id: Uuid,
    /// Rendering: operation, async-operation, task-status or async-task (implies --json).
    #[arg(long)]
    view: Option<View>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Arguments of `longrun list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this status.
    #[arg(long)]
    status: Option<Status>,
    /// Only this task name.
    #[arg(long)]
    name: Option<String>,
    /// Only children of this operation.
    #[arg(long)]
    parent: Option<Uuid>,
    /// Only operations of this chain.
    #[arg(long)]
    root: Option<Uuid>,
    /// Page size (at most 1000).
    #[arg(long)]
    limit: Option<u32>,
    /// The cursor printed with the previous page.
    #[arg(long)]
    cursor: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Arguments of the commands that take one operation id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Operation id.
    id: Uuid,
    #[command(flatten)]
    server: ServerArgs,
}

fn json_value(s: &str) -> Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

/// `longrun submit`.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let request = SubmitRequest {
        name: args.name,
        args: args.args,
        kwargs: args.kwargs,
        content: args.content,
        queue: args.queue,
        priority: args.priority,
        max_retries: args.max_retries,
        parent_id: args.parent,
        ..SubmitRequest::default()
    };
    let op = client
        .submit(&request, args.idempotency_key.as_deref())
        .await?;
    if args.wait {
        return follow(&client, op, args.server.json).await;
    }
    output::operation(&op, args.server.json);
    Ok(ExitCode::SUCCESS)
}

/// `longrun get`.
pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    match args.view {
        Some(view) => output::json(&client.get_view(args.id, view).await?),
        None => output::operation(&client.get(args.id).await?, args.server.json),
    }
    Ok(ExitCode::SUCCESS)
}

/// `longrun list`.
pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let params = ListParams {
        status: args.status,
        name: args.name,
        parent_id: args.parent,
        root_id: args.root,
        limit: args.limit,
        cursor: args.cursor,
    };
    let page = client.list(&params).await?;
    if args.server.json {
        output::json(&page);
    } else {
        output::table(&page.operations);
        if let Some(cursor) = &page.next_cursor {
            println!("more: --cursor {cursor}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `longrun cancel`.
pub async fn cancel(args: IdArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let op = client.cancel(args.id).await?;
    if !args.server.json && op.status == Status::Running {
        eprintln!("cancellation requested: the worker stops at its next heartbeat");
    }
    output::operation(&op, args.server.json);
    Ok(ExitCode::SUCCESS)
}

/// `longrun delete`.
pub async fn delete(args: IdArgs) -> anyhow::Result<ExitCode> {
    args.server.client()?.delete(args.id).await?;
    if !args.server.json {
        println!("deleted {}", args.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `longrun wait`.
pub async fn wait(args: IdArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client()?;
    let op = client.get(args.id).await?;
    follow(&client, op, args.server.json).await
}

/// Long-polls `op` until it is terminal, drawing a progress bar on a terminal (nothing with
/// `--json`, which prints the final operation).
async fn follow(client: &Client, mut op: Operation, json: bool) -> anyhow::Result<ExitCode> {
    let bar = (!json).then(|| output::ProgressBar::new(&op));
    while !op.is_terminal() {
        if let Some(changed) = client
            .wait(op.id, op.version, 30)
            .await
            .context("waiting for the operation")?
        {
            op = changed;
        }
        if let Some(bar) = &bar {
            bar.update(&op);
        }
    }
    if let Some(bar) = bar {
        bar.finish(&op);
    }
    output::operation(&op, json);
    Ok(match op.status {
        Status::Succeeded => ExitCode::SUCCESS,
        Status::Cancelled => ExitCode::from(3),
        _ => ExitCode::from(1),
    })
}
