//! [`PgStore`]: refresh-token families in PostgreSQL, shared by any number of server
//! instances (`DATABASE_URL=postgres://…`). tokio-postgres with a deadpool pool: fully
//! async, nothing blocks the workers.
//!
//! The schema is created and migrated at start from [`MIGRATIONS`] (versioned, each applied
//! once in its own transaction, recorded in `schema_migrations`, under an advisory lock so
//! two instances starting together do not race). Rotation and login are one call each to a
//! PL/pgSQL function that locks the token's row (`FOR UPDATE`), so two instances presented
//! the same token at the same moment serialise on that row: one rotates, the other sees it
//! retired. One round trip and one commit per rotation.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{
    standing_of, BoundKey, Family, QueuedRevocation, RefreshStore, Rejection, Rotation, Standing,
    StoreError, StoreStats, StoredKey, UpstreamStore,
};
use crate::tokens::TokenHash;

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x7477_6d69_6772; // "twmigr"

/// The schema, version by version. Never edit a released migration: add the next one.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE families (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    sub TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE TABLE refresh_tokens (
    hash BYTEA PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES families(id) ON DELETE CASCADE,
    issued_at_ms BIGINT NOT NULL,
    retired_at_ms BIGINT
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens(family_id);
CREATE INDEX families_by_expiry ON families(expires_at_ms);
CREATE INDEX families_by_revocation ON families(revoked_at_ms);
CREATE INDEX families_by_sub ON families(sub, created_at_ms);
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    pem TEXT NOT NULL,
    not_before_ms BIGINT NOT NULL
);
",
    ),
    (
        2,
        "
-- Present a refresh token. Outcomes: unknown, revoked, expired, rotated, repeated, reused.
CREATE FUNCTION tw_rotate(p_token BYTEA, p_next BYTEA, p_now BIGINT, p_window BIGINT,
    OUT o_outcome TEXT, OUT o_family TEXT, OUT o_sub TEXT, OUT o_expires BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_retired BIGINT;
    v_revoked BIGINT;
BEGIN
    -- The row lock serialises every presentation of this token, on any instance.
    SELECT t.family_id, t.retired_at_ms INTO o_family, v_retired
        FROM refresh_tokens t WHERE t.hash = p_token FOR UPDATE;
    IF NOT FOUND THEN
        o_outcome := 'unknown';
        RETURN;
    END IF;
    SELECT f.sub, f.expires_at_ms, f.revoked_at_ms INTO o_sub, o_expires, v_revoked
        FROM families f WHERE f.id = o_family;
    IF v_revoked IS NOT NULL THEN
        o_outcome := 'revoked';
    ELSIF o_expires <= p_now THEN
        o_outcome := 'expired';
    ELSIF v_retired IS NULL THEN
        UPDATE refresh_tokens SET retired_at_ms = p_now WHERE hash = p_token;
        INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (p_next, o_family, p_now);
        o_outcome := 'rotated';
    ELSIF p_window > 0 AND p_now - v_retired < p_window AND EXISTS (
        -- Locks the successor too: a concurrent rotation of it is seen, not raced.
        SELECT 1 FROM refresh_tokens n
        WHERE n.hash = p_next AND n.family_id = o_family AND n.retired_at_ms IS NULL
        FOR UPDATE
    ) THEN
        o_outcome := 'repeated';
    ELSE
        UPDATE families SET revoked_at_ms = p_now WHERE id = o_family AND revoked_at_ms IS NULL;
        o_outcome := 'reused';
    END IF;
END $$;

-- Start a family; revoke the user's oldest live families beyond p_max_live and return them.
CREATE FUNCTION tw_create_family(p_id TEXT, p_sub TEXT, p_expires BIGINT, p_token BYTEA,
    p_max_live BIGINT, p_now BIGINT)
RETURNS SETOF TEXT
LANGUAGE plpgsql AS $$
BEGIN
    -- One user's logins on different instances count against the cap one at a time.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_sub, 0));
    INSERT INTO families (id, sub, created_at_ms, expires_at_ms)
        VALUES (p_id, p_sub, p_now, p_expires);
    INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (p_token, p_id, p_now);
    RETURN QUERY
        UPDATE families SET revoked_at_ms = p_now WHERE id IN (
            SELECT id FROM families
            WHERE sub = p_sub AND revoked_at_ms IS NULL AND expires_at_ms > p_now
            ORDER BY created_at_ms DESC, seq DESC OFFSET p_max_live
        ) RETURNING id;
END $$;
",
    ),
    (
        3,
        "
-- Failed-login budgets shared by every instance (GCRA: one failure more per p_period,
-- p_burst at once). tat_ms: theoretical arrival time; locked_until_ms: 429 until then.
CREATE TABLE login_limits (
    key TEXT PRIMARY KEY,
    tat_ms BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX login_limits_by_tat ON login_limits(tat_ms);

-- Count one failure for p_key; 0 if within budget, else the ms until the next is allowed
-- (the key is then locked that long).
CREATE FUNCTION tw_login_failure(p_key TEXT, p_now BIGINT, p_burst BIGINT, p_period BIGINT)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    v_tat BIGINT;
    v_new BIGINT;
    v_wait BIGINT;
BEGIN
    INSERT INTO login_limits (key, tat_ms) VALUES (p_key, p_now) ON CONFLICT DO NOTHING;
    SELECT tat_ms INTO v_tat FROM login_limits WHERE key = p_key FOR UPDATE;
    v_new := GREATEST(v_tat, p_now) + p_period;
    IF v_new - p_now > p_burst * p_period THEN
        v_wait := v_new - p_now - p_burst * p_period;
        UPDATE login_limits SET locked_until_ms = GREATEST(locked_until_ms, p_now + v_wait)
            WHERE key = p_key;
        RETURN v_wait;
    END IF;
    UPDATE login_limits SET tat_ms = v_new WHERE key = p_key;
    RETURN 0;
END $$;
",
    ),
    (
        4,
        "
-- Upstream mode (an OpenID Provider): pending logins, sealed provider grants, leases.
CREATE TABLE upstream_pending (
    key BYTEA PRIMARY KEY,
    sealed BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE TABLE upstream_grants (
    family_id TEXT PRIMARY KEY,
    sealed BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE TABLE upstream_leases (
    family_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
",
    ),
    (
        5,
        "
-- DPoP: the key each bound family is bound to, and the proof ids seen (replay cache
-- shared by every instance).
CREATE TABLE dpop_keys (
    family_id TEXT PRIMARY KEY REFERENCES families(id) ON DELETE CASCADE,
    jkt TEXT NOT NULL,
    used_at_ms BIGINT NOT NULL
);
CREATE TABLE dpop_proofs (
    id BYTEA PRIMARY KEY,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs(expires_at_ms);
",
    ),
    (
        6,
        "
-- The per-user cap keeps the newest families by the order the database created them in
-- (seq), not by the creating instance's clock: a login on an instance whose clock is behind
-- revoked the family it had just created.
CREATE OR REPLACE FUNCTION tw_create_family(p_id TEXT, p_sub TEXT, p_expires BIGINT,
    p_token BYTEA, p_max_live BIGINT, p_now BIGINT)
RETURNS SETOF TEXT
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_sub, 0));
    INSERT INTO families (id, sub, created_at_ms, expires_at_ms)
        VALUES (p_id, p_sub, p_now, p_expires);
    INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (p_token, p_id, p_now);
    RETURN QUERY
        UPDATE families SET revoked_at_ms = p_now WHERE id IN (
            SELECT id FROM families
            WHERE sub = p_sub AND revoked_at_ms IS NULL AND expires_at_ms > p_now
            ORDER BY seq DESC OFFSET p_max_live
        ) RETURNING id;
END $$;
",
    ),
    (
        7,
        "
-- The lost-response window is less than the window either way (store::within_window): a
-- presentation stamped before a concurrent one committed is inside; a clock stepped back no
-- longer stretches it without bound.
CREATE OR REPLACE FUNCTION tw_rotate(p_token BYTEA, p_next BYTEA, p_now BIGINT, p_window BIGINT,
    OUT o_outcome TEXT, OUT o_family TEXT, OUT o_sub TEXT, OUT o_expires BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_retired BIGINT;
    v_revoked BIGINT;
BEGIN
    -- The row lock serialises every presentation of this token, on any instance.
    SELECT t.family_id, t.retired_at_ms INTO o_family, v_retired
        FROM refresh_tokens t WHERE t.hash = p_token FOR UPDATE;
    IF NOT FOUND THEN
        o_outcome := 'unknown';
        RETURN;
    END IF;
    SELECT f.sub, f.expires_at_ms, f.revoked_at_ms INTO o_sub, o_expires, v_revoked
        FROM families f WHERE f.id = o_family;
    IF v_revoked IS NOT NULL THEN
        o_outcome := 'revoked';
    ELSIF o_expires <= p_now THEN
        o_outcome := 'expired';
    ELSIF v_retired IS NULL THEN
        UPDATE refresh_tokens SET retired_at_ms = p_now WHERE hash = p_token;
        INSERT INTO refresh_tokens (hash, family_id, issued_at_ms) VALUES (p_next, o_family, p_now);
        o_outcome := 'rotated';
    ELSIF p_now - v_retired > -p_window AND p_now - v_retired < p_window AND EXISTS (
        -- Locks the successor too: a concurrent rotation of it is seen, not raced.
        SELECT 1 FROM refresh_tokens n
        WHERE n.hash = p_next AND n.family_id = o_family AND n.retired_at_ms IS NULL
        FOR UPDATE
    ) THEN
        o_outcome := 'repeated';
    ELSE
        UPDATE families SET revoked_at_ms = p_now WHERE id = o_family AND revoked_at_ms IS NULL;
        o_outcome := 'reused';
    END IF;
END $$;
",
    ),
    (
        8,
        "
-- Upstream mode: SHA-256 of every provider access token handed out, and the families that
-- ended; /api/me refuses a JWT of an ended family until it expires, on every instance.
CREATE TABLE upstream_access_tokens (
    hash BYTEA PRIMARY KEY,
    family_id TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX upstream_access_tokens_by_family ON upstream_access_tokens(family_id);
CREATE INDEX upstream_access_tokens_by_expiry ON upstream_access_tokens(expires_at_ms);
CREATE TABLE upstream_ended (
    family_id TEXT PRIMARY KEY,
    ended_at_ms BIGINT NOT NULL
);
",
    ),
    (
        9,
        "
-- Upstream mode: provider grants to revoke (RFC 7009), retried by maintenance until the
-- provider accepts; the grant stays sealed as it was stored. Claimed with FOR UPDATE SKIP
-- LOCKED and a lease (next_at_ms), so two instances never try the same one at once. One row
-- per grant queued (a family may have several): an attempt is settled on its own row only.
CREATE TABLE upstream_revocations (
    id BIGSERIAL PRIMARY KEY,
    family_id TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    attempts INTEGER NOT NULL,
    next_at_ms BIGINT NOT NULL,
    queued_at_ms BIGINT NOT NULL
);
CREATE INDEX upstream_revocations_by_due ON upstream_revocations(next_at_ms);
CREATE INDEX upstream_revocations_by_age ON upstream_revocations(queued_at_ms);
",
    ),
    (
        10,
        "
-- Upstream mode: the provider session (the ID token's sub and sid) each family was signed in
-- through, for OpenID Connect Back-Channel Logout; kept until the family's end.
CREATE TABLE upstream_sessions (
    family_id TEXT PRIMARY KEY,
    sub TEXT NOT NULL,
    sid TEXT,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX upstream_sessions_by_sub ON upstream_sessions(sub);
CREATE INDEX upstream_sessions_by_sid ON upstream_sessions(sid);
CREATE INDEX upstream_sessions_by_expiry ON upstream_sessions(expires_at_ms);
",
    ),
];

/// Refresh-token families (and the shared secrets and signing keys) in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The client-side bound of each store call ([`PgStore::call`]).
    call_timeout: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

fn err(e: impl std::error::Error + 'static) -> StoreError {
    StoreError(format!("postgres: {}", crate::error::chain(&e)))
}

/// How long one store call may take by default ([`PgStore::connect_with`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the migration at start may take, waiting for another instance's migration lock
/// included ([`PgStore::connect_with`]): generous, since instances starting together wait
/// for each other's migrations, and a migration may build an index; a database that stops
/// answering half-way fails the start instead of hanging it.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How much shorter PostgreSQL's `statement_timeout` is than the call timeout (a tenth,
/// at most a second): a statement that runs too long is cancelled by PostgreSQL itself,
/// which reports it and leaves the connection usable, a little before the client-side
/// deadline of [`PgStore::call`] would cut it off and close the connection.
fn statement_margin(call_timeout: Duration) -> Duration {
    (call_timeout / 10).min(Duration::from_secs(1))
}

/// The connection settings of `url` for both the migration connection and the pool:
/// `schema` as the search path, and bounds on the network side (each only where the URL
/// sets none of its own):
///
/// - `connect_timeout` = `call_timeout`: the TCP connection. (tokio-postgres does not
///   bound the start-up exchange after it: see [`PgStore::connect_with`] and the pool's
///   create timeout.)
/// - TCP keepalives after `call_timeout` idle (at least 1 s), every second, and
///   `tcp_user_timeout` = `call_timeout` (Linux): the kernel closes a connection whose peer
///   has vanished without a reset (a black-holed host) — an idle one within about twice the
///   call timeout, one with data unacknowledged after the call timeout — so the pool's
///   recycling (`RecyclingMethod::Fast`, which checks that the socket is open) drops it
///   instead of handing it out. (Against a middlebox that still acknowledges, such as a
///   stalled proxy, only the client-side deadline of [`PgStore::call`] helps.)
fn parse_config(
    url: &str,
    schema: Option<&str>,
    call_timeout: Duration,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError(format!("DATABASE_URL is not a PostgreSQL URL: {e}")))?;
    if let Some(schema) = schema {
        add_option(&mut config, &format!("-c search_path={schema}"));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(call_timeout);
    }
    let whole_seconds = Duration::from_secs(call_timeout.as_secs_f64().ceil().max(1.0) as u64);
    // tokio-postgres' default idle time is 2 hours: changed unless the URL set another.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(whole_seconds);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(Duration::from_secs(1));
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(whole_seconds);
    }
    if config.get_application_name().is_none() {
        config.application_name("tokenwarden-server");
    }
    Ok(config)
}

/// Appends `option` to the `options` the connection sends (keeping the URL's own).
fn add_option(config: &mut tokio_postgres::Config, option: &str) {
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {option}"),
        _ => option.to_string(),
    };
    config.options(&options);
}

/// The millisecond value of a setting (at least 1: 0 would mean no limit).
fn ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// A pooled connection in use by one store call ([`PgStore::call`]): back to the pool only
/// through [`Held::give_back`], once the call's statements have all been answered. Dropped
/// before that (the call cut off by its deadline, or dropped by its caller: the request
/// timeout, the browser going away) it is taken out of the pool and closed, with its socket.
struct Held(Option<deadpool_postgres::Object>);

impl Held {
    fn give_back(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Out of the pool; dropping the client aborts its connection task, which closes
            // the socket.
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

impl PgStore {
    /// Connect to `url` with a pool of `pool_size` connections and apply the missing
    /// migrations. `schema`: use this schema (created if missing) instead of the default
    /// search path (tests give each store its own).
    pub async fn connect(
        url: &str,
        schema: Option<&str>,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        Self::connect_with(url, schema, pool_size, DEFAULT_CALL_TIMEOUT).await
    }

    /// [`PgStore::connect`], each store call bounded by `call_timeout` (the server gives it
    /// a third of `--request-timeout`), on the client side ([`PgStore::call`]): waiting for
    /// a pooled connection or making one, and every statement of the call. PostgreSQL's
    /// `statement_timeout` (which also bounds waiting for a row lock) is set a little shorter
    /// ([`statement_margin`]), so that PostgreSQL normally cancels first. A call cut off
    /// fails (503) and is rolled back or never reaches PostgreSQL. Unbounded, a rotation
    /// stuck behind a lock, or held on its way to the database, was answered 503 by the
    /// request timeout but still committed later, so the client's retry with the cookie it
    /// still had was reuse, and the user was signed out everywhere.
    ///
    /// The migration first runs on a connection of its own: made within `call_timeout`
    /// (start-up exchange included), then bounded by [`MIGRATION_TIMEOUT`]. A database that
    /// is down, refuses, or accepts and never answers fails this with the reason; the server
    /// then exits 1 (it does not retry: its supervisor restarts it).
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        pool_size: usize,
        call_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect_bounded(url, schema, pool_size, call_timeout, MIGRATION_TIMEOUT).await
    }

    async fn connect_bounded(
        url: &str,
        schema: Option<&str>,
        pool_size: usize,
        call_timeout: Duration,
        migration_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let config = parse_config(url, schema, call_timeout)?;
        // Migrations wait for each other's advisory lock: no statement timeout there, the
        // whole migration bounded instead.
        let check_interval = {
            // A connection of its own: the session-level advisory lock goes with it.
            // tokio-postgres' connect_timeout only covers the TCP connection, not the
            // start-up exchange after it: bounded here as a whole.
            let (client, connection) = tokio::time::timeout(call_timeout, config.connect(NoTls))
                .await
                .map_err(|_| {
                    StoreError(format!(
                        "postgres: connecting: no answer within {} ms (the database accepts \
                         connections but does not answer)",
                        call_timeout.as_millis()
                    ))
                })?
                .map_err(|e| {
                    StoreError(format!("postgres: connecting: {}", crate::error::chain(&e)))
                })?;
            let mut conn_task = tokio::spawn(connection);
            let outcome = tokio::time::timeout(migration_timeout, async {
                let check_interval = client_check_interval(&client, call_timeout).await;
                migrate(&client, schema).await.map(|()| check_interval)
            })
            .await;
            drop(client);
            match outcome {
                Ok(result) => {
                    // The connection ends by itself once the client is gone and its last
                    // requests are answered (the close of the statements dropped last):
                    // bounded too, or a database that stops answering now hangs the start.
                    if tokio::time::timeout(call_timeout, &mut conn_task)
                        .await
                        .is_err()
                    {
                        conn_task.abort();
                    }
                    result?
                }
                Err(_) => {
                    // A statement may be in flight on a dead connection: no goodbye.
                    conn_task.abort();
                    return Err(StoreError(format!(
                        "postgres: the migration did not finish within {} s (another \
                         instance's migration holding the lock that long, or the database \
                         stopped answering)",
                        migration_timeout.as_secs()
                    )));
                }
            }
        };
        let mut config = config;
        add_option(
            &mut config,
            &format!(
                "-c statement_timeout={}",
                ms(call_timeout - statement_margin(call_timeout))
            ),
        );
        if let Some(every) = check_interval {
            add_option(
                &mut config,
                &format!("-c client_connection_check_interval={}", ms(every)),
            );
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Fast: a connection is handed out again if its socket is open. Verified
                // would run a statement on each checkout (one more round trip per store call,
                // a rotation's two instead of one), and on a dead connection that statement
                // hangs like any other, so it would not find it any sooner: a call cut off by
                // its deadline closes its connection and the idle ones (`call`), and the TCP
                // settings of `parse_config` close the rest.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // The pool's own timeouts give the clearer error when the pool is what ran out of
        // time; the call's deadline (`call`) bounds the whole.
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(call_timeout))
            .create_timeout(Some(call_timeout))
            .recycle_timeout(Some(call_timeout))
            .build()
            .map_err(err)?;
        Ok(Self { pool, call_timeout })
    }

    /// Runs `work`, one store call's statements, on a pooled connection, all within the call
    /// timeout, getting the connection included.
    ///
    /// Why a deadline here besides PostgreSQL's `statement_timeout`: the statement timeout
    /// only runs once a statement has reached PostgreSQL and only PostgreSQL can report it.
    /// A connection whose peer stops answering without a reset (a black-holed host, a paused
    /// PgBouncer, TCP retransmissions) left the call waiting for as long as the socket lived,
    /// and a statement held on its way committed whenever it arrived.
    ///
    /// A call cut off by this deadline (or dropped by its caller) while it holds a connection
    /// does not give it back: the connection is closed ([`Held`]), so that a statement still
    /// on its way with it (queued in PgBouncer, say) is dropped rather than run later, and no
    /// later call inherits a dead or busy connection. A deadline also closes the pool's idle
    /// connections: they went the same way as the one that did not answer, and
    /// `RecyclingMethod::Fast` would hand them out until the kernel gave up on them. The cost
    /// when the database was merely slow: new connections for the next calls.
    async fn call<T>(
        &self,
        work: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        let conn = match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(conn) => conn.map_err(err)?,
            Err(_) => {
                return Err(StoreError(format!(
                    "postgres: no connection within {} ms",
                    self.call_timeout.as_millis()
                )))
            }
        };
        let mut held = Held(Some(conn));
        let outcome = match held.0.as_mut() {
            Some(conn) => tokio::time::timeout_at(deadline, work(conn)).await,
            None => unreachable!("held until given back"),
        };
        match outcome {
            Ok(result) => {
                held.give_back();
                result
            }
            Err(_) => {
                drop(held);
                let idle = self.pool.retain(|_, _| false).removed.len();
                tracing::warn!(
                    timeout_ms = self.call_timeout.as_millis() as u64,
                    idle_closed = idle,
                    "PostgreSQL did not answer a store call in time: its connection and the idle ones closed"
                );
                Err(StoreError(format!(
                    "postgres: no answer within {} ms (connection closed)",
                    self.call_timeout.as_millis()
                )))
            }
        }
    }

    /// The versions recorded in `schema_migrations`, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i32>, StoreError> {
        self.call(async |client| {
            let rows = client
                .query(
                    "SELECT version FROM schema_migrations ORDER BY version",
                    &[],
                )
                .await
                .map_err(err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }
}

/// The `client_connection_check_interval` the pool's connections ask for, `None` where the
/// server does not take it (PostgreSQL before 14, or a platform without the kernel support:
/// setting it there fails, and would fail every connection if sent at start-up). While a
/// statement runs, PostgreSQL checks this often whether its client is still there and, if
/// it has gone (a call cut off by its deadline closes its connection), aborts it instead of
/// committing later. The statement margin: a cut-off call's statement stops within about
/// the time PostgreSQL's own statement timeout would have taken.
async fn client_check_interval(
    client: &tokio_postgres::Client,
    call_timeout: Duration,
) -> Option<Duration> {
    let every = statement_margin(call_timeout).max(Duration::from_millis(100));
    let value = ms(every).to_string();
    match client
        .query(
            "SELECT set_config('client_connection_check_interval', $1, false)",
            &[&value],
        )
        .await
    {
        Ok(_) => Some(every),
        Err(e) => {
            tracing::info!(error = %e, "client_connection_check_interval not available: not set");
            None
        }
    }
}

async fn migrate(client: &tokio_postgres::Client, schema: Option<&str>) -> Result<(), StoreError> {
    client
        .query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    if let Some(schema) = schema {
        // Tests only: the name comes from the test, never from a request.
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path = {schema}"
            ))
            .await
            .map_err(err)?;
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(err)?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        client.batch_execute("BEGIN").await.map_err(err)?;
        let step = async {
            client.batch_execute(sql).await?;
            client
                .execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        if let Err(e) = step {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(StoreError(format!("postgres: migration {version}: {e}")));
        }
        tracing::info!(version, "database migration applied");
    }
    client
        .query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    Ok(())
}

#[async_trait::async_trait]
impl RefreshStore for PgStore {
    async fn create_family(
        &self,
        family: &Family,
        token: &TokenHash,
        max_live: usize,
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.call(async |client| {
            let stmt = client
                .prepare_cached("SELECT * FROM tw_create_family($1, $2, $3, $4, $5, $6)")
                .await
                .map_err(err)?;
            let keep = i64::try_from(max_live).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    &stmt,
                    &[
                        &family.id,
                        &family.sub,
                        &family.expires_at_ms,
                        &&token[..],
                        &keep,
                        &now_ms,
                    ],
                )
                .await
                .map_err(err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    async fn rotate(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Rotation, StoreError> {
        self.call(async |client| {
            let stmt = client
                .prepare_cached(
                    "SELECT o_outcome, o_family, o_sub, o_expires FROM tw_rotate($1, $2, $3, $4)",
                )
                .await
                .map_err(err)?;
            let row = client
                .query_one(&stmt, &[&&token[..], &&next[..], &now_ms, &window_ms])
                .await
                .map_err(err)?;
            let outcome: &str = row.get(0);
            let family = || -> Family {
                Family {
                    id: row.get(1),
                    sub: row.get(2),
                    expires_at_ms: row.get(3),
                }
            };
            Ok(match outcome {
                "unknown" => Rotation::Rejected(Rejection::Unknown),
                "revoked" => Rotation::Rejected(Rejection::Revoked),
                "expired" => Rotation::Rejected(Rejection::Expired),
                "rotated" => Rotation::Rotated(family()),
                "repeated" => Rotation::Repeated(family()),
                "reused" => Rotation::Reused {
                    family_id: row.get(1),
                },
                other => return Err(StoreError(format!("tw_rotate answered {other:?}"))),
            })
        })
        .await
    }

    async fn standing(
        &self,
        token: &TokenHash,
        next: &TokenHash,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Standing, StoreError> {
        self.call(async |client| {
            // One statement: one snapshot, no lock (nothing is changed; see `session::hold`).
            let stmt = client
                .prepare_cached(
                    "SELECT f.revoked_at_ms IS NOT NULL, f.expires_at_ms, t.retired_at_ms,
                        EXISTS (SELECT 1 FROM refresh_tokens n WHERE n.hash = $2
                                AND n.family_id = t.family_id AND n.retired_at_ms IS NULL)
                     FROM refresh_tokens t JOIN families f ON f.id = t.family_id WHERE t.hash = $1",
                )
                .await
                .map_err(err)?;
            let row = client
                .query_opt(&stmt, &[&&token[..], &&next[..]])
                .await
                .map_err(err)?;
            Ok(row.map_or(Standing::Rejected(Rejection::Unknown), |r| {
                standing_of(r.get(0), r.get(1), r.get(2), r.get(3), now_ms, window_ms)
            }))
        })
        .await
    }

    async fn revoke_family_of(
        &self,
        token: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.call(async |client| {
            let row = client
                .query_opt(
                    "UPDATE families f SET revoked_at_ms = $2 FROM refresh_tokens t
                     WHERE t.hash = $1 AND f.id = t.family_id AND f.revoked_at_ms IS NULL
                     RETURNING f.id",
                    &[&&token[..], &now_ms],
                )
                .await
                .map_err(err)?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    async fn revoked_since(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.call(async |client| {
            let stmt = client
                .prepare_cached("SELECT id FROM families WHERE revoked_at_ms >= $1")
                .await
                .map_err(err)?;
            let rows = client.query(&stmt, &[&since_ms]).await.map_err(err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    async fn purge(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.call(async |client| {
            // Login budgets that refilled long ago hold nothing.
            client
                .execute(
                    "DELETE FROM login_limits WHERE tat_ms < $1 AND locked_until_ms < $1",
                    &[&before_ms],
                )
                .await
                .map_err(err)?;
            client
                .execute(
                    "DELETE FROM families WHERE expires_at_ms < $1 OR revoked_at_ms < $1",
                    &[&before_ms],
                )
                .await
                .map_err(err)
        })
        .await
    }

    async fn key_of(&self, token: &TokenHash) -> Result<Option<BoundKey>, StoreError> {
        self.call(async |client| {
            let row = client
                .query_opt(
                    "SELECT k.family_id, k.jkt, k.used_at_ms FROM refresh_tokens t
                     JOIN dpop_keys k ON k.family_id = t.family_id WHERE t.hash = $1",
                    &[&&token[..]],
                )
                .await
                .map_err(err)?;
            Ok(row.map(|r| BoundKey {
                family_id: r.get(0),
                jkt: r.get(1),
                used_at_ms: r.get(2),
            }))
        })
        .await
    }

    async fn bind_key(&self, family_id: &str, jkt: &str, now_ms: i64) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO dpop_keys (family_id, jkt, used_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (family_id) DO UPDATE SET jkt = excluded.jkt, used_at_ms = excluded.used_at_ms",
                    &[&family_id, &jkt, &now_ms],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn first_use_of_proof(
        &self,
        proof: &[u8; 32],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.call(async |client| {
            // One statement: forget ended ids, then insert this one, or take over its row if
            // that ended; a row comes back only for a first use (on any instance).
            let row = client
                .query_opt(
                    "WITH gone AS (DELETE FROM dpop_proofs WHERE expires_at_ms <= $3 AND id <> $1)
                     INSERT INTO dpop_proofs (id, expires_at_ms) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms
                     WHERE dpop_proofs.expires_at_ms <= $3
                     RETURNING 1",
                    &[&&proof[..], &expires_at_ms, &now_ms],
                )
                .await
                .map_err(err)?;
            Ok(row.is_some())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(async |client| {
            client.query_one("SELECT 1", &[]).await.map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn stats(&self, now_ms: i64) -> Result<StoreStats, StoreError> {
        self.call(async |client| {
            let row = client
                .query_one(
                    "SELECT
                        (SELECT COUNT(*) FROM families
                         WHERE revoked_at_ms IS NULL AND expires_at_ms > $1),
                        (SELECT COUNT(*) FROM (
                            SELECT f.id FROM families f
                            JOIN refresh_tokens t ON t.family_id = f.id AND t.retired_at_ms IS NULL
                            WHERE f.revoked_at_ms IS NULL AND f.expires_at_ms > $1
                            GROUP BY f.id HAVING COUNT(*) = 1) one)",
                    &[&now_ms],
                )
                .await
                .map_err(err)?;
            let (live, one): (i64, i64) = (row.get(0), row.get(1));
            Ok(StoreStats {
                live_families: u64::try_from(live).unwrap_or(0),
                families_with_one_live_token: u64::try_from(one).unwrap_or(0),
            })
        })
        .await
    }

    async fn shared_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[&name, &candidate],
                )
                .await
                .map_err(err)?;
            let row = client
                .query_one("SELECT value FROM server_secrets WHERE name = $1", &[&name])
                .await
                .map_err(err)?;
            Ok(row.get(0))
        })
        .await
    }

    fn shares_login_limits(&self) -> bool {
        true
    }

    async fn login_locked(&self, keys: &[String], now_ms: i64) -> Result<i64, StoreError> {
        self.call(async |client| {
            let row = client
                .query_one(
                    "SELECT COALESCE(MAX(locked_until_ms), 0) FROM login_limits WHERE key = ANY($1)",
                    &[&keys],
                )
                .await
                .map_err(err)?;
            Ok((row.get::<_, i64>(0) - now_ms).max(0))
        })
        .await
    }

    async fn login_failed(
        &self,
        keys: &[(String, u32)],
        refill_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        self.call(async |client| {
            let stmt = client
                .prepare_cached("SELECT tw_login_failure($1, $2, $3, $4)")
                .await
                .map_err(err)?;
            let mut wait = 0;
            for (key, burst) in keys {
                let row = client
                    .query_one(&stmt, &[key, &now_ms, &i64::from(*burst), &refill_ms])
                    .await
                    .map_err(err)?;
                wait = wait.max(row.get::<_, i64>(0));
            }
            Ok(wait)
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Option<Vec<StoredKey>>, StoreError> {
        self.call(async |client| {
            let rows = client
                .query(
                    "SELECT kid, pem, not_before_ms FROM signing_keys ORDER BY not_before_ms DESC, kid",
                    &[],
                )
                .await
                .map_err(err)?;
            Ok(Some(
                rows.iter()
                    .map(|r| StoredKey {
                        kid: r.get(0),
                        pem: r.get(1),
                        not_before_ms: r.get(2),
                    })
                    .collect(),
            ))
        })
        .await
    }

    async fn add_signing_key(&self, key: &StoredKey, keep: usize) -> Result<(), StoreError> {
        self.call(async |client| {
            let tx = client.transaction().await.map_err(err)?;
            tx.execute(
                "INSERT INTO signing_keys (kid, pem, not_before_ms) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&key.kid, &key.pem, &key.not_before_ms],
            )
            .await
            .map_err(err)?;
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            tx.execute(
                "DELETE FROM signing_keys WHERE kid NOT IN (
                    SELECT kid FROM signing_keys ORDER BY not_before_ms DESC, kid LIMIT $1)",
                &[&keep],
            )
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)
        })
        .await
    }

    async fn add_first_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.call(async |client| {
            let tx = client.transaction().await.map_err(err)?;
            tx.batch_execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
                .await
                .map_err(err)?;
            tx.execute(
                "INSERT INTO signing_keys (kid, pem, not_before_ms)
                 SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
                &[&key.kid, &key.pem, &key.not_before_ms],
            )
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)
        })
        .await
    }
}

/// Tests against a real PostgreSQL: `DATABASE_URL` names it (`make test` starts one with
/// `scripts/pg.sh`). Without it they say so and pass, unless `TW_REQUIRE_PG=1` (set by
/// the Makefile), which makes a missing database a failure.
/// Upstream mode on PostgreSQL: the same rows as SQLite's, so servers sharing the database
/// share pending logins, grants and the per-family lease (one provider call per renewal
/// across instances).
#[async_trait::async_trait]
impl UpstreamStore for PgStore {
    async fn put_pending(
        &self,
        key: &TokenHash,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO upstream_pending (key, sealed, expires_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET sealed = excluded.sealed, expires_at_ms = excluded.expires_at_ms",
                    &[&&key[..], &sealed, &expires_at_ms],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn take_pending(
        &self,
        key: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(async |client| {
            // DELETE … RETURNING: exactly one caller, on any instance, gets the row.
            let row = client
                .query_opt(
                    "DELETE FROM upstream_pending WHERE key = $1 RETURNING sealed, expires_at_ms",
                    &[&&key[..]],
                )
                .await
                .map_err(err)?;
            Ok(row
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1)))
                .filter(|(_, exp)| *exp > now_ms)
                .map(|(v, _)| v))
        })
        .await
    }

    async fn put_grant(
        &self,
        family_id: &str,
        sealed: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO upstream_grants (family_id, sealed, expires_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (family_id) DO UPDATE SET sealed = excluded.sealed, expires_at_ms = excluded.expires_at_ms",
                    &[&family_id, &sealed, &expires_at_ms],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn grant(&self, family_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.call(async |client| {
            let row = client
                .query_opt(
                    "SELECT sealed FROM upstream_grants WHERE family_id = $1",
                    &[&family_id],
                )
                .await
                .map_err(err)?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    async fn delete_grant(&self, family_id: &str) -> Result<(), StoreError> {
        self.call(async |client| {
            // A data-modifying WITH runs whether or not it is referenced: one statement.
            client
                .execute(
                    "WITH g AS (DELETE FROM upstream_grants WHERE family_id = $1)
                     DELETE FROM upstream_leases WHERE family_id = $1",
                    &[&family_id],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn try_lease(
        &self,
        family_id: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        self.call(async |client| {
            // One statement: insert, or take over a lease of our own or one that ran out; the
            // row lock of ON CONFLICT serialises instances.
            let changed = client
                .execute(
                    "INSERT INTO upstream_leases (family_id, holder, until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (family_id) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                     WHERE upstream_leases.holder = excluded.holder OR upstream_leases.until_ms <= $4",
                    &[&family_id, &holder, &now_ms.saturating_add(ttl_ms), &now_ms],
                )
                .await
                .map_err(err)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_lease(&self, family_id: &str, holder: &str) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "DELETE FROM upstream_leases WHERE family_id = $1 AND holder = $2",
                    &[&family_id, &holder],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn note_access_token(
        &self,
        family_id: &str,
        hash: &TokenHash,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO upstream_access_tokens (hash, family_id, expires_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (hash) DO NOTHING",
                    &[&&hash[..], &family_id, &expires_at_ms],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn end_access_tokens(&self, family_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO upstream_ended (family_id, ended_at_ms) VALUES ($1, $2)
                     ON CONFLICT (family_id) DO NOTHING",
                    &[&family_id, &now_ms],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn access_token_ended(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.call(async |client| {
            // A join, not a flag on the token's row: a token noted by a renewal still in flight
            // when the family ended (another instance) is covered as well as the earlier ones.
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM upstream_access_tokens t WHERE t.hash = $1
                         AND (EXISTS (SELECT 1 FROM upstream_ended e WHERE e.family_id = t.family_id)
                              OR EXISTS (SELECT 1 FROM families f
                                         WHERE f.id = t.family_id AND f.revoked_at_ms IS NOT NULL)))",
                    &[&&hash[..]],
                )
                .await
                .map_err(err)?;
            Ok(row.get(0))
        })
        .await
    }

    async fn family_ended(&self, family_id: &str) -> Result<bool, StoreError> {
        self.call(async |client| {
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM upstream_ended WHERE family_id = $1)
                         OR EXISTS (SELECT 1 FROM families WHERE id = $1 AND revoked_at_ms IS NOT NULL)",
                    &[&family_id],
                )
                .await
                .map_err(err)?;
            Ok(row.get(0))
        })
        .await
    }

    async fn queue_revocation(
        &self,
        family_id: &str,
        next_at_ms: i64,
    ) -> Result<Option<QueuedRevocation>, StoreError> {
        self.call(async |client| {
            // One statement: the grant moves to the queue (its lease stays with its holder).
            let row = client
                .query_opt(
                    "WITH g AS (DELETE FROM upstream_grants WHERE family_id = $1 RETURNING family_id, sealed)
                     INSERT INTO upstream_revocations (family_id, sealed, attempts, next_at_ms, queued_at_ms)
                     SELECT family_id, sealed, 0, $2, $2 FROM g
                     RETURNING id, sealed",
                    &[&family_id, &next_at_ms],
                )
                .await
                .map_err(err)?;
            Ok(row.map(|r| QueuedRevocation {
                id: r.get(0),
                family_id: family_id.to_string(),
                sealed: r.get(1),
                attempts: 0,
            }))
        })
        .await
    }

    async fn queue_ended_grants(&self, next_at_ms: i64, limit: usize) -> Result<u64, StoreError> {
        self.call(async |client| {
            // One statement, as queue_revocation: each grant chosen is locked (SKIP LOCKED: one
            // that another statement is moving or replacing is left to the next sweep), deleted
            // and queued as it is at the delete. A grant another statement deleted meanwhile is
            // not deleted again, so not queued twice.
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            client
                .execute(
                    "WITH moved AS (
                         DELETE FROM upstream_grants g
                         USING (SELECT x.family_id FROM upstream_grants x
                                WHERE EXISTS (SELECT 1 FROM upstream_ended e WHERE e.family_id = x.family_id)
                                   OR EXISTS (SELECT 1 FROM families f
                                              WHERE f.id = x.family_id AND f.revoked_at_ms IS NOT NULL)
                                LIMIT $2 FOR UPDATE OF x SKIP LOCKED) d
                         WHERE g.family_id = d.family_id
                         RETURNING g.family_id, g.sealed)
                     INSERT INTO upstream_revocations (family_id, sealed, attempts, next_at_ms, queued_at_ms)
                     SELECT family_id, sealed, 0, $1, $1 FROM moved",
                    &[&next_at_ms, &limit],
                )
                .await
                .map_err(err)
        })
        .await
    }

    async fn claim_revocations(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<QueuedRevocation>, StoreError> {
        self.call(async |client| {
            // SKIP LOCKED: an instance claiming at the same moment takes other rows; one that
            // comes after the commit finds these not due (their lease).
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = client
                .query(
                    "UPDATE upstream_revocations r SET next_at_ms = $2
                     FROM (SELECT id, next_at_ms AS due FROM upstream_revocations WHERE next_at_ms <= $1
                           ORDER BY next_at_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) d
                     WHERE r.id = d.id
                     RETURNING r.id, r.family_id, r.sealed, r.attempts, d.due",
                    &[&now_ms, &now_ms.saturating_add(lease_ms), &limit],
                )
                .await
                .map_err(err)?;
            // UPDATE … RETURNING keeps no order (the subquery's ORDER BY only chose the rows):
            // the longest due first, sorted here.
            let mut claimed: Vec<(i64, QueuedRevocation)> = rows
                .iter()
                .map(|r| {
                    let queued = QueuedRevocation {
                        id: r.get(0),
                        family_id: r.get(1),
                        sealed: r.get(2),
                        attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                    };
                    (r.get(4), queued)
                })
                .collect();
            claimed.sort_by_key(|(due, q)| (*due, q.id));
            Ok(claimed.into_iter().map(|(_, q)| q).collect())
        })
        .await
    }

    async fn retry_revocation(
        &self,
        id: i64,
        attempts: u32,
        next_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.call(async |client| {
            let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
            client
                .execute(
                    "UPDATE upstream_revocations SET attempts = $2, next_at_ms = $3 WHERE id = $1",
                    &[&id, &attempts, &next_at_ms],
                )
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn give_up_revocations(&self, queued_before_ms: i64) -> Result<u64, StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "DELETE FROM upstream_revocations WHERE queued_at_ms < $1",
                    &[&queued_before_ms],
                )
                .await
                .map_err(err)
        })
        .await
    }

    async fn drop_revocation(&self, id: i64) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute("DELETE FROM upstream_revocations WHERE id = $1", &[&id])
                .await
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn note_session(
        &self,
        family_id: &str,
        sub: &str,
        sid: Option<&str>,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.call(async |client| {
            client
                .execute(
                    "INSERT INTO upstream_sessions (family_id, sub, sid, expires_at_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (family_id) DO UPDATE
                     SET sub = EXCLUDED.sub, sid = EXCLUDED.sid, expires_at_ms = EXCLUDED.expires_at_ms",
                    &[&family_id, &sub, &sid, &expires_at_ms],
                )
                .await
                .map(|_| ())
                .map_err(err)
        })
        .await
    }

    async fn sessions_of(
        &self,
        sub: Option<&str>,
        sid: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        // One statement per shape (not `$1 IS NULL OR …`), so that each uses its index.
        let limit = i64::try_from(super::MAX_SESSIONS_OF).unwrap_or(i64::MAX);
        let (filter, keys) = match (sub, sid) {
            (Some(sub), Some(sid)) => ("sid = $2 AND sub = $3", vec![sid, sub]),
            (None, Some(sid)) => ("sid = $2", vec![sid]),
            (Some(sub), None) => ("sub = $2", vec![sub]),
            (None, None) => return Ok(Vec::new()),
        };
        let sql = format!(
            "SELECT family_id FROM upstream_sessions WHERE {filter} ORDER BY family_id LIMIT $1"
        );
        self.call(async |client| {
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&limit];
            params.extend(
                keys.iter()
                    .map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync)),
            );
            let rows = client.query(&sql, &params).await.map_err(err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    async fn purge_upstream(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.call(async |client| {
            // Expired grants move to the revocation queue (revoked at the provider before they
            // go). Every part of one statement sees the same snapshot: an end is kept while a token of
            // its family is kept (unexpired at the cut-off).
            let row = client
                .query_one(
                    "WITH p AS (DELETE FROM upstream_pending WHERE expires_at_ms < $1 RETURNING 1),
                          g AS (DELETE FROM upstream_grants WHERE expires_at_ms < $1
                                RETURNING family_id, sealed),
                          q AS (INSERT INTO upstream_revocations
                                    (family_id, sealed, attempts, next_at_ms, queued_at_ms)
                                SELECT family_id, sealed, 0, $1, $1 FROM g),
                          l AS (DELETE FROM upstream_leases WHERE until_ms < $1 RETURNING 1),
                          t AS (DELETE FROM upstream_access_tokens WHERE expires_at_ms < $1 RETURNING 1),
                          e AS (DELETE FROM upstream_ended x WHERE x.ended_at_ms < $1 AND NOT EXISTS (
                                  SELECT 1 FROM upstream_access_tokens k
                                  WHERE k.family_id = x.family_id AND k.expires_at_ms >= $1)
                                RETURNING 1),
                          s AS (DELETE FROM upstream_sessions WHERE expires_at_ms < $1 RETURNING 1)
                     SELECT (SELECT count(*) FROM p) + (SELECT count(*) FROM g) + (SELECT count(*) FROM l)
                          + (SELECT count(*) FROM t) + (SELECT count(*) FROM e) + (SELECT count(*) FROM s)",
                    &[&before_ms],
                )
                .await
                .map_err(err)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tokens::hash_refresh_token as h;

    /// The database URL, or `None` after saying loudly that `what` was not run.
    pub(crate) fn database_url(what: &str) -> Option<String> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                assert!(
                    std::env::var("TW_REQUIRE_PG").as_deref() != Ok("1"),
                    "TW_REQUIRE_PG=1 but DATABASE_URL is not set"
                );
                // Straight to stderr, past the test harness's capture, so it is seen.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "NOT RUN: {what}: DATABASE_URL is not set (make pg-test runs it on a real PostgreSQL)"
                );
                None
            }
        }
    }

    /// A store in a schema of its own, so tests never see each other's rows.
    pub(crate) async fn fresh_store(url: &str) -> PgStore {
        let schema =
            format!("tw_test_{}", crate::tokens::random_id(9).to_lowercase()).replace('-', "_");
        PgStore::connect(url, Some(&schema), 8).await.unwrap()
    }

    /// Two stores (two instances' pools) on one fresh schema.
    pub(crate) async fn fresh_pair(url: &str) -> (PgStore, PgStore) {
        let schema =
            format!("tw_test_{}", crate::tokens::random_id(9).to_lowercase()).replace('-', "_");
        let one = PgStore::connect(url, Some(&schema), 4).await.unwrap();
        let two = PgStore::connect(url, Some(&schema), 4).await.unwrap();
        (one, two)
    }

    /// The schema `store` works in (to open a second pool on it).
    async fn schema_of(store: &PgStore) -> String {
        store
            .pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT current_schema()", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    }

    #[tokio::test]
    async fn pg_store_keeps_the_store_contract() {
        let Some(url) = database_url("the PostgreSQL store contract") else {
            return;
        };
        super::super::contract::run_all_async(|| fresh_store(&url)).await;
    }

    #[tokio::test]
    async fn two_pg_pools_keep_the_upstream_contract_together() {
        let Some(url) = database_url("the PostgreSQL upstream store contract") else {
            return;
        };
        let (a, b) = fresh_pair(&url).await;
        super::super::contract::upstream_run_all(&a, &b).await;
    }

    #[tokio::test]
    async fn pg_migrations_are_applied_once_and_recorded() {
        let Some(url) = database_url("the PostgreSQL migrations") else {
            return;
        };
        let schema =
            format!("tw_test_{}", crate::tokens::random_id(9).to_lowercase()).replace('-', "_");
        let (a, b) = tokio::join!(
            PgStore::connect(&url, Some(&schema), 2),
            PgStore::connect(&url, Some(&schema), 2)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let want: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(a.applied_migrations().await.unwrap(), want);
        // A third start finds nothing to do and keeps the data.
        let fam = Family {
            id: "m".into(),
            sub: "demo".into(),
            expires_at_ms: 10_000,
        };
        a.create_family(&fam, &h("m1"), 10, 0).await.unwrap();
        let c = PgStore::connect(&url, Some(&schema), 2).await.unwrap();
        assert_eq!(c.applied_migrations().await.unwrap(), want);
        assert_eq!(
            b.rotate(&h("m1"), &h("m2"), 1, 0).await.unwrap(),
            Rotation::Rotated(fam)
        );
    }

    #[tokio::test]
    async fn pg_the_family_cap_keeps_the_newest_login_whatever_the_instances_clock() {
        let Some(url) = database_url("the family cap across instance clocks") else {
            return;
        };
        let (a, b) = fresh_pair(&url).await;
        let fam = |id: &str| Family {
            id: id.into(),
            sub: "demo".into(),
            expires_at_ms: 10_000_000,
        };
        a.create_family(&fam("a1"), &h("a1"), 2, 100_000)
            .await
            .unwrap();
        a.create_family(&fam("a2"), &h("a2"), 2, 101_000)
            .await
            .unwrap();
        // Instance b's clock is a minute behind: its login is still the newest.
        let capped = b
            .create_family(&fam("b3"), &h("b3"), 2, 42_000)
            .await
            .unwrap();
        assert_eq!(
            capped,
            ["a1"],
            "the oldest login goes, not the one just made"
        );
        assert!(matches!(
            b.rotate(&h("b3"), &h("b4"), 43_000, 0).await.unwrap(),
            Rotation::Rotated(_)
        ));
    }

    #[tokio::test]
    async fn pg_a_rotation_stuck_behind_a_lock_times_out_and_leaves_the_token_live() {
        // Another session holds the token's row lock for longer than a store call may take:
        // the rotation fails (the server answers 503) and is rolled back, so the client's
        // retry with the cookie it still has rotates. Before, the call waited without limit,
        // committed after the request had been answered 503, and the retry was reuse.
        let Some(url) = database_url("a rotation stuck behind a row lock") else {
            return;
        };
        let one = fresh_store(&url).await;
        let schema = schema_of(&one).await;
        let quick = PgStore::connect_with(&url, Some(&schema), 2, Duration::from_millis(300))
            .await
            .unwrap();
        let fam = Family {
            id: "stuck".into(),
            sub: "demo".into(),
            expires_at_ms: 100_000,
        };
        one.create_family(&fam, &h("s1"), 10, 0).await.unwrap();
        let mut holder = one.pool.get().await.unwrap();
        let tx = holder.transaction().await.unwrap();
        tx.query(
            "SELECT 1 FROM refresh_tokens WHERE hash = $1 FOR UPDATE",
            &[&h("s1").as_slice()],
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let stuck = tokio::time::timeout(
            Duration::from_secs(5),
            quick.rotate(&h("s1"), &h("s2"), 1_000, 10_000),
        )
        .await
        .expect("cut off by the call timeout, not left waiting for the lock");
        assert!(stuck.is_err(), "{stuck:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The holder lets go after the request would have been answered (60 s later here).
        tx.rollback().await.unwrap();
        drop(holder);
        assert_eq!(
            quick
                .rotate(&h("s1"), &h("s2"), 61_000, 10_000)
                .await
                .unwrap(),
            Rotation::Rotated(fam),
            "the retry rotates: nothing was committed"
        );
    }

    /// A TCP proxy in front of PostgreSQL (the tests' own, real sockets) that can black-hole
    /// it: open and new connections stop being forwarded either way, their sockets kept open
    /// (a host that vanished without a reset: nothing answers, nothing is refused). Forwarding
    /// again, new connections pass; the black-holed ones stay dead, as after a failover.
    struct Proxy {
        port: u16,
        state: std::sync::Arc<ProxyState>,
    }

    #[derive(Default)]
    struct ProxyState {
        holed: std::sync::atomic::AtomicBool,
        /// Bumped by each black-hole: a connection forwards only in the generation it began.
        generation: std::sync::atomic::AtomicU64,
        /// Sockets of dead connections whose other side closed: kept open, never shut down.
        parked: std::sync::Mutex<Vec<tokio::net::tcp::OwnedWriteHalf>>,
        /// [`Proxy::mute_client_after`].
        mute: std::sync::Mutex<Mute>,
    }

    /// Client to server only: once a read containing `needle` is forwarded, `left` more
    /// are, then every later one is dropped (the server still answers what it got).
    #[derive(Default)]
    struct Mute {
        needle: Option<Vec<u8>>,
        left: Option<usize>,
    }

    impl ProxyState {
        fn alive(&self, generation: u64) -> bool {
            use std::sync::atomic::Ordering::SeqCst;
            !self.holed.load(SeqCst) && self.generation.load(SeqCst) == generation
        }

        /// Whether `chunk`, read from a client, goes on to the server ([`Mute`]).
        fn client_forwards(&self, chunk: &[u8]) -> bool {
            let mut mute = self.mute.lock().unwrap();
            match mute.left {
                Some(0) => false,
                Some(n) => {
                    mute.left = Some(n - 1);
                    true
                }
                None => {
                    let seen = mute.needle.as_ref().is_some_and(|needle| {
                        chunk.windows(needle.len()).any(|w| w == needle.as_slice())
                    });
                    if seen {
                        mute.left = Some(1);
                    }
                    true
                }
            }
        }
    }

    impl Proxy {
        /// A proxy to the database at `target`; `None`: a host that accepts connections and
        /// never answers.
        async fn start(target: Option<std::net::SocketAddr>) -> Self {
            use std::sync::atomic::Ordering::SeqCst;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let state = std::sync::Arc::new(ProxyState::default());
            if target.is_none() {
                state.holed.store(true, SeqCst);
            }
            let st = state.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let generation = st.generation.load(SeqCst);
                    let st = st.clone();
                    tokio::spawn(async move {
                        let (c_read, c_write) = client.into_split();
                        let upstream = match target {
                            Some(addr) if st.alive(generation) => {
                                tokio::net::TcpStream::connect(addr).await.ok()
                            }
                            _ => None,
                        };
                        match upstream {
                            Some(server) => {
                                let (s_read, s_write) = server.into_split();
                                tokio::spawn(pump(c_read, s_write, st.clone(), generation, true));
                                pump(s_read, c_write, st, generation, false).await;
                            }
                            None => {
                                // Never answered: read and drop, keep the socket open.
                                pump_nowhere(c_read).await;
                                st.parked.lock().unwrap().push(c_write);
                            }
                        }
                    });
                }
            });
            Proxy { port, state }
        }

        fn black_hole(&self) {
            use std::sync::atomic::Ordering::SeqCst;
            self.state.generation.fetch_add(1, SeqCst);
            self.state.holed.store(true, SeqCst);
        }

        /// Once the client has sent a request containing `needle` and the one after it
        /// (tokio-postgres: a statement's parse, then its execution), nothing more it sends
        /// reaches the server; the server's answers still come back.
        fn mute_client_after(&self, needle: &[u8]) {
            self.state.mute.lock().unwrap().needle = Some(needle.to_vec());
        }

        fn forward_again(&self) {
            self.state
                .holed
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }

        /// `url` with its host and port replaced by this proxy's.
        fn url_for(&self, url: &str) -> String {
            let mut u = url::Url::parse(url).unwrap();
            u.set_host(Some("127.0.0.1")).unwrap();
            u.set_port(Some(self.port)).unwrap();
            u.to_string()
        }
    }

    /// Forwards `from` to `to` while the connection's generation is alive (from a client:
    /// and not muted, [`Mute`]); afterwards reads and drops. At the end of `from`, a live connection closes `to`, a dead one keeps it.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        st: std::sync::Arc<ProxyState>,
        generation: u64,
        from_client: bool,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let forward = !from_client || st.client_forwards(&buf[..n]);
                    if forward && st.alive(generation) && to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !st.alive(generation) {
            st.parked.lock().unwrap().push(to);
        }
    }

    async fn pump_nowhere(mut from: tokio::net::tcp::OwnedReadHalf) {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    }

    /// The address of the database of `url`.
    fn database_addr(url: &str) -> std::net::SocketAddr {
        let u = url::Url::parse(url).unwrap();
        let host = u.host_str().unwrap();
        let port = u.port().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .unwrap()
            .next()
            .unwrap()
    }

    #[tokio::test]
    async fn pg_a_black_holed_database_fails_calls_within_the_call_timeout_and_the_pool_recovers() {
        // The database host stops answering without a reset (black hole): PostgreSQL's
        // statement_timeout never runs (the statement never reaches it), so before, a store
        // call waited for as long as the socket lived, and once the network was back the
        // pool kept handing out the dead connections (RecyclingMethod::Fast only sees a
        // closed socket), each call on one hanging in turn.
        let Some(url) = database_url("a black-holed database") else {
            return;
        };
        let one = fresh_store(&url).await;
        let schema = schema_of(&one).await;
        let proxy = Proxy::start(Some(database_addr(&url))).await;
        let call = Duration::from_millis(500);
        let store = PgStore::connect_with(&proxy.url_for(&url), Some(&schema), 4, call)
            .await
            .unwrap();
        let fam = Family {
            id: "hole".into(),
            sub: "demo".into(),
            expires_at_ms: 100_000,
        };
        store.create_family(&fam, &h("b1"), 10, 0).await.unwrap();
        // Four connections in the pool, all through the proxy.
        let (a, b, c, d) = tokio::join!(store.ping(), store.ping(), store.ping(), store.ping());
        for r in [a, b, c, d] {
            r.unwrap();
        }
        assert_eq!(store.pool.status().size, 4);

        proxy.black_hole();
        let started = std::time::Instant::now();
        let cut = tokio::time::timeout(
            Duration::from_secs(5),
            store.rotate(&h("b1"), &h("b2"), 1_000, 10_000),
        )
        .await
        .expect("cut off by the call timeout, not left waiting for an answer");
        assert!(cut.is_err(), "{cut:?}");
        let took = started.elapsed();
        assert!(took >= call && took < call * 3, "{took:?}");

        // New connections pass again; the four old ones stay dead.
        proxy.forward_again();
        for i in 0..8 {
            let started = std::time::Instant::now();
            let ok = tokio::time::timeout(
                Duration::from_secs(5),
                store.standing(&h("b1"), &h("b2"), 2_000, 10_000),
            )
            .await
            .unwrap_or_else(|_| panic!("call {i} after the network is back hung"));
            assert_eq!(
                ok.unwrap(),
                Standing::Live,
                "call {i}: the cut-off rotation changed nothing"
            );
            assert!(
                started.elapsed() < call,
                "call {i} took {:?}",
                started.elapsed()
            );
        }
        assert_eq!(
            store
                .rotate(&h("b1"), &h("b2"), 3_000, 10_000)
                .await
                .unwrap(),
            Rotation::Rotated(fam),
        );
    }

    #[tokio::test]
    async fn pg_connect_fails_within_its_bound_when_the_database_accepts_and_never_answers() {
        // No database needed: a host that accepts the TCP connection and never answers (a
        // hung or black-holed database). Before, the migration connection had no timeout at
        // all and the server hung at start for ever.
        let silent = Proxy::start(None).await;
        let url = format!("postgres://tw@127.0.0.1:{}/tw", silent.port);
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            PgStore::connect_with(&url, None, 2, Duration::from_millis(300)),
        )
        .await
        .expect("gave up within its bound, not hung");
        let e = res.expect_err("no database there");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(e.0.contains("connect"), "{e}");
    }

    #[tokio::test]
    async fn pg_a_database_that_stops_answering_as_the_migration_ends_does_not_hang_the_start() {
        // The migration's last statement (the unlock) is answered, then nothing more the
        // server is sent reaches it. tokio-postgres closes a prepared statement when it is
        // dropped (one more request) and ends a connection whose client is gone only once
        // every request is answered: before, the start awaited the migration connection's
        // end without a bound and hung for ever, its migration done.
        let Some(url) = database_url("a database that stops answering as the migration ends")
        else {
            return;
        };
        let proxy = Proxy::start(Some(database_addr(&url))).await;
        proxy.mute_client_after(b"pg_advisory_unlock");
        let schema =
            format!("tw_test_{}", crate::tokens::random_id(9).to_lowercase()).replace('-', "_");
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            PgStore::connect_bounded(
                &proxy.url_for(&url),
                Some(&schema),
                2,
                Duration::from_millis(300),
                Duration::from_secs(5),
            ),
        )
        .await
        .expect("the start hung after the migration");
        res.expect("the migration was done");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // It was: the schema is there, every migration recorded.
        let store = PgStore::connect(&url, Some(&schema), 1).await.unwrap();
        let want: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(store.applied_migrations().await.unwrap(), want);
    }

    #[tokio::test]
    async fn pg_connect_says_why_it_failed() {
        // No database needed. Before, the reason was left out: "error connecting to server",
        // "db error" (a database that does not exist, a wrong password).
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = gone.local_addr().unwrap().port();
        drop(gone);
        let url = format!("postgres://tw:S3cret@127.0.0.1:{port}/tw");
        let e = PgStore::connect_with(&url, None, 2, Duration::from_millis(300))
            .await
            .expect_err("nothing listens there");
        assert!(e.0.contains("error connecting to server: "), "{e}");
        assert!(e.0.to_lowercase().contains("refused"), "{e}");
        assert!(!e.0.contains("S3cret"), "{e}");
    }

    #[tokio::test]
    async fn pg_a_statement_too_slow_is_cancelled_by_postgres_first_and_its_connection_kept() {
        // statement_timeout is a little shorter than the call's deadline: PostgreSQL cancels
        // and says so, and the connection, still good, goes back to the pool.
        let Some(url) = database_url("a statement cancelled by its statement_timeout") else {
            return;
        };
        let store = PgStore::connect_with(&url, None, 1, Duration::from_secs(2))
            .await
            .unwrap();
        store.ping().await.unwrap();
        let pid = |store: &PgStore| {
            let store = store.clone();
            async move {
                store
                    .call(async |c| {
                        let row = c
                            .query_one("SELECT pg_backend_pid()", &[])
                            .await
                            .map_err(err)?;
                        Ok(row.get::<_, i32>(0))
                    })
                    .await
                    .unwrap()
            }
        };
        let before = pid(&store).await;
        let slow = store
            .call(async |c| {
                c.query("SELECT pg_sleep(5)", &[]).await.map_err(err)?;
                Ok(())
            })
            .await
            .expect_err("longer than the call timeout");
        assert!(
            slow.0.contains("57014"),
            "PostgreSQL's cancel, not the deadline: {slow}"
        );
        assert_eq!(pid(&store).await, before, "the same connection, kept");
    }

    #[tokio::test]
    async fn pg_a_migration_kept_waiting_past_its_bound_fails_the_start() {
        // Another instance holds the migration lock (or the database stopped answering
        // half-way): the start fails with the reason once the migration's bound has passed.
        let Some(url) = database_url("the migration's bound") else {
            return;
        };
        let (holder, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        let conn_task = tokio::spawn(conn);
        holder
            .query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .unwrap();
        let schema =
            format!("tw_test_{}", crate::tokens::random_id(9).to_lowercase()).replace('-', "_");
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            PgStore::connect_bounded(
                &url,
                Some(&schema),
                2,
                Duration::from_millis(300),
                Duration::from_millis(400),
            ),
        )
        .await
        .expect("bounded");
        holder
            .query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .unwrap();
        drop(holder);
        let _ = conn_task.await;
        let e = res.expect_err("the lock was never free");
        assert!(e.0.contains("migration did not finish within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The lock free, the same start succeeds.
        let store = PgStore::connect_bounded(
            &url,
            Some(&schema),
            2,
            Duration::from_millis(300),
            Duration::from_millis(400),
        )
        .await
        .unwrap();
        let want: Vec<i32> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(store.applied_migrations().await.unwrap(), want);
    }

    #[tokio::test]
    async fn pg_a_call_its_caller_drops_closes_its_connection_and_postgres_stops_its_statement() {
        // A rotation waits for a row lock; its caller gives up first (the request timeout,
        // the browser gone). Before, the dropped call's connection went back to the pool
        // with the statement still waiting in PostgreSQL, which committed it once the lock
        // was free: the refresh answered 503 had rotated, and the retry was reuse. Now the
        // connection is closed, and PostgreSQL (client_connection_check_interval) aborts
        // the statement whose client has gone.
        let Some(url) = database_url("a call dropped by its caller") else {
            return;
        };
        let one = fresh_store(&url).await;
        let schema = schema_of(&one).await;
        let app =
            format!("tw_cut_{}", crate::tokens::random_id(6).to_lowercase()).replace('-', "_");
        let mut named = url::Url::parse(&url).unwrap();
        named
            .query_pairs_mut()
            .append_pair("application_name", &app);
        // 10 s: the statement timeout (9 s) is not what stops it here.
        let store = PgStore::connect_with(named.as_str(), Some(&schema), 2, DEFAULT_CALL_TIMEOUT)
            .await
            .unwrap();
        let fam = Family {
            id: "dropped".into(),
            sub: "demo".into(),
            expires_at_ms: 100_000,
        };
        one.create_family(&fam, &h("d1"), 10, 0).await.unwrap();
        let mut holder = one.pool.get().await.unwrap();
        let tx = holder.transaction().await.unwrap();
        tx.query(
            "SELECT 1 FROM refresh_tokens WHERE hash = $1 FOR UPDATE",
            &[&h("d1").as_slice()],
        )
        .await
        .unwrap();
        let dropped = tokio::time::timeout(
            Duration::from_millis(300),
            store.rotate(&h("d1"), &h("d2"), 1_000, 10_000),
        )
        .await;
        assert!(dropped.is_err(), "still waiting for the lock: {dropped:?}");
        assert_eq!(
            store.pool.status().size,
            0,
            "its connection was not given back"
        );
        // Its statement ends in PostgreSQL while the lock is still held.
        let started = std::time::Instant::now();
        loop {
            let waiting: i64 = one
                .pool
                .get()
                .await
                .unwrap()
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&app],
                )
                .await
                .unwrap()
                .get(0);
            if waiting == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "the dropped call's statement still runs in PostgreSQL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tx.rollback().await.unwrap();
        drop(holder);
        assert_eq!(
            one.standing(&h("d1"), &h("d2"), 2_000, 10_000)
                .await
                .unwrap(),
            Standing::Live,
            "nothing was committed"
        );
    }

    #[test]
    fn the_connection_settings_bound_the_network_side_and_keep_the_urls_own() {
        let call = Duration::from_millis(2_500);
        let c = parse_config("postgres://u@db:5432/tw", Some("s1"), call).unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&call));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(3));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(1)));
        assert_eq!(c.get_keepalives_retries(), Some(3));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_options(), Some("-c search_path=s1"));
        assert_eq!(c.get_application_name(), Some("tokenwarden-server"));
        let c = parse_config(
            "postgres://u@db/tw?connect_timeout=7&keepalives_idle=30&tcp_user_timeout=20&options=-c%20work_mem%3D8MB",
            None,
            call,
        )
        .unwrap();
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
        let mut c = c;
        add_option(&mut c, "-c statement_timeout=2250");
        assert_eq!(
            c.get_options(),
            Some("-c work_mem=8MB -c statement_timeout=2250")
        );
        assert_eq!(statement_margin(call), Duration::from_millis(250));
        assert_eq!(
            statement_margin(DEFAULT_CALL_TIMEOUT),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn pg_the_pools_connections_carry_the_statement_timeout_and_the_client_check() {
        let Some(url) = database_url("the pool's session settings") else {
            return;
        };
        let one = fresh_store(&url).await;
        let schema = schema_of(&one).await;
        let store = PgStore::connect_with(&url, Some(&schema), 2, Duration::from_secs(3))
            .await
            .unwrap();
        let conn = store.pool.get().await.unwrap();
        let show = |row: tokio_postgres::Row| row.get::<_, String>(0);
        let get =
            async |name: &str| show(conn.query_one(&format!("SHOW {name}"), &[]).await.unwrap());
        assert_eq!(get("statement_timeout").await, "2700ms");
        assert_eq!(get("client_connection_check_interval").await, "300ms");
        assert_eq!(get("search_path").await, schema);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pg_two_pools_on_one_database_rotate_a_token_once() {
        // Two instances = two pools on one schema; 16 presentations of each token at once,
        // 20 tokens: each rotates exactly once, the others get the same successor.
        let Some(url) = database_url("the two-pool rotation race") else {
            return;
        };
        let one = fresh_store(&url).await;
        let schema_of_one = schema_of(&one).await;
        let two = PgStore::connect(&url, Some(&schema_of_one), 8)
            .await
            .unwrap();
        for i in 0..20 {
            let fam = Family {
                id: format!("race{i}"),
                sub: "demo".into(),
                expires_at_ms: 100_000,
            };
            let t0 = h(&format!("r{i}"));
            let t1 = h(&format!("r{i}+"));
            one.create_family(&fam, &t0, 100, 0).await.unwrap();
            let mut tasks = Vec::new();
            for k in 0..16 {
                let store = if k % 2 == 0 { one.clone() } else { two.clone() };
                tasks.push(tokio::spawn(async move {
                    store.rotate(&t0, &t1, 1, 10_000).await.unwrap()
                }));
            }
            let mut rotated = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Rotation::Rotated(_) => rotated += 1,
                    Rotation::Repeated(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(rotated, 1, "token {i}");
        }
        let stats = two.stats(2).await.unwrap();
        assert_eq!(stats.live_families, 20);
        assert_eq!(stats.families_with_one_live_token, 20);
    }

    /// Two instances' maintenance claiming the revocation queue at the same moment (the two
    /// pools' connections driven on threads of their own), several times over: each row is
    /// claimed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pg_two_pools_claiming_revocations_at_once_take_each_row_once() {
        use crate::store::contract::two_handles_claiming_at_the_same_moment_take_each_revocation_once as race;
        let Some(url) = database_url("two pools claiming the revocation queue at once") else {
            return;
        };
        let (a, b) = fresh_pair(&url).await;
        for _ in 0..5 {
            race(&a, &b).await;
        }
    }

    /// UPDATE … RETURNING keeps no order: the claimed rows come back sorted by due time.
    #[tokio::test]
    async fn pg_claim_returns_the_revocations_it_took_longest_due_first() {
        let Some(url) = database_url("the claim order") else {
            return;
        };
        let a = fresh_store(&url).await;
        for (id, due) in [("rev-a", 300), ("rev-b", 100), ("rev-c", 200)] {
            a.put_grant(id, b"s", 50_000).await.unwrap();
            assert!(a.queue_revocation(id, due).await.unwrap().is_some());
        }
        let got = a.claim_revocations(1_000, 5_000, 3).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|q| q.family_id.as_str()).collect();
        assert_eq!(ids, ["rev-b", "rev-c", "rev-a"], "oldest due first");
    }

    /// Two instances' maintenance sweeping ended families' grants at the same moment while
    /// ends queue the same grants (the pools' connections driven on threads of their own),
    /// several times over: each grant is queued once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pg_two_pools_sweeping_while_ends_queue_take_each_grant_once() {
        use crate::store::contract::sweeps_and_ends_racing_queue_each_grant_once as race;
        let Some(url) = database_url("two pools sweeping ended families' grants at once") else {
            return;
        };
        let (a, b) = fresh_pair(&url).await;
        for _ in 0..5 {
            race(&a, &b).await;
        }
    }

    /// A grant another transaction is writing (a renewal's `put_grant`, or an end's move, not
    /// committed yet) is skipped by the sweep, which neither waits for it nor moves the version
    /// being replaced; the next sweep moves the grant as committed.
    #[tokio::test]
    async fn pg_a_sweep_skips_a_grant_being_written_and_moves_it_as_committed_next_time() {
        let Some(url) = database_url("a sweep beside a grant being written") else {
            return;
        };
        let (a, b) = fresh_pair(&url).await;
        for family_id in ["held", "free"] {
            a.put_grant(family_id, b"old", 90_000).await.unwrap();
            a.end_access_tokens(family_id, 10_000).await.unwrap();
        }
        let mut writer = a.pool.get().await.unwrap();
        let tx = writer.transaction().await.unwrap();
        tx.execute(
            "UPDATE upstream_grants SET sealed = $1 WHERE family_id = 'held'",
            &[&&b"renewed"[..]],
        )
        .await
        .unwrap();
        let moved = tokio::time::timeout(Duration::from_secs(5), b.queue_ended_grants(20_000, 100))
            .await
            .expect("the sweep does not wait for the writer");
        assert_eq!(moved.unwrap(), 1, "the free grant only");
        tx.commit().await.unwrap();
        drop(writer);
        assert_eq!(b.queue_ended_grants(20_000, 100).await.unwrap(), 1);
        assert_eq!(b.queue_ended_grants(20_000, 100).await.unwrap(), 0);
        let mut queued: Vec<(String, Vec<u8>)> = a
            .claim_revocations(20_000, 5_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|q| (q.family_id, q.sealed))
            .collect();
        queued.sort();
        assert_eq!(
            queued,
            [
                ("free".to_string(), b"old".to_vec()),
                ("held".to_string(), b"renewed".to_vec())
            ]
        );
    }
}
