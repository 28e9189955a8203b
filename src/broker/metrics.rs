//! The broker's metrics, read from its state at scrape time. The broker
//! serves them on its own `/metrics`; `ably-tokend dev` also hands them to
//! the sidecar's registry through `Broker::metrics_collector`, so the
//! sidecar never compiles against the broker's internals.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::BrokerState;

pub(crate) struct BrokerCollector(pub(crate) Arc<BrokerState>);

impl std::fmt::Debug for BrokerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerCollector")
    }
}

/// One series without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    let no_labels: Vec<(&str, &str)> = Vec::new();
    metric.encode(family.encode_family(&no_labels)?)
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.0;
        let tables = state.tables();
        let gauges = [
            (
                "broker_connections",
                "Open realtime connections to the embedded broker",
                tables.connections,
            ),
            (
                "broker_channels",
                "Channels the embedded broker holds state for",
                tables.hub.channels,
            ),
            (
                "broker_resumable_connections",
                "Closed connections a client may still resume or recover (within the connection-state TTL)",
                tables.resumable,
            ),
            (
                "broker_token_nonces",
                "TokenRequest nonces remembered while their timestamp is within the 2-minute window",
                tables.token_nonces,
            ),
            (
                "broker_idempotency_ids",
                "Client-supplied message ids remembered for the 2-minute idempotency window",
                tables.hub.idempotency_ids,
            ),
            (
                "broker_presence_departures",
                "Dropped connections whose presence members wait out the presence grace",
                tables.presence_departures,
            ),
            (
                "broker_presence_members",
                "Presence members on all channels",
                tables.hub.presence_members,
            ),
            (
                "broker_history_messages",
                "Messages held in channel history",
                tables.hub.messages_held,
            ),
            (
                "broker_presence_history_events",
                "Presence events held in channel presence history",
                tables.hub.presence_events_held,
            ),
        ];
        for (name, help, value) in gauges {
            single(&mut encoder, name, help, ConstGauge::new(value as i64))?;
        }
        single(
            &mut encoder,
            "broker_messages",
            "Messages published to the embedded broker",
            ConstCounter::new(state.hub.messages_published()),
        )?;
        single(
            &mut encoder,
            "broker_deliveries",
            "Messages and presence events queued to subscribers",
            ConstCounter::new(state.hub.deliveries()),
        )
    }
}

/// The registry behind `ably-tokend broker`'s `/metrics`: broker metrics
/// alone, under the same prefix as the sidecar's.
pub(crate) fn registry(state: Arc<BrokerState>) -> Registry {
    let mut registry = Registry::with_prefix("ably_tokend");
    registry.register_collector(Box::new(BrokerCollector(state)));
    registry
}

pub(crate) async fn serve(registry: web::Data<Registry>) -> HttpResponse {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    HttpResponse::Ok()
        .insert_header(("content-type", "text/plain; version=0.0.4; charset=utf-8"))
        .body(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::config::BrokerSettings;

    #[actix_web::test]
    async fn broker_metrics_render_with_the_sidecars_names() {
        let settings = BrokerSettings {
            bind: "127.0.0.1:0".parse().unwrap(),
            history_max_messages: 10,
            history_max_age: std::time::Duration::from_secs(60),
            ..BrokerSettings::default()
        };
        let broker = Broker::build(
            &settings,
            Vec::new(),
            crate::clock::system(),
            Default::default(),
        )
        .unwrap();
        let mut registry = Registry::with_prefix("ably_tokend");
        registry.register_collector(broker.metrics_collector());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for line in [
            "ably_tokend_broker_connections 0",
            "ably_tokend_broker_channels 0",
            "ably_tokend_broker_resumable_connections 0",
            "ably_tokend_broker_token_nonces 0",
            "ably_tokend_broker_idempotency_ids 0",
            "ably_tokend_broker_presence_departures 0",
            "ably_tokend_broker_presence_members 0",
            "ably_tokend_broker_history_messages 0",
            "ably_tokend_broker_presence_history_events 0",
            "ably_tokend_broker_messages_total 0",
            "ably_tokend_broker_deliveries_total 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
