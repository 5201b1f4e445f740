//! The HTTP client under the model and backend calls: hyper's pooled
//! HTTP/1.1 client (hyper-util) over rustls with the platform's certificate
//! verifier. This is the stack reqwest is built on; calling it directly
//! skips what reqwest adds per request (its tower layers, URL parsing, a
//! boxed body and a response wrapper): in `chat_parts`, a third of a bare
//! reqwest request's CPU. The backend client gains all of it; the model's
//! requests are still built, and its answers wrapped, as reqwest's types
//! for async-openai.
//!
//! A destination the environment sends through an HTTP(S) proxy
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`) is sent with
//! reqwest instead, which reads the same variables and speaks to proxies
//! (CONNECT tunnels, absolute-form requests, proxy credentials). Each client
//! has one destination, so the choice is made once, when it is built.
//!
//! Every answer is read whole, within a byte bound and within the call's
//! timeout, before it is handed on.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;

/// hyper's pooled client, as the host sets it up.
pub type HttpClient = Client<ConnectWithin<HttpsConnector<HttpConnector>>, reqwest::Body>;

/// A client for one destination.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// Straight to the destination, through hyper.
    Direct(HttpClient),
    /// Through the proxy the environment names for the destination, by
    /// reqwest (its retry policy off; timeouts are [`send`]'s).
    Proxied(reqwest::Client),
}

impl Outbound {
    /// A client for requests to `destination` (a URL; its scheme and host
    /// decide), proxied when the environment says so.
    pub fn new(
        destination: &str,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let proxies = hyper_util::client::proxy::matcher::Matcher::from_env();
        Self::choose(&proxies, destination, connect_timeout, idle_timeout)
    }

    fn choose(
        proxies: &hyper_util::client::proxy::matcher::Matcher,
        destination: &str,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri = http::Uri::try_from(destination)
            .map_err(|e| anyhow::anyhow!("an outbound URL is not valid for HTTP ({e})"))?;
        if let Some(proxy) = proxies.intercept(&uri) {
            // reqwest is built without SOCKS: refuse at start rather than
            // speak HTTP to a SOCKS port on every call.
            if !matches!(proxy.uri().scheme_str(), Some("http" | "https")) {
                anyhow::bail!(
                    "the proxy set for {} is not an http:// or https:// proxy \
                     (SOCKS proxies are not supported)",
                    uri.host().unwrap_or("a destination")
                );
            }
            let client = reqwest::Client::builder()
                .retry(reqwest::retry::never().max_retries_per_request(0))
                // As the direct client: a 3xx answer is the answer.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(connect_timeout)
                .pool_idle_timeout(idle_timeout)
                .build()?;
            Ok(Outbound::Proxied(client))
        } else {
            Ok(Outbound::Direct(client(connect_timeout, idle_timeout)?))
        }
    }
}

/// Why an outbound call has no answer. The causes of `Connect` and
/// `Failed` (system, DNS and TLS messages, which can name internal hosts)
/// are for the logs: their `Display` leaves them out.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SendError {
    #[error("no answer in time")]
    Timeout,
    /// No connection was made, so nothing was sent: safe to try again.
    #[error("could not connect in time")]
    ConnectTimeout,
    /// As `ConnectTimeout`: nothing was sent.
    #[error("could not connect")]
    Connect(String),
    #[error("the exchange failed")]
    Failed(String),
    #[error("the answer was larger than {0} bytes")]
    TooLarge(usize),
}

impl SendError {
    /// What went wrong underneath, for a log line.
    pub fn cause(&self) -> &str {
        match self {
            SendError::Connect(cause) | SendError::Failed(cause) => cause,
            _ => "",
        }
    }

    /// Nothing was sent: trying again cannot repeat an action.
    pub fn before_sending(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::ConnectTimeout)
    }
}

/// rustls with the aws-lc-rs provider and the platform's verifier (on Linux:
/// the system's CA bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set),
/// plus `extra_roots`.
pub fn tls_config(
    extra_roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The platform TLS configuration, loaded once per process: reading the
/// system's certificates takes milliseconds.
fn shared_tls() -> anyhow::Result<ClientConfig> {
    static TLS: OnceLock<Result<ClientConfig, String>> = OnceLock::new();
    TLS.get_or_init(|| tls_config([]).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("TLS set-up failed: {e}"))
}

/// A client with the platform's TLS configuration.
pub fn client(connect_timeout: Duration, idle_timeout: Duration) -> anyhow::Result<HttpClient> {
    Ok(client_with_tls(
        shared_tls()?,
        connect_timeout,
        idle_timeout,
    ))
}

/// A client with the given TLS configuration; `http://` URLs are sent in
/// the clear. TCP settings as reqwest's defaults: no Nagle delay, keepalive
/// probes after 15 s idle, and a connection whose data goes unacknowledged
/// for 30 s is dropped (on Linux), so a pooled connection a middlebox
/// forgot fails fast. `connect_timeout` bounds the whole connect (DNS, TCP
/// and TLS) and, split among them, the TCP connects to each address.
pub fn client_with_tls(
    mut tls: ClientConfig,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(Duration::from_secs(15)));
    tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
    tcp.set_keepalive_retries(Some(3));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    // Per address, so one that drops packets leaves time for the next;
    // `ConnectWithin` bounds the whole connect.
    tcp.set_connect_timeout(Some(connect_timeout));
    // Offered in the handshake, as reqwest does: some gateways refuse a
    // client that names no protocol.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = ConnectWithin {
        inner: HttpsConnector::from((tcp, Arc::new(tls))),
        limit: connect_timeout,
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// A connector whose connects end after `limit`. hyper's own connect
/// timeout covers the TCP connect alone.
#[derive(Clone, Debug)]
pub struct ConnectWithin<C> {
    inner: C,
    limit: Duration,
}

/// The marker error of a connect that ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out")]
struct ConnectTimedOut;

impl<C> tower::Service<http::Uri> for ConnectWithin<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: http::Uri) -> Self::Future {
        let connect = self.inner.call(destination);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connect).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `request` and reads the whole answer, at most `limit` bytes, all
/// within `timeout`.
pub async fn send(
    client: &Outbound,
    request: http::Request<reqwest::Body>,
    timeout: Duration,
    limit: usize,
) -> Result<http::Response<Bytes>, SendError> {
    let exchange = async {
        match client {
            Outbound::Direct(client) => direct(client, request, limit).await,
            Outbound::Proxied(client) => proxied(client, request, limit).await,
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(SendError::Timeout))
}

async fn direct(
    client: &HttpClient,
    request: http::Request<reqwest::Body>,
    limit: usize,
) -> Result<http::Response<Bytes>, SendError> {
    let response = client.request(request).await.map_err(|e| {
        if !e.is_connect() {
            SendError::Failed(chain(&e))
        } else if caused_by::<ConnectTimedOut>(&e) {
            SendError::ConnectTimeout
        } else {
            SendError::Connect(chain(&e))
        }
    })?;
    if declared_length(response.headers()).is_some_and(|n| n > limit as u64) {
        return Err(SendError::TooLarge(limit));
    }
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                SendError::TooLarge(limit)
            } else {
                SendError::Failed(chain(e.as_ref()))
            }
        })?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body))
}

async fn proxied(
    client: &reqwest::Client,
    request: http::Request<reqwest::Body>,
    limit: usize,
) -> Result<http::Response<Bytes>, SendError> {
    let failed = |e: reqwest::Error| {
        let e = e.without_url();
        match (e.is_connect(), e.is_timeout()) {
            (true, true) => SendError::ConnectTimeout,
            (true, false) => SendError::Connect(chain(&e)),
            // The read timeout of `send` is the only one; this is reqwest's.
            (false, true) => SendError::Timeout,
            (false, false) => SendError::Failed(chain(&e)),
        }
    };
    let request = reqwest::Request::try_from(request).map_err(failed)?;
    let mut response = client.execute(request).await.map_err(failed)?;
    if declared_length(response.headers()).is_some_and(|n| n > limit as u64) {
        return Err(SendError::TooLarge(limit));
    }
    let mut answer = http::Response::new(Bytes::new());
    *answer.status_mut() = response.status();
    *answer.version_mut() = response.version();
    *answer.headers_mut() = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > limit {
            return Err(SendError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    *answer.body_mut() = Bytes::from(body);
    Ok(answer)
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// Whether `E` is among the causes of `e`.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error and its causes, `a: b: c` (hyper's own message names only the
/// kind, "client error (Connect)"; the cause says what happened).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads from `s` until the end of an HTTP head; the bytes read (the head,
/// and any that came with it), or `None` when the peer stops first. For the
/// small servers of the tests.
#[cfg(test)]
pub(crate) async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    const CA: &[u8] = include_bytes!("../tests/fixtures/tls/ca.pem");
    const CERT: &[u8] = include_bytes!("../tests/fixtures/tls/localhost.pem");
    const KEY: &[u8] = include_bytes!("../tests/fixtures/tls/localhost.key");

    /// A server that answers every connection once with `answer` after
    /// reading the request head; over TLS when given a configuration.
    async fn serve(tls: Option<rustls::ServerConfig>, answer: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                answer_once(s, answer).await;
                            }
                        }
                        None => answer_once(tcp, answer).await,
                    }
                });
            }
        });
        port
    }

    async fn answer_once<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        answer: &[u8],
    ) {
        if read_head(&mut s).await.is_none() {
            return;
        }
        let _ = s.write_all(answer).await;
        let _ = s.shutdown().await;
    }

    fn server_tls() -> rustls::ServerConfig {
        let certs = CertificateDer::pem_slice_iter(CERT)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
    }

    fn get(url: String) -> http::Request<reqwest::Body> {
        http::Request::get(url)
            .body(reqwest::Body::from(""))
            .unwrap()
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn https_is_verified_against_the_roots() {
        let port = serve(Some(server_tls()), OK).await;
        let url = format!("https://localhost:{port}/x");
        let ca = CertificateDer::from_pem_slice(CA).unwrap();
        let trusting = Outbound::Direct(client_with_tls(tls_config([ca]).unwrap(), SECOND, SECOND));
        let answer = send(&trusting, get(url.clone()), SECOND, 100)
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.body().as_ref(), b"hello");
        // Without the test CA the certificate is refused: no answer.
        let plain = Outbound::Direct(client_with_tls(tls_config([]).unwrap(), SECOND, SECOND));
        let refused = send(&plain, get(url), SECOND, 100).await.unwrap_err();
        assert!(
            matches!(&refused, SendError::Connect(m) if m.contains("certificate")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn answers_are_bounded_in_bytes_and_time() {
        let plain = Outbound::Direct(client(SECOND, SECOND).unwrap());
        let port = serve(None, OK).await;
        let url = format!("http://127.0.0.1:{port}/x");
        assert_eq!(
            send(&plain, get(url.clone()), SECOND, 5)
                .await
                .unwrap()
                .body()
                .as_ref(),
            b"hello"
        );
        // Declared too large, and too large without a declared length.
        assert_eq!(
            send(&plain, get(url), SECOND, 4).await.unwrap_err(),
            SendError::TooLarge(4)
        );
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let port = serve(None, chunked).await;
        let url = format!("http://127.0.0.1:{port}/x");
        assert_eq!(
            send(&plain, get(url), SECOND, 4).await.unwrap_err(),
            SendError::TooLarge(4)
        );
        // A server that never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", silent.local_addr().unwrap());
        let started = std::time::Instant::now();
        let late = send(&plain, get(url), Duration::from_millis(200), 100).await;
        assert_eq!(late.unwrap_err(), SendError::Timeout);
        assert!(started.elapsed() < SECOND);
        drop(silent);
        // Nothing listening (a bound socket that does not listen): a
        // connect failure, which keeps its cause for the log but does not
        // show it.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}/x", closed.local_addr().unwrap());
        let refused = send(&plain, get(url), SECOND, 100).await.unwrap_err();
        assert!(
            matches!(&refused, SendError::Connect(m) if m.contains("refused")),
            "{refused:?}"
        );
        assert_eq!(refused.to_string(), "could not connect");
        assert!(refused.before_sending());
    }

    /// The connect timeout covers the TLS handshake: a server that accepts
    /// the connection but never answers the handshake.
    #[tokio::test]
    async fn a_stalled_handshake_is_a_connect_timeout() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/x",
            silent.local_addr().unwrap().port()
        );
        let client = Outbound::Direct(client_with_tls(
            tls_config([]).unwrap(),
            Duration::from_millis(200),
            SECOND,
        ));
        let started = std::time::Instant::now();
        let stalled = send(&client, get(url), Duration::from_secs(5), 100).await;
        assert_eq!(stalled.unwrap_err(), SendError::ConnectTimeout);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(silent);
    }

    #[test]
    fn the_environment_decides_which_destinations_are_proxied() {
        use hyper_util::client::proxy::matcher::Matcher;
        let proxies = Matcher::builder()
            .http("http://proxy.test:3128")
            .https("http://proxy.test:3128")
            .no("atlas.internal")
            .build();
        let proxied = |dest| {
            matches!(
                Outbound::choose(&proxies, dest, SECOND, SECOND).unwrap(),
                Outbound::Proxied(_)
            )
        };
        assert!(proxied("https://api.openai.com/v1"));
        assert!(proxied("http://api:8080"));
        assert!(!proxied("http://atlas.internal:8080/api"));
        let socks = Matcher::builder().all("socks5://proxy.test:1080").build();
        let refused = Outbound::choose(&socks, "https://api.openai.com/v1", SECOND, SECOND);
        assert!(
            refused.is_err_and(|e| e.to_string().contains("SOCKS")),
            "a SOCKS proxy is refused at start"
        );
        let none = Matcher::builder().build();
        assert!(matches!(
            Outbound::choose(&none, "https://api.openai.com/v1", SECOND, SECOND).unwrap(),
            Outbound::Direct(_)
        ));
    }

    /// A proxied client sends through the proxy (an HTTP proxy gets the
    /// request in absolute form), with the same bounds as a direct one.
    #[tokio::test]
    async fn proxied_requests_go_through_the_proxy() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut s).await else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&head)
                        .lines()
                        .next()
                        .unwrap()
                        .to_owned();
                    log.lock().unwrap().push(line);
                    let _ = s.write_all(OK).await;
                });
            }
        });
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
            .build()
            .unwrap();
        let via = Outbound::Proxied(client);
        let answer = send(&via, get("http://atlas.test/api/x".into()), SECOND, 5)
            .await
            .unwrap();
        assert_eq!(answer.body().as_ref(), b"hello");
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["GET http://atlas.test/api/x HTTP/1.1"]
        );
        assert_eq!(
            send(&via, get("http://atlas.test/api/x".into()), SECOND, 4)
                .await
                .unwrap_err(),
            SendError::TooLarge(4)
        );
    }
}
