//! `longrun`: the server, a worker for any language, and a client for the API, in one binary.

mod commands;
mod output;

/// mimalloc: a server allocates and frees small buffers on every request from every thread;
/// glibc's allocator spent about a tenth of the CPU of a status read and contended on its
/// arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable asynchronous operations: submit slow work, follow its progress, run it on workers.
#[derive(Debug, Parser)]
#[command(name = "longrun", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API, the queue and the scheduler (and optional in-process handlers).
    Serve(commands::serve::ServeArgs),
    /// Creates, lists and revokes API keys (directly in the database).
    Keys(commands::keys::KeysArgs),
    /// Applies the database migrations and exits.
    Migrate(commands::serve::MigrateArgs),
    /// Runs a worker that executes operations with shell commands, against a server.
    Worker(commands::worker::WorkerArgs),
    /// Submits an operation.
    Submit(commands::ops::SubmitArgs),
    /// Shows an operation.
    Get(commands::ops::GetArgs),
    /// Lists operations, newest first.
    List(commands::ops::ListArgs),
    /// Cancels an operation.
    Cancel(commands::ops::IdArgs),
    /// Deletes a finished operation.
    Delete(commands::ops::IdArgs),
    /// Follows an operation with a live progress bar until it finishes; exit status 0 when it
    /// succeeded, 1 when it failed, 3 when it was cancelled.
    Wait(commands::ops::IdArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => commands::serve::serve(args).await,
        Command::Keys(args) => commands::keys::run(args).await,
        Command::Migrate(args) => commands::serve::migrate(args).await,
        Command::Worker(args) => commands::worker::run(args).await,
        Command::Submit(args) => commands::ops::submit(args).await,
        Command::Get(args) => commands::ops::get(args).await,
        Command::List(args) => commands::ops::list(args).await,
        Command::Cancel(args) => commands::ops::cancel(args).await,
        Command::Delete(args) => commands::ops::delete(args).await,
        Command::Wait(args) => commands::ops::wait(args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
