//! Checking the certificates clients and peers present (`--client-cert-auth`,
//! `--peer-client-cert-auth`): signed by the trusted authority, not revoked
//! (`--client-crl-file`, `--peer-crl-file`), and with the allowed CommonName or host name
//! (`--peer-cert-allowed-cn`, `--*-cert-allowed-hostname`).
//!
//! A revocation list is read again when its file changes (looked at on each handshake, as
//! etcd reads it for each connection), so a certificate can be revoked without a restart.
//! A list that does not load (half written) leaves the last good one in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DistinguishedName, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use super::tls::{certificates, common_name, ClientCheck};

/// The verifier for `check`, trusting `ca`.
pub fn verifier(
    check: &ClientCheck,
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for c in certificates(ca)? {
        roots.add(c).map_err(|e| format!("trusted CA file {}: {e}", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let verifier: Arc<dyn ClientCertVerifier> = match &check.crl {
        Some(crl) => Arc::new(ReloadingCrl::new(roots, crl, provider)?),
        None => webpki(roots, None, provider)?,
    };
    if check.allowed_cn.is_none() && check.allowed_hostname.is_none() {
        return Ok(verifier);
    }
    let hostname = match &check.allowed_hostname {
        Some(h) => Some(
            rustls_pki_types::ServerName::try_from(h.clone()).map_err(|e| format!("allowed hostname {h:?}: {e}"))?,
        ),
        None => None,
    };
    Ok(Arc::new(Allowed { inner: verifier, cn: check.allowed_cn.clone(), hostname }))
}

/// rustls's verifier: signed by `roots`, and not revoked by the list in `crl`, if any.
fn webpki(
    roots: Arc<RootCertStore>,
    crl: Option<&Path>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider);
    if let Some(crl) = crl {
        let crls = CertificateRevocationListDer::pem_file_iter(crl)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the revocation list {}: {e}", crl.display()))?;
        // As etcd: the certificate presented is looked up, not its authorities.
        verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = verifier.build().map_err(|e| format!("the trusted CA file: {e}"))?;
    Ok(verifier)
}

/// [`webpki`] with a revocation list read again whenever its file's modification time
/// changes.
#[derive(Debug)]
struct ReloadingCrl {
    roots: Arc<RootCertStore>,
    crl: PathBuf,
    provider: Arc<CryptoProvider>,
    hints: Vec<DistinguishedName>,
    current: parking_lot::Mutex<(Option<SystemTime>, Arc<dyn ClientCertVerifier>)>,
}

impl ReloadingCrl {
    fn new(roots: Arc<RootCertStore>, crl: &Path, provider: Arc<CryptoProvider>) -> Result<ReloadingCrl, String> {
        let stamp = modified(crl);
        let inner = webpki(roots.clone(), Some(crl), provider.clone())?;
        let hints = inner.root_hint_subjects().to_vec();
        Ok(ReloadingCrl {
            roots,
            crl: crl.to_path_buf(),
            provider,
            hints,
            current: parking_lot::Mutex::new((stamp, inner)),
        })
    }

    /// The verifier in force, with the list read again first if its file changed.
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let stamp = modified(&self.crl);
        let mut current = self.current.lock();
        if stamp != current.0 {
            match webpki(self.roots.clone(), Some(&self.crl), self.provider.clone()) {
                Ok(v) => {
                    tracing::info!(crl = %self.crl.display(), "revocation list read again");
                    *current = (stamp, v);
                }
                Err(e) => tracing::warn!(error = %e, "keeping the last revocation list"),
            }
        }
        current.1.clone()
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Delegates everything but the choice of certificate to `$inner` (an expression giving the
/// verifier to ask).
macro_rules! delegate_signatures {
    ($self:ident => $inner:expr) => {
        fn verify_tls12_signature(
            &$self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &$self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            $inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&$self) -> Vec<rustls::SignatureScheme> {
            $inner.supported_verify_schemes()
        }
    };
}

impl ClientCertVerifier for ReloadingCrl {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current().verify_client_cert(end_entity, intermediates, now)
    }

    delegate_signatures!(self => self.current());
}

/// A client certificate verifier that also requires a CommonName (`--peer-cert-allowed-cn`)
/// or a host name the certificate is valid for (`--*-cert-allowed-hostname`, matched
/// against its subject alternative names as Go's `VerifyHostname` does); with both, either
/// will do (as etcd 3.5; 3.4 checks only the host name then).
#[derive(Debug)]
struct Allowed {
    inner: Arc<dyn ClientCertVerifier>,
    cn: Option<String>,
    hostname: Option<rustls_pki_types::ServerName<'static>>,
}

impl Allowed {
    fn admits(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let cn = common_name(cert);
        if self.cn.is_some() && cn == self.cn {
            return Ok(());
        }
        if let Some(host) = &self.hostname {
            let valid =
                webpki::EndEntityCert::try_from(cert).is_ok_and(|ee| ee.verify_is_valid_for_subject_name(host).is_ok());
            if valid {
                return Ok(());
            }
        }
        Err(match (&self.cn, &self.hostname) {
            (Some(allowed), None) => format!("CommonName {cn:?} is not the allowed {allowed:?}"),
            (_, Some(host)) => format!("client certificate authentication failed: not valid for {host:?}"),
            (None, None) => "no certificate check".into(),
        })
    }
}

impl ClientCertVerifier for Allowed {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.admits(end_entity).map_err(rustls::Error::General)?;
        Ok(verified)
    }

    delegate_signatures!(self => self.inner);
}
