-- API keys: the key as JSON (never its secret), the SHA-256 of the secret, and when revoked.
CREATE TABLE api_keys (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    secret_hash TEXT    NOT NULL,
    revoked_at  INTEGER,
    body        TEXT    NOT NULL
);
