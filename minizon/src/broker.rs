//! The embedded Kafka-protocol broker: librdkafka's mock cluster, a real broker on a real TCP port.
//!
//! The mock cluster is not `Send`, so it lives on a thread of its own for as long as the broker runs. It binds an
//! ephemeral port; a loopback forwarder on the configured address (9092 by default) is the bootstrap address that
//! clients and `kcat` are given, and the metadata it returns points them at the broker's own port on the same
//! host. Its data is in memory: `minizon dev` drains it before it stops (see `dev.rs`).

use std::{net::SocketAddr, sync::mpsc, thread};

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: SocketAddr,
    stop: mpsc::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
    forwarder: CancellationToken,
}

impl EmbeddedBroker {
    /// Starts one mock broker with `topics` (3 partitions each) and a bootstrap forwarder on `listen`.
    pub async fn start(listen: SocketAddr, topics: &[&str]) -> anyhow::Result<Self> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<String>>();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(cluster) => cluster,
                    Err(error) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(error).context("start the mock cluster")));
                        return;
                    }
                };
                for topic in &topics {
                    if let Err(error) = cluster.create_topic(topic, 3, 1) {
                        let _ = ready_tx.send(Err(anyhow::Error::new(error).context(format!("create topic {topic}"))));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Keep the cluster alive until told to stop (or the owner is gone).
                let _ = stopped.recv();
            })
            .context("spawn the broker thread")?;
        let broker = ready_rx.await.context("the broker thread died")??;
        let target: SocketAddr = broker
            .split(',')
            .next()
            .and_then(|addr| addr.parse().ok())
            .with_context(|| format!("unexpected mock cluster address {broker:?}"))?;
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("bind the Kafka bootstrap address {listen}"))?;
        let bootstrap = listener.local_addr()?;
        let forwarder = CancellationToken::new();
        tokio::spawn(forward(listener, target, forwarder.clone()));
        tracing::info!(%bootstrap, broker = %target, "embedded Kafka-protocol broker running");
        Ok(Self { bootstrap, stop, thread: Some(thread), forwarder })
    }

    /// The address to give Kafka clients (`bootstrap.servers`).
    pub fn bootstrap(&self) -> SocketAddr {
        self.bootstrap
    }

    /// Stops the forwarder and the broker.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.forwarder.cancel();
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.shut();
    }
}

async fn forward(listener: TcpListener, target: SocketAddr, stop: CancellationToken) {
    loop {
        let (mut inbound, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "Kafka bootstrap forwarder cannot accept");
                    continue;
                }
            },
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}
