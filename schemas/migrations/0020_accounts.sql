-- People's accounts, their roles, sessions, API tokens and the audit of what they did
-- (issue 16; owned by accounts/). Agencies keep their own machine identity (their broker
-- user); these are for people.

CREATE TABLE person (
    id              bigserial PRIMARY KEY,
    login           text NOT NULL UNIQUE CHECK (login = lower(login) AND login <> ''),
    display_name    text NOT NULL,
    email           text,
    -- scrypt, as agencies' passwords (infra/credentials.py); NULL: signs in by OIDC only.
    password_hash   text,
    oidc_issuer     text,
    oidc_subject    text,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (oidc_issuer, oidc_subject),
    CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL))
);

CREATE TABLE role_grant (
    person_id   bigint NOT NULL REFERENCES person(id),
    role        text NOT NULL,
    scope_kind  text NOT NULL,
    scope       text NOT NULL DEFAULT '',
    granted_at  timestamptz NOT NULL DEFAULT now(),
    granted_by  text NOT NULL,
    PRIMARY KEY (person_id, role, scope_kind, scope)
);

-- The lists are accounts/roles.py's Role and ScopeKind (a test holds them together).
ALTER TABLE role_grant ADD CONSTRAINT role_grant_role_check
    CHECK (role IN ('operator', 'regional_admin', 'finance', 'library_staff', 'auditor'));
ALTER TABLE role_grant ADD CONSTRAINT role_grant_scope_kind_check
    CHECK (scope_kind IN ('consortium', 'region', 'agency'));

-- Server-side sessions: the cookie carries a random id; only its SHA-256 is stored.
CREATE TABLE web_session (
    id_hash         bytea PRIMARY KEY,
    person_id       bigint NOT NULL REFERENCES person(id),
    csrf_token      text NOT NULL,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,       -- absolute expiry
    revoked_at      timestamptz,
    source          text NOT NULL,             -- client address at sign-in
    method          text NOT NULL CHECK (method IN ('password', 'oidc'))
);
CREATE INDEX web_session_person ON web_session (person_id) WHERE revoked_at IS NULL;

-- Read-only API tokens: shown once, stored as SHA-256; revocable; scoped.
CREATE TABLE api_token (
    id              bigserial PRIMARY KEY,
    token_hash      bytea NOT NULL UNIQUE,
    person_id       bigint NOT NULL REFERENCES person(id),
    label           text NOT NULL,
    scopes          text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz
);

-- Who did what, when, from where; before and after where data changed. Append-only,
-- as the ledger (the trigger function of migration 0004).
CREATE TABLE people_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    person_id   bigint REFERENCES person(id),
    login       text NOT NULL,
    source      text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    before      jsonb,
    after       jsonb
);
CREATE INDEX people_audit_person ON people_audit (person_id, id);
CREATE TRIGGER people_audit_append_only BEFORE UPDATE OR DELETE ON people_audit
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER people_audit_no_truncate BEFORE TRUNCATE ON people_audit
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- Failed sign-ins, for throttling (infra/throttle.py owns this table): one row per key,
-- `account:<login>`, `address:<ip>`, `agency:<symbol>`; shared by every hub process.
CREATE TABLE login_throttle (
    key             text PRIMARY KEY,
    failures        integer NOT NULL,
    first_failed_at timestamptz NOT NULL,
    locked_until    timestamptz
);
