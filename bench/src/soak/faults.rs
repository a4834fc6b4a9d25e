//! The faults the soak injects while the load runs, on one timeline: SIGKILLs of LOMS replicas and of
//! Notifications (each restarted after a moment), a SIGSTOP of the broker, and an outage of the webhook receiver.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use rustix::process::Signal;
use tokio::{sync::Mutex, time::Instant};

use super::receiver::Receiver;
use crate::topology::{self, Running};

/// What to break, and over how long a window.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    /// The faults are spread over this window from the start of the load.
    pub window: Duration,
    /// SIGKILLs of LOMS replicas (a different replica each time, round-robin).
    pub loms_kills: u32,
    /// SIGKILLs of Notifications.
    pub notifications_kills: u32,
    /// How long a killed process stays down before it is restarted.
    pub down_for: Duration,
    /// How long the broker stays stopped (SIGSTOP … SIGCONT); zero for none.
    pub broker_pause: Duration,
    /// How long the webhook receiver answers 503; zero for none.
    pub receiver_outage: Duration,
}

/// One fault that happened.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    /// When, from the start of the load.
    pub at: Duration,
    /// What.
    pub what: String,
}

/// What was broken, in the order it happened.
#[derive(Debug, Default)]
pub struct FaultLog {
    /// Every fault and recovery.
    pub events: Vec<FaultEvent>,
    /// LOMS replicas killed (and restarted).
    pub loms_kills: u32,
    /// Notifications kills (and restarts).
    pub notifications_kills: u32,
    /// How long the broker was stopped.
    pub broker_paused: Duration,
    /// How long the receiver failed.
    pub receiver_outage: Duration,
}

/// Which process a kill hits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KillTarget {
    Loms(u32),
    Notifications,
}

/// When each kill happens: interleaved (LOMS first), evenly over 10 %–90 % of the window.
fn kill_times(plan: &FaultPlan) -> Vec<(Duration, KillTarget)> {
    let total = plan.loms_kills + plan.notifications_kills;
    let (mut loms, mut notifications) = (0, 0);
    (0..total)
        .map(|index| {
            let share = if total == 1 { 0.1 } else { 0.1 + 0.8 * f64::from(index) / f64::from(total - 1) };
            let target = if (index % 2 == 0 && loms < plan.loms_kills) || notifications >= plan.notifications_kills {
                loms += 1;
                KillTarget::Loms(loms - 1)
            } else {
                notifications += 1;
                KillTarget::Notifications
            };
            (plan.window.mul_f64(share), target)
        })
        .collect()
}

/// Runs the plan against `services` from `start`; returns what it did. Every pause is ended and every killed
/// process restarted before it returns, also when a restart fails (the error then says which).
pub async fn run(
    plan: FaultPlan,
    start: Instant,
    services: Arc<Mutex<Vec<Running>>>,
    run_dir: PathBuf,
    receiver: Arc<Receiver>,
    loms_replicas: u16,
) -> anyhow::Result<FaultLog> {
    let log = Arc::new(std::sync::Mutex::new(FaultLog::default()));
    let note = {
        let log = log.clone();
        move |what: String| {
            tracing::info!(fault = %what, "fault");
            let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            log.events.push(FaultEvent { at: start.elapsed(), what });
        }
    };

    let outage = {
        let note = note.clone();
        let log = log.clone();
        async move {
            if plan.receiver_outage.is_zero() {
                return;
            }
            tokio::time::sleep_until(start + plan.window.mul_f64(0.45)).await;
            receiver.set_failing(true);
            note(format!("webhook receiver answers 503 for {}", humantime::format_duration(plan.receiver_outage)));
            tokio::time::sleep(plan.receiver_outage).await;
            receiver.set_failing(false);
            note("webhook receiver answers again".into());
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).receiver_outage = plan.receiver_outage;
        }
    };

    let pause = {
        let note = note.clone();
        let log = log.clone();
        let services = services.clone();
        async move {
            if plan.broker_pause.is_zero() {
                return Ok(());
            }
            tokio::time::sleep_until(start + plan.window.mul_f64(0.2)).await;
            let broker = {
                let services = services.lock().await;
                let broker = services.iter().find(|s| s.spec.name == "broker").context("no broker")?;
                broker.signal(Signal::STOP)?;
                broker.pid()
            };
            note(format!("broker SIGSTOP for {}", humantime::format_duration(plan.broker_pause)));
            tokio::time::sleep(plan.broker_pause).await;
            rustix::process::kill_process_group(broker, Signal::CONT).context("SIGCONT to the broker")?;
            note("broker SIGCONT".into());
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).broker_paused = plan.broker_pause;
            anyhow::Ok(())
        }
    };

    let kills = {
        let note = note.clone();
        let log = log.clone();
        async move {
            for (at, target) in kill_times(&plan) {
                tokio::time::sleep_until(start + at).await;
                let name = match target {
                    KillTarget::Loms(kill) => format!("loms-{}", kill % u32::from(loms_replicas) + 1),
                    KillTarget::Notifications => "notifications".to_owned(),
                };
                let mut services = services.lock().await;
                let service = services.iter_mut().find(|s| s.spec.name == name).context("no such service")?;
                service.kill().await?;
                note(format!("{name} SIGKILL"));
                tokio::time::sleep(plan.down_for).await;
                *service = topology::start(&service.spec, &run_dir).await?;
                note(format!("{name} restarted"));
                let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match target {
                    KillTarget::Loms(_) => log.loms_kills += 1,
                    KillTarget::Notifications => log.notifications_kills += 1,
                }
            }
            anyhow::Ok(())
        }
    };

    let ((), paused, killed) = tokio::join!(outage, pause, kills);
    paused.context("broker pause")?;
    killed.context("kill and restart")?;
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(loms_kills: u32, notifications_kills: u32) -> FaultPlan {
        FaultPlan {
            window: Duration::from_secs(100),
            loms_kills,
            notifications_kills,
            down_for: Duration::from_secs(1),
            broker_pause: Duration::ZERO,
            receiver_outage: Duration::ZERO,
        }
    }

    #[test]
    fn kills_alternate_and_spread_over_the_window() {
        let times = kill_times(&plan(3, 3));
        let targets: Vec<_> = times.iter().map(|(_, t)| t.clone()).collect();
        use KillTarget::*;
        assert_eq!(targets, [Loms(0), Notifications, Loms(1), Notifications, Loms(2), Notifications]);
        assert_eq!(times[0].0, Duration::from_secs(10));
        assert_eq!(times[5].0, Duration::from_secs(90));
    }

    #[test]
    fn uneven_counts_are_all_scheduled() {
        let times = kill_times(&plan(1, 3));
        assert_eq!(times.iter().filter(|(_, t)| *t == KillTarget::Notifications).count(), 3);
        assert_eq!(times.iter().filter(|(_, t)| matches!(t, KillTarget::Loms(_))).count(), 1);
        assert_eq!(kill_times(&plan(1, 0)), [(Duration::from_secs(10), KillTarget::Loms(0))]);
        assert!(kill_times(&plan(0, 0)).is_empty());
    }
}
