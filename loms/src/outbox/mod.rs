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
//! * **Prompt**: a trigger `NOTIFY`s the relay at every commit that wrote events (`LISTEN loms_outbox`); a slow
//!   poll covers a lost notification connection.

mod config;
mod relay;

pub use config::RelayConfig;
pub use relay::{OutboxLag, RelayHandle, RelayStatus, lag, spawn};

#[doc(hidden)]
pub use relay::testing;
