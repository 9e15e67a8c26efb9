//! SCEP (RFC 8894) messages over the local CA.
//!
//! A request is a CMS SignedData, signed by the requester (with a self-signed certificate for
//! its new key, or its current certificate), whose content is an EnvelopedData encrypted to
//! our RA certificate, whose content is the PKCS#10 CSR. The answer (CertRep) is a SignedData
//! signed by the RA whose content is an EnvelopedData, encrypted to the requester's signing
//! certificate, of a certs-only SignedData holding the new certificate.
//!
//! SCEP moves keys with RSA key transport, and the local CA's keys are ECDSA, so the
//! intermediate issues an RSA "registration authority" certificate that decrypts requests and
//! signs answers. The ASN.1 types are the `cms` crate's; the crypto is aws-lc-rs (RSA PKCS#1
//! v1.5, digests) and RustCrypto's CBC ciphers (AES, and DES / 3DES, which SCEP clients still
//! send by default and which aws-lc-rs does not offer). No Rust SCEP crate exists, hence the
//! message layer here.

use aws_lc_rs::digest::{self, SHA1_FOR_LEGACY_USE_ONLY, SHA256, SHA512};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::{
    DES_EDE_3_CBC, ID_AES_128_CBC, ID_AES_192_CBC, ID_AES_256_CBC, ID_CONTENT_TYPE, ID_DATA, ID_ENVELOPED_DATA,
    ID_MESSAGE_DIGEST, ID_SIGNED_DATA,
};
use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256, ID_SHA_512, RSA_ENCRYPTION};
use const_oid::db::rfc8894::{
    ID_FAIL_INFO, ID_MESSAGE_TYPE, ID_PKI_STATUS, ID_RECIPIENT_NONCE, ID_SENDER_NONCE, ID_TRANSACTION_ID,
};
use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Odd, U2048};
use der::asn1::{Any, OctetString, PrintableStringRef, SetOfVec};
use der::{Decode, Encode, Tag, Tagged};
use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose, SigningKey};
use spki::AlgorithmIdentifierOwned;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use time::{Duration, OffsetDateTime};
use x509_cert::attr::Attribute;

use ck_domain::KeyType;

use crate::{LocalCa, PkiError, generate_key};

/// DES-CBC (1.3.14.3.2.7): still the default of several SCEP clients; accepted, never chosen.
const DES_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.7");

/// The largest PKIOperation message accepted.
pub const MAX_SCEP_MESSAGE: usize = 64 * 1024;

/// The operations `GetCACaps` advertises (RFC 8894 §3.5.2).
pub const SCEP_CAPABILITIES: &str = "POSTPKIOperation\nSHA-256\nSHA-512\nAES\nDES3\nSCEPStandard\n";

/// A SCEP messageType (RFC 8894 §3.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 3: the answer.
    CertRep,
    /// 17: a request signed with the current certificate.
    RenewalReq,
    /// 19: a first request, signed with a self-signed certificate.
    PkcsReq,
    /// 20: polling for a pending request.
    CertPoll,
    /// 21: fetching a certificate.
    GetCert,
    /// 22: fetching a CRL.
    GetCrl,
}

impl MessageType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "3" => Self::CertRep,
            "17" => Self::RenewalReq,
            "19" => Self::PkcsReq,
            "20" => Self::CertPoll,
            "21" => Self::GetCert,
            "22" => Self::GetCrl,
            _ => return None,
        })
    }

    fn code(self) -> &'static str {
        match self {
            Self::CertRep => "3",
            Self::RenewalReq => "17",
            Self::PkcsReq => "19",
            Self::CertPoll => "20",
            Self::GetCert => "21",
            Self::GetCrl => "22",
        }
    }
}

/// Why a request failed, as CertRep `failInfo` tells the client (RFC 8894 §3.2.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    /// Unrecognized or unsupported algorithm.
    BadAlg,
    /// The integrity check (signature) failed, or the envelope does not open.
    BadMessageCheck,
    /// The transaction is not permitted or supported.
    BadRequest,
    /// The signing time is off.
    BadTime,
    /// No certificate matches.
    BadCertId,
}

impl FailInfo {
    fn code(self) -> &'static str {
        match self {
            Self::BadAlg => "0",
            Self::BadMessageCheck => "1",
            Self::BadRequest => "2",
            Self::BadTime => "3",
            Self::BadCertId => "4",
        }
    }
}

/// A request that cannot be answered with a CertRep: the HTTP layer answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SCEP message: {0}")]
pub struct ScepMalformed(pub String);

/// A request we can answer but refuse: the client gets a CertRep FAILURE with `fail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepRefusal {
    /// What the client is told.
    pub fail: FailInfo,
    /// What the log says.
    pub reason: String,
}

impl ScepRefusal {
    /// A refusal with a log line.
    pub fn new(fail: FailInfo, reason: impl Into<String>) -> Self {
        Self {
            fail,
            reason: reason.into(),
        }
    }
}

/// The digests a SCEP signer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestAlg {
    Sha1,
    Sha256,
    Sha512,
}

impl DigestAlg {
    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            ID_SHA_1 => Some(Self::Sha1),
            ID_SHA_256 => Some(Self::Sha256),
            ID_SHA_512 => Some(Self::Sha512),
            _ => None,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            Self::Sha1 => &SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &SHA256,
            Self::Sha512 => &SHA512,
        };
        digest::digest(algorithm, data).as_ref().to_vec()
    }

    fn rsa_verification(self) -> &'static signature::RsaParameters {
        match self {
            Self::Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

/// The content-encryption ciphers of a SCEP envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentCipher {
    Des,
    DesEde3,
    Aes128,
    Aes192,
    Aes256,
}

impl ContentCipher {
    fn from_oid(oid: ObjectIdentifier) -> Option<Self> {
        match oid {
            DES_CBC => Some(Self::Des),
            DES_EDE_3_CBC => Some(Self::DesEde3),
            ID_AES_128_CBC => Some(Self::Aes128),
            ID_AES_192_CBC => Some(Self::Aes192),
            ID_AES_256_CBC => Some(Self::Aes256),
            _ => None,
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Des => DES_CBC,
            Self::DesEde3 => DES_EDE_3_CBC,
            Self::Aes128 => ID_AES_128_CBC,
            Self::Aes192 => ID_AES_192_CBC,
            Self::Aes256 => ID_AES_256_CBC,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::Des => 8,
            Self::DesEde3 | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Self::Des | Self::DesEde3 => 8,
            Self::Aes128 | Self::Aes192 | Self::Aes256 => 16,
        }
    }

    /// The cipher for an answer: the request's, except that single DES (56-bit keys) is
    /// answered with 3DES, which every client that sends DES also reads.
    fn for_answer(self) -> Self {
        match self {
            Self::Des => Self::DesEde3,
            other => other,
        }
    }

    fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        fn run<C: BlockModeDecrypt + KeyIvInit>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
            C::new_from_slices(key, iv).ok()?.decrypt_padded_vec::<Pkcs7>(data).ok()
        }
        match self {
            Self::Des => run::<cbc::Decryptor<des::Des>>(key, iv, data),
            Self::DesEde3 => run::<cbc::Decryptor<des::TdesEde3>>(key, iv, data),
            Self::Aes128 => run::<cbc::Decryptor<aes::Aes128>>(key, iv, data),
            Self::Aes192 => run::<cbc::Decryptor<aes::Aes192>>(key, iv, data),
            Self::Aes256 => run::<cbc::Decryptor<aes::Aes256>>(key, iv, data),
        }
    }

    fn encrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        fn run<C: BlockModeEncrypt + KeyIvInit>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
            Some(C::new_from_slices(key, iv).ok()?.encrypt_padded_vec::<Pkcs7>(data))
        }
        match self {
            Self::Des => run::<cbc::Encryptor<des::Des>>(key, iv, data),
            Self::DesEde3 => run::<cbc::Encryptor<des::TdesEde3>>(key, iv, data),
            Self::Aes128 => run::<cbc::Encryptor<aes::Aes128>>(key, iv, data),
            Self::Aes192 => run::<cbc::Encryptor<aes::Aes192>>(key, iv, data),
            Self::Aes256 => run::<cbc::Encryptor<aes::Aes256>>(key, iv, data),
        }
    }
}

/// What every request carries, enough to answer it (even with a failure).
#[derive(Debug, Clone)]
pub struct ScepHeader {
    /// The operation asked for.
    pub message_type: MessageType,
    /// The client's transaction id, echoed.
    pub transaction_id: String,
    sender_nonce: OctetString,
    /// The certificate the request is signed with (DER): self-signed for `PKCSReq`.
    pub signer_cert_der: Vec<u8>,
    signer_cert: x509_cert::Certificate,
    cipher: ContentCipher,
}

impl ScepHeader {
    /// The signer certificate's validity (notBefore, notAfter); `None` when a date is out of
    /// range. A RenewalReq signed with a certificate outside it must be refused.
    pub fn signer_validity(&self) -> Option<(OffsetDateTime, OffsetDateTime)> {
        let validity = &self.signer_cert.tbs_certificate.validity;
        let at = |t: &x509_cert::time::Time| {
            let since_epoch = Duration::try_from(t.to_unix_duration()).ok()?;
            OffsetDateTime::UNIX_EPOCH.checked_add(since_epoch)
        };
        Some((at(&validity.not_before)?, at(&validity.not_after)?))
    }
}

/// A parsed PKIOperation: the header, and the CSR or why the request is refused.
#[derive(Debug, Clone)]
pub struct ScepRequest {
    /// How to answer.
    pub header: ScepHeader,
    /// The DER PKCS#10 request from inside the envelope.
    pub csr_der: Result<Vec<u8>, ScepRefusal>,
}

/// EncryptedContentInfo as Go's pkcs7 (micromdm's scepclient) writes it: the encrypted
/// content as a constructed `[0]` holding OCTET STRING chunks, which is BER, not the DER that
/// `cms`'s own type insists on. Read as raw `Any` and unwrapped by hand.
#[derive(Debug, der::Sequence)]
struct LenientEncryptedContentInfo {
    content_type: ObjectIdentifier,
    content_enc_alg: AlgorithmIdentifierOwned,
    #[asn1(optional = "true")]
    encrypted_content: Option<Any>,
}

/// EnvelopedData with a [`LenientEncryptedContentInfo`] (no originatorInfo, as SCEP sends).
#[derive(Debug, der::Sequence)]
struct LenientEnvelopedData {
    version: CmsVersion,
    recip_infos: RecipientInfos,
    encrypted_content: LenientEncryptedContentInfo,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    unprotected_attrs: Option<x509_cert::attr::Attributes>,
}

/// The bytes of an `[0]` encrypted content: primitive (DER), or constructed from OCTET STRING
/// chunks (BER).
fn encrypted_bytes(content: &Any) -> Option<Vec<u8>> {
    if !content.tag().is_context_specific() {
        return None;
    }
    if !content.tag().is_constructed() {
        return Some(content.value().to_vec());
    }
    let mut reader = der::SliceReader::new(content.value()).ok()?;
    let mut out = Vec::new();
    while !der::Reader::is_finished(&reader) {
        let chunk: OctetString = der::Decode::decode(&mut reader).ok()?;
        out.extend_from_slice(chunk.as_bytes());
    }
    Some(out)
}

/// The RA's RSA-2048 modulus length in bytes: the only size of key transport block accepted.
const RA_MODULUS_BYTES: usize = 256;

/// PKCS#8 PrivateKeyInfo, just enough to reach the RSAPrivateKey inside (RFC 5958).
#[derive(der::Sequence)]
struct Pkcs8PrivateKey {
    version: u8,
    algorithm: AlgorithmIdentifierOwned,
    private_key: OctetString,
}

/// RSAPrivateKey (RFC 8017 A.1.2); the CRT values are read and left unused.
#[derive(der::Sequence)]
struct RsaPrivateKey {
    version: u8,
    modulus: der::asn1::Uint,
    public_exponent: der::asn1::Uint,
    private_exponent: der::asn1::Uint,
    prime1: der::asn1::Uint,
    prime2: der::asn1::Uint,
    exponent1: der::asn1::Uint,
    exponent2: der::asn1::Uint,
    coefficient: der::asn1::Uint,
}

/// The RA's key transport decryption, without a padding oracle (Bleichenbacher, and Marvin's
/// timing variant of it).
///
/// aws-lc-rs offers RSA PKCS#1 v1.5 decryption only as a whole that *fails* on bad padding:
/// AWS-LC checks the padding in constant time, but then takes an error path (its error queue,
/// an `Err` in Rust) that a successful decryption does not, and its own source advises callers
/// to decrypt with no padding and check it themselves. aws-lc-rs exposes no raw RSA (that would
/// need `unsafe` FFI, which the workspace forbids), and the `rsa` crate's raw operation is not
/// constant time (RUSTSEC-2023-0071, unpatched). So the private operation is done here with
/// crypto-bigint's constant-time Montgomery exponentiation (c^d mod n, no CRT: ~3 ms for
/// RSA-2048, no secret-dependent branch or memory access), and the padding is checked with
/// `subtle` masks against the one key length the envelope's cipher needs (public: the cipher
/// is named in clear), at fixed positions, so no loop looks for the separator.
///
/// Implicit rejection: whatever the outcome, a content key of the right length comes out. When
/// the block is not `00 02 PS(>= 8 non-zero) 00 key` with a key of that length, the key is
/// HMAC-SHA256(secret, ciphertext) instead: pseudo-random, and the same for the same
/// ciphertext, so sending one block twice tells nothing either. Both keys are computed every
/// time and one is selected with a mask. The content then fails to decrypt (or decrypts to
/// garbage that is no CSR) the same way for a wrong real key as for the synthetic one, and the
/// client gets the same CertRep for every failure past this point.
struct RaDecryptor {
    params: FixedMontyParams<{ U2048::LIMBS }>,
    modulus: U2048,
    private_exponent: U2048,
    rejection_key: hmac::Key,
}

impl RaDecryptor {
    /// From the RA key's PKCS#8 DER (RSA-2048, as `scep_ra` makes it).
    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, PkiError> {
        let info = Pkcs8PrivateKey::from_der(pkcs8).map_err(signing("SCEP RA key"))?;
        if info.version > 1 || info.algorithm.oid != RSA_ENCRYPTION {
            return Err(PkiError::Signing("SCEP RA key: not an RSA PKCS#8 key".to_owned()));
        }
        let key = RsaPrivateKey::from_der(info.private_key.as_bytes()).map_err(signing("SCEP RA key"))?;
        let bytes = |n: &der::asn1::Uint| n.as_bytes().len();
        if bytes(&key.modulus) != RA_MODULUS_BYTES || bytes(&key.private_exponent) > RA_MODULUS_BYTES {
            return Err(PkiError::Signing("SCEP RA key: not RSA-2048".to_owned()));
        }
        let modulus = U2048::from_be_slice(key.modulus.as_bytes());
        let odd = Odd::new(modulus)
            .into_option()
            .ok_or_else(|| PkiError::Signing("SCEP RA key: even modulus".to_owned()))?;
        let mut private_exponent_bytes = [0u8; RA_MODULUS_BYTES];
        let d = key.private_exponent.as_bytes();
        private_exponent_bytes[RA_MODULUS_BYTES - d.len()..].copy_from_slice(d);
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(signing("implicit rejection secret"))?;
        Ok(Self {
            params: FixedMontyParams::new(odd),
            modulus,
            private_exponent: U2048::from_be_slice(&private_exponent_bytes),
            rejection_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// The content key of `key_len` bytes in `ciphertext`, or the synthetic one (see the type).
    fn content_key(&self, ciphertext: &[u8], key_len: usize) -> Vec<u8> {
        // Length and range are public (the client sent them, n is in the certificate):
        // branching on them leaks nothing. A bad one still runs the same exponentiation.
        let mut block = [0u8; RA_MODULUS_BYTES];
        if ciphertext.len() == RA_MODULUS_BYTES {
            block.copy_from_slice(ciphertext);
        }
        let mut c = U2048::from_be_slice(&block);
        let well_formed = ciphertext.len() == RA_MODULUS_BYTES && c < self.modulus;
        if !well_formed {
            c = U2048::ZERO;
        }
        let m = FixedMontyForm::new(&c, &self.params)
            .pow(&self.private_exponent)
            .retrieve()
            .to_be_bytes();
        let em: &[u8] = m.as_ref();
        let valid = Choice::from(u8::from(well_formed)) & pkcs1_type2_fits(em, key_len);
        let synthetic = hmac::sign(&self.rejection_key, ciphertext);
        let synthetic = synthetic.as_ref();
        let start = RA_MODULUS_BYTES - key_len;
        (0..key_len)
            .map(|i| u8::conditional_select(&synthetic[i % synthetic.len()], &em[start + i], valid))
            .collect()
    }
}

/// Whether `em` is a PKCS#1 v1.5 type 2 block (RFC 8017 §7.2.2) carrying exactly `key_len`
/// bytes: `00 02`, non-zero padding of at least 8 bytes, `00`, the key. In constant time for a
/// given `key_len` (every byte is looked at, the positions are fixed by `key_len`).
fn pkcs1_type2_fits(em: &[u8], key_len: usize) -> Choice {
    // At least 8 bytes of padding: a longer key cannot be carried (never the case for a cipher
    // key in a 2048-bit block; checked so the arithmetic below cannot underflow).
    if em.len() < 11 || key_len > em.len() - 11 {
        return Choice::from(0);
    }
    let separator = em.len() - key_len - 1;
    let mut valid = em[0].ct_eq(&0) & em[1].ct_eq(&2) & em[separator].ct_eq(&0);
    for byte in &em[2..separator] {
        valid &= !byte.ct_eq(&0);
    }
    valid
}

/// The RSA registration authority that decrypts requests and signs answers for one issuer.
pub struct ScepRa {
    cert: x509_cert::Certificate,
    cert_der: Vec<u8>,
    key: KeyPair,
    decryptor: RaDecryptor,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for ScepRa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScepRa")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn malformed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> ScepMalformed {
    move |e| ScepMalformed(format!("{what}: {e}"))
}

fn signing<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PkiError {
    move |e| PkiError::Signing(format!("{what}: {e}"))
}

impl LocalCa {
    /// Issues a SCEP registration authority certificate for a fresh RSA-2048 key (valid
    /// `validity`, never past the intermediate). RSA key generation takes tens of
    /// milliseconds: call this off the async runtime's worker threads.
    pub fn scep_ra(&self, now: OffsetDateTime, validity: Duration) -> Result<ScepRa, PkiError> {
        let key = generate_key(KeyType::Rsa2048)?;
        let mut params = crate::ca::service_certificate_params("certkeeper SCEP RA", now, validity, self.not_after())?;
        // Clients pick the certificate to encrypt to by keyEncipherment (RFC 8894 §2.2).
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let issued = params
            .signed_by(&key, self.issuer())
            .map_err(signing("SCEP RA certificate"))?;
        let cert_der = issued.der().to_vec();
        let cert = x509_cert::Certificate::from_der(&cert_der).map_err(signing("SCEP RA certificate"))?;
        let decryptor = RaDecryptor::from_pkcs8(&key.serialize_der())?;
        Ok(ScepRa {
            cert,
            cert_der,
            key,
            decryptor,
            not_after: params.not_after,
        })
    }
}

/// The values of the attribute `oid`, if present once.
fn attribute(attrs: &SignedAttributes, oid: ObjectIdentifier) -> Option<&Any> {
    attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next())
}

fn printable_text(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

fn same_issuer_serial(id: &IssuerAndSerialNumber, cert: &x509_cert::Certificate) -> bool {
    id.issuer == cert.tbs_certificate.issuer && id.serial_number == cert.tbs_certificate.serial_number
}

impl ScepRa {
    /// When the RA certificate expires (rotate well before).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The RA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The GetCACert answer: (body, content type). RFC 8894 §4.2.1 lists the RA certificate and
    /// the CA certificates, but common clients (micromdm's scepclient, Debian's `scep`)
    /// encrypt their request to every certificate in it and fail on a non-RSA one. So CA
    /// certificates with other keys are left out; with an ECDSA CA, the answer is the RA
    /// certificate alone, and the CA chain comes with every issued certificate.
    pub fn ca_certs(&self, ca: &LocalCa) -> Result<(Vec<u8>, &'static str), PkiError> {
        let mut certs = vec![self.cert_der.clone()];
        for pem in [ca.intermediate_pem(), ca.root_pem()] {
            let der = crate::pem_block_der(pem, "CERTIFICATE")?;
            let cert = x509_cert::Certificate::from_der(&der).map_err(signing("CA certificate"))?;
            if cert.tbs_certificate.subject_public_key_info.algorithm.oid == RSA_ENCRYPTION {
                certs.push(der);
            }
        }
        if certs.len() == 1 {
            return Ok((self.cert_der.clone(), "application/x-x509-ca-cert"));
        }
        Ok((crate::certs_only_pkcs7(&certs)?, "application/x-x509-ca-ra-cert"))
    }

    /// Parses a PKIOperation message: checks the requester's signature, opens the envelope.
    /// `Err` only when there is nothing to answer to (not a SCEP SignedData, no transaction
    /// id, nonce or signer certificate); any later problem is a refusal inside the request.
    pub fn parse(&self, der: &[u8]) -> Result<ScepRequest, ScepMalformed> {
        if der.len() > MAX_SCEP_MESSAGE {
            return Err(ScepMalformed(format!(
                "{} bytes; at most {MAX_SCEP_MESSAGE} are accepted",
                der.len()
            )));
        }
        let info = ContentInfo::from_der(der).map_err(malformed("not a DER CMS ContentInfo"))?;
        if info.content_type != ID_SIGNED_DATA {
            return Err(ScepMalformed(format!(
                "content type {} is not signedData",
                info.content_type
            )));
        }
        let signed: SignedData = info.content.decode_as().map_err(malformed("SignedData"))?;
        let [signer]: [&SignerInfo; 1] = signed
            .signer_infos
            .0
            .iter()
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|v: Vec<_>| ScepMalformed(format!("{} signers; a SCEP message has one", v.len())))?;
        let attrs = signer
            .signed_attrs
            .as_ref()
            .ok_or_else(|| ScepMalformed("the signer has no signed attributes".to_owned()))?;
        let text = |oid, what: &'static str| {
            attribute(attrs, oid)
                .and_then(printable_text)
                .ok_or_else(|| ScepMalformed(format!("no {what} attribute")))
        };
        let transaction_id = text(ID_TRANSACTION_ID, "transactionID")?;
        let message_type_text = text(ID_MESSAGE_TYPE, "messageType")?;
        let sender_nonce: OctetString = attribute(attrs, ID_SENDER_NONCE)
            .and_then(|v| v.decode_as().ok())
            .ok_or_else(|| ScepMalformed("no senderNonce attribute".to_owned()))?;
        let SignerIdentifier::IssuerAndSerialNumber(signer_id) = &signer.sid else {
            return Err(ScepMalformed(
                "the signer is named by key id; SCEP names it by issuer and serial".to_owned(),
            ));
        };
        let signer_cert = signed
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .find_map(|choice| match choice {
                CertificateChoices::Certificate(cert) if same_issuer_serial(signer_id, cert) => Some(cert.clone()),
                _ => None,
            })
            .ok_or_else(|| ScepMalformed("the signer's certificate is not in the message".to_owned()))?;
        let signer_cert_der = signer_cert.to_der().map_err(malformed("the signer's certificate"))?;
        let message_type = MessageType::parse(&message_type_text);
        let mut header = ScepHeader {
            message_type: message_type.unwrap_or(MessageType::PkcsReq),
            transaction_id,
            sender_nonce,
            signer_cert_der,
            signer_cert,
            cipher: ContentCipher::Aes256,
        };
        let csr_der = match message_type {
            None => Err(ScepRefusal::new(
                FailInfo::BadRequest,
                format!("unknown messageType {message_type_text}"),
            )),
            Some(_) => self.open(&signed, signer, attrs, &mut header),
        };
        Ok(ScepRequest { header, csr_der })
    }

    /// Checks the signature and decrypts the envelope.
    fn open(
        &self,
        signed: &SignedData,
        signer: &SignerInfo,
        attrs: &SignedAttributes,
        header: &mut ScepHeader,
    ) -> Result<Vec<u8>, ScepRefusal> {
        let refuse = |fail, reason: String| ScepRefusal::new(fail, reason);
        if !matches!(header.message_type, MessageType::PkcsReq | MessageType::RenewalReq) {
            return Err(refuse(
                FailInfo::BadRequest,
                format!(
                    "messageType {} is not supported (PKCSReq and RenewalReq are)",
                    header.message_type.code()
                ),
            ));
        }
        let digest_alg = DigestAlg::from_oid(signer.digest_alg.oid)
            .ok_or_else(|| refuse(FailInfo::BadAlg, format!("digest {}", signer.digest_alg.oid)))?;
        let spki = &header.signer_cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(refuse(
                FailInfo::BadAlg,
                "the signer's key is not RSA, so the answer could not be encrypted to it".to_owned(),
            ));
        }
        let content = signed
            .encap_content_info
            .econtent
            .as_ref()
            .ok_or_else(|| refuse(FailInfo::BadRequest, "the message has no content".to_owned()))?;
        let content: OctetString = content
            .decode_as()
            .map_err(|e| refuse(FailInfo::BadRequest, format!("the content is not an OCTET STRING: {e}")))?;
        let stated_digest: OctetString = attribute(attrs, ID_MESSAGE_DIGEST)
            .and_then(|v| v.decode_as().ok())
            .ok_or_else(|| refuse(FailInfo::BadMessageCheck, "no messageDigest attribute".to_owned()))?;
        if stated_digest.as_bytes() != digest_alg.digest(content.as_bytes()).as_slice() {
            return Err(refuse(
                FailInfo::BadMessageCheck,
                "the content does not match its digest".to_owned(),
            ));
        }
        let signed_bytes = attrs
            .to_der()
            .map_err(|e| refuse(FailInfo::BadMessageCheck, format!("signed attributes: {e}")))?;
        let key_bits = spki.subject_public_key.raw_bytes();
        UnparsedPublicKey::new(digest_alg.rsa_verification(), key_bits)
            .verify(&signed_bytes, signer.signature.as_bytes())
            .map_err(|_| refuse(FailInfo::BadMessageCheck, "the signature does not verify".to_owned()))?;
        let (csr, cipher) = self.decrypt(content.as_bytes())?;
        header.cipher = cipher;
        Ok(csr)
    }

    /// Opens the EnvelopedData addressed to this RA: a DER PKCS#10 request, or the one
    /// refusal of [`unopened_envelope`]. The content is checked to be a CSR here, with the
    /// same answer as a content that does not decrypt: a content key that is not the sender's
    /// (a wrong guess, or the synthetic key of implicit rejection) yields garbage that, once in
    /// 256 tries, has valid CBC padding.
    fn decrypt(&self, enveloped_der: &[u8]) -> Result<(Vec<u8>, ContentCipher), ScepRefusal> {
        use x509_parser::certification_request::X509CertificationRequest;
        use x509_parser::prelude::FromDer;
        let (content, cipher) = open_envelope(enveloped_der, KeyUnwrap::Ra(&self.decryptor), Some(&self.cert))?;
        match X509CertificationRequest::from_der(&content) {
            Ok(([], _)) => Ok((content, cipher)),
            _ => Err(unopened_envelope()),
        }
    }

    /// CertRep SUCCESS carrying `chain_der` (the new certificate first), encrypted to the
    /// requester.
    pub fn success(&self, header: &ScepHeader, chain_der: &[Vec<u8>]) -> Result<Vec<u8>, PkiError> {
        let certs_only = crate::certs_only_pkcs7(chain_der)?;
        let enveloped = envelope(&header.signer_cert, header.cipher.for_answer(), &certs_only)?;
        self.cert_rep(header, "0", None, Some(enveloped))
    }

    /// CertRep FAILURE with `fail`.
    pub fn failure(&self, header: &ScepHeader, fail: FailInfo) -> Result<Vec<u8>, PkiError> {
        self.cert_rep(header, "2", Some(fail), None)
    }
}

/// How an envelope's content key is unwrapped.
enum KeyUnwrap<'a> {
    /// The RA: raw RSA with implicit rejection, always a key of the right length.
    Ra(&'a RaDecryptor),
    /// A client reading its CertRep (tests): aws-lc-rs, whose failures may show.
    Client(&'a Pkcs1PrivateDecryptingKey),
}

/// The one refusal for every failure after the key transport block is decrypted (its padding,
/// the key's length, the content's decryption, the content not being a CSR): telling them
/// apart would be a padding oracle on the RA key.
fn unopened_envelope() -> ScepRefusal {
    ScepRefusal::new(
        FailInfo::BadMessageCheck,
        "the envelope does not open to a CSR (encrypted to another key, or damaged)",
    )
}

/// Opens an EnvelopedData (ContentInfo DER) with `key`, from the key transport recipient that
/// names `me` (any, without `me`). Everything checked before the RSA decryption depends only
/// on what the client sent in clear, so it may be refused with its own reason and failInfo;
/// nothing after it may.
fn open_envelope(
    enveloped_der: &[u8],
    key: KeyUnwrap<'_>,
    me: Option<&x509_cert::Certificate>,
) -> Result<(Vec<u8>, ContentCipher), ScepRefusal> {
    let refuse = |fail, reason: String| ScepRefusal::new(fail, reason);
    let info = ContentInfo::from_der(enveloped_der)
        .map_err(|e| refuse(FailInfo::BadRequest, format!("the content is not a ContentInfo: {e}")))?;
    if info.content_type != ID_ENVELOPED_DATA {
        return Err(refuse(
            FailInfo::BadRequest,
            format!("content type {} is not envelopedData", info.content_type),
        ));
    }
    let enveloped: LenientEnvelopedData = info
        .content
        .decode_as()
        .map_err(|e| refuse(FailInfo::BadRequest, format!("EnvelopedData: {e}")))?;
    let recipient = enveloped
        .recip_infos
        .0
        .iter()
        .find_map(|r| match r {
            RecipientInfo::Ktri(ktri) => match &ktri.rid {
                RecipientIdentifier::IssuerAndSerialNumber(id) if me.is_none_or(|me| same_issuer_serial(id, me)) => {
                    Some(ktri)
                }
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| {
            refuse(
                FailInfo::BadMessageCheck,
                "the envelope is not addressed to the current RA certificate (fetch GetCACert again)".to_owned(),
            )
        })?;
    // The cipher, its IV and the ciphertext are checked before the content key is decrypted:
    // refusing them afterwards (as this code once did, with badAlg after a good padding and
    // badMessageCheck after a bad one) answered whether the padding was right.
    let encrypted = &enveloped.encrypted_content;
    let cipher = ContentCipher::from_oid(encrypted.content_enc_alg.oid).ok_or_else(|| {
        refuse(
            FailInfo::BadAlg,
            format!(
                "content cipher {} (AES-CBC, 3DES and DES are supported)",
                encrypted.content_enc_alg.oid
            ),
        )
    })?;
    let iv: OctetString = encrypted
        .content_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .filter(|iv: &OctetString| iv.as_bytes().len() == cipher.iv_len())
        .ok_or_else(|| {
            refuse(
                FailInfo::BadAlg,
                "the cipher's IV is missing or of the wrong size".to_owned(),
            )
        })?;
    let ciphertext = encrypted
        .encrypted_content
        .as_ref()
        .and_then(encrypted_bytes)
        .ok_or_else(|| refuse(FailInfo::BadRequest, "the envelope is empty".to_owned()))?;
    let content_key = match key {
        KeyUnwrap::Ra(decryptor) => decryptor.content_key(recipient.enc_key.as_bytes(), cipher.key_len()),
        KeyUnwrap::Client(key) => {
            let mut key_buf = vec![0u8; key.min_output_size()];
            let content_key = key
                .decrypt(recipient.enc_key.as_bytes(), &mut key_buf)
                .map_err(|_| unopened_envelope())?;
            if content_key.len() != cipher.key_len() {
                return Err(unopened_envelope());
            }
            content_key.to_vec()
        }
    };
    let content = cipher
        .decrypt(&content_key, iv.as_bytes(), &ciphertext)
        .ok_or_else(unopened_envelope)?;
    Ok((content, cipher))
}

/// Content encrypted under a fresh random key and IV.
struct EncryptedContent {
    key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// `content` encrypted under a fresh random key and IV.
fn encrypt_content(cipher: ContentCipher, content: &[u8]) -> Result<EncryptedContent, PkiError> {
    let rng = SystemRandom::new();
    let mut content_key = vec![0u8; cipher.key_len()];
    let mut iv = vec![0u8; cipher.iv_len()];
    rng.fill(&mut content_key).map_err(signing("random key"))?;
    rng.fill(&mut iv).map_err(signing("random IV"))?;
    let ciphertext = cipher
        .encrypt(&content_key, &iv, content)
        .ok_or_else(|| PkiError::Signing("content encryption".to_owned()))?;
    Ok(EncryptedContent {
        key: content_key,
        iv,
        ciphertext,
    })
}

/// An EnvelopedData (as ContentInfo DER) of `content` for `recipient`'s RSA key.
fn envelope(recipient: &x509_cert::Certificate, cipher: ContentCipher, content: &[u8]) -> Result<Vec<u8>, PkiError> {
    let EncryptedContent {
        key: content_key,
        iv,
        ciphertext,
    } = encrypt_content(cipher, content)?;
    let spki = recipient
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(signing("the requester's key"))?;
    let public = PublicEncryptingKey::from_der(&spki)
        .map_err(signing("the requester's key"))
        .and_then(|k| Pkcs1PublicEncryptingKey::new(k).map_err(signing("the requester's key")))?;
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&content_key, &mut wrapped)
        .map_err(signing("content key encryption"))?
        .to_vec();
    enveloped_data(recipient, cipher.oid(), iv, ciphertext, wrapped)
}

/// An EnvelopedData (as ContentInfo DER) of `ciphertext` for `recipient`, its content key
/// wrapped in `wrapped`.
fn enveloped_data(
    recipient: &x509_cert::Certificate,
    cipher_oid: ObjectIdentifier,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    wrapped: Vec<u8>,
) -> Result<Vec<u8>, PkiError> {
    let recipient = RecipientInfo::Ktri(KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: recipient.tbs_certificate.issuer.clone(),
            serial_number: recipient.tbs_certificate.serial_number.clone(),
        }),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        enc_key: OctetString::new(wrapped).map_err(signing("envelope"))?,
    });
    let enveloped = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(SetOfVec::try_from(vec![recipient]).map_err(signing("envelope"))?),
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher_oid,
                parameters: Some(
                    Any::encode_from(&OctetString::new(iv).map_err(signing("IV"))?).map_err(signing("IV"))?,
                ),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(signing("envelope"))?),
        },
        unprotected_attrs: None,
    };
    ContentInfo {
        content_type: ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).map_err(signing("envelope"))?,
    }
    .to_der()
    .map_err(signing("envelope"))
}

impl ScepRa {
    /// A CertRep SignedData signed by the RA, with `content` (an EnvelopedData) or none.
    fn cert_rep(
        &self,
        header: &ScepHeader,
        status: &str,
        fail: Option<FailInfo>,
        content: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, PkiError> {
        let mut attrs = vec![
            printable_attr(ID_MESSAGE_TYPE, MessageType::CertRep.code())?,
            printable_attr(ID_PKI_STATUS, status)?,
            printable_attr(ID_TRANSACTION_ID, &header.transaction_id)?,
            attr(ID_RECIPIENT_NONCE, &header.sender_nonce)?,
            attr(ID_SENDER_NONCE, &random_nonce()?)?,
        ];
        if let Some(fail) = fail {
            attrs.push(printable_attr(ID_FAIL_INFO, fail.code())?);
        }
        signed_message(&self.cert, &self.key, attrs, content)
    }
}

fn attr<T: der::EncodeValue + Tagged>(oid: ObjectIdentifier, value: &T) -> Result<Attribute, PkiError> {
    let value = Any::encode_from(value).map_err(signing("attribute"))?;
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(signing("attribute"))?,
    })
}

fn printable_attr(oid: ObjectIdentifier, text: &str) -> Result<Attribute, PkiError> {
    attr(oid, &PrintableStringRef::new(text).map_err(signing("attribute"))?)
}

fn random_nonce() -> Result<OctetString, PkiError> {
    let mut nonce = vec![0u8; 16];
    SystemRandom::new().fill(&mut nonce).map_err(signing("nonce"))?;
    OctetString::new(nonce).map_err(signing("nonce"))
}

/// A SignedData (ContentInfo DER) of `content` (id-data; none for a bare status) signed with
/// `key` (RSA, SHA-256), with `scep_attrs` among the signed attributes and `cert` attached.
fn signed_message(
    cert: &x509_cert::Certificate,
    key: &KeyPair,
    mut scep_attrs: Vec<Attribute>,
    content: Option<Vec<u8>>,
) -> Result<Vec<u8>, PkiError> {
    let content = content.map(OctetString::new).transpose().map_err(signing("content"))?;
    let content_digest = DigestAlg::Sha256.digest(content.as_ref().map_or(&[][..], OctetString::as_bytes));
    scep_attrs.push(attr(ID_CONTENT_TYPE, &ID_DATA)?);
    scep_attrs.push(attr(
        ID_MESSAGE_DIGEST,
        &OctetString::new(content_digest).map_err(signing("digest"))?,
    )?);
    let attrs: SignedAttributes = SetOfVec::try_from(scep_attrs).map_err(signing("attributes"))?;
    let signature = key
        .sign(&attrs.to_der().map_err(signing("attributes"))?)
        .map_err(signing("SCEP message"))?;
    let sha256 = AlgorithmIdentifierOwned {
        oid: ID_SHA_256,
        parameters: None,
    };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: Some(attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(signature).map_err(signing("signature"))?,
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256]).map_err(signing("SCEP message"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: content
                .map(|c| Any::encode_from(&c))
                .transpose()
                .map_err(signing("content"))?,
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(cert.clone())]).map_err(signing("SCEP message"))?,
        )),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).map_err(signing("SCEP message"))?),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(signing("SCEP message"))?,
    }
    .to_der()
    .map_err(signing("SCEP message"))
}

/// A SCEP client's side, for tests, benchmarks and fuzz seeds: a PKCSReq for `csr_der`,
/// signed with a self-signed certificate for `key` (RSA), encrypted to `ra_cert_der` with
/// AES-128-CBC, as scepclient sends it.
pub fn pkcs_req(ra_cert_der: &[u8], key: &KeyPair, csr_der: &[u8], transaction_id: &str) -> Result<Vec<u8>, PkiError> {
    let ra = x509_cert::Certificate::from_der(ra_cert_der).map_err(signing("RA certificate"))?;
    let enveloped = envelope(&ra, ContentCipher::Aes128, csr_der)?;
    signed_pkcs_req(key, enveloped, transaction_id)
}

/// A PKCSReq around any `enveloped` content, correctly signed with `key`: lets the fuzzer reach
/// the envelope parser behind the signature check.
pub fn signed_pkcs_req(key: &KeyPair, enveloped: Vec<u8>, transaction_id: &str) -> Result<Vec<u8>, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "SCEP requester");
    let self_signed = params.self_signed(key).map_err(signing("self-signed certificate"))?;
    let self_signed =
        x509_cert::Certificate::from_der(self_signed.der()).map_err(signing("self-signed certificate"))?;
    signed_request(&self_signed, key, MessageType::PkcsReq, enveloped, transaction_id)
}

/// A RenewalReq for `csr_der`, signed with `key` and its current certificate `signer_cert_der`
/// (for tests: RFC 8894 §3.3.1.2).
pub fn renewal_req(
    ra_cert_der: &[u8],
    key: &KeyPair,
    signer_cert_der: &[u8],
    csr_der: &[u8],
    transaction_id: &str,
) -> Result<Vec<u8>, PkiError> {
    let ra = x509_cert::Certificate::from_der(ra_cert_der).map_err(signing("RA certificate"))?;
    let signer = x509_cert::Certificate::from_der(signer_cert_der).map_err(signing("signer certificate"))?;
    let enveloped = envelope(&ra, ContentCipher::Aes128, csr_der)?;
    signed_request(&signer, key, MessageType::RenewalReq, enveloped, transaction_id)
}

fn signed_request(
    signer: &x509_cert::Certificate,
    key: &KeyPair,
    message_type: MessageType,
    enveloped: Vec<u8>,
    transaction_id: &str,
) -> Result<Vec<u8>, PkiError> {
    let attrs = vec![
        printable_attr(ID_MESSAGE_TYPE, message_type.code())?,
        printable_attr(ID_TRANSACTION_ID, transaction_id)?,
        attr(ID_SENDER_NONCE, &random_nonce()?)?,
    ];
    signed_message(signer, key, attrs, Some(enveloped))
}

/// A DER CSR for `name` (CN and DNS SAN) with `key`, carrying `challenge` as its
/// challengePassword (for tests and the oracle check).
pub fn scep_csr(key: &KeyPair, name: &str, challenge: Option<&str>) -> Result<Vec<u8>, PkiError> {
    let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(signing("CSR"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    let attributes = match challenge {
        None => Vec::new(),
        Some(challenge) => {
            // challengePassword (PKCS#9): a SET of one UTF8String.
            let value = der::asn1::Utf8StringRef::new(challenge).map_err(signing("challenge"))?;
            let set = SetOfVec::try_from(vec![Any::encode_from(&value).map_err(signing("challenge"))?])
                .map_err(signing("challenge"))?;
            vec![rcgen::Attribute {
                oid: &[1, 2, 840, 113549, 1, 9, 7],
                values: set.to_der().map_err(signing("challenge"))?,
            }]
        }
    };
    let csr = params
        .serialize_request_with_attributes(key, attributes)
        .map_err(signing("CSR"))?;
    Ok(csr.der().to_vec())
}

/// The RSA key transport block of a hand-made PKCSReq ([`crafted_pkcs_req`]): what a
/// padding-oracle attacker sends, for the tests and `scripts/scep-oracle.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBlock {
    /// `00 02 PS 00 key` around the real content key: the request opens.
    Genuine,
    /// Conforming padding around another key of the right length: what the attacker's
    /// modified ciphertext decrypts to when it conforms. The content does not decrypt.
    ConformingOtherKey,
    /// Conforming padding around a key of the wrong length for the cipher.
    ConformingWrongLength,
    /// Block type 1 (`00 01`) instead of 2.
    WrongBlockType,
    /// No zero byte after the padding string.
    NoSeparator,
    /// A zero byte within the first 8 bytes of the padding string.
    ShortPadding,
}

impl KeyBlock {
    /// Every kind of block.
    pub const ALL: [KeyBlock; 6] = [
        Self::Genuine,
        Self::ConformingOtherKey,
        Self::ConformingWrongLength,
        Self::WrongBlockType,
        Self::NoSeparator,
        Self::ShortPadding,
    ];

    /// Whether the block is valid PKCS#1 v1.5 encryption padding (RFC 8017 §7.2.2).
    pub fn conforming(self) -> bool {
        matches!(
            self,
            Self::Genuine | Self::ConformingOtherKey | Self::ConformingWrongLength
        )
    }
}

/// RSAPublicKey (RFC 8017 A.1.1).
#[derive(der::Sequence)]
struct RsaPublicKey {
    modulus: der::asn1::Uint,
    public_exponent: der::asn1::Uint,
}

/// `bytes` (big-endian, at most 256) as a 2048-bit integer.
fn u2048(bytes: &[u8]) -> Option<U2048> {
    let mut padded = [0u8; RA_MODULUS_BYTES];
    let at = RA_MODULUS_BYTES.checked_sub(bytes.len())?;
    padded[at..].copy_from_slice(bytes);
    Some(U2048::from_be_slice(&padded))
}

/// Random bytes, none of them zero.
fn nonzero_random(len: usize) -> Result<Vec<u8>, PkiError> {
    let mut bytes = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(signing("random padding"))?;
    Ok(bytes.into_iter().map(|b| b.max(1)).collect())
}

/// `block` encrypted with raw RSA (no padding added) to the RSA-2048 key of `recipient`.
fn raw_rsa_encrypt(recipient: &x509_cert::Certificate, block: &[u8]) -> Result<Vec<u8>, PkiError> {
    let spki = &recipient.tbs_certificate.subject_public_key_info;
    let key = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()).map_err(signing("RSA public key"))?;
    let not_2048 = || PkiError::Signing("raw RSA: the key is not RSA-2048".to_owned());
    if key.modulus.as_bytes().len() != RA_MODULUS_BYTES {
        return Err(not_2048());
    }
    let modulus = Odd::new(u2048(key.modulus.as_bytes()).ok_or_else(not_2048)?)
        .into_option()
        .ok_or_else(not_2048)?;
    let exponent = u2048(key.public_exponent.as_bytes()).ok_or_else(not_2048)?;
    let message = u2048(block).ok_or_else(not_2048)?;
    let params = FixedMontyParams::new_vartime(modulus);
    let sealed = FixedMontyForm::new(&message, &params).pow_vartime(&exponent).retrieve();
    Ok(sealed.to_be_bytes().as_ref().to_vec())
}

/// A PKCSReq for `csr_der` like [`pkcs_req`] (AES-128-CBC), whose content key travels in a
/// hand-made [`KeyBlock`] encrypted with raw RSA to the RA; with `unknown_cipher`, the
/// envelope names a cipher the RA does not support (RC2-CBC) instead of AES-128-CBC.
pub fn crafted_pkcs_req(
    ra_cert_der: &[u8],
    key: &KeyPair,
    csr_der: &[u8],
    transaction_id: &str,
    block: KeyBlock,
    unknown_cipher: bool,
) -> Result<Vec<u8>, PkiError> {
    let ra = x509_cert::Certificate::from_der(ra_cert_der).map_err(signing("RA certificate"))?;
    let cipher = ContentCipher::Aes128;
    let EncryptedContent {
        key: content_key,
        iv,
        ciphertext,
    } = encrypt_content(cipher, csr_der)?;
    let carried = match block {
        KeyBlock::ConformingOtherKey => nonzero_random(cipher.key_len())?,
        KeyBlock::ConformingWrongLength => nonzero_random(cipher.key_len() + 8)?,
        _ => content_key,
    };
    let mut em = vec![0u8, 2];
    em.extend(nonzero_random(RA_MODULUS_BYTES - 3 - carried.len())?);
    let separator = em.len();
    em.push(0);
    em.extend(&carried);
    match block {
        KeyBlock::WrongBlockType => em[1] = 1,
        KeyBlock::NoSeparator => em[separator] = 0x5a,
        KeyBlock::ShortPadding => em[6] = 0,
        _ => {}
    }
    let wrapped = raw_rsa_encrypt(&ra, &em)?;
    // RC2-CBC (1.2.840.113549.3.2): still named by old clients, supported by no one here.
    let cipher_oid = if unknown_cipher {
        ObjectIdentifier::new_unwrap("1.2.840.113549.3.2")
    } else {
        cipher.oid()
    };
    let enveloped = enveloped_data(&ra, cipher_oid, iv, ciphertext, wrapped)?;
    signed_pkcs_req(key, enveloped, transaction_id)
}

/// What a CertRep says, read by a client (for tests: the signature is not checked).
#[derive(Debug, Clone)]
pub struct CertRep {
    /// pkiStatus: "0" SUCCESS, "2" FAILURE, "3" PENDING.
    pub status: String,
    /// failInfo, with FAILURE.
    pub fail_info: Option<String>,
    /// The decrypted certs-only SignedData, with SUCCESS.
    pub certs_only: Option<Vec<u8>>,
    /// The certificates in it (DER), the issued one first.
    pub certificates: Vec<Vec<u8>>,
}

/// Reads a CertRep addressed to the holder of `key`.
pub fn read_cert_rep(der: &[u8], key: &KeyPair) -> Result<CertRep, PkiError> {
    let info = ContentInfo::from_der(der).map_err(signing("CertRep"))?;
    let signed: SignedData = info.content.decode_as().map_err(signing("CertRep"))?;
    let signer = signed
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| PkiError::Signing("no signer".to_owned()))?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| PkiError::Signing("no attributes".to_owned()))?;
    let text = |oid| attribute(attrs, oid).and_then(printable_text);
    let status = text(ID_PKI_STATUS).ok_or_else(|| PkiError::Signing("no pkiStatus".to_owned()))?;
    let certs_only = match &signed.encap_content_info.econtent {
        None => None,
        Some(content) => {
            let content: OctetString = content.decode_as().map_err(signing("CertRep content"))?;
            let decrypting = PrivateDecryptingKey::from_pkcs8(&key.serialize_der())
                .map_err(signing("key"))
                .and_then(|k| Pkcs1PrivateDecryptingKey::new(k).map_err(signing("key")))?;
            let (certs, _) = open_envelope(content.as_bytes(), KeyUnwrap::Client(&decrypting), None)
                .map_err(|refusal| PkiError::Signing(refusal.reason))?;
            Some(certs)
        }
    };
    let mut certificates = Vec::new();
    if let Some(certs_only) = &certs_only {
        let info = ContentInfo::from_der(certs_only).map_err(signing("certs-only"))?;
        let certs: SignedData = info.content.decode_as().map_err(signing("certs-only"))?;
        for choice in certs.certificates.iter().flat_map(|set| set.0.iter()) {
            if let CertificateChoices::Certificate(cert) = choice {
                certificates.push(cert.to_der().map_err(signing("certs-only"))?);
            }
        }
    }
    Ok(CertRep {
        status,
        fail_info: text(ID_FAIL_INFO),
        certs_only,
        certificates,
    })
}

/// Whether a certificate (DER) certifies `public_key_der` (DER SubjectPublicKeyInfo): a
/// PKCSReq must be signed with the key it asks a certificate for.
pub fn certifies_key(cert_der: &[u8], public_key_der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(cert_der).is_ok_and(|(_, cert)| cert.tbs_certificate.subject_pki.raw == public_key_der)
}

/// The challengePassword attribute of a DER CSR (PKCS#9), if it has one.
pub fn csr_challenge_password(csr_der: &[u8]) -> Option<String> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::cri_attributes::ParsedCriAttribute;
    use x509_parser::prelude::FromDer;
    let (_, csr) = X509CertificationRequest::from_der(csr_der).ok()?;
    csr.certification_request_info
        .iter_attributes()
        .find_map(|attr| match attr.parsed_attribute() {
            ParsedCriAttribute::ChallengePassword(password) => Some(password.0.clone()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaConfig, LeafProfile, ParsedCsr};
    use rcgen::PublicKeyData;

    struct Fixture {
        ca: LocalCa,
        ra: ScepRa,
        client_key: KeyPair,
        csr_der: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let now = OffsetDateTime::now_utc();
        let material = crate::CaMaterial::create(&CaConfig::default(), now).expect("CA");
        let ca = LocalCa::load(&material).expect("CA");
        let ra = ca.scep_ra(now, Duration::days(7)).expect("RA");
        let client_key = generate_key(KeyType::Rsa2048).expect("key");
        let mut params = CertificateParams::new(vec!["device1.example.test".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "device1.example.test");
        // challengePassword (1.2.840.113549.1.9.7), a PrintableString "s3cret".
        let challenge = rcgen::Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 7],
            values: vec![0x31, 0x08, 0x13, 0x06, b's', b'3', b'c', b'r', b'e', b't'],
        };
        let csr = params
            .serialize_request_with_attributes(&client_key, vec![challenge])
            .expect("CSR");
        Fixture {
            ca,
            ra,
            client_key,
            csr_der: csr.der().to_vec(),
        }
    }

    #[test]
    fn a_request_opens_and_the_answer_carries_the_certificate_to_the_requester() {
        let f = fixture();
        assert_eq!(csr_challenge_password(&f.csr_der).as_deref(), Some("s3cret"));
        let message = pkcs_req(f.ra.cert_der(), &f.client_key, &f.csr_der, "tx-1").expect("request");
        let request = f.ra.parse(&message).expect("parse");
        assert_eq!(request.header.message_type, MessageType::PkcsReq);
        assert_eq!(request.header.transaction_id, "tx-1");
        assert_eq!(request.csr_der.as_ref().expect("opens"), &f.csr_der);

        let issued =
            f.ca.sign(
                &f.client_key.subject_public_key_info(),
                &LeafProfile {
                    common_name: "device1.example.test".to_owned(),
                    sans: vec!["device1.example.test".parse().expect("name")],
                    not_before: OffsetDateTime::now_utc(),
                    not_after: OffsetDateTime::now_utc() + Duration::days(1),
                    client_auth: true,
                },
            )
            .expect("sign");
        let chain = crate::chain_der(&issued.chain_pem).expect("chain");
        let answer = f.ra.success(&request.header, &chain).expect("CertRep");
        let rep = read_cert_rep(&answer, &f.client_key).expect("read");
        assert_eq!((rep.status.as_str(), rep.fail_info), ("0", None));
        let content = rep.certs_only.expect("certificates");
        let info = ContentInfo::from_der(&content).expect("certs-only");
        let certs: SignedData = info.content.decode_as().expect("SignedData");
        assert_eq!(certs.certificates.expect("certs").0.len(), chain.len());

        let refused = f.ra.failure(&request.header, FailInfo::BadRequest).expect("CertRep");
        let rep = read_cert_rep(&refused, &f.client_key).expect("read");
        assert_eq!(
            (rep.status.as_str(), rep.fail_info.as_deref(), rep.certs_only),
            ("2", Some("2"), None)
        );
    }

    #[test]
    fn tampering_and_foreign_recipients_are_refused_with_a_fail_info() {
        let f = fixture();
        let mut message = pkcs_req(f.ra.cert_der(), &f.client_key, &f.csr_der, "tx-2").expect("request");
        // Flip a byte inside the encrypted content: the digest no longer matches.
        let at = 100; // inside the enveloped content, which comes first
        message[at] ^= 0x55;
        let request = f.ra.parse(&message).expect("still answerable");
        assert_eq!(request.csr_der.expect_err("refused").fail, FailInfo::BadMessageCheck);

        let other_ra = f.ca.scep_ra(OffsetDateTime::now_utc(), Duration::days(7)).expect("RA");
        let message = pkcs_req(other_ra.cert_der(), &f.client_key, &f.csr_der, "tx-3").expect("request");
        let refusal = f.ra.parse(&message).expect("answerable").csr_der.expect_err("refused");
        assert_eq!(refusal.fail, FailInfo::BadMessageCheck);
        assert!(refusal.reason.contains("GetCACert"), "{}", refusal.reason);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let f = fixture();
        for input in [&b""[..], b"\x30\x03\x02\x01\x00", b"not der at all", &[0x30; 100]] {
            assert!(f.ra.parse(input).is_err());
        }
    }

    #[test]
    fn raw_decryption_unwraps_what_aws_lc_wraps() {
        let f = fixture();
        let ra = x509_cert::Certificate::from_der(f.ra.cert_der()).expect("RA");
        let spki = ra.tbs_certificate.subject_public_key_info.to_der().expect("SPKI");
        let public = Pkcs1PublicEncryptingKey::new(PublicEncryptingKey::from_der(&spki).expect("key")).expect("key");
        for key_len in [8, 16, 24, 32] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
            let mut out = vec![0u8; public.ciphertext_size()];
            let sealed = public.encrypt(&key, &mut out).expect("encrypt").to_vec();
            assert_eq!(f.ra.decryptor.content_key(&sealed, key_len), key);
        }
    }

    #[test]
    fn implicit_rejection_gives_a_key_of_the_right_length_the_same_for_the_same_ciphertext() {
        let f = fixture();
        let modulus = f.ra.decryptor.modulus.to_be_bytes().as_ref().to_vec();
        for ciphertext in [
            vec![0x42u8; 256],
            vec![0u8; 256],
            vec![1u8; 100],
            vec![0xff; 256],
            modulus,
            Vec::new(),
        ] {
            let first = f.ra.decryptor.content_key(&ciphertext, 16);
            assert_eq!(first.len(), 16);
            assert_eq!(first, f.ra.decryptor.content_key(&ciphertext, 16), "deterministic");
        }
        assert_ne!(
            f.ra.decryptor.content_key(&[0x42; 256], 16),
            f.ra.decryptor.content_key(&[0x43; 256], 16),
            "a different ciphertext, a different synthetic key"
        );
    }

    #[test]
    fn the_padding_check_wants_00_02_eight_nonzero_bytes_00_and_the_key_length() {
        let block = |key_len: usize| {
            let mut em = vec![0u8, 2];
            em.extend(std::iter::repeat_n(0x77u8, 256 - 3 - key_len));
            em.push(0);
            em.extend(std::iter::repeat_n(0u8, key_len));
            em
        };
        assert!(bool::from(pkcs1_type2_fits(&block(16), 16)));
        assert!(!bool::from(pkcs1_type2_fits(&block(16), 24)), "wrong key length");
        assert!(!bool::from(pkcs1_type2_fits(&block(24), 16)), "wrong key length");
        for (at, value) in [(0, 1), (1, 1), (1, 0), (5, 0), (9, 0), (256 - 17, 1)] {
            let mut em = block(16);
            em[at] = value;
            assert!(!bool::from(pkcs1_type2_fits(&em, 16)), "byte {at} = {value}");
        }
        assert!(
            !bool::from(pkcs1_type2_fits(&block(16), 250)),
            "no room for 8 bytes of padding"
        );
    }

    #[test]
    fn every_bad_key_block_gets_one_and_the_same_refusal() {
        let f = fixture();
        for block in KeyBlock::ALL {
            let message =
                crafted_pkcs_req(f.ra.cert_der(), &f.client_key, &f.csr_der, "tx-o", block, false).expect("request");
            let request = f.ra.parse(&message).expect("answerable");
            match block {
                KeyBlock::Genuine => assert_eq!(request.csr_der.expect("opens"), f.csr_der),
                _ => assert_eq!(request.csr_der.expect_err("refused"), unopened_envelope(), "{block:?}"),
            }
            // An unsupported cipher is refused before the key is decrypted: one answer too.
            let message =
                crafted_pkcs_req(f.ra.cert_der(), &f.client_key, &f.csr_der, "tx-c", block, true).expect("request");
            let refusal = f.ra.parse(&message).expect("answerable").csr_der.expect_err("refused");
            assert_eq!(refusal.fail, FailInfo::BadAlg, "{block:?}");
            assert!(refusal.reason.contains("1.2.840.113549.3.2"), "{}", refusal.reason);
        }
        // A content that decrypts but is not a CSR: the same refusal.
        let message = pkcs_req(f.ra.cert_der(), &f.client_key, b"\x30\x03\x02\x01\x00", "tx-n").expect("request");
        let request = f.ra.parse(&message).expect("answerable");
        assert_eq!(request.csr_der.expect_err("refused"), unopened_envelope());
    }

    #[test]
    fn the_signer_validity_is_read() {
        let f = fixture();
        let message = pkcs_req(f.ra.cert_der(), &f.client_key, &f.csr_der, "tx-v").expect("request");
        let header = f.ra.parse(&message).expect("parse").header;
        let (not_before, not_after) = header.signer_validity().expect("validity");
        let now = OffsetDateTime::now_utc();
        assert!(not_before < now && now < not_after, "{not_before} {now} {not_after}");
    }

    #[test]
    fn a_test_csr_carries_its_challenge() {
        let key = generate_key(KeyType::Rsa2048).expect("key");
        let csr = scep_csr(&key, "dev.example.test", Some("s3cret")).expect("CSR");
        assert_eq!(csr_challenge_password(&csr).as_deref(), Some("s3cret"));
        let csr = scep_csr(&key, "dev.example.test", None).expect("CSR");
        assert_eq!(csr_challenge_password(&csr), None);
        assert!(ParsedCsr::parse(&csr).is_ok());
    }

    #[test]
    fn every_cipher_round_trips() {
        for cipher in [
            ContentCipher::Des,
            ContentCipher::DesEde3,
            ContentCipher::Aes128,
            ContentCipher::Aes192,
            ContentCipher::Aes256,
        ] {
            let key = vec![7u8; cipher.key_len()];
            let iv = vec![9u8; cipher.iv_len()];
            let sealed = cipher.encrypt(&key, &iv, b"certificate request").expect("encrypt");
            assert_eq!(
                cipher.decrypt(&key, &iv, &sealed).as_deref(),
                Some(&b"certificate request"[..])
            );
            assert_eq!(ContentCipher::from_oid(cipher.oid()), Some(cipher));
        }
    }
}
