//! The processes of one configuration, started by the driver: a `node` (server, plus the
//! worker when it runs in-process) and, for the HTTP configuration, an `http-worker`.

use clap::ValueEnum;

use crate::child::Child;
use crate::handler::{HandlerKind, WorkerArgs};
use crate::store::{FreshStore, StoreKind};

/// Where the worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkerMode {
    /// Inside the server's process, on the store directly (`LocalBackend`).
    InProcess,
    /// In its own process, over the HTTP worker protocol (`HttpBackend`).
    Http,
}

/// The `system` of a configuration: `longrun-sqlite`, `longrun-postgres`,
/// `longrun-postgres-http` (the HTTP worker), ...
pub fn system(store: StoreKind, worker: Option<WorkerMode>) -> String {
    match worker {
        Some(WorkerMode::Http) => format!("longrun-{}-http", store.as_str()),
        _ => format!("longrun-{}", store.as_str()),
    }
}

/// The running processes of one configuration.
pub struct Cluster {
    node: Child,
    worker: Option<Child>,
    /// The server's base URL.
    pub base_url: String,
}

impl Cluster {
    /// Starts the server on `store` and, unless `worker` is `None`, a worker that waits for
    /// [`Cluster::start_worker`]. Returns once every process is ready.
    pub async fn start(
        store: &FreshStore,
        pg_max_connections: u32,
        worker: Option<(WorkerMode, WorkerArgs)>,
        handler: HandlerKind,
    ) -> anyhow::Result<Self> {
        let handler = handler
            .to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_owned();
        let in_process = if matches!(worker, Some((WorkerMode::InProcess, _))) {
            "in-process"
        } else {
            "none"
        };
        let mut node_args = vec![
            "node".into(),
            "--database".into(),
            store.url.clone(),
            "--pg-max-connections".into(),
            pg_max_connections.to_string(),
            "--worker".into(),
            in_process.into(),
            "--handler".into(),
            handler.clone(),
        ];
        if let Some((_, worker_args)) = worker {
            node_args.extend(worker_args.flags());
        }
        let mut node = Child::spawn("server", &node_args)?;
        let base_url = node.expect("ready").await?;
        let worker = match worker {
            Some((WorkerMode::Http, worker_args)) => {
                let mut worker_flags = vec![
                    "http-worker".into(),
                    "--server".into(),
                    base_url.clone(),
                    "--handler".into(),
                    handler,
                ];
                worker_flags.extend(worker_args.flags());
                let mut child = Child::spawn("worker", &worker_flags)?;
                child.expect("ready").await?;
                Some(child)
            }
            _ => None,
        };
        Ok(Self {
            node,
            worker,
            base_url,
        })
    }

    fn worker(&mut self) -> &mut Child {
        self.worker.as_mut().unwrap_or(&mut self.node)
    }

    /// Tells the worker to start consuming (does not wait for it).
    pub async fn start_worker(&mut self) -> anyhow::Result<()> {
        self.worker().send("start").await
    }

    /// Waits until the worker says it started.
    pub async fn worker_started(&mut self) -> anyhow::Result<()> {
        self.worker().expect("started").await.map(drop)
    }

    /// Stops the worker process (if separate), then the server.
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(worker) = self.worker {
            worker.stop().await?;
        }
        self.node.stop().await
    }
}
