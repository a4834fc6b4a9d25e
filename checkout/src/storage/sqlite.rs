//! Carts on SQLite, for the embedded mode. Runtime-checked queries, like the PostgreSQL backend.
//!
//! Concurrency design: every write runs in a `begin immediate` transaction on the single writer connection of
//! [`SqlitePools`], so writes of all carts are serialised — the SQLite way to get what PostgreSQL's lock on the
//! `carts` row gives. That is why a write may read a line, decide in Rust, and then change it: nothing else can
//! write between the read and the write, not even another process on the same file (`immediate` takes the
//! database's write lock before the first read, and waits for it up to the busy timeout). Reads go through the
//! reader connections, which WAL lets run beside the writer; each read is one statement, so the lines and the
//! version come from one snapshot.

use anyhow::Context as _;
use async_trait::async_trait;
use minizon_common::db::SqlitePools;
use sqlx::{Sqlite, Transaction};

use crate::{
    domain::{AddOutcome, Cart, CartStore, CartVersion, Count, Sku, UserId},
    error::Error,
};

type Tx = Transaction<'static, Sqlite>;

/// Carts in an SQLite file (or in memory).
#[derive(Debug, Clone)]
pub struct SqliteCartStore {
    pools: SqlitePools,
}

impl SqliteCartStore {
    /// Opens (creating if missing) and migrates the database at `url`, with up to `readers` reader connections
    /// beside the one writer.
    pub async fn connect(url: &str, readers: u32) -> anyhow::Result<Self> {
        let pools = minizon_common::db::connect_sqlite(url, readers).await.context("open the cart database")?;
        sqlx::migrate!("../migrations/checkout/sqlite")
            .run(&mut pools.writer.acquire().await?)
            .await
            .context("migrate the cart database")?;
        Ok(Self { pools })
    }

    /// The writer and reader pools (for health and shutdown).
    pub fn pools(&self) -> &SqlitePools {
        &self.pools
    }

    /// A write transaction: holds the database's write lock from its first statement to its end.
    async fn write(&self) -> Result<Tx, Error> {
        Ok(self.pools.write().await?)
    }
}

/// The line's new count when `count` units are added to the `current` ones, or `None` when that would go beyond
/// `limit` (itself never beyond [`Count::MAX`]).
fn added(current: u32, count: Count, limit: u32) -> Option<u32> {
    current.checked_add(count.get()).filter(|total| *total <= limit.min(Count::MAX))
}

/// What is left of a line of `current` units once `count` are removed; `None` when the line disappears.
fn remaining(current: u32, count: Count) -> Option<u32> {
    current.checked_sub(count.get()).filter(|left| *left > 0)
}

/// The units a stored line holds (the schema keeps them within 1..=65535).
fn stored_count(count: i64) -> Result<u32, Error> {
    Count::try_from(count).map(Count::get).map_err(Error::internal)
}

/// Bumps the cart's version inside a write transaction.
async fn bump(tx: &mut Tx, user: UserId) -> Result<(), Error> {
    sqlx::query("update carts set version = version + 1 where user_id = ?1")
        .bind(user.get())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The units of `sku` in the user's cart, read inside a write transaction; `None` when there is no such line.
async fn line_count(tx: &mut Tx, user: UserId, sku: Sku) -> Result<Option<u32>, Error> {
    let count: Option<i64> = sqlx::query_scalar("select count from cart_items where user_id = ?1 and sku = ?2")
        .bind(user.get())
        .bind(i64::from(sku.get()))
        .fetch_optional(&mut **tx)
        .await?;
    count.map(stored_count).transpose()
}

#[async_trait]
impl CartStore for SqliteCartStore {
    async fn cart(&self, user: UserId) -> Result<Cart, Error> {
        // One statement: the lines and the version come from the same snapshot.
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "select c.version, i.sku, i.count
               from carts c left join cart_items i on i.user_id = c.user_id
              where c.user_id = ?1
              order by i.sku",
        )
        .bind(user.get())
        .fetch_all(&mut *self.pools.reader.acquire().await?)
        .await?;
        super::cart_from_rows(rows)
    }

    async fn add(&self, user: UserId, sku: Sku, count: Count, limit: u32) -> Result<AddOutcome, Error> {
        let mut tx = self.write().await?;
        let existing = line_count(&mut tx, user, sku).await?;
        if existing.is_none() {
            let lines: i64 = sqlx::query_scalar("select count(*) from cart_items where user_id = ?1")
                .bind(user.get())
                .fetch_one(&mut *tx)
                .await?;
            if usize::try_from(lines).is_ok_and(|lines| lines >= Cart::MAX_LINES) {
                return Ok(AddOutcome::CartFull);
            }
        }
        let current = existing.unwrap_or(0);
        let Some(total) = added(current, count, limit) else {
            // Nothing was written; dropping the transaction rolls it back.
            return Ok(AddOutcome::Refused { current });
        };
        sqlx::query("insert into carts (user_id) values (?1) on conflict (user_id) do nothing")
            .bind(user.get())
            .execute(&mut *tx)
            .await?;
        // The guard is decided above under the write lock; the schema's check on `count` backs it up.
        sqlx::query(
            "insert into cart_items (user_id, sku, count) values (?1, ?2, ?3)
             on conflict (user_id, sku) do update set count = excluded.count",
        )
        .bind(user.get())
        .bind(i64::from(sku.get()))
        .bind(i64::from(total))
        .execute(&mut *tx)
        .await?;
        bump(&mut tx, user).await?;
        tx.commit().await?;
        Ok(AddOutcome::Added { count: Count::try_from(total).map_err(Error::internal)? })
    }

    async fn remove(&self, user: UserId, sku: Sku, count: Count) -> Result<(), Error> {
        let mut tx = self.write().await?;
        let Some(current) = line_count(&mut tx, user, sku).await? else {
            // No such line (or no cart): nothing to remove, and the version stays.
            return Ok(());
        };
        let statement = match remaining(current, count) {
            Some(left) => sqlx::query("update cart_items set count = ?3 where user_id = ?1 and sku = ?2")
                .bind(user.get())
                .bind(i64::from(sku.get()))
                .bind(i64::from(left)),
            None => sqlx::query("delete from cart_items where user_id = ?1 and sku = ?2")
                .bind(user.get())
                .bind(i64::from(sku.get())),
        };
        statement.execute(&mut *tx).await?;
        bump(&mut tx, user).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_purchased(&self, user: UserId, version: CartVersion) -> Result<bool, Error> {
        let mut tx = self.write().await?;
        let bumped = sqlx::query("update carts set version = version + 1 where user_id = ?1 and version = ?2")
            .bind(user.get())
            .bind(version.0)
            .execute(&mut *tx)
            .await?;
        if bumped.rows_affected() != 1 {
            // The cart changed since it was bought (or never existed): leave it as it is.
            return Ok(false);
        }
        sqlx::query("delete from cart_items where user_id = ?1").bind(user.get()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn bump_version(&self, user: UserId, version: CartVersion) -> Result<bool, Error> {
        let mut tx = self.write().await?;
        let bumped = sqlx::query("update carts set version = version + 1 where user_id = ?1 and version = ?2")
            .bind(user.get())
            .bind(version.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(bumped.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn count(n: u32) -> Count {
        Count::try_from(n).unwrap()
    }

    fn user(id: i64) -> UserId {
        UserId::try_from(id).unwrap()
    }

    fn sku(n: u32) -> Sku {
        Sku::try_from(n).unwrap()
    }

    async fn store() -> SqliteCartStore {
        SqliteCartStore::connect("sqlite::memory:", 1).await.unwrap()
    }

    async fn lines(store: &SqliteCartStore, id: i64) -> Vec<(u32, u32)> {
        store.cart(user(id)).await.unwrap().lines().iter().map(|line| (line.sku.get(), line.count.get())).collect()
    }

    #[test]
    fn an_addition_within_the_limit_gives_the_sum() {
        assert_eq!(added(0, count(3), 3), Some(3));
        assert_eq!(added(2, count(3), 10), Some(5));
    }

    #[test]
    fn an_addition_beyond_the_limit_or_the_line_maximum_is_refused() {
        assert_eq!(added(2, count(2), 3), None);
        assert_eq!(added(0, count(1), 0), None);
        assert_eq!(added(Count::MAX, count(1), u32::MAX), None, "the limit is capped at the line maximum");
        assert_eq!(added(u32::MAX, count(1), u32::MAX), None, "no overflow");
    }

    #[test]
    fn a_removal_leaves_the_rest_or_nothing() {
        assert_eq!(remaining(5, count(2)), Some(3));
        assert_eq!(remaining(5, count(5)), None);
        assert_eq!(remaining(5, count(100)), None);
    }

    #[tokio::test]
    async fn an_unknown_user_has_an_empty_cart_at_version_zero() {
        let store = store().await;

        let cart = store.cart(user(1)).await.unwrap();

        assert!(cart.is_empty());
        assert_eq!(cart.version(), CartVersion(0));
    }

    #[tokio::test]
    async fn adds_accumulate_up_to_the_limit_and_bump_the_version_only_when_they_change_the_line() {
        let store = store().await;

        let first = store.add(user(1), sku(7), count(2), 5).await.unwrap();
        let second = store.add(user(1), sku(7), count(3), 5).await.unwrap();
        let version = store.cart(user(1)).await.unwrap().version();
        let refused = store.add(user(1), sku(7), count(1), 5).await.unwrap();

        assert_eq!(first, AddOutcome::Added { count: count(2) });
        assert_eq!(second, AddOutcome::Added { count: count(5) });
        assert_eq!(refused, AddOutcome::Refused { current: 5 });
        assert_eq!(store.cart(user(1)).await.unwrap().version(), version, "a refused add changes nothing");
        assert_eq!(lines(&store, 1).await, vec![(7, 5)]);
    }

    #[tokio::test]
    async fn a_refused_first_add_creates_no_cart() {
        let store = store().await;

        let refused = store.add(user(1), sku(7), count(4), 3).await.unwrap();

        assert_eq!(refused, AddOutcome::Refused { current: 0 });
        let carts: i64 = sqlx::query_scalar("select count(*) from carts")
            .fetch_one(&mut *store.pools.reader.acquire().await.unwrap())
            .await
            .unwrap();
        assert_eq!(carts, 0);
    }

    #[tokio::test]
    async fn removing_reduces_or_deletes_the_line_and_removing_nothing_keeps_the_version() {
        let store = store().await;
        store.add(user(1), sku(7), count(5), 10).await.unwrap();
        store.add(user(1), sku(8), count(1), 10).await.unwrap();
        let before = store.cart(user(1)).await.unwrap().version();

        store.remove(user(1), sku(7), count(2)).await.unwrap();
        store.remove(user(1), sku(8), count(9)).await.unwrap();
        let after = store.cart(user(1)).await.unwrap().version();
        store.remove(user(1), sku(9), count(1)).await.unwrap();
        store.remove(user(2), sku(7), count(1)).await.unwrap();

        assert_eq!(lines(&store, 1).await, vec![(7, 3)]);
        assert_eq!(after, CartVersion(before.0 + 2));
        assert_eq!(store.cart(user(1)).await.unwrap().version(), after);
        assert_eq!(store.cart(user(2)).await.unwrap(), Cart::new(CartVersion(0), Vec::new()));
    }

    #[tokio::test]
    async fn only_the_purchased_version_is_cleared() {
        let store = store().await;
        store.add(user(1), sku(7), count(2), 10).await.unwrap();
        let bought = store.cart(user(1)).await.unwrap().version();
        store.add(user(1), sku(8), count(1), 10).await.unwrap();

        let stale = store.clear_purchased(user(1), bought).await.unwrap();
        let current = store.cart(user(1)).await.unwrap().version();
        let cleared = store.clear_purchased(user(1), current).await.unwrap();

        assert!(!stale, "a cart changed during its purchase must be left alone");
        assert!(cleared);
        let cart = store.cart(user(1)).await.unwrap();
        assert!(cart.is_empty());
        assert_eq!(cart.version(), CartVersion(current.0 + 1), "the next purchase gets a new key");
    }

    #[tokio::test]
    async fn the_version_is_bumped_only_from_the_expected_one() {
        let store = store().await;
        store.add(user(1), sku(7), count(2), 10).await.unwrap();
        let version = store.cart(user(1)).await.unwrap().version();

        assert!(store.bump_version(user(1), version).await.unwrap());
        assert!(!store.bump_version(user(1), version).await.unwrap());
        assert!(!store.bump_version(user(2), CartVersion(0)).await.unwrap(), "no cart, nothing to bump");
        let cart = store.cart(user(1)).await.unwrap();
        assert_eq!(cart.version(), CartVersion(version.0 + 1));
        assert_eq!(lines(&store, 1).await, vec![(7, 2)], "the lines stay");
    }

    /// A database file of its own in the temporary directory, removed (with its WAL files) on drop.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            Self(std::env::temp_dir().join(format!("checkout-{name}-{}-{nanos}.db", std::process::id())))
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    #[tokio::test]
    async fn racing_adds_never_go_beyond_the_limit() {
        let store = Arc::new(store().await);

        let attempts = (0..40).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.add(user(1), sku(7), count(1), 10).await.unwrap() })
        });
        let outcomes = futures::future::join_all(attempts).await;

        let added = outcomes.iter().filter(|outcome| matches!(outcome, Ok(AddOutcome::Added { .. }))).count();
        assert_eq!(added, 10);
        assert_eq!(lines(&store, 1).await, vec![(7, 10)]);
        assert_eq!(store.cart(user(1)).await.unwrap().version(), CartVersion(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_adds_through_two_stores_on_one_file_never_go_beyond_the_limit() {
        // Two stores are two writer connections, as two processes on one file would have: only the database's
        // write lock, taken by `begin immediate`, keeps them apart.
        let file = TempDb::new("race");
        let stores = [
            Arc::new(SqliteCartStore::connect(&file.url(), 2).await.unwrap()),
            Arc::new(SqliteCartStore::connect(&file.url(), 2).await.unwrap()),
        ];

        let attempts = (0..40).map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            tokio::spawn(async move { store.add(user(1), sku(7), count(1), 10).await.unwrap() })
        });
        let outcomes = futures::future::join_all(attempts).await;

        let added = outcomes.iter().filter(|outcome| matches!(outcome, Ok(AddOutcome::Added { .. }))).count();
        assert_eq!(added, 10);
        assert_eq!(lines(&stores[0], 1).await, vec![(7, 10)]);
        assert_eq!(stores[1].cart(user(1)).await.unwrap().version(), CartVersion(10));
        for store in &stores {
            store.pools().close().await;
        }
    }

    #[tokio::test]
    async fn a_cart_outlives_its_store_in_a_file() {
        let file = TempDb::new("reopen");
        let first = SqliteCartStore::connect(&file.url(), 1).await.unwrap();
        first.add(user(1), sku(7), count(2), 10).await.unwrap();
        first.pools().close().await;

        let reopened = SqliteCartStore::connect(&file.url(), 1).await.unwrap();

        assert_eq!(lines(&reopened, 1).await, vec![(7, 2)]);
        assert_eq!(reopened.cart(user(1)).await.unwrap().version(), CartVersion(1));
        reopened.pools().close().await;
    }
}
