-- One signing secret per program for storefront customer tokens: the shop's
-- back end signs a customer id and a timestamp with it (HMAC-SHA256), and the
-- gateway checks the signature. Unlike an API key the secret itself must be
-- kept, not a hash of it: verifying an HMAC needs the key.
CREATE TABLE customer_token_secrets (
    program_id    TEXT PRIMARY KEY,
    secret_hex    TEXT NOT NULL,
    created_at_us BIGINT NOT NULL
);
