//! LOMS types and rules. No I/O here: storage backends call these rules inside their transactions, so every
//! backend enforces the same behaviour.

pub mod allocation;
pub mod error;
pub mod lifecycle;
pub mod order;
pub mod placement;
pub mod stock;
pub mod storage;

pub use allocation::{Reservation, Shortage, StockRow, allocate};
pub use error::LomsError;
pub use ids::{Count, OrderId, Sku, UserId, WarehouseId};
pub use lifecycle::{Command, OrderState, Plan, RefundReason, RefundState, decide, unpaid_timeout};
pub use minizon_common::ids;
pub use order::{Decision, Order, OrderLines, OrderStatus, RecordedTransition, Step, Transition, TransitionReason};
pub use placement::{Placement, place};
pub use stock::{Ledger, Settlement, StockDelta, StockLevel};
pub use storage::{CreateOrder, CreateOutcome, IdempotencyKey, OrderStore, StockStore};
