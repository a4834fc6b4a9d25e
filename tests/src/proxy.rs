//! A TCP proxy that a test can cut, hang and restore, to take a real dependency away without stopping it.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward everything.
    Open,
    /// Close every connection and refuse new ones: the dependency is down.
    Cut,
    /// Keep connections open but move no bytes: the dependency hangs.
    Hung,
}

/// Forwards every connection to a target, until told otherwise.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    /// Listens on a free port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Open);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Cut {
                    continue;
                }
                let mode = modes.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::select! {
                        () = pump(from_client, to_server, mode.clone()) => {}
                        () = pump(from_server, to_client, mode) => {}
                    }
                });
            }
        });
        Self { addr, mode }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections open but stops moving bytes, like a peer that stopped responding.
    pub fn hang(&self) {
        self.mode.send_replace(Mode::Hung);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

/// Copies one direction while the mode is open; stalls while hung; returns (closing both sides) once cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let current = match mode.wait_for(|m| *m != Mode::Hung).await {
            Ok(current) => *current,
            Err(_) => return,
        };
        if current == Mode::Cut {
            return;
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buffer[..n]).await.is_err() { return },
            },
            _ = mode.changed() => {}
        }
    }
}
