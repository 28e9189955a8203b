//! Prometheus metrics (`/metrics`, Prometheus text format). Counters and the
//! latency histogram are updated as requests finish; JWKS and policy state,
//! and any extra collector (the embedded broker's in `dev`), is read at
//! scrape time, so it is never stale.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::upstream::{DiscoveryStatus, Readiness, Verifier};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    role: String,
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    ignored_roles: Counter,
    policy_reloads: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The policy's state as metrics see it.
#[derive(Debug, Default)]
pub(crate) struct PolicyGauges {
    /// 1 while the last load or reload succeeded.
    pub(crate) healthy: bool,
    pub(crate) roles: usize,
    pub(crate) loaded_unix: u64,
}

impl Metrics {
    pub(crate) fn new(
        verifier: Option<Arc<Verifier>>,
        policy: Arc<RwLock<PolicyGauges>>,
        extra: Option<Box<dyn Collector>>,
    ) -> Metrics {
        let mut registry = Registry::with_prefix("ably_tokend");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route, status and outcome reason",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time from request to response, by route",
            latency.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens_issued",
            "Tokens issued, by role carried and format (a token counts once per role)",
            tokens.clone(),
        );
        let ignored_roles = Counter::default();
        registry.register(
            "ignored_roles",
            "Roles named by session tokens that the policy does not define",
            ignored_roles.clone(),
        );
        let policy_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reload attempts by outcome (applied, refused, unchanged)",
            policy_reloads.clone(),
        );
        registry.register_collector(Box::new(PolicyCollector(policy)));
        if let Some(verifier) = verifier {
            registry.register_collector(Box::new(JwksCollector(verifier)));
        }
        if let Some(extra) = extra {
            registry.register_collector(extra);
        }
        Metrics {
            registry,
            requests,
            latency,
            tokens,
            ignored_roles,
            policy_reloads,
        }
    }

    /// Counts a finished request. `route` is a label from a fixed set (the
    /// route's path, or `other`: see `crate::http`'s route table), never the
    /// request's own path, so a scan of random paths cannot create unbounded
    /// series.
    pub(crate) fn observe_request(
        &self,
        route: &'static str,
        status: u16,
        reason: &'static str,
        latency: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                status: status.to_string(),
                reason,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(latency.as_secs_f64());
    }

    pub(crate) fn token_issued(&self, roles: &[String], format: &'static str) {
        for role in roles {
            self.tokens
                .get_or_create(&TokenLabels {
                    role: role.clone(),
                    format,
                })
                .inc();
        }
    }

    pub(crate) fn roles_ignored(&self, count: usize) {
        if count > 0 {
            self.ignored_roles.inc_by(count as u64);
        }
    }

    pub(crate) fn policy_reload(&self, outcome: &'static str) {
        self.policy_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn labelled<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], M)],
) -> Result<(), std::fmt::Error> {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, metric) in series {
        let labels: Vec<(&str, &str)> = labels.to_vec();
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Debug)]
struct PolicyCollector(Arc<RwLock<PolicyGauges>>);

impl Collector for PolicyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = self.0.read().unwrap_or_else(|e| e.into_inner());
        labelled(
            &mut encoder,
            "policy_healthy",
            "1 while the last policy load or reload succeeded; 0 while a broken file is refused and the previous policy serves",
            &[(&[], ConstGauge::new(i64::from(gauges.healthy)))],
        )?;
        labelled(
            &mut encoder,
            "policy_roles",
            "Roles defined by the policy in force",
            &[(&[], ConstGauge::new(gauges.roles as i64))],
        )?;
        labelled(
            &mut encoder,
            "policy_loaded_timestamp_seconds",
            "When the policy in force was loaded (Unix time)",
            &[(&[], ConstGauge::new(gauges.loaded_unix as i64))],
        )
    }
}

struct JwksCollector(Arc<Verifier>);

impl std::fmt::Debug for JwksCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwksCollector")
    }
}

impl Collector for JwksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.jwks_status();
        let names: Vec<[(&str, &str); 1]> = status
            .iter()
            .map(|(n, _)| [("issuer", n.as_str())])
            .collect();
        let series = |f: &dyn Fn(&crate::upstream::CacheStatus) -> i64| -> Vec<(&[(&str, &str)], ConstGauge)> {
            names
                .iter()
                .zip(status.iter())
                .map(|(l, (_, s))| (&l[..], ConstGauge::new(f(s))))
                .collect()
        };
        let counters = |f: &dyn Fn(&crate::upstream::CacheStatus) -> u64| -> Vec<(&[(&str, &str)], ConstCounter)> {
            names
                .iter()
                .zip(status.iter())
                .map(|(l, (_, s))| (&l[..], ConstCounter::new(f(s))))
                .collect()
        };
        labelled(
            &mut encoder,
            "jwks_fetches",
            "JWKS fetch attempts per issuer",
            &counters(&|s| s.fetches),
        )?;
        labelled(
            &mut encoder,
            "jwks_fetch_failures",
            "Failed JWKS fetches per issuer",
            &counters(&|s| s.failures),
        )?;
        labelled(
            &mut encoder,
            "jwks_keys",
            "Usable keys in the cached JWKS per issuer",
            &series(&|s| s.key_count as i64),
        )?;
        labelled(
            &mut encoder,
            "jwks_age_seconds",
            "Age of the cached key set per issuer (-1 before the first fetch)",
            &series(&|s| s.age.map_or(-1, |a| a.as_secs() as i64)),
        )?;
        labelled(
            &mut encoder,
            "jwks_ready",
            "1 while the issuer has usable keys",
            &series(&|s| i64::from(s.readiness == Readiness::Ready)),
        )?;
        // Only issuers found by OIDC discovery have these series.
        let discovering: Vec<([(&str, &str); 1], &DiscoveryStatus)> = status
            .iter()
            .filter_map(|(n, s)| Some(([("issuer", n.as_str())], s.discovery.as_ref()?)))
            .collect();
        let of = |f: &dyn Fn(&DiscoveryStatus) -> u64| -> Vec<(&[(&str, &str)], ConstCounter)> {
            discovering
                .iter()
                .map(|(l, d)| (&l[..], ConstCounter::new(f(d))))
                .collect()
        };
        labelled(
            &mut encoder,
            "oidc_discovery_fetches",
            "OIDC discovery document fetches per issuer",
            &of(&|d| d.fetches),
        )?;
        labelled(
            &mut encoder,
            "oidc_discovery_failures",
            "Failed OIDC discovery fetches per issuer (a document that cannot be fetched, is not JSON, names another issuer or an insecure jwks_uri)",
            &of(&|d| d.failures),
        )?;
        let ok: Vec<(&[(&str, &str)], ConstGauge)> = discovering
            .iter()
            .map(|(l, d)| {
                (
                    &l[..],
                    ConstGauge::new(i64::from(d.last_error.is_none() && d.jwks_uri.is_some())),
                )
            })
            .collect();
        labelled(
            &mut encoder,
            "oidc_discovery_ok",
            "1 while the issuer's last OIDC discovery succeeded",
            &ok,
        )?;
        // Session-endpoint and introspection issuers only.
        let lookups = self.0.lookup_status();
        let labels: Vec<[(&str, &str); 2]> = lookups
            .iter()
            .flat_map(|(n, _, _)| {
                ["hit", "miss", "refused", "unavailable"]
                    .map(|o| [("issuer", n.as_str()), ("outcome", o)])
            })
            .collect();
        let counts: Vec<u64> = lookups
            .iter()
            .flat_map(|(_, _, c)| [c.hit, c.miss, c.refused, c.unavailable])
            .collect();
        let series: Vec<(&[(&str, &str)], ConstCounter)> = labels
            .iter()
            .zip(counts)
            .map(|(l, c)| (&l[..], ConstCounter::new(c)))
            .collect();
        labelled(
            &mut encoder,
            "session_lookups",
            "Session-endpoint and introspection look-ups per issuer by outcome: hit (answered from the cache), miss (asked upstream: a session), refused (asked: no session), unavailable (asked: no usable answer)",
            &series,
        )?;
        let names: Vec<[(&str, &str); 1]> = lookups
            .iter()
            .map(|(n, _, _)| [("issuer", n.as_str())])
            .collect();
        let entries: Vec<(&[(&str, &str)], ConstGauge)> = names
            .iter()
            .zip(&lookups)
            .map(|(l, (_, _, c))| (&l[..], ConstGauge::new(c.entries as i64)))
            .collect();
        labelled(
            &mut encoder,
            "session_lookup_cache_entries",
            "Answers held in the look-up cache per issuer",
            &entries,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_bounded_route_labels() {
        let policy = Arc::new(RwLock::new(PolicyGauges {
            healthy: true,
            roles: 2,
            loaded_unix: 1_700_000_000,
        }));
        let metrics = Metrics::new(None, policy, None);
        metrics.observe_request("/api/ably-token", 200, "issued", Duration::from_micros(300));
        metrics.observe_request("other", 404, "not_found", Duration::from_micros(20));
        metrics.token_issued(&["customer".into(), "support".into()], "token_request");
        metrics.policy_reload("refused");
        let text = metrics.render();
        assert!(text.contains(r#"ably_tokend_requests_total{route="/api/ably-token",status="200",reason="issued"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"ably_tokend_requests_total{route="other",status="404",reason="not_found"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ably_tokend_tokens_issued_total{role="support",format="token_request"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"ably_tokend_policy_reloads_total{outcome="refused"} 1"#),
            "{text}"
        );
        assert!(text.contains("ably_tokend_policy_healthy 1"), "{text}");
        assert!(
            text.contains("ably_tokend_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(!text.contains("wp-admin"));
    }
}
