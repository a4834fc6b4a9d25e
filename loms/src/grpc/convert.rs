//! Parse, don't validate: contract messages become domain values here, and errors become INVALID_ARGUMENT.

use minizon_common::grpc::metadata::IDEMPOTENCY_KEY;
use minizon_proto::loms as pb;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::domain::{
    Count, IdempotencyKey, Order, OrderLines, OrderStatus, RecordedTransition, Sku, TransitionReason, UserId,
    ids::InvalidInput,
};

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// The merged, validated lines of a CreateOrder request.
pub fn order_lines(items: &[pb::Item]) -> Result<OrderLines, InvalidInput> {
    let lines = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let sku = Sku::try_from(item.sku).map_err(|e| InvalidInput(format!("items[{index}]: {e}")))?;
            let count = Count::try_from(item.count).map_err(|e| InvalidInput(format!("items[{index}]: {e}")))?;
            Ok((sku, count))
        })
        .collect::<Result<Vec<_>, InvalidInput>>()?;
    OrderLines::new(lines)
}

/// The request's idempotency key, if any, with a fingerprint of the (merged) request it came with.
pub fn idempotency_key(
    metadata: &MetadataMap,
    user: UserId,
    lines: &OrderLines,
) -> Result<Option<IdempotencyKey>, InvalidInput> {
    let Some(value) = metadata.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| InvalidInput(format!("{IDEMPOTENCY_KEY} must be printable ASCII")))?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(InvalidInput(format!("{IDEMPOTENCY_KEY} must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters long")));
    }
    let mut hasher = Sha256::new();
    hasher.update(user.get().to_be_bytes());
    for (sku, count) in lines.iter() {
        hasher.update(sku.get().to_be_bytes());
        hasher.update(count.get().to_be_bytes());
    }
    Ok(Some(IdempotencyKey { key: key.to_owned(), request_hash: hex::encode(hasher.finalize()) }))
}

/// The contract's status enum value.
pub fn status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::New => pb::OrderStatus::New,
        OrderStatus::AwaitingPayment => pb::OrderStatus::AwaitingPayment,
        OrderStatus::Failed => pb::OrderStatus::Failed,
        OrderStatus::Payed => pb::OrderStatus::Payed,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Shipped => pb::OrderStatus::Shipped,
        OrderStatus::Delivered => pb::OrderStatus::Delivered,
    }
}

fn reason(reason: TransitionReason) -> pb::TransitionReason {
    match reason {
        TransitionReason::Created => pb::TransitionReason::Created,
        TransitionReason::Reserved => pb::TransitionReason::Reserved,
        TransitionReason::InsufficientStock => pb::TransitionReason::InsufficientStock,
        TransitionReason::Payment => pb::TransitionReason::Payment,
        TransitionReason::UserCancel => pb::TransitionReason::UserCancel,
        TransitionReason::UnpaidTimeout => pb::TransitionReason::UnpaidTimeout,
        TransitionReason::Shipped => pb::TransitionReason::Shipped,
        TransitionReason::Delivered => pb::TransitionReason::Delivered,
        TransitionReason::Changed => pb::TransitionReason::Changed,
        TransitionReason::Refund => pb::TransitionReason::Refund,
        TransitionReason::ReturnReceived => pb::TransitionReason::ReturnReceived,
    }
}

/// ListOrder's response.
pub fn list_order_response(order: &Order) -> pb::ListOrderResponse {
    pb::ListOrderResponse {
        status: status(order.status).into(),
        user: order.user.get(),
        items: order.lines.iter().map(|(sku, count)| pb::Item { sku: sku.get(), count: count.get() }).collect(),
    }
}

/// One history entry.
pub fn transition(recorded: &RecordedTransition) -> pb::StatusTransition {
    let t = &recorded.transition;
    pb::StatusTransition {
        from: t.from.map(|from| status(from).into()),
        to: status(t.to).into(),
        reason: reason(t.reason).into(),
        detail: t.detail.clone(),
        at: Some(recorded.at.into()),
    }
}
