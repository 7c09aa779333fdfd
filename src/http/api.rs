//! The API listener. The tenant API, webhook ingress and OAuth callbacks mount here as
//! their issues land; until then it answers every path with a JSON 404.

use axum::Router;

use super::ApiError;

pub fn router() -> Router {
    Router::new().fallback(|| async { ApiError::not_found("no such endpoint") })
}
