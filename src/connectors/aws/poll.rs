//! Polling CloudWatch's alarm history (`DescribeAlarmHistory`, `StateUpdate` items)
//! in each region the integration watches, one page per poll.
//!
//! A region is read in sweeps: the window from where the last sweep stopped until the
//! sweep's first page, oldest first, following `NextToken`. The saved cursor holds
//! every region's position and the open sweep's token, so a restart reads the same
//! page again (its duplicates are dropped by their delivery ids). A finished sweep
//! moves the region's start to its last item's time (reaching `poll_overlap` back at
//! most, for history CloudWatch records late) and hands the turn to the next region;
//! the regions of one round are polled back to back.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::alarms::AlarmStateChange;
use super::api::{AwsError, HistoryQuery, Service};
use crate::connectors::{ConnectorError, Credentials, Polled};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    #[serde(default)]
    regions: BTreeMap<String, RegionCursor>,
    /// Which region the next poll reads (an index into the integration's regions).
    #[serde(default)]
    turn: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RegionCursor {
    /// The next sweep's `StartDate`.
    since: String,
    /// The open sweep's `EndDate`, fixed by its first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    /// The open sweep's `NextToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parsed(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The regions an integration watches.
pub fn regions(credentials_metadata: &serde_json::Value) -> Vec<String> {
    credentials_metadata["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect()
}

pub async fn page(
    shared: &Shared,
    credentials: &Credentials,
    saved: Option<&str>,
) -> Result<Polled, ConnectorError> {
    let regions = regions(&credentials.metadata);
    if regions.is_empty() {
        return Err(ConnectorError::NotSupported);
    }
    let config = &shared.config;
    let now = Utc::now();
    // A cursor this code cannot read (another version's) starts again.
    let mut cursor = saved
        .and_then(|text| serde_json::from_str::<Cursor>(text).ok())
        .unwrap_or_default();
    cursor.turn %= regions.len();
    let region = regions[cursor.turn].clone();
    let lookback = chrono::Duration::from_std(config.poll_lookback).unwrap_or_default();
    let position = cursor
        .regions
        .get(&region)
        .cloned()
        .unwrap_or_else(|| RegionCursor {
            since: rfc3339(now - lookback),
            end: None,
            next: None,
        });
    let end = position.end.clone().unwrap_or_else(|| rfc3339(now));
    let url = config.monitoring_url(&region);
    let account = credentials.metadata["account"].as_str();
    let answer = shared
        .call(credentials, |keys| {
            let (url, region, position, end) = (&url, &region, &position, &end);
            async move {
                shared
                    .api
                    .alarm_history(
                        &credentials.integration_id,
                        Service {
                            url,
                            region,
                            name: "monitoring",
                        },
                        &keys,
                        HistoryQuery {
                            start: &position.since,
                            end,
                            next_token: position.next.as_deref(),
                            page_size: config.poll_page_size,
                        },
                    )
                    .await
            }
        })
        .await;
    let page = match answer {
        Ok(page) => page,
        // A token CloudWatch no longer takes: sweep the same window again.
        Err(AwsError::Refused { code, .. })
            if code == "InvalidNextToken" && position.next.is_some() =>
        {
            cursor.regions.insert(
                region,
                RegionCursor {
                    end: None,
                    next: None,
                    ..position
                },
            );
            return Ok(Polled {
                events: Vec::new(),
                cursor: Some(encode(&cursor)),
                more: true,
            });
        }
        Err(error) => return Err(error.into()),
    };
    let changes: Vec<AlarmStateChange> = page
        .items
        .iter()
        .filter_map(|item| AlarmStateChange::from_history(&region, account, item))
        .collect();
    let last = changes.last().and_then(|change| parsed(&change.changed_at));
    let more = match page.next_token {
        Some(next) => {
            cursor.regions.insert(
                region,
                RegionCursor {
                    since: position.since,
                    end: Some(end),
                    next: Some(next),
                },
            );
            true
        }
        None => {
            let overlap = chrono::Duration::from_std(config.poll_overlap).unwrap_or_default();
            let since = [
                parsed(&position.since),
                last,
                parsed(&end).map(|end| end - overlap),
            ]
            .into_iter()
            .flatten()
            .max()
            .map_or(position.since, rfc3339);
            cursor.regions.insert(
                region,
                RegionCursor {
                    since,
                    end: None,
                    next: None,
                },
            );
            cursor.turn = (cursor.turn + 1) % regions.len();
            // The round's other regions come at once; the next round after the interval.
            cursor.turn != 0
        }
    };
    Ok(Polled {
        events: changes
            .into_iter()
            .map(AlarmStateChange::into_incoming)
            .collect(),
        cursor: Some(encode(&cursor)),
        more,
    })
}

fn encode(cursor: &Cursor) -> String {
    serde_json::to_string(cursor).unwrap_or_default()
}
