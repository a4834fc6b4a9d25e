//! The `notifications` binary: settings from flags and environment, logs, signals; the rest is the library.
//! Without a subcommand it runs the worker; `notifications dead-letter replay` replays the dead-letter topic.

use std::io::Write as _;

use clap::Parser;
use notifications::{
    Application, Config,
    config::{Command, DeadLetterCommand},
    replay,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = minizon_common::telemetry::init("notifications", &config.log);
    let result = run(config).await;
    telemetry.shutdown();
    result
}

/// Runs the worker, or the command the arguments name.
async fn run(config: Config) -> anyhow::Result<()> {
    match &config.command {
        None => {
            let shutdown = minizon_common::shutdown::on_signal();
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown).await
        }
        Some(Command::DeadLetter(DeadLetterCommand::Replay(args))) => {
            let summary = replay::replay(&config, args).await?;
            // What the command did is its user-facing output: stdout, one line per dead letter.
            let mut stdout = std::io::stdout().lock();
            for letter in &summary.letters {
                writeln!(stdout, "{letter}")?;
            }
            let verb = if args.dry_run { "would replay" } else { "replayed" };
            writeln!(stdout, "{verb} {} dead letter(s) to {}", summary.replayed, config.topic)?;
            Ok(())
        }
    }
}
