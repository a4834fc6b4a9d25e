//! Order events end to end: LOMS's outbox relay publishing to a real Kafka-protocol broker (a tansu process per
//! test), Notifications consuming them into HTTP sinks served by the test, and a plain consumer reading the
//! topic back. Counts are taken only once everything is provably done (outbox drained, group offsets at the end
//! of the topic), so they are exact, never "what arrived in time".
//!
//! Always on PostgreSQL, whatever `TEST_BACKEND` says: the outbox relay and the de-duplication store of
//! Notifications run on PostgreSQL only.

mod crash;
mod dead_letter;
mod history;
mod lifecycle_notifications;
mod outage;
mod parked;
mod replicas;
mod restart;
mod sink_outage;
mod support;
