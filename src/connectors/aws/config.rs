//! `[connectors.aws]`: switchboard's own AWS principal (for the `role` flow), the STS
//! and CloudWatch endpoints, which hosts SNS certificates and confirmations may come
//! from, and how alarms are polled.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::connectors::section::{Section, checked, require_positive, require_url};
use crate::problem::Problem;
use crate::secret::Secret;

/// The hosts SNS signs from and confirms subscriptions on: `*` is one DNS label
/// (so `sns.x.s3.amazonaws.com`, a bucket anyone can name, does not match).
pub const SNS_HOSTS: [&str; 2] = ["sns.*.amazonaws.com", "sns.*.amazonaws.com.cn"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// switchboard's own principal, which tenants' roles trust
    /// (`arn:aws:iam::<account>:user/...` or `:role/...`). With the access key below it
    /// enables the `role` flow.
    pub principal_arn: Option<String>,
    /// The principal's access key, which `AssumeRole` is called with.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    #[serde(default = "sts")]
    pub sts_url: String,
    /// The region STS requests are signed for.
    #[serde(default = "us_east_1")]
    pub sts_region: String,
    /// CloudWatch endpoints by region, for a region not at
    /// `https://monitoring.<region>.amazonaws.com`.
    #[serde(default)]
    pub monitoring_urls: BTreeMap<String, String>,
    /// The regions watched when the tenant names none.
    #[serde(default = "default_regions")]
    pub default_regions: Vec<String>,
    /// How long an assumed role's session lasts (AWS: 15 minutes to 12 hours; the
    /// role's own maximum applies).
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_hour"
    )]
    pub session_duration: Duration,
    /// Host patterns a `SigningCertURL` and a `SubscribeURL` must match (always
    /// https); `*` is one DNS label.
    #[serde(default = "sns_hosts")]
    pub sns_hosts: Vec<String>,
    /// Extra CA certificates (PEM) trusted for the connector's HTTPS calls, beside the
    /// system's: a TLS-inspecting proxy's, or a test's.
    pub ca_certificates: Option<PathBuf>,
    /// How far back the first poll of a region reads the alarm history.
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_hour"
    )]
    pub poll_lookback: Duration,
    /// How far a new sweep reaches back before the last one ended, for history
    /// CloudWatch records late.
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::one_minute"
    )]
    pub poll_overlap: Duration,
    /// Items per `DescribeAlarmHistory` page (AWS: at most 100).
    #[serde(default = "crate::connectors::section::defaults::hundred")]
    pub poll_page_size: u32,
    #[serde(
        with = "humantime_serde",
        default = "crate::connectors::section::defaults::fifteen_seconds"
    )]
    pub request_timeout: Duration,
}

fn sts() -> String {
    "https://sts.amazonaws.com".to_string()
}

fn us_east_1() -> String {
    "us-east-1".to_string()
}

fn default_regions() -> Vec<String> {
    vec![us_east_1()]
}

fn sns_hosts() -> Vec<String> {
    SNS_HOSTS.iter().map(ToString::to_string).collect()
}

impl AwsConfig {
    pub fn from_section(section: &Section) -> Result<Self, Vec<Problem>> {
        let config: Self = section.parse()?;
        let mut problems = Vec::new();
        require_url(&mut problems, section.key("sts_url"), &config.sts_url);
        for (region, url) in &config.monitoring_urls {
            require_url(
                &mut problems,
                section.key(&format!("monitoring_urls.{region}")),
                url,
            );
        }
        let own = [
            config.principal_arn.is_some(),
            config.access_key_id.is_some(),
            config.secret_access_key.is_some(),
        ];
        if own.contains(&true) && own.contains(&false) {
            problems.push(Problem::new(
                section.key("principal_arn"),
                "principal_arn, access_key_id and secret_access_key go together (all three for \
                 the role flow, none for access keys only)",
            ));
        }
        if let Some(arn) = &config.principal_arn
            && !arn.starts_with("arn:")
        {
            problems.push(Problem::new(
                section.key("principal_arn"),
                format!("'{arn}' is not an ARN"),
            ));
        }
        for region in &config.default_regions {
            if !is_region(region) {
                problems.push(Problem::new(
                    section.key("default_regions"),
                    format!("'{region}' is not an AWS region name"),
                ));
            }
        }
        if !(900..=43_200).contains(&config.session_duration.as_secs()) {
            problems.push(Problem::new(
                section.key("session_duration"),
                "must be between 15 minutes and 12 hours (AWS's bounds)",
            ));
        }
        if !(1..=100).contains(&config.poll_page_size) {
            problems.push(Problem::new(
                section.key("poll_page_size"),
                "must be between 1 and 100 (DescribeAlarmHistory's MaxRecords)",
            ));
        }
        if config.sns_hosts.is_empty() {
            problems.push(Problem::new(
                section.key("sns_hosts"),
                "must name at least one host pattern",
            ));
        }
        require_positive(
            &mut problems,
            section.key("request_timeout"),
            config.request_timeout,
        );
        checked(config, problems)
    }

    /// switchboard's own principal and key, when the `role` flow is configured.
    pub fn own_principal(&self) -> Option<(&str, &str, &Secret)> {
        match (
            &self.principal_arn,
            &self.access_key_id,
            &self.secret_access_key,
        ) {
            (Some(arn), Some(id), Some(secret)) => Some((arn, id, secret)),
            _ => None,
        }
    }

    /// CloudWatch's endpoint in `region`.
    pub fn monitoring_url(&self, region: &str) -> String {
        self.monitoring_urls.get(region).map_or_else(
            || format!("https://monitoring.{region}.amazonaws.com"),
            |url| url.trim_end_matches('/').to_string(),
        )
    }

    /// Whether `url` may serve an SNS certificate or confirm a subscription: https,
    /// on a host the patterns allow.
    pub fn is_sns_url(&self, url: &url::Url) -> bool {
        url.scheme() == "https"
            && url.host_str().is_some_and(|host| {
                self.sns_hosts
                    .iter()
                    .any(|pattern| host_matches(pattern, host))
            })
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`...: letters, digits and hyphens,
/// ending in a digit.
pub fn is_region(name: &str) -> bool {
    name.len() <= 32
        && name.contains('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.ends_with(|c: char| c.is_ascii_digit())
}

/// Whether `host` matches `pattern` label by label, where a `*` label stands for one
/// label of letters, digits and hyphens.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let host: Vec<&str> = host.split('.').collect();
    pattern.len() == host.len()
        && pattern.iter().zip(&host).all(|(want, label)| {
            if *want == "*" {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            } else {
                want.eq_ignore_ascii_case(label)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<AwsConfig, Vec<String>> {
        let table: toml::Table = toml::from_str(text).unwrap();
        AwsConfig::from_section(&Section::new("aws", &table).unwrap())
            .map_err(|found| found.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn sns_urls_must_be_https_on_one_label_of_amazonaws() {
        let config = read("").expect("valid");
        let allowed = |url: &str| config.is_sns_url(&url::Url::parse(url).unwrap());
        assert!(allowed(
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"
        ));
        assert!(allowed("https://sns.cn-north-1.amazonaws.com.cn/x.pem"));
        assert!(!allowed("http://sns.us-east-1.amazonaws.com/x.pem"));
        // A bucket named `sns.evil` on S3 is someone else's host.
        assert!(!allowed("https://sns.evil.s3.amazonaws.com/x.pem"));
        assert!(!allowed(
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem"
        ));
        assert!(!allowed(
            "https://evil.example/sns.us-east-1.amazonaws.com.pem"
        ));
        assert_eq!(
            config.monitoring_url("eu-west-1"),
            "https://monitoring.eu-west-1.amazonaws.com"
        );
        assert!(config.own_principal().is_none());
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(
            read("access_key_id = \"AKID\"\ndefault_regions = [\"Mars\"]\nsession_duration = \"1m\"\npoll_page_size = 500")
                .unwrap_err(),
            [
                "connectors.aws.principal_arn: principal_arn, access_key_id and secret_access_key go together (all three for the role flow, none for access keys only)",
                "connectors.aws.default_regions: 'Mars' is not an AWS region name",
                "connectors.aws.session_duration: must be between 15 minutes and 12 hours (AWS's bounds)",
                "connectors.aws.poll_page_size: must be between 1 and 100 (DescribeAlarmHistory's MaxRecords)",
            ]
        );
    }
}
