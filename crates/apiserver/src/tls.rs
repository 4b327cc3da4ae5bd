//! TLS for the apiserver: the cluster CA, the serving certificate, the admin client
//! certificate, and the admin kubeconfig.
//!
//! At first start, with no certificate flags, the apiserver makes a CA and signs a serving
//! certificate (for localhost, 127.0.0.1, ::1, the bind address and the host name) and an
//! admin client certificate (`CN=rkube-admin, O=system:masters`) with it, under
//! `<data-dir>/pki/`; later starts reuse them. `--tls-san` adds names and addresses to the
//! serving certificate (e.g. the apiserver's name on a container network); when a later
//! start asks for one the stored certificate was not made for, the serving certificate is
//! signed again with the stored CA (clients trust the CA, so nothing else changes).
//! `--tls-cert-file`, `--tls-private-key-file` and `--client-ca-file` replace them with the
//! operator's own.

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating a certificate failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificates come from.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Serving certificate (PEM chain), instead of the generated one.
    pub cert_file: Option<PathBuf>,
    /// Key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// CA that signs accepted client certificates, instead of the generated CA.
    pub client_ca_file: Option<PathBuf>,
    /// Extra subject alternative names of the generated serving certificate: IP addresses,
    /// or DNS names.
    pub sans: Vec<String>,
}

/// The PEM material the apiserver serves with, and what a client needs to trust it.
#[derive(Clone)]
pub struct TlsMaterial {
    /// CA that signed the serving certificate (what clients trust).
    pub ca_pem: String,
    /// Serving certificate chain.
    pub server_cert_pem: String,
    /// Serving key.
    pub server_key_pem: String,
    /// CA of accepted client certificates.
    pub client_ca_pem: String,
    /// Admin client certificate, when the apiserver made its own CA.
    pub admin_cert_pem: Option<String>,
    /// Admin client key.
    pub admin_key_pem: Option<String>,
    /// CA key, when the apiserver made its own CA (kept for signing node certificates).
    pub ca_key_pem: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    // `mode` applies only to new files; an existing one gets the mode it should have too.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(if secret {
        0o600
    } else {
        0o644
    }))
    .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rkube-ca");
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(params)
}

/// The file beside the serving certificate that lists the extra names it was made for.
const SANS_FILE: &str = "apiserver.sans";

/// The serving certificate and key for `bind` and the extra names `sans`, signed by
/// `issuer`: it covers localhost, 127.0.0.1, ::1, the bind address (unless unspecified),
/// `rkube-apiserver`, the host name, and `sans` (IP addresses or DNS names).
fn serving_cert(
    bind: IpAddr,
    sans: &[String],
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
) -> Result<(String, String), TlsError> {
    let mut names = vec!["localhost".to_string(), "rkube-apiserver".to_string()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_string());
        }
    }
    let mut ips: Vec<IpAddr> = ["127.0.0.1".parse::<IpAddr>(), "::1".parse::<IpAddr>()]
        .into_iter()
        .flatten()
        .chain([bind])
        .collect();
    for san in sans.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) if !names.iter().any(|n| n.eq_ignore_ascii_case(san)) => {
                names.push(san.to_string())
            }
            Err(_) => {}
        }
    }
    let mut server = CertificateParams::new(names)?;
    for ip in ips {
        if !ip.is_unspecified() && !server.subject_alt_names.contains(&SanType::IpAddress(ip)) {
            server.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    server
        .distinguished_name
        .push(DnType::CommonName, "rkube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = rcgen::date_time_ymd(2025, 1, 1);
    server.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, issuer)?;
    Ok((server_cert.pem(), server_key.serialize_pem()))
}

/// A freshly made CA, serving certificate (with the extra names `sans`) and admin
/// certificate.
pub fn generate(bind: IpAddr, sans: &[String]) -> Result<TlsMaterial, TlsError> {
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params()?.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let (server_cert_pem, server_key_pem) = serving_cert(bind, sans, &issuer)?;

    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "rkube-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.not_before = rcgen::date_time_ymd(2025, 1, 1);
    admin.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let admin_key = KeyPair::generate()?;
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        server_cert_pem,
        server_key_pem,
        client_ca_pem: ca_cert.pem(),
        admin_cert_pem: Some(admin_cert.pem()),
        admin_key_pem: Some(admin_key.serialize_pem()),
        ca_key_pem: Some(ca_key.serialize_pem()),
    })
}

/// The material for this start: the operator's files, or what an earlier start left in
/// `<data_dir>/pki`, or a new CA and certificates (written there when there is a data dir).
pub fn load_or_create(
    data_dir: Option<&Path>,
    bind: IpAddr,
    options: &TlsOptions,
) -> Result<TlsMaterial, TlsError> {
    let own = match data_dir {
        Some(dir) => {
            let pki = dir.join("pki");
            if pki.join("ca.crt").exists() {
                let mut material = TlsMaterial {
                    ca_pem: read(&pki.join("ca.crt"))?,
                    server_cert_pem: read(&pki.join("apiserver.crt"))?,
                    server_key_pem: read(&pki.join("apiserver.key"))?,
                    client_ca_pem: read(&pki.join("ca.crt"))?,
                    admin_cert_pem: Some(read(&pki.join("admin.crt"))?),
                    admin_key_pem: Some(read(&pki.join("admin.key"))?),
                    ca_key_pem: read(&pki.join("ca.key")).ok(),
                };
                reissue_for_new_sans(&pki, bind, &options.sans, &mut material)?;
                material
            } else {
                let made = generate(bind, &options.sans)?;
                std::fs::create_dir_all(&pki).map_err(|source| TlsError::Io {
                    path: pki.display().to_string(),
                    source,
                })?;
                if let Some(key) = &made.ca_key_pem {
                    write(&pki.join("ca.key"), key, true)?;
                }
                write(&pki.join("apiserver.crt"), &made.server_cert_pem, false)?;
                write(&pki.join("apiserver.key"), &made.server_key_pem, true)?;
                if let (Some(c), Some(k)) = (&made.admin_cert_pem, &made.admin_key_pem) {
                    write(&pki.join("admin.crt"), c, false)?;
                    write(&pki.join("admin.key"), k, true)?;
                }
                write(&pki.join(SANS_FILE), &sans_record(&options.sans), false)?;
                // Last: its presence says the set is complete.
                write(&pki.join("ca.crt"), &made.ca_pem, false)?;
                tracing::info!(dir = %pki.display(), "created cluster CA and certificates");
                made
            }
        }
        None => generate(bind, &options.sans)?,
    };
    let mut material = own;
    if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
        material.server_cert_pem = read(cert)?;
        material.server_key_pem = read(key)?;
        // Clients then trust whatever signed the operator's certificate.
        material.ca_pem = material.server_cert_pem.clone();
    }
    if let Some(ca) = &options.client_ca_file {
        // Added to the cluster CA, not instead of it: the admin kubeconfig's certificate
        // must keep working.
        material.client_ca_pem = format!("{}\n{}", material.client_ca_pem.trim_end(), read(ca)?);
    }
    Ok(material)
}

/// The record of extra names kept beside the serving certificate: one per line, sorted.
fn sans_record(sans: &[String]) -> String {
    let mut sans: Vec<&str> = sans
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    sans.sort_unstable();
    sans.dedup();
    sans.iter().map(|s| format!("{s}\n")).collect()
}

/// Signs the stored serving certificate again, with the stored CA, when `sans` names one
/// that the certificate was not made for (a data dir made before `--tls-san` was given, or
/// given other names); a certificate without a CA key beside it is left as it is.
fn reissue_for_new_sans(
    pki: &Path,
    bind: IpAddr,
    sans: &[String],
    material: &mut TlsMaterial,
) -> Result<(), TlsError> {
    let recorded = std::fs::read_to_string(pki.join(SANS_FILE)).unwrap_or_default();
    let covered = sans_record(sans)
        .lines()
        .all(|san| recorded.lines().any(|r| r == san));
    if covered {
        return Ok(());
    }
    let Some(ca_key_pem) = &material.ca_key_pem else {
        tracing::warn!(
            sans = ?sans,
            "--tls-san names that the stored serving certificate lacks, and no CA key to sign a new one"
        );
        return Ok(());
    };
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    // Every name asked for now or before, so an address once covered stays covered.
    let all: Vec<String> = recorded
        .lines()
        .map(str::to_string)
        .chain(sans.iter().cloned())
        .collect();
    let (cert, key) = serving_cert(bind, &all, &issuer)?;
    write(&pki.join("apiserver.key"), &key, true)?;
    write(&pki.join("apiserver.crt"), &cert, false)?;
    write(&pki.join(SANS_FILE), &sans_record(&all), false)?;
    tracing::info!(dir = %pki.display(), sans = ?all, "signed a new serving certificate for new --tls-san names");
    material.server_cert_pem = cert;
    material.server_key_pem = key;
    Ok(())
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: what.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: what.into(),
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// The rustls server configuration: HTTP/2 and HTTP/1.1 by ALPN; client certificates
/// signed by the client CA are verified when presented. With `require_client_cert` a client
/// must present one (the apiserver requires it when it listens beyond loopback, until
/// authentication and authorization land); otherwise clients without one are let in too.
pub fn server_config(
    material: &TlsMaterial,
    require_client_cert: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&material.server_cert_pem, "serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(material.server_key_pem.as_bytes()).map_err(|e| {
        TlsError::Pem {
            path: "serving key".into(),
            message: e.to_string(),
        }
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&material.client_ca_pem, "client CA")? {
        roots.add(cert)?;
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let builder = if require_client_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An admin kubeconfig for `server` (e.g. `https://127.0.0.1:6443`), with the CA and the
/// admin client certificate embedded.
pub fn kubeconfig(material: &TlsMaterial, server: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut user = String::from("  user: {}\n");
    if let (Some(cert), Some(key)) = (&material.admin_cert_pem, &material.admin_key_pem) {
        user = format!(
            "  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert),
            b64(key)
        );
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rkube\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: rkube\n  context:\n    cluster: rkube\n    user: rkube-admin\n    namespace: default\ncurrent-context: rkube\nusers:\n- name: rkube-admin\n{user}",
        b64(&material.ca_pem)
    )
}

/// Writes the admin kubeconfig to `path` (mode 0600).
pub fn write_kubeconfig(path: &Path, material: &TlsMaterial, server: &str) -> Result<(), TlsError> {
    write(path, &kubeconfig(material, server), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    /// Whether a client trusting `material`'s CA accepts its serving certificate for `name`.
    fn accepted_for(material: &TlsMaterial, name: &str) -> bool {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&material.ca_pem, "ca").expect("ca") {
            roots.add(cert).expect("root");
        }
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        let chain = certs(&material.server_cert_pem, "serving").expect("serving");
        let server_name = ServerName::try_from(name.to_string()).expect("server name");
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn the_serving_certificate_covers_the_defaults_and_every_tls_san() {
        let sans = [
            "apiserver".to_string(),
            "10.1.2.3".to_string(),
            " ".to_string(),
        ];
        let material = generate("0.0.0.0".parse().expect("ip"), &sans).expect("generate");
        for name in [
            "localhost",
            "rkube-apiserver",
            "127.0.0.1",
            "apiserver",
            "10.1.2.3",
        ] {
            assert!(accepted_for(&material, name), "{name} should be covered");
        }
        for name in ["other", "10.1.2.4"] {
            assert!(
                !accepted_for(&material, name),
                "{name} should not be covered"
            );
        }
    }

    #[test]
    fn a_new_tls_san_on_a_later_start_reissues_only_the_serving_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bind: IpAddr = "127.0.0.1".parse().expect("ip");
        let first = load_or_create(Some(dir.path()), bind, &TlsOptions::default()).expect("first");
        assert!(!accepted_for(&first, "apiserver"));

        let options = TlsOptions {
            sans: vec!["apiserver".into(), "10.9.9.9".into()],
            ..TlsOptions::default()
        };
        let second = load_or_create(Some(dir.path()), bind, &options).expect("second");
        assert_eq!(second.ca_pem, first.ca_pem, "the CA stays");
        assert_eq!(
            second.admin_cert_pem, first.admin_cert_pem,
            "the admin cert stays"
        );
        assert_ne!(second.server_cert_pem, first.server_cert_pem);
        assert!(accepted_for(&second, "apiserver") && accepted_for(&second, "10.9.9.9"));

        // The same names again, or fewer: the stored certificate is reused as it is.
        let third = load_or_create(Some(dir.path()), bind, &options).expect("third");
        assert_eq!(third.server_cert_pem, second.server_cert_pem);
        let fewer = TlsOptions {
            sans: vec!["10.9.9.9".into()],
            ..TlsOptions::default()
        };
        let fourth = load_or_create(Some(dir.path()), bind, &fewer).expect("fourth");
        assert_eq!(fourth.server_cert_pem, second.server_cert_pem);
    }
}
