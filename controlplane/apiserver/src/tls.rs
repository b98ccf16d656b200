//! HTTPS for the API server, and client-certificate authentication (`--client-ca-file`):
//! a client certificate signed by that authority authenticates its subject's CommonName as
//! the user and its Organizations as the groups, as kube-apiserver does. The certificate is
//! read once per connection, after the handshake, and every request on that connection
//! carries the user as a request extension for the authentication layer (`auth.rs`).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// Who a verified client certificate says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientUser {
    pub name: String,
    pub groups: Vec<String>,
}

/// The TLS configuration: the serving certificate, and with `client_ca`, client
/// certificates verified against it (a client without one may still use a token).
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<RustlsConfig> {
    let load_certs = |path: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read certificates from {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
        Ok(certs)
    };
    let chain = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read the key {}", key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let mut config = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).with_context(|| format!("--client-ca-file {}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("--client-ca-file {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier).with_single_cert(chain, key)
        }
        None => builder.with_no_client_auth().with_single_cert(chain, key),
    }
    .context("the serving certificate and key do not go together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// The user a client certificate names (`CN=user, O=group...`).
pub fn user_of(der: &[u8]) -> Option<ClientUser> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some(ClientUser { name, groups })
}

/// TLS, then the client certificate's user attached to every request of the connection.
#[derive(Clone)]
pub struct IdentifyingAcceptor {
    inner: RustlsAcceptor<DefaultAcceptor>,
}

impl IdentifyingAcceptor {
    pub fn new(config: RustlsConfig) -> IdentifyingAcceptor {
        IdentifyingAcceptor { inner: RustlsAcceptor::new(config) }
    }
}

impl<I, S> Accept<I, S> for IdentifyingAcceptor
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = tokio_rustls::server::TlsStream<I>;
    type Service = WithUser<S>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let handshake = self.inner.accept(stream, service);
        Box::pin(async move {
            let (tls, service) = handshake.await?;
            let user = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| user_of(c));
            Ok((tls, WithUser { inner: service, user }))
        })
    }
}

/// A connection's service that puts the connection's [`ClientUser`] on each request.
#[derive(Clone)]
pub struct WithUser<S> {
    inner: S,
    user: Option<ClientUser>,
}

impl<S, B> tower::Service<http::Request<B>> for WithUser<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(u) = &self.user {
            req.extensions_mut().insert(u.clone());
        }
        self.inner.call(req)
    }
}
