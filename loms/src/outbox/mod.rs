//! The outbox relay: publishes the events LOMS wrote to its `outbox` table (in the transaction of each status
//! change) to Kafka, and marks each row sent only after the broker acknowledged it.
//!
//! Guarantees, and how they are kept:
//! * **Nothing lost**: a row stays unsent until the broker acknowledged it (idempotent producer, `acks=all`); a
//!   relay that dies before marking publishes it again after the restart (consumers de-duplicate by event id).
//! * **Nothing published twice by replicas**: a round claims rows with `for update skip locked` inside a
//!   transaction that lasts until they are marked, so concurrent relays on one database never hold the same row.
//! * **Order per order**: a round only claims each order's earliest unsent event, so an order's next event is
//!   published only after the previous one was acknowledged and marked, whichever replica does it. All events of
//!   an order share the key (the order id), hence the partition.
//! * **Decoupled**: no request waits for Kafka. While the broker is unreachable, rounds fail and back off, and
//!   events wait in the table.
//! * **Prompt**: the store wakes its process's relay after every commit that wrote events; a poll (1 s) picks up
//!   events written by processes that run no relay.
//! * **One bad row does not stop the rest**: a row the broker refuses for good (too large, malformed) is parked
//!   with its reason (logged, counted in the status, health NOT_SERVING) and the round goes on; the later events of
//!   its order wait behind it (order per order), other orders' events keep flowing. `loms outbox republish`
//!   returns it to the relay.
//! * **Both backends**: [`OutboxSource`] is the database side, on PostgreSQL (any number of replicas) or SQLite
//!   (the embedded mode: one process, one relay).

mod config;
mod relay;
mod republish;
mod source;

pub use config::RelayConfig;
pub use relay::{HEALTHY_LAG, RelayHandle, RelayStatus, lag, spawn};
pub use republish::SentEvent;
pub use source::{OutboxLag, OutboxSource, Republish};

#[doc(hidden)]
pub use relay::testing;
