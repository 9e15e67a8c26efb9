//! The local CA: a root that signs one intermediate, and the intermediate that signs leaves.
//!
//! The root key is only used at creation; leaves are signed by the intermediate, so the root
//! could be moved offline later without changing any issued chain.

use ck_domain::{KeyType, SubjectAltName};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::pem_encode;
use crate::{PkiError, PrivateKeyPem, generate_key, hex, sha256_hex};

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// How to create a new local CA.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Key algorithm of both the root and the intermediate.
    pub key_type: KeyType,
    /// The CA's display name; the certificates are "<name> Root CA" and "<name> Intermediate CA".
    pub name: String,
    /// Lifetime of the root.
    pub root_validity: Duration,
    /// Lifetime of the intermediate (never beyond the root's).
    pub intermediate_validity: Duration,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            key_type: KeyType::EcdsaP256,
            name: "certkeeper local".to_owned(),
            root_validity: Duration::days(3650),
            intermediate_validity: Duration::days(1825),
        }
    }
}

/// Everything needed to restore a local CA, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// The self-signed root certificate.
    pub root_cert_pem: String,
    /// The root's private key.
    pub root_key: PrivateKeyPem,
    /// The intermediate certificate, signed by the root.
    pub intermediate_cert_pem: String,
    /// The intermediate's private key: it signs every leaf.
    pub intermediate_key: PrivateKeyPem,
}

impl CaMaterial {
    /// Creates a new root and intermediate valid from `now`.
    pub fn create(config: &CaConfig, now: OffsetDateTime) -> Result<Self, PkiError> {
        let not_before = now - Duration::minutes(1);
        let root_key = generate_key(config.key_type)?;
        let mut root_params = ca_params(
            &format!("{} Root CA", config.name),
            not_before,
            now + config.root_validity,
        )?;
        root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        let root_cert = root_params.self_signed(&root_key).map_err(signing)?;
        let root_issuer = Issuer::new(root_params, root_key);

        let intermediate_key = generate_key(config.key_type)?;
        let intermediate_end = (now + config.intermediate_validity).min(now + config.root_validity);
        let mut intermediate_params = ca_params(
            &format!("{} Intermediate CA", config.name),
            not_before,
            intermediate_end,
        )?;
        intermediate_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_cert = intermediate_params
            .signed_by(&intermediate_key, &root_issuer)
            .map_err(signing)?;

        Ok(Self {
            root_cert_pem: pem_encode("CERTIFICATE", root_cert.der()),
            root_key: PrivateKeyPem::new(root_issuer.key().serialize_pem()),
            intermediate_cert_pem: pem_encode("CERTIFICATE", intermediate_cert.der()),
            intermediate_key: PrivateKeyPem::new(intermediate_key.serialize_pem()),
        })
    }
}

fn ca_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "certkeeper");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// What a leaf certificate says.
#[derive(Debug, Clone)]
pub struct LeafProfile {
    /// Subject CN.
    pub common_name: String,
    /// subjectAltName entries.
    pub sans: Vec<SubjectAltName>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Expiry (the CA caps it at its own expiry).
    pub not_after: OffsetDateTime,
    /// Whether the leaf may also serve as a TLS client certificate (clientAuth).
    pub client_auth: bool,
}

/// A freshly signed leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The leaf alone.
    pub cert_pem: String,
    /// The leaf, then the intermediate: what a TLS server presents.
    pub chain_pem: String,
    /// Hex serial (lowercase, no separators).
    pub serial: String,
    /// SHA-256 of the DER (lowercase hex).
    pub fingerprint: String,
    /// Validity start as signed.
    pub not_before: OffsetDateTime,
    /// Expiry as signed.
    pub not_after: OffsetDateTime,
}

/// A loaded local CA, ready to sign. Cheap to share behind an `Arc`.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    root_cert_pem: String,
    intermediate_cert_pem: String,
    intermediate_not_after: OffsetDateTime,
    /// Put in every leaf as its CRL distribution point, when the server has a public URL.
    crl_url: Option<String>,
    /// Put in every leaf as its OCSP responder (authorityInfoAccess), likewise.
    ocsp_url: Option<String>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("intermediate_not_after", &self.intermediate_not_after)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Loads stored material, checking that the intermediate key matches its certificate.
    pub fn load(material: &CaMaterial) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(material.intermediate_key.expose())
            .map_err(|e| PkiError::CaMaterial(format!("intermediate key: {e}")))?;
        let der = pem::parse(&material.intermediate_cert_pem)
            .map_err(|e| PkiError::CaMaterial(format!("intermediate certificate: {e}")))?;
        let (_, cert) = X509Certificate::from_der(der.contents())
            .map_err(|e| PkiError::CaMaterial(format!("intermediate certificate: {e}")))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::CaMaterial(
                "the intermediate key does not match its certificate".to_owned(),
            ));
        }
        let intermediate_not_after = cert.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&der.contents().to_vec().into(), key)
            .map_err(|e| PkiError::CaMaterial(format!("intermediate certificate: {e}")))?;
        Ok(Self {
            issuer,
            root_cert_pem: material.root_cert_pem.clone(),
            intermediate_cert_pem: material.intermediate_cert_pem.clone(),
            intermediate_not_after,
            crl_url: None,
            ocsp_url: None,
        })
    }

    /// Names the CRL distribution point and the OCSP responder of every leaf signed from now on.
    pub fn with_public_urls(mut self, crl_url: Option<String>, ocsp_url: Option<String>) -> Self {
        self.crl_url = crl_url;
        self.ocsp_url = ocsp_url;
        self
    }

    /// The root certificate: what relying parties trust.
    pub fn root_pem(&self) -> &str {
        &self.root_cert_pem
    }

    /// The intermediate certificate.
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_cert_pem
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Whether `cert_der` carries the intermediate's signature (only that: validity and
    /// revocation are the caller's to check).
    pub fn issued(&self, cert_der: &[u8]) -> bool {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let Ok(intermediate) = pem::parse(self.intermediate_pem()) else {
            return false;
        };
        let Ok((_, issuer)) = X509Certificate::from_der(intermediate.contents()) else {
            return false;
        };
        X509Certificate::from_der(cert_der).is_ok_and(|(_, cert)| {
            cert.tbs_certificate.issuer == issuer.tbs_certificate.subject
                && cert.verify_signature(Some(&issuer.tbs_certificate.subject_pki)).is_ok()
        })
    }

    /// No leaf outlives this.
    pub fn not_after(&self) -> OffsetDateTime {
        self.intermediate_not_after
    }

    /// Signs a TLS server leaf for the DER SubjectPublicKeyInfo `public_key_der`.
    ///
    /// Extensions: subjectAltName, extendedKeyUsage serverAuth (and clientAuth when the profile
    /// asks), keyUsage digitalSignature (plus
    /// keyEncipherment for RSA keys), basicConstraints CA:FALSE, subject and authority key ids.
    pub fn sign(&self, public_key_der: &[u8], profile: &LeafProfile) -> Result<IssuedCertificate, PkiError> {
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(public_key_der).map_err(signing)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, profile.common_name.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = profile.sans.iter().map(san_type).collect::<Result<_, _>>()?;
        params.not_before = profile.not_before;
        params.not_after = profile.not_after.min(self.intermediate_not_after);
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        // clientAuth only when asked for (devices enrolled over EST or SCEP, certificates made
        // for mTLS): a leaf usable as a client certificate is a credential wherever this CA is
        // trusted for clients.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if profile.client_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if is_rsa(public_key_der) {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.use_authority_key_identifier_extension = true;
        if let Some(url) = &self.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(url) = &self.ocsp_url {
            params.custom_extensions.push(ocsp_aia(url)?);
        }
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex(&s.to_bytes()))
            .unwrap_or_default();
        let cert = params.signed_by(&public_key, &self.issuer).map_err(signing)?;
        let cert_pem = pem_encode("CERTIFICATE", cert.der());
        let chain_pem = format!("{cert_pem}{}", self.intermediate_cert_pem);
        Ok(IssuedCertificate {
            fingerprint: sha256_hex(cert.der()),
            cert_pem,
            chain_pem,
            serial,
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// authorityInfoAccess with one OCSP URL (rcgen has no helper for it).
fn ocsp_aia(url: &str) -> Result<rcgen::CustomExtension, PkiError> {
    use const_oid::db::rfc5280::{ID_AD_OCSP, ID_PE_AUTHORITY_INFO_ACCESS};
    use der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let location = der::asn1::Ia5String::new(url).map_err(|e| PkiError::Signing(format!("OCSP URL '{url}': {e}")))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(location),
    }]);
    let der = aia
        .to_der()
        .map_err(|e| PkiError::Signing(format!("authorityInfoAccess: {e}")))?;
    let oid: Vec<u64> = ID_PE_AUTHORITY_INFO_ACCESS.arcs().map(u64::from).collect();
    Ok(rcgen::CustomExtension::from_oid_content(&oid, der))
}

fn is_rsa(public_key_der: &[u8]) -> bool {
    x509_parser::x509::SubjectPublicKeyInfo::from_der(public_key_der)
        .is_ok_and(|(_, spki)| spki.algorithm.algorithm.to_id_string() == OID_RSA_ENCRYPTION)
}

fn san_type(san: &SubjectAltName) -> Result<SanType, PkiError> {
    match san {
        SubjectAltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        SubjectAltName::Dns(name) => name
            .as_str()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|e| PkiError::Signing(format!("{name}: {e}"))),
    }
}

/// Parameters of a certificate the intermediate issues to one of the server's own services
/// (OCSP responder, SCEP RA): "certkeeper" organisation, not a CA, valid `validity` from
/// `now` but never past `ca_not_after`.
pub(crate) fn service_certificate_params(
    common_name: &str,
    now: OffsetDateTime,
    validity: Duration,
    ca_not_after: OffsetDateTime,
) -> Result<rcgen::CertificateParams, PkiError> {
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, "certkeeper");
    name.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.not_before = now - Duration::minutes(1);
    params.not_after = (now + validity).min(ca_not_after);
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 128 random bits with the top bit clear: positive, unique in practice, under RFC 5280's 20
/// octets, and always 16 octets long (the second-highest bit is set).
pub(crate) fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Signing("the system RNG failed".to_owned()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn signing(error: rcgen::Error) -> PkiError {
    PkiError::Signing(error.to_string())
}

#[cfg(test)]
mod tests;
