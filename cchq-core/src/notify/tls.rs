//! The certificates notifications (and the AWS client) trust: Mozilla's roots, plus an optional
//! CA file of the environment's own (an internal mail relay's or proxy's CA). The TLS itself is
//! rustls on ring, inside `lettre` (SMTP) and `ureq` (HTTPS).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Mozilla's roots and `extra`.
#[derive(Clone, Default)]
pub(crate) struct Roots {
    /// The CA file's certificates (DER), trusted besides Mozilla's roots.
    pub extra: Arc<Vec<CertificateDer<'static>>>,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Roots(webpki + {} extra)", self.extra.len())
    }
}

/// Mozilla's roots and the certificates in `ca_file`.
pub(crate) fn roots(ca_file: Option<&Path>) -> Result<Roots, String> {
    let Some(path) = ca_file else { return Ok(Roots::default()) };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| format!("cannot read the CA file `{}`: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the CA file `{}` holds no PEM certificate", path.display()));
    }
    for c in &certs {
        webpki_anchor(c).map_err(|e| format!("a certificate in `{}` is not usable: {e}", path.display()))?;
    }
    Ok(Roots { extra: Arc::new(certs) })
}

/// Checks that `cert` parses as a trust anchor (what rustls will make of it).
fn webpki_anchor(cert: &CertificateDer<'_>) -> Result<(), String> {
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    store.add(cert.clone()).map_err(|e| e.to_string())
}
