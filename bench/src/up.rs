//! `make up` and `make down`: the production topology in the background, on the local PostgreSQL.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;

use crate::{
    config::UpArgs,
    topology::{self, Layout, Running},
};

/// Starts the topology, loads the stock file into an empty LOMS, and returns what to tell the user: where each
/// service listens and logs, and how to stop them. The services keep running after this process exits.
pub async fn up(args: &UpArgs) -> anyhow::Result<String> {
    let layout = args.topology.layout()?;
    let mut services = topology::start_all(&layout).await?;
    let seeded = match seed_if_empty(&layout, &args.stock_file).await {
        Ok(seeded) => seeded,
        Err(error) => {
            topology::stop_all(&mut services, &layout.run_dir).await;
            return Err(error);
        }
    };
    Ok(summary(&layout, &services, seeded.then_some(args.stock_file.as_path())))
}

/// Loads `stock_file` into LOMS's database when it holds no stock yet (a second `make up` keeps the levels that
/// orders have since changed). Returns whether it loaded.
async fn seed_if_empty(layout: &Layout, stock_file: &Path) -> anyhow::Result<bool> {
    let database_url = layout.database_url("loms");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url)
        .await
        .with_context(|| format!("connect to {database_url}"))?;
    let has_stock: bool = sqlx::query_scalar("select exists (select 1 from stocks)").fetch_one(&mut conn).await?;
    if has_stock {
        return Ok(false);
    }
    let status = tokio::process::Command::new(layout.bin_dir.join("loms"))
        .args(["stock", "import"])
        .arg(stock_file)
        .arg("--database-url")
        .arg(&database_url)
        .status()
        .await
        .context("run `loms stock import`")?;
    anyhow::ensure!(status.success(), "`loms stock import {}` failed ({status})", stock_file.display());
    Ok(true)
}

fn summary(layout: &Layout, services: &[Running], seeded: Option<&Path>) -> String {
    let mut text = String::from("\nminiZON is up (production topology, PostgreSQL):\n\n");
    let _ = writeln!(text, "  {:<16} {:>8}  {:<18} log", "service", "pid", "listens on");
    for service in services {
        let _ = writeln!(
            text,
            "  {:<16} {:>8}  {:<18} {}",
            service.spec.name,
            service.pid().as_raw_nonzero(),
            service.spec.listens.as_deref().unwrap_or("-"),
            service.spec.log_path(&layout.run_dir).display()
        );
    }
    let _ = writeln!(
        text,
        "\n  databases: {}, {}, {}",
        layout.database_url("loms"),
        layout.database_url("checkout"),
        layout.database_url("notifications")
    );
    match seeded {
        Some(file) => {
            let _ = writeln!(text, "  stock: loaded {} into the empty LOMS", file.display());
        }
        None => text.push_str("  stock: LOMS already had stock; left as it is\n"),
    }
    text.push_str("  LOMS admin token: the value of LOMS_ADMIN_TOKEN (dev-admin-token unless set)\n");
    let _ = writeln!(text, "\n  `make down` stops them (pid files in {}).", layout.run_dir.display());
    text
}
