//! `loms_v1.LomsAdminV1`: stock administration, behind a bearer token.

use std::{collections::HashMap, sync::Arc};

use minizon_proto::loms as pb;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, service::Interceptor};

use crate::domain::{Command, OrderStore, Sku, StockLevel, StockStore, WarehouseId};

/// Most levels one ImportStock call may carry.
pub const MAX_IMPORT_LEVELS: usize = 100_000;

/// The stock administration service.
#[derive(Debug, Clone)]
pub struct AdminService {
    store: Arc<dyn StockStore>,
    orders: Arc<dyn OrderStore>,
}

impl AdminService {
    /// A service over `store` (stock) and `orders` (returns).
    pub fn new(store: Arc<dyn StockStore>, orders: Arc<dyn OrderStore>) -> Self {
        Self { store, orders }
    }
}

/// Checks `authorization: Bearer <token>` on every admin call.
#[derive(Debug, Clone)]
pub struct AdminToken {
    expected: Option<Arc<SecretString>>,
}

impl AdminToken {
    /// Accepts `token`; with `None` every call is refused (the admin service is off).
    pub fn new(token: Option<SecretString>) -> Self {
        Self { expected: token.map(Arc::new) }
    }
}

impl Interceptor for AdminToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Err(Status::unauthenticated("the admin service is disabled: start LOMS with --admin-token"));
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("send `authorization: Bearer <admin token>` metadata"))?;
        // Compare digests so the time taken does not reveal how much of the token matched.
        if Sha256::digest(presented.as_bytes()) != Sha256::digest(expected.expose_secret().as_bytes()) {
            return Err(Status::unauthenticated("the admin token is not valid"));
        }
        Ok(request)
    }
}

fn location(warehouse_id: i64, sku: u32) -> Result<(WarehouseId, Sku), Status> {
    let warehouse = WarehouseId::try_from(warehouse_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let sku = Sku::try_from(sku).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((warehouse, sku))
}

fn level(level: StockLevel) -> pb::StockLevel {
    pb::StockLevel {
        warehouse_id: level.warehouse.get(),
        sku: level.sku.get(),
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available(),
    }
}

#[tonic::async_trait]
impl pb::loms_admin_v1_server::LomsAdminV1 for AdminService {
    #[tracing::instrument(skip_all, fields(warehouse = request.get_ref().warehouse_id, sku = request.get_ref().sku))]
    async fn set_stock(&self, request: Request<pb::SetStockRequest>) -> Result<Response<pb::StockLevel>, Status> {
        let pb::SetStockRequest { warehouse_id, sku, on_hand } = request.into_inner();
        let (warehouse, sku) = location(warehouse_id, sku)?;
        let updated = self.store.set_stock(warehouse, sku, on_hand).await?;
        tracing::info!(on_hand, "stock set");
        Ok(Response::new(level(updated)))
    }

    #[tracing::instrument(skip_all, fields(warehouse = request.get_ref().warehouse_id, sku = request.get_ref().sku))]
    async fn add_stock(&self, request: Request<pb::AddStockRequest>) -> Result<Response<pb::StockLevel>, Status> {
        let pb::AddStockRequest { warehouse_id, sku, delta } = request.into_inner();
        let (warehouse, sku) = location(warehouse_id, sku)?;
        let updated = self.store.add_stock(warehouse, sku, delta).await?;
        tracing::info!(delta, "stock added");
        Ok(Response::new(level(updated)))
    }

    #[tracing::instrument(skip_all, fields(levels = request.get_ref().levels.len()))]
    async fn import_stock(
        &self,
        request: Request<pb::ImportStockRequest>,
    ) -> Result<Response<pb::ImportStockResponse>, Status> {
        let levels = request.into_inner().levels;
        if levels.len() > MAX_IMPORT_LEVELS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_IMPORT_LEVELS} levels per import, got {}; split the file",
                levels.len()
            )));
        }
        let parsed = distinct_levels(&levels)?;
        let imported = self.store.import_stock(&parsed).await?;
        tracing::info!(imported, "stock imported");
        Ok(Response::new(pb::ImportStockResponse { imported: imported as u32 }))
    }

    #[tracing::instrument(skip_all, fields(sku = request.get_ref().sku))]
    async fn list_stock(
        &self,
        request: Request<pb::ListStockRequest>,
    ) -> Result<Response<pb::ListStockResponse>, Status> {
        let sku = Sku::try_from(request.get_ref().sku).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let levels = self.store.stock_levels(sku).await?.into_iter().map(level).collect();
        Ok(Response::new(pb::ListStockResponse { levels }))
    }

    #[tracing::instrument(skip_all, fields(order_id = request.get_ref().order_id))]
    async fn receive_return(
        &self,
        request: Request<pb::ReceiveReturnRequest>,
    ) -> Result<Response<minizon_proto::well_known::Empty>, Status> {
        self.orders.run(super::orders::order_id(request.get_ref().order_id)?, Command::ReceiveReturn).await?;
        tracing::info!("return received");
        Ok(Response::new(minizon_proto::well_known::Empty {}))
    }
}

/// Validates every level and refuses a (warehouse, sku) pair given twice with different counts: an import is a
/// statement of fact, and two facts about one shelf cannot both be true.
pub fn distinct_levels(levels: &[pb::SetStockRequest]) -> Result<Vec<(WarehouseId, Sku, u64)>, Status> {
    let mut seen: HashMap<(WarehouseId, Sku), u64> = HashMap::with_capacity(levels.len());
    let mut parsed = Vec::with_capacity(levels.len());
    for (index, row) in levels.iter().enumerate() {
        let (warehouse, sku) = location(row.warehouse_id, row.sku)
            .map_err(|s| Status::invalid_argument(format!("levels[{index}]: {}", s.message())))?;
        match seen.insert((warehouse, sku), row.on_hand) {
            Some(previous) if previous != row.on_hand => {
                return Err(Status::invalid_argument(format!(
                    "levels[{index}]: warehouse {warehouse} sku {sku} is given twice ({previous} and {})",
                    row.on_hand
                )));
            }
            Some(_) => {}
            None => parsed.push((warehouse, sku, row.on_hand)),
        }
    }
    Ok(parsed)
}
