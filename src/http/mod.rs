//! The two HTTP listeners: the API (`server.listen`: tenant API, webhooks, OAuth
//! callbacks) and the admin endpoint (`admin.listen`: health, restarts, metrics, and
//! the admin web page).

pub mod admin;
pub mod api;
mod error;
pub mod ingress;
pub mod limits;
pub mod metrics;
mod oauth_pages;
mod routes_api;
pub mod server;
mod ui;

pub use error::ApiError;
