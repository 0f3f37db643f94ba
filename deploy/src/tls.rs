//! TLS for the API (HTTPS) and for cluster links (mutual TLS 1.3).
//!
//! Certificates, keys and CAs are PEM files. A node re-reads them when one of them changes
//! (checked every [`RELOAD_CHECK`]) or on SIGHUP, and swaps them in without dropping the node:
//! connections already open keep their session, new handshakes use the new files. A set of files
//! that does not load (a certificate written before its key, say) is logged and the previous
//! one stays in use until the files load again.
//!
//! - [`ApiTls`]: the API's server certificate; [`TlsListener`] serves axum over it.
//! - [`ClusterTls`]: the node's certificate, used both to accept links (a server certificate)
//!   and to dial them (a client certificate), and the cluster's CA, against which every peer's
//!   certificate is verified in both directions. A peer whose certificate the CA did not sign is
//!   refused, whatever cookie it has; the refusal is logged once per certificate and reason.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A handshake that has not finished after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider of every TLS configuration here (aws-lc-rs, as ractor_cluster's).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Reads a certificate chain and its key; names the file and what is wrong with it.
fn load_key(files: &CertFiles) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate {}: no PEM certificate in it",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("private key {}: {e}", files.key.display()))?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
        format!(
            "certificate {} and key {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

/// Reads the CA certificates a peer's certificate must chain to.
fn load_roots(ca: &Path) -> Result<Arc<RootCertStore>, String> {
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("CA {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "CA {}: no usable CA certificate in it",
            ca.display()
        ));
    }
    Ok(Arc::new(roots))
}

/// A short name for a certificate in logs: the xxh3 of its DER.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(cert))
}

/// A certificate and key that handshakes read and a reload swaps.
#[derive(Debug)]
struct Reloadable {
    files: CertFiles,
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
}

impl Reloadable {
    fn load(files: CertFiles) -> Result<Arc<Reloadable>, String> {
        let key = load_key(&files)?;
        Ok(Arc::new(Reloadable {
            files,
            current: parking_lot::RwLock::new(Arc::new(key)),
        }))
    }

    fn reload(&self) -> Result<(), String> {
        let key = load_key(&self.files)?;
        *self.current.write() = Arc::new(key);
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for Reloadable {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Logs each refusal once per (certificate, reason): a refused peer redials, and its
/// refusals would otherwise fill the log.
#[derive(Debug, Default)]
struct Refusals(parking_lot::Mutex<HashSet<String>>);

impl Refusals {
    fn refused(&self, side: &str, cert: &CertificateDer<'_>, error: &rustls::Error) {
        let what = format!("{} ({error})", fingerprint(cert));
        if self.0.lock().insert(what.clone()) {
            tracing::warn!(
                "refused a cluster {side}: its certificate {what} is not one the cluster CA \
                 signed for it; further refusals of this certificate are not logged"
            );
        }
    }
}

/// The cluster CA's verifiers, rebuilt on reload.
#[derive(Debug)]
struct Verifiers {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<rustls::client::WebPkiServerVerifier>,
}

impl Verifiers {
    fn load(ca: &Path) -> Result<Verifiers, String> {
        let roots = load_roots(ca)?;
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| format!("CA {}: {e}", ca.display()))?;
        let servers =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("CA {}: {e}", ca.display()))?;
        Ok(Verifiers { clients, servers })
    }
}

/// Verifies peers against the cluster CA (reloadable), logging refusals once.
#[derive(Debug)]
struct PeerVerifier {
    ca: PathBuf,
    /// The signature algorithms of handshakes, whichever side this node is on.
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    current: parking_lot::RwLock<Arc<Verifiers>>,
    refusals: Refusals,
}

impl PeerVerifier {
    fn load(ca: &Path) -> Result<Arc<PeerVerifier>, String> {
        Ok(Arc::new(PeerVerifier {
            ca: ca.to_path_buf(),
            algorithms: provider().signature_verification_algorithms,
            current: parking_lot::RwLock::new(Arc::new(Verifiers::load(ca)?)),
            refusals: Refusals::default(),
        }))
    }

    fn reload(&self) -> Result<(), String> {
        let v = Verifiers::load(&self.ca)?;
        *self.current.write() = Arc::new(v);
        Ok(())
    }

    fn get(&self) -> Arc<Verifiers> {
        self.current.read().clone()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Peers send their one certificate whatever the hints; none are needed.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .clients
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| self.refusals.refused("peer", end_entity, e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get()
            .servers
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.refusals.refused("node", end_entity, e))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The files of a node's cluster TLS.
#[derive(Debug, Clone)]
pub struct ClusterTlsFiles {
    /// This node's certificate and key: its server certificate for links it accepts, and its
    /// client certificate for links it dials. It must name the host other nodes dial (its
    /// advertised host) as a DNS or IP subject alternative name.
    pub node: CertFiles,
    /// The cluster's CA certificate(s): every peer's certificate must chain to one.
    pub ca: PathBuf,
}

/// Mutual TLS 1.3 for cluster links.
#[derive(Clone)]
pub struct ClusterTls {
    /// Accepts links (handed to ractor_cluster's node server).
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Dials links.
    pub connector: tokio_rustls::TlsConnector,
    key: Arc<Reloadable>,
    verifier: Arc<PeerVerifier>,
    files: ClusterTlsFiles,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Loads the files; names the one that does not load.
    pub fn load(files: &ClusterTlsFiles) -> Result<ClusterTls, String> {
        let key = Reloadable::load(files.node.clone())?;
        let verifier = PeerVerifier::load(&files.ca)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(key.clone());
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(key.clone());
        Ok(ClusterTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            key,
            verifier,
            files: files.clone(),
        })
    }

    /// Watches the files and reloads them when they change or on SIGHUP.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let key = self.key.clone();
        let verifier = self.verifier.clone();
        let files = vec![
            self.files.node.cert.clone(),
            self.files.node.key.clone(),
            self.files.ca.clone(),
        ];
        tokio::spawn(watch("cluster", files, move || {
            key.reload()?;
            verifier.reload()
        }))
    }
}

/// The server name to verify when dialling `address` (`host:port`): an IP or a DNS name.
pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{address:?}: {e}"))
}

/// HTTPS for the API.
#[derive(Clone)]
pub struct ApiTls {
    config: Arc<ServerConfig>,
    key: Arc<Reloadable>,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTls")
            .field("files", &self.key.files)
            .finish_non_exhaustive()
    }
}

impl ApiTls {
    /// Loads the certificate and key; names the file that does not load.
    pub fn load(files: &CertFiles) -> Result<ApiTls, String> {
        let key = Reloadable::load(files.clone())?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(key.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ApiTls {
            config: Arc::new(config),
            key,
        })
    }

    /// Watches the files and reloads them when they change or on SIGHUP.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let key = self.key.clone();
        let files = vec![key.files.cert.clone(), key.files.key.clone()];
        tokio::spawn(watch("api", files, move || key.reload()))
    }

    /// Serves TLS on `listener`.
    pub fn listen(&self, listener: tokio::net::TcpListener) -> std::io::Result<TlsListener> {
        TlsListener::new(
            listener,
            tokio_rustls::TlsAcceptor::from(self.config.clone()),
        )
    }
}

/// What identifies a file's version: (modified, length, inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Calls `reload` when one of `files` changes or on SIGHUP, until aborted. A failed reload is
/// logged once and tried again at the next change (or the next check: a certificate written
/// before its key fails once, then loads).
async fn watch(
    what: &'static str,
    files: Vec<PathBuf>,
    reload: impl Fn() -> Result<(), String> + Send + 'static,
) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut loaded: Vec<Stamp> = files.iter().map(|f| stamp(f)).collect();
    let mut failed: Option<Vec<Stamp>> = None;
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(RELOAD_CHECK) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now: Vec<Stamp> = files.iter().map(|f| stamp(f)).collect();
        if !signalled && now == loaded {
            continue;
        }
        match reload() {
            Ok(()) => {
                let why = if signalled {
                    "on SIGHUP"
                } else {
                    "after a file changed"
                };
                tracing::info!("reloaded the {what} TLS certificates {why}");
                loaded = now;
                failed = None;
            }
            Err(e) => {
                if failed.as_ref() != Some(&now) {
                    tracing::error!(
                        "could not reload the {what} TLS certificates, keeping the previous \
                         ones: {e}"
                    );
                }
                failed = Some(now);
            }
        }
    }
}

/// A TCP listener that hands axum TLS streams. Handshakes run on their own tasks (bounded by
/// a timeout), so a client that stalls its handshake delays no one else.
pub struct TlsListener {
    local: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("accepting an API connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "API TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, rx, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A client TLS configuration for the API: the CA certificates in `ca` (a private CA), or the
/// system's trust store.
pub fn client_config(ca: Option<&Path>) -> Result<ClientConfig, String> {
    let roots = match ca {
        Some(ca) => load_roots(ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
