//! The `loms` binary's command line, run as an operator would run it.

use std::{io::Write, process::Command};

use sqlx::{Connection, Executor, PgConnection};

fn base_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/minizon_test".into())
}

/// A database of its own for this test binary, dropped and created afresh.
async fn fresh_database() -> String {
    let base = base_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    let name = format!("loms_cli_{}", std::process::id());
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.expect("PostgreSQL is running");
    admin.execute(format!("drop database if exists {name} with (force)").as_str()).await.unwrap();
    format!("{server}/{name}")
}

#[tokio::test]
async fn stock_import_sets_levels_from_a_csv_file() {
    let url = fresh_database().await;
    let mut file = tempfile_with("warehouse_id,sku,count\n1,1001,10\n2,1001,4\n");
    file.flush().unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_loms"))
        .args(["stock", "import"])
        .arg(file.path())
        .args(["--database-url", &url])
        .output()
        .unwrap();

    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let total: i64 = sqlx::query_scalar("select sum(on_hand)::bigint from stocks where sku = 1001")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, 14);
}

#[tokio::test]
async fn a_malformed_stock_file_is_refused_with_its_line_and_changes_nothing() {
    let url = fresh_database().await;
    let file = tempfile_with("warehouse_id,sku,count\n1,1001,10\n1,0,4\n");

    let output = Command::new(env!("CARGO_BIN_EXE_loms"))
        .args(["stock", "import"])
        .arg(file.path())
        .args(["--database-url", &url])
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("levels[1]") && stderr.contains("sku must not be 0"), "stderr: {stderr}");
}

struct TempFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl TempFile {
    fn path(&self) -> &std::path::Path {
        &self.path
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile_with(content: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("loms-stock-{}-{}.csv", std::process::id(), uuid::Uuid::new_v4()));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(content.as_bytes()).unwrap();
    TempFile { path, file }
}
