//! The certificates notifications (and the AWS client) trust: Mozilla's roots, plus an optional
//! CA file of the environment's own (an internal mail relay's or proxy's CA). The TLS itself is
//! rustls on ring, inside `lettre` (SMTP) and `ureq` (HTTPS).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

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

/// Mozilla's roots and the certificates in `ca_file`; a file that cannot be read or used is a
/// `Config` error (the cause its source).
pub(crate) fn roots(ca_file: Option<&Path>) -> Result<Roots> {
    let Some(path) = ca_file else {
        return Ok(Roots::default());
    };
    let pem_hint =
        "the file must hold the CA's certificates in PEM (`-----BEGIN CERTIFICATE-----` blocks)";
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| {
            Error::config(format!("cannot read the CA file `{}`: {e}", path.display()))
                .with_source(e)
        })?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "the CA file `{}` holds no PEM certificate",
            path.display()
        ))
        .with_hint(pem_hint));
    }
    for c in &certs {
        let mut store = tokio_rustls::rustls::RootCertStore::empty();
        store.add(c.clone()).map_err(|e| {
            Error::config(format!(
                "a certificate in `{}` is not usable: {e}",
                path.display()
            ))
            .with_source(e)
            .with_hint(pem_hint)
        })?;
    }
    Ok(Roots {
        extra: Arc::new(certs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_ca_file_that_cannot_be_used_is_a_config_error_keeping_its_cause() {
        let e = roots(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.message()
                .starts_with("cannot read the CA file `/nonexistent/ca.pem`: "),
            "{e}"
        );
        assert!(
            std::error::Error::source(&e).is_some(),
            "the PEM reader's error is the source"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = roots(Some(&f)).unwrap_err();
        assert_eq!(
            e.message(),
            format!("the CA file `{}` holds no PEM certificate", f.display())
        );
        assert!(
            e.hint().is_some_and(|h| h.contains("BEGIN CERTIFICATE")),
            "{e:?}"
        );
    }
}
