//! Carts on PostgreSQL. Runtime-checked queries (the workspace builds with no database running).
//!
//! Locking: every write locks the user's `carts` row before touching `cart_items`, so that concurrent changes of
//! one cart are serialised (the guards below see each other's results) and never deadlock.

use anyhow::Context;
use async_trait::async_trait;
use minizon_common::db::PgPool;
use sqlx::{Postgres, migrate::MigrateDatabase};

use crate::{
    domain::{AddOutcome, Cart, CartStore, CartVersion, Count, Sku, UserId},
    error::Error,
};

/// Creates the database if it does not exist yet (and tolerates a concurrent creation).
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    if Postgres::database_exists(url).await.context("check whether the cart database exists")? {
        return Ok(());
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(()),
        // 42P04 duplicate_database; 23505 when two creations race on the catalog's unique index.
        Err(sqlx::Error::Database(error)) if matches!(error.code().as_deref(), Some("42P04" | "23505")) => Ok(()),
        Err(error) => Err(error).context("create the cart database"),
    }
}

/// Applies the migrations in `migrations/checkout/postgres` that have not run yet.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut connection = pool.acquire().await.context("connect to the cart database")?;
    sqlx::migrate!("../migrations/checkout/postgres").run(&mut connection).await.context("migrate the cart database")
}

/// Carts in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresCartStore {
    pool: PgPool,
}

impl PostgresCartStore {
    /// Creates the database if it does not exist, connects with up to `max_connections`, and migrates it.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        ensure_database(url).await?;
        let pool =
            minizon_common::db::connect_postgres(url, max_connections).await.context("connect to the cart database")?;
        migrate(&pool).await?;
        Ok(Self::new(pool))
    }

    /// A store over `pool` (already migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool (for health and shutdown).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl CartStore for PostgresCartStore {
    async fn cart(&self, user: UserId) -> Result<Cart, Error> {
        // One statement: the lines and the version come from the same snapshot.
        let rows: Vec<(i64, Option<i64>, Option<i32>)> = sqlx::query_as(
            "select c.version, i.sku, i.count
               from carts c left join cart_items i on i.user_id = c.user_id
              where c.user_id = $1
              order by i.sku",
        )
        .bind(user.get())
        .fetch_all(&mut *self.pool.acquire().await?)
        .await?;
        super::cart_from_rows(
            rows.into_iter().map(|(version, sku, count)| (version, sku, count.map(i64::from))).collect(),
        )
    }

    async fn add(&self, user: UserId, sku: Sku, count: Count, limit: u32) -> Result<AddOutcome, Error> {
        let mut tx = self.pool.begin().await?;
        // Creates the cart row or locks the existing one (the no-op update takes the row lock).
        sqlx::query(
            "insert into carts (user_id) values ($1)
             on conflict (user_id) do update set version = carts.version",
        )
        .bind(user.get())
        .execute(&mut *tx)
        .await?;
        // The guard re-checks the line against the limit in the statement that changes it; the version is bumped
        // only when the line changed.
        let added: Option<i32> = sqlx::query_scalar(
            "with line as (
                 insert into cart_items as i (user_id, sku, count)
                 select $1, $2, $3 where $3 <= $4
                   and (exists (select 1 from cart_items where user_id = $1 and sku = $2)
                        or (select count(*) from cart_items where user_id = $1) < $5)
                 on conflict (user_id, sku) do update set count = i.count + excluded.count
                 where i.count + excluded.count <= $4
                 returning i.count
             )
             update carts set version = carts.version + 1
               from line
              where carts.user_id = $1
             returning line.count",
        )
        .bind(user.get())
        .bind(i64::from(sku.get()))
        .bind(i32::try_from(count.get()).map_err(Error::internal)?)
        .bind(i32::try_from(limit.min(Count::MAX)).map_err(Error::internal)?)
        .bind(i64::try_from(Cart::MAX_LINES).map_err(Error::internal)?)
        .fetch_optional(&mut *tx)
        .await?;
        match added {
            Some(total) => {
                tx.commit().await?;
                Ok(AddOutcome::Added { count: Count::try_from(i64::from(total)).map_err(Error::internal)? })
            }
            None => {
                let current: Option<i32> =
                    sqlx::query_scalar("select count from cart_items where user_id = $1 and sku = $2")
                        .bind(user.get())
                        .bind(i64::from(sku.get()))
                        .fetch_optional(&mut *tx)
                        .await?;
                if current.is_none() {
                    // A new line: refused for the line limit, or because the cart is full (still locked: exact).
                    let lines: i64 = sqlx::query_scalar("select count(*) from cart_items where user_id = $1")
                        .bind(user.get())
                        .fetch_one(&mut *tx)
                        .await?;
                    if usize::try_from(lines).is_ok_and(|lines| lines >= Cart::MAX_LINES) {
                        return Ok(AddOutcome::CartFull);
                    }
                }
                // Nothing changed; dropping the transaction rolls back the cart row it may have created.
                Ok(AddOutcome::Refused { current: current.map_or(0, i32::unsigned_abs) })
            }
        }
    }

    async fn remove(&self, user: UserId, sku: Sku, count: Count) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let locked: Option<i64> = sqlx::query_scalar("select version from carts where user_id = $1 for update")
            .bind(user.get())
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            // No cart, so nothing to remove.
            return Ok(());
        }
        // Exactly one of the two line statements can match (fewer units left, or none); the version is bumped only
        // if one did.
        sqlx::query(
            "with reduced as (
                 update cart_items set count = count - $3
                  where user_id = $1 and sku = $2 and count > $3
                 returning 1
             ), removed as (
                 delete from cart_items
                  where user_id = $1 and sku = $2 and count <= $3
                 returning 1
             )
             update carts set version = version + 1
              where user_id = $1 and (exists (select 1 from reduced) or exists (select 1 from removed))",
        )
        .bind(user.get())
        .bind(i64::from(sku.get()))
        .bind(i32::try_from(count.get()).map_err(Error::internal)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_purchased(&self, user: UserId, version: CartVersion) -> Result<bool, Error> {
        // The delete depends on the updated cart row, so the cart row is locked (and its version checked) before
        // any line is touched; if the version moved on, nothing is deleted.
        let cleared: bool = sqlx::query_scalar(
            "with cart as (
                 update carts set version = version + 1
                  where user_id = $1 and version = $2
                 returning user_id
             ), cleared as (
                 delete from cart_items where user_id in (select user_id from cart)
                 returning 1
             )
             select exists (select 1 from cart)",
        )
        .bind(user.get())
        .bind(version.0)
        .fetch_one(&mut *self.pool.acquire().await?)
        .await?;
        Ok(cleared)
    }

    async fn bump_version(&self, user: UserId, version: CartVersion) -> Result<bool, Error> {
        let bumped = sqlx::query("update carts set version = version + 1 where user_id = $1 and version = $2")
            .bind(user.get())
            .bind(version.0)
            .execute(&mut *self.pool.acquire().await?)
            .await?;
        Ok(bumped.rows_affected() == 1)
    }
}
