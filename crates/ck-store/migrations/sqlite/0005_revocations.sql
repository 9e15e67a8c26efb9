-- Revocations for CRLs and OCSP, kept apart from certificates so that deleting a certificate
-- never takes a revoked serial off the CRL before it expires. SQLite flavour; keep in step
-- with ../postgres/0005_revocations.sql.

CREATE TABLE revocations (
    issuer_id TEXT NOT NULL,
    serial TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    reason TEXT NOT NULL,
    -- The certificate's expiry: after it, the entry may leave the CRL (RFC 5280 §3.3).
    not_after BIGINT NOT NULL,
    PRIMARY KEY (issuer_id, serial)
);

INSERT INTO revocations (issuer_id, serial, revoked_at, reason, not_after)
SELECT c.issuer_id, v.serial, v.revoked_at, COALESCE(v.revocation_reason, 'unspecified'), v.not_after
FROM certificate_versions v JOIN certificates c ON c.id = v.certificate_id
WHERE v.revoked_at IS NOT NULL;

-- The last CRL number given out per issuer: CRL numbers only grow, across restarts and nodes.
CREATE TABLE crl_numbers (
    issuer_id TEXT PRIMARY KEY,
    number BIGINT NOT NULL
);
