//! TLS on `https` client URLs (`--cert-file`, `--key-file`), and with `--client-cert-auth`,
//! client certificates: a client must present one signed by `--trusted-ca-file`, and with
//! auth enabled a request without a token acts as the user its certificate's CommonName
//! names, as in etcd. The same on `https` peer URLs (`--peer-cert-file`, `--peer-key-file`,
//! `--peer-trusted-ca-file`, `--peer-client-cert-auth`), where members are clients of each
//! other with the same certificate.
//!
//! Handshakes run on tasks of their own, so a slow or silent client delays no other; the
//! server takes connections once they are ready. The same HTTP/2 and HTTP/1.1 stack serves
//! them as on plain URLs (ALPN `h2`, `http/1.1`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;

use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::authority::AuthorityFix;

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection as the server reads it.
pub type TlsIo = AuthorityFix<tokio_rustls::server::TlsStream<TcpStream>>;

pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The TLS library's algorithms, with TLS 1.2 cipher suites limited to `cipher_suites`
/// (`--cipher-suites`, Go's names; empty: all). TLS 1.3's suites stay, as Go keeps them.
pub fn provider(cipher_suites: &str) -> Result<Arc<CryptoProvider>, String> {
    let mut p = rustls::crypto::ring::default_provider();
    let names: Vec<&str> = cipher_suites.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if !names.is_empty() {
        let mut chosen: Vec<SupportedCipherSuite> =
            p.cipher_suites.iter().filter(|s| s.tls13().is_some()).copied().collect();
        for name in names {
            chosen.push(tls12_suite(name)?);
        }
        p.cipher_suites = chosen;
    }
    Ok(Arc::new(p))
}

/// A TLS 1.2 cipher suite by Go's name (etcd takes either of Go's two names for the
/// ChaCha20 ones).
fn tls12_suite(name: &str) -> Result<SupportedCipherSuite, String> {
    use rustls::crypto::ring::cipher_suite as cs;
    Ok(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => {
            return Err(format!(
                "--cipher-suites: {name} is not offered by Keel's TLS library (rustls): only ECDHE with \
                 AES-GCM or ChaCha20-Poly1305"
            ))
        }
        other => return Err(format!("unexpected TLS cipher suite {other:?}")),
    })
}

/// How a listener checks the certificates clients present.
#[derive(Debug, Default, Clone)]
pub struct ClientCheck {
    /// The authority they must be signed by; none: no certificate asked for.
    pub ca: Option<PathBuf>,
    /// Revoked certificates (a PEM certificate revocation list).
    pub crl: Option<PathBuf>,
    /// The CommonName they must carry.
    pub allowed_cn: Option<String>,
    /// A host name (or address) they must be valid for (their subject alternative names).
    pub allowed_hostname: Option<String>,
}

/// A listener's TLS configuration; with `check.ca`, clients must present a certificate it
/// signed. The serving certificate is read again whenever its files change (see
/// [`ReloadingCert`]).
pub fn server_config(
    cert: &Path,
    key: &Path,
    check: &ClientCheck,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, String> {
    let serving = ReloadingCert::new(cert, key, provider.clone())?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &check.ca {
        Some(ca) => builder.with_client_cert_verifier(super::client_verify::verifier(check, ca, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(serving));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The serving certificate and key, read again from their files when either file's
/// modification time changes (looked at on each handshake, as etcd reads them for each
/// one), so certificates can be rotated without a restart. A pair that does not load (one
/// file rewritten, the other not yet) leaves the last good pair in service.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The files' modification times when last read, and the pair in service.
    current: parking_lot::Mutex<(Stamp, Arc<CertifiedKey>)>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl ReloadingCert {
    fn new(cert: &Path, key: &Path, provider: Arc<rustls::crypto::CryptoProvider>) -> Result<ReloadingCert, String> {
        let stamp = Self::stamp(cert, key);
        let pair = Self::load(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: parking_lot::Mutex::new((stamp, pair)),
        })
    }

    fn stamp(cert: &Path, key: &Path) -> Stamp {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (modified(cert), modified(key))
    }

    fn load(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
        let chain = certificates(cert)?;
        let der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
        let signing = provider.key_provider.load_private_key(der).map_err(|e| format!("{}: {e}", key.display()))?;
        let pair = CertifiedKey::new(chain, signing);
        pair.keys_match().map_err(|e| format!("{} and {} do not go together: {e}", cert.display(), key.display()))?;
        Ok(Arc::new(pair))
    }
}

impl ReloadingCert {
    /// The pair in service, read again first if its files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let stamp = Self::stamp(&self.cert, &self.key);
        let mut current = self.current.lock();
        if stamp != current.0 {
            current.0 = stamp;
            match Self::load(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    tracing::info!(cert = %self.cert.display(), "serving a new certificate");
                    current.1 = pair;
                }
                Err(e) => tracing::warn!(error = %e, "keeping the certificate in service"),
            }
        }
        current.1.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A member presents the same certificate to its peers, read again the same way.
impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `--auto-tls`, `--peer-auto-tls`: a self-signed certificate for `hosts`, kept in `dir`
/// (`cert.pem`, `key.pem`, as etcd keeps its under `<data-dir>/fixtures`) and reused while
/// it is there; (certificate, key).
pub fn self_signed(dir: &Path, hosts: &[String], years: u32) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let fail = |e: &dyn std::fmt::Display| format!("a self-signed certificate in {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| fail(&e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "keel");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365 * i64::from(years.max(1)));
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let pair = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
    let made = params.self_signed(&pair).map_err(|e| fail(&e))?;
    write_private(&key, pair.serialize_pem().as_bytes()).map_err(|e| fail(&e))?;
    std::fs::write(&cert, made.pem()).map_err(|e| fail(&e))?;
    Ok((cert, key))
}

/// Writes a file only its owner may read.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// A peer's certificate accepted unverified (`--peer-auto-tls`: every member's is
/// self-signed); its signatures over the handshake are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a member with `--peer-auto-tls` connects to its peers: presenting its own
/// self-signed certificate, and accepting theirs unverified, as etcd's members do.
pub fn peer_client_config_unverified(
    cert: &Path,
    key: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, String> {
    let presented = ReloadingCert::new(cert, key, provider.clone())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
        .with_client_cert_resolver(Arc::new(presented)))
}

/// How a member connects to `https` peer URLs: trusting `ca`, presenting `cert` and `key`
/// (read again when they change) to peers that ask for a client certificate.
pub fn peer_client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(ca)? {
        roots.add(c).map_err(|e| format!("--peer-trusted-ca-file {}: {e}", ca.display()))?;
    }
    let presented = ReloadingCert::new(cert, key, provider.clone())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(presented)))
}

/// Connections accepted and through their handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsIo, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// With `check_san`, a client whose certificate names addresses or hosts must connect
    /// from one of them (etcd's check on its peer port; see [`san_names_address`]).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>, check_san: bool) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    a = listener.accept() => a,
                };
                let (tcp, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            if check_san {
                                let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                                if let Err(e) = san_names_address(leaf.map(|c| c.as_ref()), addr.ip()).await {
                                    tracing::warn!(%addr, error = %e, "rejected connection");
                                    return;
                                }
                            }
                            let _ = tx.send((AuthorityFix::new(tls), addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// etcd's `checkSAN` on its peer port: a verified certificate that names IP addresses or
/// DNS names in its subject alternative names must name the address it connects from,
/// directly or by a name that resolves to it (etcd also looks the address up in reverse
/// DNS, which matches its wildcard names too; Keel resolves the names forward only). A
/// certificate naming neither passes.
pub async fn san_names_address(cert: Option<&[u8]>, from: std::net::IpAddr) -> Result<(), String> {
    use x509_parser::extensions::GeneralName;
    let Some(der) = cert else { return Ok(()) };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let from = from.to_canonical();
    let (mut ips, mut names) = (Vec::new(), Vec::new());
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::IPAddress(b) => ips.extend(ip_from(b)),
                GeneralName::DNSName(n) => names.push(n.to_string()),
                _ => {}
            }
        }
    }
    if ips.contains(&from) {
        return Ok(());
    }
    for name in names.iter().filter(|n| !n.starts_with("*.")) {
        let resolved = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0))).await;
        if let Ok(Ok(mut addrs)) = resolved {
            if addrs.any(|a| a.ip().to_canonical() == from) {
                return Ok(());
            }
        }
    }
    match (ips.is_empty(), names.is_empty()) {
        (true, true) => Ok(()),
        (false, true) => Err(format!("tls: certificate is valid for {ips:?}, not {from}")),
        _ => Err(format!("tls: {:?} does not match any of DNSNames {names:?}", from.to_string())),
    }
}

fn ip_from(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(|b| std::net::IpAddr::from(b).to_canonical()),
        _ => None,
    }
}

/// The CommonName of the verified certificate a client connected with (empty if it has
/// none), if it presented one; on every request of the connection (as
/// `ConnectInfo<ClientCert>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCert(pub Option<String>);

impl ClientCert {
    pub fn of(io: &TlsIo) -> ClientCert {
        let (_, conn) = io.get_ref().get_ref();
        ClientCert(conn.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c)))
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientCert {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> ClientCert {
        ClientCert::of(stream.io())
    }
}

/// A certificate's subject CommonName, empty if it has none.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default();
    Some(cn.to_string())
}
