//! The small pages a browser sees at the end of an OAuth or installation redirect.
//! They say what happened and never echo a secret (no code, no state, no token).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:sans-serif;max-width:32rem;margin:4rem auto\">\
         <h1>{title}</h1><p>{message}</p><p>You can close this window.</p></body></html>\n",
        title = escape(title),
        message = escape(message),
    );
    (status, Html(body)).into_response()
}

pub fn success(connector: &str, account: Option<&str>) -> Response {
    let message = match account {
        Some(account) => format!("Your {connector} account {account} is connected."),
        None => format!("Your {connector} account is connected."),
    };
    page(StatusCode::OK, "Connected", &message)
}

/// The provider changed an existing connection (an app installation's repositories).
pub fn updated(connector: &str) -> Response {
    page(
        StatusCode::OK,
        "Updated",
        &format!("Your {connector} installation was updated; switchboard picks up the change."),
    )
}

pub fn failure(status: StatusCode, message: &str) -> Response {
    page(status, "Not connected", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_it_shows() {
        assert_eq!(escape("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
    }
}
