//! HTTP tests of the longrun API against a real SQLite store in a temporary directory: every
//! route, view and error case, long-poll, Server-Sent Events, the worker protocol, the
//! maintenance loop, the OpenAPI document, and graceful shutdown of a real server; then API
//! keys, roles, tenant isolation, rate limits and input limits, and a property test over
//! arbitrary request bodies.

mod support {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, Method, Request, StatusCode};
    use http_body_util::BodyExt;
    use longrun_core::{NewKey, Role, Store, SystemClock, Token};
    use longrun_server::{AppState, ServerConfig, router};
    use longrun_sqlite::SqliteStore;
    use serde_json::{Value, json};
    use tempfile::TempDir;
    use tower::ServiceExt;

    /// The `Host` every test request carries, so absolute URLs are predictable.
    pub const HOST: &str = "longrun.test";

    /// The router over a fresh SQLite database.
    pub struct TestApp {
        pub router: Router,
        pub store: Arc<SqliteStore>,
        pub config: Arc<ServerConfig>,
        _dir: TempDir,
    }

    impl TestApp {
        pub async fn new() -> Self {
            Self::with(ServerConfig::default()).await
        }

        pub async fn with(config: ServerConfig) -> Self {
            Self::wrapping(config, |store| store).await
        }

        /// The router over `wrap` of the SQLite store (to slow it down, say).
        pub async fn wrapping(
            config: ServerConfig,
            wrap: impl FnOnce(Arc<SqliteStore>) -> Arc<dyn Store>,
        ) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("longrun.db").display());
            let store = Arc::new(
                SqliteStore::open(&url, Arc::new(SystemClock))
                    .await
                    .unwrap(),
            );
            let config = Arc::new(config);
            let state = AppState {
                store: wrap(store.clone()),
                config: config.clone(),
            };
            Self {
                router: router(state),
                store,
                config,
                _dir: dir,
            }
        }

        pub fn state(&self) -> AppState {
            AppState {
                store: self.store.clone() as Arc<dyn Store>,
                config: self.config.clone(),
            }
        }

        pub async fn send(&self, request: Request<Body>) -> Reply {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                headers,
                body,
            }
        }

        pub async fn call(
            &self,
            method: Method,
            uri: &str,
            body: Option<Value>,
            headers: &[(&str, &str)],
        ) -> Reply {
            let mut builder = Request::builder()
                .method(method)
                .uri(uri)
                .header("host", HOST);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = match body {
                Some(body) => builder
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
                None => builder.body(Body::empty()).unwrap(),
            };
            self.send(request).await
        }

        pub async fn get(&self, uri: &str) -> Reply {
            self.call(Method::GET, uri, None, &[]).await
        }

        pub async fn post(&self, uri: &str, body: Value) -> Reply {
            self.call(Method::POST, uri, Some(body), &[]).await
        }

        /// Submits and returns the canonical operation (asserting `202`).
        pub async fn submit(&self, body: Value) -> Value {
            let reply = self.post("/v1/operations", body).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
            reply.json()
        }

        /// Submits an operation named `name` with defaults.
        pub async fn submit_named(&self, name: &str) -> Value {
            self.submit(json!({ "name": name })).await
        }

        /// Claims exactly one operation (of task `name`): returns (lease id, operation).
        pub async fn claim_one(&self, name: &str) -> (String, Value) {
            let reply = self
                .post(
                    "/v1/workers/claim",
                    json!({"worker": "w1", "names": [name], "max": 1, "leaseSecs": 60}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let leases = reply.json()["leases"].as_array().unwrap().clone();
            assert_eq!(leases.len(), 1, "expected one lease: {leases:?}");
            (
                leases[0]["leaseId"].as_str().unwrap().to_owned(),
                leases[0]["operation"].clone(),
            )
        }

        /// The canonical operation as it is now.
        pub async fn operation(&self, id: &str) -> Value {
            let reply = self.get(&format!("/v1/operations/{id}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            reply.json()
        }

        /// A new API key of `role` for customer `customer` and user `user` (named `user-N`),
        /// created in the store as `longrun keys create` does.
        pub async fn key(&self, customer: i64, user: i64, role: Role) -> Key {
            self.key_for(NewKey {
                customer,
                customer_name: format!("customer-{customer}"),
                user,
                user_name: format!("user-{user}"),
                role,
                names: vec![],
                queues: vec![],
            })
            .await
        }

        /// A new API key as described.
        pub async fn key_for(&self, key: NewKey) -> Key {
            let token = Token::generate();
            let stored = self.store.create_key(key, &token).await.unwrap();
            Key {
                id: stored.id,
                bearer: format!("Bearer {token}"),
            }
        }

        /// A request carrying `key`.
        pub async fn call_as(
            &self,
            key: &Key,
            method: Method,
            uri: &str,
            body: Option<Value>,
            headers: &[(&str, &str)],
        ) -> Reply {
            let mut all = vec![("authorization", key.bearer.as_str())];
            all.extend_from_slice(headers);
            self.call(method, uri, body, &all).await
        }

        /// `GET` with `key`.
        pub async fn get_as(&self, key: &Key, uri: &str) -> Reply {
            self.call_as(key, Method::GET, uri, None, &[]).await
        }

        /// `POST` with `key`.
        pub async fn post_as(&self, key: &Key, uri: &str, body: Value) -> Reply {
            self.call_as(key, Method::POST, uri, Some(body), &[]).await
        }

        /// Submits with `key` and returns the canonical operation (asserting `202`).
        pub async fn submit_as(&self, key: &Key, body: Value) -> Value {
            let reply = self.post_as(key, "/v1/operations", body).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
            reply.json()
        }

        /// Claims exactly one operation named `name` with `key`: (lease id, operation).
        pub async fn claim_one_as(&self, key: &Key, name: &str) -> (String, Value) {
            let body = json!({"worker": "w1", "names": [name], "max": 1, "leaseSecs": 60});
            let reply = self.post_as(key, "/v1/workers/claim", body).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let leases = reply.json()["leases"].as_array().unwrap().clone();
            assert_eq!(leases.len(), 1, "expected one lease: {leases:?}");
            (
                leases[0]["leaseId"].as_str().unwrap().to_owned(),
                leases[0]["operation"].clone(),
            )
        }
    }

    /// An API key as a client holds it.
    #[derive(Debug, Clone)]
    pub struct Key {
        pub id: uuid::Uuid,
        /// The `Authorization` header value.
        pub bearer: String,
    }

    /// Every `/v1` route, as (method, URI, body), on operation `id` with lease `lease`; the
    /// bodies are valid.
    pub fn v1_routes(id: &str, lease: &str) -> Vec<(Method, String, Option<Value>)> {
        let op = format!("/v1/operations/{id}");
        let lease = json!({ "leaseId": lease });
        let failure = json!({"leaseId": lease["leaseId"], "error": {"type": "E", "message": "m"}, "retryable": false});
        vec![
            (
                Method::POST,
                "/v1/operations".into(),
                Some(json!({"name": "probe"})),
            ),
            (
                Method::POST,
                "/v1/operations:batch".into(),
                Some(json!({"operations": [{"name": "probe"}]})),
            ),
            (Method::GET, "/v1/operations".into(), None),
            (Method::GET, op.clone(), None),
            (Method::DELETE, op.clone(), None),
            (Method::POST, format!("{op}/cancel"), None),
            (Method::GET, format!("{op}/result"), None),
            (Method::GET, format!("{op}/events"), None),
            (
                Method::POST,
                "/v1/workers/claim".into(),
                Some(json!({"worker": "w"})),
            ),
            (Method::POST, format!("{op}/heartbeat"), Some(lease.clone())),
            (Method::POST, format!("{op}/complete"), Some(lease.clone())),
            (Method::POST, format!("{op}/fail"), Some(failure)),
            (Method::POST, format!("{op}/release"), Some(lease)),
        ]
    }

    /// A buffered response.
    #[derive(Debug)]
    pub struct Reply {
        pub status: StatusCode,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    impl Reply {
        pub fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(|v| v.to_str().unwrap())
        }

        /// Asserts an RFC 9457 problem with `status` and `type`; returns the body.
        pub fn problem(&self, status: StatusCode, problem_type: &str) -> Value {
            assert_eq!(self.status, status, "{}", self.text());
            assert_eq!(
                self.header("content-type"),
                Some("application/problem+json")
            );
            let body = self.json();
            assert_eq!(body["type"], problem_type, "{body}");
            assert_eq!(body["status"], status.as_u16());
            assert!(
                body["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{body}"
            );
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{body}"
            );
            body
        }
    }

    /// One Server-Sent Event.
    #[derive(Debug, Clone, Default)]
    pub struct SseEvent {
        pub id: Option<String>,
        pub event: Option<String>,
        pub data: String,
    }

    impl SseEvent {
        pub fn json(&self) -> Value {
            serde_json::from_str(&self.data).unwrap()
        }
    }

    /// Reads events from a streaming response body.
    pub struct SseReader {
        body: Body,
        buffer: String,
    }

    impl SseReader {
        pub fn new(body: Body) -> Self {
            Self {
                body,
                buffer: String::new(),
            }
        }

        /// The next event (comments skipped); `None` when the stream ended. Panics when nothing
        /// arrives within 10 s.
        pub async fn next(&mut self) -> Option<SseEvent> {
            tokio::time::timeout(Duration::from_secs(10), self.next_event())
                .await
                .expect("no event within 10 s")
        }

        async fn next_event(&mut self) -> Option<SseEvent> {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    if let Some(event) = parse_block(&block) {
                        return Some(event);
                    }
                }
                match self.body.frame().await {
                    Some(frame) => {
                        if let Ok(data) = frame.unwrap().into_data() {
                            self.buffer.push_str(std::str::from_utf8(&data).unwrap());
                        }
                    }
                    None => return None,
                }
            }
        }
    }

    fn parse_block(block: &str) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        let mut any = false;
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "data" => event.data.push_str(value),
                _ => continue,
            }
            any = true;
        }
        any.then_some(event)
    }

    /// Opens an event stream through the router.
    pub async fn open_events(app: &TestApp, uri: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut builder = Request::builder().uri(uri).header("host", HOST);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = app
            .router
            .clone()
            .oneshot(builder.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader::new(response.into_body())
    }
}

mod operations {
    use axum::http::{Method, StatusCode};
    use longrun_server::ServerConfig;
    use serde_json::{Value, json};

    use crate::support::{HOST, Reply, TestApp};

    #[tokio::test]
    async fn submit_answers_202_with_absolute_locations_and_fills_defaults() {
        let app = TestApp::new().await;
        let reply = app
            .post("/v1/operations", json!({"name": "reports.render"}))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        let op = reply.json();
        let id = op["id"].as_str().unwrap();
        let url = format!("http://{HOST}/v1/operations/{id}");
        assert_eq!(reply.header("location"), Some(url.as_str()));
        assert_eq!(reply.header("operation-location"), Some(url.as_str()));
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.header("idempotent-replayed"), None);
        assert_eq!(op["status"], "pending");
        assert_eq!(op["name"], "reports.render");
        assert_eq!(op["args"], json!([]));
        assert_eq!(op["kwargs"], json!({}));
        assert_eq!(op["queue"], "default");
        assert_eq!(op["priority"], 0);
        assert_eq!(op["meta"]["url"], format!("http://{HOST}/v1/operations"));
        assert_eq!(
            op["retryPolicy"],
            json!({"maxRetries": 3, "backoffBaseSecs": 1.0, "backoffCapSecs": 300.0})
        );
        assert_eq!(op["rootId"], op["id"]);
        assert_eq!(op["customer"], 1);
        assert_eq!(op["createdBy"], 1);
        assert_eq!(op["createdByName"], "default");
        assert_eq!(op["resultUrl"], format!("{url}/result"));
        assert_eq!(op["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(op["spanId"].as_str().unwrap().len(), 16);
        assert_eq!(op["version"], 1);
        assert!(op["seq"].as_i64().unwrap() > 0);
    }

    #[tokio::test]
    async fn submit_applies_overrides_trace_context_owner_and_public_url() {
        let mut config = ServerConfig {
            public_url: Some("https://jobs.example.com/".into()),
            ..Default::default()
        };
        config.default_owner.user_name = "alice".into();
        let app = TestApp::with(config).await;
        let body = json!({
            "name": "mail.send", "args": [1, "two"], "kwargs": {"to": "x"}, "content": {"free": true},
            "meta": {"model": "collection", "action": "create"},
            "maxRetries": 7, "backoffBaseSecs": 0.5, "backoffCapSecs": 10.0,
            "queue": "mail", "priority": 5, "runAt": "2030-01-01T00:00:00Z"
        });
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let reply = app
            .call(
                Method::POST,
                "/v1/operations?view=operation",
                Some(body),
                &[("traceparent", traceparent)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        let op = reply.json();
        let id = op["id"].as_str().unwrap();
        assert_eq!(
            reply.header("location").unwrap(),
            format!("https://jobs.example.com/v1/operations/{id}")
        );
        assert_eq!(op["args"], json!([1, "two"]));
        assert_eq!(op["kwargs"], json!({"to": "x"}));
        assert_eq!(op["content"], json!({"free": true}));
        assert_eq!(
            op["meta"],
            json!({"url": "https://jobs.example.com/v1/operations?view=operation", "model": "collection", "action": "create"})
        );
        assert_eq!(
            op["retryPolicy"],
            json!({"maxRetries": 7, "backoffBaseSecs": 0.5, "backoffCapSecs": 10.0})
        );
        assert_eq!(op["queue"], "mail");
        assert_eq!(op["priority"], 5);
        assert_eq!(op["runAt"], "2030-01-01T00:00:00Z");
        assert_eq!(op["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(op["spanId"], "00f067aa0ba902b7");
        assert_eq!(op["createdByName"], "alice");
    }

    #[tokio::test]
    async fn an_invalid_traceparent_gets_fresh_ids() {
        let app = TestApp::new().await;
        let reply = app
            .call(
                Method::POST,
                "/v1/operations",
                Some(json!({"name": "t"})),
                &[("traceparent", "00-0000-bad-01")],
            )
            .await;
        let op = reply.json();
        let trace = op["traceId"].as_str().unwrap();
        assert_eq!(trace.len(), 32);
        assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32));
    }

    #[tokio::test]
    async fn a_child_joins_its_parents_chain_and_an_unknown_parent_is_422() {
        let app = TestApp::new().await;
        let root = app.submit_named("flow.root").await;
        let child = app
            .submit(json!({"name": "flow.child", "parentId": root["id"]}))
            .await;
        let grandchild = app
            .submit(json!({"name": "flow.grandchild", "parentId": child["id"]}))
            .await;
        assert_eq!(child["parentId"], root["id"]);
        assert_eq!(grandchild["parentId"], child["id"]);
        assert_eq!(grandchild["rootId"], root["id"]);

        let reply = app
            .post(
                "/v1/operations",
                json!({"name": "orphan", "parentId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}),
            )
            .await;
        reply.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/parent-not-found",
        );
    }

    #[tokio::test]
    async fn idempotency_key_replays_the_same_body_and_refuses_another() {
        let app = TestApp::new().await;
        let key = [("idempotency-key", "order-42")];
        let first = app
            .call(
                Method::POST,
                "/v1/operations",
                Some(json!({"name": "pay", "kwargs": {"a": 1, "b": [2, 3]}})),
                &key,
            )
            .await;
        assert_eq!(first.status, StatusCode::ACCEPTED);
        assert_eq!(first.header("idempotent-replayed"), None);

        // Same JSON, other key order and whitespace.
        let raw = "{ \"kwargs\": {\"b\": [2, 3], \"a\": 1},\n  \"name\": \"pay\" }";
        let request = axum::http::Request::post("/v1/operations")
            .header("host", HOST)
            .header("content-type", "application/json")
            .header("idempotency-key", "order-42")
            .body(axum::body::Body::from(raw))
            .unwrap();
        let again = app.send(request).await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text());
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json()["id"], first.json()["id"]);
        assert_eq!(again.header("location"), first.header("location"));

        let other = app
            .call(
                Method::POST,
                "/v1/operations",
                Some(json!({"name": "pay", "kwargs": {"a": 2}})),
                &key,
            )
            .await;
        other.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused",
        );

        let listed = app.get("/v1/operations").await.json();
        assert_eq!(listed["operations"].as_array().unwrap().len(), 1);

        // The draft's quoted form names the same key.
        let quoted = app
            .call(
                Method::POST,
                "/v1/operations",
                Some(json!({"name": "pay", "kwargs": {"a": 1, "b": [2, 3]}})),
                &[("idempotency-key", "\"order-42\"")],
            )
            .await;
        assert_eq!(quoted.status, StatusCode::ACCEPTED, "{}", quoted.text());
        assert_eq!(quoted.json()["id"], first.json()["id"]);

        for bad in ["", "\"\"", "\"order", "a\"b", "a b", &"k".repeat(256)] {
            let reply = app
                .call(
                    Method::POST,
                    "/v1/operations",
                    Some(json!({"name": "pay"})),
                    &[("idempotency-key", bad)],
                )
                .await;
            reply.problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
        }
        let listed = app.get("/v1/operations").await.json();
        assert_eq!(listed["operations"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_batch_submit_stores_every_item_in_order_or_none_when_one_is_invalid() {
        let app = TestApp::with(ServerConfig {
            max_batch_submit: 3,
            ..ServerConfig::default()
        })
        .await;
        let batch = json!({"operations": [
            {"name": "bulk.a", "args": [1]},
            {"name": "bulk.b", "priority": 5, "queue": "q"},
            {"name": "bulk.c", "kwargs": {"k": 1.0}},
        ]});
        let reply = app
            .post("/v1/operations:batch?view=async-task", batch)
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        assert!(reply.header("retry-after").is_some());
        assert_eq!(reply.header("idempotent-replayed"), None);
        let answered = reply.json()["operations"].as_array().unwrap().clone();
        let names: Vec<&str> = answered
            .iter()
            .map(|op| op["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["bulk.a", "bulk.b", "bulk.c"]);
        // Stored as listed, oldest first: a, b, c.
        let listed = app.get("/v1/operations").await.json();
        let stored: Vec<Value> = listed["operations"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .cloned()
            .collect();
        assert_eq!(stored.len(), 3);
        for (op, shown) in stored.iter().zip(&answered) {
            assert_eq!(op["name"], shown["name"]);
            assert_eq!(op["status"], "pending");
            assert_eq!(
                op["meta"]["url"],
                format!("http://{HOST}/v1/operations:batch?view=async-task")
            );
        }
        assert_eq!(
            (stored[1]["priority"].clone(), stored[1]["queue"].clone()),
            (json!(5), json!("q"))
        );
        assert_eq!(stored[2]["kwargs"], json!({"k": 1.0}));

        // One bad item: a 422 naming it, and nothing more stored.
        let bad = app
            .post(
                "/v1/operations:batch",
                json!({"operations": [{"name": "ok"}, {"name": "bad name"}]}),
            )
            .await;
        let problem = bad.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-failed",
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("operations[1]: "),
            "{problem}"
        );
        assert_eq!(problem["pointer"], "/operations/1");
        for body in [
            json!({"operations": []}),
            json!({"operations": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}),
            json!({"operations": {"name": "a"}}),
            json!({"operations": [{"name": "a"}], "extra": 1}),
            json!({}),
            json!([{"name": "a"}]),
        ] {
            let reply = app.post("/v1/operations:batch", body.clone()).await;
            reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
        }
        let listed = app.get("/v1/operations").await.json();
        assert_eq!(listed["operations"].as_array().unwrap().len(), 3);
    }

    /// Posts `body` to `path` (asking for a view it must not render) preferring
    /// `return=minimal`; asserts the minimal `202`, whose body has the one `member`; returns
    /// the reply and that member.
    async fn minimal_answer(
        app: &TestApp,
        path: &str,
        body: Value,
        member: &str,
    ) -> (Reply, Value) {
        let minimal = [("prefer", "return=minimal")];
        let uri = format!("{path}?view=async-task");
        let reply = app.call(Method::POST, &uri, Some(body), &minimal).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        assert_eq!(reply.header("preference-applied"), Some("return=minimal"));
        assert!(reply.header("retry-after").is_some());
        let answer = reply.json();
        assert_eq!(answer.as_object().unwrap().len(), 1, "{answer}");
        let value = answer[member].clone();
        (reply, value)
    }

    #[tokio::test]
    async fn a_submit_with_return_minimal_answers_only_the_id() {
        let app = TestApp::new().await;
        let submit = json!({"name": "id.only", "kwargs": {"k": 1}});
        let (reply, id) = minimal_answer(&app, "/v1/operations", submit.clone(), "id").await;
        let id = id.as_str().unwrap();
        let location = reply.header("location").unwrap();
        assert!(
            location.ends_with(&format!("/v1/operations/{id}")),
            "{location}"
        );
        assert_eq!(reply.header("operation-location"), Some(location));
        let op = app.get(&format!("/v1/operations/{id}")).await.json();
        assert_eq!(
            (&op["name"], &op["kwargs"]),
            (&submit["name"], &submit["kwargs"])
        );
        // Replayed under its key: the same id, marked as replayed; without the preference, the
        // operation in full.
        let keyed = [("prefer", "return=minimal"), ("idempotency-key", "id-1")];
        let first = app
            .call(Method::POST, "/v1/operations", Some(submit.clone()), &keyed)
            .await;
        let again = app
            .call(Method::POST, "/v1/operations", Some(submit.clone()), &keyed)
            .await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json(), first.json());
        let full = app
            .call(
                Method::POST,
                "/v1/operations",
                Some(submit),
                &[("idempotency-key", "id-1")],
            )
            .await;
        assert_eq!(full.header("preference-applied"), None);
        assert_eq!(full.json()["id"], first.json()["id"]);
        assert_eq!(full.json()["name"], "id.only");
    }

    #[tokio::test]
    async fn a_batch_with_return_minimal_answers_only_the_ids_in_request_order() {
        let app = TestApp::new().await;
        let batch = json!({"operations": [{"name": "ids.a"}, {"name": "ids.b"}]});
        let (reply, ids) = minimal_answer(&app, "/v1/operations:batch", batch.clone(), "ids").await;
        let body = reply.json();
        let ids = ids.as_array().unwrap();
        assert_eq!(ids.len(), 2);
        for (id, name) in ids.iter().zip(["ids.a", "ids.b"]) {
            let op = app
                .get(&format!("/v1/operations/{}", id.as_str().unwrap()))
                .await;
            assert_eq!(op.json()["name"], name);
        }
        // Replayed under its key: the same ids, marked as replayed.
        let keyed = [("prefer", "return=minimal"), ("idempotency-key", "ids-1")];
        let first = app
            .call(
                Method::POST,
                "/v1/operations:batch",
                Some(batch.clone()),
                &keyed,
            )
            .await;
        let again = app
            .call(Method::POST, "/v1/operations:batch", Some(batch), &keyed)
            .await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json(), first.json());
        assert_ne!(first.json(), body);
    }

    #[tokio::test]
    async fn a_batch_sent_again_with_its_idempotency_key_creates_nothing_new() {
        let app = TestApp::new().await;
        let key = [("idempotency-key", "import-7")];
        let batch =
            json!({"operations": [{"name": "imp", "args": [1]}, {"name": "imp", "args": [2]}]});
        let first = app
            .call(
                Method::POST,
                "/v1/operations:batch",
                Some(batch.clone()),
                &key,
            )
            .await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
        let again = app
            .call(Method::POST, "/v1/operations:batch", Some(batch), &key)
            .await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text());
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json()["operations"], first.json()["operations"]);

        // The same key on another batch: the changed item is refused.
        let other = app
            .call(
                Method::POST,
                "/v1/operations:batch",
                Some(json!({"operations": [{"name": "imp", "args": [1]}, {"name": "imp", "args": [3]}]})),
                &key,
            )
            .await;
        let problem = other.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused",
        );
        assert!(
            problem["detail"].as_str().unwrap().contains("import-7 1"),
            "{problem}"
        );
        // A single submit with the batch's key is another key.
        let single = app
            .call(
                Method::POST,
                "/v1/operations",
                Some(json!({"name": "imp", "args": [1]})),
                &key,
            )
            .await;
        assert_eq!(single.status, StatusCode::ACCEPTED);
        assert_eq!(single.header("idempotent-replayed"), None);
        let listed = app.get("/v1/operations").await.json();
        assert_eq!(listed["operations"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn integers_written_with_a_fraction_of_zero_are_integers_and_free_json_is_kept() {
        // JSON Schema (and so the OpenAPI document) counts `2.0` as an integer.
        let app = TestApp::new().await;
        let key = [("idempotency-key", "floats")];
        let body = json!({"name": "n", "maxRetries": 2.0, "priority": -3.0, "args": [1.0], "kwargs": {"k": 4.0}});
        let first = app
            .call(Method::POST, "/v1/operations", Some(body), &key)
            .await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text());
        let op = first.json();
        assert_eq!(op["retryPolicy"]["maxRetries"], 2);
        assert_eq!(op["priority"], -3);
        // Free JSON is stored as sent.
        assert!(op["args"][0].is_f64(), "{op}");
        assert!(op["kwargs"]["k"].is_f64(), "{op}");

        // The same request with the integers written plainly is the same request.
        let plain = json!({"name": "n", "maxRetries": 2, "priority": -3, "args": [1.0], "kwargs": {"k": 4.0}});
        let again = app
            .call(Method::POST, "/v1/operations", Some(plain), &key)
            .await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text());
        assert_eq!(again.header("idempotent-replayed"), Some("true"));

        let fraction = app
            .post("/v1/operations", json!({"name": "n", "maxRetries": 2.5}))
            .await;
        fraction.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-failed",
        );
    }

    #[tokio::test]
    async fn get_renders_every_view() {
        let app = TestApp::new().await;
        let op = app
            .submit(json!({"name": "views.demo", "args": [1], "kwargs": {"k": "v"}, "meta": {"model": "collection", "action": "update"}}))
            .await;
        let id = op["id"].as_str().unwrap();

        let canonical = app
            .get(&format!("/v1/operations/{id}?view=operation"))
            .await
            .json();
        assert_eq!(canonical, op);

        let reply = app
            .get(&format!("/v1/operations/{id}?view=async-operation"))
            .await;
        let async_op = reply.json();
        let keys: Vec<_> = async_op.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 5, "{async_op}");
        for key in ["id", "status", "createdAt", "updatedAt", "resultUrl"] {
            assert!(async_op.get(key).is_some(), "{key} missing in {async_op}");
        }
        assert_eq!(async_op["status"], "pending");
        assert_eq!(
            async_op["resultUrl"],
            format!("http://{HOST}/v1/operations/{id}/result")
        );

        let task_status = app
            .get(&format!("/v1/operations/{id}?view=task-status"))
            .await
            .json();
        assert_eq!(task_status["status"], "pending");
        assert_eq!(task_status["meta"]["model"], "collection");
        assert_eq!(
            task_status["meta"]["url"],
            format!("http://{HOST}/v1/operations")
        );
        assert!(task_status.get("details").is_none());

        let task = app
            .get(&format!("/v1/operations/{id}?view=async-task"))
            .await
            .json();
        assert_eq!(task["id"], op["seq"]);
        assert_eq!(task["status"], "PENDING");
        assert_eq!(task["task_args"], json!([1]));
        assert_eq!(task["task_kwargs"], json!({"k": "v"}));
        assert_eq!(task["root_task_id"], id);
        assert_eq!(task["created_by_name"], "default");

        let bad = app.get(&format!("/v1/operations/{id}?view=xml")).await;
        bad.problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
        let unknown_param = app
            .get(&format!("/v1/operations/{id}?vew=async-task"))
            .await;
        unknown_param.problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
    }

    #[tokio::test]
    async fn etag_if_none_match_and_retry_after_follow_the_version() {
        let app = TestApp::new().await;
        let op = app.submit_named("etag.demo").await;
        let id = op["id"].as_str().unwrap();
        let uri = format!("/v1/operations/{id}");

        let first = app.get(&uri).await;
        assert_eq!(first.header("etag"), Some("\"1\""));
        assert_eq!(first.header("retry-after"), Some("1"));

        for tag in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
            let cached = app
                .call(Method::GET, &uri, None, &[("if-none-match", tag)])
                .await;
            assert_eq!(
                cached.status,
                StatusCode::NOT_MODIFIED,
                "If-None-Match: {tag}"
            );
            assert_eq!(cached.header("etag"), Some("\"1\""));
            assert!(cached.body.is_empty());
        }

        let cancelled = app.post(&format!("{uri}/cancel"), json!({})).await;
        assert_eq!(cancelled.status, StatusCode::OK);
        let changed = app
            .call(Method::GET, &uri, None, &[("if-none-match", "\"1\"")])
            .await;
        assert_eq!(changed.status, StatusCode::OK);
        assert_eq!(changed.header("etag"), Some("\"2\""));
        assert_eq!(changed.json()["status"], "cancelled");
        assert_eq!(
            changed.header("retry-after"),
            None,
            "no Retry-After once finished"
        );
    }

    #[tokio::test]
    async fn list_filters_paginates_newest_first_and_renders_views() {
        let app = TestApp::new().await;
        let root = app.submit_named("chain.root").await;
        let mut ids = vec![root["id"].clone()];
        for _ in 0..3 {
            ids.push(
                app.submit(json!({"name": "chain.step", "parentId": root["id"]}))
                    .await["id"]
                    .clone(),
            );
        }
        let other = app.submit_named("other").await;
        ids.push(other["id"].clone());
        app.post(
            &format!("/v1/operations/{}/cancel", other["id"].as_str().unwrap()),
            json!({}),
        )
        .await;

        // Pages of two, newest first, until the cursor runs out.
        let mut seen = vec![];
        let mut uri = "/v1/operations?limit=2".to_owned();
        loop {
            let page = app.get(&uri).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text());
            let page = page.json();
            let ops = page["operations"].as_array().unwrap();
            assert!(ops.len() <= 2);
            seen.extend(ops.iter().map(|op| op["id"].clone()));
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(cursor) => uri = format!("/v1/operations?limit=2&cursor={cursor}"),
                None => break,
            }
        }
        ids.reverse();
        assert_eq!(seen, ids);

        let by_name = app.get("/v1/operations?name=chain.step").await.json();
        assert_eq!(by_name["operations"].as_array().unwrap().len(), 3);
        assert!(by_name.get("nextCursor").is_none());
        let root_id = root["id"].as_str().unwrap();
        let children = app
            .get(&format!("/v1/operations?parentId={root_id}"))
            .await
            .json();
        assert_eq!(children["operations"].as_array().unwrap().len(), 3);
        let chain = app
            .get(&format!("/v1/operations?rootId={root_id}"))
            .await
            .json();
        assert_eq!(chain["operations"].as_array().unwrap().len(), 4);
        let cancelled = app.get("/v1/operations?status=cancelled").await.json();
        assert_eq!(cancelled["operations"].as_array().unwrap().len(), 1);
        assert_eq!(cancelled["operations"][0]["id"], other["id"]);

        for (view, check) in [
            ("async-task", "PENDING"),
            ("async-operation", "pending"),
            ("task-status", "pending"),
            ("operation", "pending"),
        ] {
            let listed = app
                .get(&format!(
                    "/v1/operations?status=pending&limit=1&view={view}"
                ))
                .await
                .json();
            let item = &listed["operations"][0];
            assert_eq!(item["status"], check, "{view}: {item}");
            if view == "async-task" {
                assert!(item["id"].is_i64(), "{item}");
            } else {
                assert!(item["id"].is_string(), "{item}");
            }
        }

        for bad in [
            "/v1/operations?limit=0",
            "/v1/operations?limit=1001",
            "/v1/operations?limit=ten",
            "/v1/operations?cursor=nope",
            "/v1/operations?cursor=",
            "/v1/operations?cursor=-1",
            "/v1/operations?name=",
            "/v1/operations?name=a%20b",
            "/v1/operations?status=done",
            "/v1/operations?parentId=123",
            "/v1/operations?view=xml",
            "/v1/operations?colour=red",
        ] {
            app.get(bad)
                .await
                .problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
        }
        let max = app.get("/v1/operations?limit=1000").await;
        assert_eq!(max.status, StatusCode::OK);
        // Any cursor of the declared form is valid: one past every operation pages from the newest.
        let past_all = app
            .get("/v1/operations?limit=1&cursor=9999999999999999999")
            .await
            .json();
        assert_eq!(past_all["operations"][0]["id"], ids[0]);
    }

    #[tokio::test]
    async fn cancel_ends_pending_requests_running_and_refuses_finished() {
        let app = TestApp::new().await;
        let pending = app.submit_named("cancel.pending").await;
        let id = pending["id"].as_str().unwrap();
        let reply = app
            .post(
                &format!("/v1/operations/{id}/cancel?view=async-operation"),
                json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "cancelled");
        assert_eq!(reply.json()["error"]["code"], "cancelled");

        let again = app
            .post(&format!("/v1/operations/{id}/cancel"), json!({}))
            .await;
        let problem = again.problem(StatusCode::CONFLICT, "/problems/invalid-transition");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("already cancelled") && detail.contains("nothing was changed"),
            "{detail}"
        );
        assert_eq!(
            app.operation(id).await["version"],
            2,
            "a refused cancel changes nothing"
        );

        let running = app.submit_named("cancel.running").await;
        let id = running["id"].as_str().unwrap();
        let (lease, _) = app.claim_one("cancel.running").await;
        let reply = app
            .post(&format!("/v1/operations/{id}/cancel"), json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
        assert_eq!(reply.json()["status"], "running");
        assert_eq!(reply.json()["cancelRequested"], true);
        assert_eq!(
            reply.header("location").unwrap(),
            format!("http://{HOST}/v1/operations/{id}")
        );

        let beat = app
            .post(
                &format!("/v1/operations/{id}/heartbeat"),
                json!({"leaseId": lease}),
            )
            .await;
        assert_eq!(beat.json()["cancelRequested"], true);
        let failed = app
            .post(
                &format!("/v1/operations/{id}/fail"),
                json!({"leaseId": lease, "error": {"type": "Cancelled", "message": "stopped"}, "retryable": true}),
            )
            .await;
        assert_eq!(failed.status, StatusCode::OK);
        assert_eq!(failed.json()["status"], "cancelled");
    }

    #[tokio::test]
    async fn delete_forgets_only_finished_operations() {
        let app = TestApp::new().await;
        let op = app.submit_named("delete.me").await;
        let uri = format!("/v1/operations/{}", op["id"].as_str().unwrap());

        let refused = app.call(Method::DELETE, &uri, None, &[]).await;
        let problem = refused.problem(StatusCode::CONFLICT, "/problems/not-terminal");
        assert_eq!(problem["status"], 409);
        assert_eq!(app.get(&uri).await.status, StatusCode::OK);

        app.post(&format!("{uri}/cancel"), json!({})).await;
        let deleted = app.call(Method::DELETE, &uri, None, &[]).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert!(deleted.body.is_empty());
        app.get(&uri)
            .await
            .problem(StatusCode::NOT_FOUND, "/problems/not-found");
        app.call(Method::DELETE, &uri, None, &[])
            .await
            .problem(StatusCode::NOT_FOUND, "/problems/not-found");
    }

    #[tokio::test]
    async fn result_follows_the_status() {
        let app = TestApp::new().await;

        let op = app.submit_named("result.ok").await;
        let id = op["id"].as_str().unwrap();
        let waiting = app.get(&format!("/v1/operations/{id}/result")).await;
        assert_eq!(waiting.status, StatusCode::ACCEPTED);
        assert_eq!(waiting.header("retry-after"), Some("1"));
        assert_eq!(
            waiting.header("location").unwrap(),
            format!("http://{HOST}/v1/operations/{id}")
        );
        assert_eq!(waiting.json()["status"], "pending");
        let (lease, _) = app.claim_one("result.ok").await;
        app.post(
            &format!("/v1/operations/{id}/complete"),
            json!({"leaseId": lease, "result": {"pages": 7}}),
        )
        .await;
        let done = app.get(&format!("/v1/operations/{id}/result")).await;
        assert_eq!(done.status, StatusCode::OK);
        assert_eq!(done.json(), json!({"pages": 7}));

        let op = app
            .submit(json!({"name": "result.bad", "maxRetries": 0}))
            .await;
        let id = op["id"].as_str().unwrap();
        let (lease, _) = app.claim_one("result.bad").await;
        let error =
            json!({"type": "ValueError", "message": "page 3 is blank", "code": "blank_page"});
        app.post(
            &format!("/v1/operations/{id}/fail"),
            json!({"leaseId": lease, "error": error, "retryable": true}),
        )
        .await;
        let failed = app.get(&format!("/v1/operations/{id}/result")).await;
        let problem = failed.problem(StatusCode::CONFLICT, "/problems/operation-failed");
        assert_eq!(
            problem["error"],
            json!({"code": "blank_page", "type": "ValueError", "message": "page 3 is blank"})
        );

        let op = app.submit_named("result.cancelled").await;
        let id = op["id"].as_str().unwrap();
        app.post(&format!("/v1/operations/{id}/cancel"), json!({}))
            .await;
        let cancelled = app.get(&format!("/v1/operations/{id}/result")).await;
        cancelled.problem(StatusCode::CONFLICT, "/problems/operation-cancelled");
    }
}

mod workers {
    use std::time::{Duration, Instant};

    use axum::http::{Method, StatusCode};
    use longrun_server::{ServerConfig, spawn_maintenance};
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    use crate::support::{HOST, TestApp};

    #[tokio::test]
    async fn claim_heartbeat_complete_runs_an_operation_to_success() {
        let app = TestApp::new().await;
        app.submit(json!({"name": "other.task"})).await;
        let op = app
            .submit(json!({"name": "reports.render", "queue": "reports"}))
            .await;
        let id = op["id"].as_str().unwrap();

        let reply = app
            .post(
                "/v1/workers/claim",
                json!({"worker": "w7", "names": ["reports.render"], "queues": ["reports"], "max": 5, "leaseSecs": 30}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let leases = reply.json()["leases"].as_array().unwrap().clone();
        assert_eq!(leases.len(), 1, "only the matching operation is claimed");
        let lease = leases[0]["leaseId"].as_str().unwrap();
        assert_eq!(leases[0]["operation"]["id"], id);
        assert_eq!(leases[0]["operation"]["status"], "running");
        assert_eq!(leases[0]["operation"]["worker"], "w7");
        assert_eq!(leases[0]["operation"]["executionId"], lease);
        assert!(leases[0]["leaseExpiresAt"].is_string());

        let beat = app
            .post(
                &format!("/v1/operations/{id}/heartbeat"),
                json!({"leaseId": lease, "progressPct": 40, "statusDetail": "page 3 of 7", "leaseSecs": 120}),
            )
            .await;
        assert_eq!(beat.status, StatusCode::OK, "{}", beat.text());
        assert_eq!(beat.json()["cancelRequested"], false);
        let now = app.operation(id).await;
        assert_eq!(now["progressPct"], 40.0);
        assert_eq!(now["statusDetail"], "page 3 of 7");
        assert_eq!(now["leaseExpiresAt"], beat.json()["leaseExpiresAt"]);

        let resources = json!([{"id": "r1", "url": "https://files.example.com/r1"}]);
        let done = app
            .post(
                &format!("/v1/operations/{id}/complete"),
                json!({"leaseId": lease, "result": {"ok": true}, "resources": resources}),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        let done = done.json();
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["result"], json!({"ok": true}));
        assert_eq!(
            done["resultUrl"],
            format!("http://{HOST}/v1/operations/{id}/result")
        );

        let task_status = app
            .get(&format!("/v1/operations/{id}?view=task-status"))
            .await
            .json();
        assert_eq!(task_status["status"], "completed");
        assert_eq!(task_status["details"], json!({"resources": resources}));
        let task = app
            .get(&format!("/v1/operations/{id}?view=async-task"))
            .await
            .json();
        assert_eq!(task["status"], "COMPLETED");
        assert_eq!(task["celery_task_id"], lease);
    }

    /// With `Prefer: return=minimal` a report is recorded all the same and answered `204`
    /// without the operation.
    #[tokio::test]
    async fn reports_preferring_return_minimal_get_no_operation_back() {
        let app = TestApp::new().await;
        let minimal = [("prefer", "return=minimal")];
        let report = |id: String, action: &'static str, body: serde_json::Value| {
            let app = &app;
            async move {
                let uri = format!("/v1/operations/{id}/{action}");
                let reply = app.call(Method::POST, &uri, Some(body), &minimal).await;
                assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
                assert!(reply.body.is_empty());
                assert_eq!(reply.header("preference-applied"), Some("return=minimal"));
                app.operation(&id).await
            }
        };
        let error = json!({"type": "ValueError", "message": "no"});
        for (name, action, body, status) in [
            (
                "done",
                "complete",
                json!({"result": {"ok": true}}),
                "succeeded",
            ),
            (
                "broken",
                "fail",
                json!({"error": error, "retryable": false}),
                "failed",
            ),
            ("back", "release", json!({}), "pending"),
        ] {
            let op = app.submit_named(name).await;
            let id = op["id"].as_str().unwrap().to_owned();
            let (lease, _) = app.claim_one(name).await;
            let mut body = body;
            body["leaseId"] = json!(lease);
            let now = report(id, action, body).await;
            assert_eq!(now["status"], status, "{action}");
        }
        // A stale lease is still a problem, not a silent 204.
        let op = app.submit_named("stale").await;
        let id = op["id"].as_str().unwrap();
        app.claim_one("stale").await;
        let stale = app
            .call(
                Method::POST,
                &format!("/v1/operations/{id}/complete"),
                Some(json!({"leaseId": uuid::Uuid::now_v7()})),
                &minimal,
            )
            .await;
        stale.problem(StatusCode::CONFLICT, "/problems/stale-lease");
    }

    /// `POST /v1/workers/reports` records each report as its own route would and answers each
    /// in order; a stale lease leaves the others recorded, while an invalid report refuses
    /// the whole request before anything is recorded.
    #[tokio::test]
    async fn many_reports_go_in_one_request_and_are_answered_one_by_one() {
        let app = TestApp::new().await;
        let mut leased = Vec::new();
        for name in ["done", "broken", "back", "stale", "later"] {
            let op = app.submit_named(name).await;
            let (lease, _) = app.claim_one(name).await;
            leased.push((op["id"].as_str().unwrap().to_owned(), lease));
        }
        let [done, broken, back, stale, later] = &leased[..] else {
            unreachable!()
        };
        let error = json!({"type": "ValueError", "message": "no"});
        let reply = app
            .post(
                "/v1/workers/reports",
                json!({"reports": [
                    {"id": done.0, "complete": {"leaseId": done.1, "result": {"ok": true}}},
                    {"id": broken.0, "fail": {"leaseId": broken.1, "error": error, "retryable": false}},
                    {"id": back.0, "release": {"leaseId": back.1}},
                    {"id": stale.0, "complete": {"leaseId": uuid::Uuid::now_v7()}},
                ]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let results = reply.json()["results"].as_array().unwrap().clone();
        let answered: Vec<_> = results
            .iter()
            .map(|r| (r["id"].as_str().unwrap(), r["status"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            answered,
            [
                (done.0.as_str(), 204),
                (broken.0.as_str(), 204),
                (back.0.as_str(), 204),
                (stale.0.as_str(), 409),
            ]
        );
        assert_eq!(results[3]["problem"]["type"], "/problems/stale-lease");
        let status = |id: &str| {
            let app = &app;
            let id = id.to_owned();
            async move { app.operation(&id).await["status"].clone() }
        };
        assert_eq!(status(&done.0).await, "succeeded");
        assert_eq!(app.operation(&done.0).await["result"], json!({"ok": true}));
        assert_eq!(status(&broken.0).await, "failed");
        assert_eq!(status(&back.0).await, "pending");
        assert_eq!(status(&stale.0).await, "running");

        let refused = app
            .post(
                "/v1/workers/reports",
                json!({"reports": [
                    {"id": later.0, "complete": {"leaseId": later.1}},
                    {"id": stale.0, "complete": {"leaseId": stale.1}, "release": {"leaseId": stale.1}},
                ]}),
            )
            .await;
        let problem = refused.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-failed",
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("reports[1]: a report: `id` and exactly one of"),
            "{detail}"
        );
        assert_eq!(status(&later.0).await, "running", "nothing was recorded");
        let empty = app
            .post("/v1/workers/reports", json!({"reports": []}))
            .await;
        empty.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-failed",
        );
    }

    #[tokio::test]
    async fn fail_retries_while_allowed_then_fails_with_the_default_code() {
        let app = TestApp::new().await;
        let op = app.submit(json!({"name": "flaky", "maxRetries": 1, "backoffBaseSecs": 0, "backoffCapSecs": 0})).await;
        let id = op["id"].as_str().unwrap();

        let (lease, _) = app.claim_one("flaky").await;
        let error = json!({"type": "TimeoutError", "message": "upstream slow", "code": "timeout"});
        let retried = app
            .post(
                &format!("/v1/operations/{id}/fail"),
                json!({"leaseId": lease, "error": error, "retryable": true}),
            )
            .await;
        assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
        assert_eq!(retried.json()["status"], "pending");
        assert_eq!(retried.json()["retries"], 1);

        let (lease, _) = app.claim_one("flaky").await;
        let failed = app
            .post(
                &format!("/v1/operations/{id}/fail"),
                json!({"leaseId": lease, "error": {"type": "ValueError", "message": "bad input"}, "retryable": false}),
            )
            .await;
        let failed = failed.json();
        assert_eq!(failed["status"], "failed");
        assert_eq!(
            failed["error"],
            json!({"code": "error", "type": "ValueError", "message": "bad input"})
        );
        let task = app
            .get(&format!("/v1/operations/{id}?view=async-task"))
            .await
            .json();
        assert_eq!(
            (task["status"].as_str(), task["retries"].as_i64()),
            (Some("FAILED"), Some(1))
        );
        assert_eq!(task["error_type"], "ValueError");

        let twice = app
            .post(
                &format!("/v1/operations/{id}/fail"),
                json!({"leaseId": lease, "error": {"type": "ValueError", "message": "again"}, "retryable": false}),
            )
            .await;
        twice.problem(StatusCode::CONFLICT, "/problems/invalid-transition");
    }

    #[tokio::test]
    async fn release_gives_the_operation_back_without_counting_a_retry() {
        let app = TestApp::new().await;
        let op = app.submit_named("released").await;
        let id = op["id"].as_str().unwrap();
        let (lease, _) = app.claim_one("released").await;
        let released = app
            .post(
                &format!("/v1/operations/{id}/release"),
                json!({"leaseId": lease}),
            )
            .await;
        assert_eq!(released.status, StatusCode::OK, "{}", released.text());
        assert_eq!(released.json()["status"], "pending");
        assert_eq!(released.json()["retries"], 0);
        let (again, _) = app.claim_one("released").await;
        assert_ne!(again, lease);
    }

    #[tokio::test]
    async fn a_stale_lease_is_409_and_changes_nothing() {
        let app = TestApp::new().await;
        let op = app.submit_named("fenced").await;
        let id = op["id"].as_str().unwrap();
        let (old, _) = app.claim_one("fenced").await;
        app.post(
            &format!("/v1/operations/{id}/release"),
            json!({"leaseId": old}),
        )
        .await;
        let (current, _) = app.claim_one("fenced").await;
        let before = app.operation(id).await;

        let stranger = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        for lease in [old.as_str(), stranger] {
            for (route, body) in [
                ("complete", json!({"leaseId": lease, "result": 1})),
                (
                    "fail",
                    json!({"leaseId": lease, "error": {"type": "E", "message": "m"}, "retryable": false}),
                ),
                ("heartbeat", json!({"leaseId": lease, "progressPct": 99})),
                ("release", json!({"leaseId": lease})),
            ] {
                let reply = app
                    .post(&format!("/v1/operations/{id}/{route}"), body)
                    .await;
                reply.problem(StatusCode::CONFLICT, "/problems/stale-lease");
            }
        }
        assert_eq!(app.operation(id).await, before);
        assert_eq!(before["executionId"], current);
    }

    #[tokio::test]
    async fn claim_and_heartbeat_reject_out_of_range_values() {
        let config = ServerConfig {
            max_claim: 10,
            max_lease_secs: 100,
            max_wait_secs: 5,
            ..Default::default()
        };
        let app = TestApp::with(config).await;
        for body in [
            json!({"worker": "w", "max": 0}),
            json!({"worker": "w", "max": 11}),
            json!({"worker": "w", "leaseSecs": 0}),
            json!({"worker": "w", "leaseSecs": 101}),
            json!({"worker": "w", "waitSecs": 6}),
            json!({"worker": ""}),
            json!({"worker": "w", "names": ["bad name"]}),
            json!({"worker": "w", "max": -1}),
            json!({"max": 1}),
        ] {
            let reply = app.post("/v1/workers/claim", body.clone()).await;
            let problem = reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
            assert!(
                problem["detail"].as_str().unwrap().len() > 5,
                "{body}: {problem}"
            );
        }

        for body in [
            json!({"worker": "w", "max": 1.5}),
            json!({"worker": "w", "waitSecs": 5.5}),
        ] {
            app.post("/v1/workers/claim", body).await.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
        }
        // Integers with a zero fraction are integers, as in the OpenAPI document.
        let floats = app
            .post(
                "/v1/workers/claim",
                json!({"worker": "w", "max": 10.0, "leaseSecs": 100.0, "waitSecs": 0.0}),
            )
            .await;
        assert_eq!(floats.status, StatusCode::OK, "{}", floats.text());

        let op = app.submit_named("bounds").await;
        let id = op["id"].as_str().unwrap();
        let (lease, _) = app.claim_one("bounds").await;
        for body in [
            json!({"leaseId": lease, "progressPct": 101}),
            json!({"leaseId": lease, "progressPct": -1}),
            json!({"leaseId": lease, "leaseSecs": 101}),
            json!({"leaseId": lease, "statusDetail": "x".repeat(1001)}),
            json!({"leaseId": "not-a-uuid"}),
        ] {
            let reply = app
                .post(&format!("/v1/operations/{id}/heartbeat"), body)
                .await;
            reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
        }
        let ok = app
            .post(
                &format!("/v1/operations/{id}/heartbeat"),
                json!({"leaseId": lease, "progressPct": 100}),
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_waiting_claim_is_woken_by_a_submit() {
        let app = TestApp::new().await;
        let router_app = std::sync::Arc::new(app);
        let claimer = router_app.clone();
        let started = Instant::now();
        let claim = tokio::spawn(async move {
            claimer
                .post(
                    "/v1/workers/claim",
                    json!({"worker": "w", "names": ["wake.me"], "waitSecs": 30}),
                )
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !claim.is_finished(),
            "the claim waits while nothing is ready"
        );
        let op = router_app.submit_named("wake.me").await;
        let reply = claim.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["leases"][0]["operation"]["id"], op["id"]);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "woken by the submit, not the timeout"
        );
    }

    #[tokio::test]
    async fn a_waiting_claim_answers_empty_after_wait_secs() {
        let app = TestApp::new().await;
        let started = Instant::now();
        let reply = app
            .post("/v1/workers/claim", json!({"worker": "w", "waitSecs": 1}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["leases"], json!([]));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn maintenance_returns_an_expired_lease_to_pending() {
        let config = ServerConfig {
            maintenance_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let app = TestApp::with(config).await;
        let stop = CancellationToken::new();
        let state = app.state();
        let maintenance = spawn_maintenance(state.store, state.config, stop.clone());

        let op = app
            .submit(json!({"name": "abandoned", "backoffBaseSecs": 0, "backoffCapSecs": 0}))
            .await;
        let id = op["id"].as_str().unwrap();
        let reply = app
            .post(
                "/v1/workers/claim",
                json!({"worker": "doomed", "leaseSecs": 1}),
            )
            .await;
        let lease = reply.json()["leases"][0]["leaseId"]
            .as_str()
            .unwrap()
            .to_owned();

        let deadline = Instant::now() + Duration::from_secs(15);
        let op = loop {
            let op = app.operation(id).await;
            if op["status"] == "pending" || Instant::now() > deadline {
                break op;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(op["status"], "pending", "{op}");
        assert_eq!(op["retries"], 1);
        assert_eq!(op["error"]["code"], "lease_expired");
        let late = app
            .post(
                &format!("/v1/operations/{id}/complete"),
                json!({"leaseId": lease}),
            )
            .await;
        late.problem(StatusCode::CONFLICT, "/problems/stale-lease");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), maintenance)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn maintenance_prunes_finished_operations_past_retention() {
        let config = ServerConfig {
            maintenance_interval: Duration::from_millis(100),
            retention: Some(time::Duration::milliseconds(1)),
            ..Default::default()
        };
        let app = TestApp::with(config).await;
        let stop = CancellationToken::new();
        let state = app.state();
        let maintenance = spawn_maintenance(state.store, state.config, stop.clone());

        let finished = app.submit_named("old").await;
        let kept = app.submit_named("young").await;
        let uri = format!("/v1/operations/{}", finished["id"].as_str().unwrap());
        app.post(&format!("{uri}/cancel"), json!({})).await;

        let deadline = Instant::now() + Duration::from_secs(15);
        while app.get(&uri).await.status != StatusCode::NOT_FOUND {
            assert!(
                Instant::now() < deadline,
                "the finished operation was never pruned"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            app.operation(kept["id"].as_str().unwrap()).await["status"],
            "pending"
        );
        stop.cancel();
        maintenance.await.unwrap();
    }
}

mod long_poll {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use axum::http::{Method, StatusCode};
    use longrun_server::ServerConfig;
    use serde_json::json;

    use crate::support::TestApp;

    #[tokio::test]
    async fn prefer_wait_answers_as_soon_as_the_operation_changes() {
        let app = Arc::new(TestApp::new().await);
        let op = app.submit_named("poll.me").await;
        let uri = format!("/v1/operations/{}", op["id"].as_str().unwrap());
        let poller = app.clone();
        let started = Instant::now();
        let poll = tokio::spawn(async move {
            poller
                .call(Method::GET, &uri, None, &[("prefer", "wait=30")])
                .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "the poll waits while nothing changes");
        app.claim_one("poll.me").await;

        let reply = poll.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "answered on the change, not at the timeout"
        );
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["status"], "running");
        assert_eq!(reply.header("etag"), Some("\"2\""));
        assert_eq!(reply.header("preference-applied"), Some("wait=30"));
    }

    #[tokio::test]
    async fn prefer_wait_answers_unchanged_after_the_wait() {
        let app = TestApp::new().await;
        let op = app.submit_named("idle").await;
        let uri = format!("/v1/operations/{}", op["id"].as_str().unwrap());

        let started = Instant::now();
        let reply = app
            .call(
                Method::GET,
                &uri,
                None,
                &[("prefer", "respond-async, wait=1")],
            )
            .await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["version"], 1);
        assert_eq!(reply.header("preference-applied"), Some("wait=1"));

        // With the client's ETag, an unchanged operation after the wait is a 304.
        let started = Instant::now();
        let reply = app
            .call(
                Method::GET,
                &uri,
                None,
                &[("prefer", "wait=1"), ("if-none-match", "\"1\"")],
            )
            .await;
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED);

        // An ETag older than the current version answers at once.
        let started = Instant::now();
        let reply = app
            .call(
                Method::GET,
                &uri,
                None,
                &[("prefer", "wait=30"), ("if-none-match", "\"0\"")],
            )
            .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn prefer_wait_is_clamped_to_the_maximum_and_skipped_when_finished() {
        let app = TestApp::with(ServerConfig {
            max_wait_secs: 1,
            ..Default::default()
        })
        .await;
        let op = app.submit_named("clamped").await;
        let uri = format!("/v1/operations/{}", op["id"].as_str().unwrap());
        let started = Instant::now();
        let reply = app
            .call(Method::GET, &uri, None, &[("prefer", "wait=3600")])
            .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(reply.header("preference-applied"), Some("wait=1"));

        app.post(&format!("{uri}/cancel"), json!({})).await;
        let started = Instant::now();
        let reply = app
            .call(Method::GET, &uri, None, &[("prefer", "wait=1")])
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "a finished operation never changes"
        );
        assert_eq!(reply.json()["status"], "cancelled");
    }
}

mod events {
    use std::time::Duration;

    use axum::http::StatusCode;
    use longrun_server::{AppState, serve};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::support::{TestApp, open_events};

    #[tokio::test]
    async fn the_stream_carries_every_change_and_ends_after_the_terminal_event() {
        let app = TestApp::new().await;
        let op = app.submit_named("streamed").await;
        let id = op["id"].as_str().unwrap();
        let mut events = open_events(&app, &format!("/v1/operations/{id}/events"), &[]).await;

        let first = events.next().await.unwrap();
        assert_eq!(
            (first.id.as_deref(), first.event.as_deref()),
            (Some("1"), Some("pending"))
        );
        assert_eq!(first.json()["id"], id);

        let (lease, _) = app.claim_one("streamed").await;
        let running = events.next().await.unwrap();
        assert_eq!(
            (running.id.as_deref(), running.event.as_deref()),
            (Some("2"), Some("running"))
        );

        for pct in [25, 75] {
            app.post(
                &format!("/v1/operations/{id}/heartbeat"),
                json!({"leaseId": lease, "progressPct": pct}),
            )
            .await;
            let progress = events.next().await.unwrap();
            assert_eq!(progress.json()["progressPct"], f64::from(pct));
            assert_eq!(progress.event.as_deref(), Some("running"));
        }

        app.post(
            &format!("/v1/operations/{id}/complete"),
            json!({"leaseId": lease, "result": "done"}),
        )
        .await;
        let last = events.next().await.unwrap();
        assert_eq!(last.event.as_deref(), Some("succeeded"));
        assert_eq!(last.json()["result"], "done");
        assert_eq!(last.id.as_deref(), Some("5"));
        assert!(
            events.next().await.is_none(),
            "the stream ends after the terminal event"
        );
    }

    #[tokio::test]
    async fn last_event_id_resumes_and_views_apply() {
        let app = TestApp::new().await;
        let op = app.submit_named("resumed").await;
        let id = op["id"].as_str().unwrap();
        let (lease, _) = app.claim_one("resumed").await; // version 2

        let uri = format!("/v1/operations/{id}/events?view=async-task");
        let mut events = open_events(&app, &uri, &[("last-event-id", "2")]).await;
        app.post(
            &format!("/v1/operations/{id}/heartbeat"),
            json!({"leaseId": lease, "progressPct": 10}),
        )
        .await;
        let next = events.next().await.unwrap();
        assert_eq!(
            next.id.as_deref(),
            Some("3"),
            "the already-seen state is not sent again"
        );
        assert_eq!(next.json()["status"], "PROCESSING");
        assert!(next.json()["id"].is_i64());

        // A client that missed changes gets the current state at once.
        let mut behind = open_events(&app, &uri, &[("last-event-id", "1")]).await;
        assert_eq!(behind.next().await.unwrap().id.as_deref(), Some("3"));

        app.post(
            &format!("/v1/operations/{id}/fail"),
            json!({"leaseId": lease, "error": {"type": "E", "message": "m"}, "retryable": false}),
        )
        .await;
        let end = events.next().await.unwrap();
        assert_eq!(
            (end.id.as_deref(), end.event.as_deref()),
            (Some("4"), Some("failed"))
        );
        assert!(events.next().await.is_none());

        // A finished operation: one event, or none when the client already has it.
        let mut fresh = open_events(&app, &format!("/v1/operations/{id}/events"), &[]).await;
        assert_eq!(fresh.next().await.unwrap().event.as_deref(), Some("failed"));
        assert!(fresh.next().await.is_none());
        let mut seen = open_events(
            &app,
            &format!("/v1/operations/{id}/events"),
            &[("last-event-id", "4")],
        )
        .await;
        assert!(seen.next().await.is_none());
    }

    #[tokio::test]
    async fn the_stream_of_an_unknown_operation_is_404() {
        let app = TestApp::new().await;
        let reply = app
            .get("/v1/operations/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/events")
            .await;
        reply.problem(StatusCode::NOT_FOUND, "/problems/not-found");
    }

    /// A real server: graceful shutdown ends open event streams instead of waiting on them.
    #[tokio::test]
    async fn graceful_shutdown_ends_open_event_streams() {
        let app = TestApp::new().await;
        let op = app.submit_named("served").await;
        let id = op["id"].as_str().unwrap().to_owned();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state: AppState = app.state();
        let server = tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /v1/operations/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains("event: pending") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed early");
            received.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&received).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");

        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server).await;
        assert!(
            result
                .expect("shutdown waited on the event stream")
                .unwrap()
                .is_ok()
        );
        // The stream was ended by the server: reading reaches the end.
        let rest =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        assert!(rest.is_ok(), "the connection stays open after shutdown");
    }
}

mod errors {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use longrun_server::ServerConfig;
    use serde_json::json;

    use crate::support::{HOST, TestApp};

    async fn raw(
        app: &TestApp,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> crate::support::Reply {
        let mut builder = Request::post(uri).header("host", HOST);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        app.send(builder.body(Body::from(body.to_owned())).unwrap())
            .await
    }

    #[tokio::test]
    async fn typed_bodies_are_objects_read_whole_with_a_repeated_member_last() {
        let app = TestApp::new().await;
        let json = Some("application/json");
        // A repeated member counts once, with its last value.
        let reply = raw(
            &app,
            "/v1/workers/claim",
            json,
            r#"{"worker": "bad name", "waitSecs": 0, "worker": "w"}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json(), json!({"leases": []}));
        // An array is not an object, even one whose items could fill the fields in order.
        let problem = raw(&app, "/v1/workers/claim", json, r#" ["w"]"#)
            .await
            .problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
        assert!(problem["detail"].as_str().unwrap().contains("object"));
        // Nothing may follow the object.
        raw(
            &app,
            "/v1/workers/claim",
            json,
            r#"{"worker": "w", "waitSecs": 0} {}"#,
        )
        .await
        .problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
    }

    #[tokio::test]
    async fn bad_submit_bodies_are_problems() {
        let app = TestApp::new().await;
        let json = Some("application/json");
        raw(&app, "/v1/operations", json, "{\"name\": ")
            .await
            .problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
        raw(&app, "/v1/operations", json, "")
            .await
            .problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
        raw(&app, "/v1/operations", None, "{\"name\": \"x\"}")
            .await
            .problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "/problems/unsupported-media-type",
            );
        raw(
            &app,
            "/v1/operations",
            Some("text/plain"),
            "{\"name\": \"x\"}",
        )
        .await
        .problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "/problems/unsupported-media-type",
        );

        for (body, mentions) in [
            (json!({"name": "x", "colour": "red"}), "colour"),
            (json!({"name": 5}), "name"),
            (json!({"args": []}), "name"),
            (json!({"name": "x", "args": {"a": 1}}), "args"),
            (json!({"name": "x", "kwargs": [1]}), "kwargs"),
            (json!({"name": "x", "priority": "high"}), "priority"),
            (json!({"name": ""}), "name"),
            (json!({"name": "has space"}), "name"),
            (json!({"name": "x".repeat(201)}), "name"),
            (json!({"name": "x", "queue": "a/b"}), "queue"),
            (
                json!({"name": "x", "backoffBaseSecs": -1}),
                "backoffBaseSecs",
            ),
            (
                json!({"name": "x", "meta": {"url": "u", "extra": 1}}),
                "extra",
            ),
            (json!({"name": "x", "runAt": "tomorrow"}), "runAt"),
            (json!(["name"]), "object"),
        ] {
            let reply = app.post("/v1/operations", body.clone()).await;
            let problem = reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains(mentions), "{body} → {detail}");
        }
        assert_eq!(
            app.get("/v1/operations").await.json()["operations"],
            json!([]),
            "nothing was created"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413() {
        let app = TestApp::with(ServerConfig {
            body_limit_bytes: 256,
            ..Default::default()
        })
        .await;
        let big = json!({"name": "x", "content": "y".repeat(300)});
        app.post("/v1/operations", big)
            .await
            .problem(StatusCode::PAYLOAD_TOO_LARGE, "/problems/payload-too-large");
        let small = app.post("/v1/operations", json!({"name": "x"})).await;
        assert_eq!(small.status, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn unknown_ids_are_404_on_every_route() {
        let app = TestApp::new().await;
        let lease = json!({"leaseId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"});
        for id in ["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "not-a-uuid", "42"] {
            let base = format!("/v1/operations/{id}");
            let calls = [
                (Method::GET, base.clone(), None),
                (Method::DELETE, base.clone(), None),
                (Method::POST, format!("{base}/cancel"), None),
                (Method::GET, format!("{base}/result"), None),
                (Method::GET, format!("{base}/events"), None),
                (
                    Method::POST,
                    format!("{base}/heartbeat"),
                    Some(lease.clone()),
                ),
                (
                    Method::POST,
                    format!("{base}/complete"),
                    Some(lease.clone()),
                ),
                (Method::POST, format!("{base}/release"), Some(lease.clone())),
                (
                    Method::POST,
                    format!("{base}/fail"),
                    Some(
                        json!({"leaseId": lease["leaseId"], "error": {"type": "E", "message": "m"}, "retryable": false}),
                    ),
                ),
            ];
            for (method, uri, body) in calls {
                let reply = app.call(method.clone(), &uri, body, &[]).await;
                let problem = reply.problem(StatusCode::NOT_FOUND, "/problems/not-found");
                assert!(
                    problem["detail"].as_str().unwrap().contains(id),
                    "{method} {uri}: {problem}"
                );
            }
        }
    }

    #[tokio::test]
    async fn unknown_routes_are_404_and_wrong_methods_405() {
        let app = TestApp::new().await;
        app.get("/v2/operations")
            .await
            .problem(StatusCode::NOT_FOUND, "/problems/not-found");
        app.get("/")
            .await
            .problem(StatusCode::NOT_FOUND, "/problems/not-found");

        let reply = app
            .call(Method::PUT, "/v1/operations", Some(json!({})), &[])
            .await;
        reply.problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "/problems/method-not-allowed",
        );
        let allow = reply.header("allow").unwrap();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        let reply = app.call(Method::GET, "/v1/workers/claim", None, &[]).await;
        reply.problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "/problems/method-not-allowed",
        );
    }

    #[tokio::test]
    async fn readyz_is_503_when_the_database_is_gone() {
        let app = TestApp::new().await;
        assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
        assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
        app.store.close().await;
        app.get("/readyz")
            .await
            .problem(StatusCode::SERVICE_UNAVAILABLE, "/problems/unavailable");
        let reply = app.post("/v1/operations", json!({"name": "x"})).await;
        let problem = reply.problem(StatusCode::SERVICE_UNAVAILABLE, "/problems/unavailable");
        assert!(
            !problem["detail"].as_str().unwrap().contains("sqlite"),
            "the cause is not shown: {problem}"
        );
        assert_eq!(app.get("/healthz").await.json(), json!({"status": "ok"}));
    }
}

mod openapi {
    use axum::http::StatusCode;
    use longrun_server::ServerConfig;
    use serde_json::{Value, json};

    use crate::support::TestApp;

    /// Whether `body`'s members fit `schema` (a component): every required one present and, when
    /// the schema is closed, none it does not list. Member values are not checked.
    fn members_fit(schema: &Value, body: &Value) -> bool {
        let body = body.as_object().unwrap();
        let required = schema["required"].as_array().unwrap();
        let listed = schema["properties"].as_object().unwrap();
        required
            .iter()
            .all(|name| body.contains_key(name.as_str().unwrap()))
            && (schema["additionalProperties"] != json!(false)
                || body.keys().all(|name| listed.contains_key(name)))
    }

    #[tokio::test]
    async fn every_view_of_an_operation_is_exactly_one_of_operation_view() {
        let app = TestApp::new().await;
        let doc = app.get("/openapi.json").await.json();
        let schemas = &doc["components"]["schemas"];
        let one_of: Vec<&str> = schemas["OperationView"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["$ref"].as_str().unwrap().rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            one_of,
            [
                "Operation",
                "AsyncOperation",
                "GetStatusOfAnAsyncTask",
                "AsyncTask"
            ]
        );
        for seed in &one_of[1..] {
            assert_eq!(schemas[seed]["additionalProperties"], false, "{seed}");
        }
        // The canonical resource stays open, so it can gain fields; its free JSON is any JSON.
        let operation = &schemas["Operation"];
        assert!(operation.get("additionalProperties").is_none());
        assert_eq!(operation["properties"]["args"]["items"], json!({}));
        for free in ["content", "result"] {
            assert!(
                operation["properties"][free].get("type").is_none(),
                "{free}"
            );
        }

        let op = app
            .submit(json!({"name": "views", "args": [1, "a"], "content": 5}))
            .await;
        let id = op["id"].as_str().unwrap();
        let (lease, _) = app.claim_one("views").await;
        app.post(
            &format!("/v1/operations/{id}/fail"),
            json!({"leaseId": lease, "error": {"type": "E", "message": "m"}, "retryable": false}),
        )
        .await;
        for (view, schema) in [
            ("operation", "Operation"),
            ("async-operation", "AsyncOperation"),
            ("task-status", "GetStatusOfAnAsyncTask"),
            ("async-task", "AsyncTask"),
        ] {
            let body = app
                .get(&format!("/v1/operations/{id}?view={view}"))
                .await
                .json();
            let fitting: Vec<&str> = one_of
                .iter()
                .copied()
                .filter(|name| members_fit(&schemas[*name], &body))
                .collect();
            assert_eq!(fitting, [schema], "{view}: {body}");
        }
    }

    #[tokio::test]
    async fn the_document_declares_the_configured_limits() {
        let config = ServerConfig {
            max_claim: 10,
            max_lease_secs: 100,
            max_wait_secs: 5,
            max_list_limit: 50,
            ..Default::default()
        };
        let app = TestApp::with(config).await;
        let doc = app.get("/openapi.json").await.json();
        let schemas = &doc["components"]["schemas"];
        let claim = &schemas["ClaimRequest"]["properties"];
        assert_eq!(claim["max"]["maximum"], 10);
        assert_eq!(claim["leaseSecs"]["maximum"], 100);
        assert_eq!(claim["waitSecs"]["maximum"], 5);
        assert_eq!(
            schemas["HeartbeatRequest"]["properties"]["leaseSecs"]["maximum"],
            100
        );
        let limit = doc["paths"]["/v1/operations"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["maximum"], 50);
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(
            app.get("/v1/operations?limit=51").await.status,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn the_event_stream_is_described_event_by_event() {
        let app = TestApp::new().await;
        let doc = app.get("/openapi.json").await.json();
        let stream = &doc["paths"]["/v1/operations/{id}/events"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"]["schema"];
        assert_eq!(stream["$ref"], "#/components/schemas/OperationEvent");
        let event = &doc["components"]["schemas"]["OperationEvent"];
        assert_eq!(event["required"], json!(["id", "event", "data"]));
        let data = &event["properties"]["data"];
        assert_eq!(data["contentMediaType"], "application/json");
        assert_eq!(
            data["contentSchema"]["$ref"],
            "#/components/schemas/OperationView"
        );
    }

    #[tokio::test]
    async fn the_document_describes_every_route_and_the_seed_schemas() {
        let app = TestApp::new().await;
        let reply = app.get("/openapi.json").await;
        assert_eq!(reply.status, StatusCode::OK);
        let doc = reply.json();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );

        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in [
            "AsyncOperation",
            "AsyncOperationStatus",
            "OperationError",
            "GetStatusOfAnAsyncTask",
            "AsyncTask",
            "AsyncTaskStatusEnum",
            "Operation",
            "Problem",
            "SubmitRequest",
            "ClaimRequest",
        ] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        assert_eq!(
            schemas["AsyncTaskStatusEnum"]["enum"],
            serde_json::json!(["PENDING", "PROCESSING", "COMPLETED", "FAILED"])
        );

        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/v1/operations", &["get", "post"][..]),
            ("/v1/operations/{id}", &["get", "delete"]),
            ("/v1/operations/{id}/cancel", &["post"]),
            ("/v1/operations/{id}/result", &["get"]),
            ("/v1/operations/{id}/events", &["get"]),
            ("/v1/operations/{id}/heartbeat", &["post"]),
            ("/v1/operations/{id}/complete", &["post"]),
            ("/v1/operations/{id}/fail", &["post"]),
            ("/v1/operations/{id}/release", &["post"]),
            ("/v1/workers/claim", &["post"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
        ] {
            for method in methods {
                let operation = &paths[path][*method];
                assert!(operation.is_object(), "{method} {path} missing");
                let responses = operation["responses"].as_object().unwrap();
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            response["content"]
                                .get("application/problem+json")
                                .is_some(),
                            "{method} {path} {status} is not a problem"
                        );
                    }
                }
            }
        }
        let submit = &paths["/v1/operations"]["post"];
        assert!(
            submit["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap()
                .ends_with("SubmitRequest")
        );
        let headers = submit["responses"]["202"]["headers"].as_object().unwrap();
        for header in ["Location", "Operation-Location", "Retry-After"] {
            assert!(headers.contains_key(header), "{header}");
        }
        let refs = doc.to_string();
        assert!(refs.contains("#/components/schemas/OperationView"));
        let view = &schemas["OperationView"]["oneOf"];
        assert_eq!(view.as_array().map(Vec::len), Some(4), "{view}");
        assert!(
            doc["info"]["title"]
                .as_str()
                .is_some_and(|t: &str| !t.is_empty())
        );
    }

    #[tokio::test]
    async fn docs_serve_the_swagger_ui_offline() {
        let app = TestApp::new().await;
        let docs = app.get("/docs").await;
        assert!(
            docs.status.is_redirection() || docs.status == StatusCode::OK,
            "{}",
            docs.status
        );
        let page = app.get("/docs/").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(page.text().to_lowercase().contains("swagger"));
        let init = app.get("/docs/swagger-initializer.js").await;
        assert_eq!(init.status, StatusCode::OK);
        assert!(init.text().contains("/openapi.json"));
        let bundle = app.get("/docs/swagger-ui-bundle.js").await;
        assert_eq!(
            bundle.status,
            StatusCode::OK,
            "the UI's script is served, not fetched from a CDN"
        );
        assert!(bundle.body.len() > 100_000);
    }
}

mod auth {
    use std::time::Duration;

    use axum::http::{Method, StatusCode};
    use longrun_core::{Role, Store, Token};
    use longrun_server::ServerConfig;
    use serde_json::json;

    use crate::support::{Key, TestApp, v1_routes};

    const CHALLENGE: &str = r#"Bearer realm="longrun""#;
    const INVALID_TOKEN: &str = r#"Bearer realm="longrun", error="invalid_token""#;

    #[tokio::test]
    async fn every_v1_route_needs_a_key_and_the_probes_and_docs_stay_public() {
        let app = TestApp::new().await;
        let admin = app.key(10, 1, Role::Admin).await;
        let op = app.submit_as(&admin, json!({"name": "guarded"})).await;
        let id = op["id"].as_str().unwrap();
        for (method, uri, body) in v1_routes(id, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b") {
            let reply = app.call(method.clone(), &uri, body, &[]).await;
            let problem = reply.problem(StatusCode::UNAUTHORIZED, "/problems/unauthorized");
            assert_eq!(
                reply.header("www-authenticate"),
                Some(CHALLENGE),
                "{method} {uri}"
            );
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Authorization")
            );
        }
        for uri in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
            assert_eq!(app.get(uri).await.status, StatusCode::OK, "{uri}");
        }
        let now = app
            .get_as(&admin, &format!("/v1/operations/{id}"))
            .await
            .json();
        assert_eq!(now, op, "refused requests changed nothing");
        let listed = app.get_as(&admin, "/v1/operations").await.json();
        assert_eq!(
            listed["operations"].as_array().unwrap().len(),
            1,
            "no probe was submitted"
        );
    }

    #[tokio::test]
    async fn bad_and_revoked_keys_are_401_and_uncached_revocation_is_immediate() {
        let (app, key) = key_in_use(Duration::ZERO).await;

        let good = key.bearer.strip_prefix("Bearer ").unwrap().to_owned();
        let stored = Token::parse(&good).unwrap();
        let wrong_secret = Token {
            id: stored.id,
            secret: "0".repeat(64),
        };
        let mut invalid = Vec::new();
        for authorization in [
            "Bearer".to_owned(),
            "Bearer nonsense".to_owned(),
            format!("Basic {good}"),
            format!("Bearer {}", &good[..good.len() - 1]),
            format!("Bearer {}", Token::generate()),
            format!("Bearer {wrong_secret}"),
        ] {
            let reply = app
                .call(
                    Method::GET,
                    "/v1/operations",
                    None,
                    &[("authorization", &authorization)],
                )
                .await;
            let problem = reply.problem(StatusCode::UNAUTHORIZED, "/problems/unauthorized");
            assert_eq!(
                reply.header("www-authenticate"),
                Some(INVALID_TOKEN),
                "{authorization}"
            );
            invalid.push(problem);
        }
        // An unknown id and a wrong secret answer alike: nothing tells which.
        assert_eq!(invalid[4], invalid[5]);

        // Lower-case scheme and surrounding spaces are fine.
        let relaxed = format!("bearer   {good} ");
        let reply = app
            .call(
                Method::GET,
                "/v1/operations",
                None,
                &[("authorization", &relaxed)],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        app.store.revoke_key(key.id).await.unwrap();
        let revoked = app.get_as(&key, "/v1/operations").await;
        let problem = revoked.problem(StatusCode::UNAUTHORIZED, "/problems/unauthorized");
        assert_eq!(
            problem, invalid[5],
            "a revoked key answers like an unknown one"
        );
    }

    /// A server keeping keys for `ttl`, and a key it has read once.
    async fn key_in_use(ttl: Duration) -> (TestApp, Key) {
        let app = TestApp::with(ServerConfig {
            key_cache_ttl: ttl,
            ..Default::default()
        })
        .await;
        let key = app.key(10, 1, Role::Submitter).await;
        assert_eq!(
            app.get_as(&key, "/v1/operations").await.status,
            StatusCode::OK
        );
        (app, key)
    }

    /// [`key_in_use`], then revoked.
    async fn key_read_then_revoked(ttl: Duration) -> (TestApp, Key) {
        let (app, key) = key_in_use(ttl).await;
        app.store.revoke_key(key.id).await.unwrap();
        (app, key)
    }

    #[tokio::test]
    async fn a_cached_key_still_needs_its_secret_and_a_revoked_key_stops_within_the_cache_time() {
        // Kept for a minute: a revocation is not seen yet, a wrong secret is refused all the same.
        let (app, key) = key_read_then_revoked(Duration::from_secs(60)).await;
        assert_eq!(
            app.get_as(&key, "/v1/operations").await.status,
            StatusCode::OK,
            "the key was read less than a minute ago"
        );
        let wrong_secret = Token {
            id: key.id,
            secret: "0".repeat(64),
        };
        let wrong = app
            .call(
                Method::GET,
                "/v1/operations",
                None,
                &[("authorization", &format!("Bearer {wrong_secret}"))],
            )
            .await;
        wrong.problem(StatusCode::UNAUTHORIZED, "/problems/unauthorized");

        // Kept for 200 ms: the revocation takes effect once the entry is that old.
        let (app, key) = key_read_then_revoked(Duration::from_millis(200)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.get_as(&key, "/v1/operations").await.status != StatusCode::UNAUTHORIZED {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the revoked key kept working"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_first_key_turns_authentication_on_without_a_restart_and_it_stays_on() {
        let app = TestApp::with(ServerConfig {
            key_recheck_interval: Duration::from_millis(100),
            key_cache_ttl: Duration::ZERO,
            ..Default::default()
        })
        .await;
        // Open: no key needed, and a key-looking header is ignored.
        assert_eq!(app.get("/v1/operations").await.status, StatusCode::OK);
        let header = [("authorization", "Bearer garbage")];
        let open = app.call(Method::GET, "/v1/operations", None, &header).await;
        assert_eq!(open.status, StatusCode::OK);
        let op = app.submit_named("before.keys").await;
        assert_eq!(op["customer"], 1, "open mode submits as the default owner");

        let key = app.key(10, 1, Role::Admin).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.get("/v1/operations").await.status != StatusCode::UNAUTHORIZED {
            assert!(
                tokio::time::Instant::now() < deadline,
                "authentication never turned on"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            app.get_as(&key, "/v1/operations").await.status,
            StatusCode::OK
        );

        // Revoking the last key locks everyone out; it does not open the server again.
        app.store.revoke_key(key.id).await.unwrap();
        assert!(!app.store.has_active_keys().await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.get("/v1/operations")
            .await
            .problem(StatusCode::UNAUTHORIZED, "/problems/unauthorized");
        app.get_as(&key, "/v1/operations")
            .await
            .problem(StatusCode::UNAUTHORIZED, "/problems/unauthorized");
    }
}

mod roles {
    use axum::http::{Method, StatusCode};
    use longrun_core::{NewKey, Role};
    use serde_json::{Value, json};

    use crate::support::{TestApp, v1_routes};

    #[tokio::test]
    async fn each_role_gets_403_outside_its_routes_and_nothing_changes() {
        let app = TestApp::new().await;
        let submitter = app.key(10, 1, Role::Submitter).await;
        let worker = app.key(10, 2, Role::Worker).await;
        let admin = app.key(10, 3, Role::Admin).await;
        let op = app.submit_as(&submitter, json!({"name": "matrix"})).await;
        let id = op["id"].as_str().unwrap();
        let lease = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

        let routes = v1_routes(id, lease);
        let (client, work) = routes.split_at(8);
        for (method, uri, body) in client {
            let reply = app
                .call_as(&worker, method.clone(), uri, body.clone(), &[])
                .await;
            let problem = reply.problem(StatusCode::FORBIDDEN, "/problems/forbidden");
            assert!(
                problem["detail"].as_str().unwrap().contains("worker"),
                "{method} {uri}: {problem}"
            );
        }
        for (method, uri, body) in work {
            let reply = app
                .call_as(&submitter, method.clone(), uri, body.clone(), &[])
                .await;
            let problem = reply.problem(StatusCode::FORBIDDEN, "/problems/forbidden");
            assert!(
                problem["detail"].as_str().unwrap().contains("submitter"),
                "{method} {uri}: {problem}"
            );
        }
        // Nothing was submitted, claimed, cancelled or deleted.
        assert_eq!(
            app.get_as(&admin, &format!("/v1/operations/{id}"))
                .await
                .json(),
            op
        );
        let all = app.get_as(&admin, "/v1/operations").await.json();
        assert_eq!(all["operations"].as_array().unwrap().len(), 1);

        // The admin may do both sides.
        let (lease, _) = app.claim_one_as(&admin, "matrix").await;
        let done = app
            .post_as(
                &admin,
                &format!("/v1/operations/{id}/complete"),
                json!({"leaseId": lease, "result": 1}),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        let result = app
            .get_as(&admin, &format!("/v1/operations/{id}/result"))
            .await;
        assert_eq!(result.json(), json!(1));
        let deleted = app
            .call_as(
                &admin,
                Method::DELETE,
                &format!("/v1/operations/{id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn owner_fields_come_from_the_key_never_from_the_body() {
        let app = TestApp::new().await;
        let alice = app
            .key_for(NewKey {
                customer: 10,
                customer_name: "Acme".into(),
                user: 7,
                user_name: "alice".into(),
                role: Role::Submitter,
                names: vec![],
                queues: vec![],
            })
            .await;
        let op = app.submit_as(&alice, json!({"name": "owned"})).await;
        assert_eq!(
            (op["customer"].clone(), op["createdBy"].clone()),
            (json!(10), json!(7))
        );
        assert_eq!(op["createdByName"], "alice");
        for field in ["customer", "createdBy", "createdByName"] {
            let mut body = json!({"name": "spoof"});
            body[field] = json!(99);
            let reply = app.post_as(&alice, "/v1/operations", body).await;
            let problem = reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
            assert!(
                problem["detail"].as_str().unwrap().contains(field),
                "{problem}"
            );
        }
    }

    #[tokio::test]
    async fn a_workers_child_belongs_to_its_parents_customer_and_needs_a_running_parent() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let b = app.key(20, 2, Role::Submitter).await;
        let robot = app.key(99, 5, Role::Worker).await;
        let parent = app.submit_as(&a, json!({"name": "job.parent"})).await;
        let waiting = app.submit_as(&a, json!({"name": "job.waiting"})).await;
        app.claim_one_as(&robot, "job.parent").await;

        let child = app
            .submit_as(
                &robot,
                json!({"name": "job.child", "parentId": parent["id"]}),
            )
            .await;
        assert_eq!(child["customer"], 10, "the parent's customer");
        assert_eq!(child["createdBy"], 5, "the worker key's user");
        assert_eq!(child["createdByName"], "user-5");
        assert_eq!(child["rootId"], parent["id"]);
        let child_uri = format!("/v1/operations/{}", child["id"].as_str().unwrap());
        assert_eq!(app.get_as(&a, &child_uri).await.json(), child);
        app.get_as(&b, &child_uri)
            .await
            .problem(StatusCode::NOT_FOUND, "/problems/not-found");

        let root = app
            .post_as(&robot, "/v1/operations", json!({"name": "job.root"}))
            .await;
        root.problem(StatusCode::FORBIDDEN, "/problems/forbidden");
        // A parent the worker is not running is as good as unknown.
        let of_pending = app
            .post_as(
                &robot,
                "/v1/operations",
                json!({"name": "job.child", "parentId": waiting["id"]}),
            )
            .await;
        let unknown = app
            .post_as(
                &robot,
                "/v1/operations",
                json!({"name": "job.child", "parentId": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}),
            )
            .await;
        let problem = of_pending.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/parent-not-found",
        );
        let expected = unknown.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/parent-not-found",
        );
        assert_eq!(
            problem
                .to_string()
                .replace(waiting["id"].as_str().unwrap(), "ID"),
            expected
                .to_string()
                .replace("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "ID")
        );
    }

    #[tokio::test]
    async fn a_worker_keys_names_and_queues_bound_what_it_claims() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let renderer = app
            .key_for(NewKey {
                customer: 99,
                customer_name: "ops".into(),
                user: 5,
                user_name: "renderer".into(),
                role: Role::Worker,
                names: vec!["render".into()],
                queues: vec!["gpu".into()],
            })
            .await;
        for (name, queue) in [("render", "gpu"), ("render", "default"), ("other", "gpu")] {
            app.submit_as(&a, json!({"name": name, "queue": queue}))
                .await;
        }
        let claim = |body: Value| app.post_as(&renderer, "/v1/workers/claim", body);
        claim(json!({"worker": "w", "names": ["other"]}))
            .await
            .problem(StatusCode::FORBIDDEN, "/problems/forbidden");
        claim(json!({"worker": "w", "queues": ["default"]}))
            .await
            .problem(StatusCode::FORBIDDEN, "/problems/forbidden");
        let reply = claim(json!({"worker": "w", "names": ["other", "render"], "max": 10})).await;
        let leases = reply.json()["leases"].as_array().unwrap().clone();
        assert_eq!(leases.len(), 1, "{leases:?}");
        assert_eq!(leases[0]["operation"]["name"], "render");
        assert_eq!(leases[0]["operation"]["queue"], "gpu");
        let reply = claim(json!({"worker": "w", "max": 10})).await;
        assert_eq!(
            reply.json()["leases"],
            json!([]),
            "nothing else is within the key"
        );

        // A child of an operation outside the key's names is refused even while it runs.
        let any = app.key(99, 6, Role::Worker).await;
        let (_, other) = app.claim_one_as(&any, "other").await;
        let child = app
            .post_as(
                &renderer,
                "/v1/operations",
                json!({"name": "c", "parentId": other["id"]}),
            )
            .await;
        child.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/parent-not-found",
        );
    }
}

mod tenants {
    use std::time::{Duration, Instant};

    use axum::http::{Method, StatusCode};
    use longrun_core::Role;
    use serde_json::{Value, json};

    use crate::support::{Key, TestApp, open_events};

    const UNKNOWN: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

    /// Asserts that asking for `id` answers exactly what asking for an unknown id does.
    async fn as_if_unknown(
        app: &TestApp,
        key: &Key,
        method: Method,
        suffix: &str,
        id: &str,
        headers: &[(&str, &str)],
    ) {
        let theirs = app
            .call_as(
                key,
                method.clone(),
                &format!("/v1/operations/{id}{suffix}"),
                None,
                headers,
            )
            .await;
        let nobody = app
            .call_as(
                key,
                method.clone(),
                &format!("/v1/operations/{UNKNOWN}{suffix}"),
                None,
                headers,
            )
            .await;
        theirs.problem(StatusCode::NOT_FOUND, "/problems/not-found");
        assert_eq!(
            theirs.text().replace(id, "ID"),
            nobody.text().replace(UNKNOWN, "ID"),
            "{method} {suffix}"
        );
        assert_eq!(
            theirs.headers.len(),
            nobody.headers.len(),
            "{method} {suffix}"
        );
    }

    #[tokio::test]
    async fn another_tenants_operation_is_404_on_every_route_and_is_left_alone() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let b = app.key(20, 2, Role::Submitter).await;
        let worker = app.key(99, 3, Role::Worker).await;
        let pending = app.submit_as(&a, json!({"name": "iso.pending"})).await;
        let done = app.submit_as(&a, json!({"name": "iso.done"})).await;
        let (lease, _) = app.claim_one_as(&worker, "iso.done").await;
        let done_id = done["id"].as_str().unwrap();
        let completed = app
            .post_as(
                &worker,
                &format!("/v1/operations/{done_id}/complete"),
                json!({"leaseId": lease, "result": "secret"}),
            )
            .await;
        assert_eq!(completed.status, StatusCode::OK);
        let done = app
            .get_as(&a, &format!("/v1/operations/{done_id}"))
            .await
            .json();

        for op in [&pending, &done] {
            let id = op["id"].as_str().unwrap();
            for (method, suffix) in [
                (Method::GET, ""),
                (Method::DELETE, ""),
                (Method::POST, "/cancel"),
                (Method::GET, "/result"),
                (Method::GET, "/events"),
            ] {
                as_if_unknown(&app, &b, method, suffix, id, &[]).await;
            }
            // A long-poll answers at once, as for an unknown id.
            let started = Instant::now();
            as_if_unknown(&app, &b, Method::GET, "", id, &[("prefer", "wait=5")]).await;
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "the long-poll waited"
            );
            let unchanged = app.get_as(&a, &format!("/v1/operations/{id}")).await.json();
            assert_eq!(&unchanged, op, "b's requests changed a's operation");
        }
        let result = app
            .get_as(&a, &format!("/v1/operations/{done_id}/result"))
            .await;
        assert_eq!(result.json(), json!("secret"));

        // A child of another tenant's operation: its parent is as good as unknown.
        let child = |parent: &str| {
            app.post_as(
                &b,
                "/v1/operations",
                json!({"name": "c", "parentId": parent}),
            )
        };
        let theirs = child(pending["id"].as_str().unwrap()).await;
        let nobody = child(UNKNOWN).await;
        theirs.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/parent-not-found",
        );
        assert_eq!(
            theirs.text().replace(pending["id"].as_str().unwrap(), "ID"),
            nobody.text().replace(UNKNOWN, "ID")
        );
    }

    fn ids(reply: &crate::support::Reply) -> Vec<Value> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["id"].clone())
            .collect()
    }

    #[tokio::test]
    async fn listings_show_only_the_callers_tenant_whatever_the_filters() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let b = app.key(20, 2, Role::Submitter).await;
        let admin = app.key(30, 3, Role::Admin).await;
        let a1 = app.submit_as(&a, json!({"name": "list.x"})).await;
        let a2 = app
            .submit_as(&a, json!({"name": "list.x", "parentId": a1["id"]}))
            .await;
        let b1 = app.submit_as(&b, json!({"name": "list.x"})).await;

        assert_eq!(
            ids(&app.get_as(&a, "/v1/operations").await),
            vec![a2["id"].clone(), a1["id"].clone()]
        );
        assert_eq!(
            ids(&app.get_as(&b, "/v1/operations?name=list.x").await),
            vec![b1["id"].clone()]
        );
        let a1_id = a1["id"].as_str().unwrap();
        for query in [
            "customer=10".to_owned(),
            format!("parentId={a1_id}"),
            format!("rootId={a1_id}"),
            "customer=10&status=pending".to_owned(),
        ] {
            let reply = app.get_as(&b, &format!("/v1/operations?{query}")).await;
            assert_eq!(ids(&reply), Vec::<Value>::new(), "{query}");
        }
        assert_eq!(
            ids(&app.get_as(&b, "/v1/operations?customer=20").await),
            vec![b1["id"].clone()]
        );
        assert_eq!(ids(&app.get_as(&admin, "/v1/operations").await).len(), 3);
        assert_eq!(
            ids(&app.get_as(&admin, "/v1/operations?customer=10").await),
            vec![a2["id"].clone(), a1["id"].clone()]
        );
        app.get_as(&admin, "/v1/operations?customer=ten")
            .await
            .problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
    }

    #[tokio::test]
    async fn an_admin_sees_and_manages_every_tenant() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let admin = app.key(30, 3, Role::Admin).await;
        let op = app.submit_as(&a, json!({"name": "adm"})).await;
        let id = op["id"].as_str().unwrap();
        assert_eq!(
            app.get_as(&admin, &format!("/v1/operations/{id}"))
                .await
                .json(),
            op
        );
        let cancelled = app
            .call_as(
                &admin,
                Method::POST,
                &format!("/v1/operations/{id}/cancel"),
                None,
                &[],
            )
            .await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
        assert_eq!(cancelled.json()["customer"], 10);
    }

    #[tokio::test]
    async fn idempotency_keys_of_two_tenants_do_not_collide() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let b = app.key(20, 2, Role::Submitter).await;
        let send = |key: &Key, body: Value| {
            let key = key.clone();
            let app = &app;
            async move {
                app.call_as(
                    &key,
                    Method::POST,
                    "/v1/operations",
                    Some(body),
                    &[("idempotency-key", "same")],
                )
                .await
            }
        };
        let first_a = send(&a, json!({"name": "pay", "kwargs": {"to": "a"}})).await;
        let first_b = send(&b, json!({"name": "pay", "kwargs": {"to": "b"}})).await;
        for reply in [&first_a, &first_b] {
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
            assert_eq!(reply.header("idempotent-replayed"), None);
        }
        assert_ne!(first_a.json()["id"], first_b.json()["id"]);
        let again_b = send(&b, json!({"name": "pay", "kwargs": {"to": "b"}})).await;
        assert_eq!(again_b.header("idempotent-replayed"), Some("true"));
        assert_eq!(again_b.json()["id"], first_b.json()["id"]);
        assert_eq!(again_b.json()["customer"], 20);
        send(&a, json!({"name": "pay", "kwargs": {"to": "b"}}))
            .await
            .problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
            );
    }

    #[tokio::test]
    async fn the_event_stream_of_another_tenants_operation_is_404() {
        let app = TestApp::new().await;
        let a = app.key(10, 1, Role::Submitter).await;
        let b = app.key(20, 2, Role::Submitter).await;
        let op = app.submit_as(&a, json!({"name": "sse"})).await;
        let uri = format!("/v1/operations/{}/events", op["id"].as_str().unwrap());
        app.get_as(&b, &uri)
            .await
            .problem(StatusCode::NOT_FOUND, "/problems/not-found");
        let mut own = open_events(&app, &uri, &[("authorization", &a.bearer)]).await;
        let first = own.next().await.unwrap();
        assert_eq!(first.event.as_deref(), Some("pending"));
        assert_eq!(first.json()["customer"], 10);
    }
}

mod limits {
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use longrun_core::write::Edit;
    use longrun_core::{
        ApiKey, Change, ClaimFilter, ClaimQuery, Lease, ListQuery, NewKey, NewOperation, Operation,
        Page, Role, Store, StoreError, Submitted, Token,
    };
    use longrun_server::{RateLimit, ServerConfig};
    use longrun_sqlite::SqliteStore;
    use serde_json::{Value, json};
    use time::OffsetDateTime;
    use tokio::sync::{Notify, Semaphore, broadcast};
    use tower::ServiceExt;
    use uuid::Uuid;

    use crate::support::{HOST, TestApp};

    #[tokio::test]
    async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected() {
        let app = TestApp::with(ServerConfig {
            rate_limit: Some(RateLimit {
                per_second: NonZeroU32::new(1).unwrap(),
                burst: NonZeroU32::new(3).unwrap(),
            }),
            ..Default::default()
        })
        .await;
        let busy = app.key(10, 1, Role::Submitter).await;
        let calm = app.key(10, 2, Role::Submitter).await;
        for _ in 0..3 {
            assert_eq!(
                app.get_as(&busy, "/v1/operations").await.status,
                StatusCode::OK
            );
        }
        let mut refused = None;
        for _ in 0..20 {
            let reply = app.get_as(&busy, "/v1/operations").await;
            if reply.status == StatusCode::TOO_MANY_REQUESTS {
                refused = Some(reply);
                break;
            }
        }
        let refused = refused.expect("no 429 after the burst");
        refused.problem(StatusCode::TOO_MANY_REQUESTS, "/problems/rate-limited");
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(
            app.get_as(&calm, "/v1/operations").await.status,
            StatusCode::OK
        );

        // Failed authentication is charged to the client, so guessing keys is limited too.
        let guess = crate::support::Key {
            id: Uuid::nil(),
            bearer: format!("Bearer {}", Token::generate()),
        };
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(app.get_as(&guess, "/v1/operations").await.status);
        }
        assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3]);
        assert!(
            statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            app.get_as(&busy, "/v1/operations").await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn args_kwargs_content_and_result_over_the_field_limit_are_422() {
        let app = TestApp::with(ServerConfig {
            max_field_bytes: 1024,
            ..Default::default()
        })
        .await;
        let big = "x".repeat(1100);
        for (field, value) in [
            ("args", json!([big])),
            ("kwargs", json!({"k": big})),
            ("content", json!(big)),
        ] {
            let mut body = json!({"name": "big"});
            body[field] = value;
            let reply = app.post("/v1/operations", body).await;
            let problem = reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("`{field}`")) && detail.contains("1024"),
                "{detail}"
            );
        }
        // Exactly at the limit is fine: a 1022-character string is 1024 bytes as JSON.
        let at_limit = app
            .submit(json!({"name": "big", "content": "x".repeat(1022)}))
            .await;
        assert_eq!(at_limit["content"].as_str().unwrap().len(), 1022);

        let (lease, _) = app.claim_one("big").await;
        let id = at_limit["id"].as_str().unwrap();
        let before = app.operation(id).await;
        let reply = app
            .post(
                &format!("/v1/operations/{id}/complete"),
                json!({"leaseId": lease, "result": {"k": big}}),
            )
            .await;
        let problem = reply.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-failed",
        );
        assert!(problem["detail"].as_str().unwrap().contains("`result`"));
        assert_eq!(
            app.operation(id).await,
            before,
            "the rejected completion changed nothing"
        );
        let done = app
            .post(
                &format!("/v1/operations/{id}/complete"),
                json!({"leaseId": lease, "result": "small"}),
            )
            .await;
        assert_eq!(
            done.status,
            StatusCode::OK,
            "the lease still holds: {}",
            done.text()
        );
        assert_eq!(done.json()["result"], "small");
    }

    #[tokio::test]
    async fn a_worker_name_uses_the_characters_of_a_task_name() {
        let app = TestApp::new().await;
        for worker in ["has space", "tab\t", "", &"w".repeat(201)] {
            let reply = app
                .post("/v1/workers/claim", json!({"worker": worker}))
                .await;
            let problem = reply.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
            assert!(
                problem["detail"].as_str().unwrap().contains("`worker`"),
                "{problem}"
            );
        }
        let host_pid = app
            .post("/v1/workers/claim", json!({"worker": "build-7.example:42"}))
            .await;
        assert_eq!(host_pid.status, StatusCode::OK, "{}", host_pid.text());
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    async fn raw(app: &TestApp, uri: &str, body: String) -> crate::support::Reply {
        let request = Request::post(uri)
            .header("host", HOST)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        app.send(request).await
    }

    #[tokio::test]
    async fn bodies_nested_too_deep_are_422_on_every_body_route_even_far_past_the_parser_limit() {
        let app = TestApp::new().await;
        // The body is level 1, so content may nest 31 more.
        let ok = raw(
            &app,
            "/v1/operations",
            format!(r#"{{"name":"deep","content":{}}}"#, nested(31)),
        )
        .await;
        assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text());
        let too_deep = raw(
            &app,
            "/v1/operations",
            format!(r#"{{"name":"deep","content":{}}}"#, nested(32)),
        )
        .await;
        let problem = too_deep.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-failed",
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("deeper than 32"),
            "{problem}"
        );
        // Brackets inside strings are text, not nesting.
        let text = raw(
            &app,
            "/v1/operations",
            format!(r#"{{"name":"deep","content":"{}"}}"#, nested(100)),
        )
        .await;
        assert_eq!(text.status, StatusCode::ACCEPTED, "{}", text.text());

        let id = ok.json()["id"].as_str().unwrap().to_owned();
        let lease = r#""leaseId":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b""#;
        let far = nested(100_000);
        for (uri, body) in [
            ("/v1/operations".to_owned(), far.clone()),
            (
                "/v1/workers/claim".to_owned(),
                format!(r#"{{"worker":"w","names":{far}}}"#),
            ),
            (
                format!("/v1/operations/{id}/heartbeat"),
                format!("{{{lease},\"x\":{far}}}"),
            ),
            (
                format!("/v1/operations/{id}/complete"),
                format!("{{{lease},\"result\":{far}}}"),
            ),
            (
                format!("/v1/operations/{id}/fail"),
                format!("{{{lease},\"error\":{far}}}"),
            ),
            (
                format!("/v1/operations/{id}/release"),
                format!("{{{lease},\"x\":{far}}}"),
            ),
        ] {
            raw(&app, &uri, body).await.problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/validation-failed",
            );
        }

        // With the depth check raised past serde_json's own limit (128), that limit is a 400.
        let lax = TestApp::with(ServerConfig {
            max_json_depth: 100_000,
            ..Default::default()
        })
        .await;
        raw(&lax, "/v1/operations", nested(200))
            .await
            .problem(StatusCode::BAD_REQUEST, "/problems/bad-request");
    }

    /// The SQLite store, holding every submit until the test lets it through.
    struct HeldSubmits {
        inner: Arc<SqliteStore>,
        arrived: Notify,
        permits: Semaphore,
    }

    #[async_trait::async_trait]
    impl Store for HeldSubmits {
        async fn submit(&self, new: NewOperation) -> Result<Submitted, StoreError> {
            self.arrived.notify_one();
            let _permit = self.permits.acquire().await.unwrap();
            self.inner.submit(new).await
        }
        async fn get(&self, id: Uuid) -> Result<Option<Operation>, StoreError> {
            self.inner.get(id).await
        }
        async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
            self.inner.list(query).await
        }
        async fn edit(&self, id: Uuid, edit: Edit) -> Result<Operation, StoreError> {
            self.inner.edit(id, edit).await
        }
        async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
            self.inner.delete(id).await
        }
        async fn claim(&self, query: &ClaimQuery) -> Result<Vec<Lease>, StoreError> {
            self.inner.claim(query).await
        }
        async fn next_run_at(
            &self,
            filter: &ClaimFilter,
        ) -> Result<Option<OffsetDateTime>, StoreError> {
            self.inner.next_run_at(filter).await
        }
        async fn expire_leases(&self) -> Result<u64, StoreError> {
            self.inner.expire_leases().await
        }
        async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
            self.inner.prune(before).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        fn subscribe(&self) -> broadcast::Receiver<Change> {
            self.inner.subscribe()
        }
        async fn create_key(&self, key: NewKey, token: &Token) -> Result<ApiKey, StoreError> {
            self.inner.create_key(key, token).await
        }
        async fn find_key(&self, id: Uuid) -> Result<Option<(ApiKey, String)>, StoreError> {
            self.inner.find_key(id).await
        }
        async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
            self.inner.list_keys().await
        }
        async fn revoke_key(&self, id: Uuid) -> Result<ApiKey, StoreError> {
            self.inner.revoke_key(id).await
        }
        async fn has_active_keys(&self) -> Result<bool, StoreError> {
            self.inner.has_active_keys().await
        }
    }

    #[tokio::test]
    async fn a_retry_while_the_first_request_is_in_flight_is_409_then_replays() {
        let held = Arc::new(std::sync::OnceLock::<Arc<HeldSubmits>>::new());
        let slot = held.clone();
        let app = TestApp::wrapping(ServerConfig::default(), move |inner| {
            let store = Arc::new(HeldSubmits {
                inner,
                arrived: Notify::new(),
                permits: Semaphore::new(0),
            });
            slot.set(store.clone()).ok().unwrap();
            store as Arc<dyn Store>
        })
        .await;
        let held = held.get().unwrap().clone();
        let request = |body: &Value| {
            Request::post("/v1/operations")
                .header("host", HOST)
                .header("content-type", "application/json")
                .header("idempotency-key", "order-7")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        let body = json!({"name": "pay"});
        let first = tokio::spawn(app.router.clone().oneshot(request(&body)));
        tokio::time::timeout(Duration::from_secs(10), held.arrived.notified())
            .await
            .expect("the first submit reached the store");

        let retry = app.send(request(&body)).await;
        let problem = retry.problem(StatusCode::CONFLICT, "/problems/idempotency-key-in-flight");
        assert!(problem["detail"].as_str().unwrap().contains("order-7"));
        assert_eq!(retry.header("retry-after"), Some("1"));

        held.permits.add_permits(10);
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::ACCEPTED);
        let replay = app.send(request(&body)).await;
        assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.text());
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        let listed = app.get("/v1/operations").await.json();
        assert_eq!(listed["operations"].as_array().unwrap().len(), 1);
        assert_eq!(listed["operations"][0]["id"], replay.json()["id"]);
    }
}

mod security_doc {
    use longrun_core::Role;

    use crate::support::TestApp;

    #[tokio::test]
    async fn the_document_declares_the_bearer_scheme_and_its_answers() {
        let app = TestApp::new().await;
        // Documentation stays public with authentication on.
        app.key(10, 1, Role::Admin).await;
        let doc = app.get("/openapi.json").await.json();
        let scheme = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                if !path.starts_with("/v1/") {
                    assert!(
                        operation.get("security").is_none(),
                        "{method} {path} is public"
                    );
                    assert!(responses.get("401").is_none(), "{method} {path}");
                    continue;
                }
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{"bearer": []}]),
                    "{method} {path}"
                );
                for status in ["401", "403", "429", "503"] {
                    assert!(
                        responses[status]["content"]["application/problem+json"].is_object(),
                        "{method} {path} {status}"
                    );
                }
                assert!(responses["401"]["headers"]["WWW-Authenticate"].is_object());
                assert!(responses["429"]["headers"]["Retry-After"].is_object());
            }
        }
        let submit = &doc["paths"]["/v1/operations"]["post"]["responses"];
        assert!(submit["409"]["headers"]["Retry-After"].is_object());
    }
}

mod fuzz {
    //! Arbitrary bodies (JSON of any shape, near-miss fields, deep nesting, raw bytes, other
    //! content types) against every body route: never a 5xx, and every 4xx a problem document.

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use longrun_core::Role;
    use longrun_server::ServerConfig;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::{Map, Value, json};

    use crate::support::{HOST, Key, TestApp};

    /// Field names of the request bodies, so generated objects often come close to valid.
    const FIELDS: &[&str] = &[
        "name",
        "args",
        "kwargs",
        "content",
        "meta",
        "url",
        "parentId",
        "maxRetries",
        "backoffBaseSecs",
        "backoffCapSecs",
        "runAt",
        "queue",
        "priority",
        "worker",
        "names",
        "queues",
        "max",
        "leaseSecs",
        "waitSecs",
        "leaseId",
        "progressPct",
        "statusDetail",
        "result",
        "resultUrl",
        "resources",
        "error",
        "type",
        "message",
        "code",
        "retryable",
    ];

    fn json_value(known: Vec<String>) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-200i64..200).prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::from),
            "[a-z.:_-]{1,12}".prop_map(Value::from),
            proptest::sample::select(known).prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            let key = prop_oneof![
                3 => proptest::sample::select(FIELDS).prop_map(str::to_owned),
                1 => ".{0,8}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// `valid` with up to three fields set to anything or removed.
    fn near(valid: Value, known: Vec<String>) -> impl Strategy<Value = Value> {
        let edit = (
            proptest::sample::select(FIELDS),
            proptest::option::of(json_value(known)),
        );
        proptest::collection::vec(edit, 0..3).prop_map(move |edits| {
            let mut body = valid.clone();
            let fields = body.as_object_mut().unwrap();
            for (field, value) in edits {
                match value {
                    Some(value) => fields.insert(field.to_owned(), value),
                    None => fields.remove(field),
                };
            }
            body
        })
    }

    /// A body for a route whose valid body is `valid`.
    fn body(valid: Value, known: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            5 => near(valid, known.clone()).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            2 => json_value(known.clone()).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            1 => (json_value(known), any::<proptest::sample::Index>())
                .prop_map(|(v, at)| {
                    let bytes = serde_json::to_vec(&v).unwrap();
                    bytes[..at.index(bytes.len() + 1)].to_vec()
                }),
            1 => proptest::collection::vec(any::<u8>(), 0..256),
            1 => (1usize..400).prop_map(|depth| {
                format!("{{\"name\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
            }),
        ]
    }

    #[test]
    fn arbitrary_bodies_never_answer_5xx_and_every_4xx_is_a_problem() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (app, key, id, lease) = runtime.block_on(async {
            let app = TestApp::with(ServerConfig {
                max_wait_secs: 1,
                rate_limit: None,
                ..Default::default()
            })
            .await;
            let key = app.key(10, 1, Role::Admin).await;
            let op = app.submit_as(&key, json!({"name": "fuzzed"})).await;
            let (lease, _) = app.claim_one_as(&key, "fuzzed").await;
            (app, key, op["id"].as_str().unwrap().to_owned(), lease)
        });
        let app: Arc<TestApp> = Arc::new(app);
        let key: Key = key;
        let op = format!("/v1/operations/{id}");
        let unknown = "/v1/operations/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let completion = json!({"leaseId": lease, "result": {"r": 1}, "resultUrl": "https://x.test/r",
                                "resources": [{"type": "file", "id": "1", "url": "https://x.test/f"}]});
        let routes = vec![
            (
                "/v1/operations".to_owned(),
                json!({"name": "fuzzed", "args": [1], "kwargs": {"a": "b"},
                "content": {"c": [true]}, "queue": "default", "priority": 1, "maxRetries": 2,
                "runAt": "2020-01-01T00:00:00Z", "parentId": id}),
            ),
            (
                "/v1/workers/claim".to_owned(),
                json!({"worker": "w", "names": ["fuzzed"],
                "queues": ["default"], "max": 2, "leaseSecs": 30, "waitSecs": 0}),
            ),
            (
                format!("{op}/heartbeat"),
                json!({"leaseId": lease, "progressPct": 10.5,
                "statusDetail": "half", "leaseSecs": 30}),
            ),
            (format!("{op}/complete"), completion.clone()),
            (
                format!("{op}/fail"),
                json!({"leaseId": lease,
                "error": {"type": "E", "message": "m", "code": "c"}, "retryable": true}),
            ),
            (format!("{op}/release"), json!({"leaseId": lease})),
            (format!("{unknown}/complete"), completion),
        ];
        let known = vec![id.clone(), lease.clone(), "fuzzed".into()];
        let content_type = prop_oneof![
            6 => Just(Some("application/json")),
            1 => Just(Some("application/problem+json")),
            1 => Just(Some("text/plain")),
            1 => Just(None),
        ];
        let case = proptest::sample::select(routes).prop_flat_map(move |(uri, valid)| {
            (Just(uri), content_type.clone(), body(valid, known.clone()))
        });
        let mut runner = TestRunner::new(Config {
            cases: 600,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&case, |(uri, content_type, body)| {
                let mut request = Request::post(uri.as_str())
                    .header("host", HOST)
                    .header("authorization", key.bearer.as_str());
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type);
                }
                let request = request.body(Body::from(body.clone())).unwrap();
                let reply = runtime.block_on(app.send(request));
                let shown = String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>();
                prop_assert!(
                    !reply.status.is_server_error(),
                    "{} on {uri} for {shown}: {}",
                    reply.status,
                    reply.text()
                );
                if reply.status.is_client_error() {
                    prop_assert_eq!(
                        reply.header("content-type"),
                        Some("application/problem+json")
                    );
                    let problem: Value = serde_json::from_slice(&reply.body).unwrap();
                    prop_assert_eq!(&problem["status"], &json!(reply.status.as_u16()));
                    prop_assert!(
                        problem["type"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("/problems/"))
                    );
                    prop_assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
                } else {
                    prop_assert!(
                        [StatusCode::OK, StatusCode::ACCEPTED].contains(&reply.status),
                        "{}",
                        reply.status
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}
