//! Serving a mock's router on a listener, with one thing axum's own `serve` cannot do: a
//! handler may drop its connection without answering (the "lost acknowledgement" fault).

use std::{convert::Infallible, net::SocketAddr};

use axum::{Router, body::Body, extract::Request, response::Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Put into every request's extensions: cancelling it closes the connection at once, with
/// no answer sent.
#[derive(Clone)]
pub(crate) struct DropConnection(CancellationToken);

impl DropConnection {
    /// Closes the connection this request came on. The handler's future is dropped with it.
    pub async fn now(&self) -> Response {
        self.0.cancel();
        std::future::pending().await
    }
}

/// A running mock server. Dropping it does not stop it; call [`MockServer::stop`].
pub struct MockServer {
    addr: SocketAddr,
    token: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl MockServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token that stops the server; background tasks of the mock watch it too.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub(crate) fn add_task(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn stop(self) {
        self.token.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Waits until the server is stopped from elsewhere (its token cancelled).
    pub async fn wait(self) {
        self.token.cancelled().await;
        self.stop().await;
    }
}

/// Serves `router` on `listener` until the returned server is stopped.
pub fn spawn(listener: TcpListener, router: Router) -> std::io::Result<MockServer> {
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let accept_token = token.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = accept_token.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(event = "accept_failed", error = %e);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let server_token = accept_token.clone();
            tokio::spawn(serve_connection(stream, router, server_token));
        }
    });
    Ok(MockServer { addr, token, tasks: vec![task] })
}

async fn serve_connection(stream: tokio::net::TcpStream, router: Router, server: CancellationToken) {
    let kill = CancellationToken::new();
    let drop_handle = DropConnection(kill.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(drop_handle.clone());
        let mut router = router.clone();
        async move {
            let req = req.map(Body::new);
            Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|e| match e {}))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    // Dropping `conn` closes the socket without writing anything.
    tokio::select! {
        _ = conn => {}
        () = kill.cancelled() => {}
        () = server.cancelled() => {}
    }
}
