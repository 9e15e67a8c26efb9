-- TLS client certificates (security review, finding 3). PostgreSQL flavour; keep in step
-- with ../sqlite/0012_client_certificates.sql.

-- A token is bound to one client certificate by its SHA-256 fingerprint (of the DER), never by
-- its subject, which any requester of a certificate could choose. Tokens mapped by subject
-- before no longer sign in by certificate: an admin binds them anew (token create
-- --client-cert). The column stays for the listing, as a reminder.
ALTER TABLE api_tokens ADD COLUMN client_cert_sha256 TEXT;

-- Whether the certificate's leaves carry the clientAuth extended key usage. New certificates
-- are serverAuth only unless they ask; certificates made before kept clientAuth in every leaf,
-- so they keep it (a renewal must not break a deployed mTLS client).
ALTER TABLE certificates ADD COLUMN client_auth BIGINT NOT NULL DEFAULT 0;
UPDATE certificates SET client_auth = 1;
