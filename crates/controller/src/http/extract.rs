//! Extractors whose rejections are the API's JSON errors (axum's own answer in plain text):
//! a JSON body ([`Body`]), query parameters ([`Query`]) and path parameters ([`Path`]).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, request::Parts};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body whose rejection names the problem (line and column included).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    // axum's own statuses: 422 for a body of the wrong shape, 415 without the JSON content
    // type, 413 over the body limit, 400 for bytes that are not JSON.
    ApiError::new(r.status(), format!("request body: {}", r.body_text()))
}

/// Query parameters; a rejection is a 400 naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("query: {}", r.body_text()))
            })
    }
}

/// Path parameters (one, or a tuple); a rejection is a 400 naming the parameter (e.g. a node
/// name that is not a valid name).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("path: {}", r.body_text()))
            })
    }
}
