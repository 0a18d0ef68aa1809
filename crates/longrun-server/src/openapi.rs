//! The OpenAPI 3.1 document: paths come from the `#[utoipa::path]` of each handler (collected by
//! [`crate::routes::api`]); this module adds the document's header, the named schemas of
//! the three seed views, so a generated SDK has the seeds' models even where a response is
//! "one of the views" ([`close_seed_views`] makes that "one" exact), the schema of an event of
//! an event stream, the limits of the server's configuration ([`declare_limits`]), and
//! ([`secure`]) the bearer scheme with the `401`, `403` and `429` answers every `/v1` route can
//! give.

use std::borrow::Cow;

use longrun_core::views::{
    AsyncOperation, AsyncTask, AsyncTaskStatusEnum, GetStatusOfAnAsyncTask, View,
};
use longrun_core::wire::{
    ClaimRequest, HeartbeatRequest, OperationList, SubmittedId, SubmittedIds, add_schema,
};
use longrun_core::{Operation, OperationError, Status};
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation as PathOperation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Ref, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Object, RefOr, Type};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::config::ServerConfig;
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

/// Declares a schema-only type whose schema is a `oneOf` of `items`, and which registers the
/// named `components` its items refer to.
macro_rules! one_of_schema {
    (
        $(#[$attr:meta])*
        $name:ident, $description:literal,
        items: [$($item:expr),+ $(,)?],
        components: [$($component:ty),+ $(,)?] $(,)?
    ) => {
        $(#[$attr])*
        #[derive(Debug)]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                OneOfBuilder::new()
                    $(.item($item))+
                    .description(Some($description))
                    .into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                $(add_schema::<$component>(schemas);)+
            }
        }
    };
}

/// A reference to the named schema of `T`.
fn named<T: ToSchema>() -> Ref {
    Ref::from_schema_name(T::name())
}

one_of_schema! {
    /// An operation in the rendering chosen with `?view=`: the canonical `Operation` (default),
    /// `AsyncOperation`, `GetStatusOfAnAsyncTask` or `AsyncTask`. Only a schema; the server
    /// renders with [`View::render`].
    OperationView, "The operation in the rendering chosen with `?view=`.",
    items: [
        named::<Operation>(),
        named::<AsyncOperation>(),
        named::<GetStatusOfAnAsyncTask>(),
        named::<AsyncTask>(),
    ],
    components: [Operation, AsyncOperation, GetStatusOfAnAsyncTask, AsyncTask],
}

one_of_schema! {
    /// The answer to a submit: the operation in the requested view, or with
    /// `Prefer: return=minimal` only its id. Only a schema.
    OperationSubmitted,
    "The operation in the requested view; with `Prefer: return=minimal`, only its id.",
    items: [named::<OperationView>(), named::<SubmittedId>()],
    components: [OperationView, SubmittedId],
}

one_of_schema! {
    /// The answer to a batch submit: the operations in the requested view, or with
    /// `Prefer: return=minimal` only their ids. Only a schema.
    BatchSubmitted,
    "The operations in request order, in the requested view; with \
     `Prefer: return=minimal`, only their ids.",
    items: [OperationList::<OperationView>::schema(), named::<SubmittedIds>()],
    components: [OperationView, SubmittedIds],
}

/// Closes the schemas of the three seed views (`additionalProperties: false`): each has exactly
/// its seed's fields (the core's view tests say so). That is also what makes
/// [`OperationView`]'s `oneOf` exclusive, since a canonical `Operation` has members none of
/// them has. `Operation` itself stays open, so it can gain fields.
pub fn close_seed_views(doc: &mut utoipa::openapi::OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in [
        AsyncOperation::name(),
        GetStatusOfAnAsyncTask::name(),
        AsyncTask::name(),
    ] {
        if let Some(RefOr::T(Schema::Object(schema))) = components.schemas.get_mut(name.as_ref()) {
            schema.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
    }
}

/// Declares the limits `config` sets where the schemas carry the defaults: the largest `max`,
/// `leaseSecs` and `waitSecs` of a claim, `leaseSecs` of a heartbeat and `limit` of a listing.
pub fn declare_limits(doc: &mut utoipa::openapi::OpenApi, config: &ServerConfig) {
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    for (schema, property, max) in [
        (ClaimRequest::name(), "max", config.max_claim),
        (ClaimRequest::name(), "leaseSecs", config.max_lease_secs),
        (ClaimRequest::name(), "waitSecs", config.max_wait_secs),
        (HeartbeatRequest::name(), "leaseSecs", config.max_lease_secs),
    ] {
        if let Some(RefOr::T(Schema::Object(schema))) = schemas.get_mut(schema.as_ref())
            && let Some(RefOr::T(Schema::Object(property))) = schema.properties.get_mut(property)
        {
            property.maximum = Some(max.into());
        }
    }
    let list = doc
        .paths
        .paths
        .get_mut("/v1/operations")
        .and_then(|item| item.get.as_mut());
    for parameter in list
        .into_iter()
        .flat_map(|list| list.parameters.iter_mut().flatten())
    {
        if let RefOr::T(parameter) = parameter
            && parameter.name == "limit"
            && let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut()
        {
            schema.maximum = Some(config.max_list_limit.into());
        }
    }
}

/// One event of an operation's event stream (`GET /v1/operations/{id}/events`), as an SSE
/// parser reads it. OpenAPI 3.1 cannot describe the items of a stream; as is usual (and as
/// tools such as schemathesis read it), the `text/event-stream` schema describes one event.
#[derive(Debug)]
pub struct OperationEvent;

impl PartialSchema for OperationEvent {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .description(Some(
                "One Server-Sent Event: `id` the operation's version, `event` its status, \
                 `data` the operation in the requested view, as JSON.",
            ))
            .property(
                "id",
                string().pattern(Some("^[0-9]+$")).description(Some(
                    "The operation's version (send it back as `Last-Event-ID`).",
                )),
            )
            .property("event", Ref::from_schema_name(Status::name()))
            .property(
                "data",
                string()
                    .content_media_type("application/json")
                    .content_schema(Some(Ref::from_schema_name(OperationView::name())))
                    .description(Some("The operation in the requested view, as JSON.")),
            )
            .required("id")
            .required("event")
            .required("data")
            .into()
    }
}

impl ToSchema for OperationEvent {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OperationEvent")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Status::name().into_owned(), Status::schema()));
        schemas.push((OperationView::name().into_owned(), OperationView::schema()));
        OperationView::schemas(schemas);
    }
}

/// The security scheme's name.
const BEARER: &str = "bearer";

/// Adds the bearer security scheme and, on every `/v1` operation, the requirement and the
/// `401`, `403` and `429` problems (the health probes and the documentation stay public).
pub fn secure(doc: &mut utoipa::openapi::OpenApi) {
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("lr_<32 hex id>_<64 hex secret>")
        .description(Some(
            "An API key from `longrun keys create`. Required once any key exists; until then \
             the server runs open and ignores it.",
        ))
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            guard(operation);
        }
    }
}

fn guard(operation: &mut PathOperation) {
    operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    let integer = || Header::new(Object::with_type(Type::Integer));
    for (status, response) in [
        (
            "401",
            problem(
                "Authentication is on and the API key is missing, malformed, unknown or revoked.",
            )
            .header("WWW-Authenticate", Header::default()),
        ),
        (
            "403",
            problem(
                "The key's role may not do this (a worker reading operations, a submitter using \
                 the worker protocol, a worker submitting a root operation or claiming names or \
                 queues outside its key).",
            ),
        ),
        (
            "429",
            problem("Over the key's rate limit.").header("Retry-After", {
                let mut header = integer();
                header.description = Some("Seconds until a request will be accepted.".into());
                header
            }),
        ),
    ] {
        operation
            .responses
            .responses
            .insert(status.to_owned(), RefOr::T(response.build()));
    }
}

/// A response whose body is a problem document.
fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        Content::new(Some(Ref::from_schema_name(Problem::name()))),
    )
}
