//! What can go wrong talking to a longrun server: the server's RFC 9457 problem, the
//! transport, or a body that does not parse.

use longrun_core::wire::ReportResult;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An RFC 9457 problem details body (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI reference naming the problem type (`about:blank` when absent).
    #[serde(rename = "type", default = "about_blank")]
    pub problem_type: String,
    /// Short summary of the problem type.
    #[serde(default)]
    pub title: String,
    /// The HTTP status code.
    #[serde(default)]
    pub status: Option<u16>,
    /// What went wrong in this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every other member (extensions such as `instance` or `errors`).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

fn about_blank() -> String {
    "about:blank".into()
}

impl Problem {
    /// The problem for an error response whose body is not problem JSON: the status's reason
    /// as title and (the start of) the body as detail.
    pub(crate) fn from_plain(status: reqwest::StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        Self {
            problem_type: about_blank(),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: Some(status.as_u16()),
            detail: (!text.is_empty()).then(|| text.chars().take(500).collect()),
            extensions: Map::new(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.title),
            None => f.write_str(&self.title),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status and a problem body.
    #[error("server answered {status}: {problem}")]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The problem body (synthesised from the status when the body was not problem JSON).
        problem: Box<Problem>,
    },
    /// The request could not be sent or the response could not be read.
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The response body was not what the route answers.
    #[error("could not decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The base URL given to [`crate::Client::new`] is not an absolute http(s) URL.
    #[error("invalid server URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status of a [`ClientError::Problem`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The problem body of a [`ClientError::Problem`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Problem { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the server was unreachable, timed out, or
    /// answered 429 or a 5xx status.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Problem { status, .. } => *status == 429 || *status >= 500,
            ClientError::Decode { .. } | ClientError::InvalidUrl { .. } => false,
        }
    }

    /// The error of an answer with status `status`: its `problem` if it had one, else one made
    /// from the status and the (plain) `body`.
    pub(crate) fn answered(status: u16, problem: Option<Problem>, body: &[u8]) -> Self {
        let problem = problem.unwrap_or_else(|| {
            let code = reqwest::StatusCode::from_u16(status)
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
            Problem::from_plain(code, body)
        });
        Self::Problem {
            status,
            problem: Box::new(problem),
        }
    }

    /// What one result of [`crate::Client::reports`] means: `Ok` when the report was recorded,
    /// else the error its own route (`complete`, `fail`, `release`) would have answered.
    pub fn of_report(result: ReportResult) -> Result<(), Self> {
        if result.status == 204 {
            return Ok(());
        }
        let problem = result
            .problem
            .and_then(|problem| serde_json::from_value(problem).ok());
        Err(Self::answered(result.status, problem, b""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_keeps_extension_members() {
        let body = r#"{"type":"https://longrun.dev/problems/validation","title":"Bad request",
            "status":400,"detail":"name is required","errors":[{"field":"name"}]}"#;
        let problem: Problem = serde_json::from_str(body).unwrap();
        assert_eq!(
            problem.problem_type,
            "https://longrun.dev/problems/validation"
        );
        assert_eq!(problem.status, Some(400));
        assert_eq!(problem.detail.as_deref(), Some("name is required"));
        assert_eq!(problem.extensions["errors"][0]["field"], "name");
        assert_eq!(problem.to_string(), "Bad request: name is required");
    }

    #[test]
    fn plain_error_bodies_become_problems() {
        let problem = Problem::from_plain(reqwest::StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(problem.problem_type, "about:blank");
        assert_eq!(problem.title, "Bad Gateway");
        assert_eq!(problem.detail.as_deref(), Some("upstream down"));
    }

    #[test]
    fn report_results_read_as_their_routes_answers() {
        let result = |status, problem| ReportResult {
            id: uuid::Uuid::nil(),
            status,
            problem,
        };
        assert!(ClientError::of_report(result(204, None)).is_ok());
        let stale =
            serde_json::json!({"title": "Conflict", "status": 409, "detail": "stale lease"});
        let err = ClientError::of_report(result(409, Some(stale))).unwrap_err();
        assert_eq!(err.status(), Some(409));
        assert_eq!(
            err.problem().and_then(|p| p.detail.as_deref()),
            Some("stale lease")
        );
        let bare = ClientError::of_report(result(503, None)).unwrap_err();
        assert!(bare.is_transient());
        assert_eq!(
            bare.problem().map(|p| p.title.as_str()),
            Some("Service Unavailable")
        );
    }
}
