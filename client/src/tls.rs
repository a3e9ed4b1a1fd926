//! TLS for the client: which certificates are trusted, and the handshake
//! with errors that say what went wrong.

use crate::error::ClientError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io;
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

/// A TLS connection over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A client configuration that trusts the certificates in `ca` (a PEM file
/// holding a private CA, or a self-signed server certificate), or the
/// system's roots when `ca` is `None`.
pub fn config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad_ca = |reason: String| ClientError::Ca {
                path: path.to_owned(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad_ca(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad_ca("no CERTIFICATE block found".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad_ca(e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(ClientError::Ca {
                    path: "the system certificate store".into(),
                    reason: "no trusted certificate found; give one with --ca".into(),
                });
            }
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls {
                addr: String::new(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The host part of a server address (`HOST:PORT`, `HOST`, `IP`,
/// `[IPV6]:PORT`), as the name the certificate must be valid for.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>, ClientError> {
    let host = if let Some(rest) = addr.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if addr.parse::<IpAddr>().is_ok() {
        addr
    } else {
        match addr.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => addr,
        }
    };
    ServerName::try_from(host.to_owned()).map_err(|e| ClientError::Tls {
        addr: addr.to_owned(),
        reason: format!("'{host}' is not a valid server name: {e}"),
    })
}

/// Runs the TLS handshake to completion, so that its failures are reported
/// as such rather than as a protocol error later.
pub(crate) fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mut tcp: TcpStream,
    addr: &str,
) -> Result<TlsStream, ClientError> {
    let host = name.to_str().into_owned();
    let mut conn = ClientConnection::new(config, name).map_err(|e| ClientError::Tls {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(ClientError::Tls {
                addr: addr.to_owned(),
                reason: explain(&e, &host),
            });
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// Says what a failed handshake means for the user.
fn explain(error: &io::Error, host: &str) -> String {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!("the server's certificate is not valid for the name '{host}'"),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => {
            "the server's certificate is not signed by a trusted authority \
             (for a private CA or a self-signed certificate, pass it with --ca)"
                .to_owned()
        }
        Some(rustls::Error::InvalidCertificate(other)) => {
            format!("the server's certificate was rejected: {other:?}")
        }
        Some(rustls::Error::InvalidMessage(_)) => {
            "the server did not answer with TLS (does it run without --tls-cert? then connect without --tls)"
                .to_owned()
        }
        Some(other) => other.to_string(),
        None if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            "the server did not complete the TLS handshake in time".to_owned()
        }
        None if error.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake".to_owned()
        }
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        let name = |addr: &str| server_name(addr).unwrap().to_str().into_owned();
        assert_eq!(name("files.example:7878"), "files.example");
        assert_eq!(name("files.example"), "files.example");
        assert_eq!(name("127.0.0.1:7878"), "127.0.0.1");
        assert_eq!(name("127.0.0.1"), "127.0.0.1");
        assert_eq!(name("[::1]:7878"), "::1");
        assert_eq!(name("::1"), "::1");
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = config(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}
