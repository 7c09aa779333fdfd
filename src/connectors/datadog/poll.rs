//! Polling Datadog's event stream (`GET /api/v2/events`), for integrations whose
//! tenant will not add the webhook to its monitors.
//!
//! A sweep reads the events between two times, oldest first, page by page
//! (`page[cursor]`); the cursor saved between polls holds the sweep's window and its
//! page, so a restart in the middle reads the same page again (its duplicates are
//! dropped). The next sweep starts `poll_overlap` before the last one ended, for
//! events Datadog indexes late.

use serde::{Deserialize, Serialize};

use super::Shared;
use super::api::{DatadogError, Wait};
use super::events::{DatadogEvent, from_polled};
use crate::connectors::ingress::IncomingEvent;
use crate::connectors::{ConnectorError, Credentials, Polled};
use crate::store::events::DeliveryScope;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    /// The sweep's start, epoch milliseconds.
    from: i64,
    /// Its end, fixed once its first page is read (so its pages stay one query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<i64>,
    /// Datadog's cursor for the sweep's next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub async fn page(
    shared: &Shared,
    credentials: &Credentials,
    saved: Option<&str>,
) -> Result<Polled, ConnectorError> {
    let (base, keys) = shared.integration(credentials)?;
    let config = &shared.config;
    let now = chrono::Utc::now().timestamp_millis();
    // A cursor this code cannot read (another version's) starts a new sweep.
    let cursor = saved
        .and_then(|text| serde_json::from_str::<Cursor>(text).ok())
        .unwrap_or(Cursor {
            from: now - millis(config.poll_lookback),
            to: None,
            after: None,
        });
    let to = cursor.to.unwrap_or(now);
    let path = events_path(config, &cursor, to);
    let answer = match shared
        .api
        .call(base, &keys, reqwest::Method::GET, &path, None, Wait::No)
        .await
    {
        Ok(answer) => answer,
        // Datadog's page cursors expire: read the sweep again from its start.
        Err(DatadogError::BadRequest { .. }) if cursor.after.is_some() => {
            return Ok(Polled {
                events: Vec::new(),
                cursor: Some(encode(&Cursor {
                    from: cursor.from,
                    to: None,
                    after: None,
                })),
                more: true,
            });
        }
        Err(error) => return Err(error.into()),
    };
    let events: Vec<IncomingEvent> = answer["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(from_polled)
        .map(|(delivery_id, payload)| {
            let typed = DatadogEvent::from_value(&payload).unwrap_or_default();
            IncomingEvent {
                delivery_id,
                // The same id the webhook carries: an alert pushed and polled is one.
                scope: DeliveryScope::Integration,
                event_type: typed.switchboard_type(),
                occurred_at: typed.occurred_at(),
                payload: payload.to_string(),
            }
        })
        .collect();
    let after = answer["meta"]["page"]["after"]
        .as_str()
        .filter(|after| !after.is_empty() && !events.is_empty());
    let (next, more) = match after {
        Some(after) => (
            Cursor {
                from: cursor.from,
                to: Some(to),
                after: Some(after.to_string()),
            },
            true,
        ),
        None => (
            Cursor {
                from: (to - millis(config.poll_overlap)).max(cursor.from),
                to: None,
                after: None,
            },
            false,
        ),
    };
    Ok(Polled {
        events,
        cursor: Some(encode(&next)),
        more,
    })
}

/// `/api/v2/events?…` for a sweep's page: oldest first.
fn events_path(config: &super::config::DatadogConfig, cursor: &Cursor, to: i64) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("filter[query]", &config.poll_query)
        .append_pair("filter[from]", &cursor.from.to_string())
        .append_pair("filter[to]", &to.to_string())
        .append_pair("sort", "timestamp")
        .append_pair("page[limit]", &config.poll_page_size.to_string());
    if let Some(after) = &cursor.after {
        query.append_pair("page[cursor]", after);
    }
    format!("/api/v2/events?{}", query.finish())
}

fn encode(cursor: &Cursor) -> String {
    serde_json::to_string(cursor).unwrap_or_default()
}
