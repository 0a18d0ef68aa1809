//! A typed HTTP client for the longrun API: one method per route, with the request and
//! response bodies of [`longrun_core::wire`] and the canonical [`longrun_core::Operation`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), longrun_client::ClientError> {
//! use longrun_client::Client;
//! use longrun_core::wire::SubmitRequest;
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let op = client
//!     .submit(&SubmitRequest { name: "reports.render".into(), ..Default::default() }, None)
//!     .await?;
//! let op = client.wait(op.id, op.version, 30).await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod events;
mod sse;

pub use client::{Client, ListParams, ResultState};
pub use error::{ClientError, Problem};
pub use events::EventStream;
