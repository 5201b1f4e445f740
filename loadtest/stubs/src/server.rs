//! Serving a router on a socket that tests can stop and bring back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stop waits for in-flight requests before giving up on them.
const STOP_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Server {
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Server {
    pub(crate) async fn start(addr: SocketAddr, router: axum::Router) -> anyhow::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Lets a restart rebind the same port while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "stub server stopped with an error");
            }
        });
        Ok(Self {
            addr,
            running: Some((tx, task)),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops accepting, closes idle connections, waits briefly for requests
    /// in flight. The port is free when this returns.
    pub(crate) async fn stop(&mut self) {
        if let Some((tx, mut task)) = self.running.take() {
            let _ = tx.send(());
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }

    pub(crate) async fn restart(&mut self, router: axum::Router) -> anyhow::Result<()> {
        self.stop().await;
        let mut fresh = Server::start(self.addr, router).await?;
        self.running = fresh.running.take();
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}
