use serde_json::{Value, json};
use time::macros::datetime;
use uuid::Uuid;

use super::View;
use crate::{NewOperation, Operation, OperationError, Resource, Status};

fn operation(status: Status) -> Operation {
    let mut new = NewOperation::named("reports.render");
    new.args = json!([1, "a"]);
    new.kwargs = json!({"k": true});
    new.content = Some(json!({"note": "x"}));
    new.meta.url = Some("http://api/v1/operations".into());
    new.meta.model = Some("collection".into());
    new.meta.action = Some("create".into());
    new.parent_id = Some(Uuid::from_u128(1));
    let mut op = new.into_operation(
        Uuid::from_u128(2),
        Some(Uuid::from_u128(1)),
        datetime!(2026-02-04 03:39:55 UTC),
    );
    op.seq = 42;
    op.status = status;
    op.execution_id = Some(Uuid::from_u128(3));
    op.progress_pct = Some(40.0);
    if status == Status::Succeeded {
        op.result = Some(json!({"pages": 7}));
        op.resources = vec![Resource {
            id: "r1".into(),
            url: "http://api/r1".into(),
        }];
    }
    if matches!(status, Status::Failed | Status::Cancelled) {
        op.error = Some(OperationError {
            code: "bad".into(),
            error_type: "ValueError".into(),
            message: "no".into(),
        });
    }
    op
}

fn render(op: &Operation, view: View) -> Value {
    serde_json::to_value(view.render(op, "http://h")).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn async_operation_has_exactly_the_seed_fields() {
    let v = render(&operation(Status::Failed), View::AsyncOperation);
    assert_eq!(
        keys(&v),
        [
            "createdAt",
            "error",
            "id",
            "progressPct",
            "resultUrl",
            "status",
            "updatedAt"
        ]
    );
    assert_eq!(v["status"], "failed");
    assert_eq!(
        v["error"],
        json!({"code": "bad", "type": "ValueError", "message": "no"})
    );
    assert_eq!(
        v["resultUrl"],
        format!("http://h/v1/operations/{}/result", Uuid::from_u128(2))
    );
    assert_eq!(v["createdAt"], "2026-02-04T03:39:55Z");
    let pending = render(&operation(Status::Pending), View::AsyncOperation);
    assert!(pending.get("error").is_none());
}

#[test]
fn task_status_maps_statuses_and_details() {
    let ok = render(&operation(Status::Succeeded), View::TaskStatus);
    assert_eq!(
        keys(&ok),
        ["createdAt", "details", "id", "meta", "status", "updatedAt"]
    );
    assert_eq!(ok["status"], "completed");
    assert_eq!(
        ok["details"],
        json!({"resources": [{"id": "r1", "url": "http://api/r1"}]})
    );
    assert_eq!(
        ok["meta"],
        json!({"url": "http://api/v1/operations", "model": "collection", "action": "create"})
    );
    let running = render(&operation(Status::Running), View::TaskStatus);
    assert_eq!(running["status"], "pending");
    assert!(running.get("details").is_none());
    let cancelled = render(&operation(Status::Cancelled), View::TaskStatus);
    assert_eq!(cancelled["status"], "failed");
    assert_eq!(cancelled["details"], json!({"error": {"message": "no"}}));
}

#[test]
fn async_task_is_snake_case_with_integer_id() {
    let v = render(&operation(Status::Failed), View::AsyncTask);
    assert_eq!(
        keys(&v),
        [
            "celery_task_id",
            "completed_at",
            "content",
            "created_at",
            "created_by",
            "created_by_name",
            "customer",
            "error_message",
            "error_type",
            "id",
            "name",
            "parent_task_id",
            "retries",
            "root_task_id",
            "span_id",
            "status",
            "task_args",
            "task_kwargs",
            "trace_id"
        ]
        .iter()
        .filter(|k| **k != "completed_at")
        .copied()
        .collect::<Vec<_>>()
    );
    assert_eq!(v["id"], 42);
    assert_eq!(v["status"], "FAILED");
    assert_eq!(v["error_type"], "ValueError");
    assert_eq!(v["celery_task_id"], Uuid::from_u128(3).to_string());
    assert_eq!(v["root_task_id"], Uuid::from_u128(1).to_string());
    assert_eq!(
        render(&operation(Status::Running), View::AsyncTask)["status"],
        "PROCESSING"
    );
    assert_eq!(
        render(&operation(Status::Succeeded), View::AsyncTask)["status"],
        "COMPLETED"
    );
    assert_eq!(
        render(&operation(Status::Pending), View::AsyncTask)["status"],
        "PENDING"
    );
}

#[test]
fn canonical_view_is_lossless() {
    let op = operation(Status::Succeeded);
    let v = render(&op, View::Operation);
    let back: Operation = serde_json::from_value(v.clone()).unwrap();
    let mut expected = op.clone();
    expected.result_url = Some(format!("http://h/v1/operations/{}/result", op.id));
    assert_eq!(back, expected);
    assert_eq!(v["parentId"], Uuid::from_u128(1).to_string());
    assert_eq!(v["retryPolicy"]["maxRetries"], 3);
}

#[test]
fn views_parse_from_query_values() {
    for (s, v) in [
        ("operation", View::Operation),
        ("async-operation", View::AsyncOperation),
        ("task-status", View::TaskStatus),
        ("async-task", View::AsyncTask),
    ] {
        assert_eq!(s.parse::<View>().unwrap(), v);
    }
    assert!("AsyncTask".parse::<View>().is_err());
}
