//! The one mapping from [`LomsError`] to gRPC status codes.

use tonic::{Code, Status, metadata::MetadataValue};

use crate::domain::LomsError;

impl From<LomsError> for Status {
    fn from(error: LomsError) -> Self {
        let code = match &error {
            LomsError::InvalidInput(_) | LomsError::IdempotencyKeyReused { .. } => Code::InvalidArgument,
            LomsError::OrderNotFound(_) => Code::NotFound,
            LomsError::InsufficientStock { .. }
            | LomsError::ChangeShort { .. }
            | LomsError::IllegalTransition { .. }
            | LomsError::PaymentDeadlinePassed(_)
            | LomsError::StockBelowReserved { .. } => Code::FailedPrecondition,
            LomsError::Unavailable(_) => Code::Unavailable,
            LomsError::Contention => Code::Aborted,
            LomsError::Internal(source) => {
                tracing::error!(error = %source, cause = ?source, "internal error");
                return Status::internal("internal error");
            }
        };
        let mut status = Status::new(code, error.to_string());
        if let LomsError::InsufficientStock { order_id, .. } = error {
            // Machine-readable too: callers (Checkout) can find the failed order without parsing the message.
            status.metadata_mut().insert(minizon_common::grpc::metadata::ORDER_ID, MetadataValue::from(order_id.get()));
        }
        status
    }
}
