//! `GET /v1/operations/{id}/events` as a stream of operations.

use std::collections::VecDeque;

use futures::stream::{BoxStream, StreamExt};
use longrun_core::Operation;

use crate::ClientError;
use crate::sse::{SseEvent, SseParser};

/// The operation as it is after each change, ending after the terminal one (when the server
/// closes the stream).
pub type EventStream = BoxStream<'static, Result<Operation, ClientError>>;

/// Parses an event-stream response into operations.
pub(crate) fn operations(response: reqwest::Response) -> EventStream {
    let state = (
        response.bytes_stream().boxed(),
        SseParser::default(),
        VecDeque::<SseEvent>::new(),
    );
    futures::stream::unfold(Some(state), |state| async move {
        let (mut bytes, mut parser, mut pending) = state?;
        loop {
            if let Some(event) = pending.pop_front() {
                let item = serde_json::from_str::<Operation>(&event.data).map_err(|source| {
                    ClientError::Decode {
                        what: "an operation event",
                        source,
                    }
                });
                return Some((item, Some((bytes, parser, pending))));
            }
            match bytes.next().await? {
                Ok(chunk) => pending.extend(parser.push(&chunk)),
                Err(e) => return Some((Err(ClientError::Transport(e)), None)),
            }
        }
    })
    .boxed()
}
