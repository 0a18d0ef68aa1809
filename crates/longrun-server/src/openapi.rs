//! The OpenAPI 3.1 document: paths come from the `#[utoipa::path]` of each handler (collected by
//! [`crate::routes::api`]); this module adds the document's header and the named schemas of
//! the three seed views, so a generated SDK has the seeds' models even where a response is
//! "one of the views".

use std::borrow::Cow;

use longrun_core::views::{
    AsyncOperation, AsyncTask, AsyncTaskStatusEnum, GetStatusOfAnAsyncTask, View,
};
use longrun_core::{Operation, OperationError, Status};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{OneOfBuilder, Ref, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::error::Problem;

/// The document's header and the components every SDK needs.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "longrun",
        description = "Durable asynchronous operations: submit work (`202` + the operation), follow it \
                       (poll, long-poll, Server-Sent Events), and run it on workers that claim it under \
                       leases. Errors are RFC 9457 problem documents (`application/problem+json`)."
    ),
    components(schemas(
        Operation,
        OperationView,
        AsyncOperation,
        Status,
        OperationError,
        GetStatusOfAnAsyncTask,
        AsyncTask,
        AsyncTaskStatusEnum,
        View,
        Problem
    )),
    tags(
        (name = "operations", description = "Submit, follow, cancel and delete operations."),
        (name = "workers", description = "The worker protocol: claim, heartbeat, report."),
        (name = "health", description = "Liveness and readiness probes."),
    )
)]
pub struct ApiDoc;

/// An operation in the rendering chosen with `?view=`: the canonical `Operation` (default),
/// `AsyncOperation`, `GetStatusOfAnAsyncTask` or `AsyncTask`. Only a schema; the server renders
/// with [`View::render`].
#[derive(Debug)]
pub struct OperationView;

impl PartialSchema for OperationView {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name(Operation::name()))
            .item(Ref::from_schema_name(AsyncOperation::name()))
            .item(Ref::from_schema_name(GetStatusOfAnAsyncTask::name()))
            .item(Ref::from_schema_name(AsyncTask::name()))
            .description(Some("The operation in the rendering chosen with `?view=`."))
            .into()
    }
}

impl ToSchema for OperationView {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OperationView")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        fn add<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            schemas.push((T::name().into_owned(), T::schema()));
            T::schemas(schemas);
        }
        add::<Operation>(schemas);
        add::<AsyncOperation>(schemas);
        add::<GetStatusOfAnAsyncTask>(schemas);
        add::<AsyncTask>(schemas);
    }
}
