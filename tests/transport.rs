//! The transport: TLS is verified (an untrusted certificate fails; an extra CA file makes it
//! trusted), answers are size-limited, and calls time out.

mod common;

use std::{sync::Arc, time::Duration};

use dvc_sync::{
    config::HttpConfig,
    transport::{self, TransportError},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn http_config(base: &str, ca_file: Option<std::path::PathBuf>) -> HttpConfig {
    HttpConfig {
        base_url: reqwest::Url::parse(base).unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        max_response_bytes: 16 * 1024,
        ca_file,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
    }
}

/// A one-route HTTP server answering `body` after `delay`.
async fn plain_server(body: Vec<u8>, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(axum::body::Body::from(
                            (*body).clone(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn an_answer_over_the_size_limit_is_refused() {
    let base = plain_server(vec![b'x'; 64 * 1024], Duration::ZERO).await;
    let client = transport::client(&http_config(&base, None)).unwrap();
    let result = transport::send(client.get(&base), 16 * 1024).await;
    assert_eq!(result.unwrap_err(), TransportError::TooLarge(16 * 1024));
    let small = plain_server(vec![b'y'; 1024], Duration::ZERO).await;
    let answer = transport::send(client.get(&small), 16 * 1024).await.unwrap();
    assert_eq!((answer.status, answer.body.len()), (200, 1024));
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let base = plain_server(b"late".to_vec(), Duration::from_secs(5)).await;
    let client = transport::client(&http_config(&base, None)).unwrap();
    let result = transport::send(client.get(&base), 1024).await;
    assert_eq!(result.unwrap_err(), TransportError::Timeout);
}

/// A TLS server for `localhost` with a certificate signed by a fresh CA; returns its URL and
/// the CA in PEM.
async fn tls_server() -> (String, String) {
    let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let made = common::tls::localhost();
    let certs = vec![tokio_rustls::rustls::pki_types::CertificateDer::from(made.cert_der.clone())];
    let private = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(made.key_der.clone()).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(axum::body::Body::from(
                        "{\"error_code\": 0}",
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}/"), made.ca_pem)
}

#[tokio::test]
async fn tls_is_verified_and_an_extra_ca_file_is_trusted() {
    let (url, ca_pem) = tls_server().await;
    let untrusted = transport::client(&http_config(&url, None)).unwrap();
    let refused = transport::send(untrusted.get(&url), 1024).await;
    assert!(
        matches!(&refused, Err(TransportError::Connect(e)) if e.to_lowercase().contains("certificate")),
        "an unknown CA must be refused: {refused:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let trusting = transport::client(&http_config(&url, Some(ca_file))).unwrap();
    let answer = transport::send(trusting.get(&url), 1024).await.unwrap();
    assert_eq!(answer.status, 200);
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let error = transport::client(&http_config("https://localhost/", Some(ca_file))).unwrap_err();
    assert!(format!("{error:#}").contains("ca.pem"), "{error:#}");
}
