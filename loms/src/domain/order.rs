//! The order state machine. The only transitions:
//!
//! ```text
//! new ──reserve ok──▶ awaiting payment ──pay──▶ payed
//!  └──reserve fails─▶ failed            └──cancel / unpaid timeout──▶ cancelled
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::ids::{Count, InvalidInput, OrderId, Sku, UserId};

/// Where an order is in its life. The numbers are the contract's enum numbers and the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    New = 0,
    AwaitingPayment = 1,
    Failed = 2,
    Payed = 3,
    Cancelled = 4,
    Shipped = 5,
    Delivered = 6,
}

impl OrderStatus {
    /// The stored / wire number.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The status stored as `code`; `None` for a number no status has.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            0 => Self::New,
            1 => Self::AwaitingPayment,
            2 => Self::Failed,
            3 => Self::Payed,
            4 => Self::Cancelled,
            5 => Self::Shipped,
            6 => Self::Delivered,
            _ => return None,
        })
    }

    /// A lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::AwaitingPayment => "awaiting payment",
            Self::Failed => "failed",
            Self::Payed => "payed",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
        }
    }

    /// Whether the order holds reserved units.
    pub fn holds_reservation(self) -> bool {
        matches!(self, Self::New | Self::AwaitingPayment)
    }

    /// What paying an order in this status does.
    pub fn pay(self) -> Decision {
        match self {
            Self::AwaitingPayment => {
                Decision::Apply(Transition::new(Some(self), Self::Payed, TransitionReason::Payment))
            }
            Self::Payed => Decision::AlreadyDone,
            Self::New | Self::Failed | Self::Cancelled | Self::Shipped | Self::Delivered => {
                Decision::Refuse { status: self, action: "paid" }
            }
        }
    }

    /// What cancelling an order in this status does, for `reason` (a user's cancel or the unpaid timeout).
    pub fn cancel(self, reason: TransitionReason) -> Decision {
        match self {
            Self::New | Self::AwaitingPayment => Decision::Apply(Transition::new(Some(self), Self::Cancelled, reason)),
            Self::Cancelled => Decision::AlreadyDone,
            Self::Payed | Self::Failed | Self::Shipped | Self::Delivered => {
                Decision::Refuse { status: self, action: "cancelled" }
            }
        }
    }
}

/// Why an order changed status. The numbers are the contract's `TransitionReason` and the stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionReason {
    Created = 1,
    Reserved = 2,
    InsufficientStock = 3,
    Payment = 4,
    UserCancel = 5,
    UnpaidTimeout = 6,
    Shipped = 7,
    Delivered = 8,
    Changed = 9,
    Refund = 10,
    ReturnReceived = 11,
}

impl TransitionReason {
    /// The stored / wire number.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The reason stored as `code`.
    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            1 => Self::Created,
            2 => Self::Reserved,
            3 => Self::InsufficientStock,
            4 => Self::Payment,
            5 => Self::UserCancel,
            6 => Self::UnpaidTimeout,
            7 => Self::Shipped,
            8 => Self::Delivered,
            9 => Self::Changed,
            10 => Self::Refund,
            11 => Self::ReturnReceived,
            _ => return None,
        })
    }
}

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `None` for the order's creation.
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub reason: TransitionReason,
    /// What a person needs to know beyond the reason, e.g. which sku was short.
    pub detail: String,
}

impl Transition {
    /// A transition with no detail.
    pub fn new(from: Option<OrderStatus>, to: OrderStatus, reason: TransitionReason) -> Self {
        Self { from, to, reason, detail: String::new() }
    }

    /// The same transition with a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// One step of an order as it is recorded: its history row, and what its event says beyond it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub transition: Transition,
    /// A refund of a shipped order: the goods must come back from delivery.
    pub return_requested: bool,
    /// A change of lines: the lines before it (the event's `items` are the lines after).
    pub previous_lines: Option<OrderLines>,
}

impl From<Transition> for Step {
    fn from(transition: Transition) -> Self {
        Self { transition, return_requested: false, previous_lines: None }
    }
}

/// A recorded transition, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTransition {
    pub transition: Transition,
    pub at: DateTime<Utc>,
}

/// The outcome of applying an action to an order's current status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Change the status.
    Apply(Transition),
    /// The order is already where the action would take it: succeed without changing anything (clients retry).
    AlreadyDone,
    /// The status forbids the action.
    Refuse { status: OrderStatus, action: &'static str },
}

/// The items of an order: duplicate skus merged, sorted by sku (the global lock order), never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderLines(Vec<(Sku, Count)>);

impl OrderLines {
    /// Most distinct skus one order may carry: bounds the work and the locks one request can take.
    pub const MAX_LINES: usize = 1_000;

    /// Merges duplicate skus; refuses an empty order, a merged count over the contract's limit, and orders with
    /// more than [`Self::MAX_LINES`] distinct skus. Every sum is checked as it is made: no number of lines of one
    /// sku can wrap the merged count, and a request is refused at the first line that breaks a limit.
    pub fn new(items: impl IntoIterator<Item = (Sku, Count)>) -> Result<Self, InvalidInput> {
        let mut merged: BTreeMap<Sku, u32> = BTreeMap::new();
        for (sku, count) in items {
            let total = merged.entry(sku).or_default();
            *total = total.checked_add(count.get()).filter(|sum| *sum <= Count::MAX).ok_or_else(|| {
                InvalidInput(format!(
                    "sku {sku}: units in one order exceed the limit of {} (its lines add up to more)",
                    Count::MAX
                ))
            })?;
            if merged.len() > Self::MAX_LINES {
                return Err(InvalidInput(format!(
                    "an order may hold at most {} distinct skus, got more",
                    Self::MAX_LINES
                )));
            }
        }
        if merged.is_empty() {
            return Err(InvalidInput("an order needs at least one item".into()));
        }
        merged
            .into_iter()
            .map(|(sku, total)| {
                Count::try_from(total).map(|count| (sku, count)).map_err(|_| {
                    InvalidInput(format!("sku {sku}: {total} units in one order exceed the limit of {}", Count::MAX))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The lines, by ascending sku.
    pub fn iter(&self) -> impl Iterator<Item = (Sku, Count)> + '_ {
        self.0.iter().copied()
    }

    /// How many distinct skus.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (an order has at least one line); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An order as ListOrder shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    pub status: OrderStatus,
    pub lines: OrderLines,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: u32, count: u32) -> (Sku, Count) {
        (Sku::try_from(sku).unwrap(), Count::try_from(count).unwrap())
    }

    #[test]
    fn duplicate_skus_are_merged_and_sorted() {
        let lines = OrderLines::new([line(5, 1), line(2, 3), line(5, 4)]).unwrap();
        assert_eq!(lines.iter().collect::<Vec<_>>(), vec![line(2, 3), line(5, 5)]);
    }

    #[test]
    fn merged_counts_beyond_the_limit_are_refused() {
        assert!(OrderLines::new([line(5, 65_535), line(5, 1)]).is_err());
    }

    #[test]
    fn many_full_lines_of_one_sku_are_refused_not_wrapped() {
        // 65,538 lines of 65,535 units: the plain u32 sum wraps to 65,534 (a tiny order) or panics in debug.
        let result = OrderLines::new(std::iter::repeat_n(line(5, 65_535), 65_538));
        assert!(result.unwrap_err().0.contains("exceed the limit of 65535"));
    }

    #[test]
    fn more_distinct_skus_than_the_limit_are_refused() {
        let at_limit = (1..=OrderLines::MAX_LINES as u32).map(|sku| line(sku, 1));
        assert_eq!(OrderLines::new(at_limit).unwrap().len(), OrderLines::MAX_LINES);
        let over = (1..=OrderLines::MAX_LINES as u32 + 1).map(|sku| line(sku, 1));
        assert!(OrderLines::new(over).unwrap_err().0.contains("at most 1000 distinct skus"));
    }

    proptest::proptest! {
        /// Merging keeps every sku once, in ascending order, with the sum of its lines, whenever no sum goes past
        /// the per-line limit; otherwise the order is refused. Nothing is lost, invented or wrapped.
        #[test]
        fn merging_sums_each_sku_exactly_or_refuses(
            raw in proptest::collection::vec((1u32..20, 1u32..=65_535), 0..60),
        ) {
            let items: Vec<(Sku, Count)> = raw.iter().map(|&(sku, count)| line(sku, count)).collect();
            let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
            for &(sku, count) in &raw {
                *expected.entry(sku).or_default() += u64::from(count);
            }
            let fits = expected.values().all(|total| *total <= u64::from(Count::MAX));
            match OrderLines::new(items.clone()) {
                Ok(lines) => {
                    proptest::prop_assert!(fits && !raw.is_empty());
                    let got: Vec<(u32, u64)> =
                        lines.iter().map(|(sku, count)| (sku.get(), u64::from(count.get()))).collect();
                    proptest::prop_assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
                    // Merging is order-independent: the same items in reverse give the same lines.
                    let reversed = OrderLines::new(items.into_iter().rev()).unwrap();
                    proptest::prop_assert_eq!(reversed, lines);
                }
                Err(_) => proptest::prop_assert!(!fits || raw.is_empty()),
            }
        }
    }

    #[test]
    fn an_empty_order_is_refused() {
        assert!(OrderLines::new([]).is_err());
    }

    #[test]
    fn only_an_awaiting_order_can_be_paid_and_paying_twice_is_a_no_op() {
        assert!(matches!(OrderStatus::AwaitingPayment.pay(), Decision::Apply(t) if t.to == OrderStatus::Payed));
        assert_eq!(OrderStatus::Payed.pay(), Decision::AlreadyDone);
        for status in [OrderStatus::New, OrderStatus::Failed, OrderStatus::Cancelled] {
            assert!(matches!(status.pay(), Decision::Refuse { .. }), "{status:?}");
        }
    }

    #[test]
    fn only_unpaid_orders_can_be_cancelled_and_cancelling_twice_is_a_no_op() {
        for status in [OrderStatus::New, OrderStatus::AwaitingPayment] {
            assert!(
                matches!(status.cancel(TransitionReason::UserCancel), Decision::Apply(t) if t.to == OrderStatus::Cancelled)
            );
        }
        assert_eq!(OrderStatus::Cancelled.cancel(TransitionReason::UserCancel), Decision::AlreadyDone);
        for status in [OrderStatus::Payed, OrderStatus::Failed] {
            assert!(matches!(status.cancel(TransitionReason::UnpaidTimeout), Decision::Refuse { .. }));
        }
    }

    #[test]
    fn status_codes_round_trip() {
        for code in 0..=6 {
            assert_eq!(OrderStatus::from_code(code).unwrap().code(), code);
        }
        assert_eq!(OrderStatus::from_code(7), None);
    }
}
