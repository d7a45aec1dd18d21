//! The two certificate verifiers: webpki checks the chain to the cluster CA, then these
//! check the node id derived from the certificate's key (incoming: any member;
//! outgoing: the member dialled). Every refusal is logged with the peer's id.

use std::collections::HashSet;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::certs::{node_id_of_cert, node_server_name};
use crate::hash::NodeId;

/// The handshake signature checks, which both verifiers leave to the webpki verifier
/// they wrap (`self.inner`): only the certificate checks differ. The client and server
/// verifier traits name these three methods alike, hence one macro for both impls.
macro_rules! signatures_by_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

fn id_or_reject(end_entity: &CertificateDer<'_>) -> Result<NodeId, rustls::Error> {
    node_id_of_cert(end_entity).map_err(|e| {
        tracing::warn!(error = %e, "peer certificate does not parse");
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
    })
}

/// Checks a client's chain with webpki, then that its id is a cluster member.
#[derive(Debug)]
pub(super) struct MemberClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    /// `None`: any node of the CA.
    pub(super) members: Option<HashSet<NodeId>>,
}

impl ClientCertVerifier for MemberClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = id_or_reject(end_entity)?;
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(peer = %id.short(), error = %e,
                "refused incoming connection: certificate does not chain to the cluster CA");
            return Err(e);
        }
        if self.members.as_ref().is_some_and(|m| !m.contains(&id)) {
            tracing::warn!(peer = %id.short(),
                "refused incoming connection: node is not a cluster member");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    signatures_by_inner!();
}

/// Checks a server's chain with webpki (for the fixed [`NODE_SAN`](super::NODE_SAN) name, whatever name
/// the connection used), then that its id is the member we meant to reach.
#[derive(Debug)]
pub(super) struct PinnedServerVerifier {
    pub(super) inner: Arc<WebPkiServerVerifier>,
    pub(super) expected: NodeId,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = id_or_reject(end_entity)?;
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &node_server_name(),
            ocsp_response,
            now,
        ) {
            tracing::warn!(peer = %self.expected.short(), presented = %id.short(), error = %e,
                "refused outgoing connection: certificate does not chain to the cluster CA");
            return Err(e);
        }
        if id != self.expected {
            tracing::warn!(peer = %self.expected.short(), presented = %id.short(),
                "refused outgoing connection: the server is another node than the member dialled");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    signatures_by_inner!();
}
