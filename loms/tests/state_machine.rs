//! Property test of the domain's order state machine (issue 12 item 7): random sequences of create / change / pay /
//! ship / deliver / cancel / refund / receive-return / timeout, run through the same pure deciders the backends use
//! over a model stock, keep every stock row's `on hand = free + reserved` with nothing negative, keep what is
//! reserved equal to what awaiting orders hold, and let the units sold grow only by payments.

use std::{collections::BTreeMap, time::Duration};

use loms::domain::{
    Command, Count, CreateOrder, Ledger, LomsError, OrderId, OrderLines, OrderState, OrderStatus, RefundReason,
    RefundState, Reservation, Sku, StockLevel, UserId, WarehouseId, decide, place,
};
use proptest::prelude::*;

const SKUS: [u32; 2] = [11, 12];
const WAREHOUSES: [i64; 2] = [1, 2];

/// One step of a random history. Order indexes wrap around the orders created so far.
#[derive(Debug, Clone)]
enum Op {
    Create(Vec<(u32, u32)>),
    Change(usize, Vec<(u32, u32)>),
    Pay(usize),
    Ship(usize),
    Deliver(usize),
    Cancel(usize),
    Refund(usize),
    ReceiveReturn(usize),
    /// The order's payment deadline passes and the sweep runs.
    Timeout(usize),
}

fn lines_strategy() -> impl Strategy<Value = Vec<(u32, u32)>> {
    prop::collection::vec((prop::sample::select(SKUS.to_vec()), 1u32..6), 1..3)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let at = 0usize..8;
    prop_oneof![
        3 => lines_strategy().prop_map(Op::Create),
        2 => (at.clone(), lines_strategy()).prop_map(|(i, l)| Op::Change(i, l)),
        2 => at.clone().prop_map(Op::Pay),
        1 => at.clone().prop_map(Op::Ship),
        1 => at.clone().prop_map(Op::Deliver),
        1 => at.clone().prop_map(Op::Cancel),
        1 => at.clone().prop_map(Op::Refund),
        1 => at.clone().prop_map(Op::ReceiveReturn),
        1 => at.prop_map(Op::Timeout),
    ]
}

fn order_lines(lines: &[(u32, u32)]) -> OrderLines {
    OrderLines::new(lines.iter().map(|&(sku, count)| (Sku::try_from(sku).unwrap(), Count::try_from(count).unwrap())))
        .unwrap()
}

/// An order as a backend stores it: its state and its stored per-warehouse reservations.
#[derive(Debug, Clone)]
struct Stored {
    state: OrderState,
    held: Vec<Reservation>,
}

/// The model backend: one transaction per command, rolled back (ledger and order untouched) on an error.
#[derive(Debug)]
struct Model {
    ledger: Ledger,
    orders: Vec<Stored>,
    initial_on_hand: BTreeMap<(u32, i64), u64>,
}

impl Model {
    fn new(on_hand: &[u64]) -> Self {
        let mut levels = Vec::new();
        let mut initial_on_hand = BTreeMap::new();
        for (i, (&sku, &warehouse)) in SKUS.iter().flat_map(|s| WAREHOUSES.iter().map(move |w| (s, w))).enumerate() {
            levels.push(StockLevel {
                warehouse: WarehouseId::try_from(warehouse).unwrap(),
                sku: Sku::try_from(sku).unwrap(),
                on_hand: on_hand[i],
                reserved: 0,
            });
            initial_on_hand.insert((sku, warehouse), on_hand[i]);
        }
        Self { ledger: Ledger::new(levels), orders: Vec::new(), initial_on_hand }
    }

    fn create(&mut self, lines: &[(u32, u32)]) {
        let id = OrderId::try_from(self.orders.len() as i64 + 1).unwrap();
        let request = CreateOrder {
            user: UserId::try_from(1).unwrap(),
            lines: order_lines(lines),
            idempotency: None,
            payment_timeout: Duration::from_secs(600),
            traceparent: None,
        };
        let placement = place(id, &request, &mut self.ledger);
        self.orders.push(Stored {
            state: OrderState {
                id,
                user: request.user,
                status: placement.status,
                lines: request.lines,
                overdue: false,
                refund: RefundState::None,
            },
            held: placement.reservations,
        });
    }

    /// Runs `command` on the order at `index` the way a backend does: under its lock, all or nothing.
    fn run(&mut self, index: usize, command: Command) -> Result<(), LomsError> {
        let index = index % self.orders.len().max(1);
        let Some(order) = self.orders.get(index).cloned() else {
            return Ok(());
        };
        let Some(plan) = decide(&order.state, &command)? else {
            return Ok(());
        };
        let mut ledger = self.ledger.clone();
        let new_held = plan.apply_stock(&order.state, &order.held, &mut ledger)?;
        let stored = &mut self.orders[index];
        stored.state.status = plan.status;
        stored.state.refund = plan.refund;
        if let Some(lines) = &plan.new_lines {
            stored.state.lines = lines.clone();
            stored.held = new_held.unwrap_or_default();
        }
        self.ledger = ledger;
        plan.reply
    }

    /// Units that left the warehouses: what was on hand at the start minus what is on hand now, per row.
    fn sold(&self) -> u64 {
        self.initial_on_hand
            .iter()
            .map(|(&(sku, warehouse), &initial)| initial.saturating_sub(self.level(sku, warehouse).on_hand))
            .sum()
    }

    fn level(&self, sku: u32, warehouse: i64) -> StockLevel {
        self.ledger.level(WarehouseId::try_from(warehouse).unwrap(), Sku::try_from(sku).unwrap())
    }

    /// Sum of what orders in `holding` hold at one row.
    fn held_by(&self, sku: u32, warehouse: i64, holding: impl Fn(&OrderState) -> bool) -> u64 {
        self.orders
            .iter()
            .filter(|o| holding(&o.state))
            .flat_map(|o| o.held.iter())
            .filter(|r| r.sku.get() == sku && r.warehouse.get() == warehouse)
            .map(|r| r.count)
            .sum()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for &sku in &SKUS {
            for &warehouse in &WAREHOUSES {
                let level = self.level(sku, warehouse);
                prop_assert!(level.reserved <= level.on_hand, "reserved above on hand: {level:?}");
                prop_assert_eq!(level.on_hand, level.available() + level.reserved, "on hand = free + reserved");
                let awaiting = self.held_by(sku, warehouse, |o| o.status == OrderStatus::AwaitingPayment);
                prop_assert_eq!(level.reserved, awaiting, "reserved = what awaiting orders hold ({:?})", level);
                // Out of the warehouse: paid, shipped or delivered orders, and refunds whose return is not back yet.
                let out = self.held_by(sku, warehouse, |o| {
                    matches!(o.status, OrderStatus::Payed | OrderStatus::Shipped | OrderStatus::Delivered)
                        || (o.status == OrderStatus::Cancelled && o.refund == RefundState::ReturnRequested)
                });
                prop_assert_eq!(self.initial_on_hand[&(sku, warehouse)], level.on_hand + out, "every unit accounted");
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_histories_keep_the_stock_consistent(
        on_hand in prop::collection::vec(0u64..12, 4),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        let mut model = Model::new(&on_hand);
        for op in ops {
            let sold_before = model.sold();
            let is_payment = matches!(op, Op::Pay(_));
            let outcome = match op {
                Op::Create(lines) => {
                    model.create(&lines);
                    Ok(())
                }
                Op::Change(i, lines) => model.run(i, Command::Change(order_lines(&lines))),
                Op::Pay(i) => model.run(i, Command::Pay),
                Op::Ship(i) => model.run(i, Command::Ship),
                Op::Deliver(i) => model.run(i, Command::Deliver),
                Op::Cancel(i) => model.run(i, Command::Cancel),
                Op::Refund(i) => model.run(i, Command::Refund(RefundReason::try_from("model".to_owned()).unwrap())),
                Op::ReceiveReturn(i) => model.run(i, Command::ReceiveReturn),
                Op::Timeout(i) => {
                    let at = i % model.orders.len().max(1);
                    if let Some(order) = model.orders.get_mut(at) {
                        order.state.overdue = true;
                    }
                    model.run(i, Command::Timeout)
                }
            };
            if let Err(error) = &outcome {
                prop_assert!(
                    matches!(
                        error,
                        LomsError::IllegalTransition { .. } | LomsError::ChangeShort { .. } | LomsError::PaymentDeadlinePassed(_)
                    ),
                    "only a refusal may fail a step: {error:?}"
                );
            }
            model.check()?;
            let sold_after = model.sold();
            if !is_payment {
                prop_assert!(sold_after <= sold_before, "only a payment sells: {sold_before} -> {sold_after}");
            }
        }
    }
}
