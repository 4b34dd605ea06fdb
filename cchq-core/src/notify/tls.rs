//! TLS for notifications: rustls on ring, Mozilla's roots (webpki-roots) plus an optional CA file
//! of the environment's own (an internal mail relay's CA).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// A client configuration trusting Mozilla's roots and the certificates in `ca_file`.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect)
            .map_err(|e| format!("cannot read the CA file `{}`: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("the CA file `{}` holds no PEM certificate", path.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("a certificate in `{}` is not usable: {e}", path.display()))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a server's certificate must hold: a DNS name or an IP address.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .map_err(|_| format!("`{host}` is not a valid TLS server name"))
}
