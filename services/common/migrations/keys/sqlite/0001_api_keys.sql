-- API keys: one program and one scope each. Only the SHA-256 of the secret
-- part is kept; the key itself is shown once, when it is created.
CREATE TABLE api_keys (
    key_id         TEXT    PRIMARY KEY,
    program_id     TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    label          TEXT    NOT NULL,
    secret_sha256  TEXT    NOT NULL,
    created_at_us  BIGINT  NOT NULL,
    revoked_at_us  BIGINT
);
CREATE INDEX api_keys_by_program ON api_keys (program_id, created_at_us);
