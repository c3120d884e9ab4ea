//! Errors as HTTP responses, in OpenAI's shape: `{"error": {"message", "type", "param",
//! "code"}}` with the status that says whose fault it is.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nano_infer_generate::json::error_json;
use nano_infer_generate::GenerateError;
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI's error object.
    pub body: serde_json::Value,
    /// Seconds for a `Retry-After` header (503 when the queue is full).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error of OpenAI type `kind` with `param` naming the request field, if any.
    pub fn new(
        status: StatusCode,
        kind: &str,
        message: impl Into<String>,
        param: Option<&str>,
    ) -> Self {
        Self {
            status,
            body: json!({ "error": {
                "message": message.into(), "type": kind, "param": param, "code": status.as_u16()
            }}),
            retry_after: None,
        }
    }

    /// A 400 (`invalid_request_error`), naming the field at fault when there is one.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message,
            param,
        )
    }

    /// A 503, with `Retry-After` when the client should simply come back.
    pub fn unavailable(message: impl Into<String>, retry_after: Option<u32>) -> Self {
        Self {
            retry_after,
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                message,
                None,
            )
        }
    }

    /// A 500: the server's fault, not the request's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            message,
            None,
        )
    }
}

impl From<GenerateError> for ApiError {
    fn from(e: GenerateError) -> Self {
        let status = if e.is_request_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let mut body = error_json(&e);
        body["error"]["code"] = json!(status.as_u16());
        Self {
            status,
            body,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
