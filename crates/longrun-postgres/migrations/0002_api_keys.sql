-- API keys: the key as JSON (never its secret), the SHA-256 of the secret, and when revoked.
CREATE TABLE api_keys (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          UUID        NOT NULL UNIQUE,
    secret_hash TEXT        NOT NULL,
    revoked_at  TIMESTAMPTZ,
    body        JSON        NOT NULL
);
